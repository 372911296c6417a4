/* test_adamw.c — AdamW (core/adamw.c) on a tiny GPT's flat buffers: closed forms, hand-computed
 * steps, weight-decay groups, lr_scale, frozen tensors, clipping, non-finite gradients, reset,
 * and a 3-step check against a double-precision transcription of torch's formula. */
#include "adamw.h"
#include "check.h"

#include <float.h>

static const kn_gpt_config CFG = { .vocab_size = 13, .block_size = 7, .n_layer = 2,
                                   .n_head = 2, .n_embd = 6 };

static kn_gpt *model;
static float *P, *G;
static size_t NP;        /* floats in the flat buffer (tensors may be padded apart) */
static size_t NT;        /* floats that belong to a tensor */
static unsigned char *IN; /* IN[i]: float i belongs to a tensor */

static const kn_param_info *info(const char *name)
{
    int i = kn_gpt_find(model, name);
    return i >= 0 ? kn_gpt_param_info(model, i) : NULL;
}

/* Deterministic pseudo-random values in [-1, 1) without zeros (sign(0) is undefined). */
static uint64_t lcg = 12345;
static float urand(void)
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    float x = (float)((double)(lcg >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
    return fabsf(x) < 1e-3f ? 0.5f : x;
}
/* Random values in the tensors, zeros in any padding between them. */
static void fill_random(float *x, size_t n, float s)
{
    for (size_t i = 0; i < n; i++) x[i] = IN[i] ? s * urand() : 0.0f;
}

static float *snap(const float *x)
{
    float *c = malloc(NP * sizeof(float));
    memcpy(c, x, NP * sizeof(float));
    return c;
}

static kn_adamw_hparams plain(float lr)
{
    kn_adamw_hparams h = kn_adamw_defaults();
    h.lr = lr;
    h.clip = 0;
    h.weight_decay = 0;
    return h;
}

static void test_defaults(void)
{
    kn_adamw_hparams h = kn_adamw_defaults();
    CHECK(h.lr == 3e-4f && h.beta1 == 0.9f && h.beta2 == 0.95f && h.eps == 1e-8f &&
          h.weight_decay == 0.1f && h.clip == 1.0f,
          "defaults: lr 3e-4, betas (0.9, 0.95), eps 1e-8, wd 0.1, clip 1");

    kn_adamw *o;
    CHECK_OK(kn_adamw_new(&o, model), "new optimizer");
    int n = kn_gpt_num_tensors(model), bad = 0, n2d = 0, n1d = 0;
    for (int i = 0; i < n; i++) {
        const kn_param_info *pi = kn_gpt_param_info(model, i);
        kn_adamw_group *g = kn_adamw_group_of(o, i);
        float want = pi->ndim == 2 ? 1.0f : 0.0f;
        if (!g || g->wd_scale != want || g->lr_scale != 1.0f || g->frozen) {
            bad++;
            NOTE("group of %s: wd_scale %g lr_scale %g frozen %d", pi->name,
                 g ? (double)g->wd_scale : -1.0, g ? (double)g->lr_scale : -1.0, g ? g->frozen : -1);
        }
        if (pi->ndim == 2) n2d++; else n1d++;
    }
    CHECK(bad == 0 && n2d > 0 && n1d > 0,
          "default groups: all %d 2-D tensors decay (wd_scale 1), %d 1-D ones do not; lr_scale 1",
          n2d, n1d);
    int iw = kn_gpt_find(model, "transformer.wte.weight"), ip = kn_gpt_find(model, "transformer.wpe.weight");
    CHECK(iw >= 0 && ip >= 0 && kn_adamw_group_of(o, iw)->wd_scale == 1.0f &&
          kn_adamw_group_of(o, ip)->wd_scale == 1.0f,
          "embeddings wte and wpe decay, as in nanoGPT (every tensor with dim >= 2)");
    CHECK(kn_adamw_group_of(o, -1) == NULL && kn_adamw_group_of(o, n) == NULL,
          "group_of out of range is NULL");
    size_t nz = 0;
    for (size_t i = 0; i < NP; i++) nz += kn_adamw_m(o)[i] != 0 || kn_adamw_v(o)[i] != 0;
    CHECK(kn_adamw_t(o) == 0 && nz == 0, "fresh optimizer: t = 0, moments zero");
    kn_adamw_free(o);
}

/* beta1 = beta2 = 0, eps = 0, no decay: m = g, v = g², so the update is lr·sign(g) exactly. */
static void test_sign_update(void)
{
    kn_adamw *o;
    CHECK_OK(kn_adamw_new(&o, model), "new optimizer");
    fill_random(P, NP, 1.0f);
    fill_random(G, NP, 1e-3f);
    float *p0 = snap(P);
    kn_adamw_hparams h = plain(0.01f);
    h.beta1 = 0; h.beta2 = 0; h.eps = 0;
    float norm = -1;
    CHECK_OK(kn_adamw_step(o, &h, &norm), "step with betas 0, eps 0");
    double maxerr = 0;
    for (size_t i = 0; i < NP; i++) {
        if (!IN[i]) continue;
        double want = (double)p0[i] - 0.01 * (G[i] > 0 ? 1 : -1);
        double e = fabs((double)P[i] - want);
        if (e > maxerr) maxerr = e;
    }
    CHECK(maxerr < 2e-7, "update = lr·sign(g) for every one of %zu parameters (max err %.3g)", NT, maxerr);
    CHECK(kn_adamw_t(o) == 1, "t incremented once per step");
    CHECK(norm > 0, "grad norm reported even with clipping off (%g)", (double)norm);

    /* lr_scale: the same closed form moves a scaled tensor by lr·lr_scale. */
    const kn_param_info *pi = info("transformer.h.1.mlp.c_fc.weight");
    int idx = kn_gpt_find(model, "transformer.h.1.mlp.c_fc.weight");
    kn_adamw_group_of(o, idx)->lr_scale = 0.25f;
    memcpy(p0, P, NP * sizeof(float));
    CHECK_OK(kn_adamw_step(o, &h, NULL), "step with lr_scale 0.25 on h.1.mlp.c_fc.weight");
    double e_scaled = 0, e_rest = 0;
    for (int k = 0; k < kn_gpt_num_tensors(model); k++) {
        const kn_param_info *q = kn_gpt_param_info(model, k);
        double lr = q == pi ? 0.0025 : 0.01;
        for (size_t i = q->offset; i < q->offset + q->numel; i++) {
            double e = fabs((double)P[i] - ((double)p0[i] - lr * (G[i] > 0 ? 1 : -1)));
            if (q == pi) { if (e > e_scaled) e_scaled = e; } else if (e > e_rest) e_rest = e;
        }
    }
    CHECK(e_scaled < 2e-7 && e_rest < 2e-7,
          "lr_scale 0.25: that tensor moves by 0.25·lr, the others by lr (errors %.3g, %.3g)",
          e_scaled, e_rest);
    free(p0);
    kn_adamw_free(o);
}

/* Two steps on one element, against numbers worked out by hand (see the comment). */
static void test_hand_steps(void)
{
    kn_adamw *o;
    CHECK_OK(kn_adamw_new(&o, model), "new optimizer");
    memset(G, 0, NP * sizeof(float));
    const kn_param_info *w = info("transformer.h.0.attn.c_proj.weight");
    const kn_param_info *b = info("transformer.h.0.attn.c_proj.bias");
    size_t iw = w->offset + 5, ib = b->offset + 3;
    P[iw] = 0.5f; P[ib] = 0.5f;
    G[iw] = 0.2f; G[ib] = 0.2f;
    kn_adamw_hparams h = kn_adamw_defaults();
    h.lr = 0.1f; h.weight_decay = 0.1f; h.clip = 0;
    CHECK_OK(kn_adamw_step(o, &h, NULL), "hand step 1");
    /* decayed: 0.5·(1-0.01) = 0.495; m = 0.02, v = 0.002; m̂ = 0.2, sqrt(v̂) = 0.2;
     * p = 0.495 - 0.1·0.2/(0.2 + 1e-8) = 0.395000005. The bias: 0.5 - 0.1 = 0.400000005. */
    CHECK(fabsf(P[iw] - 0.395000005f) < 1e-7f, "step 1, decayed weight: 0.395000005 (got %.9g)", (double)P[iw]);
    CHECK(fabsf(P[ib] - 0.400000005f) < 1e-7f, "step 1, bias (no decay): 0.400000005 (got %.9g)", (double)P[ib]);
    CHECK(fabsf(kn_adamw_m(o)[iw] - 0.02f) < 2e-8f && fabsf(kn_adamw_v(o)[iw] - 0.002f) < 2e-9f,
          "step 1 moments: m = 0.02, v = 0.002 to 1e-6 relative; betas are floats (got %.9g, %.9g)",
          (double)kn_adamw_m(o)[iw], (double)kn_adamw_v(o)[iw]);
    G[iw] = -0.1f;
    CHECK_OK(kn_adamw_step(o, &h, NULL), "hand step 2");
    /* p = 0.395000005·0.99 = 0.391050005; m = 0.018 - 0.01 = 0.008; v = 0.0019 + 0.0005 = 0.0024;
     * bc1 = 0.19, bc2 = 0.0975; step = 0.1/0.19·0.008/(sqrt(0.0024)/sqrt(0.0975) + 1e-8)
     * = 0.0268369; p = 0.364213062. */
    CHECK(fabsf(P[iw] - 0.364213062f) < 1e-7f, "step 2, decayed weight: 0.364213062 (got %.9g)", (double)P[iw]);
    CHECK(fabsf(kn_adamw_m(o)[iw] - 0.008f) < 8e-9f && fabsf(kn_adamw_v(o)[iw] - 0.0024f) < 2.4e-9f,
          "step 2 moments: m = 0.008, v = 0.0024 (got %.9g, %.9g)",
          (double)kn_adamw_m(o)[iw], (double)kn_adamw_v(o)[iw]);
    size_t moved = 0;
    for (size_t i = 0; i < NP; i++) moved += (i != iw && i != ib && kn_adamw_m(o)[i] != 0);
    CHECK(moved == 0, "zero gradients leave zero moments elsewhere");

    /* set_t: bias corrections use the restored step count (t = 10 -> this step is t = 11). */
    kn_adamw_reset(o);
    kn_adamw_set_t(o, 10);
    P[ib] = 0.5f; G[ib] = 0.2f;
    CHECK_OK(kn_adamw_step(o, &h, NULL), "step after set_t(10)");
    double m = 0.1 * 0.2, v = 0.05 * 0.04;
    double want = 0.5 - 0.1 / (1 - pow(0.9, 11)) * m / (sqrt(v) / sqrt(1 - pow(0.95, 11)) + 1e-8);
    CHECK(kn_adamw_t(o) == 11 && fabs(P[ib] - want) < 1e-7,
          "set_t(10): next step uses t = 11 in the bias corrections (%.9g vs %.9g)", (double)P[ib], want);
    kn_adamw_free(o);
}

/* Zero gradients: the moments stay zero and the update is 0, so only the decay acts. */
static void test_weight_decay_groups(void)
{
    kn_adamw *o;
    CHECK_OK(kn_adamw_new(&o, model), "new optimizer");
    fill_random(P, NP, 1.0f);
    memset(G, 0, NP * sizeof(float));
    float *p0 = snap(P);
    const kn_param_info *lnb = info("transformer.h.1.ln_2.bias");
    kn_adamw_group_of(o, kn_gpt_find(model, "transformer.h.1.ln_2.bias"))->wd_scale = 2.0f;
    kn_adamw_hparams h = kn_adamw_defaults();
    h.lr = 0.1f; h.weight_decay = 0.5f;
    CHECK_OK(kn_adamw_step(o, &h, NULL), "step with zero gradients, lr 0.1, wd 0.5");
    int bad2 = 0, bad1 = 0, badx = 0;
    for (int k = 0; k < kn_gpt_num_tensors(model); k++) {
        const kn_param_info *q = kn_gpt_param_info(model, k);
        for (size_t i = q->offset; i < q->offset + q->numel; i++) {
            if (q == lnb) badx += P[i] != p0[i] * 0.9f;
            else if (q->ndim == 2) bad2 += P[i] != p0[i] * 0.95f;
            else bad1 += P[i] != p0[i];
        }
    }
    CHECK(bad2 == 0, "every 2-D tensor decays by 1 - lr·wd = 0.95 (%d wrong)", bad2);
    CHECK(bad1 == 0, "1-D tensors (biases, LayerNorm) are not decayed (%d changed)", bad1);
    CHECK(badx == 0, "a bias given wd_scale 2 decays by 1 - lr·wd·2 = 0.9 (%d wrong)", badx);
    free(p0);
    kn_adamw_free(o);
}

static void test_frozen(void)
{
    kn_adamw *o;
    CHECK_OK(kn_adamw_new(&o, model), "new optimizer");
    fill_random(P, NP, 1.0f);
    fill_random(G, NP, 0.1f);
    kn_adamw_hparams h = kn_adamw_defaults();
    h.lr = 0.01f; h.clip = 0;
    CHECK_OK(kn_adamw_step(o, &h, NULL), "first step (builds moments)");
    int fi = kn_gpt_find(model, "transformer.h.0.mlp.c_fc.weight");
    const kn_param_info *f = kn_gpt_param_info(model, fi);
    kn_adamw_group_of(o, fi)->frozen = true;
    float *p0 = snap(P), *m0 = snap(kn_adamw_m(o)), *v0 = snap(kn_adamw_v(o));
    fill_random(G, NP, 0.1f);
    G[f->offset + 1] = NAN;   /* a frozen tensor has no gradient to speak of */
    CHECK_OK(kn_adamw_step(o, &h, NULL), "second step with h.0.mlp.c_fc.weight frozen (its NaN gradient ignored)");
    size_t off = f->offset, n = f->numel;
    CHECK(!memcmp(P + off, p0 + off, n * 4) && !memcmp(kn_adamw_m(o) + off, m0 + off, n * 4) &&
          !memcmp(kn_adamw_v(o) + off, v0 + off, n * 4),
          "frozen tensor: parameters and moments unchanged");
    size_t changed = 0;
    for (size_t i = 0; i < NP; i++) changed += IN[i] && (i < off || i >= off + n) && P[i] != p0[i];
    CHECK(changed == NT - n, "all other parameters moved (%zu of %zu)", changed, NT - n);
    kn_adamw_group_of(o, fi)->frozen = false;
    G[f->offset + 1] = 0.05f;
    CHECK_OK(kn_adamw_step(o, &h, NULL), "unfrozen again");
    CHECK(memcmp(P + off, p0 + off, n * 4) != 0, "unfrozen tensor moves again");
    free(p0); free(m0); free(v0);
    kn_adamw_free(o);
}

static double grad_norm(void)
{
    double s = 0;
    for (size_t i = 0; i < NP; i++) s += (double)G[i] * G[i];
    return sqrt(s);
}

static void test_clipping(void)
{
    kn_adamw *o;
    CHECK_OK(kn_adamw_new(&o, model), "new optimizer");
    fill_random(P, NP, 1.0f);
    fill_random(G, NP, 1.0f);
    float *g0 = snap(G);
    double n0 = grad_norm();
    kn_adamw_hparams h = kn_adamw_defaults();
    h.clip = (float)(n0 / 4);
    float norm = -1;
    CHECK_OK(kn_adamw_step(o, &h, &norm), "step with clip = norm/4");
    CHECK(fabs(norm - n0) <= 1e-6 * n0, "reported norm is the norm before clipping (%.7g vs %.7g)", (double)norm, n0);
    double n1 = grad_norm();
    CHECK(fabs(n1 - h.clip) < 1e-5 * h.clip, "gradients clipped in place to the clip norm (%.7g vs %.7g)", n1, (double)h.clip);
    float coef = (float)(h.clip / (n0 + 1e-6));
    int bad = 0;
    for (size_t i = 0; i < NP; i++) bad += G[i] != g0[i] * coef;
    CHECK(bad == 0, "every gradient scaled by clip/(norm + 1e-6) (%d differ)", bad);
    /* The moments were built from the clipped gradients: with m0 = 0, m = (1-β1)·g_clipped. */
    int badm = 0;
    for (size_t i = 0; i < NP; i++) badm += fabsf(kn_adamw_m(o)[i] - 0.1f * G[i]) > 1e-6f * fabsf(G[i]);
    CHECK(badm == 0, "moments use the clipped gradients");

    memcpy(G, g0, NP * sizeof(float));
    h.clip = (float)(n0 * 2);
    CHECK_OK(kn_adamw_step(o, &h, &norm), "step with clip = 2·norm");
    CHECK(!memcmp(G, g0, NP * 4), "clip above the norm: gradients untouched");
    h.clip = 0;
    CHECK_OK(kn_adamw_step(o, &h, &norm), "step with clipping disabled");
    CHECK(!memcmp(G, g0, NP * 4), "clip <= 0: gradients untouched");
    free(g0);
    kn_adamw_free(o);
}

static void test_nonfinite(void)
{
    kn_adamw *o;
    CHECK_OK(kn_adamw_new(&o, model), "new optimizer");
    fill_random(P, NP, 1.0f);
    fill_random(G, NP, 0.1f);
    kn_adamw_hparams h = kn_adamw_defaults();
    CHECK_OK(kn_adamw_step(o, &h, NULL), "a good step first");
    fill_random(G, NP, 0.1f);
    const kn_param_info *bad = info("transformer.h.1.attn.c_attn.bias");
    G[bad->offset + bad->numel - 1] = NAN;
    G[info("transformer.ln_f.weight")->offset] = INFINITY;   /* later in the order */
    float *p0 = snap(P), *m0 = snap(kn_adamw_m(o)), *v0 = snap(kn_adamw_v(o)), *g0 = snap(G);
    float norm = 0;
    kn_status st = kn_adamw_step(o, &h, &norm);
    CHECK(st == KN_ERR_NONFINITE, "NaN gradient: KN_ERR_NONFINITE (status %d)", (int)st);
    CHECK(strstr(kn_errmsg(), "transformer.h.1.attn.c_attn.bias") != NULL,
          "message names the first tensor with a non-finite gradient: %s", kn_errmsg());
    CHECK(!isfinite(norm), "the non-finite norm is reported");
    CHECK(!memcmp(P, p0, NP * 4) && !memcmp(kn_adamw_m(o), m0, NP * 4) &&
          !memcmp(kn_adamw_v(o), v0, NP * 4) && !memcmp(G, g0, NP * 4) && kn_adamw_t(o) == 1,
          "nothing changed: parameters, moments, gradients, t");
    G[bad->offset + bad->numel - 1] = 0;
    CHECK_FAILS(kn_adamw_step(o, &h, NULL), "transformer.ln_f.weight", "Inf gradient named too");

    h.beta1 = 1.0f;
    CHECK_FAILS(kn_adamw_step(o, &h, NULL), "betas", "beta1 = 1 is refused");
    CHECK(kn_adamw_t(o) == 1 && !memcmp(P, p0, NP * 4), "refused steps change nothing");
    free(p0); free(m0); free(v0); free(g0);
    kn_adamw_free(o);
}

static void test_reset(void)
{
    kn_adamw *o;
    CHECK_OK(kn_adamw_new(&o, model), "new optimizer");
    fill_random(G, NP, 0.1f);
    kn_adamw_group_of(o, 3)->lr_scale = 0.5f;
    kn_adamw_group_of(o, 4)->frozen = true;
    kn_adamw_hparams h = kn_adamw_defaults();
    CHECK_OK(kn_adamw_step(o, &h, NULL), "step 1");
    CHECK_OK(kn_adamw_step(o, &h, NULL), "step 2");
    CHECK(kn_adamw_t(o) == 2, "t = 2 after two steps");
    kn_adamw_reset(o);
    size_t nz = 0;
    for (size_t i = 0; i < NP; i++) nz += kn_adamw_m(o)[i] != 0 || kn_adamw_v(o)[i] != 0;
    CHECK(nz == 0 && kn_adamw_t(o) == 0, "reset zeroes moments and t");
    CHECK(kn_adamw_group_of(o, 3)->lr_scale == 0.5f && kn_adamw_group_of(o, 4)->frozen,
          "reset keeps the groups");
    kn_adamw_free(o);
}

/* Three steps, clipping active, custom groups, against a double-precision transcription of
 * torch's _single_tensor_adamw. */
static void test_reference(void)
{
    kn_adamw *o;
    CHECK_OK(kn_adamw_new(&o, model), "new optimizer");
    fill_random(P, NP, 0.5f);
    int nt = kn_gpt_num_tensors(model);
    for (int k = 0; k < nt; k++) kn_adamw_group_of(o, k)->lr_scale = 1.0f + 0.1f * (float)(k % 3);
    kn_adamw_group_of(o, 1)->wd_scale = 0.5f;
    double *p = malloc(NP * sizeof(double)), *m = calloc(NP, sizeof(double)), *v = calloc(NP, sizeof(double));
    for (size_t i = 0; i < NP; i++) p[i] = P[i];
    kn_adamw_hparams h = { .lr = 0.02f, .beta1 = 0.8f, .beta2 = 0.9f, .eps = 1e-6f,
                           .weight_decay = 0.3f, .clip = 0.5f };
    double maxrel = 0;
    for (int t = 1; t <= 3; t++) {
        fill_random(G, NP, 0.2f);
        double n = grad_norm(), coef = h.clip / (n + 1e-6);
        if (coef > 1) coef = 1;
        float norm;
        CHECK_OK(kn_adamw_step(o, &h, &norm), "reference step %d (norm %.4g, clip coef %.4g)", t, (double)norm, coef);
        double b1 = h.beta1, b2 = h.beta2, bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
        for (int k = 0; k < nt; k++) {
            const kn_param_info *q = kn_gpt_param_info(model, k);
            const kn_adamw_group *gr = kn_adamw_group_of(o, k);
            double lr = (double)h.lr * gr->lr_scale, wd = (double)h.weight_decay * gr->wd_scale;
            for (size_t i = q->offset; i < q->offset + q->numel; i++) {
                double g = (double)G[i];   /* already clipped by the step */
                p[i] *= 1 - lr * wd;
                m[i] = b1 * m[i] + (1 - b1) * g;
                v[i] = b2 * v[i] + (1 - b2) * g * g;
                p[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + h.eps);
            }
        }
        double d = 0, s = 0;
        for (size_t i = 0; i < NP; i++) {
            d = fmax(d, fabs(P[i] - p[i]));
            s = fmax(s, fabs(p[i]));
        }
        maxrel = fmax(maxrel, d / s);
    }
    CHECK(maxrel < 1e-6, "3 clipped steps with groups match the double-precision formula (max rel err %.3g)", maxrel);
    free(p); free(m); free(v);
    kn_adamw_free(o);
}

/* The same steps at 1 and at 3 threads give the same bits (norm blocks are fixed, the
 * update is elementwise). */
static void test_thread_invariance(void)
{
    int saved = kn_get_threads();
    float *out_p[2], *out_m[2], norms[2][2];
    fill_random(P, NP, 0.5f);
    float *p0 = snap(P);
    for (int r = 0; r < 2; r++) {
        kn_set_threads(r == 0 ? 1 : 3);
        memcpy(P, p0, NP * sizeof(float));
        lcg = 777;
        kn_adamw *o;
        CHECK_OK(kn_adamw_new(&o, model), "new optimizer (%d threads)", kn_get_threads());
        kn_adamw_hparams h = kn_adamw_defaults();
        h.clip = 0.3f;
        for (int s = 0; s < 2; s++) {
            fill_random(G, NP, 0.1f);
            CHECK_OK(kn_adamw_step(o, &h, &norms[r][s]), "clipped step %d at %d threads", s + 1, kn_get_threads());
        }
        out_p[r] = snap(P);
        out_m[r] = snap(kn_adamw_m(o));
        kn_adamw_free(o);
    }
    CHECK(!memcmp(out_p[0], out_p[1], NP * 4) && !memcmp(out_m[0], out_m[1], NP * 4) &&
          !memcmp(norms[0], norms[1], sizeof norms[0]),
          "1 and 3 threads: identical norms, parameters and moments, bit for bit");
    for (int r = 0; r < 2; r++) { free(out_p[r]); free(out_m[r]); }
    free(p0);
    kn_set_threads(saved);
}

int main(void)
{
    CHECK_OK(kn_gpt_new(&model, &CFG), "tiny GPT (V 13, T 7, 2 layers, 2 heads, d 6)");
    if (!model) CHECK_DONE();
    P = kn_gpt_params(model);
    G = kn_gpt_grads(model);
    NP = kn_gpt_num_params(model);
    IN = calloc(NP, 1);
    NT = 0;
    for (int k = 0; k < kn_gpt_num_tensors(model); k++) {
        const kn_param_info *q = kn_gpt_param_info(model, k);
        memset(IN + q->offset, 1, q->numel);
        NT += q->numel;
    }
    NOTE("%d tensors, %zu parameters in a flat buffer of %zu floats", kn_gpt_num_tensors(model), NT, NP);
    test_defaults();
    test_sign_update();
    test_hand_steps();
    test_weight_decay_groups();
    test_frozen();
    test_clipping();
    test_nonfinite();
    test_reset();
    test_reference();
    test_thread_invariance();
    kn_gpt_free(model);
    free(IN);
    CHECK_DONE();
}
