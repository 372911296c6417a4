/* l_batch.c — kiln.Batch: room for B windows of T tokens, inputs and next-token targets,
 * filled by datasets (ds:sample, ds:eval_batch) or by hand (b:set). Each row remembers the
 * tokenizer of the dataset that filled it, so b:text decodes a mixture of sources right. */
#include "binding.h"

#include <stdlib.h>
#include <string.h>

static void release_batch(void *obj)
{
    knL_batch *b = obj;
    for (int r = 0; b->row_tok && r < b->cap_B; r++) kn_tok_release(b->row_tok[r]);
    free(b->row_tok);
    free(b->row_kind);
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
        b->row_kind = calloc((size_t)B, sizeof *b->row_kind);
        b->row_tok = calloc((size_t)B, sizeof *b->row_tok);
    }
    if (!b || !b->inputs || !b->targets || !b->row_kind || !b->row_tok) {
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

void knL_batch_rows_from(knL_batch *b, int first, int count, const kn_dataset *d)
{
    kn_tokenizer *tok = kn_dataset_tokenizer(d);
    knL_row_kind kind = tok ? KNL_ROW_TOKENIZER
                            : kn_dataset_format(d) == KN_DATA_BYTES ? KNL_ROW_BYTES : KNL_ROW_U16_UNKNOWN;
    for (int r = first; r < first + count && r < b->cap_B; r++) {
        if (b->row_tok[r] != tok) {
            kn_tok_release(b->row_tok[r]);
            b->row_tok[r] = kn_tok_retain(tok);
        }
        b->row_kind[r] = (uint8_t)kind;
    }
}

/* The row's T+1 tokens: its inputs, then its last target. */
static void row_tokens(const knL_batch *b, lua_Integer r, uint32_t *ids)
{
    const int32_t *in = b->inputs + (size_t)(r - 1) * (size_t)b->T;
    for (int t = 0; t < b->T; t++) ids[t] = (uint32_t)in[t];
    ids[b->T] = (uint32_t)b->targets[(size_t)r * (size_t)b->T - 1];
}

static int push_bytes(lua_State *L, const uint32_t *ids, int n, lua_Integer r, const char *why)
{
    luaL_Buffer buf;
    char *p = luaL_buffinitsize(L, &buf, (size_t)n);
    for (int i = 0; i < n; i++) {
        if (ids[i] > 255)
            return luaL_error(L, "kiln.Batch:text: row %I holds token %d, not a byte (%s); pass the "
                              "tokenizer that made it: b:text(row, tok)", r, (int)ids[i], why);
        p[i] = (char)ids[i];
    }
    luaL_pushresultsize(&buf, (size_t)n);
    return 1;
}

/* b:text(row [, tok]) -> the row's T+1 tokens (inputs, then the last target) as text:
 * decoded with tok (a kiln.Tokenizer, or "bytes") when given, else with the tokenizer of
 * the dataset that filled the row; a row of bytes (or set by hand with ids < 256) is bytes. */
static int b_text(lua_State *L)
{
    knL_batch *b = knL_check_batch(L, 1);
    lua_Integer r = luaL_checkinteger(L, 2);
    luaL_argcheck(L, r >= 1 && r <= b->cap_B, 2, "row out of range");
    bool given = !lua_isnoneornil(L, 3);
    kn_tokenizer *tok = given ? knL_test_tokenizer(L, 3) : b->row_tok[r - 1];
    if (given && !tok && !(lua_type(L, 3) == LUA_TSTRING && strcmp(lua_tostring(L, 3), "bytes") == 0))
        return luaL_argerror(L, 3, "expected a kiln.Tokenizer or \"bytes\"");
    if (!given && b->row_kind[r - 1] == KNL_ROW_U16_UNKNOWN)
        return luaL_error(L, "kiln.Batch:text: row %I came from a u16 dataset opened without a "
                          "tokenizer, so its ids cannot be decoded; open the dataset with "
                          "tokenizer = ... or pass one: b:text(row, tok)", r);
    uint32_t *ids = lua_newuserdatauv(L, ((size_t)b->T + 1) * sizeof *ids, 0);
    row_tokens(b, r, ids);
    if (!tok)
        return push_bytes(L, ids, b->T + 1, r, given ? "decoding as bytes" :
                          b->row_kind[r - 1] == KNL_ROW_BYTES ? "a byte dataset" : "set by hand");
    uint8_t *text = NULL;
    size_t len = 0;
    if (kn_tok_decode(tok, ids, (size_t)b->T + 1, &text, &len) != KN_OK) {
        free(text);
        return knL_error(L);
    }
    lua_pushlstring(L, (const char *)text, len);
    free(text);
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
