/* test_mup.c — the μP options of kn_gpt_config (docs/warmstart.md §1): config checks, the init standard
 * deviations at two widths, μP at width_mult 1 being the standard model, and the forward
 * (attention scale attn_mult/d_head, logit multiplier output_mult/width_mult) and every
 * parameter's gradient against an independent double-precision model with those scales. */
#include "kn.h"
#include "gpt.h"
#include "adamw.h"
#include "rng.h"
#include "check.h"
#include "ref.h"
#include "gpt_setup.h"

#include <stdio.h>

/* The μP GPT in double: ref.h's model with the scales written from the definition (not
 * from gpt.c): attention logits attn_mult·q·k/d_head, logits output_mult/width_mult·ln_f(x)·wteᵀ. */
static double mup_ref_loss(const kn_gpt *g, const double *p, const int32_t *tok, const int32_t *tgt,
                           int B, int T, double *logits_out)
{
    const kn_gpt_config *c = kn_gpt_get_config(g);
    int d = c->n_embd, hs = d / c->n_head;
    double att_scale = c->mup ? c->mup_attn_mult / (double)hs : 1.0 / sqrt((double)hs);
    double om = c->mup ? c->mup_output_mult * c->mup_base_width / (double)d : 1.0;
    return ref_gpt_loss_scaled(g, p, tok, tgt, B, T, NULL, 0, NULL, logits_out, att_scale, om);
}

static const kn_gpt_config BASE = {.vocab_size = 11, .block_size = 8, .n_layer = 2, .n_head = 3, .n_embd = 12};

static kn_gpt_config mup_cfg(kn_gpt_config c, float base, float om, float am)
{
    c.mup = 1;
    c.mup_base_width = base;
    c.mup_output_mult = om;
    c.mup_attn_mult = am;
    return c;
}

static void test_config(void)
{
    kn_gpt_config c = BASE;
    c.mup_base_width = 12;
    CHECK_FAILS(kn_gpt_config_check(&c), "must be 0 unless mup = 1", "mup fields are refused under SP");
    c = mup_cfg(BASE, 0, 1, 1);
    CHECK_FAILS(kn_gpt_config_check(&c), "mup_base_width", "mup_base_width 0 is refused under mup");
    c = mup_cfg(BASE, 12, NAN, 1);
    CHECK_FAILS(kn_gpt_config_check(&c), "mup_output_mult", "a NaN output_mult is refused");
    c = mup_cfg(BASE, 12, 1, -1);
    CHECK_FAILS(kn_gpt_config_check(&c), "mup_attn_mult", "a negative attn_mult is refused");
    c = mup_cfg(BASE, 12, 1, 1);
    c.mup = 2;
    CHECK_FAILS(kn_gpt_config_check(&c), "must be 0 or 1", "mup = 2 is refused");
    c = mup_cfg(BASE, 4, 1, 1);
    CHECK_OK(kn_gpt_config_check(&c), "a mup config with base width 4 is accepted");
}

/* Sample std of a tensor (mean taken as 0, as the init's). */
static double sample_std(const kn_gpt *g, int i, size_t first, size_t n)
{
    const float *w = kn_gpt_params((kn_gpt *)g) + kn_gpt_param_info(g, i)->offset + first;
    double s = 0.0;
    for (size_t j = 0; j < n; j++) s += (double)w[j] * w[j];
    return sqrt(s / (double)n);
}

static void test_init(void)
{
    /* widths 64 and 256 at base 64 (width_mult 1 and 4), two layers */
    const int widths[2] = {64, 256};
    for (int k = 0; k < 2; k++) {
        int d = widths[k];
        kn_gpt_config c = {.vocab_size = 256, .block_size = 64, .n_layer = 2, .n_head = d / 16, .n_embd = d};
        c = mup_cfg(c, 64, 1, 1);
        kn_gpt *g = make(c, 7);
        double wm = d / 64.0;
        CHECK(kn_gpt_width_mult(g) == wm, "d=%d: width_mult %g", d, kn_gpt_width_mult(g));
        /* expected stds written out from the μP table (docs/warmstart.md §1; multiplier form, base std 0.02) */
        const struct { const char *name; double std; } want[] = {
            {"transformer.wte.weight", 0.02},
            {"transformer.wpe.weight", 0.02},
            {"transformer.h.0.attn.c_attn.weight", 0.02 / sqrt(wm)},
            {"transformer.h.1.mlp.c_fc.weight", 0.02 / sqrt(wm)},
            {"transformer.h.0.attn.c_proj.weight", 0.02 / 2.0 / sqrt(wm)},   /* /sqrt(2·2 layers) */
            {"transformer.h.1.mlp.c_proj.weight", 0.01 / sqrt(wm)},
            {"transformer.h.0.ln_1.weight", 0.0},
            {"transformer.h.0.attn.c_attn.bias", 0.0},
        };
        for (size_t j = 0; j < sizeof want / sizeof *want; j++) {
            int i = kn_gpt_find(g, want[j].name);
            const kn_param_info *p = kn_gpt_param_info(g, i);
            double s = kn_gpt_init_std(g, i);
            CHECK(fabs(s - want[j].std) < 1e-12, "d=%d: init std of %s is %.6g (want %.6g)", d, p->name, s, want[j].std);
            if (want[j].std > 0) {
                double m = sample_std(g, i, 0, p->numel);
                /* the sample std of n draws has relative sd ~1/sqrt(2n): allow 4 of those */
                double tol = 4.0 / sqrt(2.0 * (double)p->numel);
                CHECK(fabs(m / want[j].std - 1) < tol, "d=%d: sample std of %s %.5g vs %.5g (rel. tol %.3g)", d,
                      p->name, m, want[j].std, tol);
            }
        }
        kn_gpt_free(g);
    }

    /* zero query: the q third of c_attn is 0, k and v are the draws of the plain init */
    kn_gpt_config c = mup_cfg(BASE, 6, 1, 1);
    kn_gpt *a = make(c, 3);
    c.mup_zero_query = 1;
    kn_gpt *b = make(c, 3);
    int i = kn_gpt_find(b, "transformer.h.1.attn.c_attn.weight");
    const kn_param_info *p = kn_gpt_param_info(b, i);
    size_t dd = (size_t)BASE.n_embd * BASE.n_embd;
    const float *wa = kn_gpt_params(a) + p->offset, *wb = kn_gpt_params(b) + p->offset;
    bool qzero = true, kv_same = true;
    for (size_t j = 0; j < dd; j++) qzero = qzero && wb[j] == 0.0f;
    for (size_t j = dd; j < p->numel; j++) kv_same = kv_same && wa[j] == wb[j];
    CHECK(qzero && kv_same, "mup_zero_query: query rows 0, key/value rows as without the option");
    CHECK(sample_std(a, i, 0, dd) > 0, "without mup_zero_query the query rows are not 0");
    kn_gpt_free(a);
    kn_gpt_free(b);
}

/* μP at width_mult 1 with attn_mult = √d_head is the standard model, bit for bit. */
static void test_base_equals_sp(void)
{
    kn_gpt_config sp = {.vocab_size = 11, .block_size = 8, .n_layer = 2, .n_head = 3, .n_embd = 12};  /* hs 4 */
    kn_gpt *a = make(sp, 5);
    kn_gpt *b = make(mup_cfg(sp, 12, 1, 2.0f), 5);
    bool same_init = memcmp(kn_gpt_params(a), kn_gpt_params(b), sizeof(float) * kn_gpt_num_params(a)) == 0;
    CHECK(same_init, "mup at width_mult 1: the same initial parameters as SP");
    int B = 2, T = 7;
    int32_t x[14], y[14];
    rand_tokens(x, B * T, 11);
    rand_tokens(y, B * T, 11);
    perturb(a, 0.3);
    memcpy(kn_gpt_params(b), kn_gpt_params(a), sizeof(float) * kn_gpt_num_params(a));
    float la, lb;
    kn_gpt_zero_grad(a);
    kn_gpt_zero_grad(b);
    CHECK_OK(kn_gpt_forward(a, x, y, B, T, NULL, false, &la), "SP forward");
    CHECK_OK(kn_gpt_forward(b, x, y, B, T, NULL, false, &lb), "mup forward");
    kn_gpt_backward(a, 1.0f);
    kn_gpt_backward(b, 1.0f);
    CHECK(la == lb && memcmp(kn_gpt_grads(a), kn_gpt_grads(b), sizeof(float) * kn_gpt_num_params(a)) == 0,
          "mup (width_mult 1, attn_mult sqrt(d_head)): loss %.7f == SP %.7f and identical gradients", lb, la);
    kn_gpt_free(a);
    kn_gpt_free(b);
}

static void test_gradients(void)
{
    /* width_mult 2, attention scale 1.3/d_head, output multiplier 0.7/2 */
    kn_gpt *g = make(mup_cfg(BASE, 6, 0.7f, 1.3f), 9);
    perturb(g, 0.5);
    int B = 2, T = 7, V = 11;
    int32_t x[14], y[14];
    rand_tokens(x, B * T, V);
    rand_tokens(y, B * T, V);
    float loss;
    kn_gpt_zero_grad(g);
    CHECK_OK(kn_gpt_forward(g, x, y, B, T, NULL, false, &loss), "mup forward (width_mult 2)");
    CHECK_OK(kn_gpt_backward(g, 1.0f), "mup backward");
    size_t n = kn_gpt_num_params(g);
    double *p = malloc(sizeof(double) * n), *lg = malloc(sizeof(double) * B * T * V);
    for (size_t i = 0; i < n; i++) p[i] = kn_gpt_params(g)[i];
    double ref = mup_ref_loss(g, p, x, y, B, T, lg);
    double lerr = 0.0;
    float *lk = all_logits(g, B, T);
    for (int i = 0; i < B * T * V; i++) lerr = fmax(lerr, fabs(lk[i] - lg[i]));
    free(lk);
    CHECK(fabs(loss - ref) < 2e-6 * fabs(ref) && lerr < 2e-5,
          "mup loss %.7f vs double %.7f; logits max err %.2g", loss, ref, lerr);
    /* the SP reference differs: the scales are really applied */
    double sp = ref_gpt_loss(g, p, x, y, B, T, NULL, 0, NULL, NULL);
    CHECK(fabs(sp - ref) > 1e-3, "the mup loss differs from the SP loss of the same weights (%.5f vs %.5f)", ref, sp);

    const float *gr = kn_gpt_grads(g);
    double worst = 0.0, h = 1e-5;
    size_t checked = 0;
    for (int t = 0; t < kn_gpt_num_tensors(g); t++) {
        const kn_param_info *ti = kn_gpt_param_info(g, t);
        for (size_t j = 0; j < ti->numel; j++) {
            size_t k = ti->offset + j;
            double s = p[k];
            p[k] = s + h;
            double lp = mup_ref_loss(g, p, x, y, B, T, NULL);
            p[k] = s - h;
            double lm = mup_ref_loss(g, p, x, y, B, T, NULL);
            p[k] = s;
            double fd = (lp - lm) / (2 * h);
            double r = fabs(gr[k] - fd) / (1e-6 + 1e-4 * fabs(fd));
            if (!(r <= worst)) worst = r;
            checked++;
        }
    }
    CHECK(worst <= 1, "mup: all %zu gradients vs finite differences of the double model (worst %.2g of tolerance)",
          checked, worst);
    free(p);
    free(lg);
    kn_gpt_free(g);
}

/* Coordinate check (Tensor Programs V, as the `mup` package does it): after a few Adam steps at one LR, how much have the logits
 * moved from their initial values (RMS over the batch), at widths 32..256 (head size fixed,
 * base 32)? Under μP the change should not depend on the width; under SP it grows with it. */
static double logit_change(int d, bool mup, const int32_t *x, const int32_t *y, int B, int T)
{
    kn_gpt_config c = {.vocab_size = 64, .block_size = 16, .n_layer = 2, .n_head = d / 16, .n_embd = d};
    if (mup) c = mup_cfg(c, 32, 1, 4.0f);   /* attn_mult sqrt(16): SP attention at every width */
    kn_gpt *g = make(c, 21);
    kn_adamw *o = NULL;
    if (kn_adamw_new(&o, g) != KN_OK) { printf("# adamw: %s\n", kn_errmsg()); exit(1); }
    double wm = kn_gpt_width_mult(g);
    for (int i = 0; i < kn_gpt_num_tensors(g); i++)
        if (kn_gpt_param_info(g, i)->kind == KN_PARAM_MATRIX) {
            kn_adamw_group_of(o, i)->lr_scale = (float)(1.0 / wm);
            kn_adamw_group_of(o, i)->wd_scale = (float)wm;
        }
    kn_adamw_hparams h = kn_adamw_defaults();
    h.lr = 1e-2f;
    h.weight_decay = 0.0f;
    h.clip = 0.0f;
    size_t n = (size_t)B * T * 64;
    float loss;
    kn_gpt_forward(g, x, y, B, T, NULL, false, &loss);
    float *l0 = all_logits(g, B, T);
    for (int s = 0; s < 5; s++) {
        kn_gpt_zero_grad(g);
        kn_gpt_forward(g, x, y, B, T, NULL, false, &loss);
        kn_gpt_backward(g, 1.0f);
        kn_adamw_step(o, &h, NULL);
    }
    kn_gpt_forward(g, x, y, B, T, NULL, false, &loss);
    double ss = 0.0;
    float *l1 = all_logits(g, B, T);
    for (size_t i = 0; i < n; i++) ss += (l1[i] - l0[i]) * (double)(l1[i] - l0[i]);
    free(l0); free(l1);
    kn_adamw_free(o);
    kn_gpt_free(g);
    return sqrt(ss / (double)n);
}

static void test_coord_check(void)
{
    int B = 4, T = 16;
    int32_t x[64], y[64];
    rand_tokens(x, B * T, 64);
    rand_tokens(y, B * T, 64);
    const int widths[4] = {32, 64, 128, 256};
    double mu[4], sp[4];
    for (int k = 0; k < 4; k++) {
        mu[k] = logit_change(widths[k], true, x, y, B, T);
        sp[k] = logit_change(widths[k], false, x, y, B, T);
        NOTE("coordinate check d=%d: logit RMS change after 5 Adam steps: muP %.4f, SP %.4f", widths[k], mu[k], sp[k]);
    }
    CHECK(mu[0] == sp[0], "coordinate check: muP equals SP at the base width (%.4f)", mu[0]);
    CHECK(mu[3] / mu[0] > 0.5 && mu[3] / mu[0] < 2.0,
          "coordinate check: under muP the logit change stays flat from d=32 to d=256 (ratio %.2f, want 0.5..2)",
          mu[3] / mu[0]);
    CHECK(sp[3] / sp[0] > 2.5, "coordinate check: under SP it grows with width (ratio %.2f, want > 2.5)", sp[3] / sp[0]);
}

int main(void)
{
    kn_rng_seed(&rng, 2024);
    test_config();
    test_init();
    test_base_equals_sp();
    test_gradients();
    test_coord_check();
    CHECK_DONE();
}
