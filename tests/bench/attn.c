/* attn.c — the fused attention kernels alone, at the attention shapes of the bench configs.
 *
 *   attn [THREADS [REPEATS]]      THREADS default 1, REPEATS (timed calls, median) default 5
 *
 * For each of S, M, L (batch, heads, T, head size from tests/bench/bench.c's configs) prints
 * one line: cfg, forward ms and GFLOP/s, backward ms and GFLOP/s (medians), and the best
 * forward and backward GFLOP/s (the fastest call: steadier than the median on a busy host), and
 * the same per second of process CPU time (steadier still at 1 thread, where time the host
 * takes the core away is not counted). FLOPs are counted on the
 * causal triangle only: the forward does two products (Q·Kᵀ and P·V), each 2·hs FLOPs per
 * (query, key) pair, so 2·2·B·heads·(T²/2)·hs; the backward does four (dV, dP, dQ, dK), so
 * twice that (the recomputation of Q·Kᵀ is not counted as useful work). */
#include "kernels.h"
#include "kn.h"
#include "pool.h"
#include "rng.h"
#include "timing.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct { const char *name; int B, H, T, C; } attn_cfg;

static const attn_cfg CONFIGS[] = {
    {"S", 16, 4, 256, 128}, {"M", 16, 8, 256, 256}, {"L", 8, 8, 512, 512},
};

static double min_of(const double *x, int n)
{
    double m = x[0];
    for (int i = 1; i < n; i++) m = x[i] < m ? x[i] : m;
    return m;
}

static float *randn_buf(size_t n, uint64_t seed)
{
    float *p = malloc(sizeof(float) * n);
    if (!p) { fprintf(stderr, "attn: out of memory\n"); exit(1); }
    kn_rng r;
    kn_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) p[i] = (float)kn_rng_normal(&r);
    return p;
}

static void run_cfg(const attn_cfg *c, int threads, int repeats)
{
    int B = c->B, T = c->T, C = c->C, H = c->H, hs = C / H;
    size_t n = (size_t)B * T;
    float *qkv = randn_buf(n * 3 * C, 1), *dy = randn_buf(n * C, 2);
    float *y = calloc(n * C, sizeof(float)), *lse = calloc((size_t)B * H * T, sizeof(float));
    float *dqkv = calloc(n * 3 * C, sizeof(float));
    float *scratch = calloc(kn_attention_scratch_floats(T, hs, threads), sizeof(float));
    double *tf = malloc(sizeof(double) * (size_t)repeats), *tb = malloc(sizeof(double) * (size_t)repeats);
    double *cf = malloc(sizeof(double) * (size_t)repeats), *cb = malloc(sizeof(double) * (size_t)repeats);
    if (!y || !lse || !dqkv || !scratch || !tf || !tb || !cf || !cb) { fprintf(stderr, "attn: out of memory\n"); exit(1); }
    kn_attention_forward(y, lse, scratch, qkv, B, T, C, H);   /* warm-up */
    kn_attention_backward(dqkv, scratch, dy, qkv, y, lse, B, T, C, H, false);
    for (int r = 0; r < repeats; r++) {
        double t0 = now(), c0 = cpu_now();
        kn_attention_forward(y, lse, scratch, qkv, B, T, C, H);
        double t1 = now(), c1 = cpu_now();
        kn_attention_backward(dqkv, scratch, dy, qkv, y, lse, B, T, C, H, false);
        tf[r] = t1 - t0;
        tb[r] = now() - t1;
        cf[r] = c1 - c0;
        cb[r] = cpu_now() - c1;
    }
    qsort(tf, (size_t)repeats, sizeof(double), cmp_double);
    qsort(tb, (size_t)repeats, sizeof(double), cmp_double);
    double f = tf[repeats / 2], b = tb[repeats / 2];
    double flops = 2.0 * 2.0 * B * H * ((double)T * T / 2.0) * hs;
    printf("cfg=%s threads=%d hs=%d fwd_ms=%.2f fwd_gflops=%.1f bwd_ms=%.2f bwd_gflops=%.1f "
           "best_fwd_gflops=%.1f best_bwd_gflops=%.1f cpu_fwd_gflops=%.1f cpu_bwd_gflops=%.1f\n",
           c->name, threads, hs, 1e3 * f, flops / f * 1e-9, 1e3 * b, 2 * flops / b * 1e-9,
           flops / tf[0] * 1e-9, 2 * flops / tb[0] * 1e-9, flops / min_of(cf, repeats) * 1e-9,
           2 * flops / min_of(cb, repeats) * 1e-9);
    free(qkv); free(dy); free(y); free(lse); free(dqkv); free(scratch); free(tf); free(tb); free(cf); free(cb);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 1, repeats = argc > 2 ? atoi(argv[2]) : 5;
    if (threads < 1 || repeats < 1) {
        fprintf(stderr, "usage: attn [THREADS >= 1 [REPEATS >= 1]]\n");
        return 2;
    }
    kn_set_threads(threads);
    kn_blas_single_thread();
    for (size_t i = 0; i < sizeof CONFIGS / sizeof CONFIGS[0]; i++)
        run_cfg(&CONFIGS[i], threads, repeats);
    kn_pool_shutdown();
    return 0;
}
