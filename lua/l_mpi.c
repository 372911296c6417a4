/* l_mpi.c — kiln.mpi: the few MPI collectives a training loop and a suite need, so that a
 * protocol is written once and runs as one process or as N under mpirun.
 *
 *   kiln.mpi.enabled                       true in an MPI build (make MPI=1) started by the kiln host
 *   kiln.mpi.rank(), size()                this process and the process count (0 and 1 without MPI)
 *   kiln.mpi.world()                       rank, size of the whole job (the same, even inside solo)
 *   kiln.mpi.allreduce(x [, op [, label]]) tensor in place, or a number returned; op sum|mean|max|min
 *   kiln.mpi.broadcast(x, root [, label])  tensor in place, or a number/string/boolean returned
 *   kiln.mpi.allgather(s [, label])        every rank's string, as an array indexed by rank + 1
 *   kiln.mpi.barrier([label])
 *   kiln.mpi.solo(f, ...)                  call f with rank() = 0 and size() = 1 (MPI_COMM_SELF)
 *   kiln.mpi.set_timeout(seconds)          the longest wait in a collective; returns the old one
 *   kiln.mpi.guard(what)                   a to-be-closed value: an error leaving its block is
 *                                          told to the other ranks at once (nil on one process)
 *   kiln.mpi.abort(msg [, code])           print msg (naming the rank) and end the whole job
 *   kiln.mpi.backward(model [, scale [, op [, label]]])  model:backward(scale) with the gradient
 *                                          reduced over the ranks (sum|mean) during the backward
 *   kiln.mpi.set_bucket_size(bytes)        how much gradient backward reduces at a time; returns the old
 *
 * A label names the collective in messages: "allreduce(grads)".
 *
 * No rank waits forever for another. On several ranks every collective starts with a small
 * non-blocking handshake (an MPI_Iallreduce of which call each rank is making), polled with
 * MPI_Test against a deadline, so Ctrl-C gets through too. While polling, a rank reads the
 * notices other ranks send on a communicator of their own: "finished its script", "an error
 * left kiln.train" (a guard), "busy alone in solo". A notice that means a rank will never
 * join this collective ends the job at once, naming both ranks, the collective and the
 * reason; silence ends it when the deadline passes. A completed handshake also shows when
 * ranks made different calls (a Lua error on every rank). Only then does the data move, with
 * the ordinary blocking call, which cannot hang as every rank is in it. kiln.mpi.backward is
 * the exception: its buckets move with non-blocking calls during the backward, and the wait
 * for them is polled like a handshake (see "backward with the gradient all-reduce" below).
 *
 * The same file compiles with and without -DKILN_MPI; without it every collective is the
 * identity on one process. MPI is initialised by the host (lua/main.c calls knL_mpi_init);
 * kiln.so loaded into a stock lua5.4 never initialises it, reports one process, and its
 * abort raises an error instead of ending the host. */
#include "binding.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The longest a rank waits in a collective for the others (KILN_MPI_TIMEOUT, set_timeout). */
static double timeout_s = 300.0;
/* Set by knL_mpi_init, which only the kiln host calls: only then may abort end the process. */
static bool in_host = false;

static int parse_timeout(char *err, size_t errlen)
{
    const char *v = getenv("KILN_MPI_TIMEOUT");
    if (v == NULL || *v == '\0') return 0;
    char *end = NULL;
    double s = strtod(v, &end);
    if (end == v || *end != '\0' || !(s > 0)) {
        snprintf(err, errlen, "KILN_MPI_TIMEOUT: expected a number of seconds > 0, got '%s'", v);
        return -1;
    }
    timeout_s = s;
    return 0;
}

#ifdef KILN_MPI
#include <limits.h>
#include <sched.h>
#include <stddef.h>
#include <time.h>
#include <mpi.h>

static bool mpi_on = false;      /* initialised by us and not yet finalised */
static MPI_Comm comm;            /* the communicator rank()/size() and collectives use */

static int comm_rank(void) { int r = 0; if (mpi_on) MPI_Comm_rank(comm, &r); return r; }
static int comm_size(void) { int s = 1; if (mpi_on) MPI_Comm_size(comm, &s); return s; }
static int world_rank(void) { int r = 0; if (mpi_on) MPI_Comm_rank(MPI_COMM_WORLD, &r); return r; }
static int world_size(void) { int s = 1; if (mpi_on) MPI_Comm_size(MPI_COMM_WORLD, &s); return s; }

static int mpi_check(lua_State *L, int rc, const char *what)
{
    if (rc == MPI_SUCCESS) return 0;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    return luaL_error(L, "kiln.mpi.%s: %s", what, text);
}
#define MPI_TRY(L, call, what) mpi_check((L), (call), (what))

/* ---- notices: what a rank tells the others outside the collectives ---------------------- */

enum { NOTICE_ERROR = 1, NOTICE_FINISHED, NOTICE_SOLO_IN, NOTICE_SOLO_OUT };
#define NOTICE_TAG 7
#define NOTICE_TEXT 480

struct notice { long long kind, at; char text[NOTICE_TEXT]; };
/* What this rank knows of another: whether it left (NOTICE_ERROR, NOTICE_FINISHED) after
 * beginning `at` collectives, why, and whether it is busy alone inside solo. */
struct peer { long long left, at; bool solo; char why[NOTICE_TEXT]; };

static MPI_Comm notice_comm = MPI_COMM_NULL;
static struct peer *peers;             /* one per world rank */
static struct notice outbox;           /* the notice in flight, kept until its sends complete */
static MPI_Request *out_reqs;          /* world size - 1 sends of the outbox */
static int out_pending = 0;
static long long collectives = 0;      /* handshakes begun on the world communicator */
static long long my_error_at = -1;     /* collectives begun when an error last left a guard here */
static double solo_ended = 0;          /* when a notice last said a rank left solo (now() clock) */
/* kiln.mpi.backward's gradient buckets in flight, reused by every step */
struct bucket { MPI_Request req; size_t offset; int count; bool done; };
static struct bucket *buckets;
static size_t buckets_cap;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void send_notice(int kind, const char *text)
{
    int rank = world_rank(), size = world_size();
    if (size < 2) return;
    if (out_pending) MPI_Waitall(out_pending, out_reqs, MPI_STATUSES_IGNORE);   /* small: sent eagerly */
    outbox.kind = kind;
    outbox.at = collectives;
    snprintf(outbox.text, sizeof outbox.text, "%s", text ? text : "");
    int len = (int)(offsetof(struct notice, text) + strlen(outbox.text) + 1);
    out_pending = 0;
    for (int r = 0; r < size; r++)
        if (r != rank) MPI_Isend(&outbox, len, MPI_BYTE, r, NOTICE_TAG, notice_comm, &out_reqs[out_pending++]);
}

static void read_notices(void)
{
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, NOTICE_TAG, notice_comm, &flag, &st) != MPI_SUCCESS || !flag) return;
        struct notice n;
        memset(&n, 0, sizeof n);
        MPI_Recv(&n, (int)sizeof n, MPI_BYTE, st.MPI_SOURCE, NOTICE_TAG, notice_comm, MPI_STATUS_IGNORE);
        n.text[NOTICE_TEXT - 1] = '\0';
        struct peer *p = &peers[st.MPI_SOURCE];
        if (n.kind == NOTICE_SOLO_IN || n.kind == NOTICE_SOLO_OUT) {
            p->solo = n.kind == NOTICE_SOLO_IN;
            if (!p->solo) solo_ended = now();
        } else {
            p->left = n.kind, p->at = n.at;
            snprintf(p->why, sizeof p->why, "%s", n.text);
        }
    }
}

/* A rank that will never join collective number k, or -1. A rank that finished did not; nor
 * did one whose error left a guard before k, unless this rank's own error left at the same
 * point (every rank failed alike and they carry on in step). */
static int absent_peer(long long k)
{
    int me = world_rank(), size = world_size();
    for (int r = 0; r < size; r++) {
        const struct peer *p = &peers[r];
        if (r == me || p->at >= k) continue;
        if (p->left == NOTICE_FINISHED) return r;
        if (p->left == NOTICE_ERROR && p->at != my_error_at) return r;
    }
    return -1;
}

static bool peer_in_solo(void)
{
    for (int r = 0; r < world_size(); r++)
        if (peers[r].solo) return true;
    return false;
}

/* Print why this rank cannot go on (with where its script stands) and end the job. */
static void end_job(lua_State *L, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    luaL_traceback(L, L, NULL, 1);
    fflush(stdout);
    fprintf(stderr, "kiln.mpi: rank %d %s\n%s\n", world_rank(), msg, lua_tostring(L, -1));
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);   /* MPI_Abort does not return */
}

/* Spin briefly (ranks usually arrive within a millisecond), then yield the core to a rank
 * that shares it, then sleep: a rank waiting for minutes must not slow the one it waits for. */
static void pause_for(double waited)
{
    if (waited < 1e-3) return;
    if (waited < 0.1) { sched_yield(); return; }
    struct timespec ts = {0, 500000};
    nanosleep(&ts, NULL);
}

static void end_job_absent(lua_State *L, int r, double waited, const char *what)
{
    const struct peer *p = &peers[r];
    if (p->left == NOTICE_FINISHED)
        end_job(L, "waited %.1f s in %s for rank %d, which finished its script", waited, what, r);
    end_job(L, "waited %.1f s in %s for rank %d, which raised an error in %s", waited, what, r, p->why);
}

/* One look around while waiting in collective k since t0: ends the job if a rank will never
 * join it, at the deadline (not while another rank works alone in solo), or on Ctrl-C. */
static void check_waiting(lua_State *L, long long k, double t0, const char *what)
{
    read_notices();
    double t = now(), waited = t - t0;
    int r = absent_peer(k);
    if (r >= 0) end_job_absent(L, r, waited, what);
    if (kn_interrupted) end_job(L, "was interrupted after waiting %.1f s in %s", waited, what);
    /* the deadline counts from the start, or from the end of another rank's solo work */
    if (t - (solo_ended > t0 ? solo_ended : t0) > timeout_s && !peer_in_solo()) {
        int size = world_size();
        char whom[64];
        if (size == 2) snprintf(whom, sizeof whom, "rank %d", 1 - world_rank());
        else snprintf(whom, sizeof whom, "at least one of the other %d ranks", size - 1);
        end_job(L, "waited %.1f s in %s for %s, which did not join it (still working, stuck, or "
                "in another collective); the limit is KILN_MPI_TIMEOUT or kiln.mpi.set_timeout(seconds)",
                waited, what, whom);
    }
}

static void test_or_end(lua_State *L, MPI_Request *req, int *done, const char *what)
{
    int rc = MPI_Test(req, done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
        char text[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(rc, text, &len);
        end_job(L, "failed in %s: %s", what, text);
    }
}

/* Poll the handshake of collective k until it completes (or the job ends, check_waiting). */
static void wait_handshake(lua_State *L, MPI_Request *req, long long k, const char *what)
{
    double t0 = now();
    for (;;) {
        int done = 0;
        test_or_end(L, req, &done, what);
        if (done) return;
        check_waiting(L, k, t0, what);
        pause_for(now() - t0);
    }
}

enum { C_ALLREDUCE_TENSOR = 1, C_ALLREDUCE_INTEGER, C_ALLREDUCE_NUMBER, C_BROADCAST_TENSOR,
       C_BROADCAST_VALUE, C_ALLGATHER, C_BARRIER, C_BACKWARD };
static const char *const call_names[] = {
    "?", "allreduce of a tensor", "allreduce of an integer", "allreduce of a float",
    "broadcast of a tensor", "broadcast of a value", "allgather", "barrier",
    "backward with the gradient all-reduce"
};

/* Before collective `call` moves any data: every rank has arrived (or the job ends, see
 * wait_handshake). Returns NULL when every rank made the same call with the same count and
 * root, else why not, written to msg (root_is names the root in it). One reduction of (x, -x)
 * pairs gives the maximum and minimum. */
static const char *shake(lua_State *L, int call, long long count, long long root,
                         const char *root_is, const char *what, char *msg, size_t len)
{
    long long k = ++collectives;
    long long sig[6] = {call, -call, count, -count, root, -root};
    MPI_Request req;
    if (MPI_Iallreduce(MPI_IN_PLACE, sig, 6, MPI_LONG_LONG, MPI_MAX, comm, &req) != MPI_SUCCESS)
        end_job(L, "could not start %s", what);
    wait_handshake(L, &req, k, what);
    read_notices();
    int r = absent_peer(k);
    if (r >= 0) end_job_absent(L, r, 0.0, what);
    if (sig[0] != -sig[1]) {
        long long other = sig[0] == call ? -sig[1] : sig[0];
        snprintf(msg, len, "kiln.mpi.%s: another rank made a different call here (%s, this rank %s): every rank "
                 "must make the same kiln.mpi calls in the same order", what,
                 call_names[other > 0 && other <= C_BACKWARD ? other : 0], call_names[call]);
    } else if (sig[2] != -sig[3]) {
        snprintf(msg, len, "kiln.mpi.%s: the ranks disagree on the size (%lld here, from %lld to %lld over the ranks)",
                 what, count, -sig[3], sig[2]);
    } else if (sig[4] != -sig[5]) {
        snprintf(msg, len, "kiln.mpi.%s: %s (%lld here, from %lld to %lld)", what, root_is, root, -sig[5], sig[4]);
    } else {
        return NULL;
    }
    return msg;
}

/* shake, raising the disagreement as a Lua error on this rank (every rank raises one). */
static void handshake(lua_State *L, int call, long long count, int root, const char *what)
{
    char msg[512];
    if (shake(L, call, count, root, "the ranks name different roots", what, msg, sizeof msg))
        luaL_error(L, "%s", msg);
}

/* "allreduce(grads)" from the function's name and the caller's optional label. */
static const char *call_what(lua_State *L, int label_arg, const char *fn, char *buf, size_t len)
{
    const char *label = luaL_optstring(L, label_arg, NULL);
    if (label) snprintf(buf, len, "%s(%s)", fn, label);
    else snprintf(buf, len, "%s", fn);
    return buf;
}

#ifdef __GLIBC__
/* os.exit (or any exit) with MPI still running: as at the end of a script, but a non-zero
 * status with other ranks running ends the job. */
static void finish_at_exit(int status, void *arg)
{
    (void)arg;
    if (!mpi_on) return;
    if (status != 0 && world_size() > 1)
        fprintf(stderr, "kiln.mpi: rank %d exited with status %d; ending the job\n", world_rank(), status);
    knL_mpi_finish(status);
}
#else
static void finish_at_exit_plain(void) { if (mpi_on) knL_mpi_finish(0); }
#endif

/* Called by the host before any script runs. Also picks a thread count per process when
 * the researcher gave none (KILN_THREADS): the CPUs this process may run on, shared by the
 * ranks on the same node, so N ranks on one machine do not each start a thread per core. */
int knL_mpi_init(char *err, size_t errlen)
{
    in_host = true;
    if (parse_timeout(err, errlen) != 0) return -1;
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
    peers = calloc((size_t)size, sizeof *peers);
    out_reqs = calloc((size_t)size, sizeof *out_reqs);
    if (!peers || !out_reqs || MPI_Comm_dup(MPI_COMM_WORLD, &notice_comm) != MPI_SUCCESS) {
        snprintf(err, errlen, "kiln.mpi: out of memory setting up %d ranks", size);
        return -1;
    }
#ifdef __GLIBC__
    on_exit(finish_at_exit, NULL);
#else
    atexit(finish_at_exit_plain);
#endif
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
    *rank = world_rank(), *size = world_size();
}

/* A rank that is done tells the others, then waits until every rank is done (all notices
 * are read by then) before finalising. No deadline here: the ranks still running are
 * working, and one that enters a collective learns at once that this rank has finished. */
static void wait_for_all_finished(void)
{
    send_notice(NOTICE_FINISHED, "");
    int me = world_rank(), size = world_size();
    for (;;) {
        read_notices();
        int r = 0;
        while (r < size && (r == me || peers[r].left == NOTICE_FINISHED)) r++;
        if (r == size) break;
        if (kn_interrupted) {
            fprintf(stderr, "kiln.mpi: rank %d was interrupted while waiting for rank %d to finish\n", me, r);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (out_pending) MPI_Waitall(out_pending, out_reqs, MPI_STATUSES_IGNORE);
    out_pending = 0;
}

/* At exit: a failure on one rank of several ends the whole job (the others may be waiting
 * in a collective for a process that will never come); otherwise finalise. */
void knL_mpi_finish(int failed)
{
    if (!mpi_on) return;
    int size = world_size();
    fflush(stdout);
    fflush(stderr);
    if (failed && size > 1) MPI_Abort(MPI_COMM_WORLD, failed);   /* failed: the exit code */
    if (size > 1) wait_for_all_finished();
    MPI_Comm_free(&notice_comm);
    free(peers);
    free(out_reqs);
    free(buckets);
    peers = NULL, out_reqs = NULL, buckets = NULL, buckets_cap = 0;
    mpi_on = false;
    MPI_Finalize();
}

#else  /* no MPI: one process */

static int comm_rank(void) { return 0; }
static int comm_size(void) { return 1; }
int knL_mpi_init(char *err, size_t errlen) { in_host = true; return parse_timeout(err, errlen); }
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

/* allreduce(tensor [, op [, label]]) -> tensor (reduced in place over every rank; one
 * MPI_Allreduce, split only past 2^30 elements); allreduce(number [, op [, label]]) -> the
 * reduced number. */
static int l_allreduce(lua_State *L)
{
    int op = luaL_checkoption(L, 2, "sum", op_names);
    int size = comm_size();
    if (lua_type(L, 1) == LUA_TNUMBER) {
        bool is_int = lua_isinteger(L, 1) && op != OP_MEAN;
        if (size == 1) { lua_settop(L, 1); return 1; }
#ifdef KILN_MPI
        char what[96];
        call_what(L, 3, "allreduce", what, sizeof what);
        handshake(L, is_int ? C_ALLREDUCE_INTEGER : C_ALLREDUCE_NUMBER, 1, 0, what);
        MPI_Op mop = op == OP_MAX ? MPI_MAX : op == OP_MIN ? MPI_MIN : MPI_SUM;
        if (is_int) {
            long long v = (long long)lua_tointeger(L, 1);
            MPI_TRY(L, MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_LONG_LONG, mop, comm), what);
            lua_pushinteger(L, (lua_Integer)v);
        } else {
            double v = (double)lua_tonumber(L, 1);
            MPI_TRY(L, MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, mop, comm), what);
            lua_pushnumber(L, op == OP_MEAN ? v / size : v);
        }
#else
        (void)is_int;
#endif
        return 1;
    }
    kn_tensor *t = check_contiguous(L, 1, "allreduce");
    if (size == 1) { lua_settop(L, 1); return 1; }
#ifdef KILN_MPI
    char what[96];
    call_what(L, 3, "allreduce", what, sizeof what);
    lua_settop(L, 1);
    int64_t n = kn_tensor_numel(t);
    handshake(L, C_ALLREDUCE_TENSOR, (long long)n, 0, what);
    MPI_Op mop = op == OP_MAX ? MPI_MAX : op == OP_MIN ? MPI_MIN : MPI_SUM;
    const int64_t chunk = (int64_t)1 << 30;
    for (int64_t at = 0; at < n; at += chunk) {
        int count = (int)(n - at < chunk ? n - at : chunk);
        MPI_TRY(L, MPI_Allreduce(MPI_IN_PLACE, t->data + at, count, MPI_FLOAT, mop, comm), what);
    }
    if (op == OP_MEAN) kn_tensor_scale(t, 1.0f / (float)size);
#else
    (void)t;
#endif
    return 1;
}

/* ---- backward with the gradient all-reduce overlapped ------------------------------------
 * kn_gpt_backward_with reports ranges of the flat gradient buffer as they become final, from
 * the end of the buffer down. They are merged into buckets of at least bucket_floats, each
 * reduced in place with its own MPI_Iallreduce (MPI_SUM) while the backward goes on; every
 * later report tests the open buckets, which is what moves them along (Open MPI progresses
 * non-blocking collectives only inside MPI calls). A bucket found complete is scaled by
 * 1/size for "mean" at once, with the same float multiply as allreduce's "mean": on 2 ranks
 * a + b is the same float whatever the algorithm, so the result equals the blocking
 * allreduce's bit for bit (with more ranks the summation order may differ).
 * The whole reduction has one handshake, in the first report: from then on every rank is
 * committed to the same buckets (they depend only on the model and the bucket size, which
 * the handshake compares). The final wait polls like a handshake, counting as collective
 * k + 1, so a rank whose error leaves after the handshake but before its last bucket is
 * absent for the others, which end the job instead of waiting. */
static size_t bucket_floats = (4u << 20) / sizeof(float);   /* set_bucket_size */

#ifdef KILN_MPI
#define BUCKET_MAX_COUNT ((size_t)1 << 30)

typedef struct {
    lua_State *L;
    const char *what;
    float *grads;
    size_t nparams;
    size_t lo, hi;               /* final but not yet sent: grads[lo, hi) */
    size_t n, first_open;        /* buckets started; below first_open all are complete */
    float scale;                 /* 1/size for "mean", 1 for "sum" */
    bool shaken, agreed;
    long long k;                 /* the handshake's collective number */
    double shake_s, poll_s;      /* time in the handshake, in polls during the backward */
    char msg[512];
} overlap;

/* Room for the most buckets a backward of g can start: one per reported range (at most one
 * per tensor) plus the splits of ranges past BUCKET_MAX_COUNT. */
static void reserve_buckets(lua_State *L, kn_gpt *g)
{
    size_t need = (size_t)kn_gpt_num_tensors(g) + kn_gpt_num_params(g) / BUCKET_MAX_COUNT + 2;
    if (need <= buckets_cap) return;
    struct bucket *b = realloc(buckets, need * sizeof *b);
    if (!b) luaL_error(L, "kiln.mpi.backward: out of memory for %d buckets", (int)need);
    buckets = b, buckets_cap = need;
}

static void start_buckets(overlap *o)
{
    while (o->hi > o->lo) {
        size_t count = o->hi - o->lo < BUCKET_MAX_COUNT ? o->hi - o->lo : BUCKET_MAX_COUNT;
        struct bucket *b = &buckets[o->n++];
        o->hi -= count;
        b->offset = o->hi, b->count = (int)count, b->done = false;
        if (MPI_Iallreduce(MPI_IN_PLACE, o->grads + b->offset, b->count, MPI_FLOAT, MPI_SUM, comm,
                           &b->req) != MPI_SUCCESS)
            end_job(o->L, "could not start a bucket of %s", o->what);
    }
}

/* Test the open buckets (moving them along); scale those that completed. */
static void poll_buckets(overlap *o)
{
    for (size_t i = o->first_open; i < o->n; i++) {
        struct bucket *b = &buckets[i];
        if (b->done) continue;
        int done = 0;
        test_or_end(o->L, &b->req, &done, o->what);
        if (!done) continue;
        b->done = true;
        if (o->scale != 1.0f)
            for (float *p = o->grads + b->offset, *e = p + b->count; p < e; p++) *p *= o->scale;
    }
    while (o->first_open < o->n && buckets[o->first_open].done) o->first_open++;
}

/* The backward's hook: handshake at the first report, then bucket and poll. */
static kn_status grads_ready(void *ctx, size_t offset, size_t count)
{
    overlap *o = ctx;
    (void)count;
    double t0 = now();
    if (!o->shaken) {
        o->shaken = true;
        o->k = collectives + 1;
        if (shake(o->L, C_BACKWARD, (long long)o->nparams, (long long)bucket_floats,
                  "the ranks use different bucket sizes (kiln.mpi.set_bucket_size; in floats)",
                  o->what, o->msg, sizeof o->msg))
            return kn_fail(KN_ERR_ARG, "%s", o->msg);
        o->agreed = true;
        o->shake_s = now() - t0;
        t0 = now();
    }
    o->lo = offset;
    if (o->hi - o->lo >= bucket_floats || offset == 0) start_buckets(o);
    poll_buckets(o);
    o->poll_s += now() - t0;
    return KN_OK;
}

/* After the backward: poll until every bucket is complete, or the job ends (check_waiting,
 * as collective k + 1). */
static void wait_buckets(overlap *o)
{
    double t0 = now();
    for (;;) {
        poll_buckets(o);
        if (o->first_open == o->n) break;
        check_waiting(o->L, o->k + 1, t0, o->what);
        pause_for(now() - t0);
    }
    collectives = o->k + 1;
}
#endif

/* backward(model [, grad_scale [, op [, label]]]) -> seconds waited for the reduction after
 * the backward, number of buckets, seconds in the handshake (waiting for the other ranks to
 * reach the backward's first range), seconds starting and testing buckets during the
 * backward. model:backward(grad_scale), with the gradient reduced over the ranks (op "sum"
 * or "mean") during the backward on several ranks. */
static int l_backward(lua_State *L)
{
    kn_gpt *g = knL_check_model(L, 1);
    float scale = (float)luaL_optnumber(L, 2, 1.0);
    int op = luaL_checkoption(L, 3, "sum", op_names);
    luaL_argcheck(L, op == OP_SUM || op == OP_MEAN, 3, "expected \"sum\" or \"mean\"");
    if (comm_size() == 1) {
        KNL_TRY(L, kn_gpt_backward(g, scale));
        lua_pushnumber(L, 0);
        lua_pushinteger(L, 0);
        lua_pushnumber(L, 0);
        lua_pushnumber(L, 0);
        return 4;
    }
#ifdef KILN_MPI
    char what[96];
    call_what(L, 4, "backward", what, sizeof what);
    reserve_buckets(L, g);
    overlap o = {.L = L, .what = what, .grads = kn_gpt_grads(g), .nparams = kn_gpt_num_params(g),
                 .scale = op == OP_MEAN ? 1.0f / (float)comm_size() : 1.0f};
    o.lo = o.hi = o.nparams;
    if (kn_gpt_backward_with(g, scale, grads_ready, &o) != KN_OK) {
        /* after the handshake the other ranks wait for buckets this rank will never send */
        if (o.agreed) end_job(L, "stopped in %s after the ranks began reducing the gradient: %s", what, kn_errmsg());
        return knL_error(L);
    }
    double t0 = now();
    wait_buckets(&o);
    lua_pushnumber(L, now() - t0);
    lua_pushinteger(L, (lua_Integer)o.n);
    lua_pushnumber(L, o.shake_s);
    lua_pushnumber(L, o.poll_s);
#endif
    return 4;
}

/* set_bucket_size(bytes) -> the previous size in bytes. */
static int l_set_bucket_size(lua_State *L)
{
    lua_Number b = luaL_checknumber(L, 1);
    luaL_argcheck(L, b >= (lua_Number)sizeof(float) && b <= 1e12, 1, "expected a number of bytes >= 4");
    lua_pushinteger(L, (lua_Integer)(bucket_floats * sizeof(float)));
    bucket_floats = (size_t)(b / sizeof(float));
    return 1;
}

#ifdef KILN_MPI
static int bcast_bytes(lua_State *L, void *buf, long long n, int root, const char *what)
{
    for (long long at = 0; at < n; at += INT_MAX / 2) {
        int count = (int)(n - at < INT_MAX / 2 ? n - at : INT_MAX / 2);
        MPI_TRY(L, MPI_Bcast((char *)buf + at, count, MPI_BYTE, root, comm), what);
    }
    return 0;
}

/* The root's value (nil, boolean, number or string) at index 1 pushed on every rank. */
static void bcast_value(lua_State *L, int root, const char *what)
{
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
    MPI_TRY(L, MPI_Bcast(head, 2, MPI_LONG_LONG, root, comm), what);
    switch (head[0]) {
    case 0: lua_pushnil(L); break;
    case 1: case 2: lua_pushboolean(L, head[0] == 2); break;
    case 3:
        MPI_TRY(L, MPI_Bcast(&iv, (int)sizeof iv, MPI_BYTE, root, comm), what);
        lua_pushinteger(L, iv);
        break;
    case 4:
        MPI_TRY(L, MPI_Bcast(&fv, (int)sizeof fv, MPI_BYTE, root, comm), what);
        lua_pushnumber(L, fv);
        break;
    default:
        if (comm_rank() == root) {
            bcast_bytes(L, (void *)s, head[1], root, what);
            lua_pushvalue(L, 1);
        } else {
            luaL_Buffer b;
            char *p = luaL_buffinitsize(L, &b, (size_t)head[1]);
            bcast_bytes(L, p, head[1], root, what);
            luaL_pushresultsize(&b, (size_t)head[1]);
        }
    }
}
#endif

/* broadcast(tensor, root [, label]) -> tensor (root's values, in place);
 * broadcast(value, root [, label]) -> root's value (nil, boolean, number or string). */
static int l_broadcast(lua_State *L)
{
    lua_Integer root = luaL_checkinteger(L, 2);
    int size = comm_size();
    luaL_argcheck(L, root >= 0 && root < size, 2, "root is not a rank of this job");
#ifdef KILN_MPI
    char what[96];
    call_what(L, 3, "broadcast", what, sizeof what);
#endif
    if (lua_type(L, 1) == LUA_TUSERDATA) {
        kn_tensor *t = check_contiguous(L, 1, "broadcast");
        lua_settop(L, 1);
#ifdef KILN_MPI
        if (size > 1) {
            long long n = (long long)kn_tensor_numel(t);
            handshake(L, C_BROADCAST_TENSOR, n, (int)root, what);
            bcast_bytes(L, t->data, n * (long long)sizeof(float), (int)root, what);
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
    handshake(L, C_BROADCAST_VALUE, 0, (int)root, what);
    bcast_value(L, (int)root, what);
#endif
    return 1;
}

/* allgather(string [, label]) -> { rank 0's string, rank 1's, ... } on every rank. */
static int l_allgather(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int size = comm_size();
    if (size == 1) {
        lua_createtable(L, 1, 0);
        lua_pushvalue(L, 1);
        lua_rawseti(L, -2, 1);
        return 1;
    }
#ifdef KILN_MPI
    char what[96];
    call_what(L, 2, "allgather", what, sizeof what);
    lua_settop(L, 1);
    lua_createtable(L, size, 0);
    if (len > (size_t)INT_MAX) return luaL_error(L, "kiln.mpi.%s: a string of %I bytes is too long", what, (lua_Integer)len);
    handshake(L, C_ALLGATHER, 0, 0, what);
    int *counts = lua_newuserdatauv(L, 2 * (size_t)size * sizeof(int), 0);
    int *displs = counts + size;
    int mine = (int)len;
    MPI_TRY(L, MPI_Allgather(&mine, 1, MPI_INT, counts, 1, MPI_INT, comm), what);
    long long total = 0;
    for (int i = 0; i < size; i++) {
        if (total + counts[i] > INT_MAX) return luaL_error(L, "kiln.mpi.%s: more than 2 GiB in all", what);
        displs[i] = (int)total;
        total += counts[i];
    }
    char *all = lua_newuserdatauv(L, total > 0 ? (size_t)total : 1, 0);
    MPI_TRY(L, MPI_Allgatherv(s, mine, MPI_BYTE, all, counts, displs, MPI_BYTE, comm), what);
    for (int i = 0; i < size; i++) {
        lua_pushlstring(L, all + displs[i], (size_t)counts[i]);
        lua_rawseti(L, -4, i + 1);
    }
    lua_pop(L, 2);
#else
    (void)s, (void)len;
#endif
    return 1;
}

static int l_barrier(lua_State *L)
{
#ifdef KILN_MPI
    if (comm_size() > 1) {
        char what[96];
        call_what(L, 1, "barrier", what, sizeof what);
        handshake(L, C_BARRIER, 0, 0, what);   /* every rank has arrived: that is the barrier */
    }
#else
    (void)L;
#endif
    return 0;
}

/* set_timeout(seconds) -> the previous limit. math.huge: no limit. */
static int l_set_timeout(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s > 0, 1, "expected a number of seconds > 0 (math.huge: no limit)");
    lua_pushnumber(L, (lua_Number)timeout_s);
    timeout_s = (double)s;
    return 1;
}

/* abort(msg [, code]): print the message naming the rank and end every process of the job
 * (without MPI: this process) with the code (default 1). Only the kiln host ends the
 * process: in another host (lua5.4 with kiln.so) it raises the message as an error. */
static int l_abort(lua_State *L)
{
    const char *msg = luaL_optstring(L, 1, "aborted");
    int code = (int)luaL_optinteger(L, 2, 1);
    if (!in_host) return luaL_error(L, "kiln.mpi.abort: %s", msg);
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
/* guard(what): an error that closes the guard's variable tells the other ranks at once
 * (they may be waiting in a collective this rank will now skip). */
#define GUARD_MT "kiln.mpi.guard"
static int guard_close(lua_State *L)
{
    const char *what = luaL_checkudata(L, 1, GUARD_MT);
    if (lua_isnoneornil(L, 2) || !mpi_on) return 0;
    char text[NOTICE_TEXT];
    snprintf(text, sizeof text, "%s: %s", what, luaL_tolstring(L, 2, NULL));
    my_error_at = collectives;
    send_notice(NOTICE_ERROR, text);
    return 0;
}
#endif

static int l_guard(lua_State *L)
{
    const char *what = luaL_checkstring(L, 1);
#ifdef KILN_MPI
    if (comm_size() > 1) {
        char *name = lua_newuserdatauv(L, 64, 0);
        snprintf(name, 64, "%s", what);
        luaL_setmetatable(L, GUARD_MT);
        return 1;
    }
#else
    (void)what;
#endif
    lua_pushnil(L);   /* one process: nobody to tell (a nil <close> variable is allowed) */
    return 1;
}

#ifdef KILN_MPI
/* solo(f, ...): the communicator is MPI_COMM_SELF while f runs; a to-be-closed value puts
 * the previous one back however f ends (return or error). The other ranks are told, so that
 * they wait for this one's solo work without a deadline. */
#define SOLO_MT "kiln.mpi.solo_guard"
static int solo_restore(lua_State *L)
{
    MPI_Comm *saved = luaL_checkudata(L, 1, SOLO_MT);
    comm = *saved;
    if (comm == MPI_COMM_WORLD) send_notice(NOTICE_SOLO_OUT, "");
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
        if (comm == MPI_COMM_WORLD) send_notice(NOTICE_SOLO_IN, "");
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

static const luaL_Reg mpi_funcs[] = {
    {"rank", l_rank}, {"size", l_size}, {"world", l_world}, {"allreduce", l_allreduce},
    {"broadcast", l_broadcast}, {"allgather", l_allgather}, {"barrier", l_barrier},
    {"set_timeout", l_set_timeout}, {"guard", l_guard}, {"abort", l_abort}, {"solo", l_solo},
    {"backward", l_backward}, {"set_bucket_size", l_set_bucket_size}, {NULL, NULL}
};

void knL_open_mpi(lua_State *L)
{
    luaL_newlib(L, mpi_funcs);
#ifdef KILN_MPI
    luaL_newmetatable(L, SOLO_MT);
    lua_pushcfunction(L, solo_restore);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    luaL_newmetatable(L, GUARD_MT);
    lua_pushcfunction(L, guard_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    lua_pushboolean(L, mpi_on);
#else
    lua_pushboolean(L, 0);
#endif
    lua_setfield(L, -2, "enabled");
    lua_setfield(L, -2, "mpi");
}
