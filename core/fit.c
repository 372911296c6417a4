/* fit.c — least squares over MINPACK's lmdif. Bounds are handled by the MINUIT/lmfit
 * change of variables (a sine for two-sided bounds, a square root for one-sided ones), so
 * the unconstrained LM sees a smooth problem; a parameter with lower == upper is fixed and
 * left out of the LM vector. Several starts guard against the local minima that laws with
 * a shift or an exponent have; the best sum of squares wins. */
#include "fit.h"

#include <cminpack-1/cminpack.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

/* ---- built-in laws ---------------------------------------------------------------------- */

enum { L_POSITION, L_LOG, L_NEGLOG, L_HYPERBOLIC, L_RECIPROCAL, L_POWER, L_KAPLAN, L_LINEAR,
       L_CONSTANT, L_COUNT };

typedef struct {
    const char *name, *formula;
    int np;
    const char *params[3];
    double lo[3], hi[3];
    bool positive_x;          /* domain x > 0 */
} law_def;

#define INF INFINITY
static const law_def laws[L_COUNT] = {
    [L_POSITION]   = {"position", "a0/(1 + a1*x) + a2", 3, {"a0", "a1", "a2"}, {-INF, 0, -INF}, {INF, INF, INF}, false},
    [L_LOG]        = {"log", "alpha + beta*ln(x)", 2, {"alpha", "beta"}, {-INF, -INF}, {INF, INF}, true},
    [L_NEGLOG]     = {"neglog", "A - B*ln(x)", 2, {"A", "B"}, {-INF, -INF}, {INF, INF}, true},
    [L_HYPERBOLIC] = {"hyperbolic", "alpha + beta/(x + gamma)", 3, {"alpha", "beta", "gamma"}, {-INF, -INF, -INF}, {INF, INF, INF}, false},
    [L_RECIPROCAL] = {"reciprocal", "A + B/(x + C)", 3, {"A", "B", "C"}, {-INF, -INF, -INF}, {INF, INF, INF}, false},
    [L_POWER]      = {"power", "alpha + beta*x^(-gamma)", 3, {"alpha", "beta", "gamma"}, {-INF, -INF, 0}, {INF, INF, INF}, true},
    [L_KAPLAN]     = {"kaplan", "L_inf + (t_c/x)^alpha", 3, {"L_inf", "t_c", "alpha"}, {-INF, 0, 0}, {INF, INF, INF}, true},
    [L_LINEAR]     = {"linear", "alpha + beta*x", 2, {"alpha", "beta"}, {-INF, -INF}, {INF, INF}, false},
    [L_CONSTANT]   = {"constant", "alpha", 1, {"alpha"}, {-INF}, {INF}, false},
};

int kn_fit_law_count(void) { return L_COUNT; }
const char *kn_fit_law_name(int k) { return k >= 0 && k < L_COUNT ? laws[k].name : NULL; }
int kn_fit_law_nparams(int law) { return law >= 0 && law < L_COUNT ? laws[law].np : 0; }
const char *kn_fit_law_param(int law, int j)
{
    return law >= 0 && law < L_COUNT && j >= 0 && j < laws[law].np ? laws[law].params[j] : NULL;
}
const char *kn_fit_law_formula(int law) { return law >= 0 && law < L_COUNT ? laws[law].formula : NULL; }

int kn_fit_law_find(const char *name)
{
    for (int k = 0; k < L_COUNT; k++)
        if (name && strcmp(name, laws[k].name) == 0) return k;
    char list[256] = "";
    for (int k = 0; k < L_COUNT; k++) {
        if (k) strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, laws[k].name, sizeof list - strlen(list) - 1);
    }
    kn_fail(KN_ERR_ARG, "fit: unknown law '%s' (built-in laws: %s)", name ? name : "(null)", list);
    return -1;
}

void kn_fit_law_bounds(int law, double *lower, double *upper)
{
    for (int j = 0; j < laws[law].np; j++) { lower[j] = laws[law].lo[j]; upper[j] = laws[law].hi[j]; }
}

static inline double law_at(int law, const double *p, double x)
{
    switch (law) {
    case L_POSITION: return p[0] / (1.0 + p[1] * x) + p[2];
    case L_LOG: return p[0] + p[1] * log(x);
    case L_NEGLOG: return p[0] - p[1] * log(x);
    case L_HYPERBOLIC: case L_RECIPROCAL: return p[0] + p[1] / (x + p[2]);
    case L_POWER: return p[0] + p[1] * pow(x, -p[2]);
    case L_KAPLAN: return p[0] + pow(p[1] / x, p[2]);
    case L_LINEAR: return p[0] + p[1] * x;
    default: return p[0];
    }
}

static kn_status check_domain(int law, int n, const double *xs)
{
    if (!laws[law].positive_x) return KN_OK;
    for (int i = 0; i < n; i++)
        if (!(xs[i] > 0))
            return kn_fail(KN_ERR_ARG, "fit: law '%s' needs x > 0, but point %d of %d has x = %g",
                           laws[law].name, i + 1, n, xs[i]);
    return KN_OK;
}

kn_status kn_fit_law_eval(int law, const double *p, int n, const double *xs, double *out)
{
    if (law < 0 || law >= L_COUNT) return kn_fail(KN_ERR_ARG, "fit: no law number %d", law);
    kn_status st = check_domain(law, n, xs);
    if (st != KN_OK) return st;
    for (int i = 0; i < n; i++) out[i] = law_at(law, p, xs[i]);
    return KN_OK;
}

void kn_fit_stats(int n, const double *ys, const double *yhat, double *r2, double *mse)
{
    double mean = 0, ssr = 0, sst = 0;
    for (int i = 0; i < n; i++) mean += ys[i];
    mean /= n > 0 ? n : 1;
    for (int i = 0; i < n; i++) {
        double r = ys[i] - yhat[i], d = ys[i] - mean;
        ssr += r * r;
        sst += d * d;
    }
    if (mse) *mse = n > 0 ? ssr / n : NAN;
    if (r2) *r2 = sst > 0 ? 1.0 - ssr / sst : NAN;
}

/* y ≈ A + B·g: exact least squares; returns the sum of squares. */
static double linear2(int n, const double *g, const double *ys, double *A, double *B)
{
    double mg = 0, my = 0;
    for (int i = 0; i < n; i++) { mg += g[i]; my += ys[i]; }
    mg /= n; my /= n;
    double sgg = 0, sgy = 0;
    for (int i = 0; i < n; i++) { sgg += (g[i] - mg) * (g[i] - mg); sgy += (g[i] - mg) * (ys[i] - my); }
    double b = sgg > 0 ? sgy / sgg : 0, a = my - b * mg, ss = 0;
    for (int i = 0; i < n; i++) { double r = ys[i] - a - b * g[i]; ss += r * r; }
    *A = a; *B = b;
    return isfinite(ss) ? ss : INFINITY;
}

static inline double basis(int law, double gamma, double x)
{
    switch (law) {
    case L_POSITION: return 1.0 / (1.0 + gamma * x);
    case L_HYPERBOLIC: case L_RECIPROCAL: return 1.0 / (x + gamma);
    case L_POWER: case L_KAPLAN: return pow(x, -gamma);
    case L_LOG: case L_NEGLOG: return log(x);
    case L_LINEAR: return x;
    default: return 0;
    }
}

kn_status kn_fit_law_guess(int law, int n, const double *xs, const double *ys, double *p0)
{
    if (law < 0 || law >= L_COUNT) return kn_fail(KN_ERR_ARG, "fit: no law number %d", law);
    if (n < 1) return kn_fail(KN_ERR_ARG, "fit: no points to guess a starting point from");
    kn_status st = check_domain(law, n, xs);
    if (st != KN_OK) return st;
    double *g = malloc(sizeof(double) * (size_t)n);
    if (!g) return kn_fail(KN_ERR_NOMEM, "fit: out of memory (%d points)", n);
    double xmin = INFINITY, xmax = -INFINITY, amax = 0;
    for (int i = 0; i < n; i++) {
        if (xs[i] < xmin) xmin = xs[i];
        if (xs[i] > xmax) xmax = xs[i];
        if (fabs(xs[i]) > amax) amax = fabs(xs[i]);
    }
    if (amax == 0) amax = 1;
    double A = 0, B = 0, best_gamma = 0, best = INFINITY, bA = 0, bB = 0;
    if (law == L_CONSTANT) {
        for (int i = 0; i < n; i++) A += ys[i];
        p0[0] = A / n;
        free(g);
        return KN_OK;
    }
    if (law == L_LOG || law == L_NEGLOG || law == L_LINEAR) {
        for (int i = 0; i < n; i++) g[i] = basis(law, 0, xs[i]);
        linear2(n, g, ys, &A, &B);
        p0[0] = A;
        p0[1] = law == L_NEGLOG ? -B : B;
        free(g);
        return KN_OK;
    }
    /* One nonlinear parameter: scan it, solve (A, B) exactly at each value. */
    const int K = 241;
    for (int k = 0; k < K; k++) {
        double u = (double)k / (K - 1), gamma;
        if (law == L_POSITION) gamma = pow(10.0, -5 + 10 * u) / amax;
        else if (law == L_POWER || law == L_KAPLAN) gamma = 0.002 + 4.0 * u;
        else {
            double span = xmax - xmin > 0 ? xmax - xmin : amax;
            gamma = -xmin + span * pow(10.0, -5 + 8 * u);
        }
        for (int i = 0; i < n; i++) g[i] = basis(law, gamma, xs[i]);
        double ss = linear2(n, g, ys, &A, &B);
        if (law == L_KAPLAN && B <= 0) continue;   /* (t_c/x)^alpha is positive */
        if (ss < best) { best = ss; best_gamma = gamma; bA = A; bB = B; }
    }
    free(g);
    if (!isfinite(best)) {   /* kaplan on rising data: a flat start */
        double m = 0;
        for (int i = 0; i < n; i++) m += ys[i];
        bA = m / n; bB = 1e-3 * (fabs(bA) + 1); best_gamma = 0.5;
    }
    switch (law) {
    case L_POSITION: p0[0] = bB; p0[1] = best_gamma; p0[2] = bA; break;
    case L_KAPLAN: p0[0] = bA; p0[1] = pow(bB, 1.0 / best_gamma); p0[2] = best_gamma; break;
    default: p0[0] = bA; p0[1] = bB; p0[2] = best_gamma; break;
    }
    if (law == L_KAPLAN && !(isfinite(p0[1]) && p0[1] > 0)) p0[1] = xmin > 0 ? xmin : 1;
    return KN_OK;
}

/* ---- the LM driver --------------------------------------------------------------------- */

enum { B_NONE, B_LOWER, B_UPPER, B_BOTH, B_FIXED };

typedef struct {
    kn_fit_model f;
    void *ctx;
    int np, nfree, n;
    const double *xs, *ys;
    double lo[KN_FIT_MAXP], hi[KN_FIT_MAXP], fixed[KN_FIT_MAXP];
    int kind[KN_FIT_MAXP], idx[KN_FIT_MAXP];   /* idx: free slot -> parameter */
    double *pred;
    int aborted, calls;
} problem;

static double to_external(const problem *pb, int j, double u)
{
    switch (pb->kind[j]) {
    case B_LOWER: return pb->lo[j] - 1.0 + sqrt(u * u + 1.0);
    case B_UPPER: return pb->hi[j] + 1.0 - sqrt(u * u + 1.0);
    case B_BOTH: return pb->lo[j] + (pb->hi[j] - pb->lo[j]) * (sin(u) + 1.0) / 2.0;
    default: return u;
    }
}

/* Inverse map; a point on a bound is moved just inside it, where the map's slope is not 0. */
static double to_internal(const problem *pb, int j, double p)
{
    double lo = pb->lo[j], hi = pb->hi[j];
    switch (pb->kind[j]) {
    case B_LOWER: {
        double d = p - lo, eps = 1e-6 * fmax(1.0, fabs(lo));
        if (d < eps) d = eps;
        return sqrt((d + 1.0) * (d + 1.0) - 1.0);
    }
    case B_UPPER: {
        double d = hi - p, eps = 1e-6 * fmax(1.0, fabs(hi));
        if (d < eps) d = eps;
        return sqrt((d + 1.0) * (d + 1.0) - 1.0);
    }
    case B_BOTH: {
        double s = 2.0 * (p - lo) / (hi - lo) - 1.0;
        if (s > 1 - 1e-9) s = 1 - 1e-9;
        if (s < -1 + 1e-9) s = -1 + 1e-9;
        return asin(s);
    }
    default: return p;
    }
}

static void external(const problem *pb, const double *u, double *p)
{
    for (int j = 0; j < pb->np; j++) p[j] = pb->fixed[j];
    for (int k = 0; k < pb->nfree; k++) p[pb->idx[k]] = to_external(pb, pb->idx[k], u[k]);
}

static int residuals(void *vp, int m, int nvar, const double *u, double *fvec, int iflag)
{
    (void)nvar; (void)iflag;
    problem *pb = vp;
    double p[KN_FIT_MAXP];
    external(pb, u, p);
    pb->calls++;
    if (pb->f(pb->ctx, p, m, pb->xs, pb->pred) != 0) { pb->aborted = 1; return -1; }
    if (kn_interrupted) { pb->aborted = 2; return -1; }
    for (int i = 0; i < m; i++) {
        double r = pb->pred[i] - pb->ys[i];
        fvec[i] = isfinite(r) ? r : 1e30;   /* steps into a pole or a NaN are rejected by LM */
    }
    return 0;
}

static double sum_sq(problem *pb, const double *p, int *finite)
{
    pb->calls++;
    if (pb->f(pb->ctx, p, pb->n, pb->xs, pb->pred) != 0) { *finite = -1; return INFINITY; }
    double s = 0;
    *finite = 1;
    for (int i = 0; i < pb->n; i++) {
        double r = pb->pred[i] - pb->ys[i];
        if (!isfinite(r)) { *finite = 0; return INFINITY; }
        s += r * r;
    }
    return s;
}

kn_status kn_fit_curve(kn_fit_model f, void *ctx, int np, int n, const double *xs, const double *ys,
                       const double *p0, const kn_fit_opts *opts, kn_fit_result *res)
{
    kn_fit_opts o = {0};
    if (opts) o = *opts;
    if (o.starts <= 0) o.starts = 8;
    if (o.max_evals <= 0) o.max_evals = 2000 * (np + 1);
    if (!(o.tol > 0)) o.tol = 1e-12;
    if (!f || !res) return kn_fail(KN_ERR_ARG, "fit: no model or no result");
    if (np < 1 || np > KN_FIT_MAXP)
        return kn_fail(KN_ERR_ARG, "fit: %d parameters (1 to %d are supported)", np, KN_FIT_MAXP);
    if (!p0) return kn_fail(KN_ERR_ARG, "fit: a starting point p0 is required");
    if (n < 1 || !xs || !ys) return kn_fail(KN_ERR_ARG, "fit: no data points");
    for (int i = 0; i < n; i++) {
        if (!isfinite(xs[i])) return kn_fail(KN_ERR_ARG, "fit: x of point %d of %d is not finite (%g)", i + 1, n, xs[i]);
        if (!isfinite(ys[i])) return kn_fail(KN_ERR_ARG, "fit: y of point %d of %d is not finite (%g)", i + 1, n, ys[i]);
    }
    problem pb = {.f = f, .ctx = ctx, .np = np, .n = n, .xs = xs, .ys = ys};
    for (int j = 0; j < np; j++) {
        double lo = o.lower ? o.lower[j] : -INFINITY, hi = o.upper ? o.upper[j] : INFINITY;
        if (isnan(lo) || isnan(hi) || lo > hi || lo == INFINITY || hi == -INFINITY)
            return kn_fail(KN_ERR_ARG, "fit: parameter %d has impossible bounds [%g, %g]", j + 1, lo, hi);
        if (!isfinite(p0[j])) return kn_fail(KN_ERR_ARG, "fit: p0[%d] is not finite (%g)", j + 1, p0[j]);
        if (p0[j] < lo || p0[j] > hi)
            return kn_fail(KN_ERR_ARG, "fit: p0[%d] = %g is outside its bounds [%g, %g]", j + 1, p0[j], lo, hi);
        pb.lo[j] = lo; pb.hi[j] = hi; pb.fixed[j] = p0[j];
        pb.kind[j] = lo == hi ? B_FIXED : isfinite(lo) && isfinite(hi) ? B_BOTH
                   : isfinite(lo) ? B_LOWER : isfinite(hi) ? B_UPPER : B_NONE;
        if (pb.kind[j] == B_FIXED) pb.fixed[j] = lo;
        else pb.idx[pb.nfree++] = j;
    }
    if (n <= pb.nfree)
        return kn_fail(KN_ERR_ARG, "fit: too few points: %d for %d free parameters (need at least %d)",
                       n, pb.nfree, pb.nfree + 1);

    int nf = pb.nfree > 0 ? pb.nfree : 1;
    size_t nd = (size_t)n * nf + (size_t)n * 2 + (size_t)nf * 7 + 16;
    double *mem = malloc(sizeof(double) * nd);
    int *ipvt = malloc(sizeof(int) * (size_t)nf);
    if (!mem || !ipvt) { free(mem); free(ipvt); return kn_fail(KN_ERR_NOMEM, "fit: out of memory (%d points)", n); }
    double *fjac = mem, *fvec = fjac + (size_t)n * nf, *pred = fvec + n, *u = pred + n;
    double *diag = u + nf, *qtf = diag + nf, *wa1 = qtf + nf, *wa2 = wa1 + nf, *wa3 = wa2 + nf;
    double *wa4 = malloc(sizeof(double) * (size_t)n);
    if (!wa4) { free(mem); free(ipvt); return kn_fail(KN_ERR_NOMEM, "fit: out of memory (%d points)", n); }
    pb.pred = pred;

    kn_rng rng;
    kn_rng_seed(&rng, o.seed ? o.seed : 0x6b696c6e);
    double best_p[KN_FIT_MAXP], start[KN_FIT_MAXP], p[KN_FIT_MAXP];
    double best = INFINITY;
    int best_info = 0, used = 0;
    kn_status st = KN_OK;
    memcpy(best_p, p0, sizeof(double) * (size_t)np);
    for (int s = 0; s < o.starts; s++) {
        /* Start 1 is p0; later ones perturb the best point so far (or p0), by growing factors. */
        const double *centre = isfinite(best) ? best_p : p0;
        double scale = s > 0 ? 0.3 * (double)(1 << ((s - 1) % 4)) : 0;
        for (int j = 0; j < np; j++) {
            double v = centre[j];
            if (s > 0 && pb.kind[j] != B_FIXED) {
                double z = kn_rng_normal(&rng);
                v = v != 0 ? v * exp(scale * z) : scale * z;
                if (kn_rng_uniform(&rng) < 0.15) v = -v;   /* now and then try the other sign */
                if (v < pb.lo[j]) v = pb.lo[j];
                if (v > pb.hi[j]) v = pb.hi[j];
            }
            start[j] = v;
        }
        for (int k = 0; k < pb.nfree; k++) u[k] = to_internal(&pb, pb.idx[k], start[pb.idx[k]]);
        external(&pb, u, p);
        int finite;
        double ss0 = sum_sq(&pb, p, &finite);
        if (finite < 0) { st = kn_fail(KN_ERR_ARG, "fit: the model function failed"); goto done; }
        if (!finite || !isfinite(ss0)) continue;
        used++;
        int info = 0, nfev = 0;
        if (pb.nfree > 0) {
            pb.aborted = 0;
            info = lmdif(residuals, &pb, n, pb.nfree, u, fvec, o.tol, o.tol, 0.0, o.max_evals, 0.0,
                         diag, 1, 100.0, 0, &nfev, fjac, n, ipvt, qtf, wa1, wa2, wa3, wa4);
            if (pb.aborted == 2) { st = kn_fail(KN_ERR_INTERRUPTED, "fit: interrupted"); goto done; }
            if (pb.aborted) { st = kn_fail(KN_ERR_ARG, "fit: the model function failed"); goto done; }
            if (info == 0) { st = kn_fail(KN_ERR_ARG, "fit: MINPACK refused its inputs"); goto done; }
            external(&pb, u, p);
        }
        double ss = sum_sq(&pb, p, &finite);
        if (finite < 0) { st = kn_fail(KN_ERR_ARG, "fit: the model function failed"); goto done; }
        if (finite && ss < best) {
            best = ss;
            best_info = info;
            memcpy(best_p, p, sizeof(double) * (size_t)np);
        }
    }
    if (!isfinite(best)) {
        st = kn_fail(KN_ERR_ARG, "fit: the model is not finite at any of the %d starting points "
                     "(p0 and perturbations of it); give a p0 where it is defined for every x", o.starts);
        goto done;
    }
    memset(res, 0, sizeof *res);
    memcpy(res->p, best_p, sizeof(double) * (size_t)np);
    {
        int finite;
        sum_sq(&pb, best_p, &finite);
        kn_fit_stats(n, ys, pred, &res->r2, &res->mse);
    }
    res->ssr = best;
    res->nfev = pb.calls;
    res->info = best_info;
    res->starts_used = used;
done:
    free(mem);
    free(ipvt);
    free(wa4);
    return st;
}

typedef struct { int law; } law_ctx;

static int law_model(void *ctx, const double *p, int n, const double *xs, double *out)
{
    int law = ((law_ctx *)ctx)->law;
    for (int i = 0; i < n; i++) out[i] = law_at(law, p, xs[i]);
    return 0;
}

kn_status kn_fit_law(int law, int n, const double *xs, const double *ys, const double *p0,
                     const kn_fit_opts *opts, kn_fit_result *res)
{
    if (law < 0 || law >= L_COUNT) return kn_fail(KN_ERR_ARG, "fit: no law number %d", law);
    if (n < 1 || !xs || !ys) return kn_fail(KN_ERR_ARG, "fit: no data points");
    for (int i = 0; i < n; i++) {
        if (!isfinite(xs[i])) return kn_fail(KN_ERR_ARG, "fit: x of point %d of %d is not finite (%g)", i + 1, n, xs[i]);
        if (!isfinite(ys[i])) return kn_fail(KN_ERR_ARG, "fit: y of point %d of %d is not finite (%g)", i + 1, n, ys[i]);
    }
    int np = laws[law].np;
    kn_fit_opts o = {0};
    if (opts) o = *opts;
    double lo[KN_FIT_MAXP], hi[KN_FIT_MAXP], start[KN_FIT_MAXP];
    kn_fit_law_bounds(law, lo, hi);
    if (o.lower) memcpy(lo, o.lower, sizeof(double) * (size_t)np);
    if (o.upper) memcpy(hi, o.upper, sizeof(double) * (size_t)np);
    o.lower = lo; o.upper = hi;
    int nfree = 0;
    for (int j = 0; j < np; j++) nfree += !(lo[j] == hi[j]);
    if (n <= nfree)
        return kn_fail(KN_ERR_ARG, "fit: too few points for law '%s': %d for %d free parameters (need at least %d)",
                       laws[law].name, n, nfree, nfree + 1);
    kn_status st = check_domain(law, n, xs);
    if (st != KN_OK) return st;
    if (p0) {
        memcpy(start, p0, sizeof(double) * (size_t)np);
    } else {
        st = kn_fit_law_guess(law, n, xs, ys, start);
        if (st != KN_OK) return st;
        /* The guess ignores the caller's bounds: bring it inside them. */
        for (int j = 0; j < np; j++) {
            if (!isfinite(start[j])) start[j] = isfinite(lo[j]) ? lo[j] : isfinite(hi[j]) ? hi[j] : 0;
            if (start[j] < lo[j]) start[j] = lo[j];
            if (start[j] > hi[j]) start[j] = hi[j];
        }
    }
    law_ctx c = {law};
    st = kn_fit_curve(law_model, &c, np, n, xs, ys, start, &o, res);
    if (st != KN_OK || !p0) return st;
    /* A caller's p0 can sit in a poor basin: also try the data-driven start, keep the better. */
    double g[KN_FIT_MAXP];
    if (kn_fit_law_guess(law, n, xs, ys, g) != KN_OK) return KN_OK;
    for (int j = 0; j < np; j++) {
        if (!isfinite(g[j])) return KN_OK;
        if (g[j] < lo[j]) g[j] = lo[j];
        if (g[j] > hi[j]) g[j] = hi[j];
    }
    kn_fit_result r2;
    if (kn_fit_curve(law_model, &c, np, n, xs, ys, g, &o, &r2) == KN_OK && r2.ssr < res->ssr) {
        r2.nfev += res->nfev;
        *res = r2;
    }
    return KN_OK;
}
