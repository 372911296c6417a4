/* l_tensor.c — kiln.Tensor: float32 tensors from Lua. Each handle holds one kn_tensor, and
 * through it one reference to the tensor's storage: a view (narrow, view, a model's weights)
 * keeps the memory it looks at alive by itself, whatever happens to other handles. Indices
 * are 1-based in Lua and converted to 0-based here, nowhere else. */
#include "binding.h"

#include <math.h>
#include <string.h>

#include <stdlib.h>

static void release_tensor(void *obj)
{
    kn_tensor_free(obj);
    free(obj);
}

static void describe_tensor(lua_State *L, void *obj)
{
    const kn_tensor *t = obj;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "kiln.Tensor(");
    for (int d = 0; d < t->ndim; d++) {
        if (d) luaL_addchar(&b, 'x');
        lua_pushinteger(L, t->shape[d]);
        luaL_addvalue(&b);
    }
    luaL_addstring(&b, t->view ? ", view)" : ")");
    luaL_pushresult(&b);
}

const knL_type knL_tensor_type = {"kiln.Tensor", release_tensor, describe_tensor};

kn_tensor *knL_check_tensor(lua_State *L, int arg)
{
    return knL_handle_check(L, arg, &knL_tensor_type);
}

/* A closed handle, then the struct it will hold (raises if out of memory: nothing leaks). */
static knL_handle *new_handle(lua_State *L, kn_tensor **t)
{
    knL_handle *h = knL_handle_new(L, &knL_tensor_type, 0);
    *t = calloc(1, sizeof **t);
    if (!*t) luaL_error(L, "kiln.Tensor: out of memory");
    return h;
}

kn_tensor *knL_push_tensor(lua_State *L, int ndim, const int64_t *shape)
{
    kn_tensor *t;
    knL_handle *h = new_handle(L, &t);
    if (kn_tensor_new(t, ndim, shape) != KN_OK) {
        free(t);
        knL_error(L);
    }
    h->obj = t;
    return t;
}

kn_tensor *knL_push_borrowed(lua_State *L, float *base, size_t n, void *owner,
                             void *(*retain)(void *), void (*release)(void *), size_t offset,
                             int ndim, const int64_t *shape)
{
    knL_handle *h = knL_handle_new(L, &knL_tensor_type, 0);
    kn_tensor *t = calloc(1, sizeof *t);
    if (!t) luaL_error(L, "kiln.Tensor: out of memory");
    /* from here on nothing raises until the reference has a home (or is released) */
    kn_storage *s = NULL;
    kn_status st = kn_storage_borrow(&s, base, n, retain(owner), release);
    if (st == KN_OK) {
        st = kn_tensor_on(t, s, offset, ndim, shape);
        kn_storage_release(s);   /* the tensor holds its own reference now */
    }
    if (st != KN_OK) {
        free(t);
        knL_error(L);
    }
    h->obj = t;
    return t;
}

/* Push a handle for a view already made (it holds one storage reference). */
static void push_view(lua_State *L, kn_tensor *v)
{
    knL_handle *h = knL_handle_new(L, &knL_tensor_type, 0);
    kn_tensor *t = malloc(sizeof *t);
    if (!t) {
        kn_tensor_free(v);
        luaL_error(L, "kiln.Tensor: out of memory");
    }
    *t = *v;
    h->obj = t;
}

/* Shape from either a table {d1, d2, ...} at arg or integers arg, arg+1, ... */
static int check_shape(lua_State *L, int arg, int64_t *shape)
{
    int ndim = 0;
    if (lua_istable(L, arg)) {
        ndim = (int)lua_rawlen(L, arg);
        luaL_argcheck(L, ndim >= 1 && ndim <= KN_MAX_DIMS, arg, "shape must have 1 to 4 sizes");
        for (int i = 0; i < ndim; i++) {
            lua_rawgeti(L, arg, i + 1);
            int isnum;
            lua_Integer v = lua_tointegerx(L, -1, &isnum);
            luaL_argcheck(L, isnum && v >= 1, arg, "shape sizes must be positive integers");
            shape[i] = v;
            lua_pop(L, 1);
        }
    } else {
        int top = lua_gettop(L);
        for (int i = arg; i <= top; i++) {
            luaL_argcheck(L, ndim < KN_MAX_DIMS, i, "at most 4 dimensions");
            lua_Integer v = luaL_checkinteger(L, i);
            luaL_argcheck(L, v >= 1, i, "sizes must be positive");
            shape[ndim++] = v;
        }
        luaL_argcheck(L, ndim >= 1, arg, "expected a shape (sizes or a table of sizes)");
    }
    return ndim;
}

/* kiln.tensor(d1, d2, ...) | kiln.tensor{d1, d2} : zeros.  kiln.tensor_from{...} : values. */
static int l_tensor(lua_State *L)
{
    int64_t shape[KN_MAX_DIMS];
    int ndim = check_shape(L, 1, shape);
    knL_push_tensor(L, ndim, shape);
    return 1;
}

/* Nested Lua arrays of numbers -> tensor (shape from the nesting). */
static void table_shape(lua_State *L, int idx, int depth, int *ndim, int64_t *shape)
{
    if (depth >= KN_MAX_DIMS) { luaL_error(L, "tensor_from: more than 4 levels of nesting"); return; }
    int64_t n = (int64_t)lua_rawlen(L, idx);
    if (n == 0) luaL_error(L, "tensor_from: empty table at depth %d", depth + 1);
    shape[depth] = n;
    *ndim = depth + 1;
    lua_rawgeti(L, idx, 1);
    if (lua_istable(L, -1)) table_shape(L, lua_gettop(L), depth + 1, ndim, shape);
    lua_pop(L, 1);
}

static void table_fill(lua_State *L, int idx, int depth, int ndim, const int64_t *shape, float **out)
{
    if (depth >= KN_MAX_DIMS) return;   /* unreachable; bounds the recursion for the compiler */
    if ((int64_t)lua_rawlen(L, idx) != shape[depth])
        luaL_error(L, "tensor_from: ragged table (expected %d entries at depth %d, got %d)",
                   (int)shape[depth], depth + 1, (int)lua_rawlen(L, idx));
    for (int64_t i = 1; i <= shape[depth]; i++) {
        lua_rawgeti(L, idx, i);
        if (depth + 1 < ndim) {
            if (!lua_istable(L, -1)) luaL_error(L, "tensor_from: expected a table at depth %d", depth + 2);
            table_fill(L, lua_gettop(L), depth + 1, ndim, shape, out);
        } else {
            int isnum;
            lua_Number v = lua_tonumberx(L, -1, &isnum);
            if (!isnum) luaL_error(L, "tensor_from: entry %d at depth %d is %s, expected a number",
                                   (int)i, depth + 1, luaL_typename(L, -1));
            *(*out)++ = (float)v;
        }
        lua_pop(L, 1);
    }
}

static int l_tensor_from(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int ndim = 0;
    int64_t shape[KN_MAX_DIMS];
    table_shape(L, 1, 0, &ndim, shape);
    kn_tensor *t = knL_push_tensor(L, ndim, shape);
    float *p = t->data;
    table_fill(L, 1, 0, ndim, shape, &p);
    return 1;
}

/* Element offset from 1-based indices at args arg..arg+ndim-1. */
static float *element(lua_State *L, kn_tensor *t, int arg)
{
    int64_t idx[KN_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) {
        lua_Integer i = luaL_checkinteger(L, arg + d);
        if (i < 1 || i > t->shape[d])
            luaL_argerror(L, arg + d, lua_pushfstring(L, "index %I out of range 1..%I for dimension %d",
                                                       i, (lua_Integer)t->shape[d], d + 1));
        idx[d] = i - 1;
    }
    return kn_tensor_at(t, idx);
}

static int t_get(lua_State *L)
{
    kn_tensor *t = knL_check_tensor(L, 1);
    luaL_argcheck(L, lua_gettop(L) == 1 + t->ndim, 2,
                  lua_pushfstring(L, "expected %d indices", t->ndim));
    lua_pushnumber(L, *element(L, t, 2));
    return 1;
}

/* t:set(i, j, ..., value) */
static int t_set(lua_State *L)
{
    kn_tensor *t = knL_check_tensor(L, 1);
    luaL_argcheck(L, lua_gettop(L) == 2 + t->ndim, 2,
                  lua_pushfstring(L, "expected %d indices and a value", t->ndim));
    float v = (float)luaL_checknumber(L, 2 + t->ndim);
    *element(L, t, 2) = v;
    return 0;
}

static int t_size(lua_State *L)
{
    kn_tensor *t = knL_check_tensor(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        lua_Integer d = luaL_checkinteger(L, 2);
        luaL_argcheck(L, d >= 1 && d <= t->ndim, 2, "dimension out of range");
        lua_pushinteger(L, t->shape[d - 1]);
        return 1;
    }
    lua_createtable(L, t->ndim, 0);
    for (int d = 0; d < t->ndim; d++) {
        lua_pushinteger(L, t->shape[d]);
        lua_rawseti(L, -2, d + 1);
    }
    return 1;
}

static int t_dim(lua_State *L) { lua_pushinteger(L, knL_check_tensor(L, 1)->ndim); return 1; }
static int t_numel(lua_State *L) { lua_pushinteger(L, kn_tensor_numel(knL_check_tensor(L, 1))); return 1; }
static int t_is_view(lua_State *L) { lua_pushboolean(L, knL_check_tensor(L, 1)->view); return 1; }

static int t_fill(lua_State *L)
{
    kn_tensor *t = knL_check_tensor(L, 1);
    kn_tensor_fill(t, (float)luaL_checknumber(L, 2));
    lua_settop(L, 1);
    return 1;
}

static int t_scale(lua_State *L)
{
    kn_tensor *t = knL_check_tensor(L, 1);
    kn_tensor_scale(t, (float)luaL_checknumber(L, 2));
    lua_settop(L, 1);
    return 1;
}

static int t_copy(lua_State *L)
{
    kn_tensor *dst = knL_check_tensor(L, 1);
    kn_tensor *src = knL_check_tensor(L, 2);
    KNL_TRY(L, kn_tensor_copy(dst, src));
    lua_settop(L, 1);
    return 1;
}

/* t:add(src [, alpha]) : t += alpha * src */
static int t_add(lua_State *L)
{
    kn_tensor *dst = knL_check_tensor(L, 1);
    kn_tensor *src = knL_check_tensor(L, 2);
    float alpha = (float)luaL_optnumber(L, 3, 1.0);
    KNL_TRY(L, kn_tensor_add(dst, src, alpha));
    lua_settop(L, 1);
    return 1;
}

static int t_clone(lua_State *L)
{
    kn_tensor *t = knL_check_tensor(L, 1);
    kn_tensor *c = knL_push_tensor(L, t->ndim, t->shape);
    KNL_TRY(L, kn_tensor_copy(c, t));
    return 1;
}

/* t:narrow(dim, start, len), 1-based dim and start; a view holding t's storage. Ranges are
 * checked here, without arithmetic that could overflow on extreme integers. */
static int t_narrow(lua_State *L)
{
    kn_tensor *t = knL_check_tensor(L, 1);
    lua_Integer dim = luaL_checkinteger(L, 2);
    lua_Integer start = luaL_checkinteger(L, 3);
    lua_Integer len = luaL_checkinteger(L, 4);
    if (dim < 1 || dim > t->ndim)
        return luaL_argerror(L, 2, lua_pushfstring(L, "dimension %I out of range 1..%d", dim, t->ndim));
    lua_Integer size = t->shape[dim - 1];
    if (start < 1 || start > size)
        return luaL_argerror(L, 3, lua_pushfstring(L, "start out of range: %I, expected 1..%I", start, size));
    if (len < 1 || len > size - (start - 1))
        return luaL_argerror(L, 4, lua_pushfstring(L, "length out of range: %I, expected 1..%I from start %I",
                                                   len, size - (start - 1), start));
    kn_tensor v;
    KNL_TRY(L, kn_tensor_narrow(t, (int)dim - 1, start - 1, len, &v));
    push_view(L, &v);
    return 1;
}

/* t:view(d1, d2, ...) | t:view{...}: a reshaped view of a contiguous tensor. */
static int t_view(lua_State *L)
{
    kn_tensor *t = knL_check_tensor(L, 1);
    int64_t shape[KN_MAX_DIMS];
    int ndim = check_shape(L, 2, shape);
    kn_tensor v;
    KNL_TRY(L, kn_tensor_reshape(t, ndim, shape, &v));
    push_view(L, &v);
    return 1;
}

/* t:normal(rng, std [, mean]) fills from the generator. */
static int t_normal(lua_State *L)
{
    kn_tensor *t = knL_check_tensor(L, 1);
    kn_rng *r = knL_check_rng(L, 2);
    float std = (float)luaL_checknumber(L, 3);
    float mean = (float)luaL_optnumber(L, 4, 0.0);
    luaL_argcheck(L, std >= 0, 3, "standard deviation must be >= 0");
    kn_tensor_normal(t, r, mean, std);
    lua_settop(L, 1);
    return 1;
}

static int t_sum(lua_State *L) { lua_pushnumber(L, kn_tensor_sum(knL_check_tensor(L, 1))); return 1; }
static int t_norm(lua_State *L) { lua_pushnumber(L, kn_tensor_norm(knL_check_tensor(L, 1))); return 1; }

static int t_mean(lua_State *L)
{
    kn_tensor *t = knL_check_tensor(L, 1);
    lua_pushnumber(L, kn_tensor_sum(t) / (double)kn_tensor_numel(t));
    return 1;
}

/* Max and min, and the standard deviation (population), for inspection. */
static int t_stats(lua_State *L)
{
    kn_tensor *t = knL_check_tensor(L, 1);
    int64_t n = kn_tensor_numel(t);
    kn_tensor flat = *t;
    double mn = INFINITY, mx = -INFINITY, s = 0, s2 = 0;
    int64_t idx[KN_MAX_DIMS] = {0};
    for (int64_t k = 0; k < n; k++) {
        double v = *kn_tensor_at(&flat, idx);
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        s += v;
        s2 += v * v;
        for (int d = flat.ndim - 1; d >= 0; d--) {
            if (++idx[d] < flat.shape[d]) break;
            idx[d] = 0;
        }
    }
    double mean = s / (double)n;
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, mn); lua_setfield(L, -2, "min");
    lua_pushnumber(L, mx); lua_setfield(L, -2, "max");
    lua_pushnumber(L, mean); lua_setfield(L, -2, "mean");
    double var = s2 / (double)n - mean * mean;
    lua_pushnumber(L, sqrt(var > 0 ? var : 0)); lua_setfield(L, -2, "std");
    return 1;
}

static void push_nested(lua_State *L, const kn_tensor *t, int d, int64_t *idx)
{
    if (d >= KN_MAX_DIMS) return;   /* unreachable; bounds the recursion for the compiler */
    lua_createtable(L, (int)t->shape[d], 0);
    for (int64_t i = 0; i < t->shape[d]; i++) {
        idx[d] = i;
        if (d + 1 < t->ndim) push_nested(L, t, d + 1, idx);
        else lua_pushnumber(L, *kn_tensor_at(t, idx));
        lua_rawseti(L, -2, i + 1);
    }
}

static int t_totable(lua_State *L)
{
    kn_tensor *t = knL_check_tensor(L, 1);
    int64_t idx[KN_MAX_DIMS] = {0};
    push_nested(L, t, 0, idx);
    return 1;
}

static int t_first_nonfinite(lua_State *L)
{
    int64_t i = kn_tensor_first_nonfinite(knL_check_tensor(L, 1));
    if (i < 0) lua_pushnil(L); else lua_pushinteger(L, i + 1);
    return 1;
}

static int t_len(lua_State *L) { lua_pushinteger(L, kn_tensor_numel(knL_check_tensor(L, 1))); return 1; }

static const luaL_Reg tensor_methods[] = {
    {"get", t_get}, {"set", t_set}, {"size", t_size}, {"dim", t_dim}, {"numel", t_numel},
    {"is_view", t_is_view}, {"fill", t_fill}, {"scale", t_scale}, {"copy", t_copy},
    {"add", t_add}, {"clone", t_clone}, {"narrow", t_narrow}, {"view", t_view},
    {"normal", t_normal}, {"sum", t_sum}, {"mean", t_mean}, {"norm", t_norm},
    {"stats", t_stats}, {"totable", t_totable}, {"first_nonfinite", t_first_nonfinite},
    {NULL, NULL}
};

static const luaL_Reg tensor_meta[] = {
    {"__len", t_len},
    {NULL, NULL}
};

static int l_is_tensor(lua_State *L)
{
    lua_pushboolean(L, luaL_testudata(L, 1, knL_tensor_type.name) != NULL);
    return 1;
}

void knL_open_tensor(lua_State *L)
{
    knL_handle_class(L, &knL_tensor_type, tensor_methods, tensor_meta);
    lua_pushcfunction(L, l_tensor);
    lua_setfield(L, -2, "tensor");
    lua_pushcfunction(L, l_tensor_from);
    lua_setfield(L, -2, "tensor_from");
    lua_pushcfunction(L, l_is_tensor);
    lua_setfield(L, -2, "is_tensor");
}
