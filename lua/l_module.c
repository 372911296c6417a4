/* l_module.c — assembles the `kiln.core` C module from the binding's parts, and the `kiln`
 * module (C functions plus the Lua library compiled into the binary). */
#include "binding.h"
#include "embedded.h"

#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void knL_open_tokenizer(lua_State *L);   /* lua/l_tokenizer.c */

int luaopen_kiln_core(lua_State *L)
{
    lua_newtable(L);
    lua_pushstring(L, kn_version());
    lua_setfield(L, -2, "version");
    knL_open_runtime(L);
    knL_open_files(L);
    knL_open_tensor(L);
    knL_open_rng(L);
    knL_open_batch(L);
    knL_open_model(L);
    knL_open_generate(L);
    knL_open_adamw(L);
    knL_open_data(L);
    knL_open_ckpt(L);
    knL_open_yaml(L);
    knL_open_fit(L);
    knL_open_mpi(L);
    knL_open_tokenizer(L);
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
