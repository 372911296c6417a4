/* l_ckpt.c — kiln.save / kiln.load / kiln.checkpoint_info. How a model and its optimizer
 * map to a checkpoint's tensors and metadata is core/gpt_ckpt.c's business; this file turns
 * Lua tables into metadata and back, and the user metadata's order into a sorted one (Lua's
 * table order is arbitrary; the same state must give the same bytes). */
#include "binding.h"
#include "ckpt.h"
#include "gpt_ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Convert a Lua metadata value to its string form (numbers exactly, %.17g). */
static const char *meta_string(lua_State *L, int idx, const char *key, char *buf, size_t cap)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: return lua_tostring(L, idx);
    case LUA_TBOOLEAN: return lua_toboolean(L, idx) ? "true" : "false";
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) snprintf(buf, cap, "%lld", (long long)lua_tointeger(L, idx));
        else snprintf(buf, cap, "%.17g", lua_tonumber(L, idx));
        return buf;
    default:
        luaL_error(L, "kiln.save: meta.%s must be a string, number or boolean (got %s)", key, luaL_typename(L, idx));
        return NULL;
    }
}

static int meta_cmp(const void *a, const void *b)
{
    return strcmp(((const kn_ckpt_meta *)a)->key, ((const kn_ckpt_meta *)b)->key);
}

/* The user metadata of the table at idx (nil: none) as a sorted array in a userdata pushed
 * on the stack, its converted strings anchored in a table pushed before it. */
static kn_ckpt_meta *user_meta(lua_State *L, int idx, int *n_out)
{
    int n = 0;
    if (!lua_isnil(L, idx)) {
        luaL_checktype(L, idx, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, idx)) { n++; lua_pop(L, 1); }
    }
    lua_createtable(L, n, 0);
    int anchor = lua_gettop(L);
    kn_ckpt_meta *meta = lua_newuserdatauv(L, sizeof *meta * (size_t)(n ? n : 1), 0);
    int i = 0;
    if (n) {
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "kiln.save: meta keys must be strings");
            const char *k = lua_tostring(L, -2);
            if (strncmp(k, "kiln.", 5) == 0)
                luaL_error(L, "kiln.save: meta key '%s' uses the reserved prefix 'kiln.'", k);
            if (strcmp(k, "tokenizer") == 0)
                luaL_error(L, "kiln.save: meta key 'tokenizer' is reserved (kiln.load returns the "
                           "checkpoint's tokenizer under it); pass the tokenizer as tokenizer = ...");
            char buf[64];
            lua_pushstring(L, meta_string(L, -1, k, buf, sizeof buf));
            meta[i].key = k;
            meta[i].value = lua_tostring(L, -1);
            lua_rawseti(L, anchor, ++i);
            lua_pop(L, 1);
        }
    }
    qsort(meta, (size_t)n, sizeof *meta, meta_cmp);
    *n_out = n;
    return meta;
}

/* The tokenizer option at idx: nil (none recorded), "bytes", or a kiln.Tokenizer. */
static void save_tokenizer(lua_State *L, int idx, kn_gpt_save_opts *opts)
{
    if (lua_isnil(L, idx)) return;
    if (lua_type(L, idx) == LUA_TSTRING && strcmp(lua_tostring(L, idx), "bytes") == 0) {
        opts->tok_kind = KN_CKPT_TOK_BYTES;
        return;
    }
    opts->tokenizer = knL_test_tokenizer(L, idx);
    if (!opts->tokenizer)
        luaL_error(L, "kiln.save: field 'tokenizer' must be a kiln.Tokenizer or \"bytes\" (got %s)",
                   luaL_typename(L, idx));
    opts->tok_kind = KN_CKPT_TOK_BPE;
}

/* kiln.save(path, {model = m, optimizer = opt?, tokenizer = tok | "bytes" | nil,
 *                  meta = {key = string|number|boolean}}) */
static int l_save(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_getfield(L, 2, "model");
    if (lua_isnil(L, 3)) return luaL_error(L, "kiln.save: field 'model' is required");
    kn_gpt_save_opts opts = {0};
    kn_gpt *g = knL_check_model(L, 3);
    lua_getfield(L, 2, "optimizer");
    opts.optimizer = lua_isnil(L, 4) ? NULL : knL_check_adamw(L, 4);
    lua_getfield(L, 2, "tokenizer");
    save_tokenizer(L, 5, &opts);
    lua_getfield(L, 2, "meta");
    opts.meta = user_meta(L, 6, &opts.n_meta);
    KNL_TRY(L, kn_gpt_save_with(path, g, &opts));
    return 0;
}

/* ---- loading ------------------------------------------------------------------------ */

/* An open checkpoint file in a handle, so a Lua error while loading still closes it. */
static void release_ckpt(void *obj) { kn_ckpt_close(obj); }

static void describe_ckpt(lua_State *L, void *obj)
{
    lua_pushfstring(L, "kiln.Checkpoint(%s)", kn_ckpt_path(obj));
}

static const knL_type ckpt_type = {"kiln.Checkpoint", release_ckpt, describe_ckpt};

static kn_ckpt *open_ckpt(lua_State *L, const char *path)
{
    knL_handle *h = knL_handle_new(L, &ckpt_type, 0);
    kn_ckpt *c;
    if (kn_ckpt_open(&c, path) != KN_OK) knL_error(L);
    h->obj = c;
    return c;
}

/* Free the file's memory now rather than at the next collection. */
static void close_ckpt(lua_State *L, int idx)
{
    knL_handle *h = lua_touserdata(L, idx);
    kn_ckpt *c = h->obj;
    h->obj = NULL;
    kn_ckpt_close(c);
}

/* The metadata as a table of strings, without the embedded tokenizer text (a megabyte
 * for GPT-2's: kiln.load returns the tokenizer itself, kiln.load_tokenizer too). */
static void push_meta(lua_State *L, const kn_ckpt *c)
{
    lua_createtable(L, 0, kn_ckpt_num_meta(c));
    for (int i = 0; i < kn_ckpt_num_meta(c); i++) {
        const kn_ckpt_meta *m = kn_ckpt_meta_at(c, i);
        if (strcmp(m->key, "kiln.tokenizer.json") == 0) continue;
        lua_pushstring(L, m->value);
        lua_setfield(L, -2, m->key);
    }
}

/* Push the checkpoint's tokenizer: a kiln.Tokenizer, "bytes", or nil (none recorded). */
static void push_tokenizer(lua_State *L, const kn_ckpt *c)
{
    kn_ckpt_tok_kind kind;
    kn_tokenizer **slot = knL_new_tokenizer(L);
    if (kn_gpt_ckpt_tokenizer(c, &kind, slot) != KN_OK) knL_error(L);
    if (kind == KN_CKPT_TOK_BPE) return;
    lua_pop(L, 1);
    if (kind == KN_CKPT_TOK_BYTES) lua_pushliteral(L, "bytes");
    else lua_pushnil(L);
}

/* kiln.load(path [, {model = m, optimizer = opt, n_head = n, activation = a,
 *                    tokenizer = false}]) -> model, meta
 * Without `model` a new model is built from the file's config; with it, the file must
 * match that model's shapes exactly. With `optimizer` (the model's own), the AdamW moments
 * and step count are loaded too. The file is checked in full before anything changes.
 * meta.tokenizer is the recorded tokenizer (kiln.Tokenizer or "bytes"; not built when
 * tokenizer = false). */
static int l_load(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    else { lua_settop(L, 1); lua_newtable(L); }
    lua_settop(L, 2);
    lua_getfield(L, 2, "model");                            /* 3 */
    kn_gpt *g = lua_isnil(L, 3) ? NULL : knL_check_model(L, 3);
    lua_getfield(L, 2, "optimizer");                        /* 4 */
    kn_adamw *o = lua_isnil(L, 4) ? NULL : knL_check_adamw(L, 4);
    if (o && !g) return luaL_error(L, "kiln.load: 'optimizer' needs 'model' too (the one it optimizes)");
    lua_Integer n_head = knL_opt_int_field(L, 2, "n_head", 0);
    if (n_head < 0 || n_head > 1 << 24)
        return luaL_error(L, "kiln.load: field 'n_head' = %I is out of range 1..2^24", n_head);
    kn_gpt_ckpt_hints hints = {.n_head = (int)n_head, .activation = NULL};
    lua_getfield(L, 2, "activation");
    if (!lua_isnil(L, -1)) {
        hints.activation = lua_tostring(L, -1);
        if (lua_type(L, -1) != LUA_TSTRING || (strcmp(hints.activation, "gelu") && strcmp(hints.activation, "gelu_tanh")))
            return luaL_error(L, "kiln.load: field 'activation' must be \"gelu_tanh\" or \"gelu\"");
    }
    lua_pop(L, 1);   /* the string stays alive in the options table */
    bool want_tok = knL_opt_bool_field(L, 2, "tokenizer", 1);
    kn_ckpt *c = open_ckpt(L, path);                        /* 5 */
    if (g) {
        KNL_TRY(L, kn_gpt_load(c, g, o));
        lua_pushvalue(L, 3);
    } else {
        knL_handle *h = knL_push_model_handle(L);
        KNL_TRY(L, kn_gpt_from_ckpt(&g, c, &hints));
        knL_model_opened(L, h, g);
    }
    push_meta(L, c);
    if (want_tok) {
        push_tokenizer(L, c);
        lua_setfield(L, -2, "tokenizer");
    }
    close_ckpt(L, 5);
    return 2;
}

/* kiln.load_tokenizer(path) -> kiln.Tokenizer | "bytes" | nil: the tokenizer a checkpoint
 * carries, without building the model. */
static int l_load_tokenizer(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    kn_ckpt *c = open_ckpt(L, path);
    push_tokenizer(L, c);
    close_ckpt(L, 2);
    return 1;
}

/* kiln.checkpoint_info(path) -> {tensors = {{name=, shape={}}...}, meta = {...}} */
static int l_checkpoint_info(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    kn_ckpt *c = open_ckpt(L, path);
    lua_createtable(L, 0, 2);
    lua_createtable(L, kn_ckpt_num_tensors(c), 0);
    for (int i = 0; i < kn_ckpt_num_tensors(c); i++) {
        const kn_ckpt_tensor *t = kn_ckpt_tensor_at(c, i);
        lua_createtable(L, 0, 2);
        lua_pushstring(L, t->name);
        lua_setfield(L, -2, "name");
        lua_createtable(L, t->ndim, 0);
        for (int d = 0; d < t->ndim; d++) { lua_pushinteger(L, t->shape[d]); lua_rawseti(L, -2, d + 1); }
        lua_setfield(L, -2, "shape");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "tensors");
    push_meta(L, c);
    lua_setfield(L, -2, "meta");
    close_ckpt(L, 2);
    return 1;
}

void knL_open_ckpt(lua_State *L)
{
    static const luaL_Reg none[] = {{NULL, NULL}};
    knL_handle_class(L, &ckpt_type, none, NULL);
    lua_pushcfunction(L, l_save);
    lua_setfield(L, -2, "save");
    lua_pushcfunction(L, l_load);
    lua_setfield(L, -2, "load");
    lua_pushcfunction(L, l_checkpoint_info);
    lua_setfield(L, -2, "checkpoint_info");
    lua_pushcfunction(L, l_load_tokenizer);
    lua_setfield(L, -2, "load_tokenizer");
}
