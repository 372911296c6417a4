/* l_mpi.c — kiln.mpi: the few MPI collectives a training loop and a suite need, so that a
 * protocol is written once and runs as one process or as N under mpirun.
 *
 *   kiln.mpi.enabled             true in an MPI build (make MPI=1) started by the kiln host
 *   kiln.mpi.rank(), size()      this process and the process count (0 and 1 without MPI)
 *   kiln.mpi.world()             rank, size of the whole job (the same, even inside solo)
 *   kiln.mpi.allreduce(x [, op]) tensor in place, or a number returned; op sum|mean|max|min
 *   kiln.mpi.broadcast(x, root)  tensor in place, or a number/string/boolean returned
 *   kiln.mpi.allgather(s)        every rank's string, as an array indexed by rank + 1
 *   kiln.mpi.barrier()
 *   kiln.mpi.solo(f, ...)        call f with rank() = 0 and size() = 1 (MPI_COMM_SELF)
 *   kiln.mpi.abort(msg [, code]) print msg (naming the rank) and end the whole job
 *
 * The same file compiles with and without -DKILN_MPI; without it every collective is the
 * identity on one process. MPI is initialised by the host (lua/main.c calls knL_mpi_init);
 * kiln.so loaded into a stock lua5.4 never initialises it and reports one process. */
#include "binding.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef KILN_MPI
#include <limits.h>
#include <sched.h>
#include <mpi.h>

static bool mpi_on = false;      /* initialised by us and not yet finalised */
static MPI_Comm comm;            /* the communicator rank()/size() and collectives use */

static int comm_rank(void) { int r = 0; if (mpi_on) MPI_Comm_rank(comm, &r); return r; }
static int comm_size(void) { int s = 1; if (mpi_on) MPI_Comm_size(comm, &s); return s; }

static int mpi_check(lua_State *L, int rc, const char *what)
{
    if (rc == MPI_SUCCESS) return 0;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    return luaL_error(L, "kiln.mpi.%s: %s", what, text);
}
#define MPI_TRY(L, call, what) mpi_check((L), (call), (what))

/* Called by the host before any script runs. Also picks a thread count per process when
 * the researcher gave none (KILN_THREADS): the CPUs this process may run on, shared by the
 * ranks on the same node, so N ranks on one machine do not each start a thread per core. */
int knL_mpi_init(char *err, size_t errlen)
{
    int done = 0;
    MPI_Initialized(&done);
    if (done) return 0;
    int provided = 0;
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Init_thread failed (error %d)", rc);
        return -1;
    }
    mpi_on = true;
    comm = MPI_COMM_WORLD;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1 && getenv("KILN_THREADS") == NULL) {
        MPI_Comm node;
        int local = 1;
        if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
            MPI_Comm_size(node, &local);
            MPI_Comm_free(&node);
        }
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        int n = online > 0 ? (int)online : 1;
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) {
            /* Bound by the launcher (mpirun binds to cores for small jobs): use what we got. */
            if (CPU_COUNT(&set) < n) n = CPU_COUNT(&set);
            else n = n / (local > 0 ? local : 1);
        }
        kn_set_threads(n > 0 ? n : 1);
    }
    /* Rank 0 speaks for the job: the others' standard output goes nowhere unless asked for
     * (KILN_MPI_OUTPUT=all). Errors use standard error, which every rank keeps. */
    if (size > 1 && rank > 0) {
        const char *o = getenv("KILN_MPI_OUTPUT");
        if (!o || strcmp(o, "all") != 0) {
            fflush(stdout);
            if (!freopen("/dev/null", "w", stdout)) { /* keep the old stdout */ }
        }
    }
    return 0;
}

void knL_mpi_world(int *rank, int *size)
{
    *rank = 0, *size = 1;
    if (!mpi_on) return;
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
}

/* At exit: a failure on one rank of several ends the whole job (the others may be waiting
 * in a collective for a process that will never come); otherwise finalise. */
void knL_mpi_finish(int failed)
{
    if (!mpi_on) return;
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    fflush(stdout);
    fflush(stderr);
    if (failed && size > 1) MPI_Abort(MPI_COMM_WORLD, failed);   /* failed: the exit code */
    mpi_on = false;
    MPI_Finalize();
}

#else  /* no MPI: one process */

static int comm_rank(void) { return 0; }
static int comm_size(void) { return 1; }
int knL_mpi_init(char *err, size_t errlen) { (void)err; (void)errlen; return 0; }
void knL_mpi_world(int *rank, int *size) { *rank = 0, *size = 1; }
void knL_mpi_finish(int failed) { (void)failed; }

#endif

static int l_rank(lua_State *L) { lua_pushinteger(L, comm_rank()); return 1; }
static int l_size(lua_State *L) { lua_pushinteger(L, comm_size()); return 1; }

static int l_world(lua_State *L)
{
    int r, s;
    knL_mpi_world(&r, &s);
    lua_pushinteger(L, r);
    lua_pushinteger(L, s);
    return 2;
}

enum { OP_SUM, OP_MEAN, OP_MAX, OP_MIN };
static const char *const op_names[] = {"sum", "mean", "max", "min", NULL};

static kn_tensor *check_contiguous(lua_State *L, int arg, const char *fn)
{
    kn_tensor *t = knL_check_tensor(L, arg);
    if (!kn_tensor_is_contiguous(t))
        luaL_argerror(L, arg, lua_pushfstring(L, "%s needs a contiguous tensor (copy the view first)", fn));
    return t;
}

/* allreduce(tensor [, op]) -> tensor (reduced in place over every rank; one MPI_Allreduce,
 * split only past 2^30 elements); allreduce(number [, op]) -> the reduced number. */
static int l_allreduce(lua_State *L)
{
    int op = luaL_checkoption(L, 2, "sum", op_names);
    int size = comm_size();
    if (lua_type(L, 1) == LUA_TNUMBER) {
        bool is_int = lua_isinteger(L, 1) && op != OP_MEAN;
        if (size == 1) { lua_settop(L, 1); return 1; }
#ifdef KILN_MPI
        MPI_Op mop = op == OP_MAX ? MPI_MAX : op == OP_MIN ? MPI_MIN : MPI_SUM;
        if (is_int) {
            long long v = (long long)lua_tointeger(L, 1);
            MPI_TRY(L, MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_LONG_LONG, mop, comm), "allreduce");
            lua_pushinteger(L, (lua_Integer)v);
        } else {
            double v = (double)lua_tonumber(L, 1);
            MPI_TRY(L, MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, mop, comm), "allreduce");
            lua_pushnumber(L, op == OP_MEAN ? v / size : v);
        }
#else
        (void)is_int;
#endif
        return 1;
    }
    kn_tensor *t = check_contiguous(L, 1, "allreduce");
    lua_settop(L, 1);
    if (size == 1) return 1;
#ifdef KILN_MPI
    MPI_Op mop = op == OP_MAX ? MPI_MAX : op == OP_MIN ? MPI_MIN : MPI_SUM;
    int64_t n = kn_tensor_numel(t);
    const int64_t chunk = (int64_t)1 << 30;
    for (int64_t at = 0; at < n; at += chunk) {
        int count = (int)(n - at < chunk ? n - at : chunk);
        MPI_TRY(L, MPI_Allreduce(MPI_IN_PLACE, t->data + at, count, MPI_FLOAT, mop, comm), "allreduce");
    }
    if (op == OP_MEAN) kn_tensor_scale(t, 1.0f / (float)size);
#else
    (void)t;
#endif
    return 1;
}

#ifdef KILN_MPI
static int bcast_bytes(lua_State *L, void *buf, long long n, int root)
{
    for (long long at = 0; at < n; at += INT_MAX / 2) {
        int count = (int)(n - at < INT_MAX / 2 ? n - at : INT_MAX / 2);
        MPI_TRY(L, MPI_Bcast((char *)buf + at, count, MPI_BYTE, root, comm), "broadcast");
    }
    return 0;
}
#endif

/* broadcast(tensor, root) -> tensor (root's values, in place); broadcast(value, root) ->
 * root's value (nil, boolean, number or string). */
static int l_broadcast(lua_State *L)
{
    lua_Integer root = luaL_checkinteger(L, 2);
    int size = comm_size();
    luaL_argcheck(L, root >= 0 && root < size, 2, "root is not a rank of this job");
    if (lua_type(L, 1) == LUA_TUSERDATA) {
        kn_tensor *t = check_contiguous(L, 1, "broadcast");
        lua_settop(L, 1);
#ifdef KILN_MPI
        if (size > 1) {
            long long n = (long long)kn_tensor_numel(t), n_root = n;
            MPI_TRY(L, MPI_Bcast(&n_root, 1, MPI_LONG_LONG, (int)root, comm), "broadcast");
            if (n_root != n)
                return luaL_error(L, "kiln.mpi.broadcast: the tensors differ in size (%I elements here, %I on rank %I)",
                                  (lua_Integer)n, (lua_Integer)n_root, root);
            bcast_bytes(L, t->data, n * (long long)sizeof(float), (int)root);
        }
#else
        (void)t;
#endif
        return 1;
    }
    int type = lua_type(L, 1);
    luaL_argcheck(L, type == LUA_TNIL || type == LUA_TNONE || type == LUA_TBOOLEAN || type == LUA_TNUMBER ||
                  type == LUA_TSTRING, 1, "expected a tensor, nil, a boolean, a number or a string");
    if (type == LUA_TNONE) lua_pushnil(L), lua_replace(L, 1);
    lua_settop(L, 1);
    if (size == 1) return 1;
#ifdef KILN_MPI
    /* header: kind (0 nil, 1 false, 2 true, 3 integer, 4 float, 5 string), payload length */
    long long head[2] = {0, 0};
    lua_Integer iv = 0;
    lua_Number fv = 0;
    size_t len = 0;
    const char *s = NULL;
    if (comm_rank() == root) {
        switch (lua_type(L, 1)) {
        case LUA_TBOOLEAN: head[0] = lua_toboolean(L, 1) ? 2 : 1; break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, 1)) head[0] = 3, iv = lua_tointeger(L, 1);
            else head[0] = 4, fv = lua_tonumber(L, 1);
            break;
        case LUA_TSTRING: head[0] = 5, s = lua_tolstring(L, 1, &len), head[1] = (long long)len; break;
        default: break;
        }
    }
    MPI_TRY(L, MPI_Bcast(head, 2, MPI_LONG_LONG, (int)root, comm), "broadcast");
    switch (head[0]) {
    case 0: lua_pushnil(L); break;
    case 1: case 2: lua_pushboolean(L, head[0] == 2); break;
    case 3:
        MPI_TRY(L, MPI_Bcast(&iv, (int)sizeof iv, MPI_BYTE, (int)root, comm), "broadcast");
        lua_pushinteger(L, iv);
        break;
    case 4:
        MPI_TRY(L, MPI_Bcast(&fv, (int)sizeof fv, MPI_BYTE, (int)root, comm), "broadcast");
        lua_pushnumber(L, fv);
        break;
    default: {
        if (comm_rank() == root) {
            bcast_bytes(L, (void *)s, head[1], (int)root);
            lua_pushvalue(L, 1);
        } else {
            luaL_Buffer b;
            char *p = luaL_buffinitsize(L, &b, (size_t)head[1]);
            bcast_bytes(L, p, head[1], (int)root);
            luaL_pushresultsize(&b, (size_t)head[1]);
        }
    }
    }
#endif
    return 1;
}

/* allgather(string) -> { rank 0's string, rank 1's, ... } on every rank. */
static int l_allgather(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int size = comm_size();
    lua_createtable(L, size, 0);
    if (size == 1) {
        lua_pushvalue(L, 1);
        lua_rawseti(L, -2, 1);
        return 1;
    }
#ifdef KILN_MPI
    if (len > (size_t)INT_MAX) return luaL_error(L, "kiln.mpi.allgather: a string of %I bytes is too long", (lua_Integer)len);
    int *counts = lua_newuserdatauv(L, 2 * (size_t)size * sizeof(int), 0);
    int *displs = counts + size;
    int mine = (int)len;
    MPI_TRY(L, MPI_Allgather(&mine, 1, MPI_INT, counts, 1, MPI_INT, comm), "allgather");
    long long total = 0;
    for (int i = 0; i < size; i++) {
        if (total + counts[i] > INT_MAX) return luaL_error(L, "kiln.mpi.allgather: more than 2 GiB in all");
        displs[i] = (int)total;
        total += counts[i];
    }
    char *all = lua_newuserdatauv(L, total > 0 ? (size_t)total : 1, 0);
    MPI_TRY(L, MPI_Allgatherv(s, mine, MPI_BYTE, all, counts, displs, MPI_BYTE, comm), "allgather");
    for (int i = 0; i < size; i++) {
        lua_pushlstring(L, all + displs[i], (size_t)counts[i]);
        lua_rawseti(L, -4, i + 1);
    }
    lua_pop(L, 2);
#else
    (void)s;
#endif
    return 1;
}

static int l_barrier(lua_State *L)
{
#ifdef KILN_MPI
    if (comm_size() > 1) MPI_TRY(L, MPI_Barrier(comm), "barrier");
#else
    (void)L;
#endif
    return 0;
}

/* abort(msg [, code]): print the message naming the rank and end every process of the job
 * (without MPI: this process) with the code (default 1). */
static int l_abort(lua_State *L)
{
    const char *msg = luaL_optstring(L, 1, "aborted");
    int code = (int)luaL_optinteger(L, 2, 1);
    int r, s;
    knL_mpi_world(&r, &s);
    fflush(stdout);
    if (s > 1) fprintf(stderr, "kiln (rank %d of %d): %s\n", r, s, msg);
    else fprintf(stderr, "kiln: %s\n", msg);
    fflush(stderr);
#ifdef KILN_MPI
    if (mpi_on && s > 1) MPI_Abort(MPI_COMM_WORLD, code != 0 ? code : 1);
#endif
    exit(code);
}

#ifdef KILN_MPI
/* solo(f, ...): the communicator is MPI_COMM_SELF while f runs; a to-be-closed value puts
 * the previous one back however f ends (return or error). */
#define SOLO_MT "kiln.mpi.solo_guard"
static int solo_restore(lua_State *L)
{
    MPI_Comm *saved = luaL_checkudata(L, 1, SOLO_MT);
    comm = *saved;
    return 0;
}
#endif

static int l_solo(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 1;
#ifdef KILN_MPI
    if (mpi_on) {
        MPI_Comm *saved = lua_newuserdatauv(L, sizeof *saved, 0);
        *saved = comm;
        luaL_setmetatable(L, SOLO_MT);
        lua_insert(L, 1);            /* the guard below the function, closed when we return */
        lua_toclose(L, 1);
        comm = MPI_COMM_SELF;
        lua_call(L, nargs, LUA_MULTRET);
        int nres = lua_gettop(L) - 1;
        lua_closeslot(L, 1);
        return nres;
    }
#endif
    lua_call(L, nargs, LUA_MULTRET);
    return lua_gettop(L);
}

#ifdef KILN_MPI
/* os.exit under MPI: a non-zero code with other ranks running ends the job (they may wait
 * for this one in a collective); otherwise finalise, then exit as Lua's os.exit does. */
static int l_os_exit(lua_State *L)
{
    int code = lua_isboolean(L, 1) ? (lua_toboolean(L, 1) ? 0 : 1) : (int)luaL_optinteger(L, 1, 0);
    knL_mpi_finish(code);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 0);
    return 0;
}
#endif

static const luaL_Reg mpi_funcs[] = {
    {"rank", l_rank}, {"size", l_size}, {"world", l_world}, {"allreduce", l_allreduce},
    {"broadcast", l_broadcast}, {"allgather", l_allgather}, {"barrier", l_barrier},
    {"abort", l_abort}, {"solo", l_solo}, {NULL, NULL}
};

void knL_open_mpi(lua_State *L)
{
    luaL_newlib(L, mpi_funcs);
#ifdef KILN_MPI
    luaL_newmetatable(L, SOLO_MT);
    lua_pushcfunction(L, solo_restore);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    if (mpi_on) {
        if (lua_getglobal(L, "os") == LUA_TTABLE) {
            lua_getfield(L, -1, "exit");
            if (lua_tocfunction(L, -1) != l_os_exit) {
                lua_pushcclosure(L, l_os_exit, 1);
                lua_setfield(L, -2, "exit");
            } else {
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    lua_pushboolean(L, mpi_on);
#else
    lua_pushboolean(L, 0);
#endif
    lua_setfield(L, -2, "enabled");
    lua_setfield(L, -2, "mpi");
}
