/* gemm.c — kn_gemm against OpenBLAS's cblas_sgemm at the linear layers' shapes, 1 thread.
 *
 *   gemm_bench [ROUNDS [CFG...]]      CFG: S, M, L (default all three), ROUNDS default 7
 *
 * For each config (N = 4096 rows, width d) and layer (qkv d→3d, proj d→d, fc d→4d, fc2 4d→d)
 * it times the three products of a linear layer: forward y = x·wᵀ (NT), input gradient
 * dx = dy·w (NN) and weight gradient dw += dyᵀ·x (TN). Rounds alternate the two
 * implementations (kiln, openblas, kiln, ...) so that a busy host slows both alike; each
 * measurement is process CPU time (not wall time, so time the host takes away from this
 * process does not count). Prints GFLOP/s medians per product and the totals per config
 * (all products of all layers, weighted by their FLOPs). */
#include "gemm.h"
#include "kn.h"
#include "timing.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { bool ta, tb; int M, N, K; const char *what; } product;

static void run(kn_gemm_impl impl, const product *p, const float *a, const float *b, float *c)
{
    int lda = p->ta ? p->M : p->K, ldb = p->tb ? p->K : p->N;
    float beta = p->ta ? 1.0f : 0.0f;   /* the weight gradient accumulates */
    if (impl == KN_GEMM_KILN)
        kn_gemm(p->ta, p->tb, p->M, p->N, p->K, 1.0f, a, lda, b, ldb, beta, c, p->N);
    else
        cblas_sgemm(CblasRowMajor, p->ta ? CblasTrans : CblasNoTrans, p->tb ? CblasTrans : CblasNoTrans,
                    p->M, p->N, p->K, 1.0f, a, lda, b, ldb, beta, c, p->N);
}

/* Seconds per call for each implementation (medians over rounds), plus a check that both
 * give the same product to float accuracy. */
static void time_product(const product *p, int rounds, double sec[2], const float *a,
                         const float *b, float *c)
{
    double *t[2] = {malloc(sizeof(double) * rounds), malloc(sizeof(double) * rounds)};
    size_t nc = (size_t)p->M * p->N;
    float *ref = malloc(sizeof(float) * nc);
    memset(c, 0, sizeof(float) * nc);
    run(KN_GEMM_OPENBLAS, p, a, b, c);
    memcpy(ref, c, sizeof(float) * nc);
    memset(c, 0, sizeof(float) * nc);
    run(KN_GEMM_KILN, p, a, b, c);
    double worst = 0;
    for (size_t i = 0; i < nc; i++) worst = fmax(worst, fabs((double)c[i] - ref[i]));
    if (worst > 1e-3 * sqrt(p->K)) fprintf(stderr, "gemm_bench: %s differs by %g\n", p->what, worst);
    free(ref);
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < 2; i++) {
            kn_gemm_impl impl = (r + i) % 2 ? KN_GEMM_OPENBLAS : KN_GEMM_KILN;
            double t0 = cpu_now();
            run(impl, p, a, b, c);
            t[impl == KN_GEMM_KILN ? 0 : 1][r] = cpu_now() - t0;
        }
    for (int i = 0; i < 2; i++) { sec[i] = median(t[i], rounds); free(t[i]); }
}

static void bench_config(const char *name, int d, int rounds)
{
    enum { ROWS = 4096 };
    int layers[4][2] = {{d, 3 * d}, {d, d}, {d, 4 * d}, {4 * d, d}};
    const char *lname[4] = {"qkv", "proj", "fc", "fc2"};
    size_t big = (size_t)ROWS * 4 * d;
    float *a = kn_alloc(big * sizeof(float)), *b = kn_alloc(big * sizeof(float));
    float *c = kn_alloc(big * sizeof(float));
    if (!a || !b || !c) { fprintf(stderr, "gemm_bench: out of memory\n"); exit(1); }
    for (size_t i = 0; i < big; i++) {
        a[i] = (float)((int)(i % 13) - 6) * 0.01f;
        b[i] = (float)((int)(i % 7) - 3) * 0.01f;
    }
    double total_flops = 0, total[2] = {0, 0};
    for (int l = 0; l < 4; l++) {
        int in = layers[l][0], out = layers[l][1];
        product ps[3] = {
            {false, true, ROWS, out, in, "fwd NT"},
            {false, false, ROWS, in, out, "dx NN"},
            {true, false, out, in, ROWS, "dw TN"},
        };
        for (int k = 0; k < 3; k++) {
            double sec[2], flops = 2.0 * ps[k].M * ps[k].N * ps[k].K;
            time_product(&ps[k], rounds, sec, a, b, c);
            printf("%s %-4s %-6s M=%-5d N=%-5d K=%-5d kiln %6.1f  openblas %6.1f GFLOP/s  ratio %.3f\n",
                   name, lname[l], ps[k].what, ps[k].M, ps[k].N, ps[k].K, flops / sec[0] * 1e-9,
                   flops / sec[1] * 1e-9, sec[1] / sec[0]);
            total_flops += flops;
            total[0] += sec[0];
            total[1] += sec[1];
        }
    }
    printf("%s all   kiln %6.1f  openblas %6.1f GFLOP/s  ratio %.3f\n", name,
           total_flops / total[0] * 1e-9, total_flops / total[1] * 1e-9, total[1] / total[0]);
    fflush(stdout);
    kn_free(a); kn_free(b); kn_free(c);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 7;
    if (rounds < 1) { fprintf(stderr, "usage: gemm_bench [ROUNDS [S|M|L ...]]\n"); return 2; }
    kn_set_threads(1);
    const char *all[] = {"S", "M", "L"};
    int ncfg = argc > 2 ? argc - 2 : 3;
    for (int i = 0; i < ncfg; i++) {
        const char *name = argc > 2 ? argv[i + 2] : all[i];
        int d = !strcmp(name, "S") ? 128 : !strcmp(name, "M") ? 256 : !strcmp(name, "L") ? 512 : 0;
        if (!d) { fprintf(stderr, "gemm_bench: unknown config '%s' (S, M or L)\n", name); return 2; }
        bench_config(name, d, rounds);
    }
    return 0;
}
