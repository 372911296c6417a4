/* bench.c — kiln training throughput for one (config, threads) per process, so that peak RSS
 * belongs to that config alone.
 *
 *   bench CFG THREADS [STEPS [WARMUP]]     CFG: S, M or L (docs/guide.md, Benchmarks), or
 *                                           L,d,H,T,B (layers, width, heads, context, batch)
 *   bench probe THREADS                     OpenBLAS sgemm GFLOP/s (1024³, median of 15):
 *                                           how much of the 2 vCPUs the host gives right now
 *
 * A step is what a training loop does: zero_grad, forward with loss on random byte tokens,
 * backward, global-norm clipping (1.0) and AdamW (3e-4, betas 0.9/0.95, wd 0.1 on 2-D).
 * Prints one line of key=value pairs (parsed by tests/bench/run):
 *   cfg threads steps tok_s step_ms gflops rss_mib loss params
 * tok_s is B·T over the median step time after the warm-up steps; model FLOPs per token are
 * 6·N + 12·layers·d·T with N the parameters minus the position embeddings. */
#include "adamw.h"
#include "gpt.h"
#include "rng.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Peak resident set of this process, MiB (VmHWM). */
static double peak_rss_mib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) { kb = atof(line + 6); break; }
    fclose(f);
    return kb / 1024.0;
}

static int probe(int threads)
{
    enum { N = 1024, REPS = 15 };
    kn_set_threads(threads);
    float *a = kn_alloc((size_t)N * N * sizeof(float)), *b = kn_alloc((size_t)N * N * sizeof(float));
    float *c = kn_alloc((size_t)N * N * sizeof(float));
    if (!a || !b || !c) { fprintf(stderr, "bench: out of memory\n"); return 1; }
    for (size_t i = 0; i < (size_t)N * N; i++) { a[i] = (float)(i % 7) * 0.1f; b[i] = (float)(i % 5) * 0.1f; }
    double ms[REPS];
    for (int r = 0; r < REPS; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
        ms[r] = now() - t0;
    }
    qsort(ms, REPS, sizeof *ms, cmp_double);
    printf("probe threads=%d gflops=%.1f\n", threads, 2.0 * N * N * N / ms[REPS / 2] * 1e-9);
    kn_free(a); kn_free(b); kn_free(c);
    return 0;
}

static int die(const char *what)
{
    fprintf(stderr, "bench: %s: %s\n", what, kn_errmsg());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench S|M|L|layers,d,heads,T,B THREADS [STEPS [WARMUP]]\n       bench probe THREADS\n");
        return 2;
    }
    int L, d, H, T, B;
    const char *name = argv[1];
    if (!strcmp(name, "probe")) return probe(atoi(argv[2]) > 0 ? atoi(argv[2]) : 1);
    if (!strcmp(name, "S")) { L = 4; d = 128; H = 4; T = 256; B = 16; }
    else if (!strcmp(name, "M")) { L = 6; d = 256; H = 8; T = 256; B = 16; }
    else if (!strcmp(name, "L")) { L = 8; d = 512; H = 8; T = 512; B = 8; }
    else if (sscanf(name, "%d,%d,%d,%d,%d", &L, &d, &H, &T, &B) != 5) {
        fprintf(stderr, "bench: unknown config '%s' (S, M, L or layers,d,heads,T,B)\n", name);
        return 2;
    }
    int threads = atoi(argv[2]);
    int steps = argc > 3 ? atoi(argv[3]) : 10;
    int warmup = argc > 4 ? atoi(argv[4]) : 2;
    if (threads < 1 || steps < 1 || warmup < 0) {
        fprintf(stderr, "bench: threads and steps must be >= 1, warmup >= 0\n");
        return 2;
    }
    kn_set_threads(threads);

    kn_gpt_config cfg = { .vocab_size = 256, .block_size = T, .n_layer = L, .n_head = H, .n_embd = d };
    kn_gpt *g;
    kn_adamw *o;
    if (kn_gpt_new(&g, &cfg) != KN_OK) return die("model");
    kn_rng rng;
    kn_rng_seed(&rng, 1);
    kn_gpt_init(g, &rng);
    if (kn_gpt_reserve(g, B, T) != KN_OK) return die("reserve");
    if (kn_adamw_new(&o, g) != KN_OK) return die("optimizer");
    kn_adamw_hparams h = kn_adamw_defaults();   /* 3e-4, (0.9, 0.95), eps 1e-8, wd 0.1, clip 1 */

    size_t n = (size_t)B * T;
    int32_t *in = malloc(n * sizeof *in), *tg = malloc(n * sizeof *tg);
    double *ms = malloc((size_t)(warmup + steps) * sizeof *ms);
    if (!in || !tg || !ms) { fprintf(stderr, "bench: out of memory\n"); return 1; }
    float loss = 0, norm = 0;
    for (int s = 0; s < warmup + steps; s++) {
        for (size_t i = 0; i < n; i++) { in[i] = (int32_t)kn_rng_below(&rng, 256); tg[i] = (int32_t)kn_rng_below(&rng, 256); }
        double t0 = now();
        kn_gpt_zero_grad(g);
        if (kn_gpt_forward(g, in, tg, B, T, NULL, false, &loss) != KN_OK) return die("forward");
        if (kn_gpt_backward(g, 1.0f) != KN_OK) return die("backward");
        if (kn_adamw_step(o, &h, &norm) != KN_OK) return die("adamw");
        ms[s] = 1e3 * (now() - t0);
        fprintf(stderr, "bench %s t%d step %d: %.1f ms, loss %.4f, grad norm %.3f\n", name, threads, s,
                ms[s], (double)loss, (double)norm);
    }
    qsort(ms + warmup, (size_t)steps, sizeof *ms, cmp_double);
    double med = steps % 2 ? ms[warmup + steps / 2] : 0.5 * (ms[warmup + steps / 2 - 1] + ms[warmup + steps / 2]);
    double tok_s = (double)n / (med * 1e-3);
    double N = (double)kn_gpt_num_params(g) - (double)T * d;   /* without wpe */
    double flops_tok = 6.0 * N + 12.0 * L * d * T;
    printf("cfg=%s threads=%d steps=%d tok_s=%.1f step_ms=%.2f gflops=%.2f rss_mib=%.1f loss=%.4f params=%.0f\n",
           name, threads, steps, tok_s, med, tok_s * flops_tok * 1e-9, peak_rss_mib(), (double)loss, N);
    free(in); free(tg); free(ms);
    kn_adamw_free(o);
    kn_gpt_free(g);
    return 0;
}
