/* l_util.c — helpers every binding file uses: core errors as Lua errors, class
 * metatables, optional fields of option tables. Depends on nothing else in the binding. */
#include "binding.h"

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
