/* l_runtime.c — small module functions about the process: threads, Ctrl-C, clock, tty. */
#include "binding.h"

#include "gemm.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int l_set_threads(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 1024, 1, "thread count must be between 1 and 1024");
    kn_set_threads((int)n);
    return 0;
}

static int l_get_threads(lua_State *L)
{
    lua_pushinteger(L, kn_get_threads());
    return 1;
}

/* kiln.gemm(): which matrix multiply the linear layers run ("kiln" or "openblas"); results
 * differ in the last bits between the two, so a run records it (config.yaml). */
static int l_gemm(lua_State *L)
{
    lua_pushstring(L, kn_gemm_name(kn_gemm_selected()));
    return 1;
}

/* Polled by Lua loops (training) so Ctrl-C stops them between steps, too. */
static int l_interrupted(lua_State *L)
{
    lua_pushboolean(L, kn_interrupted != 0);
    return 1;
}

/* Monotonic wall-clock seconds, for tokens/s (os.clock is CPU time summed over threads). */
static int l_clock(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

/* kiln.isatty(fd): whether a live progress line makes sense (fd 1 by default). */
static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)));
    return 1;
}

static const luaL_Reg core_funcs[] = {
    {"clock", l_clock},
    {"isatty", l_isatty},
    {"set_threads", l_set_threads},
    {"get_threads", l_get_threads},
    {"gemm", l_gemm},
    {"interrupted", l_interrupted},
    {NULL, NULL}
};

static int settings_error_text(lua_State *L)
{
    lua_getfield(L, 1, "message");
    return 1;
}

/* Raise the message as a settings error (the kind kiln.config.fail raises): the host prints
 * its one line, without a traceback, since the user's environment is at fault. */
static int settings_error(lua_State *L, const char *message)
{
    lua_newtable(L);
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    lua_newtable(L);
    lua_pushstring(L, "kiln.settings_error");
    lua_setfield(L, -2, "__name");
    lua_pushcfunction(L, settings_error_text);
    lua_setfield(L, -2, "__tostring");
    lua_setmetatable(L, -2);
    return lua_error(L);
}

/* KILN_THREADS must be a whole number ≥ 1: the core would otherwise read "abc" or "2x" as
 * "all CPUs" and a run would silently use a thread count the researcher did not ask for. */
static void check_threads_env(lua_State *L)
{
    const char *threads = getenv("KILN_THREADS");
    if (threads == NULL || threads[0] == '\0') return;
    char *end = NULL;
    errno = 0;
    long n = strtol(threads, &end, 10);
    if (end == threads || *end != '\0' || errno != 0 || n < 1 || n > 4096)
        settings_error(L, lua_pushfstring(L, "KILN_THREADS=%s: expected a whole number of threads from 1 to 4096 "
                                             "(or leave it unset for all CPUs)", threads));
}

void knL_open_runtime(lua_State *L)
{
    check_threads_env(L);
    /* A misspelt KILN_GEMM would otherwise quietly measure or train with the default. */
    const char *gemm = getenv("KILN_GEMM");
    if (gemm && kn_gemm_select(gemm) != KN_OK)
        settings_error(L, lua_pushfstring(L, "KILN_GEMM=%s: expected kiln or openblas (or leave it unset for "
                                             "the default)", gemm));
    luaL_setfuncs(L, core_funcs, 0);
}
