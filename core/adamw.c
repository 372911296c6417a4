/* adamw.c — AdamW over the model's flat buffers with torch.optim.AdamW (1.13) semantics.
 *
 * Default groups follow nanoGPT's configure_optimizers: every 2-D tensor is decayed
 * (wd_scale 1) — the linear weights *and* the embeddings wte and wpe, which are 2-D too —
 * and every 1-D tensor (biases, LayerNorm weights and biases) is not (wd_scale 0).
 * lr_scale is 1 everywhere and nothing is frozen.
 *
 * A step is, in this order:
 *   1. Global gradient norm over all non-frozen tensors, accumulated in double (a frozen
 *      tensor is what torch calls requires_grad=False: it has no gradient, so it neither
 *      counts in the norm nor gets clipped). A non-finite norm returns KN_ERR_NONFINITE
 *      naming the first tensor with a non-finite gradient; nothing is modified.
 *   2. t += 1.
 *   3. Clipping as torch.nn.utils.clip_grad_norm_: coef = clip / (norm + 1e-6), applied
 *      (g *= coef, in place, so the caller sees the clipped gradients) only if coef < 1.
 *   4. Per tensor, with lr_t = lr·lr_scale and wd_t = weight_decay·wd_scale, in torch's
 *      _single_tensor_adamw order:
 *        p *= 1 - lr_t·wd_t
 *        m  = β1·m + (1-β1)·g
 *        v  = β2·v + (1-β2)·g·g
 *        denom = sqrt(v) / sqrt(1-β2^t) + eps
 *        p += (-lr_t/(1-β1^t))·m / denom
 *      Scalars are formed in double and rounded to float once, as torch does with Python
 *      scalars on float tensors.
 *   5. On an averaging step (adamw.h), avg = a·avg + b·p with the new p, still in a register.
 *   Steps 3 to 5 are one fused pass over each tensor: averaging costs one more stream of
 *   memory on the steps it runs, not a second pass over the parameters.
 *
 * No allocation in a step. Both passes (the norm, the update) are memory-bound and split
 * over kiln's worker pool by ranges of the flat buffer; a range walks the tensors it
 * overlaps. The update is elementwise and its vector path uses the same IEEE operations in
 * the same order as the scalar tail (no FMA), so parameters do not depend on the split. The
 * norm is summed over fixed blocks combined in a fixed order, so the whole step gives the
 * same bits at any thread count. */
#include "adamw.h"
#include "pool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX__
#include <immintrin.h>
#endif

#define MAX_PARTIALS 64   /* blocks of the gradient norm */
#define GRAIN 64          /* floats per chunk unit: 4 cache lines, no false sharing */

/* Per-tensor scalars of the current step, filled before the parallel pass. */
typedef struct { float decay, neg_step; } tensor_consts;

struct kn_adamw {
    int refs;
    kn_gpt *g;               /* retained: the optimizer keeps its model alive */
    kn_adamw_hparams defaults;
    int n_tensors;
    size_t n_params;
    kn_adamw_group *groups;
    tensor_consts *tc;
    float *m, *v;
    int64_t t;
    double partial[MAX_PARTIALS];
    float *avg;               /* weight average (NULL until kn_adamw_set_average) */
    kn_average_cfg avg_cfg;
    int64_t avg_count;        /* snapshots folded into avg */
    bool swapped;             /* avg and the parameters are exchanged */
};

kn_adamw_hparams kn_adamw_defaults(void)
{
    kn_adamw_hparams h = { .lr = 3e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                           .weight_decay = 0.1f, .clip = 1.0f };
    return h;
}

kn_status kn_adamw_new(kn_adamw **out, kn_gpt *g)
{
    *out = NULL;
    if (!g) return kn_fail(KN_ERR_ARG, "adamw: no model given");
    kn_adamw *o = calloc(1, sizeof *o);
    if (!o) return kn_fail(KN_ERR_NOMEM, "adamw: out of memory");
    o->refs = 1;
    o->g = kn_gpt_retain(g);
    o->defaults = kn_adamw_defaults();
    o->n_tensors = kn_gpt_num_tensors(g);
    o->n_params = kn_gpt_num_params(g);
    o->groups = calloc((size_t)(o->n_tensors > 0 ? o->n_tensors : 1), sizeof *o->groups);
    o->tc = calloc((size_t)(o->n_tensors > 0 ? o->n_tensors : 1), sizeof *o->tc);
    o->m = kn_alloc(o->n_params * sizeof(float));
    o->v = kn_alloc(o->n_params * sizeof(float));
    if (!o->groups || !o->tc || !o->m || !o->v) {
        size_t n = o->n_params;
        kn_adamw_free(o);
        return kn_fail(KN_ERR_NOMEM, "adamw: out of memory for the moments of %zu parameters", n);
    }
    for (int i = 0; i < o->n_tensors; i++) {
        const kn_param_info *pi = kn_gpt_param_info(g, i);
        o->groups[i].lr_scale = 1.0f;
        o->groups[i].wd_scale = pi->ndim >= 2 ? 1.0f : 0.0f;
        o->groups[i].frozen = false;
    }
    *out = o;
    return KN_OK;
}

kn_adamw *kn_adamw_retain(kn_adamw *o)
{
    if (o) o->refs++;
    return o;
}

int kn_adamw_refs(const kn_adamw *o) { return o->refs; }
kn_gpt *kn_adamw_model(const kn_adamw *o) { return o->g; }
kn_adamw_hparams kn_adamw_get_hparams(const kn_adamw *o) { return o->defaults; }
void kn_adamw_set_hparams(kn_adamw *o, const kn_adamw_hparams *h) { o->defaults = *h; }

void kn_adamw_free(kn_adamw *o)
{
    if (!o || --o->refs > 0) return;
    kn_gpt_free(o->g);
    kn_free(o->m);
    kn_free(o->v);
    kn_free(o->avg);
    free(o->groups);
    free(o->tc);
    free(o);
}

kn_adamw_group *kn_adamw_group_of(kn_adamw *o, int i)
{
    if (!o || i < 0 || i >= o->n_tensors) return NULL;
    return &o->groups[i];
}

void kn_adamw_reset(kn_adamw *o)
{
    memset(o->m, 0, o->n_params * sizeof(float));
    memset(o->v, 0, o->n_params * sizeof(float));
    o->t = 0;
}

float *kn_adamw_m(kn_adamw *o) { return o->m; }
float *kn_adamw_v(kn_adamw *o) { return o->v; }
int64_t kn_adamw_t(const kn_adamw *o) { return o->t; }
void kn_adamw_set_t(kn_adamw *o, int64_t t) { o->t = t < 0 ? 0 : t; }

/* Sum of squares of x[0..n) in double. Four partial sums keep the loop vectorisable
 * without reassociation licence; the order is fixed, so the result is deterministic. */
static double sumsq(const float *x, size_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        double a = x[i], b = x[i + 1], c = x[i + 2], d = x[i + 3];
        s0 += a * a; s1 += b * b; s2 += c * c; s3 += d * d;
    }
    for (; i < n; i++) { double a = x[i]; s0 += a * a; }
    return (s0 + s1) + (s2 + s3);
}

static bool all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

/* The fused per-tensor pass (clip scale, decay, moments, update). */
typedef struct {
    float scale;        /* gradient multiplier from clipping (1: none) */
    bool do_scale;
    float decay;        /* 1 - lr_t·wd_t */
    float b1, omb1;     /* β1, 1-β1 */
    float b2, omb2;     /* β2, 1-β2 */
    float bc2_sqrt;     /* sqrt(1-β2^t) */
    float eps;
    float neg_step;     /* -lr_t / (1-β1^t) */
    int avg_mode;       /* AVG_SKIP, AVG_COPY or AVG_BLEND on this step */
    float avg_a, avg_b; /* AVG_BLEND: avg = avg_a·avg + avg_b·p */
} upd_consts;

enum { AVG_SKIP, AVG_COPY, AVG_BLEND };

/* Fold p[0..n) into the average: the frozen tensors' share of an averaging step, and the
 * scalar form every fused path must reproduce bit for bit. */
static void average_only(const float *restrict p, float *restrict av, size_t n, const upd_consts *c)
{
    if (c->avg_mode == AVG_COPY) { memcpy(av, p, n * sizeof(float)); return; }
    for (size_t i = 0; i < n; i++) av[i] = c->avg_a * av[i] + c->avg_b * p[i];
}

/* One pass over a tensor range: clip, decay, moments, update and, on an averaging step, the
 * average of the new value while it is still in a register (av is NULL when not averaging). */
static void update(float *restrict p, float *restrict gr, float *restrict m, float *restrict v,
                   float *restrict av, size_t n, const upd_consts *c)
{
    size_t i = 0;
    const int am = c->avg_mode;
#ifdef __AVX__
    const __m256 scale = _mm256_set1_ps(c->scale), decay = _mm256_set1_ps(c->decay);
    const __m256 b1 = _mm256_set1_ps(c->b1), omb1 = _mm256_set1_ps(c->omb1);
    const __m256 b2 = _mm256_set1_ps(c->b2), omb2 = _mm256_set1_ps(c->omb2);
    const __m256 bc2 = _mm256_set1_ps(c->bc2_sqrt), eps = _mm256_set1_ps(c->eps);
    const __m256 nstep = _mm256_set1_ps(c->neg_step);
    const __m256 aa = _mm256_set1_ps(c->avg_a), ab = _mm256_set1_ps(c->avg_b);
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gr + i);
        if (c->do_scale) { g = _mm256_mul_ps(g, scale); _mm256_storeu_ps(gr + i, g); }
        __m256 pp = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
        __m256 mm = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(m + i), b1), _mm256_mul_ps(g, omb1));
        __m256 vv = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), b2),
                                  _mm256_mul_ps(_mm256_mul_ps(g, g), omb2));
        __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vv), bc2), eps);
        pp = _mm256_add_ps(pp, _mm256_div_ps(_mm256_mul_ps(nstep, mm), den));
        _mm256_storeu_ps(m + i, mm);
        _mm256_storeu_ps(v + i, vv);
        _mm256_storeu_ps(p + i, pp);
        if (am == AVG_COPY) _mm256_storeu_ps(av + i, pp);
        else if (am == AVG_BLEND)
            _mm256_storeu_ps(av + i, _mm256_add_ps(_mm256_mul_ps(aa, _mm256_loadu_ps(av + i)),
                                                   _mm256_mul_ps(ab, pp)));
    }
#endif
    for (; i < n; i++) {
        float g = gr[i];
        if (c->do_scale) { g = g * c->scale; gr[i] = g; }
        float pp = p[i] * c->decay;
        float mm = m[i] * c->b1 + g * c->omb1;
        float vv = v[i] * c->b2 + (g * g) * c->omb2;
        float den = sqrtf(vv) / c->bc2_sqrt + c->eps;
        pp = pp + (c->neg_step * mm) / den;
        p[i] = pp;
        m[i] = mm;
        v[i] = vv;
        if (am == AVG_COPY) av[i] = pp;
        else if (am == AVG_BLEND) av[i] = c->avg_a * av[i] + c->avg_b * pp;
    }
}

/* A step's shared state. A chunk [b, e) of the flat buffer visits each non-frozen tensor it
 * overlaps, on the intersection only: padding between tensors is never touched. */
typedef struct {
    kn_adamw *o;
    float *P, *G;
    size_t blk;         /* floats per norm block */
    upd_consts c;
} step_ctx;

static double norm_range(kn_adamw *o, const float *G, size_t b, size_t e)
{
    double ss = 0;
    for (int i = 0; i < o->n_tensors; i++) {
        if (o->groups[i].frozen) continue;
        const kn_param_info *pi = kn_gpt_param_info(o->g, i);
        size_t lo = pi->offset > b ? pi->offset : b, hi = pi->offset + pi->numel < e ? pi->offset + pi->numel : e;
        if (lo < hi) ss += sumsq(G + lo, hi - lo);
    }
    return ss;
}

/* The norm is summed over fixed blocks of the flat buffer (at most MAX_PARTIALS, sizes
 * depending only on the buffer), each into its own slot, then combined in block order: the
 * result does not depend on the thread count or on which thread ran which block. */
static void norm_blocks(void *ctx, int64_t b, int64_t e, int tid)
{
    step_ctx *sc = ctx;
    kn_adamw *o = sc->o;
    for (int64_t k = b; k < e; k++) {
        size_t lo = (size_t)k * sc->blk, hi = lo + sc->blk < o->n_params ? lo + sc->blk : o->n_params;
        o->partial[k] = norm_range(o, sc->G, lo, hi);
    }
}

static void update_chunk(void *ctx, int64_t b, int64_t e, int tid)
{
    step_ctx *sc = ctx;
    kn_adamw *o = sc->o;
    upd_consts c = sc->c;
    bool averaging = c.avg_mode != AVG_SKIP;
    for (int i = 0; i < o->n_tensors; i++) {
        const kn_param_info *pi = kn_gpt_param_info(o->g, i);
        size_t lo = pi->offset > (size_t)b ? pi->offset : (size_t)b;
        size_t hi = pi->offset + pi->numel < (size_t)e ? pi->offset + pi->numel : (size_t)e;
        if (lo >= hi) continue;
        if (o->groups[i].frozen) {
            if (averaging) average_only(sc->P + lo, o->avg + lo, hi - lo, &c);
            continue;
        }
        c.decay = o->tc[i].decay;
        c.neg_step = o->tc[i].neg_step;
        update(sc->P + lo, sc->G + lo, o->m + lo, o->v + lo, averaging ? o->avg + lo : NULL, hi - lo, &c);
    }
}

/* Whether step o->t folds into the average, and with which coefficients (see adamw.h). */
static void average_consts(kn_adamw *o, upd_consts *c)
{
    const kn_average_cfg *ac = &o->avg_cfg;
    c->avg_mode = AVG_SKIP;
    if (ac->kind == KN_AVERAGE_NONE || o->t < ac->start || (o->t - ac->start) % ac->every != 0) return;
    int64_t k = o->avg_count++;
    if (k == 0) { c->avg_mode = AVG_COPY; return; }
    double a;
    if (ac->kind == KN_AVERAGE_MEAN) {
        a = (double)k / (double)(k + 1);
        c->avg_b = (float)(1.0 / (double)(k + 1));
    } else {
        a = ac->decay;
        if (ac->warmup && (1.0 + (double)k) / (10.0 + (double)k) < a) a = (1.0 + (double)k) / (10.0 + (double)k);
        c->avg_b = (float)(1.0 - a);
    }
    c->avg_a = (float)a;
    c->avg_mode = AVG_BLEND;
}

kn_status kn_adamw_step(kn_adamw *o, const kn_adamw_hparams *h, float *grad_norm_out)
{
    if (!o || !h) return kn_fail(KN_ERR_ARG, "adamw step: no optimizer or hyperparameters");
    if (o->swapped)
        return kn_fail(KN_ERR_ARG, "adamw step: the averaged weights are swapped into the model; "
                       "swap them back before training");
    if (!(h->beta1 >= 0 && h->beta1 < 1) || !(h->beta2 >= 0 && h->beta2 < 1))
        return kn_fail(KN_ERR_ARG, "adamw step: betas must be in [0, 1), got (%g, %g)",
                       (double)h->beta1, (double)h->beta2);
    if (!isfinite(h->lr) || !(h->eps >= 0) || !isfinite(h->eps) || !isfinite(h->weight_decay) ||
        isnan(h->clip))
        return kn_fail(KN_ERR_ARG, "adamw step: lr, eps, weight_decay must be finite and eps >= 0"
                       " (lr %g, eps %g, weight_decay %g, clip %g)", (double)h->lr,
                       (double)h->eps, (double)h->weight_decay, (double)h->clip);

    step_ctx sc = { .o = o, .P = kn_gpt_params(o->g), .G = kn_gpt_grads(o->g) };
    int64_t n = (int64_t)o->n_params;

    /* 1. The global norm, over fixed blocks (see norm_blocks). */
    size_t units = (o->n_params + GRAIN - 1) / GRAIN;
    size_t per = (units + MAX_PARTIALS - 1) / MAX_PARTIALS;
    sc.blk = (per > 0 ? per : 1) * GRAIN;
    int64_t nblk = (int64_t)((o->n_params + sc.blk - 1) / sc.blk);
    kn_parallel_for(nblk, norm_blocks, &sc);
    double ss = 0;
    for (int64_t k = 0; k < nblk; k++) ss += o->partial[k];
    double norm = sqrt(ss);
    if (grad_norm_out) *grad_norm_out = (float)norm;
    if (!isfinite(norm)) {
        for (int i = 0; i < o->n_tensors; i++) {
            if (o->groups[i].frozen) continue;
            const kn_param_info *pi = kn_gpt_param_info(o->g, i);
            if (!all_finite(sc.G + pi->offset, pi->numel))
                return kn_fail(KN_ERR_NONFINITE, "adamw step %lld: non-finite gradient in %s "
                               "(global grad norm %g); parameters and moments unchanged",
                               (long long)o->t + 1, pi->name, norm);
        }
        return kn_fail(KN_ERR_NONFINITE, "adamw step %lld: global grad norm overflowed (%g); "
                       "parameters and moments unchanged", (long long)o->t + 1, norm);
    }

    /* 2-4. t, clipping, the per-tensor scalars, then one fused pass. */
    o->t++;
    double t = (double)o->t;
    double b1 = h->beta1, b2 = h->beta2;
    double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);

    upd_consts *c = &sc.c;
    c->do_scale = false;
    c->scale = 1.0f;
    if (h->clip > 0) {
        double coef = (double)h->clip / (norm + 1e-6);
        if (coef < 1.0) { c->do_scale = true; c->scale = (float)coef; }
    }
    c->b1 = h->beta1; c->omb1 = (float)(1.0 - b1);
    c->b2 = h->beta2; c->omb2 = (float)(1.0 - b2);
    c->bc2_sqrt = (float)sqrt(bc2);
    c->eps = h->eps;
    average_consts(o, c);
    for (int i = 0; i < o->n_tensors; i++) {
        const kn_adamw_group *gr = &o->groups[i];
        double lr_t = (double)h->lr * (double)gr->lr_scale;
        double wd_t = (double)h->weight_decay * (double)gr->wd_scale;
        o->tc[i].decay = (float)(1.0 - lr_t * wd_t);
        o->tc[i].neg_step = (float)(-(lr_t / bc1));
    }
    kn_parallel_for_grain(n, GRAIN, update_chunk, &sc);
    return KN_OK;
}

kn_status kn_adamw_set_average(kn_adamw *o, const kn_average_cfg *c)
{
    if (!o || !c) return kn_fail(KN_ERR_ARG, "adamw set_average: no optimizer or settings");
    if (o->swapped)
        return kn_fail(KN_ERR_ARG, "adamw set_average: the averaged weights are swapped into the model; swap them back first");
    if (c->kind != KN_AVERAGE_NONE && c->kind != KN_AVERAGE_EMA && c->kind != KN_AVERAGE_MEAN)
        return kn_fail(KN_ERR_ARG, "adamw set_average: unknown kind %d (expected none, ema or mean)", (int)c->kind);
    if (c->kind == KN_AVERAGE_EMA && !(c->decay >= 0 && c->decay < 1))
        return kn_fail(KN_ERR_ARG, "adamw set_average: decay must be in [0, 1), got %g", c->decay);
    if (c->kind != KN_AVERAGE_NONE && (c->every < 1 || c->start < 1))
        return kn_fail(KN_ERR_ARG, "adamw set_average: every and start must be >= 1, got every %lld, start %lld",
                       (long long)c->every, (long long)c->start);
    if (c->kind != KN_AVERAGE_NONE && !o->avg) {
        o->avg = kn_alloc(o->n_params * sizeof(float));
        if (!o->avg)
            return kn_fail(KN_ERR_NOMEM, "adamw set_average: out of memory for the average of %zu parameters",
                           o->n_params);
    }
    o->avg_cfg = *c;
    o->avg_count = 0;
    return KN_OK;
}

kn_average_cfg kn_adamw_average_cfg(const kn_adamw *o) { return o->avg_cfg; }
float *kn_adamw_average(kn_adamw *o) { return o->avg; }
int64_t kn_adamw_average_count(const kn_adamw *o) { return o->avg_count; }
bool kn_adamw_average_swapped(const kn_adamw *o) { return o->swapped; }

kn_status kn_adamw_set_average_count(kn_adamw *o, int64_t count)
{
    if (!o->avg) return kn_fail(KN_ERR_ARG, "adamw set_average_count: no average selected (call set_average first)");
    if (o->swapped) return kn_fail(KN_ERR_ARG, "adamw set_average_count: the averaged weights are swapped into the model");
    if (count < 0) return kn_fail(KN_ERR_ARG, "adamw set_average_count: count must be >= 0, got %lld", (long long)count);
    o->avg_count = count;
    return KN_OK;
}

static void swap_floats(float *restrict x, float *restrict y, size_t n)
{
    for (size_t i = 0; i < n; i++) { float t = x[i]; x[i] = y[i]; y[i] = t; }
}

kn_status kn_adamw_swap_average(kn_adamw *o)
{
    if (!o->avg || o->avg_count == 0)
        return kn_fail(KN_ERR_ARG, "adamw swap_average: no averaged weights yet (%s)",
                       o->avg ? "no averaging step has run" : "averaging was never selected");
    float *P = kn_gpt_params(o->g);
    for (int i = 0; i < o->n_tensors; i++) {
        const kn_param_info *pi = kn_gpt_param_info(o->g, i);
        swap_floats(P + pi->offset, o->avg + pi->offset, pi->numel);
    }
    o->swapped = !o->swapped;
    return KN_OK;
}
