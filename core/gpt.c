/* gpt.c — the GPT-2 model of docs/design.md §3.1 on top of kernels.c. Parameters and gradients are
 * two flat buffers laid out in nanoGPT state_dict order; activations are one arena sized by
 * kn_gpt_reserve and reused by every step (nothing is allocated in forward/backward unless
 * the batch outgrows the arena). */
#include "gpt.h"
#include "gemm.h"
#include "kernels.h"
#include "pool.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per-layer tensors, in state_dict order. */
enum {
    LN1_W, LN1_B, ATTN_W, ATTN_B, APROJ_W, APROJ_B, LN2_W, LN2_B, FC_W, FC_B, MPROJ_W, MPROJ_B,
    PER_LAYER
};
#define T_WTE 0
#define T_WPE 1
#define T_LAYER(l, f) (2 + (l) * PER_LAYER + (f))

typedef struct {
    float *x;                /* [N,d] input of the block (x of layer L is the final stream) */
    float *ln1m, *ln1r, *qkv, *lse, *atty, *xmid, *ln2m, *ln2r, *fch;
} layer_acts;

struct kn_gpt {
    int refs;                /* references: the creator's, optimizers', views' storages */
    kn_gpt_config cfg;
    int ntensors;
    kn_param_info *info;
    size_t nparams;
    float *params, *grads;

    /* activations: capacity B·T rows, T <= capT; an evaluation-only arena keeps one layer */
    int capB, capT, chunk;
    bool cap_training;
    float *arena;
    size_t arena_floats;
    layer_acts *L;           /* n_layer + 1 entries (the last has only x) */
    float *ln;               /* [N,d] a LayerNorm's output, used at once (recomputed in backward) */
    float *lnf, *lnfm, *lnfr, *logits, *losses;
    float *dlnf, *dwte;      /* the output layer's gradient, computed during the forward */
    float *dres, *dtmp, *dqkv, *dfc;
    int32_t *tokens, *targets;
    float *weights;          /* [block_size], copy of the last forward's weights */
    float *scratch;          /* fused attention, per thread */
    int scratch_threads;

    /* the last forward */
    int B, T;
    bool have_fwd, have_targets, have_grad_state, have_weights, normalize;
};

/* ---------------------------------------------------------------- config, parameters */

const char *kn_gpt_activation_name(kn_activation a)
{
    return a == KN_GELU_ERF ? "gelu" : "gelu_tanh";
}

bool kn_gpt_activation_parse(const char *name, kn_activation *out)
{
    if (name && strcmp(name, "gelu_tanh") == 0) { *out = KN_GELU_TANH; return true; }
    if (name && strcmp(name, "gelu") == 0) { *out = KN_GELU_ERF; return true; }
    return false;
}

kn_status kn_gpt_config_check(const kn_gpt_config *c)
{
    if (!c) return kn_fail(KN_ERR_ARG, "gpt config is NULL");
    if (c->vocab_size < 1 || c->vocab_size > (1 << 24))
        return kn_fail(KN_ERR_ARG, "vocab_size (%d) must be in [1, %d]", c->vocab_size, 1 << 24);
    if (c->block_size < 1 || c->block_size > (1 << 16))
        return kn_fail(KN_ERR_ARG, "block_size (%d) must be in [1, %d]", c->block_size, 1 << 16);
    if (c->n_layer < 1 || c->n_layer > 1024)
        return kn_fail(KN_ERR_ARG, "n_layer (%d) must be in [1, 1024]", c->n_layer);
    if (c->n_head < 1 || c->n_head > 4096)
        return kn_fail(KN_ERR_ARG, "n_head (%d) must be in [1, 4096]", c->n_head);
    if (c->n_embd < 1 || c->n_embd > (1 << 16))
        return kn_fail(KN_ERR_ARG, "n_embd (%d) must be in [1, %d]", c->n_embd, 1 << 16);
    if (c->n_embd % c->n_head != 0)
        return kn_fail(KN_ERR_ARG, "n_embd (%d) must be divisible by n_head (%d)", c->n_embd,
                       c->n_head);
    if (c->mup != 0 && c->mup != 1) return kn_fail(KN_ERR_ARG, "mup (%d) must be 0 or 1", c->mup);
    if (c->activation != KN_GELU_TANH && c->activation != KN_GELU_ERF)
        return kn_fail(KN_ERR_ARG, "activation (%d) must be KN_GELU_TANH (0) or KN_GELU_ERF (1)",
                       (int)c->activation);
    if (c->mup_zero_query != 0 && c->mup_zero_query != 1)
        return kn_fail(KN_ERR_ARG, "mup_zero_query (%d) must be 0 or 1", c->mup_zero_query);
    if (c->mup) {
        const struct { const char *name; float v; } f[] = {
            {"mup_base_width", c->mup_base_width}, {"mup_output_mult", c->mup_output_mult},
            {"mup_attn_mult", c->mup_attn_mult}};
        for (int i = 0; i < 3; i++)
            if (!(isfinite(f[i].v) && f[i].v > 0.0f))
                return kn_fail(KN_ERR_ARG, "%s (%g) must be a finite number > 0 under mup",
                               f[i].name, (double)f[i].v);
    } else if (c->mup_base_width != 0.0f || c->mup_output_mult != 0.0f ||
               c->mup_attn_mult != 0.0f || c->mup_zero_query) {
        return kn_fail(KN_ERR_ARG, "mup_base_width, mup_output_mult, mup_attn_mult and "
                                   "mup_zero_query must be 0 unless mup = 1");
    }
    return KN_OK;
}

static void add_tensor(kn_param_info *info, int *i, size_t *off, const char *name, int ndim,
                       int64_t d0, int64_t d1, kn_param_kind kind, int layer)
{
    kn_param_info *p = &info[(*i)++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = ndim == 2 ? d1 : 0;
    p->numel = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
    p->offset = *off;
    p->kind = kind;
    p->layer = layer;
    /* keep every tensor 64-byte aligned inside the flat buffer */
    *off += (p->numel + 15) & ~(size_t)15;
}

int kn_gpt_config_num_tensors(const kn_gpt_config *c) { return 2 + PER_LAYER * c->n_layer + 2; }

size_t kn_gpt_config_layout(const kn_gpt_config *c, kn_param_info *info)
{
    int i = 0, L = c->n_layer, d = c->n_embd;
    size_t off = 0;
    char name[64];
    add_tensor(info, &i, &off, "transformer.wte.weight", 2, c->vocab_size, d, KN_PARAM_EMBEDDING, -1);
    add_tensor(info, &i, &off, "transformer.wpe.weight", 2, c->block_size, d, KN_PARAM_EMBEDDING, -1);
    static const struct { const char *suffix; int ndim, out, in; kn_param_kind kind; } F[PER_LAYER] = {
        {"ln_1.weight", 1, 1, 0, KN_PARAM_NORM},        {"ln_1.bias", 1, 1, 0, KN_PARAM_BIAS},
        {"attn.c_attn.weight", 2, 3, 1, KN_PARAM_MATRIX}, {"attn.c_attn.bias", 1, 3, 0, KN_PARAM_BIAS},
        {"attn.c_proj.weight", 2, 1, 1, KN_PARAM_MATRIX}, {"attn.c_proj.bias", 1, 1, 0, KN_PARAM_BIAS},
        {"ln_2.weight", 1, 1, 0, KN_PARAM_NORM},        {"ln_2.bias", 1, 1, 0, KN_PARAM_BIAS},
        {"mlp.c_fc.weight", 2, 4, 1, KN_PARAM_MATRIX},  {"mlp.c_fc.bias", 1, 4, 0, KN_PARAM_BIAS},
        {"mlp.c_proj.weight", 2, 1, 4, KN_PARAM_MATRIX}, {"mlp.c_proj.bias", 1, 1, 0, KN_PARAM_BIAS},
    };
    for (int l = 0; l < L; l++)
        for (int f = 0; f < PER_LAYER; f++) {
            snprintf(name, sizeof name, "transformer.h.%d.%s", l, F[f].suffix);
            add_tensor(info, &i, &off, name, F[f].ndim, (int64_t)F[f].out * d,
                       (int64_t)F[f].in * d, F[f].kind, l);
        }
    add_tensor(info, &i, &off, "transformer.ln_f.weight", 1, d, 0, KN_PARAM_NORM, -1);
    add_tensor(info, &i, &off, "transformer.ln_f.bias", 1, d, 0, KN_PARAM_BIAS, -1);
    return off;
}

kn_status kn_gpt_new(kn_gpt **out, const kn_gpt_config *c)
{
    *out = NULL;
    kn_status st = kn_gpt_config_check(c);
    if (st) return st;
    kn_gpt *g = calloc(1, sizeof *g);
    if (!g) return kn_fail(KN_ERR_NOMEM, "out of memory allocating a gpt");
    g->refs = 1;
    g->cfg = *c;
    g->ntensors = kn_gpt_config_num_tensors(c);
    g->info = calloc((size_t)g->ntensors, sizeof *g->info);
    g->weights = kn_alloc(sizeof(float) * (size_t)c->block_size);
    if (!g->info || !g->weights) {
        kn_gpt_free(g);
        return kn_fail(KN_ERR_NOMEM, "out of memory allocating a gpt");
    }
    size_t off = kn_gpt_config_layout(c, g->info);
    g->nparams = off;
    g->params = kn_alloc(sizeof(float) * off);
    g->grads = kn_alloc(sizeof(float) * off);
    if (!g->params || !g->grads) {
        kn_gpt_free(g);
        return kn_fail(KN_ERR_NOMEM, "out of memory allocating %zu parameters", off);
    }
    *out = g;
    return KN_OK;
}

kn_gpt *kn_gpt_retain(kn_gpt *g)
{
    if (g) g->refs++;
    return g;
}

static void free_acts(kn_gpt *g)
{
    kn_free(g->arena);
    kn_free(g->scratch);
    free(g->L);
    g->arena = g->scratch = NULL;
    g->L = NULL;
    g->arena_floats = 0;
    g->capB = g->capT = g->scratch_threads = g->chunk = 0;
    g->have_fwd = false;
}

void kn_gpt_free(kn_gpt *g)
{
    if (!g || --g->refs > 0) return;
    free_acts(g);
    kn_free(g->params);
    kn_free(g->grads);
    kn_free(g->weights);
    free(g->info);
    free(g);
}

const kn_gpt_config *kn_gpt_get_config(const kn_gpt *g) { return &g->cfg; }
size_t kn_gpt_num_params(const kn_gpt *g) { return g->nparams; }
float *kn_gpt_params(kn_gpt *g) { return g->params; }
float *kn_gpt_grads(kn_gpt *g) { return g->grads; }
int kn_gpt_num_tensors(const kn_gpt *g) { return g->ntensors; }

const kn_param_info *kn_gpt_param_info(const kn_gpt *g, int i)
{
    return i >= 0 && i < g->ntensors ? &g->info[i] : NULL;
}

int kn_gpt_find(const kn_gpt *g, const char *name)
{
    for (int i = 0; i < g->ntensors; i++)
        if (strcmp(g->info[i].name, name) == 0) return i;
    return -1;
}

double kn_gpt_width_mult(const kn_gpt *g)
{
    return g->cfg.mup ? (double)g->cfg.n_embd / (double)g->cfg.mup_base_width : 1.0;
}

double kn_gpt_init_std(const kn_gpt *g, int i)
{
    const kn_param_info *p = kn_gpt_param_info(g, i);
    if (!p || p->kind == KN_PARAM_BIAS || p->kind == KN_PARAM_NORM) return 0.0;
    double std = 0.02;
    if (strstr(p->name, ".c_proj.weight")) std /= sqrt(2.0 * g->cfg.n_layer);
    /* μP: hidden (width x width) matrices have variance ∝ 1/fan_in, equal to SP's at the base
     * width; embeddings (and so the tied readout) keep a width-independent std. */
    if (p->kind == KN_PARAM_MATRIX) std /= sqrt(kn_gpt_width_mult(g));
    return std;
}

void kn_gpt_init(kn_gpt *g, kn_rng *r)
{
    memset(g->params, 0, sizeof(float) * g->nparams);
    for (int i = 0; i < g->ntensors; i++) {
        const kn_param_info *p = &g->info[i];
        float *w = g->params + p->offset;
        if (p->kind == KN_PARAM_BIAS) continue;             /* zeros */
        if (p->kind == KN_PARAM_NORM) {
            for (size_t j = 0; j < p->numel; j++) w[j] = 1.0f;
            continue;
        }
        float std = (float)kn_gpt_init_std(g, i);
        for (size_t j = 0; j < p->numel; j++) w[j] = (float)(kn_rng_normal(r) * std);
        /* drawn first, then zeroed: k and v get the same draws as without the option */
        if (g->cfg.mup_zero_query && strstr(p->name, ".attn.c_attn.weight"))
            memset(w, 0, sizeof(float) * (size_t)g->cfg.n_embd * (size_t)g->cfg.n_embd);
    }
}

/* μP's attention scale attn_mult/d_head, applied by pre-multiplying the query third of qkv
 * (rows N, stride 3d) by attn_mult/√d_head, since the kernel divides by √d_head itself. */
static float mup_query_factor(const kn_gpt_config *c)
{
    return c->mup ? c->mup_attn_mult / sqrtf((float)(c->n_embd / c->n_head)) : 1.0f;
}

static void scale_query(float *qkv, int N, int d, float a)
{
    for (size_t r = 0; r < (size_t)N; r++) {
        float *q = qkv + r * 3 * (size_t)d;
        for (int j = 0; j < d; j++) q[j] *= a;
    }
}

/* μP's readout multiplier output_mult/width_mult on the tied head's logits (1 under SP). */
static float logit_mult(const kn_gpt *g)
{
    return g->cfg.mup ? (float)(g->cfg.mup_output_mult / kn_gpt_width_mult(g)) : 1.0f;
}

static float *P(kn_gpt *g, int t) { return g->params + g->info[t].offset; }
static float *G(kn_gpt *g, int t) { return g->grads + g->info[t].offset; }

/* ---------------------------------------------------------------- activations */

#define R16(n) (((n) + 15) & ~(size_t)15)   /* every piece starts 64-byte aligned */

/* The arena, piece by piece, in the order it is carved. Training keeps what the backward
 * reads of every layer (the LayerNorm and GELU outputs are recomputed from their inputs and
 * kept statistics instead, which costs elementwise passes only) plus the backward's buffers; an evaluation keeps one layer's activations and two residual
 * streams. Nothing is T² or N·V: attention keeps a log-sum-exp per row and head, the output
 * layer a chunk of logits. */
static size_t arena_floats(const kn_gpt_config *c, size_t B, size_t T, size_t chunk,
                           bool training)
{
    size_t N = B * T, d = (size_t)c->n_embd, V = (size_t)c->vocab_size, H = (size_t)c->n_head;
    size_t layer = R16(N * d) * 2 + R16(N) * 4 + R16(N * 3 * d) + R16(N * H) + R16(N * 4 * d);
    size_t stream = R16(N * d);                             /* x of a layer */
    size_t top = R16(N * d) * 2 + R16(N) * 3 + R16(chunk * V) /* ln, lnf, lnf stats, losses, logits */
               + R16(N) * 2;                                /* tokens, targets */
    if (!training) return layer + 2 * stream + top;
    size_t grads = R16(N * d) + R16(V * d)                  /* d(lnf), d(wte) of the output layer */
                 + R16(N * d) * 2 + R16(N * 3 * d) + R16(N * 4 * d);   /* dres, dtmp, dqkv, dfc */
    return (size_t)c->n_layer * (layer + stream) + stream + top + grads;
}

size_t kn_gpt_arena_bytes(const kn_gpt_config *c, int B, int T, int chunk, int threads,
                          bool training)
{
    size_t scratch = kn_attention_scratch_floats(T, c->n_embd / c->n_head, threads);
    return sizeof(float) * (arena_floats(c, (size_t)B, (size_t)T, (size_t)chunk, training) +
                            scratch);
}

static kn_status ensure_scratch(kn_gpt *g)
{
    int nt = kn_pool_threads();
    if (g->scratch && nt <= g->scratch_threads) return KN_OK;
    kn_free(g->scratch);
    int hs = g->cfg.n_embd / g->cfg.n_head;
    g->scratch = kn_alloc(sizeof(float) * kn_attention_scratch_floats(g->capT, hs, nt));
    g->scratch_threads = g->scratch ? nt : 0;
    return g->scratch ? KN_OK : KN_ERR_NOMEM;
}

/* Point the layer views into the arena, in the order arena_floats counts them. */
static void carve(kn_gpt *g, size_t B, size_t T, bool training)
{
    const kn_gpt_config *c = &g->cfg;
    size_t N = B * T, d = (size_t)c->n_embd, V = (size_t)c->vocab_size, H = (size_t)c->n_head;
    size_t Lc = (size_t)c->n_layer;
    float *p = g->arena;
#define TAKE(n) (p += R16(n), p - R16(n))
    for (size_t l = 0; l < (training ? Lc : 1); l++) {
        layer_acts *a = &g->L[l];
        a->ln1m = TAKE(N);
        a->ln1r = TAKE(N);
        a->qkv = TAKE(N * 3 * d);
        a->lse = TAKE(N * H);
        a->atty = TAKE(N * d);
        a->xmid = TAKE(N * d);
        a->ln2m = TAKE(N);
        a->ln2r = TAKE(N);
        a->fch = TAKE(N * 4 * d);
    }
    if (training) {
        for (size_t l = 0; l <= Lc; l++) g->L[l].x = TAKE(N * d);
    } else {
        /* every layer shares the one set of activations; the stream alternates two buffers */
        float *xs[2] = {TAKE(N * d), TAKE(N * d)};
        for (size_t l = 0; l <= Lc; l++) {
            float *x = xs[l % 2];
            g->L[l] = g->L[0];
            g->L[l].x = x;
        }
    }
    g->ln = TAKE(N * d);
    g->lnf = TAKE(N * d);
    g->lnfm = TAKE(N);
    g->lnfr = TAKE(N);
    g->losses = TAKE(N);
    g->logits = TAKE((size_t)g->chunk * V);
    g->tokens = (int32_t *)TAKE(N);
    g->targets = (int32_t *)TAKE(N);
    g->dlnf = g->dwte = g->dres = g->dtmp = g->dqkv = g->dfc = NULL;
    if (training) {
        g->dlnf = TAKE(N * d);
        g->dwte = TAKE(V * d);
        g->dres = TAKE(N * d);
        g->dtmp = TAKE(N * d);
        g->dqkv = TAKE(N * 3 * d);
        g->dfc = TAKE(N * 4 * d);
    }
#undef TAKE
}

static kn_status reserve(kn_gpt *g, int B, int T, bool training)
{
    const kn_gpt_config *c = &g->cfg;
    if (B < 1) return kn_fail(KN_ERR_ARG, "batch size B (%d) must be >= 1", B);
    if (T < 1 || T > c->block_size)
        return kn_fail(KN_ERR_ARG, "T (%d) must be in [1, block_size = %d]", T, c->block_size);
    if ((int64_t)B * T > (1 << 26))
        return kn_fail(KN_ERR_ARG, "B·T (%d·%d) exceeds %d tokens per batch", B, T, 1 << 26);
    free_acts(g);
    g->chunk = kn_linear_xent_chunk(B * T, c->vocab_size);
    size_t total = arena_floats(c, (size_t)B, (size_t)T, (size_t)g->chunk, training);
    g->arena = kn_alloc(sizeof(float) * total);
    g->L = calloc((size_t)c->n_layer + 1, sizeof *g->L);
    if (!g->arena || !g->L) {
        free_acts(g);
        return kn_fail(KN_ERR_NOMEM, "out of memory reserving activations for B=%d, T=%d (%zu MiB)",
                       B, T, sizeof(float) * total >> 20);
    }
    g->arena_floats = total;
    g->capB = B;
    g->capT = T;
    g->cap_training = training;
    carve(g, (size_t)B, (size_t)T, training);
    if (ensure_scratch(g) != KN_OK) {
        free_acts(g);
        return kn_fail(KN_ERR_NOMEM, "out of memory reserving attention scratch");
    }
    /* kiln's GEMM keeps packing buffers per thread: allocated here, not in the first step. */
    if (kn_gemm_selected() == KN_GEMM_KILN && kn_gemm_reserve() != KN_OK) {
        free_acts(g);
        return KN_ERR_NOMEM;
    }
    return KN_OK;
}
#undef R16

kn_status kn_gpt_reserve(kn_gpt *g, int B, int T) { return reserve(g, B, T, true); }

/* ---------------------------------------------------------------- forward / backward */

static kn_status check_tokens(const int32_t *tok, const char *what, int B, int T, int V)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int32_t v = tok[(size_t)b * T + t];
            if (v < 0 || v >= V)
                return kn_fail(KN_ERR_ARG, "%s token %d at position [b=%d, t=%d] is outside [0, %d)",
                               what, (int)v, b, t, V);
        }
    return KN_OK;
}

static kn_status check_forward_args(const kn_gpt *g, const int32_t *inputs,
                                    const int32_t *targets, int B, int T, const float *weights,
                                    bool normalize)
{
    const kn_gpt_config *c = &g->cfg;
    if (!inputs) return kn_fail(KN_ERR_ARG, "inputs are NULL");
    if (B < 1) return kn_fail(KN_ERR_ARG, "batch size B (%d) must be >= 1", B);
    if (T < 1 || T > c->block_size)
        return kn_fail(KN_ERR_ARG, "sequence length T (%d) must be in [1, block_size = %d]", T,
                       c->block_size);
    if ((int64_t)B * T > (1 << 26))
        return kn_fail(KN_ERR_ARG, "B·T (%d·%d) exceeds %d tokens per batch", B, T, 1 << 26);
    kn_status st = check_tokens(inputs, "input", B, T, c->vocab_size);
    if (st) return st;
    if (targets && (st = check_tokens(targets, "target", B, T, c->vocab_size))) return st;
    if (weights) {
        double sw = 0.0;
        for (int t = 0; t < T; t++) {
            if (!isfinite(weights[t]))
                return kn_fail(KN_ERR_ARG, "loss weight at position %d is not finite (%g)", t,
                               (double)weights[t]);
            sw += weights[t];
        }
        if (normalize && sw == 0.0)
            return kn_fail(KN_ERR_ARG, "loss weights sum to 0: cannot normalize by their mean");
    }
    return KN_OK;
}

/* Make the arena hold B x T (reallocating outside the step only when it is too small, or
 * when a training forward finds an evaluation-only arena). */
static kn_status fit_arena(kn_gpt *g, int B, int T, bool training)
{
    bool fits = g->arena && (size_t)B * T <= (size_t)g->capB * g->capT && T <= g->capT &&
                (g->cap_training || !training);
    if (!fits) {
        int nb = B, nt = T > g->capT ? T : g->capT;
        if (g->arena && (size_t)g->capB * g->capT >= (size_t)B * T) nb = g->capB;
        kn_status st = reserve(g, nb, nt, training || g->cap_training);
        if (st) return st;
    }
    if (ensure_scratch(g) != KN_OK)
        return kn_fail(KN_ERR_NOMEM, "out of memory for attention scratch");
    return KN_OK;
}

/* The MLP's activation: GPT-2's tanh GELU or the exact erf form (nanoGPT's nn.GELU()). */
static void act_forward(const kn_gpt *g, float *y, const float *x, int64_t n)
{
    if (g->cfg.activation == KN_GELU_ERF) kn_gelu_erf_forward(y, x, n);
    else kn_gelu_forward(y, x, n);
}

static void act_backward(const kn_gpt *g, float *dx, const float *x, const float *dy, int64_t n)
{
    if (g->cfg.activation == KN_GELU_ERF) kn_gelu_erf_backward(dx, x, dy, n, false);
    else kn_gelu_backward(dx, x, dy, n, false);
}

static void block_forward(kn_gpt *g, int l, int B, int T)
{
    const kn_gpt_config *c = &g->cfg;
    int d = c->n_embd, H = c->n_head, N = B * T;
    float qa = mup_query_factor(c);
    layer_acts *a = &g->L[l];
    kn_layernorm_forward(g->ln, a->ln1m, a->ln1r, a->x, P(g, T_LAYER(l, LN1_W)),
                         P(g, T_LAYER(l, LN1_B)), N, d);
    kn_linear_forward(a->qkv, g->ln, P(g, T_LAYER(l, ATTN_W)), P(g, T_LAYER(l, ATTN_B)),
                      N, d, 3 * d, false);
    if (qa != 1.0f) scale_query(a->qkv, N, d, qa);
    kn_attention_forward(a->atty, a->lse, g->scratch, a->qkv, B, T, d, H);
    /* residual: xmid = x + atty·Wᵀ + b, by accumulating the projection onto a copy */
    memcpy(a->xmid, a->x, sizeof(float) * (size_t)N * d);
    kn_linear_forward(a->xmid, a->atty, P(g, T_LAYER(l, APROJ_W)), P(g, T_LAYER(l, APROJ_B)),
                      N, d, d, true);
    kn_layernorm_forward(g->ln, a->ln2m, a->ln2r, a->xmid, P(g, T_LAYER(l, LN2_W)),
                         P(g, T_LAYER(l, LN2_B)), N, d);
    kn_linear_forward(a->fch, g->ln, P(g, T_LAYER(l, FC_W)), P(g, T_LAYER(l, FC_B)),
                      N, d, 4 * d, false);
    /* The GELU output is needed only by the projection here: training puts it in the
     * backward's dfc buffer (free until then; the backward recomputes it), an evaluation
     * overwrites fch, which nothing reads again. */
    float *xo = g->L[l + 1].x, *gel = g->cap_training ? g->dfc : a->fch;
    act_forward(g, gel, a->fch, (int64_t)N * 4 * d);
    memcpy(xo, a->xmid, sizeof(float) * (size_t)N * d);
    kn_linear_forward(xo, gel, P(g, T_LAYER(l, MPROJ_W)), P(g, T_LAYER(l, MPROJ_B)),
                      N, 4 * d, d, true);
}

static kn_status forward(kn_gpt *g, const int32_t *inputs, const int32_t *targets, int B, int T,
                         const float *weights, bool normalize, float *loss_out, bool training)
{
    const kn_gpt_config *c = &g->cfg;
    kn_status st = check_forward_args(g, inputs, targets, B, T, weights, normalize);
    if (st) return st;
    /* from here on the previous forward's activations are overwritten */
    g->have_fwd = false;
    if ((st = fit_arena(g, B, T, training))) return st;

    int L = c->n_layer, d = c->n_embd, V = c->vocab_size, N = B * T;
    memcpy(g->tokens, inputs, sizeof(int32_t) * (size_t)N);
    kn_embedding_forward(g->L[0].x, g->tokens, P(g, T_WTE), P(g, T_WPE), B, T, d);
    for (int l = 0; l < L; l++) {
        if (kn_interrupted) return kn_fail(KN_ERR_INTERRUPTED, "interrupted in forward (layer %d)", l);
        block_forward(g, l, B, T);
    }
    int tf = T_LAYER(L, 0);
    kn_layernorm_forward(g->lnf, g->lnfm, g->lnfr, g->L[L].x, P(g, tf), P(g, tf + 1), N, d);

    g->B = B;
    g->T = T;
    g->have_targets = targets != NULL;
    g->have_grad_state = training && targets != NULL;
    g->have_weights = weights != NULL;
    g->normalize = normalize;
    if (weights) memcpy(g->weights, weights, sizeof(float) * (size_t)T);
    if (targets) {
        memcpy(g->targets, targets, sizeof(int32_t) * (size_t)N);
        /* the output layer's gradient (for dloss = 1) is computed here, chunk by chunk, so
         * that its logits never exist all at once */
        if (training) memset(g->dwte, 0, sizeof(float) * (size_t)V * d);
        float loss = kn_linear_xent(g->losses, training ? g->dlnf : NULL,
                                    training ? g->dwte : NULL, g->logits, g->lnf, P(g, T_WTE),
                                    g->targets, weights ? g->weights : NULL, B, T, d, V,
                                    normalize, logit_mult(g), 1.0f, g->chunk);
        if (loss_out) *loss_out = loss;
    }
    g->have_fwd = true;
    return KN_OK;
}

kn_status kn_gpt_forward(kn_gpt *g, const int32_t *inputs, const int32_t *targets, int B, int T,
                         const float *weights, bool normalize, float *loss_out)
{
    return forward(g, inputs, targets, B, T, weights, normalize, loss_out, true);
}

kn_status kn_gpt_evaluate(kn_gpt *g, const int32_t *inputs, const int32_t *targets, int B, int T,
                          const float *weights, bool normalize, float *loss_out)
{
    return forward(g, inputs, targets, B, T, weights, normalize, loss_out, false);
}

/* dst (+)= a·src over n floats (a = 1 copies exactly). */
static void add_scaled(float *dst, const float *src, size_t n, float a, bool acc)
{
    if (acc) for (size_t i = 0; i < n; i++) dst[i] += a * src[i];
    else for (size_t i = 0; i < n; i++) dst[i] = a * src[i];
}

/* The caller's hook and how far down the gradient buffer is final. */
typedef struct {
    kn_gpt_grads_ready fn;
    void *ctx;
    size_t final_from;       /* grads[final_from ..] are final and were reported */
} ready_hook;

/* Everything from tensor t's offset up is final now: report the part not reported yet. */
static kn_status final_from(const kn_gpt *g, ready_hook *h, int t)
{
    size_t at = g->info[t].offset;
    if (!h->fn || at >= h->final_from) return KN_OK;
    size_t count = h->final_from - at;
    h->final_from = at;
    return h->fn(h->ctx, at, count);
}

#define REPORT(g, h, t) do { kn_status st_ = final_from((g), (h), (t)); if (st_) return st_; } while (0)

/* A block's LayerNorm tensors are followed by those of the linear layer it feeds. */
_Static_assert(ATTN_W == LN1_W + 2 && ATTN_B == LN1_W + 3 && LN1_B == LN1_W + 1, "LN1 then attn");
_Static_assert(FC_W == LN2_W + 2 && FC_B == LN2_W + 3 && LN2_B == LN2_W + 1, "LN2 then fc");

/* The backward of LayerNorm (tensors at ln_w) -> linear layer (the next two tensors), given
 * dy = d(linear output) of width `out`: the LayerNorm output is recomputed, bit for bit (same
 * inputs, same kernel), rather than kept, and d(LayerNorm input) is added to g->dres. */
static kn_status ln_linear_backward(kn_gpt *g, ready_hook *h, int ln_w, const float *x, float *mean,
                                    float *rstd, const float *dy, int out)
{
    int d = g->cfg.n_embd, N = g->B * g->T, lin_w = ln_w + 2;
    kn_layernorm_forward(g->ln, mean, rstd, x, P(g, ln_w), P(g, ln_w + 1), N, d);
    kn_linear_backward(g->dtmp, G(g, lin_w), G(g, lin_w + 1), dy, g->ln, P(g, lin_w), N, d, out, false);
    REPORT(g, h, lin_w);
    kn_layernorm_backward(g->dres, G(g, ln_w), G(g, ln_w + 1), g->dtmp, x, P(g, ln_w), mean, rstd, N, d,
                          true);
    REPORT(g, h, ln_w);
    return KN_OK;
}

/* One block's backward; g->dres holds d(x_out) on entry and d(x_in) on return. The block's
 * weight gradients are completed in the reverse of their layout order, so each completed
 * pair extends the final tail of the buffer downwards (reported to h). */
static kn_status block_backward(kn_gpt *g, int l, ready_hook *h)
{
    const kn_gpt_config *c = &g->cfg;
    int d = c->n_embd, H = c->n_head, B = g->B, T = g->T, N = B * T;
    float qa = mup_query_factor(c);
    layer_acts *a = &g->L[l];
    /* MLP: dres is d(x_out); it also flows straight through to d(xmid). The GELU output is
     * recomputed into dfc for the projection's weight gradient, which then becomes d(gelu). */
    act_forward(g, g->dfc, a->fch, (int64_t)N * 4 * d);
    kn_linear_backward(NULL, G(g, T_LAYER(l, MPROJ_W)), G(g, T_LAYER(l, MPROJ_B)), g->dres,
                       g->dfc, P(g, T_LAYER(l, MPROJ_W)), N, 4 * d, d, false);
    REPORT(g, h, T_LAYER(l, MPROJ_W));
    kn_linear_backward(g->dfc, NULL, NULL, g->dres, NULL, P(g, T_LAYER(l, MPROJ_W)), N, 4 * d, d,
                       false);
    act_backward(g, g->dfc, a->fch, g->dfc, (int64_t)N * 4 * d);
    kn_status st = ln_linear_backward(g, h, T_LAYER(l, LN2_W), a->xmid, a->ln2m, a->ln2r, g->dfc, 4 * d);
    if (st) return st;
    /* attention: dres is now d(xmid) */
    kn_linear_backward(g->dtmp, G(g, T_LAYER(l, APROJ_W)), G(g, T_LAYER(l, APROJ_B)), g->dres,
                       a->atty, P(g, T_LAYER(l, APROJ_W)), N, d, d, false);
    REPORT(g, h, T_LAYER(l, APROJ_W));
    kn_attention_backward(g->dqkv, g->scratch, g->dtmp, a->qkv, a->atty, a->lse, B, T, d, H,
                          false);
    if (qa != 1.0f) scale_query(g->dqkv, N, d, qa);
    return ln_linear_backward(g, h, T_LAYER(l, LN1_W), a->x, a->ln1m, a->ln1r, g->dqkv, 3 * d);
}

kn_status kn_gpt_backward(kn_gpt *g, float grad_scale)
{
    return kn_gpt_backward_with(g, grad_scale, NULL, NULL);
}

kn_status kn_gpt_backward_with(kn_gpt *g, float grad_scale, kn_gpt_grads_ready ready, void *ctx)
{
    if (!g->have_fwd || !g->have_targets)
        return kn_fail(KN_ERR_ARG, "backward needs a preceding forward with targets");
    if (!g->have_grad_state)
        return kn_fail(KN_ERR_ARG, "backward needs a training forward (kn_gpt_forward), not an "
                                   "evaluation (kn_gpt_evaluate)");
    if (!isfinite(grad_scale))
        return kn_fail(KN_ERR_ARG, "grad_scale (%g) is not finite", (double)grad_scale);
    if (ensure_scratch(g) != KN_OK)
        return kn_fail(KN_ERR_NOMEM, "out of memory for attention scratch");
    const kn_gpt_config *c = &g->cfg;
    int L = c->n_layer, d = c->n_embd, V = c->vocab_size;
    int N = g->B * g->T;

    /* the output layer's part was computed by the forward for a loss scale of 1 */
    add_scaled(G(g, T_WTE), g->dwte, (size_t)V * d, grad_scale, true);
    add_scaled(g->dtmp, g->dlnf, (size_t)N * d, grad_scale, false);
    int tf = T_LAYER(L, 0);
    kn_layernorm_backward(g->dres, G(g, tf), G(g, tf + 1), g->dtmp, g->L[L].x, P(g, tf),
                          g->lnfm, g->lnfr, N, d, false);
    ready_hook h = {ready, ctx, g->nparams};
    REPORT(g, &h, tf);
    for (int l = L - 1; l >= 0; l--) {
        if (kn_interrupted)
            return kn_fail(KN_ERR_INTERRUPTED, "interrupted in backward (layer %d)", l);
        kn_status st = block_backward(g, l, &h);
        if (st) return st;
    }
    kn_embedding_backward(G(g, T_WTE), G(g, T_WPE), g->dres, g->tokens, g->B, g->T, d);
    REPORT(g, &h, T_WTE);
    return KN_OK;
}
#undef REPORT

void kn_gpt_zero_grad(kn_gpt *g) { memset(g->grads, 0, sizeof(float) * g->nparams); }

const float *kn_gpt_token_losses(const kn_gpt *g)
{
    return g->have_fwd && g->have_targets ? g->losses : NULL;
}

kn_status kn_gpt_logits_at(kn_gpt *g, int b, int t, float *out)
{
    if (!g->have_fwd) return kn_fail(KN_ERR_ARG, "logits need a preceding forward");
    if (b < 0 || b >= g->B || t < 0 || t >= g->T)
        return kn_fail(KN_ERR_ARG, "logits position [b=%d, t=%d] is outside the last forward's "
                                   "[%d, %d]", b, t, g->B, g->T);
    int d = g->cfg.n_embd, V = g->cfg.vocab_size;
    kn_linear_forward(out, g->lnf + ((size_t)b * g->T + t) * d, P(g, T_WTE), NULL, 1, d, V, false);
    float om = logit_mult(g);
    if (om != 1.0f)
        for (int v = 0; v < V; v++) out[v] *= om;
    return KN_OK;
}

bool kn_gpt_last_forward(const kn_gpt *g, int *B, int *T)
{
    if (!g->have_fwd) return false;
    if (B) *B = g->B;
    if (T) *T = g->T;
    return true;
}

int kn_gpt_refs(const kn_gpt *g) { return g->refs; }

size_t kn_gpt_memory_bytes(const kn_gpt *g)
{
    int hs = g->cfg.n_embd / g->cfg.n_head;
    size_t scratch = g->scratch ? kn_attention_scratch_floats(g->capT, hs, g->scratch_threads) : 0;
    return sizeof(float) * (2 * g->nparams + g->arena_floats + scratch);
}
