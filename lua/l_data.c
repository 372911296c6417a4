/* l_data.c — kiln.Dataset (core/data.h: memory-mapped token files, splits, windows). */
#include "binding.h"

#include <string.h>

static void release_dataset(void *obj) { kn_dataset_close(obj); }

static const char *vocab_source(const kn_dataset *d)
{
    return kn_dataset_format(d) == KN_DATA_BYTES ? "bytes"
           : kn_dataset_tokenizer(d) ? "tokenizer" : "largest id + 1, no tokenizer";
}

static void describe_dataset(lua_State *L, void *obj)
{
    lua_pushfstring(L, "kiln.Dataset(%s, %I tokens, vocab %d: %s)", kn_dataset_path(obj),
                    (lua_Integer)kn_dataset_num_tokens(obj), kn_dataset_vocab(obj), vocab_source(obj));
}

static const knL_type dataset_type = {"kiln.Dataset", release_dataset, describe_dataset};

kn_dataset *knL_check_dataset(lua_State *L, int arg)
{
    return knL_handle_check(L, arg, &dataset_type);
}

/* core.dataset(path [, {format = "bytes" | "u16", split = "all" | "train" | "val",
 *                        tokenizer = kiln.Tokenizer}])
 * (kiln.dataset, in lua/kiln/data.lua, finds the tokenizer from a path or beside the file.) */
static int l_dataset(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    kn_data_format fmt = KN_DATA_BYTES;
    kn_split split = KN_SPLIT_ALL;
    kn_tokenizer *tok = NULL;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        static const char *const formats[] = {"bytes", "u16", NULL};
        static const char *const splits[] = {"all", "train", "val", NULL};
        lua_getfield(L, 2, "format");
        if (!lua_isnil(L, -1)) fmt = (kn_data_format)luaL_checkoption(L, -1, NULL, formats);
        lua_getfield(L, 2, "split");
        if (!lua_isnil(L, -1)) split = (kn_split)luaL_checkoption(L, -1, NULL, splits);
        if (lua_getfield(L, 2, "tokenizer") != LUA_TNIL && !(tok = knL_test_tokenizer(L, -1)))
            return luaL_argerror(L, 2, "field 'tokenizer' must be a kiln.Tokenizer");
        lua_pop(L, 3);   /* the options table keeps the tokenizer alive */
    }
    knL_handle *h = knL_handle_new(L, &dataset_type, 0);
    kn_dataset *d;
    KNL_TRY(L, kn_dataset_open_tok(&d, path, fmt, split, tok));
    h->obj = d;
    return 1;
}

static int d_num_tokens(lua_State *L) { lua_pushinteger(L, kn_dataset_num_tokens(knL_check_dataset(L, 1))); return 1; }
static int d_vocab(lua_State *L) { lua_pushinteger(L, kn_dataset_vocab(knL_check_dataset(L, 1))); return 1; }
static int d_path(lua_State *L) { lua_pushstring(L, kn_dataset_path(knL_check_dataset(L, 1))); return 1; }

/* ds:tokenizer() -> the kiln.Tokenizer that made the file, "bytes" for byte data, or nil
 * for u16 data opened without one. */
static int d_tokenizer(lua_State *L)
{
    kn_dataset *d = knL_check_dataset(L, 1);
    if (kn_dataset_tokenizer(d)) knL_push_tokenizer(L, kn_dataset_tokenizer(d));
    else if (kn_dataset_format(d) == KN_DATA_BYTES) lua_pushliteral(L, "bytes");
    else lua_pushnil(L);
    return 1;
}

/* ds:vocab_source() -> "bytes" | "tokenizer" | "largest id + 1, no tokenizer" */
static int d_vocab_source(lua_State *L)
{
    lua_pushstring(L, vocab_source(knL_check_dataset(L, 1)));
    return 1;
}

/* ds:check_vocab(V): error (naming the file and where its vocabulary comes from) unless a
 * model of vocab_size V can take every id the dataset may hold. */
static int d_check_vocab(lua_State *L)
{
    kn_dataset *d = knL_check_dataset(L, 1);
    lua_Integer V = luaL_checkinteger(L, 2);
    luaL_argcheck(L, V >= 1 && V <= 1 << 24, 2, "vocab_size must be in 1..2^24");
    KNL_TRY(L, kn_dataset_check_vocab(d, (int)V));
    return 0;
}

/* A context length argument T (tokens per window, without the extra target). */
static int check_context(lua_State *L, int arg)
{
    lua_Integer T = luaL_checkinteger(L, arg);
    luaL_argcheck(L, T >= 1 && T <= 1 << 24, arg, "context length must be in 1..2^24");
    return (int)T;
}

/* ds:check_window(T): error unless windows of T+1 tokens fit. */
static int d_check_window(lua_State *L)
{
    kn_dataset *d = knL_check_dataset(L, 1);
    KNL_TRY(L, kn_dataset_check_window(d, check_context(L, 2)));
    return 0;
}

/* ds:sample(batch, rng [, first_row, count]): fill rows first_row .. first_row+count-1
 * (default: all) with random windows, uniform over all starts. Mixtures fill a batch from
 * several datasets this way. Ranges are checked without overflowing arithmetic. */
static int d_sample(lua_State *L)
{
    kn_dataset *d = knL_check_dataset(L, 1);
    knL_batch *b = knL_check_batch(L, 2);
    kn_rng *r = knL_check_rng(L, 3);
    lua_Integer first = luaL_optinteger(L, 4, 1);
    if (first < 1 || first > b->cap_B)
        return luaL_argerror(L, 4, lua_pushfstring(L, "first row out of range: %I, expected 1..%d", first, b->cap_B));
    lua_Integer room = b->cap_B - (first - 1);
    lua_Integer count = luaL_optinteger(L, 5, room);
    if (count < 0 || count > room)
        return luaL_argerror(L, 5, lua_pushfstring(L, "row count out of range: %I, expected 0..%I from row %I",
                                                   count, room, first));
    if (count > 0) {
        size_t off = (size_t)(first - 1) * (size_t)b->T;
        KNL_TRY(L, kn_dataset_sample(d, r, (int)count, b->T, b->inputs + off, b->targets + off));
        knL_batch_rows_from(b, (int)(first - 1), (int)count, d);
    }
    if (first - 1 + count > b->rows) b->rows = (int)(first - 1 + count);
    return 0;
}

static int d_num_eval_windows(lua_State *L)
{
    kn_dataset *d = knL_check_dataset(L, 1);
    lua_pushinteger(L, kn_dataset_num_eval_windows(d, check_context(L, 2)));
    return 1;
}

/* ds:eval_batch(batch, first [, last [, stride]]): fill rows with the fixed evaluation
 * windows first, first+stride, ... (1-based) up to last (default: all) or the batch size.
 * Returns how many rows were filled (0 when first is past the end). */
static int d_eval_batch(lua_State *L)
{
    kn_dataset *d = knL_check_dataset(L, 1);
    knL_batch *b = knL_check_batch(L, 2);
    lua_Integer first = luaL_checkinteger(L, 3);
    int64_t total = kn_dataset_num_eval_windows(d, b->T);
    lua_Integer last = luaL_optinteger(L, 4, total);
    lua_Integer stride = luaL_optinteger(L, 5, 1);
    luaL_argcheck(L, first >= 1, 3, "window index is 1-based");
    luaL_argcheck(L, stride >= 1, 5, "stride must be >= 1");
    if (last > total) last = total;
    int rows = 0;
    for (lua_Integer k = first; k <= last && rows < b->cap_B; rows++) {
        size_t off = (size_t)rows * (size_t)b->T;
        KNL_TRY(L, kn_dataset_eval_window(d, b->T, k - 1, b->inputs + off, b->targets + off));
        if (stride > last - k) { rows++; break; }   /* k + stride would pass last (or overflow) */
        k += stride;
    }
    knL_batch_rows_from(b, 0, rows, d);
    b->rows = rows;
    lua_pushinteger(L, rows);
    return 1;
}

static const luaL_Reg dataset_methods[] = {
    {"num_tokens", d_num_tokens}, {"vocab", d_vocab}, {"path", d_path}, {"tokenizer", d_tokenizer},
    {"vocab_source", d_vocab_source}, {"check_vocab", d_check_vocab},
    {"check_window", d_check_window}, {"sample", d_sample},
    {"num_eval_windows", d_num_eval_windows}, {"eval_batch", d_eval_batch},
    {NULL, NULL}
};
void knL_open_data(lua_State *L)
{
    knL_handle_class(L, &dataset_type, dataset_methods, NULL);
    lua_pushcfunction(L, l_dataset);
    lua_setfield(L, -2, "dataset");
}
