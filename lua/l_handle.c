/* l_handle.c — the one userdata type behind every kiln object: {obj, type}. One check, one
 * close (shared by close, __gc and __close), one __tostring, whatever the class.
 *
 * As Lua's io library does with its file handles, a handle is created closed (obj NULL)
 * before the object it will hold: if creating the object fails with a Lua error, the
 * collector finds a closed handle and has nothing to free. A closed handle stays a valid
 * Lua value; using it raises "<class>: object is closed" instead of touching freed memory.
 * The core objects are reference-counted, so closing a handle only drops its reference:
 * an optimizer or a view holding the same object keeps it alive. */
#include "binding.h"

#include <string.h>

#define TYPE_KEY "__kiln_type"   /* metatable field: the knL_type, as a light userdata */

/* The handle at arg if it is one (of any kiln class), else NULL. */
static knL_handle *to_handle(lua_State *L, int arg)
{
    if (!lua_getmetatable(L, arg)) return NULL;
    lua_getfield(L, -1, TYPE_KEY);
    const knL_type *type = lua_touserdata(L, -1);
    lua_pop(L, 2);
    knL_handle *h = type ? lua_touserdata(L, arg) : NULL;
    return h && h->type == type ? h : NULL;
}

int knL_handle_close(lua_State *L)
{
    knL_handle *h = to_handle(L, 1);
    if (!h) return luaL_argerror(L, 1, "kiln object expected");
    void *obj = h->obj;
    h->obj = NULL;           /* closed before releasing: a release never runs twice */
    if (obj) h->type->release(obj);
    return 0;
}

static int handle_tostring(lua_State *L)
{
    knL_handle *h = to_handle(L, 1);
    if (!h) return luaL_argerror(L, 1, "kiln object expected");
    if (!h->obj) lua_pushfstring(L, "%s (closed)", h->type->name);
    else h->type->describe(L, h->obj);
    return 1;
}

void knL_handle_class(lua_State *L, const knL_type *type, const luaL_Reg *methods, const luaL_Reg *meta)
{
    static const luaL_Reg none[] = {{NULL, NULL}};
    knL_new_class(L, type->name, methods, meta ? meta : none);
    luaL_getmetatable(L, type->name);
    lua_pushlightuserdata(L, (void *)type);
    lua_setfield(L, -2, TYPE_KEY);
    lua_pushcfunction(L, knL_handle_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, knL_handle_close);
    lua_setfield(L, -2, "__close");
    if (lua_getfield(L, -1, "__tostring") == LUA_TNIL) {
        lua_pushcfunction(L, handle_tostring);
        lua_setfield(L, -3, "__tostring");
    }
    lua_pop(L, 1);
    /* every class has close(); it is the same function as __gc */
    if (lua_getfield(L, -1, "__methods") == LUA_TNIL) {
        lua_pop(L, 1);
        lua_getfield(L, -1, "__index");
    }
    lua_pushcfunction(L, knL_handle_close);
    lua_setfield(L, -2, "close");
    lua_pop(L, 2);
}

knL_handle *knL_handle_new(lua_State *L, const knL_type *type, int nuv)
{
    knL_handle *h = lua_newuserdatauv(L, sizeof *h, nuv);
    h->obj = NULL;
    h->type = type;
    luaL_setmetatable(L, type->name);
    return h;
}

void *knL_handle_test(lua_State *L, int arg, const knL_type *type)
{
    knL_handle *h = luaL_testudata(L, arg, type->name);
    return h ? h->obj : NULL;
}

void *knL_handle_check(lua_State *L, int arg, const knL_type *type)
{
    knL_handle *h = luaL_checkudata(L, arg, type->name);
    if (!h->obj) luaL_argerror(L, arg, lua_pushfstring(L, "%s: object is closed", type->name));
    return h->obj;
}
