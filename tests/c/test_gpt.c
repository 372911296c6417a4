/* test_gpt.c — the whole model: names and layout, init, every parameter's gradient against
 * central finite differences of an independent double-precision model (tests/c/ref.h),
 * loss weighting (equal / zero / normalized), gradient accumulation, determinism, errors. */
#include "kn.h"
#include "gpt.h"
#include "pool.h"
#include "kernels.h"
#include "rng.h"
#include "check.h"
#include "ref.h"
#include "gpt_setup.h"

#include <stdio.h>

static double *params_double(kn_gpt *g)
{
    size_t n = kn_gpt_num_params(g);
    double *d = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) d[i] = kn_gpt_params(g)[i];
    return d;
}

/* Every parameter: analytic float gradient vs central differences of the double model.
 * Reports the worst ratio |g - fd| / (1e-6 + 1e-4·|fd|): float rounding alone stays far
 * below 1, a wrong term in any backward does not. */
static size_t n_checked;

static double gradcheck(kn_gpt *g, const int32_t *x, const int32_t *y, int B, int T,
                        const float *w, bool normalize, double *maxabs, double *gnorm)
{
    n_checked = 0;
    float loss;
    kn_gpt_zero_grad(g);
    if (kn_gpt_forward(g, x, y, B, T, w, normalize, &loss) || kn_gpt_backward(g, 1.0f)) {
        printf("# %s\n", kn_errmsg());
        return INFINITY;
    }
    double *p = params_double(g);
    const float *gr = kn_gpt_grads(g);
    double worst = 0.0, m = 0.0, n2 = 0.0, h = 1e-5;
    for (int i = 0; i < kn_gpt_num_tensors(g); i++) {
        const kn_param_info *t = kn_gpt_param_info(g, i);
        for (size_t j = 0; j < t->numel; j++) {
            size_t k = t->offset + j;
            double s = p[k];
            p[k] = s + h;
            double lp = ref_gpt_loss(g, p, x, y, B, T, w, normalize, NULL, NULL);
            p[k] = s - h;
            double lm = ref_gpt_loss(g, p, x, y, B, T, w, normalize, NULL, NULL);
            p[k] = s;
            double fd = (lp - lm) / (2 * h), e = fabs(gr[k] - fd);
            double r = e / (1e-6 + 1e-4 * fabs(fd));
            if (!(r <= worst)) worst = r;
            if (e > m) m = e;
            n2 += fd * fd;
            n_checked++;
        }
    }
    free(p);
    *maxabs = m;
    *gnorm = sqrt(n2);
    return worst;
}

static const kn_gpt_config TINY = {.vocab_size = 11, .block_size = 8, .n_layer = 2, .n_head = 3, .n_embd = 12};

static void test_config_and_layout(void)
{
    kn_gpt_config c = TINY;
    c.n_embd = 100; c.n_head = 3;
    CHECK_FAILS(kn_gpt_config_check(&c), "n_embd (100) must be divisible by n_head (3)", "config: n_embd/n_head named");
    c = TINY; c.vocab_size = 0;
    CHECK_FAILS(kn_gpt_config_check(&c), "vocab_size (0)", "config: vocab_size named");
    c = TINY; c.block_size = -1;
    CHECK_FAILS(kn_gpt_config_check(&c), "block_size (-1)", "config: block_size named");
    c = TINY; c.n_layer = 0;
    kn_gpt *bad = NULL;
    CHECK_FAILS(kn_gpt_new(&bad, &c), "n_layer (0)", "kn_gpt_new refuses n_layer 0");
    CHECK(bad == NULL, "no model is returned on error");
    c = TINY; c.n_head = 0;
    CHECK_FAILS(kn_gpt_config_check(&c), "n_head (0)", "config: n_head named");
    CHECK_OK(kn_gpt_config_check(&TINY), "tiny config is valid");

    kn_gpt *g = make(TINY, 1);
    int d = 12, V = 11, L = 2;
    CHECK(kn_gpt_num_tensors(g) == 2 + 12 * L + 2, "tensor count 2 + 12·L + 2");
    const kn_param_info *t0 = kn_gpt_param_info(g, 0), *t1 = kn_gpt_param_info(g, 1);
    CHECK(!strcmp(t0->name, "transformer.wte.weight") && t0->shape[0] == V && t0->shape[1] == d &&
          !strcmp(t1->name, "transformer.wpe.weight") && t1->shape[0] == 8 && t1->shape[1] == d,
          "wte [V,d] then wpe [block_size,d]");
    static const char *order[12] = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
        "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight",
        "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
    int ok = 1;
    char nm[96];
    for (int l = 0; l < L; l++)
        for (int f = 0; f < 12; f++) {
            snprintf(nm, sizeof nm, "transformer.h.%d.%s", l, order[f]);
            ok &= kn_gpt_find(g, nm) == 2 + 12 * l + f && kn_gpt_param_info(g, 2 + 12 * l + f)->layer == l;
        }
    CHECK(ok, "per-layer tensors in nanoGPT state_dict order");
    CHECK(kn_gpt_find(g, "transformer.ln_f.weight") == 2 + 12 * L && kn_gpt_find(g, "transformer.ln_f.bias") == 3 + 12 * L,
          "ln_f last");
    CHECK(kn_gpt_find(g, "transformer.h.9.ln_1.weight") == -1 && kn_gpt_find(g, "lm_head.weight") == -1,
          "unknown names are -1 (lm_head is tied, not a tensor)");
    const kn_param_info *ca = kn_gpt_param_info(g, kn_gpt_find(g, "transformer.h.1.attn.c_attn.weight"));
    const kn_param_info *mp = kn_gpt_param_info(g, kn_gpt_find(g, "transformer.h.0.mlp.c_proj.weight"));
    const kn_param_info *fb = kn_gpt_param_info(g, kn_gpt_find(g, "transformer.h.0.mlp.c_fc.bias"));
    CHECK(ca->shape[0] == 3 * d && ca->shape[1] == d && mp->shape[0] == d && mp->shape[1] == 4 * d &&
          fb->ndim == 1 && fb->shape[0] == 4 * d && ca->kind == KN_PARAM_MATRIX && fb->kind == KN_PARAM_BIAS,
          "shapes [out,in] and kinds");
    size_t end = 0, numel = 0;
    ok = 1;
    for (int i = 0; i < kn_gpt_num_tensors(g); i++) {
        const kn_param_info *t = kn_gpt_param_info(g, i);
        ok &= t->offset >= end && t->offset % 16 == 0;
        end = t->offset + t->numel;
        numel += t->numel;
    }
    size_t expect = (size_t)V * d + 8 * d + L * (12 * (size_t)d * d + 13 * (size_t)d) + 2 * d;
    CHECK(ok && end <= kn_gpt_num_params(g) && numel == expect,
          "tensors are disjoint, 64-byte aligned, in order; %zu parameters", numel);
    kn_gpt_free(g);

    /* init statistics on a config large enough to measure them */
    kn_gpt_config mc = {.vocab_size = 256, .block_size = 64, .n_layer = 4, .n_head = 4, .n_embd = 64};
    g = make(mc, 7);
    const float *p = kn_gpt_params(g);
    double sd_fc = 0, sd_proj = 0;
    const kn_param_info *fc = kn_gpt_param_info(g, kn_gpt_find(g, "transformer.h.2.mlp.c_fc.weight"));
    const kn_param_info *pr = kn_gpt_param_info(g, kn_gpt_find(g, "transformer.h.2.mlp.c_proj.weight"));
    for (size_t j = 0; j < fc->numel; j++) sd_fc += (double)p[fc->offset + j] * p[fc->offset + j];
    for (size_t j = 0; j < pr->numel; j++) sd_proj += (double)p[pr->offset + j] * p[pr->offset + j];
    sd_fc = sqrt(sd_fc / fc->numel);
    sd_proj = sqrt(sd_proj / pr->numel);
    double want = 0.02 / sqrt(8.0);
    CHECK(fabs(sd_fc - 0.02) < 0.001 && fabs(sd_proj - want) < 0.05 * want,
          "init std: c_fc %.4f (0.02), c_proj %.5f (%.5f)", sd_fc, sd_proj, want);
    const kn_param_info *lw = kn_gpt_param_info(g, kn_gpt_find(g, "transformer.h.3.ln_2.weight"));
    const kn_param_info *lb = kn_gpt_param_info(g, kn_gpt_find(g, "transformer.ln_f.bias"));
    const kn_param_info *ab = kn_gpt_param_info(g, kn_gpt_find(g, "transformer.h.0.attn.c_attn.bias"));
    ok = 1;
    for (size_t j = 0; j < lw->numel; j++) ok &= p[lw->offset + j] == 1.0f;
    for (size_t j = 0; j < lb->numel; j++) ok &= p[lb->offset + j] == 0.0f;
    for (size_t j = 0; j < ab->numel; j++) ok &= p[ab->offset + j] == 0.0f;
    CHECK(ok, "init: LayerNorm weights 1, biases 0");
    kn_gpt *g2 = make(mc, 7), *g3 = make(mc, 8);
    CHECK(!memcmp(kn_gpt_params(g2), p, sizeof(float) * kn_gpt_num_params(g)) &&
          memcmp(kn_gpt_params(g3), p, sizeof(float) * kn_gpt_num_params(g)),
          "init is a function of the seed");
    kn_gpt_free(g); kn_gpt_free(g2); kn_gpt_free(g3);
}

static void test_gradients(void)
{
    kn_gpt *g = make(TINY, 3);
    perturb(g, 0.3);
    int B = 2, T = 7, V = 11;
    int32_t x[14], y[14];
    rand_tokens(x, B * T, V);
    rand_tokens(y, B * T, V);
    CHECK_OK(kn_gpt_reserve(g, B, T), "reserve B=2, T=7");

    /* forward: float model vs double model */
    float loss;
    CHECK_OK(kn_gpt_forward(g, x, y, B, T, NULL, false, &loss), "forward");
    double *p = params_double(g), *ce = malloc(sizeof(double) * B * T), *lg = malloc(sizeof(double) * B * T * V);
    double ref = ref_gpt_loss(g, p, x, y, B, T, NULL, 0, ce, lg);
    double lerr = 0.0, cerr = 0.0;
    float *lk = all_logits(g, B, T);
    for (int i = 0; i < B * T * V; i++) lerr = fmax(lerr, fabs(lk[i] - lg[i]));
    free(lk);
    for (int i = 0; i < B * T; i++) cerr = fmax(cerr, fabs(kn_gpt_token_losses(g)[i] - ce[i]));
    CHECK(fabs(loss - ref) < 2e-6 * fabs(ref) && lerr < 2e-5 && cerr < 2e-5,
          "loss %.7f vs double %.7f; logits max err %.2g, per-token CE max err %.2g", loss, ref, lerr, cerr);
    free(p); free(ce); free(lg);

    double m, gn, r;
    r = gradcheck(g, x, y, B, T, NULL, false, &m, &gn);
    CHECK(r <= 1, "all %zu gradients vs finite differences of the double model (worst %.2g of tolerance, max abs err %.2g, |g| %.3g)",
          n_checked, r, m, gn);
    float w[7] = {1.5f, 0.0f, 0.25f, 2.0f, 1.0f, 0.5f, 0.75f};
    r = gradcheck(g, x, y, B, T, w, false, &m, &gn);
    CHECK(r <= 1, "weighted loss gradients vs finite differences (worst %.2g, max abs err %.2g)", r, m);
    r = gradcheck(g, x, y, B, T, w, true, &m, &gn);
    CHECK(r <= 1, "weighted normalized loss gradients vs finite differences (worst %.2g, max abs err %.2g)", r, m);
    kn_gpt_free(g);

    /* the exact (erf) GELU: the double model follows the config, so forward and every
     * gradient are checked against that form; the tanh model's loss is measurably different */
    kn_gpt_config ec = TINY;
    ec.activation = KN_GELU_ERF;
    g = make(ec, 3);
    kn_gpt *gt = make(TINY, 3);
    perturb(g, 0.3);
    memcpy(kn_gpt_params(gt), kn_gpt_params(g), sizeof(float) * kn_gpt_num_params(g));
    float loss_t;
    CHECK_OK(kn_gpt_forward(g, x, y, B, T, NULL, false, &loss), "forward with activation = KN_GELU_ERF");
    CHECK_OK(kn_gpt_forward(gt, x, y, B, T, NULL, false, &loss_t), "the same parameters with the tanh form");
    p = params_double(g);
    ref = ref_gpt_loss(g, p, x, y, B, T, NULL, 0, NULL, NULL);
    CHECK(fabs(loss - ref) < 2e-6 * fabs(ref) && fabs(loss - loss_t) > 2e-6,
          "erf GELU: loss %.7f vs double %.7f; the tanh form gives %.7f", loss, ref, loss_t);
    free(p);
    r = gradcheck(g, x, y, B, T, w, false, &m, &gn);
    CHECK(r <= 1, "erf GELU: all %zu gradients vs finite differences (worst %.2g, max abs err %.2g)", n_checked, r, m);
    kn_gpt_free(g);
    kn_gpt_free(gt);
    ec.activation = (kn_activation)2;
    CHECK_FAILS(kn_gpt_config_check(&ec), "activation (2) must be", "an unknown activation is refused");

    /* a longer context spans several attention tiles */
    kn_gpt_config lc = {.vocab_size = 7, .block_size = 2 * KN_ATT_BLOCK + 20, .n_layer = 1, .n_head = 2, .n_embd = 8};
    g = make(lc, 4);
    perturb(g, 0.3);
    int LT = 2 * KN_ATT_BLOCK + 13;
    int32_t lx[2 * KN_ATT_BLOCK + 13], ly[2 * KN_ATT_BLOCK + 13];
    rand_tokens(lx, LT, 7);
    rand_tokens(ly, LT, 7);
    r = gradcheck(g, lx, ly, 1, LT, NULL, false, &m, &gn);
    CHECK(r <= 1, "T=%d (three attention tiles): %zu gradients vs finite differences (worst %.2g, max abs err %.2g)",
          LT, n_checked, r, m);
    kn_gpt_free(g);
}

static void grads_after(kn_gpt *g, const int32_t *x, const int32_t *y, int B, int T, const float *w,
                        bool normalize, float *loss, float *out)
{
    kn_gpt_zero_grad(g);
    kn_status st = kn_gpt_forward(g, x, y, B, T, w, normalize, loss);
    if (!st) st = kn_gpt_backward(g, 1.0f);
    if (st) printf("# %s\n", kn_errmsg());
    memcpy(out, kn_gpt_grads(g), sizeof(float) * kn_gpt_num_params(g));
}

static double rel_diff(const float *a, const float *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) { d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); s += (double)b[i] * b[i]; }
    return sqrt(d / (s > 0 ? s : 1));
}

static void test_weighting(void)
{
    kn_gpt *g = make(TINY, 5);
    perturb(g, 0.2);
    int B = 2, T = 7, V = 11;
    size_t np = kn_gpt_num_params(g);
    int32_t x[14], y[14];
    rand_tokens(x, B * T, V);
    rand_tokens(y, B * T, V);
    float *g0 = malloc(sizeof(float) * np), *g1 = malloc(sizeof(float) * np), *g2 = malloc(sizeof(float) * np);
    float l0, l1, l2;
    float ones[7] = {1, 1, 1, 1, 1, 1, 1}, halves[7] = {.5f, .5f, .5f, .5f, .5f, .5f, .5f};
    grads_after(g, x, y, B, T, NULL, false, &l0, g0);
    grads_after(g, x, y, B, T, ones, false, &l1, g1);
    CHECK(l0 == l1 && !memcmp(g0, g1, sizeof(float) * np), "weights all 1 == unweighted (loss %.6f, bit for bit)", l0);
    grads_after(g, x, y, B, T, halves, false, &l1, g1);
    grads_after(g, x, y, B, T, halves, true, &l2, g2);
    CHECK(fabs(l1 - 0.5f * l0) < 1e-6 && rel_diff(g1, g0, np) > 0.4,
          "weights all 0.5: loss halves (%.6f vs %.6f)", l1, l0);
    CHECK(fabs(l2 - l0) < 1e-6 && rel_diff(g2, g0, np) < 1e-6,
          "weights all 0.5 with normalize == unweighted (loss %.6f, grad rel diff %.2g)", l2, rel_diff(g2, g0, np));

    /* normalize divides by mean(w) */
    float w[7] = {0.2f, 1.0f, 3.0f, 0.0f, 1.0f, 0.5f, 2.0f};
    double mw = (0.2 + 1 + 3 + 0 + 1 + 0.5 + 2) / 7.0;
    grads_after(g, x, y, B, T, w, false, &l1, g1);
    grads_after(g, x, y, B, T, w, true, &l2, g2);
    double gd = 0;
    for (size_t i = 0; i < np; i++) gd = fmax(gd, fabs(g2[i] - g1[i] / mw));
    CHECK(fabs(l2 - l1 / mw) < 1e-5 && gd < 1e-6, "normalize: loss and gradient divided by mean(w) = %.4f", mw);

    /* zero weights on positions 4..6: the targets there do not matter, and nothing flows to
     * wpe rows 4..6 (causality: those positions only feed later, zero-weighted losses) */
    float wz[7] = {1, 0.5f, 2, 1, 0, 0, 0};
    int32_t y2[14];
    memcpy(y2, y, sizeof y);
    for (int b = 0; b < B; b++)
        for (int t = 4; t < T; t++) y2[b * T + t] = (y[b * T + t] + 3) % V;
    grads_after(g, x, y, B, T, wz, false, &l1, g1);
    grads_after(g, x, y2, B, T, wz, false, &l2, g2);
    CHECK(l1 == l2 && !memcmp(g1, g2, sizeof(float) * np),
          "zero-weighted positions: changing their targets changes neither loss nor gradients");
    const kn_param_info *pe = kn_gpt_param_info(g, kn_gpt_find(g, "transformer.wpe.weight"));
    int zero_tail = 1, nonzero_head = 0;
    for (int t = 0; t < 8; t++)
        for (int j = 0; j < 12; j++) {
            float v = g1[pe->offset + (size_t)t * 12 + j];
            if (t >= 4) zero_tail &= v == 0.0f;
            else nonzero_head |= v != 0.0f;
        }
    CHECK(zero_tail && nonzero_head, "zero-weighted positions: wpe rows 4..7 get exactly zero gradient, rows 0..3 do not");
    grads_after(g, x, y2, B, T, NULL, false, &l2, g2);
    CHECK(memcmp(g1, g2, sizeof(float) * np) != 0, "(and without the weights those targets do matter)");

    /* gradient accumulation: 2 half batches with grad_scale 0.5 == the full batch */
    int32_t x4[28], y4[28];
    rand_tokens(x4, 28, V);
    rand_tokens(y4, 28, V);
    float lf, la, lb;
    grads_after(g, x4, y4, 4, T, w, false, &lf, g0);
    kn_gpt_zero_grad(g);
    kn_gpt_forward(g, x4, y4, 2, T, w, false, &la);
    kn_gpt_backward(g, 0.5f);
    kn_gpt_forward(g, x4 + 14, y4 + 14, 2, T, w, false, &lb);
    kn_gpt_backward(g, 0.5f);
    double rd = rel_diff(kn_gpt_grads(g), g0, np);
    CHECK(fabs(0.5 * (la + lb) - lf) < 1e-6 && rd < 1e-6,
          "accumulation: 2 × B=2 with grad_scale 0.5 == B=4 (loss %.6f vs %.6f, grad rel diff %.2g)", 0.5 * (la + lb), lf, rd);
    kn_gpt_free(g);
    free(g0); free(g1); free(g2);
}

/* A few steps of plain SGD; returns the last loss and leaves the grads in place. */
static float run_steps(kn_gpt *g, const int32_t *x, const int32_t *y, int B, int T, int steps)
{
    float loss = 0;
    for (int s = 0; s < steps; s++) {
        kn_gpt_zero_grad(g);
        kn_gpt_forward(g, x, y, B, T, NULL, false, &loss);
        kn_gpt_backward(g, 1.0f);
        float *p = kn_gpt_params(g);
        const float *gr = kn_gpt_grads(g);
        if (s + 1 < steps)
            for (size_t i = 0; i < kn_gpt_num_params(g); i++) p[i] -= 0.05f * gr[i];
    }
    return loss;
}

static void test_determinism(void)
{
    /* big enough that the pool and the tiled attention really split work */
    kn_gpt_config c = {.vocab_size = 64, .block_size = 2 * KN_ATT_BLOCK + 7, .n_layer = 2, .n_head = 4, .n_embd = 32};
    int B = 3, T = 2 * KN_ATT_BLOCK + 7;
    int32_t *x = malloc(sizeof(int32_t) * B * T), *y = malloc(sizeof(int32_t) * B * T);
    rand_tokens(x, B * T, 64);
    rand_tokens(y, B * T, 64);
    int saved = kn_get_threads();
    for (int nt = 1; nt <= 2; nt++) {
        kn_set_threads(nt);
        kn_gpt *a = make(c, 42), *b = make(c, 42), *d = make(c, 43);
        float la = run_steps(a, x, y, B, T, 3), lb = run_steps(b, x, y, B, T, 3), ld = run_steps(d, x, y, B, T, 3);
        size_t np = kn_gpt_num_params(a);
        CHECK(la == lb && !memcmp(kn_gpt_grads(a), kn_gpt_grads(b), sizeof(float) * np) &&
              !memcmp(kn_gpt_params(a), kn_gpt_params(b), sizeof(float) * np),
              "%d thread(s): same seed, 3 steps: bit-identical loss (%.7f), grads and params", nt, la);
        CHECK(la != ld, "%d thread(s): another seed gives another loss (%.7f vs %.7f)", nt, la, ld);
        kn_gpt_free(a); kn_gpt_free(b); kn_gpt_free(d);
    }
    kn_set_threads(saved);
    free(x); free(y);
}

static void test_errors_and_shapes(void)
{
    kn_gpt *g = make(TINY, 9);
    int B = 2, T = 7;
    int32_t x[16], y[16];
    rand_tokens(x, 16, 11);
    rand_tokens(y, 16, 11);
    float loss = -1;
    CHECK_FAILS(kn_gpt_backward(g, 1.0f), "forward", "backward before any forward is an error");
    int32_t bad[14];
    memcpy(bad, x, sizeof bad);
    bad[10] = 11;
    CHECK_FAILS(kn_gpt_forward(g, bad, y, B, T, NULL, false, &loss), "token 11 at position [b=1, t=3]",
                "input token 11 (= V) rejected with its position");
    bad[10] = -2;
    CHECK_FAILS(kn_gpt_forward(g, x, bad, B, T, NULL, false, &loss), "target token -2 at position [b=1, t=3]",
                "negative target rejected with its position");
    CHECK_FAILS(kn_gpt_forward(g, x, y, 1, 9, NULL, false, &loss), "block_size", "T > block_size rejected");
    CHECK_FAILS(kn_gpt_reserve(g, 1, 9), "block_size", "reserve T > block_size rejected");
    CHECK_FAILS(kn_gpt_forward(g, x, y, 0, 7, NULL, false, &loss), "B (0)", "B = 0 rejected");
    CHECK_FAILS(kn_gpt_reserve(g, 1 << 30, 8), "tokens per batch", "absurd B·T rejected before allocating");
    float wz[7] = {0};
    CHECK_FAILS(kn_gpt_forward(g, x, y, B, T, wz, true, &loss), "sum to 0", "normalize with all-zero weights rejected");
    float wn[7] = {1, 1, NAN, 1, 1, 1, 1};
    CHECK_FAILS(kn_gpt_forward(g, x, y, B, T, wn, false, &loss), "position 2", "NaN weight rejected with its position");
    CHECK(loss == -1, "loss_out untouched by failed calls");

    /* reserve B=2, T=7; then T=5 and B=1 reuse; logits only without targets */
    CHECK_OK(kn_gpt_reserve(g, 2, 7), "reserve");
    size_t mem = kn_gpt_memory_bytes(g);
    double *p = params_double(g);
    CHECK_OK(kn_gpt_forward(g, x, y, 2, 5, NULL, false, &loss), "forward with T=5 < reserved T=7");
    double ref = ref_gpt_loss(g, p, x, y, 2, 5, NULL, 0, NULL, NULL);
    CHECK(fabs(loss - ref) < 1e-5 && kn_gpt_memory_bytes(g) == mem,
          "T=5 loss %.6f matches the double model %.6f, no reallocation", loss, ref);
    CHECK_OK(kn_gpt_backward(g, 1.0f), "backward with T=5");
    float l3 = 0;
    CHECK_OK(kn_gpt_forward(g, x, NULL, 1, 3, NULL, false, &l3), "forward without targets");
    double *lg = malloc(sizeof(double) * 3 * 11);
    ref_gpt_loss(g, p, x, NULL, 1, 3, NULL, 0, NULL, lg);
    double e = 0;
    float *lk = all_logits(g, 1, 3);
    for (int i = 0; i < 33; i++) e = fmax(e, fabs(lk[i] - lg[i]));
    free(lk);
    CHECK(e < 1e-5 && l3 == 0 && kn_gpt_token_losses(g) == NULL, "logits-only forward: logits match (err %.2g), loss untouched", e);
    CHECK_FAILS(kn_gpt_backward(g, 1.0f), "targets", "backward after a forward without targets is an error");
    /* a larger batch than reserved grows the arena */
    int32_t x8[64], y8[64];
    rand_tokens(x8, 64, 11);
    rand_tokens(y8, 64, 11);
    CHECK_OK(kn_gpt_forward(g, x8, y8, 8, 8, NULL, false, &loss), "forward with B=8, T=8 > reserved");
    ref = ref_gpt_loss(g, p, x8, y8, 8, 8, NULL, 0, NULL, NULL);
    CHECK(fabs(loss - ref) < 1e-5 && kn_gpt_memory_bytes(g) > mem, "grown arena: loss %.6f matches %.6f", loss, ref);

    /* interruption leaves parameters untouched */
    float *before = malloc(sizeof(float) * kn_gpt_num_params(g));
    memcpy(before, kn_gpt_params(g), sizeof(float) * kn_gpt_num_params(g));
    kn_interrupted = 1;
    CHECK(kn_gpt_forward(g, x, y, B, T, NULL, false, &loss) == KN_ERR_INTERRUPTED, "forward polls kn_interrupted");
    kn_interrupted = 0;
    CHECK_OK(kn_gpt_forward(g, x, y, B, T, NULL, false, &loss), "forward after clearing the flag");
    kn_interrupted = 1;
    CHECK(kn_gpt_backward(g, 1.0f) == KN_ERR_INTERRUPTED &&
          !memcmp(before, kn_gpt_params(g), sizeof(float) * kn_gpt_num_params(g)),
          "backward polls kn_interrupted; parameters untouched");
    kn_interrupted = 0;
    free(before); free(p); free(lg);
    kn_gpt_free(g);
}

/* The activation arena is a formula with no T² and no B·T·V term. */
static void test_arena_formula(void)
{
    kn_gpt_config c = {.vocab_size = 4096, .block_size = 4096, .n_layer = 3, .n_head = 4, .n_embd = 64};
    int nt = kn_pool_threads(), hs = 16, chunk = 256;
    size_t f256 = kn_gpt_arena_bytes(&c, 16, 256, chunk, nt, true);
    size_t f4096 = kn_gpt_arena_bytes(&c, 1, 4096, chunk, nt, true);
    size_t s256 = sizeof(float) * kn_attention_scratch_floats(256, hs, nt);
    size_t s4096 = sizeof(float) * kn_attention_scratch_floats(4096, hs, nt);
    CHECK(f4096 - s4096 == f256 - s256,
          "arena: at B·T = 4096, T = 256 -> 4096 changes nothing but the attention scratch (%zu vs %zu bytes)",
          f256, f4096);
    CHECK(s4096 <= 16 * s256 + 4096 && s4096 <= (size_t)nt * 4096 * 64 * 8 * sizeof(float),
          "arena: the attention scratch is linear in T (%zu -> %zu bytes) and position-embedding sized per thread",
          s256, s4096);
    size_t probs = sizeof(float) * (size_t)c.n_head * 4096 * 4096;
    CHECK(4 * f4096 < probs, "arena at T = 4096 (%zu bytes) is under a quarter of one layer's attention probabilities (%zu)", f4096, probs);
    kn_gpt_config c2 = c;
    c2.vocab_size = 4096 + 1024;
    size_t dv = kn_gpt_arena_bytes(&c2, 16, 256, chunk, nt, true) - f256;
    CHECK(dv == sizeof(float) * 1024 * (size_t)(chunk + c.n_embd),
          "arena: V enters only as chunk·V logits and the V·d output-layer gradient (+%zu bytes for +1024 classes)", dv);
    size_t dv_eval = kn_gpt_arena_bytes(&c2, 16, 256, chunk, nt, false) - kn_gpt_arena_bytes(&c, 16, 256, chunk, nt, false);
    CHECK(dv_eval == sizeof(float) * 1024 * (size_t)chunk, "evaluation arena: V enters only as chunk·V (+%zu bytes)", dv_eval);
    size_t e3 = kn_gpt_arena_bytes(&c, 16, 256, chunk, nt, false);
    kn_gpt_config c6 = c;
    c6.n_layer = 6;
    CHECK(kn_gpt_arena_bytes(&c6, 16, 256, chunk, nt, false) == e3 && e3 < f256 / 2,
          "evaluation arena keeps one layer: same for 3 and 6 layers, %zu vs %zu bytes for training", e3, f256);
    size_t f6 = kn_gpt_arena_bytes(&c6, 16, 256, chunk, nt, true), f3 = f256;
    size_t f12 = kn_gpt_arena_bytes(&(kn_gpt_config){.vocab_size = 4096, .block_size = 4096, .n_layer = 9,
                                                      .n_head = 4, .n_embd = 64}, 16, 256, chunk, nt, true);
    CHECK(f12 - f6 == f6 - f3, "training arena grows by the same amount per layer (%zu bytes per 3 layers)", f6 - f3);

    /* the model allocates exactly what the formula says */
    kn_gpt_config t = {.vocab_size = 300, .block_size = 96, .n_layer = 2, .n_head = 2, .n_embd = 16};
    kn_gpt *g = make(t, 11);
    size_t params = 2 * sizeof(float) * kn_gpt_num_params(g);
    CHECK_OK(kn_gpt_reserve(g, 3, 96), "reserve B=3, T=96");
    size_t want = kn_gpt_arena_bytes(&t, 3, 96, kn_linear_xent_chunk(3 * 96, 300), nt, true);
    CHECK(kn_gpt_memory_bytes(g) - params == want, "reserved activations = the formula (%zu bytes)", want);
    kn_gpt_free(g);
    g = make(t, 11);
    int32_t x[288], y[288];
    rand_tokens(x, 288, 300);
    rand_tokens(y, 288, 300);
    float le = 0, lt = 0;
    CHECK_OK(kn_gpt_evaluate(g, x, y, 3, 96, NULL, false, &le), "evaluate on a fresh model");
    size_t ev = kn_gpt_memory_bytes(g) - params;
    CHECK(ev == kn_gpt_arena_bytes(&t, 3, 96, kn_linear_xent_chunk(3 * 96, 300), nt, false) && ev < want,
          "an evaluation allocates the evaluation formula (%zu bytes, training %zu)", ev, want);
    float *ce = malloc(sizeof(float) * 288);
    memcpy(ce, kn_gpt_token_losses(g), sizeof(float) * 288);
    CHECK_FAILS(kn_gpt_backward(g, 1.0f), "training forward", "backward after an evaluation is refused");
    CHECK_OK(kn_gpt_forward(g, x, y, 3, 96, NULL, false, &lt), "training forward after an evaluation");
    CHECK(le == lt && !memcmp(ce, kn_gpt_token_losses(g), sizeof(float) * 288) &&
          kn_gpt_memory_bytes(g) - params == want,
          "evaluation and training forward give the same losses bit for bit (%.6f); training grew the arena", le);
    CHECK_OK(kn_gpt_backward(g, 1.0f), "backward after the training forward");
    CHECK_OK(kn_gpt_evaluate(g, x, y, 3, 96, NULL, false, &le), "evaluate reuses the training arena");
    CHECK(le == lt && kn_gpt_memory_bytes(g) - params == want, "evaluation in a training arena: same loss, no reallocation");
    free(ce);
    kn_gpt_free(g);
}

int main(void)
{
    kn_rng_seed(&rng, 2024);
    kn_set_threads(2);
    test_config_and_layout();
    test_gradients();
    test_weighting();
    test_determinism();
    test_errors_and_shapes();
    test_arena_formula();
    kn_pool_shutdown();
    CHECK_DONE();
}
