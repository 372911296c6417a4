/* l_model.c — kiln.Model (the GPT of core/gpt.h) and kiln.Batch (token windows [B,T]). */
#include "binding.h"

#include <string.h>

#define MODEL_MT "kiln.Model"
#define BATCH_MT "kiln.Batch"

/* ---- Batch ------------------------------------------------------------------------ */

knL_Batch *knL_check_batch(lua_State *L, int arg)
{
    knL_Batch *b = luaL_checkudata(L, arg, BATCH_MT);
    if (!b->inputs) luaL_argerror(L, arg, "batch was closed");
    return b;
}

/* kiln.batch(B, T): room for B windows of T tokens (inputs and targets). */
static int l_batch(lua_State *L)
{
    lua_Integer B = luaL_checkinteger(L, 1), T = luaL_checkinteger(L, 2);
    luaL_argcheck(L, B >= 1 && B <= 1 << 20, 1, "batch size must be between 1 and 2^20");
    luaL_argcheck(L, T >= 1 && T <= 1 << 20, 2, "context length must be between 1 and 2^20");
    knL_Batch *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, BATCH_MT);
    b->inputs = kn_alloc((size_t)B * (size_t)T * sizeof(int32_t));
    b->targets = kn_alloc((size_t)B * (size_t)T * sizeof(int32_t));
    if (!b->inputs || !b->targets) {
        kn_free(b->inputs); kn_free(b->targets);
        b->inputs = b->targets = NULL;
        return knL_error(L);
    }
    b->cap_B = (int)B;
    b->T = (int)T;
    b->rows = 0;
    return 1;
}

static int b_size(lua_State *L)
{
    knL_Batch *b = knL_check_batch(L, 1);
    lua_pushinteger(L, b->cap_B);
    lua_pushinteger(L, b->T);
    return 2;
}

static int b_rows(lua_State *L)
{
    knL_Batch *b = knL_check_batch(L, 1);
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
    knL_Batch *b = knL_check_batch(L, 1);
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
    knL_Batch *b = knL_check_batch(L, 1);
    lua_Integer r = luaL_checkinteger(L, 2), t = luaL_checkinteger(L, 3);
    lua_Integer in = luaL_checkinteger(L, 4), tg = luaL_checkinteger(L, 5);
    luaL_argcheck(L, r >= 1 && r <= b->cap_B, 2, "row out of range");
    luaL_argcheck(L, t >= 1 && t <= b->T, 3, "position out of range");
    size_t i = (size_t)(r - 1) * (size_t)b->T + (size_t)(t - 1);
    b->inputs[i] = (int32_t)in;
    b->targets[i] = (int32_t)tg;
    if (b->rows < r) b->rows = (int)r;
    return 0;
}

/* b:text(row) -> the row's input bytes followed by its last target, as a string. */
static int b_text(lua_State *L)
{
    knL_Batch *b = knL_check_batch(L, 1);
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

static int b_gc(lua_State *L)
{
    knL_Batch *b = luaL_checkudata(L, 1, BATCH_MT);
    kn_free(b->inputs);
    kn_free(b->targets);
    b->inputs = b->targets = NULL;
    return 0;
}

static int b_tostring(lua_State *L)
{
    knL_Batch *b = luaL_checkudata(L, 1, BATCH_MT);
    if (!b->inputs) lua_pushstring(L, "kiln.Batch (closed)");
    else lua_pushfstring(L, "kiln.Batch(%d x %d, %d rows filled)", b->cap_B, b->T, b->rows);
    return 1;
}

static const luaL_Reg batch_methods[] = {
    {"size", b_size}, {"rows", b_rows}, {"get", b_get}, {"set", b_set}, {"text", b_text},
    {"close", b_gc}, {NULL, NULL}
};
static const luaL_Reg batch_meta[] = {
    {"__gc", b_gc}, {"__close", b_gc}, {"__tostring", b_tostring}, {NULL, NULL}
};

/* ---- Model ------------------------------------------------------------------------ */

knL_Model *knL_check_model(lua_State *L, int arg)
{
    knL_Model *m = luaL_checkudata(L, arg, MODEL_MT);
    if (!m->g) luaL_argerror(L, arg, "model was closed");
    return m;
}

knL_Model *knL_push_model(lua_State *L, kn_gpt *g)
{
    knL_Model *m = lua_newuserdatauv(L, sizeof *m, 0);
    memset(m, 0, sizeof *m);
    m->g = g;
    luaL_setmetatable(L, MODEL_MT);
    /* Tell the collector about the arenas it cannot see, so loops that build models do
     * not need collectgarbage(). */
    lua_gc(L, LUA_GCSTEP, (int)(kn_gpt_memory_bytes(g) / 1024 > 1 << 20 ? 1 << 20 : kn_gpt_memory_bytes(g) / 1024));
    return m;
}

static const char *const config_keys[] = {
    "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "seed",
    "parametrization", "base_width", "output_mult", "attn_mult", "zero_query", "activation", NULL
};

/* Refuse keys we do not know: a typo in a config should not silently mean a default. */
static void check_known_keys(lua_State *L, int idx, const char *const *keys, const char *what)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        bool known = false;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (const char *const *k = keys; *k; k++)
                if (strcmp(*k, lua_tostring(L, -2)) == 0) known = true;
        if (!known) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (const char *const *k = keys; *k; k++) {
                if (k != keys) luaL_addstring(&b, ", ");
                luaL_addstring(&b, *k);
            }
            luaL_pushresult(&b);
            luaL_error(L, "%s: unknown field '%s' (known: %s)", what,
                       lua_type(L, -3) == LUA_TSTRING ? lua_tostring(L, -3) : luaL_typename(L, -3),
                       lua_tostring(L, -1));
        }
        lua_pop(L, 1);
    }
}

static int config_int(lua_State *L, int idx, const char *k, lua_Integer def)
{
    lua_Integer v = knL_opt_int_field(L, idx, k, def);
    if (v < -2147483647 || v > 2147483647) luaL_error(L, "model config: '%s' = %d is out of range", k, (int)v);
    return (int)v;
}

/* The μP fields of a config table at idx (docs/warmstart.md): parametrization = "sp" (the
 * default; no other μP field allowed) or "mup" with base_width (default n_embd),
 * output_mult (1), attn_mult (1), zero_query (false). */
static void config_mup(lua_State *L, int idx, kn_gpt_config *c)
{
    lua_getfield(L, idx, "parametrization");
    const char *p = lua_isnil(L, -1) ? "sp" : lua_tostring(L, -1);
    if (!p || (strcmp(p, "sp") != 0 && strcmp(p, "mup") != 0))
        luaL_error(L, "kiln.model: parametrization must be \"sp\" or \"mup\"");
    bool mup = strcmp(p, "mup") == 0;
    lua_pop(L, 1);
    if (!mup) {
        static const char *const only_mup[] = {"base_width", "output_mult", "attn_mult", "zero_query"};
        for (int i = 0; i < 4; i++) {
            lua_getfield(L, idx, only_mup[i]);
            if (!lua_isnil(L, -1))
                luaL_error(L, "kiln.model: '%s' needs parametrization = \"mup\"", only_mup[i]);
            lua_pop(L, 1);
        }
        return;
    }
    c->mup = 1;
    c->mup_base_width = (float)knL_opt_number_field(L, idx, "base_width", c->n_embd);
    c->mup_output_mult = (float)knL_opt_number_field(L, idx, "output_mult", 1.0);
    c->mup_attn_mult = (float)knL_opt_number_field(L, idx, "attn_mult", 1.0);
    c->mup_zero_query = knL_opt_bool_field(L, idx, "zero_query", 0) ? 1 : 0;
}

/* activation = "gelu_tanh" (the default, GPT-2's) or "gelu" (exact, nanoGPT's nn.GELU()). */
static kn_activation config_activation(lua_State *L, int idx)
{
    lua_getfield(L, idx, "activation");
    const char *name = lua_isnil(L, -1) ? "gelu_tanh" : lua_tostring(L, -1);
    kn_activation a;
    if (lua_type(L, -1) != LUA_TNIL && lua_type(L, -1) != LUA_TSTRING) name = NULL;
    if (!kn_gpt_activation_parse(name, &a))
        luaL_error(L, "kiln.model: activation must be \"gelu_tanh\" or \"gelu\" (got %s)", luaL_tolstring(L, -1, NULL));
    lua_pop(L, 1);
    return a;
}

/* kiln.model{vocab_size=256, block_size=256, n_layer=4, n_head=4, n_embd=128, seed=1,
 *            parametrization="sp"|"mup", base_width=, output_mult=, attn_mult=, zero_query=,
 *            activation="gelu_tanh"|"gelu"} */
static int l_model(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    check_known_keys(L, 1, config_keys, "kiln.model");
    kn_gpt_config c = {
        .vocab_size = config_int(L, 1, "vocab_size", 256),
        .block_size = config_int(L, 1, "block_size", 256),
        .n_layer = config_int(L, 1, "n_layer", 4),
        .n_head = config_int(L, 1, "n_head", 4),
        .n_embd = config_int(L, 1, "n_embd", 128),
    };
    config_mup(L, 1, &c);
    c.activation = config_activation(L, 1);
    lua_Integer seed = knL_opt_int_field(L, 1, "seed", 1);
    KNL_TRY(L, kn_gpt_config_check(&c));
    kn_gpt *g;
    KNL_TRY(L, kn_gpt_new(&g, &c));
    kn_rng r;
    kn_rng_seed(&r, (uint64_t)seed);
    kn_gpt_init(g, &r);
    knL_push_model(L, g);
    return 1;
}

/* Weights from arg: nil, a tensor of T floats, or a Lua array of T numbers. The array is
 * copied into a scratch buffer kept in the registry-free model-side static area: to avoid
 * per-step allocation, pass a tensor in training loops. */
static const float *check_weights(lua_State *L, int arg, int T, float *scratch, int scratch_n)
{
    if (lua_isnoneornil(L, arg)) return NULL;
    if (lua_istable(L, arg)) {
        int n = (int)lua_rawlen(L, arg);
        if (n != T) luaL_error(L, "forward: expected %d weights (one per position), got %d", T, n);
        if (T > scratch_n) luaL_error(L, "forward: weights table too long; pass a kiln.tensor");
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, arg, i + 1);
            int isnum;
            scratch[i] = (float)lua_tonumberx(L, -1, &isnum);
            if (!isnum) luaL_error(L, "forward: weight %d is %s, expected a number", i + 1, luaL_typename(L, -1));
            lua_pop(L, 1);
        }
        return scratch;
    }
    kn_tensor *w = knL_check_tensor(L, arg);
    if (w->ndim != 1 || w->shape[0] != T || !kn_tensor_is_contiguous(w))
        luaL_error(L, "forward: expected a contiguous weight tensor of %d values (one per position), got %s of %d",
                   T, w->ndim == 1 ? "a vector" : "a tensor", (int)kn_tensor_numel(w));
    return w->data;
}

/* m:forward(batch [, weights [, normalize]]) -> mean (weighted) loss over the batch's rows. */
static int m_forward(lua_State *L)
{
    knL_Model *m = knL_check_model(L, 1);
    knL_Batch *b = knL_check_batch(L, 2);
    if (b->rows < 1) luaL_argerror(L, 2, "batch has no rows filled");
    static float scratch[8192];
    const float *w = check_weights(L, 3, b->T, scratch, 8192);
    bool normalize = lua_toboolean(L, 4);
    float loss = 0;
    KNL_TRY(L, kn_gpt_forward(m->g, b->inputs, b->targets, b->rows, b->T, w, normalize, &loss));
    m->B = b->rows;
    m->T = b->T;
    m->has_forward = true;
    lua_pushnumber(L, loss);
    return 1;
}

/* m:backward([grad_scale]) adds the last forward's gradient (times grad_scale) into grads. */
static int m_backward(lua_State *L)
{
    knL_Model *m = knL_check_model(L, 1);
    float scale = (float)luaL_optnumber(L, 2, 1.0);
    if (!m->has_forward) return luaL_error(L, "backward: no forward pass to differentiate");
    KNL_TRY(L, kn_gpt_backward(m->g, scale));
    return 0;
}

static int m_zero_grad(lua_State *L)
{
    kn_gpt_zero_grad(knL_check_model(L, 1)->g);
    return 0;
}

static int find_param(lua_State *L, knL_Model *m, int arg)
{
    const char *name = luaL_checkstring(L, arg);
    int i = kn_gpt_find(m->g, name);
    if (i < 0) {
        /* Allow the short form without the "transformer." prefix. */
        char full[128];
        snprintf(full, sizeof full, "transformer.%s", name);
        i = kn_gpt_find(m->g, full);
    }
    if (i < 0) luaL_argerror(L, arg, lua_pushfstring(L, "no parameter named '%s' (see model:params())", name));
    return i;
}

static int push_param_view(lua_State *L, float *base)
{
    knL_Model *m = knL_check_model(L, 1);
    int i = find_param(L, m, 2);
    const kn_param_info *p = kn_gpt_param_info(m->g, i);
    knL_push_view(L, base + p->offset, p->ndim, p->shape, 1);
    return 1;
}

static int m_param(lua_State *L) { return push_param_view(L, kn_gpt_params(knL_check_model(L, 1)->g)); }
static int m_grad(lua_State *L) { return push_param_view(L, kn_gpt_grads(knL_check_model(L, 1)->g)); }

static int m_flat(lua_State *L, float *base)
{
    knL_Model *m = knL_check_model(L, 1);
    int64_t n = (int64_t)kn_gpt_num_params(m->g);
    knL_push_view(L, base, 1, &n, 1);
    return 1;
}
static int m_flat_params(lua_State *L) { return m_flat(L, kn_gpt_params(knL_check_model(L, 1)->g)); }
static int m_flat_grads(lua_State *L) { return m_flat(L, kn_gpt_grads(knL_check_model(L, 1)->g)); }

static const char *kind_name(kn_param_kind k)
{
    switch (k) {
    case KN_PARAM_EMBEDDING: return "embedding";
    case KN_PARAM_MATRIX: return "matrix";
    case KN_PARAM_BIAS: return "bias";
    case KN_PARAM_NORM: return "norm";
    }
    return "?";
}

/* m:params() -> array of {name=, shape={...}, numel=, kind=, layer=} in buffer order. */
static int m_params(lua_State *L)
{
    knL_Model *m = knL_check_model(L, 1);
    int n = kn_gpt_num_tensors(m->g);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        const kn_param_info *p = kn_gpt_param_info(m->g, i);
        lua_createtable(L, 0, 5);
        lua_pushstring(L, p->name); lua_setfield(L, -2, "name");
        lua_createtable(L, p->ndim, 0);
        for (int d = 0; d < p->ndim; d++) { lua_pushinteger(L, p->shape[d]); lua_rawseti(L, -2, d + 1); }
        lua_setfield(L, -2, "shape");
        lua_pushinteger(L, (lua_Integer)p->numel); lua_setfield(L, -2, "numel");
        lua_pushstring(L, kind_name(p->kind)); lua_setfield(L, -2, "kind");
        if (p->layer >= 0) { lua_pushinteger(L, p->layer); lua_setfield(L, -2, "layer"); }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int m_num_params(lua_State *L)
{
    knL_Model *m = knL_check_model(L, 1);
    /* The flat buffer pads tensors for alignment: count the tensors' own elements. */
    lua_Integer n = 0;
    for (int i = 0; i < kn_gpt_num_tensors(m->g); i++) n += (lua_Integer)kn_gpt_param_info(m->g, i)->numel;
    lua_pushinteger(L, n);
    /* Without position embeddings: the N of the 6·N FLOPs rule. */
    const kn_gpt_config *c = kn_gpt_get_config(m->g);
    lua_pushinteger(L, n - (lua_Integer)c->block_size * c->n_embd);
    return 2;
}

void knL_push_config(lua_State *L, const kn_gpt_config *c)
{
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, c->vocab_size); lua_setfield(L, -2, "vocab_size");
    lua_pushinteger(L, c->block_size); lua_setfield(L, -2, "block_size");
    lua_pushinteger(L, c->n_layer); lua_setfield(L, -2, "n_layer");
    lua_pushinteger(L, c->n_head); lua_setfield(L, -2, "n_head");
    lua_pushinteger(L, c->n_embd); lua_setfield(L, -2, "n_embd");
    lua_pushstring(L, c->mup ? "mup" : "sp"); lua_setfield(L, -2, "parametrization");
    lua_pushstring(L, kn_gpt_activation_name(c->activation)); lua_setfield(L, -2, "activation");
    if (c->mup) {
        lua_pushnumber(L, c->mup_base_width); lua_setfield(L, -2, "base_width");
        lua_pushnumber(L, c->mup_output_mult); lua_setfield(L, -2, "output_mult");
        lua_pushnumber(L, c->mup_attn_mult); lua_setfield(L, -2, "attn_mult");
        lua_pushboolean(L, c->mup_zero_query); lua_setfield(L, -2, "zero_query");
    }
}

static int m_config(lua_State *L)
{
    knL_push_config(L, kn_gpt_get_config(knL_check_model(L, 1)->g));
    return 1;
}

/* m:losses() -> a [B,T] copy of the last forward's per-token cross-entropy. A copy, not a
 * view: the activation arena is reallocated when a later forward needs a larger batch. */
static int m_losses(lua_State *L)
{
    knL_Model *m = knL_check_model(L, 1);
    if (!m->has_forward) return luaL_error(L, "losses: no forward pass yet");
    int64_t shape[2] = {m->B, m->T};
    kn_tensor *t = knL_push_tensor(L, 2, shape);
    memcpy(t->data, kn_gpt_token_losses(m->g), sizeof(float) * (size_t)m->B * (size_t)m->T);
    return 1;
}

/* m:add_position_losses(acc) : acc[t] += sum over rows of the last forward's CE[b,t]. For
 * per-position evaluation without a Lua loop over tokens. Returns the number of rows. */
static int m_add_position_losses(lua_State *L)
{
    knL_Model *m = knL_check_model(L, 1);
    kn_tensor *acc = knL_check_tensor(L, 2);
    if (!m->has_forward) return luaL_error(L, "add_position_losses: no forward pass yet");
    if (acc->ndim != 1 || acc->shape[0] != m->T || !kn_tensor_is_contiguous(acc))
        return luaL_error(L, "add_position_losses: expected a contiguous tensor of %d values", m->T);
    const float *ce = kn_gpt_token_losses(m->g);
    for (int b = 0; b < m->B; b++)
        for (int t = 0; t < m->T; t++) acc->data[t] += ce[(size_t)b * m->T + t];
    lua_pushinteger(L, m->B);
    return 1;
}

/* m:reserve(B, T): size activations now (otherwise the first forward does). */
static int m_reserve(lua_State *L)
{
    knL_Model *m = knL_check_model(L, 1);
    lua_Integer B = luaL_checkinteger(L, 2), T = luaL_checkinteger(L, 3);
    luaL_argcheck(L, B >= 1 && B <= 1 << 20, 2, "batch size out of range");
    luaL_argcheck(L, T >= 1 && T <= 1 << 20, 3, "context length out of range");
    KNL_TRY(L, kn_gpt_reserve(m->g, (int)B, (int)T));
    return 0;
}

static int m_memory(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)kn_gpt_memory_bytes(knL_check_model(L, 1)->g));
    return 1;
}

/* m:init(seed): re-initialise every parameter as a fresh model with that seed would. */
static int m_init(lua_State *L)
{
    knL_Model *m = knL_check_model(L, 1);
    kn_rng r;
    kn_rng_seed(&r, (uint64_t)luaL_checkinteger(L, 2));
    kn_gpt_init(m->g, &r);
    return 0;
}

static int m_gc(lua_State *L)
{
    knL_Model *m = luaL_checkudata(L, 1, MODEL_MT);
    if (m->g) kn_gpt_free(m->g);
    m->g = NULL;
    return 0;
}

static int m_tostring(lua_State *L)
{
    knL_Model *m = luaL_checkudata(L, 1, MODEL_MT);
    if (!m->g) { lua_pushstring(L, "kiln.Model (closed)"); return 1; }
    const kn_gpt_config *c = kn_gpt_get_config(m->g);
    lua_pushfstring(L, "kiln.Model(n_layer=%d, n_head=%d, n_embd=%d, block_size=%d, vocab_size=%d; %d params)",
                    c->n_layer, c->n_head, c->n_embd, c->block_size, c->vocab_size, (int)kn_gpt_num_params(m->g));
    return 1;
}

static const luaL_Reg model_methods[] = {
    {"forward", m_forward}, {"backward", m_backward}, {"zero_grad", m_zero_grad},
    {"param", m_param}, {"grad", m_grad}, {"flat_params", m_flat_params},
    {"flat_grads", m_flat_grads}, {"params", m_params}, {"num_params", m_num_params},
    {"config", m_config}, {"losses", m_losses}, {"add_position_losses", m_add_position_losses},
    {"reserve", m_reserve}, {"memory_bytes", m_memory}, {"init", m_init}, {"close", m_gc},
    {NULL, NULL}
};
static const luaL_Reg model_meta[] = {
    {"__gc", m_gc}, {"__close", m_gc}, {"__tostring", m_tostring}, {NULL, NULL}
};

void knL_open_model(lua_State *L)
{
    knL_new_class(L, MODEL_MT, model_methods, model_meta);
    knL_new_class(L, BATCH_MT, batch_methods, batch_meta);
    lua_pushcfunction(L, l_model);
    lua_setfield(L, -2, "model");
    lua_pushcfunction(L, l_batch);
    lua_setfield(L, -2, "batch");
}
