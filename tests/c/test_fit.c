/* test_fit.c — core/fit: every built-in law recovers known parameters from synthetic data
 * (exactly on clean data, within stated tolerances with noise), bounds and fixed
 * parameters hold, a caller's model works, and bad input is refused with a clear message. */
#include "check.h"
#include "fit.h"
#include "rng.h"

#include <math.h>

typedef struct {
    const char *law;
    double p[3];
    double x0, x1;      /* x range; log-spaced when x0 > 0 */
    int n;
    double noise;       /* standard deviation of the added noise */
    double tol[3];      /* allowed |fitted - true| / max(|true|, 1e-3) with that noise */
} case_t;

/* Tolerances: with noise of ~0.5% of the curve's range, the linear parameters come back to
 * a few percent; shifts and exponents, which the data constrain more weakly, to 10-15%. */
static const case_t cases[] = {
    {"position",   {2.0, 0.15, 1.8},   1, 256, 256, 0.01,  {0.05, 0.10, 0.01}},
    {"log",        {4.0, -0.3, 0},     1, 100, 40,  0.005, {0.01, 0.03, 0}},
    {"neglog",     {4.0, 0.3, 0},      1, 100, 40,  0.005, {0.01, 0.03, 0}},
    {"hyperbolic", {0.5, 2.0, 1.5},    0.1, 20, 60, 0.005, {0.05, 0.05, 0.10}},
    {"reciprocal", {2.0, 3.0, 0.5},    0.1, 20, 60, 0.005, {0.02, 0.05, 0.10}},
    {"power",      {1.5, 2.0, 0.5},    0.1, 50, 60, 0.005, {0.05, 0.05, 0.10}},
    {"kaplan",     {1.6, 0.8, 0.4},    0.05, 50, 60, 0.005, {0.05, 0.15, 0.10}},
    {"linear",     {1.0, 2.0, 0},      0, 1, 30,    0.005, {0.02, 0.02, 0}},
    {"constant",   {3.0, 0, 0},        0, 1, 30,    0.005, {0.01, 0, 0}},
};

static void make_data(const case_t *c, double *xs, double *ys, double noise, kn_rng *rng)
{
    int law = kn_fit_law_find(c->law);
    for (int i = 0; i < c->n; i++) {
        double u = c->n > 1 ? (double)i / (c->n - 1) : 0;
        if (strcmp(c->law, "position") == 0) xs[i] = i + 1;
        else if (c->x0 > 0) xs[i] = c->x0 * pow(c->x1 / c->x0, u);
        else xs[i] = c->x0 + (c->x1 - c->x0) * u;
    }
    kn_fit_law_eval(law, c->p, c->n, xs, ys);
    for (int i = 0; i < c->n; i++) ys[i] += noise * kn_rng_normal(rng);
}

typedef struct { int calls; } expctx;
static int expmodel(void *ctx, const double *p, int n, const double *xs, double *out)
{
    ((expctx *)ctx)->calls++;
    for (int i = 0; i < n; i++) out[i] = p[0] * exp(-p[1] * xs[i]) + p[2];
    return 0;
}
static int failing(void *ctx, const double *p, int n, const double *xs, double *out)
{
    (void)ctx; (void)p; (void)n; (void)xs; (void)out;
    return 1;
}

int main(void)
{
    kn_rng rng;
    kn_rng_seed(&rng, 42);
    double xs[512], ys[512];
    kn_fit_result r;

    CHECK(kn_fit_law_count() == 9, "nine built-in laws");
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const case_t *c = &cases[k];
        int law = kn_fit_law_find(c->law);
        int np = kn_fit_law_nparams(law);
        /* Clean data: exact recovery, R² = 1. */
        make_data(c, xs, ys, 0, &rng);
        CHECK_OK(kn_fit_law(law, c->n, xs, ys, NULL, NULL, &r), "%s: fit clean data", c->law);
        double worst = 0;
        for (int j = 0; j < np; j++) worst = fmax(worst, fabs(r.p[j] - c->p[j]) / fmax(fabs(c->p[j]), 1e-3));
        CHECK(worst < 1e-5, "%s: clean data recovers the parameters (worst relative error %.2g)", c->law, worst);
        CHECK(r.r2 >= 0.99 || (strcmp(c->law, "constant") == 0 && isnan(r.r2)),
              "%s: clean data R2 = %.10f >= 0.99", c->law, r.r2);
        /* Noisy data: within the stated tolerances. */
        make_data(c, xs, ys, c->noise, &rng);
        CHECK_OK(kn_fit_law(law, c->n, xs, ys, NULL, NULL, &r), "%s: fit noisy data", c->law);
        for (int j = 0; j < np; j++) {
            double rel = fabs(r.p[j] - c->p[j]) / fmax(fabs(c->p[j]), 1e-3);
            CHECK(rel <= c->tol[j], "%s: %s = %.5g (true %.5g, relative error %.3f <= %.2f, noise sd %g)",
                  c->law, kn_fit_law_param(law, j), r.p[j], c->p[j], rel, c->tol[j], c->noise);
        }
        CHECK(fabs(sqrt(r.mse) - c->noise) < 0.3 * c->noise, "%s: RMS residual %.4g matches the noise %.4g",
              c->law, sqrt(r.mse), c->noise);
    }

    /* A poor caller p0 for the per-position law still reaches the optimum (multi-start + guess). */
    const case_t *pc = &cases[0];
    int pos = kn_fit_law_find("position");
    make_data(pc, xs, ys, 0, &rng);
    double bad_p0[3] = {50, 30, -10};
    CHECK_OK(kn_fit_law(pos, 256, xs, ys, bad_p0, NULL, &r), "position: fit from a poor p0");
    CHECK(fabs(r.p[1] - 0.15) < 1e-6, "position: poor p0 still gives a1 = %.8f", r.p[1]);

    /* Bounds: an upper bound below the truth binds; a fixed parameter stays fixed. */
    double lo[3] = {-INFINITY, 0, -INFINITY}, hi[3] = {INFINITY, INFINITY, 1.7};
    kn_fit_opts o = {.lower = lo, .upper = hi};
    CHECK_OK(kn_fit_law(pos, 256, xs, ys, NULL, &o, &r), "position: fit with a2 <= 1.7");
    CHECK(r.p[2] <= 1.7 && r.p[2] > 1.69, "the bound holds and binds (a2 = %.6f)", r.p[2]);
    double lo2[3] = {-INFINITY, 0.15, -INFINITY}, hi2[3] = {INFINITY, 0.15, INFINITY};
    kn_fit_opts o2 = {.lower = lo2, .upper = hi2};
    CHECK_OK(kn_fit_law(pos, 256, xs, ys, NULL, &o2, &r), "position: fit with a1 fixed at its true value");
    CHECK(r.p[1] == 0.15 && fabs(r.p[0] - 2.0) < 1e-8 && fabs(r.p[2] - 1.8) < 1e-8,
          "fixed a1 = %.6f; a0 = %.8f, a2 = %.8f recovered", r.p[1], r.p[0], r.p[2]);
    double lo3[3] = {-INFINITY, 0.2, 1.0}, hi3[3] = {INFINITY, 0.5, 1.75};
    kn_fit_opts o3 = {.lower = lo3, .upper = hi3};
    CHECK_OK(kn_fit_law(pos, 256, xs, ys, NULL, &o3, &r), "position: two-sided bounds");
    CHECK(r.p[1] >= 0.2 && r.p[1] <= 0.5 && r.p[2] >= 1.0 && r.p[2] <= 1.75,
          "two-sided bounds hold (a1 = %.4f, a2 = %.4f)", r.p[1], r.p[2]);

    /* A caller's model. */
    for (int i = 0; i < 50; i++) { xs[i] = i * 0.1; ys[i] = 3.0 * exp(-0.7 * xs[i]) + 0.5 + 0.002 * kn_rng_normal(&rng); }
    expctx ec = {0};
    double p0[3] = {1, 1, 0};
    CHECK_OK(kn_fit_curve(expmodel, &ec, 3, 50, xs, ys, p0, NULL, &r), "caller model: fit");
    CHECK(fabs(r.p[0] - 3) < 0.02 && fabs(r.p[1] - 0.7) < 0.01 && fabs(r.p[2] - 0.5) < 0.01,
          "caller model: a=%.4f b=%.4f c=%.4f (true 3, 0.7, 0.5)", r.p[0], r.p[1], r.p[2]);
    CHECK(ec.calls == r.nfev && r.starts_used == 8, "caller model: %d calls counted, %d starts", ec.calls, r.starts_used);
    CHECK(r.r2 > 0.99, "caller model: R2 %.6f", r.r2);
    kn_fit_stats(50, ys, ys, &r.r2, &r.mse);
    CHECK(r.r2 == 1 && r.mse == 0, "stats of a perfect prediction");
    CHECK_FAILS(kn_fit_curve(failing, NULL, 3, 50, xs, ys, p0, NULL, &r), "model function failed", "a failing model is reported");

    /* Bad input. */
    for (int i = 0; i < 10; i++) { xs[i] = i + 1; ys[i] = 1.0 / (i + 1); }
    CHECK_FAILS(kn_fit_law(pos, 3, xs, ys, NULL, NULL, &r), "too few points", "3 points for 3 parameters");
    CHECK_FAILS(kn_fit_law(pos, 0, xs, ys, NULL, NULL, &r), "no data points", "no points");
    ys[4] = NAN;
    CHECK_FAILS(kn_fit_law(pos, 10, xs, ys, NULL, NULL, &r), "y of point 5 of 10 is not finite", "a NaN y is named");
    ys[4] = 0.2; xs[2] = INFINITY;
    CHECK_FAILS(kn_fit_law(pos, 10, xs, ys, NULL, NULL, &r), "x of point 3 of 10 is not finite", "an infinite x is named");
    xs[2] = 3; xs[0] = 0;
    CHECK_FAILS(kn_fit_law(kn_fit_law_find("log"), 10, xs, ys, NULL, NULL, &r), "needs x > 0", "log refuses x = 0");
    xs[0] = 1;
    CHECK(kn_fit_law_find("cubic") < 0 && strstr(kn_errmsg(), "built-in laws: position") != NULL, "an unknown law lists the laws");
    double blo[3] = {0, 1, 0}, bhi[3] = {1, 0, 1};
    kn_fit_opts ob = {.lower = blo, .upper = bhi};
    CHECK_FAILS(kn_fit_law(pos, 10, xs, ys, NULL, &ob, &r), "impossible bounds", "lower > upper refused");
    double plo[3] = {0, 0, 0}, phi[3] = {1, 1, 1}, pout[3] = {2, 0.5, 0.5};
    kn_fit_opts op = {.lower = plo, .upper = phi};
    CHECK_FAILS(kn_fit_law(pos, 10, xs, ys, pout, &op, &r), "outside its bounds", "p0 outside the bounds refused");
    double pnan[3] = {1, NAN, 0};
    CHECK_FAILS(kn_fit_law(pos, 10, xs, ys, pnan, NULL, &r), "p0[2] is not finite", "a NaN p0 refused");
    CHECK_DONE();
}
