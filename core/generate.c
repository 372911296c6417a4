/* generate.c — incremental decoding with a key/value cache, and the sampler.
 *
 * One routine, feed_rows, runs N tokens at positions p0..p0+N-1 through the model given
 * the cache of positions 0..p0-1: the prompt is N = prompt length at p0 = 0, a new token is
 * N = 1. Only the last row's logits are computed. Matrix products are cut into fixed tiles
 * of rows and output features; each tile is one single-threaded BLAS call whose shape
 * depends only on the problem, so which thread runs it cannot change a bit of the result. */
#include "generate.h"
#include "gemm.h"
#include "kernels.h"
#include "pool.h"

#include <cblas.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROW_TILE 64
#define OUT_TILE 128

typedef struct {
    const float *ln1_w, *ln1_b, *attn_w, *attn_b, *aproj_w, *aproj_b;
    const float *ln2_w, *ln2_b, *fc_w, *fc_b, *mproj_w, *mproj_b;
} layer_params;

typedef struct { float v; int32_t id; } candidate;

struct kn_gen {
    kn_gpt *g;
    int V, T, L, d, H, hs;
    float query_mult, logit_mult;     /* μP factors (1 under SP) */
    const float *wte, *wpe, *lnf_w, *lnf_b;
    layer_params *lp;
    float *kcache, *vcache;           /* [L][H][T][hs] each */
    int len;                          /* positions filled */
    bool have_logits;
    /* row buffers for up to T rows */
    float *x, *ln, *qkv, *aty, *fc, *mean, *rstd, *scores, *lnf, *logits;
    int32_t *window;                  /* the tokens in the cache, for sliding */
    candidate *cand;                  /* sampler scratch [V] */
    double *prob;                     /* sampler scratch [V] */
    size_t bytes;
};

/* ---------------------------------------------------------------- setup */

static const float *param(kn_gpt *g, const char *name)
{
    int i = kn_gpt_find(g, name);
    return i < 0 ? NULL : kn_gpt_params(g) + kn_gpt_param_info(g, i)->offset;
}

/* Where each per-layer tensor goes in layer_params (nanoGPT names after "transformer.h.N."). */
static const struct { const char *suffix; size_t offset; } LAYER_TENSORS[] = {
    {"ln_1.weight", offsetof(layer_params, ln1_w)},
    {"ln_1.bias", offsetof(layer_params, ln1_b)},
    {"attn.c_attn.weight", offsetof(layer_params, attn_w)},
    {"attn.c_attn.bias", offsetof(layer_params, attn_b)},
    {"attn.c_proj.weight", offsetof(layer_params, aproj_w)},
    {"attn.c_proj.bias", offsetof(layer_params, aproj_b)},
    {"ln_2.weight", offsetof(layer_params, ln2_w)},
    {"ln_2.bias", offsetof(layer_params, ln2_b)},
    {"mlp.c_fc.weight", offsetof(layer_params, fc_w)},
    {"mlp.c_fc.bias", offsetof(layer_params, fc_b)},
    {"mlp.c_proj.weight", offsetof(layer_params, mproj_w)},
    {"mlp.c_proj.bias", offsetof(layer_params, mproj_b)},
};

/* Pointers into the model's parameter buffer, looked up by name at every prompt, so the
 * generator never holds on to a buffer the model may have replaced since. */
static bool resolve_params(kn_gen *s)
{
    kn_gpt *g = s->g;
    s->wte = param(g, "transformer.wte.weight");
    s->wpe = param(g, "transformer.wpe.weight");
    s->lnf_w = param(g, "transformer.ln_f.weight");
    s->lnf_b = param(g, "transformer.ln_f.bias");
    bool ok = s->wte && s->wpe && s->lnf_w && s->lnf_b;
    char name[96];
    for (int l = 0; l < s->L; l++)
        for (size_t k = 0; k < sizeof LAYER_TENSORS / sizeof *LAYER_TENSORS; k++) {
            snprintf(name, sizeof name, "transformer.h.%d.%s", l, LAYER_TENSORS[k].suffix);
            const float *p = param(g, name);
            ok = ok && p;
            memcpy((char *)&s->lp[l] + LAYER_TENSORS[k].offset, &p, sizeof p);
        }
    return ok;
}

/* μP scales q·kᵀ by attn_mult/d_head instead of 1/√d_head and the readout by
 * output_mult/width_mult; the same factors the model's forward applies. */
static void set_mup_factors(kn_gen *s, const kn_gpt_config *c)
{
    s->query_mult = c->mup ? c->mup_attn_mult / sqrtf((float)s->hs) : 1.0f;
    s->logit_mult = c->mup ? (float)(c->mup_output_mult / kn_gpt_width_mult(s->g)) : 1.0f;
}

static void *take(kn_gen *s, size_t bytes, bool *ok)
{
    void *p = kn_alloc(bytes);
    if (!p) *ok = false;
    s->bytes += bytes;
    return p;
}

kn_status kn_gen_new(kn_gen **out, kn_gpt *g)
{
    *out = NULL;
    if (!g) return kn_fail(KN_ERR_ARG, "generate: model is NULL");
    const kn_gpt_config *c = kn_gpt_get_config(g);
    kn_gen *s = calloc(1, sizeof *s);
    if (!s) return kn_fail(KN_ERR_NOMEM, "generate: out of memory");
    s->g = g;
    s->V = c->vocab_size; s->T = c->block_size; s->L = c->n_layer;
    s->d = c->n_embd; s->H = c->n_head; s->hs = c->n_embd / c->n_head;
    set_mup_factors(s, c);
    size_t T = (size_t)s->T, d = (size_t)s->d, V = (size_t)s->V, F = sizeof(float);
    size_t cache = (size_t)s->L * T * d;
    bool ok = true;
    s->lp = calloc((size_t)s->L, sizeof *s->lp);
    ok = s->lp != NULL;
    s->kcache = take(s, cache * F, &ok);
    s->vcache = take(s, cache * F, &ok);
    s->x = take(s, T * d * F, &ok);
    s->ln = take(s, T * d * F, &ok);
    s->qkv = take(s, T * 3 * d * F, &ok);
    s->aty = take(s, T * d * F, &ok);
    s->fc = take(s, T * 4 * d * F, &ok);
    s->mean = take(s, T * F, &ok);
    s->rstd = take(s, T * F, &ok);
    s->scores = take(s, (size_t)s->H * T * F, &ok);
    s->lnf = take(s, d * F, &ok);
    s->logits = take(s, V * F, &ok);
    s->window = take(s, T * sizeof(int32_t), &ok);
    s->cand = take(s, V * sizeof(candidate), &ok);
    s->prob = take(s, V * sizeof(double), &ok);
    if (!ok) {
        kn_gen_free(s);
        return kn_fail(KN_ERR_NOMEM, "generate: out of memory for a key/value cache of %d "
                       "positions (%zu MiB)", s->T, (2 * cache * F) >> 20);
    }
    if (!resolve_params(s)) {
        kn_gen_free(s);
        return kn_fail(KN_ERR_ARG, "generate: the model lacks a GPT-2 parameter it needs");
    }
    *out = s;
    return KN_OK;
}

void kn_gen_free(kn_gen *s)
{
    if (!s) return;
    float *bufs[] = {s->kcache, s->vcache, s->x, s->ln, s->qkv, s->aty, s->fc, s->mean,
                     s->rstd, s->scores, s->lnf, s->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) kn_free(bufs[i]);
    kn_free(s->window);
    kn_free(s->cand);
    kn_free(s->prob);
    free(s->lp);
    free(s);
}

size_t kn_gen_memory_bytes(const kn_gen *s) { return s->bytes; }
int kn_gen_length(const kn_gen *s) { return s->len; }
const float *kn_gen_logits(const kn_gen *s) { return s->have_logits ? s->logits : NULL; }

/* ---------------------------------------------------------------- tiled linear */

typedef struct {
    float *y;
    const float *x, *w, *b;
    int N, in, out, out_tiles;
    bool acc;
} lin_ctx;

static void lin_tiles(void *p, int64_t t0, int64_t t1, int tid)
{
    const lin_ctx *c = p;
    for (int64_t t = t0; t < t1; t++) {
        int r0 = (int)(t / c->out_tiles) * ROW_TILE, o0 = (int)(t % c->out_tiles) * OUT_TILE;
        int rows = c->N - r0 < ROW_TILE ? c->N - r0 : ROW_TILE;
        int outs = c->out - o0 < OUT_TILE ? c->out - o0 : OUT_TILE;
        float *y = c->y + (size_t)r0 * c->out + o0;
        const float *x = c->x + (size_t)r0 * c->in, *w = c->w + (size_t)o0 * c->in;
        for (int r = 0; r < rows; r++) {
            float *yr = y + (size_t)r * c->out;
            for (int o = 0; o < outs; o++) {
                float bias = c->b ? c->b[o0 + o] : 0.0f;
                yr[o] = c->acc ? yr[o] + bias : bias;
            }
        }
        if (rows == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, outs, c->in, 1.0f, w, c->in, x, 1, 1.0f, y, 1);
        else
            kn_sgemm(false, true, rows, outs, c->in, 1.0f, x, c->in, w, c->in, 1.0f, y, c->out);
    }
}

/* y[N,out] (+)= x[N,in]·w[out,in]ᵀ + b (b may be NULL). */
static void linear(float *y, const float *x, const float *w, const float *b, int N, int in,
                   int out, bool acc)
{
    lin_ctx c = {.y = y, .x = x, .w = w, .b = b, .N = N, .in = in, .out = out,
                 .out_tiles = (out + OUT_TILE - 1) / OUT_TILE, .acc = acc};
    int64_t tiles = (int64_t)((N + ROW_TILE - 1) / ROW_TILE) * c.out_tiles;
    kn_blas_single_thread();
    kn_parallel_for_dynamic(tiles, 1, lin_tiles, &c);
}

/* ---------------------------------------------------------------- attention over the cache */

typedef struct { kn_gen *s; int l, p0, N; } att_ctx;

static float *cache_at(const kn_gen *s, float *cache, int l, int h)
{
    return cache + (((size_t)l * s->H + h) * s->T) * s->hs;
}

/* One head, every row: the query at position p attends to cached positions 0..p. */
static void attend_head(kn_gen *s, int l, int h, int p0, int N)
{
    int hs = s->hs, d = s->d;
    float scale = 1.0f / sqrtf((float)hs);
    const float *K = cache_at(s, s->kcache, l, h), *Vc = cache_at(s, s->vcache, l, h);
    float *sc = s->scores + (size_t)h * s->T;
    for (int r = 0; r < N; r++) {
        int n = p0 + r + 1;
        const float *q = s->qkv + (size_t)r * 3 * d + (size_t)h * hs;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n, hs, scale, K, hs, q, 1, 0.0f, sc, 1);
        float mx = sc[0];
        for (int j = 1; j < n; j++) mx = sc[j] > mx ? sc[j] : mx;
        float sum = 0.0f;
        for (int j = 0; j < n; j++) { sc[j] = kn_expf(sc[j] - mx); sum += sc[j]; }
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++) sc[j] *= inv;
        float *y = s->aty + (size_t)r * d + (size_t)h * hs;
        cblas_sgemv(CblasRowMajor, CblasTrans, n, hs, 1.0f, Vc, hs, sc, 1, 0.0f, y, 1);
    }
}

static void att_heads(void *p, int64_t h0, int64_t h1, int tid)
{
    const att_ctx *c = p;
    for (int64_t h = h0; h < h1; h++) attend_head(c->s, c->l, (int)h, c->p0, c->N);
}

/* Copy the rows' keys and values into the cache, then attend (heads in parallel). */
static void attention(kn_gen *s, int l, int p0, int N)
{
    int d = s->d, hs = s->hs;
    for (int r = 0; r < N; r++)
        for (int h = 0; h < s->H; h++) {
            const float *k = s->qkv + (size_t)r * 3 * d + d + (size_t)h * hs;
            size_t at = (size_t)(p0 + r) * hs;
            memcpy(cache_at(s, s->kcache, l, h) + at, k, sizeof(float) * hs);
            memcpy(cache_at(s, s->vcache, l, h) + at, k + d, sizeof(float) * hs);
        }
    att_ctx c = {.s = s, .l = l, .p0 = p0, .N = N};
    kn_blas_single_thread();
    kn_parallel_for_dynamic(s->H, 1, att_heads, &c);
}

/* ---------------------------------------------------------------- feeding tokens */

static kn_status check_ids(const kn_gen *s, const int32_t *tokens, int n, const char *what)
{
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= s->V)
            return kn_fail(KN_ERR_ARG, "generate: %s token %d (at index %d) is outside [0, %d)",
                           what, (int)tokens[i], i, s->V);
    return KN_OK;
}

static void block(kn_gen *s, int l, int p0, int N)
{
    const layer_params *p = &s->lp[l];
    int d = s->d;
    kn_layernorm_forward(s->ln, s->mean, s->rstd, s->x, p->ln1_w, p->ln1_b, N, d);
    linear(s->qkv, s->ln, p->attn_w, p->attn_b, N, d, 3 * d, false);
    if (s->query_mult != 1.0f)
        for (int r = 0; r < N; r++)
            for (int j = 0; j < d; j++) s->qkv[(size_t)r * 3 * d + j] *= s->query_mult;
    attention(s, l, p0, N);
    linear(s->x, s->aty, p->aproj_w, p->aproj_b, N, d, d, true);
    kn_layernorm_forward(s->ln, s->mean, s->rstd, s->x, p->ln2_w, p->ln2_b, N, d);
    linear(s->fc, s->ln, p->fc_w, p->fc_b, N, d, 4 * d, false);
    kn_gelu_forward(s->fc, s->fc, (int64_t)N * 4 * d);
    linear(s->x, s->fc, p->mproj_w, p->mproj_b, N, 4 * d, d, true);
}

/* Run tokens at positions p0..p0+N-1 (the cache holds 0..p0-1); logits of the last row. */
static kn_status feed_rows(kn_gen *s, const int32_t *tokens, int p0, int N)
{
    int d = s->d;
    s->have_logits = false;
    s->len = p0;   /* if interrupted, the cache still holds exactly p0 valid positions */
    for (int r = 0; r < N; r++) {
        float *x = s->x + (size_t)r * d;
        const float *te = s->wte + (size_t)tokens[r] * d, *pe = s->wpe + (size_t)(p0 + r) * d;
        for (int j = 0; j < d; j++) x[j] = te[j] + pe[j];
        s->window[p0 + r] = tokens[r];
    }
    for (int l = 0; l < s->L; l++) {
        if (kn_interrupted) return kn_fail(KN_ERR_INTERRUPTED, "generate: interrupted");
        block(s, l, p0, N);
    }
    kn_layernorm_forward(s->lnf, s->mean, s->rstd, s->x + (size_t)(N - 1) * d, s->lnf_w,
                         s->lnf_b, 1, d);
    linear(s->logits, s->lnf, s->wte, NULL, 1, d, s->V, false);
    if (s->logit_mult != 1.0f)
        for (int v = 0; v < s->V; v++) s->logits[v] *= s->logit_mult;
    s->len = p0 + N;
    s->have_logits = true;
    return KN_OK;
}

kn_status kn_gen_prefill(kn_gen *s, const int32_t *tokens, int n)
{
    if (!tokens || n < 1 || n > s->T)
        return kn_fail(KN_ERR_ARG, "generate: prompt length %d must be in [1, block_size = %d]",
                       n, s->T);
    kn_status st = check_ids(s, tokens, n, "prompt");
    if (st) return st;
    if (!resolve_params(s))
        return kn_fail(KN_ERR_ARG, "generate: the model lacks a GPT-2 parameter it needs");
    /* the window may be the source (sliding): feed_rows writes it row by row, forwards */
    return feed_rows(s, tokens, 0, n);
}

kn_status kn_gen_append(kn_gen *s, int32_t token)
{
    if (s->len < 1) return kn_fail(KN_ERR_ARG, "generate: append before any prompt was fed");
    if (s->len >= s->T)
        return kn_fail(KN_ERR_ARG, "generate: the context is full (block_size = %d)", s->T);
    kn_status st = check_ids(s, &token, 1, "appended");
    if (st) return st;
    return feed_rows(s, &token, s->len, 1);
}

/* ---------------------------------------------------------------- sampling */

kn_gen_opts kn_gen_default_opts(void)
{
    return (kn_gen_opts){.max_new_tokens = 100, .temperature = 1.0f, .top_k = 0, .top_p = 1.0f,
                         .seed = 1, .on_full = KN_GEN_SLIDE};
}

kn_status kn_gen_check_opts(const kn_gen_opts *o, int V)
{
    if (o->max_new_tokens < 0)
        return kn_fail(KN_ERR_ARG, "generate: max_new_tokens (%d) must be >= 0", o->max_new_tokens);
    if (!(isfinite(o->temperature) && o->temperature >= 0.0f))
        return kn_fail(KN_ERR_ARG, "generate: temperature (%g) must be a finite number >= 0 (0 is greedy)",
                       (double)o->temperature);
    if (o->top_k < 0 || o->top_k > V)
        return kn_fail(KN_ERR_ARG, "generate: top_k (%d) must be in [0, vocab_size = %d] (0 is off)",
                       o->top_k, V);
    if (!(o->top_p > 0.0f && o->top_p <= 1.0f))
        return kn_fail(KN_ERR_ARG, "generate: top_p (%g) must be in (0, 1] (1 is off)", (double)o->top_p);
    if (o->on_full != KN_GEN_SLIDE && o->on_full != KN_GEN_STOP)
        return kn_fail(KN_ERR_ARG, "generate: on_full (%d) must be KN_GEN_SLIDE or KN_GEN_STOP", (int)o->on_full);
    if (o->n_stop_tokens < 0 || (o->n_stop_tokens > 0 && !o->stop_tokens))
        return kn_fail(KN_ERR_ARG, "generate: stop tokens: %d given without an array", o->n_stop_tokens);
    for (int i = 0; i < o->n_stop_tokens; i++)
        if (o->stop_tokens[i] < 0 || o->stop_tokens[i] >= V)
            return kn_fail(KN_ERR_ARG, "generate: stop token %d (number %d) is outside [0, %d)",
                           (int)o->stop_tokens[i], i + 1, V);
    if (o->n_stop_seqs < 0 || (o->n_stop_seqs > 0 && (!o->stop_seqs || !o->stop_seq_lens)))
        return kn_fail(KN_ERR_ARG, "generate: stop sequences: %d given without arrays", o->n_stop_seqs);
    const int32_t *q = o->stop_seqs;
    for (int i = 0; i < o->n_stop_seqs; i++) {
        if (o->stop_seq_lens[i] < 1)
            return kn_fail(KN_ERR_ARG, "generate: stop sequence %d is empty", i + 1);
        for (int j = 0; j < o->stop_seq_lens[i]; j++, q++)
            if (*q < 0 || *q >= V)
                return kn_fail(KN_ERR_ARG, "generate: stop sequence %d: token %d is outside [0, %d)", i + 1,
                               (int)*q, V);
    }
    return KN_OK;
}

static int32_t argmax(const float *logits, int V)
{
    int32_t best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;
    return best;
}

/* Most likely first; equal logits by id, so the order (and the draw) is fully determined. */
static int by_logit_desc(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Fill s->cand with the tokens still allowed, s->prob with their unnormalised
 * probabilities, in a fixed order; returns how many. */
static int candidates(kn_gen *s, const float *logits, const kn_gen_opts *o)
{
    int V = s->V, n = V;
    for (int v = 0; v < V; v++) s->cand[v] = (candidate){logits[v], v};
    bool truncate = o->top_k > 0 || o->top_p < 1.0f;
    if (truncate) qsort(s->cand, (size_t)V, sizeof *s->cand, by_logit_desc);
    if (o->top_k > 0) n = o->top_k;
    float mx = s->cand[0].v;
    for (int i = 1; i < n; i++) mx = s->cand[i].v > mx ? s->cand[i].v : mx;
    /* in double: 1/temperature stays finite even for the smallest float temperature */
    double inv_t = 1.0 / (double)o->temperature, total = 0.0;
    for (int i = 0; i < n; i++) {
        s->prob[i] = exp(((double)s->cand[i].v - (double)mx) * inv_t);
        total += s->prob[i];
    }
    if (o->top_p < 1.0f) {
        double need = (double)o->top_p * total, mass = 0.0;
        int keep = 0;
        while (keep < n && mass < need) mass += s->prob[keep++];
        n = keep > 0 ? keep : 1;
    }
    return n;
}

kn_status kn_gen_sample(kn_gen *s, const float *logits, const kn_gen_opts *o, kn_rng *r,
                        int32_t *token)
{
    int V = s->V;
    for (int v = 0; v < V; v++)
        if (!isfinite(logits[v]))
            return kn_fail(KN_ERR_NONFINITE, "generate: logit of token %d is %g", v,
                           (double)logits[v]);
    if (o->temperature == 0.0f) {
        *token = argmax(logits, V);
        return KN_OK;
    }
    int n = candidates(s, logits, o);
    double total = 0.0;
    for (int i = 0; i < n; i++) total += s->prob[i];
    double u = kn_rng_uniform(r) * total, acc = 0.0;
    int pick = n - 1;   /* if rounding leaves u past the last sum */
    for (int i = 0; i < n; i++) {
        acc += s->prob[i];
        if (u < acc) { pick = i; break; }
    }
    *token = s->cand[pick].id;
    return KN_OK;
}

/* ---------------------------------------------------------------- the loop */

static bool ends_with(const int32_t *out, int n, const int32_t *seq, int len)
{
    return len <= n && memcmp(out + n - len, seq, sizeof(int32_t) * (size_t)len) == 0;
}

static bool is_stop(const kn_gen_opts *o, const int32_t *out, int n)
{
    for (int i = 0; i < o->n_stop_tokens; i++)
        if (out[n - 1] == o->stop_tokens[i]) return true;
    const int32_t *q = o->stop_seqs;
    for (int i = 0; i < o->n_stop_seqs; q += o->stop_seq_lens[i++])
        if (ends_with(out, n, q, o->stop_seq_lens[i])) return true;
    return false;
}

/* Feed the token just drawn: append, or when full slide (re-feed the last T-1 tokens and
 * this one) or report that the context is full. */
static kn_status feed_next(kn_gen *s, int32_t tok, const kn_gen_opts *o, bool *full)
{
    *full = false;
    if (s->len < s->T) return feed_rows(s, &tok, s->len, 1);
    if (o->on_full == KN_GEN_STOP) { *full = true; return KN_OK; }
    memmove(s->window, s->window + 1, sizeof(int32_t) * (size_t)(s->T - 1));
    s->window[s->T - 1] = tok;
    return feed_rows(s, s->window, 0, s->T);
}

kn_status kn_gen_run(kn_gen *s, const int32_t *prompt, int n_prompt, const kn_gen_opts *o,
                     int32_t *out, int *n_out, kn_gen_end *why, kn_gen_token_fn on_token,
                     void *ud)
{
    *n_out = 0;
    if (why) *why = KN_GEN_END_LENGTH;
    kn_status st = kn_gen_check_opts(o, s->V);
    if (st) return st;
    if (!prompt || n_prompt < 1)
        return kn_fail(KN_ERR_ARG, "generate: the prompt is empty (give at least one token)");
    if (n_prompt > s->T && o->on_full == KN_GEN_STOP)
        return kn_fail(KN_ERR_ARG, "generate: the prompt (%d tokens) is longer than block_size "
                       "(%d) and the context does not slide", n_prompt, s->T);
    if (o->max_new_tokens > 0 && !out) return kn_fail(KN_ERR_ARG, "generate: out is NULL");
    int skip = n_prompt > s->T ? n_prompt - s->T : 0;
    if ((st = check_ids(s, prompt, n_prompt, "prompt"))) return st;
    if ((st = kn_gen_prefill(s, prompt + skip, n_prompt - skip))) return st;
    kn_rng rng;
    kn_rng_seed(&rng, o->seed);
    for (int i = 0; i < o->max_new_tokens; i++) {
        int32_t tok;
        if ((st = kn_gen_sample(s, s->logits, o, &rng, &tok))) return st;
        out[i] = tok;
        *n_out = i + 1;
        kn_gen_end end = KN_GEN_END_LENGTH;
        if (on_token && on_token(ud, tok)) end = KN_GEN_END_CALLBACK;
        else if (is_stop(o, out, i + 1)) end = KN_GEN_END_STOP;
        if (end != KN_GEN_END_LENGTH || i + 1 == o->max_new_tokens) {
            if (why) *why = end;
            return KN_OK;
        }
        bool full;
        if ((st = feed_next(s, tok, o, &full))) return st;
        if (full) {
            if (why) *why = KN_GEN_END_FULL;
            return KN_OK;
        }
    }
    return KN_OK;
}
