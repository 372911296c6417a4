/* fit.h — nonlinear least squares for scaling-law fits: MINPACK's Levenberg–Marquardt
 * (lmdif, forward-difference Jacobian) with box bounds by reparametrisation, several
 * starting points, and the goodness of fit (SSR, MSE, R²) of the best one.
 *
 * A model maps parameters p[0..np-1] and points xs[0..n-1] to predictions. It is either a
 * built-in law (fast, and able to find its own starting point) or a caller's callback.
 *
 * Built-in laws (x is the position i for "position", the trained tokens t otherwise):
 *   position    a0/(1 + a1·x) + a2          the per-position ("hyperbolic") law; a1 >= 0
 *   log         alpha + beta·ln x           x > 0
 *   neglog      A − B·ln x                  the logarithmic baseline, x > 0
 *   hyperbolic  alpha + beta/(x + gamma)
 *   reciprocal  A + B/(x + C)               the reciprocal baseline (same family as hyperbolic)
 *   power       alpha + beta·x^(−gamma)     x > 0; gamma >= 0
 *   kaplan      L_inf + (t_c/x)^alpha       the Kaplan baseline, x > 0; t_c >= 0, alpha >= 0
 *   linear      alpha + beta·x              (the LR-aware forms: x is a covariate such as lr/lr_max)
 *   constant    alpha
 * Default bounds are noted above; a caller's bounds replace them. */
#ifndef KN_FIT_H
#define KN_FIT_H

#include "kn.h"

#define KN_FIT_MAXP 16

/* Predictions out[0..n-1] of a caller's model at parameters p; nonzero aborts the fit (the
 * callback keeps its own reason; kn_fit_curve then fails with KN_ERR_ARG). */
typedef int (*kn_fit_model)(void *ctx, const double *p, int n, const double *xs, double *out);

typedef struct {
    const double *lower, *upper; /* np bounds each, or NULL; ±INFINITY = none; lower == upper fixes */
    int starts;                  /* starting points tried (>= 1; default 8) */
    int max_evals;               /* model evaluations per start (default 2000·(np+1)) */
    double tol;                  /* LM ftol and xtol (default 1e-12) */
    uint64_t seed;               /* for the perturbed starts */
} kn_fit_opts;

typedef struct {
    double p[KN_FIT_MAXP];
    double ssr, mse, r2;         /* on the fitted points; r2 is NaN when the ys are constant */
    int nfev;                    /* model evaluations over all starts */
    int info;                    /* MINPACK's status of the best start (1..4 = converged) */
    int starts_used;             /* starts whose initial point was finite */
} kn_fit_result;

/* Number of built-in laws, and the name of law k (0-based), or NULL past the end. */
int kn_fit_law_count(void);
const char *kn_fit_law_name(int k);
/* Index of a law by name, or -1 (with a message listing the laws). */
int kn_fit_law_find(const char *name);
/* Its parameter count, the name of parameter j, and its formula as text. */
int kn_fit_law_nparams(int law);
const char *kn_fit_law_param(int law, int j);
const char *kn_fit_law_formula(int law);
/* Its default bounds (lower[j], upper[j], ±INFINITY where none). */
void kn_fit_law_bounds(int law, double *lower, double *upper);
/* Evaluate a law at p for n points; KN_ERR_ARG if a point lies outside its domain. */
kn_status kn_fit_law_eval(int law, const double *p, int n, const double *xs, double *out);
/* A data-driven starting point: grid over the law's one nonlinear parameter, exact linear
 * least squares for the other two at each grid value. */
kn_status kn_fit_law_guess(int law, int n, const double *xs, const double *ys, double *p0);
/* Fit a built-in law; p0 may be NULL (then kn_fit_law_guess supplies it). */
kn_status kn_fit_law(int law, int n, const double *xs, const double *ys, const double *p0,
                     const kn_fit_opts *opts, kn_fit_result *res);
/* Fit a caller's model of np parameters from p0 (required). */
kn_status kn_fit_curve(kn_fit_model f, void *ctx, int np, int n, const double *xs, const double *ys,
                       const double *p0, const kn_fit_opts *opts, kn_fit_result *res);
/* R² (NaN when the ys are constant) and MSE of predictions yhat against ys. */
void kn_fit_stats(int n, const double *ys, const double *yhat, double *r2, double *mse);

#endif
