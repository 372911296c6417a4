/* l_tokenizer.c — kiln.Tokenizer (core/tokenizer.h): byte-level BPE loaded from
 * tokenizer.json or GPT-2's files, or trained; encode/decode; token files. */
#include "binding.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOKENIZER_MT "kiln.Tokenizer"

typedef struct { kn_tokenizer *t; } knL_Tokenizer;

static kn_tokenizer *check_tok(lua_State *L, int arg)
{
    knL_Tokenizer *u = luaL_checkudata(L, arg, TOKENIZER_MT);
    if (!u->t) luaL_argerror(L, arg, "tokenizer was closed");
    return u->t;
}

kn_tokenizer *knL_check_tokenizer(lua_State *L, int arg) { return check_tok(L, arg); }

kn_tokenizer *knL_test_tokenizer(lua_State *L, int arg)
{
    knL_Tokenizer *u = luaL_testudata(L, arg, TOKENIZER_MT);
    return u ? u->t : NULL;
}

/* The userdata exists before the core object, so a failed load leaks nothing. */
static knL_Tokenizer *push_tok(lua_State *L)
{
    knL_Tokenizer *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->t = NULL;
    luaL_setmetatable(L, TOKENIZER_MT);
    return u;
}

void knL_push_tokenizer(lua_State *L, kn_tokenizer *t)
{
    knL_Tokenizer *u = push_tok(L);   /* may raise: take the reference only after it */
    u->t = kn_tok_retain(t);
}

kn_tokenizer **knL_new_tokenizer(lua_State *L) { return &push_tok(L)->t; }

/* tok_load_json(path) */
static int l_load_json(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    knL_Tokenizer *u = push_tok(L);
    KNL_TRY(L, kn_tok_load_json(&u->t, path));
    return 1;
}

/* tok_load_gpt2(encoder_json, vocab_bpe) */
static int l_load_gpt2(lua_State *L)
{
    const char *enc = luaL_checkstring(L, 1), *bpe = luaL_checkstring(L, 2);
    knL_Tokenizer *u = push_tok(L);
    KNL_TRY(L, kn_tok_load_gpt2(&u->t, enc, bpe));
    return 1;
}

/* Progress of training on stderr, one line redrawn. */
static void print_progress(void *ctx, const char *stage, int64_t done, int64_t total)
{
    (void)ctx;
    fprintf(stderr, "\rtokenizer training: %s %lld/%lld   ", stage, (long long)done, (long long)total);
    if (strcmp(stage, "merges") == 0 && done >= total) fputc('\n', stderr);
    fflush(stderr);
}

/* Strings of the array field k of the table at idx, as a malloc'ed array (into *out). */
static int string_list(lua_State *L, int idx, const char *k, const char ***out)
{
    *out = NULL;
    lua_getfield(L, idx, k);
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return 0; }
    if (!lua_istable(L, -1)) return luaL_error(L, "field '%s' must be a list of strings", k);
    int n = (int)luaL_len(L, -1);
    for (int i = 1; i <= n; i++) {
        if (lua_geti(L, -1, i) != LUA_TSTRING) return luaL_error(L, "field '%s'[%d] must be a string", k, i);
        lua_pop(L, 1);
    }
    /* the strings stay alive in the options table while training runs */
    const char **list = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *list, 0);
    for (int i = 1; i <= n; i++) {
        lua_geti(L, -2, i);
        list[i - 1] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    lua_replace(L, -2);       /* keep the userdata (anchors the array) in place of the table */
    *out = list;
    return n;
}

/* tok_train{files = {...}, vocab_size = N, min_frequency = 0, specials = {...},
 *           alphabet = "all" | "seen", progress = false} */
static int l_train(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    kn_tok_train_opts o = {0};
    lua_Integer vs = knL_opt_int_field(L, 1, "vocab_size", 0);
    luaL_argcheck(L, vs >= 1 && vs <= (1 << 24), 1, "vocab_size must be an integer in 1..16777216");
    o.vocab_size = (int)vs;
    o.min_frequency = knL_opt_int_field(L, 1, "min_frequency", 0);
    luaL_argcheck(L, o.min_frequency >= 0, 1, "min_frequency must be >= 0");
    lua_getfield(L, 1, "alphabet");
    const char *alpha = lua_isnil(L, -1) ? "all" : lua_tostring(L, -1);
    if (!alpha || (strcmp(alpha, "all") != 0 && strcmp(alpha, "seen") != 0))
        return luaL_argerror(L, 1, "alphabet must be \"all\" or \"seen\"");
    o.seen_alphabet = strcmp(alpha, "seen") == 0;
    lua_pop(L, 1);
    if (knL_opt_bool_field(L, 1, "progress", 0)) o.progress = print_progress;
    const char **files, **specials;
    int n_files = string_list(L, 1, "files", &files);
    o.n_specials = string_list(L, 1, "specials", &specials);
    o.specials = specials;
    if (n_files < 1) return luaL_argerror(L, 1, "field 'files' must list at least one file");
    knL_Tokenizer *u = push_tok(L);
    KNL_TRY(L, kn_tok_train_files(&u->t, files, n_files, &o));
    return 1;
}

static bool opt_allow_special(lua_State *L, int arg)
{
    if (lua_isnoneornil(L, arg)) return false;
    luaL_checktype(L, arg, LUA_TBOOLEAN);
    return lua_toboolean(L, arg);
}

/* t:encode(text [, allow_special]) -> {ids} (ids as in the vocabulary, from 0) */
static int t_encode(lua_State *L)
{
    kn_tokenizer *t = check_tok(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    bool allow = opt_allow_special(L, 3);
    kn_ids ids = {0};
    if (kn_tok_encode(t, s, len, allow, &ids) != KN_OK) { free(ids.ids); return knL_error(L); }
    lua_createtable(L, ids.n < INT32_MAX ? (int)ids.n : 0, 0);
    for (size_t i = 0; i < ids.n; i++) {
        lua_pushinteger(L, ids.ids[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free(ids.ids);
    return 1;
}

/* t:count(text [, allow_special]) -> number of tokens */
static int t_count(lua_State *L)
{
    kn_tokenizer *t = check_tok(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    kn_ids ids = {0};
    if (kn_tok_encode(t, s, len, opt_allow_special(L, 3), &ids) != KN_OK) { free(ids.ids); return knL_error(L); }
    free(ids.ids);
    lua_pushinteger(L, (lua_Integer)ids.n);
    return 1;
}

/* t:decode({ids}) -> string */
static int t_decode(lua_State *L)
{
    kn_tokenizer *t = check_tok(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 2);
    uint32_t *ids = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *ids, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 2, i);
        int isnum;
        lua_Integer v = lua_tointegerx(L, -1, &isnum);
        if (!isnum || v < 0 || v > UINT32_MAX)
            return luaL_error(L, "decode: element %d must be a token id (got %s)", (int)i, luaL_tolstring(L, -1, NULL));
        ids[i - 1] = (uint32_t)v;
        lua_pop(L, 1);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    if (kn_tok_decode(t, ids, (size_t)n, &buf, &len) != KN_OK) { free(buf); return knL_error(L); }
    lua_pushlstring(L, (const char *)buf, len);
    free(buf);
    return 1;
}

/* t:encode_file(in_path, out_path [, allow_special]) -> tokens written (uint16 .bin) */
static int t_encode_file(lua_State *L)
{
    kn_tokenizer *t = check_tok(L, 1);
    const char *in = luaL_checkstring(L, 2), *out = luaL_checkstring(L, 3);
    int64_t n = 0;
    KNL_TRY(L, kn_tok_encode_file_u16(t, in, out, opt_allow_special(L, 4), &n));
    lua_pushinteger(L, n);
    return 1;
}

static int t_save(lua_State *L)
{
    KNL_TRY(L, kn_tok_save_json(check_tok(L, 1), luaL_checkstring(L, 2)));
    return 0;
}

static int t_vocab_size(lua_State *L) { lua_pushinteger(L, kn_tok_vocab_size(check_tok(L, 1))); return 1; }
static int t_num_merges(lua_State *L) { lua_pushinteger(L, kn_tok_num_merges(check_tok(L, 1))); return 1; }

/* t:token(id) -> the token's bytes (a special: its text) */
static int t_token(lua_State *L)
{
    kn_tokenizer *t = check_tok(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    size_t n;
    const uint8_t *b = id >= 0 && id <= UINT32_MAX ? kn_tok_token_bytes(t, (uint32_t)id, &n) : NULL;
    if (!b) return luaL_argerror(L, 2, lua_pushfstring(L, "token id must be in 0..%d", kn_tok_vocab_size(t) - 1));
    lua_pushlstring(L, (const char *)b, n);
    return 1;
}

static int t_is_special(lua_State *L)
{
    kn_tokenizer *t = check_tok(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    lua_pushboolean(L, id >= 0 && id <= UINT32_MAX && kn_tok_is_special(t, (uint32_t)id));
    return 1;
}

/* t:special_id(text) -> id or nil */
static int t_special_id(lua_State *L)
{
    int64_t id = kn_tok_special_id(check_tok(L, 1), luaL_checkstring(L, 2));
    if (id < 0) lua_pushnil(L);
    else lua_pushinteger(L, id);
    return 1;
}

/* t:merge(rank) -> left, right, made (rank from 1) */
static int t_merge(lua_State *L)
{
    kn_tokenizer *t = check_tok(L, 1);
    lua_Integer r = luaL_checkinteger(L, 2);
    uint32_t a, b, m;
    if (r < 1 || r > kn_tok_num_merges(t) || kn_tok_merge(t, (int)(r - 1), &a, &b, &m) != KN_OK)
        return luaL_argerror(L, 2, lua_pushfstring(L, "merge rank must be in 1..%d", kn_tok_num_merges(t)));
    lua_pushinteger(L, a);
    lua_pushinteger(L, b);
    lua_pushinteger(L, m);
    return 3;
}

static int t_gc(lua_State *L)
{
    knL_Tokenizer *u = luaL_checkudata(L, 1, TOKENIZER_MT);
    kn_tok_release(u->t);
    u->t = NULL;
    return 0;
}

static int t_tostring(lua_State *L)
{
    knL_Tokenizer *u = luaL_checkudata(L, 1, TOKENIZER_MT);
    if (!u->t) lua_pushstring(L, "kiln.Tokenizer (closed)");
    else lua_pushfstring(L, "kiln.Tokenizer(vocab %d, %d merges)", kn_tok_vocab_size(u->t), kn_tok_num_merges(u->t));
    return 1;
}

static const luaL_Reg tok_methods[] = {
    {"encode", t_encode}, {"count", t_count}, {"decode", t_decode}, {"encode_file", t_encode_file},
    {"save", t_save}, {"vocab_size", t_vocab_size}, {"num_merges", t_num_merges}, {"token", t_token},
    {"is_special", t_is_special}, {"special_id", t_special_id}, {"merge", t_merge}, {"close", t_gc},
    {NULL, NULL}
};
static const luaL_Reg tok_meta[] = {
    {"__gc", t_gc}, {"__close", t_gc}, {"__tostring", t_tostring}, {NULL, NULL}
};

void knL_open_tokenizer(lua_State *L)
{
    knL_new_class(L, TOKENIZER_MT, tok_methods, tok_meta);
    static const luaL_Reg funcs[] = {
        {"tok_load_json", l_load_json}, {"tok_load_gpt2", l_load_gpt2}, {"tok_train", l_train}, {NULL, NULL}
    };
    luaL_setfuncs(L, funcs, 0);
}
