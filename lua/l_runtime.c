/* l_runtime.c — small module functions about the process: threads, Ctrl-C, clock, tty. */
#include "binding.h"

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
    {"interrupted", l_interrupted},
    {NULL, NULL}
};

void knL_open_runtime(lua_State *L)
{
    luaL_setfuncs(L, core_funcs, 0);
}
