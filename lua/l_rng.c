/* l_rng.c — kiln.Rng: the generator of core/rng.h, whose state a checkpoint can store. */
#include "binding.h"

#include <stdlib.h>

static void release_rng(void *obj) { free(obj); }

static void describe_rng(lua_State *L, void *obj)
{
    char buf[65];
    kn_rng_format(obj, buf);
    lua_pushfstring(L, "kiln.Rng(%s)", buf);
}

static const knL_type rng_type = {"kiln.Rng", release_rng, describe_rng};

kn_rng *knL_check_rng(lua_State *L, int arg)
{
    return knL_handle_check(L, arg, &rng_type);
}

/* A new handle holding a copy of state. */
static void push_rng(lua_State *L, const kn_rng *state)
{
    knL_handle *h = knL_handle_new(L, &rng_type, 0);
    kn_rng *r = malloc(sizeof *r);
    if (!r) luaL_error(L, "kiln.Rng: out of memory");
    *r = *state;
    h->obj = r;
}

/* kiln.rng(seed) */
static int l_rng(lua_State *L)
{
    kn_rng r;
    kn_rng_seed(&r, (uint64_t)luaL_checkinteger(L, 1));
    push_rng(L, &r);
    return 1;
}

static int r_seed(lua_State *L)
{
    kn_rng_seed(knL_check_rng(L, 1), (uint64_t)luaL_checkinteger(L, 2));
    return 0;
}

/* r:state() -> 64 hex digits; r:set_state(hex) restores it exactly. */
static int r_state(lua_State *L)
{
    char buf[65];
    kn_rng_format(knL_check_rng(L, 1), buf);
    lua_pushstring(L, buf);
    return 1;
}

static int r_set_state(lua_State *L)
{
    kn_rng *r = knL_check_rng(L, 1);
    const char *hex = luaL_checkstring(L, 2);
    if (kn_rng_parse(r, hex) != 0)
        return luaL_argerror(L, 2, "expected the 64 hex digits of rng:state()");
    return 0;
}

static int r_uniform(lua_State *L) { lua_pushnumber(L, kn_rng_uniform(knL_check_rng(L, 1))); return 1; }
static int r_normal(lua_State *L) { lua_pushnumber(L, kn_rng_normal(knL_check_rng(L, 1))); return 1; }

/* r:integer(n) -> uniform integer in 1..n */
static int r_integer(lua_State *L)
{
    kn_rng *r = knL_check_rng(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 1, 2, "n must be >= 1");
    lua_pushinteger(L, (lua_Integer)kn_rng_below(r, (uint64_t)n) + 1);
    return 1;
}

static int r_clone(lua_State *L)
{
    push_rng(L, knL_check_rng(L, 1));
    return 1;
}

static const luaL_Reg rng_methods[] = {
    {"seed", r_seed}, {"state", r_state}, {"set_state", r_set_state}, {"uniform", r_uniform},
    {"normal", r_normal}, {"integer", r_integer}, {"clone", r_clone}, {NULL, NULL}
};

void knL_open_rng(lua_State *L)
{
    knL_handle_class(L, &rng_type, rng_methods, NULL);
    lua_pushcfunction(L, l_rng);
    lua_setfield(L, -2, "rng");
}
