/* l_generate.c — m:generate(prompt, opts) and m:logits() on kiln.Model (core/generate.h).
 * Each model gets one generator (its key/value cache) on first use, kept in a weak-keyed
 * registry table so it lives exactly as long as the model. Text goes in and out through a
 * tokenizer object (opts.tokenizer, anything with :encode(string) -> ids and
 * :decode(ids) -> string); without one a byte-level model (vocab_size 256) uses the bytes. */
#include "binding.h"
#include "generate.h"

#include <string.h>

#define MODEL_MT "kiln.Model"
#define GEN_MT "kiln.Generator"
#define GEN_REGISTRY "kiln.generators"
#define MAX_NEW_TOKENS (1 << 24)

typedef struct { kn_gen *s; kn_gpt *g; } knL_Gen;

/* Fixed stack slots of m:generate (arguments are 1 model, 2 prompt, 3 opts). */
enum { TOKENIZER_SLOT = 4, CALLBACK_SLOT, ERROR_SLOT };

static int gen_gc(lua_State *L)
{
    knL_Gen *u = luaL_checkudata(L, 1, GEN_MT);
    kn_gen_free(u->s);
    kn_gpt_free(u->g);   /* the generator's reference to its model */
    u->s = NULL;
    u->g = NULL;
    return 0;
}

static void push_generators(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, GEN_REGISTRY) == LUA_TTABLE) return;
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, GEN_REGISTRY);
}

/* The generator of the model at arg 1, or NULL (create: make one). Stack unchanged. */
static kn_gen *generator_for(lua_State *L, kn_gpt *g, bool create)
{
    push_generators(L);
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    knL_Gen *u = luaL_testudata(L, -1, GEN_MT);
    if ((u && u->s && u->g == g) || !create) {
        lua_pop(L, 2);
        return u && u->g == g ? u->s : NULL;
    }
    lua_pop(L, 1);
    u = lua_newuserdatauv(L, sizeof *u, 0);
    u->s = NULL;   /* a safe state for __gc before the core objects exist */
    u->g = NULL;
    luaL_setmetatable(L, GEN_MT);
    if (kn_gen_new(&u->s, g) != KN_OK) knL_error(L);
    u->g = kn_gpt_retain(g);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    lua_pop(L, 2);
    return u->s;
}

/* ------------------------------------------------------------------ options */

static const char *const option_keys[] = {
    "max_new_tokens", "temperature", "top_k", "top_p", "seed", "stop", "context",
    "tokenizer", "on_token", NULL
};

static void check_option_keys(lua_State *L, int idx)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        bool known = false;
        for (const char *const *o = option_keys; k && *o; o++) known = known || strcmp(k, *o) == 0;
        if (!known)
            luaL_error(L, "generate: unknown option '%s' (known: max_new_tokens, temperature, "
                       "top_k, top_p, seed, stop, context, tokenizer, on_token)",
                       k ? k : luaL_typename(L, -2));
        lua_pop(L, 1);
    }
}

static int int_option(lua_State *L, const char *k, lua_Integer def, lua_Integer lo, lua_Integer hi)
{
    lua_Integer v = knL_opt_int_field(L, 3, k, def);
    if (v < lo || v > hi)
        luaL_error(L, "generate: %s (%I) must be in [%I, %I]", k, v, lo, hi);
    return (int)v;
}

/* Push tokenizer.method and the tokenizer (ready for lua_call with one more argument). */
static void push_tokenizer_method(lua_State *L, const char *method)
{
    lua_getfield(L, TOKENIZER_SLOT, method);
    if (!lua_isfunction(L, -1))
        luaL_error(L, "generate: the tokenizer has no %s method (got %s)", method, luaL_typename(L, -1));
    lua_pushvalue(L, TOKENIZER_SLOT);
}

/* A table of token ids at idx into a new int32 buffer left on the stack. */
static int32_t *ids_from_table(lua_State *L, int idx, const char *what, int V, int *n)
{
    idx = lua_absindex(L, idx);
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    if (len > MAX_NEW_TOKENS) luaL_error(L, "generate: %s has more than %d tokens", what, MAX_NEW_TOKENS);
    int32_t *ids = lua_newuserdatauv(L, sizeof(int32_t) * (size_t)(len > 0 ? len : 1), 0);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, idx, i);
        int isint;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint || v < 0 || v >= V)
            luaL_error(L, "generate: %s[%I] must be a token id in [0, %d) (got %s)", what, i, V,
                       isint ? lua_tostring(L, -1) : luaL_typename(L, -1));
        ids[i - 1] = (int32_t)v;
        lua_pop(L, 1);
    }
    *n = (int)len;
    return ids;
}

/* Text to ids through the tokenizer, or as bytes for a byte-level model; buffer on the stack. */
static int32_t *encode_text(lua_State *L, int str_idx, const char *what, int V, int *n)
{
    str_idx = lua_absindex(L, str_idx);
    if (!lua_isnil(L, TOKENIZER_SLOT)) {
        push_tokenizer_method(L, "encode");
        lua_pushvalue(L, str_idx);
        lua_call(L, 2, 1);
        if (!lua_istable(L, -1))
            luaL_error(L, "generate: tokenizer:encode(%s) returned %s, expected a table of ids",
                       what, luaL_typename(L, -1));
        int32_t *ids = ids_from_table(L, -1, what, V, n);
        lua_remove(L, -2);
        return ids;
    }
    if (V != 256)
        luaL_error(L, "generate: %s is text, but the model's vocabulary (%d) is not bytes (256): "
                   "pass token ids or opts.tokenizer", what, V);
    size_t len;
    const char *s = lua_tolstring(L, str_idx, &len);
    if (len > MAX_NEW_TOKENS) luaL_error(L, "generate: %s is longer than %d bytes", what, MAX_NEW_TOKENS);
    int32_t *ids = lua_newuserdatauv(L, sizeof(int32_t) * (len > 0 ? len : 1), 0);
    for (size_t i = 0; i < len; i++) ids[i] = (unsigned char)s[i];
    *n = (int)len;
    return ids;
}

/* opts.stop: one stop or a list of them; an integer is a stop token, a string a stop text
 * (encoded), a table a sequence of ids. Fills o's stop arrays (buffers left on the stack). */
static void check_stops(lua_State *L, kn_gen_opts *o, int V)
{
    lua_getfield(L, 3, "stop");
    int stop = lua_gettop(L);
    if (lua_isnil(L, stop)) return;
    if (!lua_istable(L, stop)) {      /* a single stop: wrap it as a list of one */
        lua_createtable(L, 1, 0);
        lua_pushvalue(L, stop);
        lua_rawseti(L, -2, 1);
        lua_replace(L, stop);
    }
    int n = (int)lua_rawlen(L, stop), total = 0;
    int32_t *tokens = lua_newuserdatauv(L, sizeof(int32_t) * (size_t)(n > 0 ? n : 1), 0);
    int *lens = lua_newuserdatauv(L, sizeof(int) * (size_t)(n > 0 ? n : 1), 0);
    int seq_list = lua_gettop(L) + 1;
    lua_createtable(L, n, 0);   /* the sequences' id buffers, kept alive */
    o->n_stop_tokens = o->n_stop_seqs = 0;
    for (int i = 1; i <= n; i++) {
        char what[48];
        snprintf(what, sizeof what, "stop[%d]", i);
        int t = lua_rawgeti(L, stop, i), len = 0;
        if (lua_isinteger(L, -1)) {
            lua_Integer v = lua_tointeger(L, -1);
            if (v < 0 || v >= V) luaL_error(L, "generate: %s = %I is not a token id in [0, %d)", what, v, V);
            tokens[o->n_stop_tokens++] = (int32_t)v;
            lua_pop(L, 1);
            continue;
        }
        if (t == LUA_TSTRING) encode_text(L, -1, what, V, &len);
        else if (t == LUA_TTABLE) ids_from_table(L, -1, what, V, &len);
        else luaL_error(L, "generate: %s is %s, expected a token id, a string or a table of ids",
                        what, luaL_typename(L, -1));
        if (len < 1) luaL_error(L, "generate: %s is empty", what);
        lens[o->n_stop_seqs++] = len;
        total += len;
        lua_rawseti(L, seq_list, o->n_stop_seqs);
        lua_pop(L, 1);
    }
    int32_t *seqs = lua_newuserdatauv(L, sizeof(int32_t) * (size_t)(total > 0 ? total : 1), 0);
    for (int i = 1, at = 0; i <= o->n_stop_seqs; at += lens[i - 1], i++) {
        lua_rawgeti(L, seq_list, i);
        memcpy(seqs + at, lua_touserdata(L, -1), sizeof(int32_t) * (size_t)lens[i - 1]);
        lua_pop(L, 1);
    }
    o->stop_tokens = tokens;
    o->stop_seqs = seqs;
    o->stop_seq_lens = lens;
}

static kn_gen_opts check_options(lua_State *L, int V)
{
    kn_gen_opts o = kn_gen_default_opts();
    if (lua_isnoneornil(L, 3)) return o;
    luaL_checktype(L, 3, LUA_TTABLE);
    check_option_keys(L, 3);
    o.max_new_tokens = int_option(L, "max_new_tokens", o.max_new_tokens, 0, MAX_NEW_TOKENS);
    o.temperature = (float)knL_opt_number_field(L, 3, "temperature", o.temperature);
    o.top_k = int_option(L, "top_k", o.top_k, 0, V);
    o.top_p = (float)knL_opt_number_field(L, 3, "top_p", o.top_p);
    o.seed = (uint64_t)knL_opt_int_field(L, 3, "seed", (lua_Integer)o.seed);
    lua_getfield(L, 3, "context");
    const char *ctx = lua_isnil(L, -1) ? "slide" : lua_tostring(L, -1);
    if (!ctx || (strcmp(ctx, "slide") != 0 && strcmp(ctx, "stop") != 0))
        luaL_error(L, "generate: context must be \"slide\" or \"stop\" (got %s)",
                   ctx ? ctx : luaL_typename(L, -1));
    o.on_full = strcmp(ctx, "stop") == 0 ? KN_GEN_STOP : KN_GEN_SLIDE;
    lua_pop(L, 1);
    return o;
}

/* ------------------------------------------------------------------ streaming */

typedef struct { lua_State *L; int V; bool failed; } stream_ctx;

/* Protected: (on_token, tokenizer, id, V) -> on_token(id, piece). piece is the token's text:
 * tokenizer:decode{id}, the byte for a byte-level model, else nil. */
static int stream_call(lua_State *L)
{
    lua_Integer id = lua_tointeger(L, 3);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, id);
    if (!lua_isnil(L, 2)) {
        if (lua_getfield(L, 2, "decode") != LUA_TFUNCTION)
            return luaL_error(L, "generate: the tokenizer has no decode method (got %s)",
                              luaL_typename(L, -1));
        lua_pushvalue(L, 2);
        lua_createtable(L, 1, 0);
        lua_pushinteger(L, id);
        lua_rawseti(L, -2, 1);
        lua_call(L, 2, 1);
    } else if (lua_tointeger(L, 4) == 256) {
        char b = (char)id;
        lua_pushlstring(L, &b, 1);
    } else {
        lua_pushnil(L);
    }
    lua_call(L, 2, 1);
    return 1;
}

/* kn_gen_token_fn: call opts.on_token; a Lua error is kept in ERROR_SLOT and ends the run,
 * as does on_token returning false. */
static int stream_token(void *ud, int32_t tok)
{
    stream_ctx *c = ud;
    lua_State *L = c->L;
    if (lua_isnil(L, CALLBACK_SLOT)) return 0;
    lua_pushcfunction(L, stream_call);
    lua_pushvalue(L, CALLBACK_SLOT);
    lua_pushvalue(L, TOKENIZER_SLOT);
    lua_pushinteger(L, tok);
    lua_pushinteger(L, c->V);
    if (lua_pcall(L, 4, 1, 0) != LUA_OK) {
        lua_replace(L, ERROR_SLOT);
        c->failed = true;
        return 1;
    }
    int stop = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
    lua_pop(L, 1);
    return stop;
}

/* ------------------------------------------------------------------ results */

static const char *end_name(kn_gen_end why)
{
    switch (why) {
    case KN_GEN_END_LENGTH: return "length";
    case KN_GEN_END_STOP: return "stop";
    case KN_GEN_END_FULL: return "full";
    case KN_GEN_END_CALLBACK: return "callback";
    }
    return "?";
}

static void push_ids(lua_State *L, const int32_t *ids, int n)
{
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, ids[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

/* The generated ids as text (tokenizer:decode, or bytes). */
static void push_text(lua_State *L, const int32_t *ids, int n)
{
    if (!lua_isnil(L, TOKENIZER_SLOT)) {
        push_tokenizer_method(L, "decode");
        push_ids(L, ids, n);
        lua_call(L, 2, 1);
        if (!lua_isstring(L, -1))
            luaL_error(L, "generate: tokenizer:decode returned %s, expected a string", luaL_typename(L, -1));
        return;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 0; i < n; i++) luaL_addchar(&b, (char)ids[i]);
    luaL_pushresult(&b);
}

/* m:generate(prompt [, opts]) -> text or ids, reason. A string prompt gives text back, a
 * table of ids gives ids. reason: "length", "stop", "full" or "callback". */
static int m_generate(lua_State *L)
{
    kn_gpt *g = knL_check_model(L, 1);
    int V = kn_gpt_get_config(g)->vocab_size;
    bool text = lua_type(L, 2) == LUA_TSTRING;
    if (!text && !lua_istable(L, 2))
        luaL_argerror(L, 2, "prompt must be a string or a table of token ids");
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    if (lua_isnil(L, 3)) {
        lua_pushnil(L);                /* TOKENIZER_SLOT */
        lua_pushnil(L);                /* CALLBACK_SLOT */
    } else {
        lua_getfield(L, 3, "tokenizer");
        lua_getfield(L, 3, "on_token");
    }
    int tt = lua_type(L, TOKENIZER_SLOT);
    if (tt != LUA_TNIL && tt != LUA_TTABLE && tt != LUA_TUSERDATA)
        luaL_error(L, "generate: tokenizer must be an object with encode and decode methods (got %s)",
                   luaL_typename(L, TOKENIZER_SLOT));
    if (!lua_isnil(L, CALLBACK_SLOT) && !lua_isfunction(L, CALLBACK_SLOT))
        luaL_error(L, "generate: on_token must be a function (got %s)", luaL_typename(L, CALLBACK_SLOT));
    lua_pushnil(L);                    /* ERROR_SLOT */
    kn_gen_opts o = check_options(L, V);
    if (!lua_isnil(L, 3)) check_stops(L, &o, V);
    int n_prompt = 0;
    const int32_t *prompt = text ? encode_text(L, 2, "prompt", V, &n_prompt)
                                 : ids_from_table(L, 2, "prompt", V, &n_prompt);
    int32_t *out = lua_newuserdatauv(L, sizeof(int32_t) * (size_t)(o.max_new_tokens > 0 ? o.max_new_tokens : 1), 0);
    kn_gen *s = generator_for(L, g, true);
    stream_ctx c = {.L = L, .V = V};
    int n_out = 0;
    kn_gen_end why = KN_GEN_END_LENGTH;
    kn_status st = kn_gen_run(s, prompt, n_prompt, &o, out, &n_out, &why, stream_token, &c);
    if (c.failed) {
        lua_pushvalue(L, ERROR_SLOT);
        return lua_error(L);
    }
    if (st != KN_OK) return knL_error(L);
    if (text) push_text(L, out, n_out);
    else push_ids(L, out, n_out);
    lua_pushstring(L, end_name(why));
    return 2;
}

/* m:logits() -> a [vocab_size] copy of the distribution the last generated token was drawn
 * from (with max_new_tokens = 0: the prompt's next-token logits). */
static int m_logits(lua_State *L)
{
    kn_gpt *g = knL_check_model(L, 1);
    kn_gen *s = generator_for(L, g, false);
    const float *logits = s ? kn_gen_logits(s) : NULL;
    if (!logits) return luaL_error(L, "logits: no generation yet (call m:generate first)");
    int64_t V = kn_gpt_get_config(g)->vocab_size;
    kn_tensor *t = knL_push_tensor(L, 1, &V);
    memcpy(t->data, logits, sizeof(float) * (size_t)V);
    return 1;
}

static const luaL_Reg model_methods[] = {
    {"generate", m_generate}, {"logits", m_logits}, {NULL, NULL}
};

/* Adds generate and logits to kiln.Model (which knL_open_model must have created). */
void knL_open_generate(lua_State *L)
{
    if (luaL_newmetatable(L, GEN_MT)) {
        lua_pushcfunction(L, gen_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_getmetatable(L, MODEL_MT) != LUA_TTABLE) {
        luaL_error(L, "kiln.Model must be registered before its generate methods");
        return;
    }
    if (lua_getfield(L, -1, "__methods") != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_getfield(L, -1, "__index");
    }
    luaL_setfuncs(L, model_methods, 0);
    lua_pop(L, 2);
}
