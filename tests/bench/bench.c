/* bench.c — kiln training throughput for one (config, threads) per process, so that peak RSS
 * belongs to that config alone.
 *
 *   bench CFG THREADS [STEPS [WARMUP]]     CFG: S, M, L, LC, V, M256 ... M4096 (see configs
 *                                           below), or L,d,H,T,B[,V] (layers, width, heads,
 *                                           context, batch, vocabulary)
 *   bench probe THREADS                     OpenBLAS sgemm GFLOP/s (1024³, median of 15):
 *                                           how much of the 2 vCPUs the host gives right now
 *   bench fma THREADS                       the FMA peak: GFLOP/s of independent 8-wide FMAs
 *                                           on every thread (median of 7)
 *
 * A step is what a training loop does: zero_grad, forward with loss on random tokens,
 * backward, global-norm clipping (1.0) and AdamW (3e-4, betas 0.9/0.95, wd 0.1 on 2-D).
 * After the steps, the same process times the step's matmuls alone (every linear layer's
 * forward, input gradient and weight gradient at the step's shapes, through kiln's own
 * sgemm dispatch) and the FMA peak. Prints one line of key=value pairs (parsed by
 * tests/bench/run):
 *   cfg threads gemm steps tok_s step_ms cpu_tok_s cpu_step_ms gflops rss_mib model_mib loss params
 *   fma_gflops sgemm_gflops pct_fma pct_sgemm blas_gflops pct_blas
 * gemm is the sgemm the linear layers used: KILN_GEMM=kiln or openblas (the default depends on
 * the CPU, gemm.c).
 * cpu_step_ms is the median step in process CPU time (all threads): at 1 thread the figure
 * to compare on a busy host, since time the host gives to others does not count in it.
 * model_mib is what the model holds (parameters, gradients, activations; kn_gpt_memory_bytes),
 * AdamW's two moments come on top. tok_s is B·T over the median step time after the warm-up steps; model FLOPs per token are
 * 6·N + 12·layers·d·T with N the parameters minus the position embeddings; pct_fma and
 * pct_sgemm are the step's GFLOP/s as a percentage of the FMA peak and of the sgemm rate at
 * the step's shapes; blas_gflops and pct_blas the same with OpenBLAS's sgemm at those shapes
 * (the ceiling a step built on OpenBLAS would have; with KILN_GEMM=openblas the two agree). */
#include "adamw.h"
#include "gemm.h"
#include "gpt.h"
#include "kernels.h"
#include "pool.h"
#include "rng.h"
#include "timing.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

typedef struct { const char *name; int L, d, H, T, B, V; } bench_cfg;

static const bench_cfg CONFIGS[] = {
    {"S", 4, 128, 4, 256, 16, 256},      {"M", 6, 256, 8, 256, 16, 256},
    {"L", 8, 512, 8, 512, 8, 256},       {"LC", 6, 256, 8, 2048, 2, 256},
    {"V", 4, 256, 8, 256, 16, 50257},    {"M256", 6, 256, 8, 256, 16, 256},
    {"M512", 6, 256, 8, 512, 8, 256},    {"M1024", 6, 256, 8, 1024, 4, 256},
    {"M2048", 6, 256, 8, 2048, 2, 256},  {"M4096", 6, 256, 8, 4096, 1, 256},
};

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

static double sgemm_probe(int threads)
{
    enum { N = 1024, REPS = 15 };
    kn_set_threads(threads);
    float *a = kn_alloc((size_t)N * N * sizeof(float)), *b = kn_alloc((size_t)N * N * sizeof(float));
    float *c = kn_alloc((size_t)N * N * sizeof(float));
    if (!a || !b || !c) { fprintf(stderr, "bench: out of memory\n"); exit(1); }
    for (size_t i = 0; i < (size_t)N * N; i++) { a[i] = (float)(i % 7) * 0.1f; b[i] = (float)(i % 5) * 0.1f; }
    double ms[REPS];
    for (int r = 0; r < REPS; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
        ms[r] = now() - t0;
    }
    kn_free(a); kn_free(b); kn_free(c);
    return 2.0 * N * N * N / median(ms, REPS) * 1e-9;
}

/* 12 independent accumulators hide the FMA latency; ITER of them per thread. */
enum { FMA_ITER = 4000000 };
static void fma_body(void *ctx, int64_t b, int64_t e, int tid)
{
    float *sink = ctx;
    for (int64_t i = b; i < e; i++) {
#if defined(__AVX2__) && defined(__FMA__)
        __m256 acc[12], x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-3f);
        for (int k = 0; k < 12; k++) acc[k] = _mm256_set1_ps((float)k);
        for (int n = 0; n < FMA_ITER; n++) {
            acc[0] = _mm256_fmadd_ps(acc[0], x, y); acc[1] = _mm256_fmadd_ps(acc[1], x, y);
            acc[2] = _mm256_fmadd_ps(acc[2], x, y); acc[3] = _mm256_fmadd_ps(acc[3], x, y);
            acc[4] = _mm256_fmadd_ps(acc[4], x, y); acc[5] = _mm256_fmadd_ps(acc[5], x, y);
            acc[6] = _mm256_fmadd_ps(acc[6], x, y); acc[7] = _mm256_fmadd_ps(acc[7], x, y);
            acc[8] = _mm256_fmadd_ps(acc[8], x, y); acc[9] = _mm256_fmadd_ps(acc[9], x, y);
            acc[10] = _mm256_fmadd_ps(acc[10], x, y); acc[11] = _mm256_fmadd_ps(acc[11], x, y);
        }
        float s = 0.0f, out[8];
        for (int k = 0; k < 12; k++) {
            _mm256_storeu_ps(out, acc[k]);
            s += out[0];
        }
        sink[i] = s;
#else
        sink[i] = 0.0f;
#endif
    }
}

static double fma_probe(int threads)
{
    enum { REPS = 7 };
    kn_set_threads(threads);
    float sink[64];
    double t[REPS];
    for (int r = 0; r < REPS; r++) {
        double t0 = now();
        kn_parallel_for(threads, fma_body, sink);
        t[r] = now() - t0;
    }
    return (double)threads * FMA_ITER * 12 * 8 * 2 / median(t, REPS) * 1e-9;
}

/* GFLOP/s of the step's matmuls alone: forward, dx and dw of every linear layer at the
 * config's shapes (the output layer one chunk at a time, as the step does), each timed as
 * the median of 5 runs. */
static double sgemm_at_shapes(const bench_cfg *c)
{
    int N = c->B * c->T, d = c->d;
    int chunk = kn_linear_xent_chunk(N, c->V);
    struct { int rows, in, out, count; } shapes[] = {
        {N, d, 3 * d, c->L}, {N, d, d, c->L}, {N, d, 4 * d, c->L}, {N, 4 * d, d, c->L},
        {chunk, d, c->V, (N + chunk - 1) / chunk},
    };
    size_t big = (size_t)N * 4 * d;
    if ((size_t)chunk * c->V > big) big = (size_t)chunk * c->V;
    if ((size_t)c->V * d > big) big = (size_t)c->V * d;
    float *x = kn_alloc(big * sizeof(float)), *w = kn_alloc(big * sizeof(float));
    float *y = kn_alloc(big * sizeof(float)), *dx = kn_alloc(big * sizeof(float));
    float *dw = kn_alloc(big * sizeof(float));
    if (!x || !w || !y || !dx || !dw) { fprintf(stderr, "bench: out of memory\n"); exit(1); }
    for (size_t i = 0; i < big; i++) { x[i] = (float)(i % 13) * 0.01f; w[i] = (float)(i % 7) * 0.01f; y[i] = 0.01f; }
    double flops = 0.0, secs = 0.0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        double t[5];
        for (int r = 0; r < 5; r++) {
            double t0 = now();
            kn_linear_forward(y, x, w, NULL, shapes[s].rows, shapes[s].in, shapes[s].out, false);
            kn_linear_backward(dx, dw, NULL, y, x, w, shapes[s].rows, shapes[s].in, shapes[s].out, false);
            t[r] = now() - t0;
        }
        flops += 6.0 * shapes[s].rows * shapes[s].in * shapes[s].out * shapes[s].count;
        secs += median(t, 5) * shapes[s].count;
    }
    kn_free(x); kn_free(w); kn_free(y); kn_free(dx); kn_free(dw);
    return flops / secs * 1e-9;
}

static int die(const char *what)
{
    fprintf(stderr, "bench: %s: %s\n", what, kn_errmsg());
    return 1;
}

static int parse_config(const char *name, bench_cfg *c)
{
    for (size_t i = 0; i < sizeof CONFIGS / sizeof CONFIGS[0]; i++)
        if (!strcmp(name, CONFIGS[i].name)) { *c = CONFIGS[i]; return 0; }
    *c = (bench_cfg){.name = name, .V = 256};
    int n = sscanf(name, "%d,%d,%d,%d,%d,%d", &c->L, &c->d, &c->H, &c->T, &c->B, &c->V);
    return n == 5 || n == 6 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench S|M|L|LC|V|M256..M4096|layers,d,heads,T,B[,V] THREADS [STEPS [WARMUP]]\n"
                        "       bench probe THREADS\n       bench fma THREADS\n");
        return 2;
    }
    const char *name = argv[1];
    int threads = atoi(argv[2]);
    if (!strcmp(name, "probe") || !strcmp(name, "fma")) {
        threads = threads > 0 ? threads : 1;
        printf("%s threads=%d gflops=%.1f\n", name, threads,
               name[0] == 'p' ? sgemm_probe(threads) : fma_probe(threads));
        return 0;
    }
    bench_cfg cfg;
    if (parse_config(name, &cfg)) {
        fprintf(stderr, "bench: unknown config '%s' (S, M, L, LC, V, M256..M4096 or layers,d,heads,T,B[,V])\n", name);
        return 2;
    }
    int steps = argc > 3 ? atoi(argv[3]) : 10;
    int warmup = argc > 4 ? atoi(argv[4]) : 2;
    if (threads < 1 || steps < 1 || warmup < 0) {
        fprintf(stderr, "bench: threads and steps must be >= 1, warmup >= 0\n");
        return 2;
    }
    const char *gemm = getenv("KILN_GEMM");
    if (gemm && kn_gemm_select(gemm) != KN_OK) return die("KILN_GEMM");
    kn_set_threads(threads);

    int L = cfg.L, d = cfg.d, T = cfg.T, B = cfg.B, V = cfg.V;
    kn_gpt_config gc = {.vocab_size = V, .block_size = T, .n_layer = L, .n_head = cfg.H, .n_embd = d};
    kn_gpt *g;
    kn_adamw *o;
    if (kn_gpt_new(&g, &gc) != KN_OK) return die("model");
    kn_rng rng;
    kn_rng_seed(&rng, 1);
    kn_gpt_init(g, &rng);
    if (kn_gpt_reserve(g, B, T) != KN_OK) return die("reserve");
    if (kn_adamw_new(&o, g) != KN_OK) return die("optimizer");
    kn_adamw_hparams h = kn_adamw_defaults();   /* 3e-4, (0.9, 0.95), eps 1e-8, wd 0.1, clip 1 */

    size_t n = (size_t)B * T;
    int32_t *in = malloc(n * sizeof *in), *tg = malloc(n * sizeof *tg);
    double *ms = malloc((size_t)(warmup + steps) * sizeof *ms);
    double *cpu_ms = malloc((size_t)(warmup + steps) * sizeof *cpu_ms);
    if (!in || !tg || !ms || !cpu_ms) { fprintf(stderr, "bench: out of memory\n"); return 1; }
    float loss = 0, norm = 0;
    for (int s = 0; s < warmup + steps; s++) {
        for (size_t i = 0; i < n; i++) { in[i] = (int32_t)kn_rng_below(&rng, V); tg[i] = (int32_t)kn_rng_below(&rng, V); }
        double t0 = now(), c0 = cpu_now();
        kn_gpt_zero_grad(g);
        if (kn_gpt_forward(g, in, tg, B, T, NULL, false, &loss) != KN_OK) return die("forward");
        if (kn_gpt_backward(g, 1.0f) != KN_OK) return die("backward");
        if (kn_adamw_step(o, &h, &norm) != KN_OK) return die("adamw");
        ms[s] = 1e3 * (now() - t0);
        cpu_ms[s] = 1e3 * (cpu_now() - c0);
        fprintf(stderr, "bench %s t%d step %d: %.1f ms, loss %.4f, grad norm %.3f\n", name, threads, s,
                ms[s], (double)loss, (double)norm);
    }
    double rss = peak_rss_mib(), mem_mib = (double)kn_gpt_memory_bytes(g) / (1 << 20);
    double med = median(ms + warmup, steps);
    double tok_s = (double)n / (med * 1e-3);
    double cpu_med = median(cpu_ms + warmup, steps);
    double N = (double)kn_gpt_num_params(g) - (double)T * d;   /* without wpe */
    double gflops = tok_s * (6.0 * N + 12.0 * L * d * T) * 1e-9;
    free(in); free(tg); free(ms); free(cpu_ms);
    kn_adamw_free(o);
    kn_gpt_free(g);
    kn_gemm_impl used = kn_gemm_selected();
    double sg = sgemm_at_shapes(&cfg);
    kn_gemm_select("openblas");
    double blas = used == KN_GEMM_OPENBLAS ? sg : sgemm_at_shapes(&cfg);
    kn_gemm_select(kn_gemm_name(used));
    double peak = fma_probe(threads);
    printf("cfg=%s threads=%d gemm=%s steps=%d tok_s=%.1f step_ms=%.2f cpu_tok_s=%.1f cpu_step_ms=%.2f gflops=%.2f "
           "rss_mib=%.1f model_mib=%.1f loss=%.4f params=%.0f fma_gflops=%.1f sgemm_gflops=%.1f pct_fma=%.1f "
           "pct_sgemm=%.1f blas_gflops=%.1f pct_blas=%.1f\n",
           name, threads, kn_gemm_name(used), steps, tok_s, med, (double)n / (cpu_med * 1e-3),
           cpu_med, gflops, rss, mem_mib, (double)loss, N, peak, sg,
           100.0 * gflops / peak, 100.0 * gflops / sg, blas, 100.0 * gflops / blas);
    return 0;
}
