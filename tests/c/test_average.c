/* test_average.c — weight averaging fused into the AdamW step (core/adamw.c): EMA, EMA with
 * warmup and the uniform mean, each bit for bit against a scalar float transcription and
 * within rounding of a double-precision one; the averaging schedule (every, start); the
 * parameters and moments of a fused step equal those of a step without averaging; swapping
 * twice restores the raw weights; frozen tensors; thread invariance; refused calls. */
#include "adamw.h"
#include "check.h"

static const kn_gpt_config CFG = { .vocab_size = 13, .block_size = 7, .n_layer = 2,
                                   .n_head = 2, .n_embd = 6 };

static kn_gpt *model;
static float *P, *G;
static size_t NP;
static unsigned char *IN;   /* IN[i]: float i belongs to a tensor (not padding) */

static uint64_t lcg;
static float urand(void)
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(lcg >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}
static void fill_random(float *x, float s)
{
    for (size_t i = 0; i < NP; i++) x[i] = IN[i] ? s * urand() : 0.0f;
}
static float *snap(const float *x)
{
    float *c = malloc(NP * sizeof(float));
    memcpy(c, x, NP * sizeof(float));
    return c;
}
static bool same(const float *a, const float *b)
{
    for (size_t i = 0; i < NP; i++)
        if (IN[i] && memcmp(a + i, b + i, sizeof(float)) != 0) return false;
    return true;
}

static kn_adamw_hparams hp(void)
{
    kn_adamw_hparams h = kn_adamw_defaults();
    h.lr = 1e-2f;
    h.clip = 0.5f;     /* clipping and decay on, so every branch of the fused pass runs */
    return h;
}

static kn_adamw *fresh(const kn_average_cfg *c)
{
    kn_adamw *o = NULL;
    CHECK_OK(kn_adamw_new(&o, model), "new optimizer");
    if (c && o) CHECK_OK(kn_adamw_set_average(o, c), "set_average kind %d decay %g every %lld start %lld",
                         (int)c->kind, c->decay, (long long)c->every, (long long)c->start);
    return o;
}

/* The coefficient a of the k-th blend (k >= 1), transcribed from the documented rule. */
static double coef_a(const kn_average_cfg *c, int64_t k)
{
    if (c->kind == KN_AVERAGE_MEAN) return (double)k / (double)(k + 1);
    double w = (1.0 + (double)k) / (10.0 + (double)k);
    return c->warmup && w < c->decay ? w : c->decay;
}

/* Runs `steps` steps from the parameters p0 with gradients from seed; after each step the
 * core's average must equal a scalar float reference bit for bit (and a double one within
 * rounding), and stay untouched on steps that are not averaging steps. */
static void check_against_reference(const kn_average_cfg *c, const char *what, int steps)
{
    fill_random(P, 0.5f);
    lcg = 99;
    kn_adamw *o = fresh(c);
    if (!o) return;
    float *ref = calloc(NP, sizeof(float));
    double *dref = calloc(NP, sizeof(double));
    int64_t k = 0;
    int bad_bits = 0, bad_skip = 0, bad_count = 0;
    double worst = 0;
    kn_adamw_hparams h = hp();
    for (int s = 1; s <= steps; s++) {
        fill_random(G, 0.1f);
        float *before = snap(kn_adamw_average(o));
        CHECK_OK(kn_adamw_step(o, &h, NULL), "%s: step %d", what, s);
        bool avg_step = s >= c->start && (s - c->start) % c->every == 0;
        if (avg_step) {
            double a = coef_a(c, k);
            float fa = (float)a, fb = (float)(c->kind == KN_AVERAGE_MEAN ? 1.0 / (double)(k + 1) : 1.0 - a);
            for (size_t i = 0; i < NP; i++) {
                if (!IN[i]) continue;
                ref[i] = k == 0 ? P[i] : fa * ref[i] + fb * P[i];
                dref[i] = k == 0 ? P[i] : a * dref[i] + (1.0 - a) * (double)P[i];
            }
            k++;
        } else if (!same(before, kn_adamw_average(o))) {
            bad_skip++;
        }
        if (!same(ref, kn_adamw_average(o))) bad_bits++;
        if (kn_adamw_average_count(o) != k) bad_count++;
        for (size_t i = 0; i < NP; i++)
            if (IN[i] && fabs(kn_adamw_average(o)[i] - dref[i]) > worst) worst = fabs(kn_adamw_average(o)[i] - dref[i]);
        free(before);
    }
    CHECK(bad_bits == 0 && bad_count == 0, "%s: %d steps, %lld averaged; the average equals the scalar float "
          "reference bit for bit after every step and the count follows (%d, %d mismatches)",
          what, steps, (long long)k, bad_bits, bad_count);
    CHECK(bad_skip == 0, "%s: steps that are not averaging steps leave the average untouched", what);
    CHECK(worst < 1e-6, "%s: within %.2g of the double-precision formula (params ~0.5)", what, worst);
    free(ref);
    free(dref);
    kn_adamw_free(o);
}

/* Parameters, moments and t of a run with averaging equal those of the same run without. */
static void test_fused_changes_nothing(void)
{
    kn_average_cfg c = { .kind = KN_AVERAGE_EMA, .decay = 0.99, .every = 1, .start = 1 };
    float *out[2][3];
    fill_random(P, 0.5f);
    float *p0 = snap(P);
    for (int r = 0; r < 2; r++) {
        memcpy(P, p0, NP * sizeof(float));
        lcg = 5;
        kn_adamw *o = fresh(r ? &c : NULL);
        if (!o) return;
        kn_adamw_hparams h = hp();
        for (int s = 0; s < 6; s++) {
            fill_random(G, 0.1f);
            CHECK_OK(kn_adamw_step(o, &h, NULL), "%s step %d", r ? "averaged" : "plain", s + 1);
        }
        out[r][0] = snap(P); out[r][1] = snap(kn_adamw_m(o)); out[r][2] = snap(kn_adamw_v(o));
        if (r) CHECK(!same(P, kn_adamw_average(o)), "the average differs from the parameters (it is not a copy)");
        kn_adamw_free(o);
    }
    CHECK(same(out[0][0], out[1][0]) && same(out[0][1], out[1][1]) && same(out[0][2], out[1][2]),
          "6 steps with EMA averaging give the same parameters and moments, bit for bit, as without");
    for (int r = 0; r < 2; r++) for (int j = 0; j < 3; j++) free(out[r][j]);
    free(p0);
}

static void test_swap(void)
{
    kn_average_cfg c = { .kind = KN_AVERAGE_EMA, .decay = 0.9, .every = 1, .start = 1 };
    fill_random(P, 0.5f);
    lcg = 7;
    kn_adamw *o = fresh(&c);
    if (!o) return;
    kn_adamw_hparams h = hp();
    CHECK_FAILS(kn_adamw_swap_average(o), "no averaged weights yet", "swap before any averaging step is refused");
    for (int s = 0; s < 4; s++) { fill_random(G, 0.1f); kn_adamw_step(o, &h, NULL); }
    float *raw = snap(P), *avg = snap(kn_adamw_average(o));
    CHECK_OK(kn_adamw_swap_average(o), "swap");
    CHECK(same(P, avg) && same(kn_adamw_average(o), raw) && kn_adamw_average_swapped(o),
          "after one swap the model holds the average and the buffer the raw weights");
    fill_random(G, 0.1f);
    CHECK_FAILS(kn_adamw_step(o, &h, NULL), "swap them back", "a step while swapped is refused");
    CHECK_FAILS(kn_adamw_set_average(o, &c), "swap them back", "set_average while swapped is refused");
    CHECK(same(P, avg) && kn_adamw_t(o) == 4, "the refused step changed nothing");
    CHECK_OK(kn_adamw_swap_average(o), "swap back");
    CHECK(same(P, raw) && same(kn_adamw_average(o), avg) && !kn_adamw_average_swapped(o),
          "swapping twice restores parameters and average bit for bit");
    free(raw);
    free(avg);
    kn_adamw_free(o);
}

/* A frozen tensor is not updated, but the average still covers it (a whole model). */
static void test_frozen(void)
{
    kn_average_cfg c = { .kind = KN_AVERAGE_MEAN, .every = 2, .start = 2 };
    fill_random(P, 0.5f);
    lcg = 11;
    kn_adamw *o = fresh(&c);
    if (!o) return;
    int i = kn_gpt_find(model, "transformer.h.0.ln_1.weight");
    const kn_param_info *pi = kn_gpt_param_info(model, i);
    kn_adamw_group_of(o, i)->frozen = true;
    kn_adamw_hparams h = hp();
    for (int s = 0; s < 5; s++) { fill_random(G, 0.1f); kn_adamw_step(o, &h, NULL); }
    CHECK(kn_adamw_average_count(o) == 2 &&
          !memcmp(kn_adamw_average(o) + pi->offset, P + pi->offset, pi->numel * sizeof(float)),
          "frozen %s: the mean of 2 snapshots of an unchanged tensor is the tensor itself", pi->name);
    kn_adamw_free(o);
}

static void test_threads(void)
{
    kn_average_cfg c = { .kind = KN_AVERAGE_EMA, .decay = 0.95, .every = 1, .start = 1 };
    int saved = kn_get_threads();
    float *out[2];
    fill_random(P, 0.5f);
    float *p0 = snap(P);
    for (int r = 0; r < 2; r++) {
        kn_set_threads(r ? 3 : 1);
        memcpy(P, p0, NP * sizeof(float));
        lcg = 13;
        kn_adamw *o = fresh(&c);
        if (!o) return;
        kn_adamw_hparams h = hp();
        for (int s = 0; s < 3; s++) { fill_random(G, 0.1f); kn_adamw_step(o, &h, NULL); }
        out[r] = snap(kn_adamw_average(o));
        kn_adamw_free(o);
    }
    CHECK(same(out[0], out[1]), "1 and 3 threads: the same average, bit for bit");
    free(out[0]); free(out[1]); free(p0);
    kn_set_threads(saved);
}

static void test_refusals(void)
{
    kn_adamw *o = fresh(NULL);
    if (!o) return;
    kn_average_cfg c = { .kind = KN_AVERAGE_EMA, .decay = 1.0, .every = 1, .start = 1 };
    CHECK(kn_adamw_average(o) == NULL && kn_adamw_average_cfg(o).kind == KN_AVERAGE_NONE,
          "no buffer and kind none before set_average");
    CHECK_FAILS(kn_adamw_set_average(o, &c), "decay must be in [0, 1)", "decay 1 refused");
    c.decay = 0.5; c.every = 0;
    CHECK_FAILS(kn_adamw_set_average(o, &c), "every and start must be >= 1", "every 0 refused");
    c.every = 1; c.start = 0;
    CHECK_FAILS(kn_adamw_set_average(o, &c), "every and start must be >= 1", "start 0 refused");
    c.kind = (kn_average_kind)7;
    CHECK_FAILS(kn_adamw_set_average(o, &c), "unknown kind 7", "unknown kind refused");
    CHECK_FAILS(kn_adamw_swap_average(o), "averaging was never selected", "swap without averaging refused");
    CHECK_FAILS(kn_adamw_set_average_count(o, 3), "no average selected", "set_average_count without averaging refused");
    c.kind = KN_AVERAGE_EMA; c.start = 1;
    CHECK_OK(kn_adamw_set_average(o, &c), "valid settings accepted");
    CHECK_FAILS(kn_adamw_set_average_count(o, -1), "count must be >= 0", "negative count refused");
    CHECK_OK(kn_adamw_set_average_count(o, 4), "count restored");
    CHECK(kn_adamw_average_count(o) == 4, "count reads back");
    c.kind = KN_AVERAGE_NONE;
    CHECK_OK(kn_adamw_set_average(o, &c), "averaging turned off");
    float *keep = snap(kn_adamw_average(o));
    fill_random(G, 0.1f);
    kn_adamw_hparams h = hp();
    kn_adamw_step(o, &h, NULL);
    CHECK(kn_adamw_average(o) && same(keep, kn_adamw_average(o)) && kn_adamw_average_count(o) == 0,
          "kind none: the buffer is kept and no longer updated");
    free(keep);
    kn_adamw_free(o);
}

int main(void)
{
    CHECK_OK(kn_gpt_new(&model, &CFG), "tiny GPT (V 13, T 7, 2 layers, 2 heads, d 6)");
    if (!model) CHECK_DONE();
    P = kn_gpt_params(model);
    G = kn_gpt_grads(model);
    NP = kn_gpt_num_params(model);
    IN = calloc(NP, 1);
    for (int k = 0; k < kn_gpt_num_tensors(model); k++) {
        const kn_param_info *q = kn_gpt_param_info(model, k);
        memset(IN + q->offset, 1, q->numel);
    }
    kn_average_cfg ema = { .kind = KN_AVERAGE_EMA, .decay = 0.9, .every = 1, .start = 1 };
    check_against_reference(&ema, "EMA decay 0.9", 7);
    kn_average_cfg sparse = { .kind = KN_AVERAGE_EMA, .decay = 0.8, .every = 3, .start = 2 };
    check_against_reference(&sparse, "EMA every 3 from step 2", 10);
    kn_average_cfg warm = { .kind = KN_AVERAGE_EMA, .decay = 0.999, .every = 1, .start = 1, .warmup = true };
    check_against_reference(&warm, "EMA 0.999 with warmup", 6);
    kn_average_cfg mean = { .kind = KN_AVERAGE_MEAN, .every = 2, .start = 3 };
    check_against_reference(&mean, "uniform mean every 2 from step 3", 11);
    test_fused_changes_nothing();
    test_swap();
    test_frozen();
    test_threads();
    test_refusals();
    kn_gpt_free(model);
    free(IN);
    CHECK_DONE();
}
