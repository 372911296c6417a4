/* l_model.c — kiln.Model: the GPT of core/gpt.h. The handle holds one reference to the
 * model and nothing else: what the last forward was is asked of the core every time. */
#include "binding.h"

#include <stdlib.h>
#include <string.h>

/* ---- Model ------------------------------------------------------------------------ */

static void release_model(void *obj) { kn_gpt_free(obj); }

static void describe_model(lua_State *L, void *obj)
{
    const kn_gpt_config *c = kn_gpt_get_config(obj);
    lua_pushfstring(L, "kiln.Model(n_layer=%d, n_head=%d, n_embd=%d, block_size=%d, vocab_size=%d; %I params)",
                    c->n_layer, c->n_head, c->n_embd, c->block_size, c->vocab_size,
                    (lua_Integer)kn_gpt_num_params(obj));
}

const knL_type knL_model_type = {"kiln.Model", release_model, describe_model};

kn_gpt *knL_check_model(lua_State *L, int arg)
{
    return knL_handle_check(L, arg, &knL_model_type);
}

knL_handle *knL_push_model_handle(lua_State *L)
{
    return knL_handle_new(L, &knL_model_type, 0);
}

void knL_model_opened(lua_State *L, knL_handle *h, kn_gpt *g)
{
    h->obj = g;
    /* Tell the collector about the arenas it cannot see, so loops that build models do
     * not need collectgarbage(). */
    size_t kb = kn_gpt_memory_bytes(g) / 1024;
    lua_gc(L, LUA_GCSTEP, (int)(kb > 1 << 20 ? 1 << 20 : kb));
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
    if (v < -2147483647 || v > 2147483647) luaL_error(L, "model config: '%s' = %I is out of range", k, v);
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
    knL_handle *h = knL_push_model_handle(L);
    kn_gpt *g;
    KNL_TRY(L, kn_gpt_new(&g, &c));
    kn_rng r;
    kn_rng_seed(&r, (uint64_t)seed);
    kn_gpt_init(g, &r);
    knL_model_opened(L, h, g);
    return 1;
}

/* Weights from arg: nil, a tensor of T floats, or a Lua array of T numbers. An array is
 * copied into a temporary userdata (collected with the call's garbage): training loops pass
 * a tensor, which costs no allocation. */
static const float *check_weights(lua_State *L, int arg, int T)
{
    if (lua_isnoneornil(L, arg)) return NULL;
    if (lua_istable(L, arg)) {
        lua_Integer n = luaL_len(L, arg);
        if (n != T)
            luaL_argerror(L, arg, lua_pushfstring(L, "expected %d weights (one per position), got %I", T, n));
        float *w = lua_newuserdatauv(L, sizeof(float) * (size_t)T, 0);
        for (int i = 0; i < T; i++) {
            lua_rawgeti(L, arg, i + 1);
            int isnum;
            w[i] = (float)lua_tonumberx(L, -1, &isnum);
            if (!isnum)
                luaL_argerror(L, arg, lua_pushfstring(L, "weight %d is %s, expected a number", i + 1,
                                                      luaL_typename(L, -1)));
            lua_pop(L, 1);
        }
        return w;
    }
    kn_tensor *w = knL_check_tensor(L, arg);
    if (w->ndim != 1 || w->shape[0] != T || !kn_tensor_is_contiguous(w))
        luaL_argerror(L, arg, lua_pushfstring(L, "expected a contiguous weight tensor of %d values (one per position), got %s of %I",
                                              T, w->ndim == 1 ? "a vector" : "a tensor", (lua_Integer)kn_tensor_numel(w)));
    return w->data;
}

/* m:forward(batch [, weights [, normalize]]) -> mean (weighted) loss over the batch's rows. */
/* The arguments both forwards take: (batch [, weights [, normalize]]) -> loss. */
typedef kn_status (*forward_fn)(kn_gpt *, const int32_t *, const int32_t *, int, int, const float *,
                                bool, float *);

static int run_forward(lua_State *L, forward_fn fn)
{
    kn_gpt *g = knL_check_model(L, 1);
    knL_batch *b = knL_check_batch(L, 2);
    if (b->rows < 1) luaL_argerror(L, 2, "batch has no rows filled");
    const float *w = check_weights(L, 3, b->T);
    bool normalize = lua_toboolean(L, 4);
    float loss = 0;
    KNL_TRY(L, fn(g, b->inputs, b->targets, b->rows, b->T, w, normalize, &loss));
    lua_pushnumber(L, loss);
    return 1;
}

static int m_forward(lua_State *L) { return run_forward(L, kn_gpt_forward); }

/* m:evaluate(batch [, weights [, normalize]]) -> loss: the forward for evaluation, with no
 * gradient work and no backward buffers (a backward after it is refused). */
static int m_evaluate(lua_State *L) { return run_forward(L, kn_gpt_evaluate); }

/* m:backward([grad_scale]) adds the last forward's gradient (times grad_scale) into grads;
 * the core refuses when there is no forward to differentiate. */
static int m_backward(lua_State *L)
{
    kn_gpt *g = knL_check_model(L, 1);
    float scale = (float)luaL_optnumber(L, 2, 1.0);
    KNL_TRY(L, kn_gpt_backward(g, scale));
    return 0;
}

static int m_zero_grad(lua_State *L)
{
    kn_gpt_zero_grad(knL_check_model(L, 1));
    return 0;
}

static int find_param(lua_State *L, kn_gpt *g, int arg)
{
    const char *name = luaL_checkstring(L, arg);
    int i = kn_gpt_find(g, name);
    if (i < 0) {
        /* Allow the short form without the "transformer." prefix. */
        char full[128];
        snprintf(full, sizeof full, "transformer.%s", name);
        i = kn_gpt_find(g, full);
    }
    if (i < 0) luaL_argerror(L, arg, lua_pushfstring(L, "no parameter named '%s' (see model:params())", name));
    return i;
}

static void *retain_model(void *g) { return kn_gpt_retain(g); }

/* A view of the flat buffer base (parameters or gradients) holding the model. */
static void push_model_view(lua_State *L, kn_gpt *g, float *base, size_t offset, int ndim,
                            const int64_t *shape)
{
    knL_push_borrowed(L, base, kn_gpt_num_params(g), g, retain_model, release_model, offset, ndim, shape);
}

static int param_view(lua_State *L, bool grads)
{
    kn_gpt *g = knL_check_model(L, 1);
    const kn_param_info *p = kn_gpt_param_info(g, find_param(L, g, 2));
    push_model_view(L, g, grads ? kn_gpt_grads(g) : kn_gpt_params(g), p->offset, p->ndim, p->shape);
    return 1;
}

static int m_param(lua_State *L) { return param_view(L, false); }
static int m_grad(lua_State *L) { return param_view(L, true); }

static int flat_view(lua_State *L, bool grads)
{
    kn_gpt *g = knL_check_model(L, 1);
    int64_t n = (int64_t)kn_gpt_num_params(g);
    push_model_view(L, g, grads ? kn_gpt_grads(g) : kn_gpt_params(g), 0, 1, &n);
    return 1;
}
static int m_flat_params(lua_State *L) { return flat_view(L, false); }
static int m_flat_grads(lua_State *L) { return flat_view(L, true); }

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
    kn_gpt *g = knL_check_model(L, 1);
    int n = kn_gpt_num_tensors(g);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        const kn_param_info *p = kn_gpt_param_info(g, i);
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
    kn_gpt *g = knL_check_model(L, 1);
    /* The flat buffer pads tensors for alignment: count the tensors' own elements. */
    lua_Integer n = 0;
    for (int i = 0; i < kn_gpt_num_tensors(g); i++) n += (lua_Integer)kn_gpt_param_info(g, i)->numel;
    lua_pushinteger(L, n);
    /* Without position embeddings: the N of the 6·N FLOPs rule. */
    const kn_gpt_config *c = kn_gpt_get_config(g);
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
    knL_push_config(L, kn_gpt_get_config(knL_check_model(L, 1)));
    return 1;
}

/* The last forward's per-token cross-entropy [B,T], asked of the core each time: a reserve
 * or a failed forward since then leaves none (an error, not a read of freed memory). */
static const float *last_losses(lua_State *L, kn_gpt *g, const char *what, int *B, int *T)
{
    const float *ce = kn_gpt_last_forward(g, B, T) ? kn_gpt_token_losses(g) : NULL;
    if (!ce)
        luaL_error(L, "%s: no per-token losses (no forward with targets since the model was "
                   "made or its activations were reserved again)", what);
    return ce;
}

/* m:losses() -> a [B,T] copy of the last forward's per-token cross-entropy. A copy, not a
 * view: the activation arena is reallocated when a later forward needs a larger batch. */
static int m_losses(lua_State *L)
{
    kn_gpt *g = knL_check_model(L, 1);
    int B, T;
    const float *ce = last_losses(L, g, "losses", &B, &T);
    int64_t shape[2] = {B, T};
    kn_tensor *t = knL_push_tensor(L, 2, shape);
    memcpy(t->data, ce, sizeof(float) * (size_t)B * (size_t)T);
    return 1;
}

/* m:add_position_losses(acc) : acc[t] += sum over rows of the last forward's CE[b,t]. For
 * per-position evaluation without a Lua loop over tokens. Returns the number of rows. */
static int m_add_position_losses(lua_State *L)
{
    kn_gpt *g = knL_check_model(L, 1);
    kn_tensor *acc = knL_check_tensor(L, 2);
    int B, T;
    const float *ce = last_losses(L, g, "add_position_losses", &B, &T);
    if (acc->ndim != 1 || acc->shape[0] != T || !kn_tensor_is_contiguous(acc))
        return luaL_argerror(L, 2, lua_pushfstring(L, "expected a contiguous tensor of %d values", T));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) acc->data[t] += ce[(size_t)b * T + t];
    lua_pushinteger(L, B);
    return 1;
}

/* A contiguous 1-D tensor of at least n values at argument arg, or an argument error. */
static kn_tensor *check_vector(lua_State *L, int arg, int64_t n, const char *what)
{
    kn_tensor *v = knL_check_tensor(L, arg);
    if (v->ndim != 1 || v->shape[0] < n || !kn_tensor_is_contiguous(v))
        luaL_argerror(L, arg, lua_pushfstring(L, "%s: expected a contiguous vector of at least %I values",
                                              what, (lua_Integer)n));
    return v;
}

/* m:add_loss_stats(sum, sumsq [, window_means, first]) : for the last forward's CE[b,t],
 * sum[t] += sum_b CE[b,t] and sumsq[t] += sum_b CE[b,t]^2 (each batch summed in double
 * first), and window_means[first + b] = mean_t CE[b,t] (first is 1-based). What an
 * evaluation needs for standard errors per position and over windows, without a Lua loop
 * over tokens. Returns the number of rows. */
static int m_add_loss_stats(lua_State *L)
{
    kn_gpt *g = knL_check_model(L, 1);
    int B, T;
    const float *ce = last_losses(L, g, "add_loss_stats", &B, &T);
    kn_tensor *sum = check_vector(L, 2, T, "sum");
    kn_tensor *sumsq = check_vector(L, 3, T, "sumsq");
    if (sum->shape[0] != T) return luaL_argerror(L, 2, lua_pushfstring(L, "sum: expected %d values", T));
    if (sumsq->shape[0] != T) return luaL_argerror(L, 3, lua_pushfstring(L, "sumsq: expected %d values", T));
    if (!lua_isnoneornil(L, 4)) {
        kn_tensor *means = check_vector(L, 4, B, "window_means");
        lua_Integer first = luaL_checkinteger(L, 5);
        /* Checked before any arithmetic on it: a huge first must not overflow. */
        luaL_argcheck(L, first >= 1 && first <= means->shape[0] - B + 1, 5,
                      "window_means has no room for the batch's rows at that index");
        for (int b = 0; b < B; b++) {
            double s = 0;
            for (int t = 0; t < T; t++) s += ce[(size_t)b * T + t];
            means->data[first - 1 + b] = (float)(s / T);
        }
    }
    for (int t = 0; t < T; t++) {
        double s = 0, s2 = 0;
        for (int b = 0; b < B; b++) {
            double x = ce[(size_t)b * T + t];
            s += x;
            s2 += x * x;
        }
        sum->data[t] += (float)s;
        sumsq->data[t] += (float)s2;
    }
    lua_pushinteger(L, B);
    return 1;
}

/* m:reserve(B, T): size activations now (otherwise the first forward does). */
static int m_reserve(lua_State *L)
{
    kn_gpt *g = knL_check_model(L, 1);
    lua_Integer B = luaL_checkinteger(L, 2), T = luaL_checkinteger(L, 3);
    luaL_argcheck(L, B >= 1 && B <= 1 << 20, 2, "batch size out of range");
    luaL_argcheck(L, T >= 1 && T <= 1 << 20, 3, "context length out of range");
    KNL_TRY(L, kn_gpt_reserve(g, (int)B, (int)T));
    return 0;
}

static int m_memory(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)kn_gpt_memory_bytes(knL_check_model(L, 1)));
    return 1;
}

/* m:init(seed): re-initialise every parameter as a fresh model with that seed would. */
static int m_init(lua_State *L)
{
    kn_gpt *g = knL_check_model(L, 1);
    kn_rng r;
    kn_rng_seed(&r, (uint64_t)luaL_checkinteger(L, 2));
    kn_gpt_init(g, &r);
    return 0;
}

static const luaL_Reg model_methods[] = {
    {"forward", m_forward}, {"evaluate", m_evaluate}, {"backward", m_backward}, {"zero_grad", m_zero_grad},
    {"param", m_param}, {"grad", m_grad}, {"flat_params", m_flat_params},
    {"flat_grads", m_flat_grads}, {"params", m_params}, {"num_params", m_num_params},
    {"config", m_config}, {"losses", m_losses}, {"add_position_losses", m_add_position_losses},
    {"add_loss_stats", m_add_loss_stats},
    {"reserve", m_reserve}, {"memory_bytes", m_memory}, {"init", m_init},
    {NULL, NULL}
};

void knL_open_model(lua_State *L)
{
    knL_handle_class(L, &knL_model_type, model_methods, NULL);
    lua_pushcfunction(L, l_model);
    lua_setfield(L, -2, "model");
}
