/* test_kernels.c — every float kernel against a double-precision reference (tests/c/ref.h):
 * forwards elementwise, backwards against central finite differences of the reference on
 * small odd shapes (B=2, T=7, C=12, 3 heads, V=13; plus attention at T=100 and T=200, which
 * span 2 and 3 tiles, head size 48, and longer contexts, head sizes 32 and 64, against a double
 * backward). Backward checks use accumulate mode on pre-filled gradients,
 * so both "+=" and the value are checked. */
#include "kn.h"
#include "gpt.h"
#include "kernels.h"
#include "pool.h"
#include "rng.h"
#include "check.h"
#include "ref.h"

#include <stdio.h>

static kn_rng rng;

static float *frand(size_t n, double scale)
{
    float *p = kn_alloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = (float)(kn_rng_normal(&rng) * scale);
    return p;
}

static double *todouble(const float *x, size_t n)
{
    double *d = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

static float *fcopy(const float *x, size_t n)
{
    float *p = kn_alloc(sizeof(float) * n);
    memcpy(p, x, sizeof(float) * n);
    return p;
}

/* max |a - b| / (atol + rtol·|b|) over n: <= 1 means within tolerance. */
static double worst(const float *a, const double *b, size_t n, double atol, double rtol, double *maxabs)
{
    double w = 0.0, m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e > m) m = e;
        double r = e / (atol + rtol * fabs(b[i]));
        if (!(r <= w)) w = r;   /* NaN makes it fail */
    }
    if (maxabs) *maxabs = m;
    return w;
}

/* grad = analytic accumulated minus what was there before */
static void minus(float *g, const float *before, size_t n)
{
    for (size_t i = 0; i < n; i++) g[i] -= before[i];
}

typedef double (*objective)(void *ctx);

/* Central differences of J with respect to x[idx[k]] (all of x if idx is NULL). */
static void fd(objective J, void *ctx, double *x, size_t n, double h, double *out)
{
    for (size_t i = 0; i < n; i++) {
        double s = x[i];
        x[i] = s + h;
        double jp = J(ctx);
        x[i] = s - h;
        double jm = J(ctx);
        x[i] = s;
        out[i] = (jp - jm) / (2 * h);
    }
}

static double dotg(const double *y, const double *g, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += y[i] * g[i];
    return s;
}

/* ------------------------------------------------------------------ linear */

typedef struct { double *x, *w, *b, *g, *y; int N, in, out; } lin_t;
static double lin_J(void *p)
{
    lin_t *c = p;
    ref_linear(c->y, c->x, c->w, c->b, c->N, c->in, c->out);
    return dotg(c->y, c->g, (size_t)c->N * c->out);
}

static void test_linear(int N, int in, int out)
{
    size_t nx = (size_t)N * in, nw = (size_t)out * in, ny = (size_t)N * out;
    float *x = frand(nx, 1.0), *w = frand(nw, 0.5), *b = frand(out, 0.5), *g = frand(ny, 1.0);
    float *y = frand(ny, 1.0), *y0 = fcopy(y, ny);
    lin_t c = {todouble(x, nx), todouble(w, nw), todouble(b, out), todouble(g, ny),
               malloc(sizeof(double) * ny), N, in, out};
    kn_linear_forward(y, x, w, b, N, in, out, false);
    lin_J(&c);
    double e = 0.0;
    CHECK(worst(y, c.y, ny, 1e-5, 1e-5, &e) <= 1, "linear %dx%d->%d forward matches double (max err %.2g)", N, in, out, e);
    float *yy = fcopy(y0, ny);
    kn_linear_forward(yy, x, w, b, N, in, out, true);
    minus(yy, y0, ny);
    CHECK(worst(yy, c.y, ny, 1e-5, 1e-5, NULL) <= 1, "linear forward accumulate adds onto y");

    float *dx = frand(nx, 1.0), *dw = frand(nw, 1.0), *db = frand(out, 1.0);
    float *dx0 = fcopy(dx, nx), *dw0 = fcopy(dw, nw), *db0 = fcopy(db, out);
    kn_linear_backward(dx, dw, db, g, x, w, N, in, out, true);
    minus(dx, dx0, nx); minus(dw, dw0, nw); minus(db, db0, out);
    double *nd = malloc(sizeof(double) * (nx > nw ? nx : nw));
    fd(lin_J, &c, c.x, nx, 1e-6, nd);
    CHECK(worst(dx, nd, nx, 1e-5, 1e-4, &e) <= 1, "linear dx vs finite differences (max err %.2g)", e);
    fd(lin_J, &c, c.w, nw, 1e-6, nd);
    CHECK(worst(dw, nd, nw, 1e-5, 1e-4, &e) <= 1, "linear dw vs finite differences (max err %.2g)", e);
    fd(lin_J, &c, c.b, out, 1e-6, nd);
    CHECK(worst(db, nd, out, 1e-5, 1e-4, &e) <= 1, "linear db vs finite differences (max err %.2g)", e);

    /* overwrite mode for dx, and the naive path agrees */
    float *dx2 = frand(nx, 1.0);
    kn_linear_backward(dx2, NULL, NULL, g, x, w, N, in, out, false);
    fd(lin_J, &c, c.x, nx, 1e-6, nd);
    CHECK(worst(dx2, nd, nx, 1e-5, 1e-4, NULL) <= 1, "linear dx overwrite mode");
    float *yn = frand(ny, 1.0), *dxn = fcopy(dx0, nx), *dwn = fcopy(dw0, nw), *dbn = fcopy(db0, out);
    kn_linear_forward_naive(yn, x, w, b, N, in, out, false);
    kn_linear_backward_naive(dxn, dwn, dbn, g, x, w, N, in, out, true);
    minus(dxn, dx0, nx); minus(dwn, dw0, nw); minus(dbn, db0, out);
    double *dd = todouble(y, ny);
    double a1 = worst(yn, dd, ny, 1e-5, 1e-5, NULL);
    free(dd); dd = todouble(dx, nx);
    double a2 = worst(dxn, dd, nx, 1e-5, 1e-4, NULL);
    free(dd); dd = todouble(dw, nw);
    double a3 = worst(dwn, dd, nw, 1e-5, 1e-4, NULL);
    free(dd); dd = todouble(db, out);
    double a4 = worst(dbn, dd, out, 1e-5, 1e-4, NULL);
    free(dd);
    CHECK(a1 <= 1 && a2 <= 1 && a3 <= 1 && a4 <= 1, "naive linear matches BLAS linear (%dx%d->%d)", N, in, out);

    kn_free(x); kn_free(w); kn_free(b); kn_free(g); kn_free(y); kn_free(y0); kn_free(yy);
    kn_free(dx); kn_free(dw); kn_free(db); kn_free(dx0); kn_free(dw0); kn_free(db0); kn_free(dx2);
    kn_free(yn); kn_free(dxn); kn_free(dwn); kn_free(dbn);
    free(c.x); free(c.w); free(c.b); free(c.g); free(c.y); free(nd);
}

/* ------------------------------------------------------------------ layernorm */

typedef struct { double *x, *w, *b, *g, *y; int N, C; } ln_t;
static double ln_J(void *p)
{
    ln_t *c = p;
    ref_layernorm(c->y, c->x, c->w, c->b, c->N, c->C);
    return dotg(c->y, c->g, (size_t)c->N * c->C);
}

static void test_layernorm(int N, int C)
{
    size_t n = (size_t)N * C;
    float *x = frand(n, 2.0), *w = frand(C, 1.0), *b = frand(C, 1.0), *g = frand(n, 1.0);
    for (int r = 0; r < N; r++) x[(size_t)r * C] += 3.0f;   /* a non-zero mean */
    float *y = frand(n, 1.0), *mean = kn_alloc(sizeof(float) * N), *rstd = kn_alloc(sizeof(float) * N);
    ln_t c = {todouble(x, n), todouble(w, C), todouble(b, C), todouble(g, n), malloc(sizeof(double) * n), N, C};
    kn_layernorm_forward(y, mean, rstd, x, w, b, N, C);
    ln_J(&c);
    double e = 0.0;
    CHECK(worst(y, c.y, n, 1e-5, 1e-5, &e) <= 1, "layernorm %dx%d forward matches double (max err %.2g)", N, C, e);
    float *dx = frand(n, 1.0), *dw = frand(C, 1.0), *db = frand(C, 1.0);
    float *dx0 = fcopy(dx, n), *dw0 = fcopy(dw, C), *db0 = fcopy(db, C);
    kn_layernorm_backward(dx, dw, db, g, x, w, mean, rstd, N, C, true);
    minus(dx, dx0, n); minus(dw, dw0, C); minus(db, db0, C);
    double *nd = malloc(sizeof(double) * n);
    fd(ln_J, &c, c.x, n, 1e-6, nd);
    CHECK(worst(dx, nd, n, 1e-5, 1e-4, &e) <= 1, "layernorm dx vs finite differences (max err %.2g)", e);
    fd(ln_J, &c, c.w, C, 1e-6, nd);
    CHECK(worst(dw, nd, C, 1e-5, 1e-4, &e) <= 1, "layernorm dw vs finite differences (max err %.2g)", e);
    fd(ln_J, &c, c.b, C, 1e-6, nd);
    CHECK(worst(db, nd, C, 1e-5, 1e-4, &e) <= 1, "layernorm db vs finite differences (max err %.2g)", e);
    /* the parameter gradients are summed over rows in one order whatever the thread count
     * (the column pass runs whole on one thread beside the row chunks): bit for bit */
    int nt = kn_get_threads();
    float *dw1 = kn_alloc(sizeof(float) * C), *db1 = kn_alloc(sizeof(float) * C);
    float *dw2 = kn_alloc(sizeof(float) * C), *db2 = kn_alloc(sizeof(float) * C);
    float *dx1 = kn_alloc(sizeof(float) * n), *dx2 = kn_alloc(sizeof(float) * n);
    kn_set_threads(1);
    kn_layernorm_backward(dx1, dw1, db1, g, x, w, mean, rstd, N, C, false);
    for (int t = 2; t <= 3; t++) {
        kn_set_threads(t);
        memset(dw2, 0, sizeof(float) * C);
        memset(db2, 0, sizeof(float) * C);
        kn_layernorm_backward(dx2, dw2, db2, g, x, w, mean, rstd, N, C, false);
        CHECK(!memcmp(dw1, dw2, sizeof(float) * C) && !memcmp(db1, db2, sizeof(float) * C) &&
              !memcmp(dx1, dx2, sizeof(float) * n), "layernorm %dx%d backward identical at 1 and %d threads", N, C, t);
    }
    kn_set_threads(nt);
    kn_free(x); kn_free(w); kn_free(b); kn_free(g); kn_free(y); kn_free(mean); kn_free(rstd);
    kn_free(dx); kn_free(dw); kn_free(db); kn_free(dx0); kn_free(dw0); kn_free(db0);
    kn_free(dw1); kn_free(db1); kn_free(dw2); kn_free(db2); kn_free(dx1); kn_free(dx2);
    free(c.x); free(c.w); free(c.b); free(c.g); free(c.y); free(nd);
}

/* ------------------------------------------------------------------ gelu */

/* Both forms through one test: the kernels under test and the double reference they must
 * match (the gradient is checked against finite differences of that reference). */
typedef struct {
    const char *name;
    void (*forward)(float *, const float *, int64_t);
    void (*backward)(float *, const float *, const float *, int64_t, bool);
    void (*ref)(double *, const double *, size_t);
} gelu_form;

typedef struct { double *x, *g, *y; size_t n; const gelu_form *f; } gelu_t;
static double gelu_J(void *p)
{
    gelu_t *c = p;
    c->f->ref(c->y, c->x, c->n);
    return dotg(c->y, c->g, c->n);
}

static void test_gelu_form(const gelu_form *f)
{
    size_t n = 203;
    float *x = frand(n, 2.5), *g = frand(n, 1.0), *y = frand(n, 1.0);
    x[0] = -12.0f; x[1] = 12.0f; x[2] = 0.0f; x[3] = -100.0f; x[4] = 100.0f;
    gelu_t c = {todouble(x, n), todouble(g, n), malloc(sizeof(double) * n), n, f};
    f->forward(y, x, (int64_t)n);
    gelu_J(&c);
    double e = 0.0;
    CHECK(worst(y, c.y, n, 1e-6, 1e-6, &e) <= 1, "%s forward matches the double formula (max err %.2g)", f->name, e);
    float *dx = frand(n, 1.0), *dx0 = fcopy(dx, n);
    f->backward(dx, x, g, (int64_t)n, true);
    minus(dx, dx0, n);
    double *nd = malloc(sizeof(double) * n);
    fd(gelu_J, &c, c.x, n, 1e-5, nd);
    CHECK(worst(dx, nd, n, 1e-5, 1e-4, &e) <= 1, "%s dx vs finite differences (max err %.2g)", f->name, e);
    /* in place (dx aliasing dy) in overwrite mode */
    float *gg = fcopy(g, n);
    f->backward(gg, x, gg, (int64_t)n, false);
    CHECK(worst(gg, nd, n, 1e-5, 1e-4, NULL) <= 1, "%s backward in place (dx == dy)", f->name);
    kn_free(x); kn_free(g); kn_free(y); kn_free(dx); kn_free(dx0); kn_free(gg);
    free(c.x); free(c.g); free(c.y); free(nd);
}

static void test_gelu(void)
{
    static const gelu_form tanh_form = {"gelu (tanh)", kn_gelu_forward, kn_gelu_backward, ref_gelu};
    static const gelu_form erf_form = {"gelu (erf)", kn_gelu_erf_forward, kn_gelu_erf_backward, ref_gelu_erf};
    test_gelu_form(&tanh_form);
    test_gelu_form(&erf_form);
    /* The forms are different functions: the largest gap is near |x| = 2 (about 4.7e-4 in
     * double); it is what moves a model's loss when a checkpoint crosses implementations. */
    size_t n = 4001;
    float *x = kn_alloc(sizeof(float) * n), *a = kn_alloc(sizeof(float) * n), *b = kn_alloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = -5.0f + 10.0f * (float)i / (float)(n - 1);
    kn_gelu_forward(a, x, (int64_t)n);
    kn_gelu_erf_forward(b, x, (int64_t)n);
    double gap = 0.0;
    for (size_t i = 0; i < n; i++) gap = fmax(gap, fabs((double)a[i] - b[i]));
    CHECK(gap > 4e-4 && gap < 5e-4, "tanh and erf forms differ by at most %.3g over [-5, 5]", gap);
    kn_free(x); kn_free(a); kn_free(b);
}

/* ------------------------------------------------------------------ attention */

typedef struct { double *qkv, *g, *y; int B, T, C, NH; } att_t;
static double att_J(void *p)
{
    att_t *c = p;
    ref_attention(c->y, c->qkv, c->B, c->T, c->C, c->NH);
    return dotg(c->y, c->g, (size_t)c->B * c->T * c->C);
}

/* Row log-sum-exp of the scaled causal scores, in double. */
static double ref_lse(const double *qkv, int b, int h, int t, int T, int C, int NH)
{
    int hs = C / NH;
    double mx = -INFINITY, sum = 0.0, *sc = malloc(sizeof(double) * (size_t)(t + 1));
    const double *q = qkv + ((size_t)b * T + t) * 3 * C + (size_t)h * hs;
    for (int s = 0; s <= t; s++) {
        const double *k = qkv + ((size_t)b * T + s) * 3 * C + C + (size_t)h * hs;
        double dot = 0.0;
        for (int i = 0; i < hs; i++) dot += q[i] * k[i];
        sc[s] = dot / sqrt((double)hs);
        if (sc[s] > mx) mx = sc[s];
    }
    for (int s = 0; s <= t; s++) sum += exp(sc[s] - mx);
    free(sc);
    return mx + log(sum);
}

static void test_attention(int B, int T, int C, int NH)
{
    size_t nq = (size_t)B * T * 3 * C, ny = (size_t)B * T * C, nl = (size_t)B * NH * T;
    float *qkv = frand(nq, 1.0), *g = frand(ny, 1.0), *y = frand(ny, 1.0), *lse = frand(nl, 1.0);
    att_t c = {todouble(qkv, nq), todouble(g, ny), malloc(sizeof(double) * ny), B, T, C, NH};
    float *scratch = kn_alloc(sizeof(float) * kn_attention_scratch_floats(T, C / NH, 2));
    kn_attention_forward(y, lse, scratch, qkv, B, T, C, NH);
    att_J(&c);
    double e = 0.0;
    CHECK(worst(y, c.y, ny, 1e-5, 1e-5, &e) <= 1, "attention B=%d T=%d C=%d NH=%d forward matches double (max err %.2g)", B, T, C, NH, e);
    double lerr = 0.0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++)
                lerr = fmax(lerr, fabs(lse[((size_t)b * NH + h) * T + t] - ref_lse(c.qkv, b, h, t, T, C, NH)));
    CHECK(lerr < 1e-5, "attention keeps each row's log-sum-exp (max err %.2g)", lerr);
    float *d = frand(nq, 1.0), *d0 = fcopy(d, nq);
    kn_attention_backward(d, scratch, g, qkv, y, lse, B, T, C, NH, true);
    minus(d, d0, nq);
    double *nd = malloc(sizeof(double) * nq);
    fd(att_J, &c, c.qkv, nq, 1e-6, nd);
    CHECK(worst(d, nd, nq, 1e-5, 1e-4, &e) <= 1, "attention dqkv vs finite differences (max err %.2g)", e);
    float *d2 = frand(nq, 1.0);
    kn_attention_backward(d2, scratch, g, qkv, y, lse, B, T, C, NH, false);
    CHECK(worst(d2, nd, nq, 1e-5, 1e-4, NULL) <= 1, "attention dqkv overwrite mode");
    /* per-head work is independent: repeated runs and 1 vs 2 threads agree bit for bit */
    int nt = kn_get_threads();
    float *y1 = kn_alloc(sizeof(float) * ny), *y2 = kn_alloc(sizeof(float) * ny);
    float *e1 = kn_alloc(sizeof(float) * nq), *e2 = kn_alloc(sizeof(float) * nq);
    kn_set_threads(1);
    kn_attention_forward(y1, lse, scratch, qkv, B, T, C, NH);
    kn_attention_backward(e1, scratch, g, qkv, y1, lse, B, T, C, NH, false);
    kn_set_threads(2);
    kn_attention_forward(y2, lse, scratch, qkv, B, T, C, NH);
    kn_attention_backward(e2, scratch, g, qkv, y2, lse, B, T, C, NH, false);
    CHECK(!memcmp(y1, y2, sizeof(float) * ny) && !memcmp(e1, e2, sizeof(float) * nq),
          "attention identical at 1 and 2 threads");
    kn_attention_forward(y2, lse, scratch, qkv, B, T, C, NH);
    kn_attention_backward(e2, scratch, g, qkv, y2, lse, B, T, C, NH, false);
    CHECK(!memcmp(y1, y2, sizeof(float) * ny) && !memcmp(e1, e2, sizeof(float) * nq),
          "attention identical when repeated at 2 threads");
    kn_set_threads(nt);
    kn_free(qkv); kn_free(g); kn_free(y); kn_free(lse); kn_free(scratch);
    kn_free(d); kn_free(d0); kn_free(d2); kn_free(y1); kn_free(y2); kn_free(e1); kn_free(e2);
    free(c.qkv); free(c.g); free(c.y); free(nd);
}

/* Whether y's rows t (of T, C wide) for head h are all NaN (want_nan) or all finite. */
static bool head_rows_are(const float *y, int t0, int t1, int C, int h, int hs, bool want_nan)
{
    for (int t = t0; t < t1; t++)
        for (int j = 0; j < hs; j++) {
            float v = y[(size_t)t * C + (size_t)h * hs + j];
            if (want_nan ? !isnan(v) : !isfinite(v)) return false;
        }
    return true;
}

/* A NaN in a query reaches that query's output, a NaN in a key the output of every query that
 * sees the key, through the softmax's exp; the other rows stay finite. T spans two tiles. */
static void test_attention_nan(int T, int C, int NH)
{
    int hs = C / NH, tq = T / 3, tk = T / 2;
    size_t nq = (size_t)T * 3 * C, ny = (size_t)T * C;
    float *qkv = frand(nq, 1.0), *y = kn_alloc(sizeof(float) * ny), *lse = kn_alloc(sizeof(float) * (size_t)NH * T);
    float *scratch = kn_alloc(sizeof(float) * kn_attention_scratch_floats(T, hs, kn_pool_threads()));
    qkv[(size_t)tq * 3 * C + 1] = NAN;                    /* head 0, query tq */
    kn_attention_forward(y, lse, scratch, qkv, 1, T, C, NH);
    CHECK(head_rows_are(y, tq, tq + 1, C, 0, hs, true) && head_rows_are(y, 0, tq, C, 0, hs, false) &&
          head_rows_are(y, tq + 1, T, C, 0, hs, false) && head_rows_are(y, 0, T, C, 1, hs, false),
          "attention T=%d: a NaN query makes its own output row NaN, no other", T);
    qkv[(size_t)tq * 3 * C + 1] = 0.5f;
    qkv[(size_t)tk * 3 * C + C + (size_t)hs + 2] = NAN;   /* head 1, key tk */
    kn_attention_forward(y, lse, scratch, qkv, 1, T, C, NH);
    CHECK(head_rows_are(y, tk, T, C, 1, hs, true) && head_rows_are(y, 0, tk, C, 1, hs, false) &&
          head_rows_are(y, 0, T, C, 0, hs, false),
          "attention T=%d: a NaN key makes the output of every query that sees it NaN, no other", T);
    kn_free(qkv); kn_free(y); kn_free(lse); kn_free(scratch);
}

/* A long context in float only (finite differences would take minutes): the fused
 * attention's output and gradients against the double reference's forward, and its
 * backward against a double backward through explicit probabilities. */
static void test_attention_long(int B, int T, int C, int NH)
{
    size_t nq = (size_t)B * T * 3 * C, ny = (size_t)B * T * C, nl = (size_t)B * NH * T;
    int hs = C / NH;
    float *qkv = frand(nq, 1.0), *g = frand(ny, 1.0), *y = kn_alloc(sizeof(float) * ny);
    float *lse = kn_alloc(sizeof(float) * nl), *d = kn_alloc(sizeof(float) * nq);
    float *scratch = kn_alloc(sizeof(float) * kn_attention_scratch_floats(T, hs, 2));
    double *q = todouble(qkv, nq), *yr = malloc(sizeof(double) * ny), *dr = calloc(nq, sizeof(double));
    kn_attention_forward(y, lse, scratch, qkv, B, T, C, NH);
    kn_attention_backward(d, scratch, g, qkv, y, lse, B, T, C, NH, false);
    ref_attention(yr, q, B, T, C, NH);
    /* dS = P ∘ (dP - rowsum(P ∘ dP)), dP = dO·Vᵀ; all in double */
    double *p = malloc(sizeof(double) * T), *dp = malloc(sizeof(double) * T), sc = 1.0 / sqrt((double)hs);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const double *qt = q + ((size_t)b * T + t) * 3 * C + (size_t)h * hs;
                const float *gt = g + ((size_t)b * T + t) * C + (size_t)h * hs;
                double L = ref_lse(q, b, h, t, T, C, NH), dsum = 0.0;
                for (int s = 0; s <= t; s++) {
                    const double *ks = q + ((size_t)b * T + s) * 3 * C + C + (size_t)h * hs;
                    double dot = 0.0, dv = 0.0;
                    for (int i = 0; i < hs; i++) { dot += qt[i] * ks[i]; dv += gt[i] * ks[C + i]; }
                    p[s] = exp(dot * sc - L);
                    dp[s] = dv;
                    dsum += p[s] * dv;
                }
                double *dq = dr + ((size_t)b * T + t) * 3 * C + (size_t)h * hs;
                for (int s = 0; s <= t; s++) {
                    double ds = p[s] * (dp[s] - dsum) * sc;
                    const double *ks = q + ((size_t)b * T + s) * 3 * C + C + (size_t)h * hs;
                    double *dks = dr + ((size_t)b * T + s) * 3 * C + C + (size_t)h * hs;
                    for (int i = 0; i < hs; i++) {
                        dq[i] += ds * ks[i];
                        dks[i] += ds * qt[i];
                        dks[C + i] += p[s] * gt[i];
                    }
                }
            }
    double e1 = 0.0, e2 = 0.0;
    CHECK(worst(y, yr, ny, 1e-5, 1e-4, &e1) <= 1 && worst(d, dr, nq, 1e-4, 1e-4, &e2) <= 1,
          "attention B=%d T=%d C=%d NH=%d (%d tiles per side): output (max err %.2g) and dqkv (max err %.2g) match double",
          B, T, C, NH, (T + KN_ATT_BLOCK - 1) / KN_ATT_BLOCK, e1, e2);
    kn_free(qkv); kn_free(g); kn_free(y); kn_free(lse); kn_free(d); kn_free(scratch);
    free(q); free(yr); free(dr); free(p); free(dp);
}

/* ------------------------------------------------------------------ cross-entropy */

typedef struct { double *z; const int32_t *tg; const float *w; int B, T, V, norm; } ce_t;
static double ce_J(void *p)
{
    ce_t *c = p;
    return ref_xent(NULL, c->z, c->tg, c->w, c->B, c->T, c->V, c->norm);
}

static void test_xent(int B, int T, int V, bool use_w, bool normalize)
{
    size_t n = (size_t)B * T * V;
    float *z = frand(n, 3.0), *losses = kn_alloc(sizeof(float) * B * T);
    int32_t *tg = malloc(sizeof(int32_t) * B * T);
    for (int i = 0; i < B * T; i++) tg[i] = (int32_t)kn_rng_below(&rng, V);
    float *w = NULL;
    if (use_w) {
        w = malloc(sizeof(float) * T);
        for (int t = 0; t < T; t++) w[t] = (float)kn_rng_uniform(&rng) * 2.0f;
        w[1] = 0.0f;
    }
    ce_t c = {todouble(z, n), tg, w, B, T, V, normalize};
    double *ce = malloc(sizeof(double) * B * T);
    double ref = ref_xent(ce, c.z, tg, w, B, T, V, normalize);
    float loss = kn_crossentropy_forward(losses, z, tg, w, B, T, V, normalize);
    double e = 0.0;
    CHECK(fabs(loss - ref) <= 1e-6 * (1 + fabs(ref)) && worst(losses, ce, (size_t)B * T, 1e-6, 1e-6, &e) <= 1,
          "cross-entropy %s%s loss %.7f vs double %.7f, per-token max err %.2g",
          use_w ? "weighted" : "unweighted", normalize ? " normalized" : "", loss, ref, e);
    float dloss = 0.7f;
    float *dz = frand(n, 1.0), *dz0 = fcopy(dz, n);
    kn_crossentropy_backward(dz, z, tg, w, B, T, V, normalize, dloss, true);
    minus(dz, dz0, n);
    double *nd = malloc(sizeof(double) * n);
    fd(ce_J, &c, c.z, n, 1e-6, nd);
    for (size_t i = 0; i < n; i++) nd[i] *= dloss;
    CHECK(worst(dz, nd, n, 1e-6, 1e-4, &e) <= 1, "cross-entropy dlogits vs finite differences (max err %.2g)", e);
    kn_free(z); kn_free(losses); kn_free(dz); kn_free(dz0);
    free(tg); free(w); free(c.z); free(ce); free(nd);
}

/* The fused output layer: loss, per-token losses and both gradients against the double
 * model (logits = scale·x·wᵀ, then cross-entropy) and finite differences, with chunks that
 * do not divide the rows. */
typedef struct { double *x, *w, *z; const int32_t *tg; const float *pw; int B, T, C, V, norm; double scale; } lx_t;
static double lx_J(void *p)
{
    lx_t *c = p;
    int N = c->B * c->T;
    for (int r = 0; r < N; r++)
        for (int v = 0; v < c->V; v++) {
            double s = 0.0;
            for (int k = 0; k < c->C; k++) s += c->x[(size_t)r * c->C + k] * c->w[(size_t)v * c->C + k];
            c->z[(size_t)r * c->V + v] = c->scale * s;
        }
    return ref_xent(NULL, c->z, c->tg, c->pw, c->B, c->T, c->V, c->norm);
}

static void test_linear_xent(int B, int T, int C, int V, int chunk, bool use_w, bool normalize, float scale)
{
    int N = B * T;
    float *x = frand((size_t)N * C, 1.0), *w = frand((size_t)V * C, 0.7);
    int32_t *tg = malloc(sizeof(int32_t) * N);
    for (int i = 0; i < N; i++) tg[i] = (int32_t)kn_rng_below(&rng, V);
    float *pw = NULL;
    if (use_w) {
        pw = malloc(sizeof(float) * T);
        for (int t = 0; t < T; t++) pw[t] = (float)kn_rng_uniform(&rng) * 2.0f;
    }
    lx_t c = {todouble(x, (size_t)N * C), todouble(w, (size_t)V * C), malloc(sizeof(double) * N * V),
              tg, pw, B, T, C, V, normalize, scale};
    double ref = lx_J(&c);
    double *ce = malloc(sizeof(double) * N);
    ref_xent(ce, c.z, tg, pw, B, T, V, normalize);
    float *losses = kn_alloc(sizeof(float) * N), *logits = kn_alloc(sizeof(float) * (size_t)chunk * V);
    float *dx = frand((size_t)N * C, 1.0), *dw = frand((size_t)V * C, 1.0), *dw0 = fcopy(dw, (size_t)V * C);
    float dloss = 0.7f;
    float loss = kn_linear_xent(losses, dx, dw, logits, x, w, tg, pw, B, T, C, V, normalize, scale, dloss, chunk);
    minus(dw, dw0, (size_t)V * C);
    double e = 0.0;
    CHECK(fabs(loss - ref) <= 2e-6 * (1 + fabs(ref)) && worst(losses, ce, N, 1e-5, 1e-5, &e) <= 1,
          "fused output layer N=%d V=%d chunk=%d%s%s: loss %.7f vs double %.7f, per-token max err %.2g",
          N, V, chunk, use_w ? " weighted" : "", normalize ? " normalized" : "", loss, ref, e);
    double *ndx = malloc(sizeof(double) * N * C), *ndw = malloc(sizeof(double) * V * C);
    fd(lx_J, &c, c.x, (size_t)N * C, 1e-6, ndx);
    fd(lx_J, &c, c.w, (size_t)V * C, 1e-6, ndw);
    for (int i = 0; i < N * C; i++) ndx[i] *= dloss;
    for (int i = 0; i < V * C; i++) ndw[i] *= dloss;
    double ex = 0.0, ew = 0.0;
    CHECK(worst(dx, ndx, (size_t)N * C, 1e-6, 1e-4, &ex) <= 1 && worst(dw, ndw, (size_t)V * C, 1e-6, 1e-4, &ew) <= 1,
          "fused output layer: dx (max err %.2g, overwritten) and dw (max err %.2g, added) vs finite differences", ex, ew);
    /* evaluation: same losses, no gradient touched */
    float *l2 = kn_alloc(sizeof(float) * N);
    float loss2 = kn_linear_xent(l2, NULL, NULL, logits, x, w, tg, pw, B, T, C, V, normalize, scale, dloss, chunk);
    CHECK(loss2 == loss && !memcmp(l2, losses, sizeof(float) * N), "fused output layer without gradients: same losses");
    kn_free(x); kn_free(w); kn_free(losses); kn_free(logits); kn_free(dx); kn_free(dw); kn_free(dw0); kn_free(l2);
    free(tg); free(pw); free(c.x); free(c.w); free(c.z); free(ce); free(ndx); free(ndw);
}

/* ------------------------------------------------------------------ small ones */

static void test_embedding(void)
{
    int B = 2, T = 7, C = 12, V = 11;
    int32_t tok[14];
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)kn_rng_below(&rng, V);
    tok[3] = tok[9];   /* a repeated token accumulates */
    float *wte = frand((size_t)V * C, 1.0), *wpe = frand((size_t)T * C, 1.0);
    float *x = kn_alloc(sizeof(float) * B * T * C), *g = frand((size_t)B * T * C, 1.0);
    kn_embedding_forward(x, tok, wte, wpe, B, T, C);
    int ok = 1;
    for (int r = 0; r < B * T; r++)
        for (int j = 0; j < C; j++)
            ok &= x[r * C + j] == wte[tok[r] * C + j] + wpe[(r % T) * C + j];
    CHECK(ok, "embedding forward = wte[token] + wpe[position]");
    double *dwte = calloc((size_t)V * C, sizeof(double)), *dwpe = calloc((size_t)T * C, sizeof(double));
    for (int r = 0; r < B * T; r++)
        for (int j = 0; j < C; j++) {
            dwte[tok[r] * C + j] += g[r * C + j];
            dwpe[(r % T) * C + j] += g[r * C + j];
        }
    float *dte = kn_alloc(sizeof(float) * V * C), *dpe = kn_alloc(sizeof(float) * T * C);
    kn_embedding_backward(dte, dpe, g, tok, B, T, C);
    CHECK(worst(dte, dwte, (size_t)V * C, 1e-6, 1e-6, NULL) <= 1 && worst(dpe, dwpe, (size_t)T * C, 1e-6, 1e-6, NULL) <= 1,
          "embedding backward scatters into wte rows and wpe rows");
    kn_free(wte); kn_free(wpe); kn_free(x); kn_free(g); kn_free(dte); kn_free(dpe);
    free(dwte); free(dwpe);
}

static void test_expf(void)
{
    double worst_rel = 0.0;
    for (int i = 0; i <= 200000; i++) {
        float x = -87.0f + 175.0f * (float)i / 200000.0f;
        double r = fabs((double)kn_expf(x) - exp((double)x)) / exp((double)x);
        if (r > worst_rel) worst_rel = r;
    }
    CHECK(worst_rel < 4e-7, "kn_expf relative error over [-87, 88] is %.2g (< 4e-7)", worst_rel);
    CHECK(isnan(kn_expf(NAN)) && kn_expf(-1000.0f) < 1e-37f && kn_expf(0.0f) == 1.0f,
          "kn_expf: NaN propagates, large negatives underflow to ~0, exp(0) = 1");
}

int main(void)
{
    kn_rng_seed(&rng, 1234);
    kn_set_threads(2);
    test_expf();
    test_linear(14, 12, 13);
    test_linear(3, 1, 1);
    test_linear(1, 7, 5);
    test_layernorm(14, 12);
    test_layernorm(5, 33);
    test_layernorm(150, 20);   /* row chunks of 64, the last partial */
    test_gelu();
    test_attention(2, 7, 12, 3);
    test_attention(1, 200, 6, 2);
    test_attention(1, 100, 16, 2);
    test_attention(1, 40, 96, 2);          /* head size 48: a 32-column register tile and a 16-column edge */
    test_attention_long(2, 300, 64, 2);
    test_attention_long(1, 129, 96, 3);
    test_attention_long(1, 250, 128, 2);   /* head size 64 (config L's); last tile 58 rows, not whole strips */
    test_attention_nan(150, 64, 2);
    test_xent(2, 7, 13, false, false);
    test_xent(2, 7, 13, true, false);
    test_xent(2, 7, 13, true, true);
    test_linear_xent(2, 7, 6, 13, 5, false, false, 1.0f);
    test_linear_xent(2, 7, 6, 13, 32, true, true, 0.5f);
    test_linear_xent(3, 5, 5, 9, 4, true, false, 1.0f);
    test_embedding();
    kn_pool_shutdown();
    CHECK_DONE();
}
