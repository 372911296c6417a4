/* l_batch.c — kiln.Batch: room for B windows of T tokens, inputs and next-token targets,
 * filled by datasets (ds:sample, ds:eval_batch) or by hand (b:set). */
#include "binding.h"

#include <stdlib.h>

static void release_batch(void *obj)
{
    knL_batch *b = obj;
    kn_free(b->inputs);
    kn_free(b->targets);
    free(b);
}

static void describe_batch(lua_State *L, void *obj)
{
    knL_batch *b = obj;
    lua_pushfstring(L, "kiln.Batch(%d x %d, %d rows filled)", b->cap_B, b->T, b->rows);
}

static const knL_type batch_type = {"kiln.Batch", release_batch, describe_batch};

knL_batch *knL_check_batch(lua_State *L, int arg)
{
    return knL_handle_check(L, arg, &batch_type);
}

/* kiln.batch(B, T): room for B windows of T tokens (inputs and targets). */
static int l_batch(lua_State *L)
{
    lua_Integer B = luaL_checkinteger(L, 1), T = luaL_checkinteger(L, 2);
    luaL_argcheck(L, B >= 1 && B <= 1 << 20, 1, "batch size must be between 1 and 2^20");
    luaL_argcheck(L, T >= 1 && T <= 1 << 20, 2, "context length must be between 1 and 2^20");
    knL_handle *h = knL_handle_new(L, &batch_type, 0);
    knL_batch *b = calloc(1, sizeof *b);
    if (b) {
        b->inputs = kn_alloc((size_t)B * (size_t)T * sizeof(int32_t));
        b->targets = kn_alloc((size_t)B * (size_t)T * sizeof(int32_t));
    }
    if (!b || !b->inputs || !b->targets) {
        if (b) release_batch(b);
        return luaL_error(L, "kiln.batch: out of memory for %I x %I tokens", B, T);
    }
    h->obj = b;
    b->cap_B = (int)B;
    b->T = (int)T;
    b->rows = 0;
    return 1;
}

static int b_size(lua_State *L)
{
    knL_batch *b = knL_check_batch(L, 1);
    lua_pushinteger(L, b->cap_B);
    lua_pushinteger(L, b->T);
    return 2;
}

static int b_rows(lua_State *L)
{
    knL_batch *b = knL_check_batch(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        lua_Integer n = luaL_checkinteger(L, 2);
        luaL_argcheck(L, n >= 0 && n <= b->cap_B, 2, "rows must be between 0 and the batch size");
        b->rows = (int)n;
    }
    lua_pushinteger(L, b->rows);
    return 1;
}

/* b:get(row, pos) -> input token, target token (1-based row and position). */
static int b_get(lua_State *L)
{
    knL_batch *b = knL_check_batch(L, 1);
    lua_Integer r = luaL_checkinteger(L, 2), t = luaL_checkinteger(L, 3);
    luaL_argcheck(L, r >= 1 && r <= b->cap_B, 2, "row out of range");
    luaL_argcheck(L, t >= 1 && t <= b->T, 3, "position out of range");
    size_t i = (size_t)(r - 1) * (size_t)b->T + (size_t)(t - 1);
    lua_pushinteger(L, b->inputs[i]);
    lua_pushinteger(L, b->targets[i]);
    return 2;
}

/* b:set(row, pos, input, target) — for hand-made batches in tests and the REPL. */
static int b_set(lua_State *L)
{
    knL_batch *b = knL_check_batch(L, 1);
    lua_Integer r = luaL_checkinteger(L, 2), t = luaL_checkinteger(L, 3);
    lua_Integer in = luaL_checkinteger(L, 4), tg = luaL_checkinteger(L, 5);
    luaL_argcheck(L, r >= 1 && r <= b->cap_B, 2, "row out of range");
    luaL_argcheck(L, t >= 1 && t <= b->T, 3, "position out of range");
    luaL_argcheck(L, in >= 0 && in <= INT32_MAX, 4, "token id must be in 0..2^31-1");
    luaL_argcheck(L, tg >= 0 && tg <= INT32_MAX, 5, "token id must be in 0..2^31-1");
    size_t i = (size_t)(r - 1) * (size_t)b->T + (size_t)(t - 1);
    b->inputs[i] = (int32_t)in;
    b->targets[i] = (int32_t)tg;
    if (b->rows < r) b->rows = (int)r;
    return 0;
}

/* b:text(row) -> the row's input bytes followed by its last target, as a string. */
static int b_text(lua_State *L)
{
    knL_batch *b = knL_check_batch(L, 1);
    lua_Integer r = luaL_checkinteger(L, 2);
    luaL_argcheck(L, r >= 1 && r <= b->cap_B, 2, "row out of range");
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    const int32_t *in = b->inputs + (size_t)(r - 1) * (size_t)b->T;
    for (int t = 0; t < b->T; t++) luaL_addchar(&buf, (char)(in[t] & 0xff));
    luaL_addchar(&buf, (char)(b->targets[(size_t)r * (size_t)b->T - 1] & 0xff));
    luaL_pushresult(&buf);
    return 1;
}

static const luaL_Reg batch_methods[] = {
    {"size", b_size}, {"rows", b_rows}, {"get", b_get}, {"set", b_set}, {"text", b_text},
    {NULL, NULL}
};

void knL_open_batch(lua_State *L)
{
    knL_handle_class(L, &batch_type, batch_methods, NULL);
    lua_pushcfunction(L, l_batch);
    lua_setfield(L, -2, "batch");
}
