/* l_data.c — kiln.Dataset (core/data.h: memory-mapped token files, splits, windows) and
 * kiln.Rng (core/rng.h: a generator whose state a checkpoint can store). */
#include "binding.h"
#include "data.h"

#include <string.h>

#define DATASET_MT "kiln.Dataset"
#define RNG_MT "kiln.Rng"

typedef struct { kn_dataset *d; } knL_Dataset;
typedef struct { kn_rng state; } knL_Rng;

/* ---- Rng ---------------------------------------------------------------------------- */

kn_rng *knL_check_rng(lua_State *L, int arg)
{
    knL_Rng *u = luaL_checkudata(L, arg, RNG_MT);
    return &u->state;
}

/* kiln.rng(seed) */
static int l_rng(lua_State *L)
{
    lua_Integer seed = luaL_checkinteger(L, 1);
    knL_Rng *u = lua_newuserdatauv(L, sizeof *u, 0);
    kn_rng_seed(&u->state, (uint64_t)seed);
    luaL_setmetatable(L, RNG_MT);
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
    kn_rng *r = knL_check_rng(L, 1);
    knL_Rng *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->state = *r;
    luaL_setmetatable(L, RNG_MT);
    return 1;
}

static int r_tostring(lua_State *L)
{
    char buf[65];
    kn_rng_format(knL_check_rng(L, 1), buf);
    lua_pushfstring(L, "kiln.Rng(%s)", buf);
    return 1;
}

static const luaL_Reg rng_methods[] = {
    {"seed", r_seed}, {"state", r_state}, {"set_state", r_set_state}, {"uniform", r_uniform},
    {"normal", r_normal}, {"integer", r_integer}, {"clone", r_clone}, {NULL, NULL}
};
static const luaL_Reg rng_meta[] = { {"__tostring", r_tostring}, {NULL, NULL} };

/* ---- Dataset ------------------------------------------------------------------------ */

static kn_dataset *check_dataset(lua_State *L, int arg)
{
    knL_Dataset *u = luaL_checkudata(L, arg, DATASET_MT);
    if (!u->d) luaL_argerror(L, arg, "dataset was closed");
    return u->d;
}

/* kiln.dataset(path [, {format = "bytes" | "u16", split = "all" | "train" | "val"}]) */
static int l_dataset(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    kn_data_format fmt = KN_DATA_BYTES;
    kn_split split = KN_SPLIT_ALL;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        static const char *const formats[] = {"bytes", "u16", NULL};
        static const char *const splits[] = {"all", "train", "val", NULL};
        lua_getfield(L, 2, "format");
        if (!lua_isnil(L, -1)) fmt = (kn_data_format)luaL_checkoption(L, -1, NULL, formats);
        lua_getfield(L, 2, "split");
        if (!lua_isnil(L, -1)) split = (kn_split)luaL_checkoption(L, -1, NULL, splits);
        lua_pop(L, 2);
    }
    knL_Dataset *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->d = NULL;
    luaL_setmetatable(L, DATASET_MT);
    KNL_TRY(L, kn_dataset_open(&u->d, path, fmt, split));
    return 1;
}

static int d_num_tokens(lua_State *L) { lua_pushinteger(L, kn_dataset_num_tokens(check_dataset(L, 1))); return 1; }
static int d_vocab(lua_State *L) { lua_pushinteger(L, kn_dataset_vocab(check_dataset(L, 1))); return 1; }
static int d_path(lua_State *L) { lua_pushstring(L, kn_dataset_path(check_dataset(L, 1))); return 1; }

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
    kn_dataset *d = check_dataset(L, 1);
    KNL_TRY(L, kn_dataset_check_window(d, check_context(L, 2)));
    return 0;
}

/* ds:sample(batch, rng [, first_row, count]): fill rows first_row .. first_row+count-1
 * (default: all) with random windows, uniform over all starts. Mixtures fill a batch from
 * several datasets this way. */
static int d_sample(lua_State *L)
{
    kn_dataset *d = check_dataset(L, 1);
    knL_Batch *b = knL_check_batch(L, 2);
    kn_rng *r = knL_check_rng(L, 3);
    lua_Integer first = luaL_optinteger(L, 4, 1);
    lua_Integer count = luaL_optinteger(L, 5, b->cap_B - first + 1);
    luaL_argcheck(L, first >= 1 && first <= b->cap_B, 4, "first row out of range");
    luaL_argcheck(L, count >= 0 && first - 1 + count <= b->cap_B, 5, "row count exceeds the batch");
    if (count > 0) {
        size_t off = (size_t)(first - 1) * (size_t)b->T;
        KNL_TRY(L, kn_dataset_sample(d, r, (int)count, b->T, b->inputs + off, b->targets + off));
    }
    if (first - 1 + count > b->rows) b->rows = (int)(first - 1 + count);
    return 0;
}

static int d_num_eval_windows(lua_State *L)
{
    kn_dataset *d = check_dataset(L, 1);
    lua_pushinteger(L, kn_dataset_num_eval_windows(d, check_context(L, 2)));
    return 1;
}

/* ds:eval_batch(batch, first [, last [, stride]]): fill rows with the fixed evaluation
 * windows first, first+stride, ... (1-based) up to last (default: all) or the batch size.
 * Returns how many rows were filled (0 when first is past the end). */
static int d_eval_batch(lua_State *L)
{
    kn_dataset *d = check_dataset(L, 1);
    knL_Batch *b = knL_check_batch(L, 2);
    lua_Integer first = luaL_checkinteger(L, 3);
    int64_t total = kn_dataset_num_eval_windows(d, b->T);
    lua_Integer last = luaL_optinteger(L, 4, total);
    lua_Integer stride = luaL_optinteger(L, 5, 1);
    luaL_argcheck(L, first >= 1, 3, "window index is 1-based");
    luaL_argcheck(L, stride >= 1, 5, "stride must be >= 1");
    if (last > total) last = total;
    int rows = 0;
    for (lua_Integer k = first; k <= last && rows < b->cap_B; k += stride, rows++) {
        size_t off = (size_t)rows * (size_t)b->T;
        KNL_TRY(L, kn_dataset_eval_window(d, b->T, k - 1, b->inputs + off, b->targets + off));
    }
    b->rows = rows;
    lua_pushinteger(L, rows);
    return 1;
}

static int d_gc(lua_State *L)
{
    knL_Dataset *u = luaL_checkudata(L, 1, DATASET_MT);
    if (u->d) kn_dataset_close(u->d);
    u->d = NULL;
    return 0;
}

static int d_tostring(lua_State *L)
{
    knL_Dataset *u = luaL_checkudata(L, 1, DATASET_MT);
    if (!u->d) lua_pushstring(L, "kiln.Dataset (closed)");
    else lua_pushfstring(L, "kiln.Dataset(%s, %d tokens, vocab %d)", kn_dataset_path(u->d),
                         (int)kn_dataset_num_tokens(u->d), kn_dataset_vocab(u->d));
    return 1;
}

static const luaL_Reg dataset_methods[] = {
    {"num_tokens", d_num_tokens}, {"vocab", d_vocab}, {"path", d_path},
    {"check_window", d_check_window}, {"sample", d_sample},
    {"num_eval_windows", d_num_eval_windows}, {"eval_batch", d_eval_batch}, {"close", d_gc},
    {NULL, NULL}
};
static const luaL_Reg dataset_meta[] = {
    {"__gc", d_gc}, {"__close", d_gc}, {"__tostring", d_tostring}, {NULL, NULL}
};

void knL_open_data(lua_State *L)
{
    knL_new_class(L, DATASET_MT, dataset_methods, dataset_meta);
    knL_new_class(L, RNG_MT, rng_methods, rng_meta);
    lua_pushcfunction(L, l_dataset);
    lua_setfield(L, -2, "dataset");
    lua_pushcfunction(L, l_rng);
    lua_setfield(L, -2, "rng");
}
