/* l_module.c — the `kiln.core` C module, the `kiln` module (C functions plus the embedded
 * Lua library), and the small helpers every binding file uses. */
#include "binding.h"

#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct { const char *name, *path; const char *src; size_t len; } knL_embedded;
extern const knL_embedded knL_embedded_modules[];

int knL_error(lua_State *L)
{
    kn_interrupted = 0;
    return luaL_error(L, "%s", kn_errmsg());
}

void knL_new_class(lua_State *L, const char *tname, const luaL_Reg *methods, const luaL_Reg *metamethods)
{
    luaL_newmetatable(L, tname);
    luaL_setfuncs(L, metamethods, 0);
    lua_getfield(L, -1, "__index");
    bool has_index = !lua_isnil(L, -1);
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    /* A custom __index (for properties) finds its methods in __methods. */
    lua_setfield(L, -2, has_index ? "__methods" : "__index");
    lua_pushstring(L, tname);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

lua_Number knL_opt_number_field(lua_State *L, int idx, const char *k, lua_Number def)
{
    if (lua_isnoneornil(L, idx)) return def;
    lua_getfield(L, idx, k);
    lua_Number v = def;
    if (!lua_isnil(L, -1)) {
        int isnum;
        v = lua_tonumberx(L, -1, &isnum);
        if (!isnum) luaL_error(L, "field '%s' must be a number (got %s)", k, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

lua_Integer knL_opt_int_field(lua_State *L, int idx, const char *k, lua_Integer def)
{
    if (lua_isnoneornil(L, idx)) return def;
    lua_getfield(L, idx, k);
    lua_Integer v = def;
    if (!lua_isnil(L, -1)) {
        int isnum;
        v = lua_tointegerx(L, -1, &isnum);
        if (!isnum) luaL_error(L, "field '%s' must be an integer (got %s)", k,
                               lua_type(L, -1) == LUA_TNUMBER ? "a non-integer number" : luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

int knL_opt_bool_field(lua_State *L, int idx, const char *k, int def)
{
    if (lua_isnoneornil(L, idx)) return def;
    lua_getfield(L, idx, k);
    int v = def;
    if (!lua_isnil(L, -1)) {
        if (!lua_isboolean(L, -1)) luaL_error(L, "field '%s' must be a boolean (got %s)", k, luaL_typename(L, -1));
        v = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

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

int luaopen_kiln_core(lua_State *L)
{
    luaL_newlib(L, core_funcs);
    lua_pushstring(L, kn_version());
    lua_setfield(L, -2, "version");
    knL_open_tensor(L);
    knL_open_model(L);
    knL_open_generate(L);
    knL_open_adamw(L);
    knL_open_data(L);
    knL_open_ckpt(L);
    knL_open_yaml(L);
    knL_open_fit(L);
    knL_open_mpi(L);
    return 1;
}

static const knL_embedded *find_embedded(const char *name)
{
    for (const knL_embedded *m = knL_embedded_modules; m->name; m++)
        if (strcmp(m->name, name) == 0) return m;
    return NULL;
}

/* The last searcher in package.searchers: modules compiled into the binary. Files on
 * package.path (KILN_PATH is prepended to it) are searched first, so they override. */
static int embedded_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const knL_embedded *m = find_embedded(name);
    if (!m) {
        lua_pushfstring(L, "no embedded module '%s'", name);
        return 1;
    }
    char chunkname[512];
    snprintf(chunkname, sizeof chunkname, "@[kiln]/%s", m->path);
    if (luaL_loadbuffer(L, m->src, m->len, chunkname) != LUA_OK) return lua_error(L);
    lua_pushstring(L, chunkname + 1);
    return 2;
}

/* Install the embedded searcher and KILN_PATH once per state. */
static void install_searcher(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "kiln.searcher_installed");
    bool done = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (done) return;
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "kiln.searcher_installed");

    lua_getglobal(L, "package");
    if (!lua_istable(L, -1)) { lua_pop(L, 1); return; }
    const char *kp = getenv("KILN_PATH");
    if (kp && *kp) {
        lua_getfield(L, -1, "path");
        lua_pushfstring(L, "%s;%s", kp, lua_tostring(L, -1));
        lua_setfield(L, -3, "path");
        lua_pop(L, 1);
    }
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_kiln_core);
    lua_setfield(L, -2, "kiln.core");
    lua_pop(L, 1);
    lua_getfield(L, -1, "searchers");
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    lua_pushcfunction(L, embedded_searcher);
    lua_rawseti(L, -2, n + 1);
    lua_pop(L, 2);
}

/* `require "kiln"`: the Lua entry module lua/kiln/init.lua, from package.path if a
 * researcher put one there (override), else the embedded copy. */
int luaopen_kiln(lua_State *L)
{
    install_searcher(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    lua_pushstring(L, "kiln");
    lua_getfield(L, -3, "path");
    lua_call(L, 2, 1);
    if (lua_isstring(L, -1)) {
        const char *file = lua_tostring(L, -1);
        if (luaL_loadfile(L, file) != LUA_OK) return lua_error(L);
    } else {
        const knL_embedded *m = find_embedded("kiln");
        if (!m) return luaL_error(L, "kiln: the embedded Lua library is missing (build problem)");
        if (luaL_loadbuffer(L, m->src, m->len, "@[kiln]/lua/kiln/init.lua") != LUA_OK) return lua_error(L);
    }
    lua_pushstring(L, "kiln");
    lua_call(L, 1, 1);
    return 1;
}
