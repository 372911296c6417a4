/* test_gemm.c — kn_gemm against a double-precision product at many odd shapes, every
 * transpose layout, alpha/beta (beta = 0 over NaN, accumulation), leading dimensions wider
 * than the matrices (their padding NaN, so reading it would show), shapes that cross the
 * cache blocks; then reproducibility (a row of C does not depend on how the rows are split,
 * nor on the thread that computes it) and the OpenBLAS/kiln switch.
 *
 * Tolerance: a float dot product of length K is within γ·Σ|a_ik·b_kj| of the exact one,
 * γ ≈ K·u (u = 2⁻²⁴, the unit roundoff); alpha, beta and the folding of each K slice into
 * C add a few roundings more, so each element must be within
 *   (K + 4)·u·(|alpha|·Σ_k |a_ik·b_kj| + |beta·c_ij|)
 * of the double result. A wrong or missing term is of the size of |a·b| itself, far above. */
#include "gemm.h"
#include "kn.h"
#include "pool.h"
#include "rng.h"
#include "check.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

static kn_rng rng;

/* A matrix of rows × cols in storage ld ≥ cols wide: values N(0,1), padding NaN. */
static float *matrix(int rows, int cols, int ld)
{
    float *m = kn_alloc(sizeof(float) * ((size_t)rows * ld + 1));
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < ld; j++)
            m[(size_t)i * ld + j] = j < cols ? (float)kn_rng_normal(&rng) : NAN;
    return m;
}

typedef struct { bool ta, tb; int M, N, K, pad; float alpha, beta; bool nan_c; } gemm_case;

/* Run one case; returns the worst error as a fraction of the allowed bound (≤ 1 passes), or
 * INFINITY if a padding element of C changed or a result is not finite. */
static double run_case(const gemm_case *t)
{
    int lda = (t->ta ? t->M : t->K) + t->pad, ldb = (t->tb ? t->K : t->N) + t->pad;
    int ldc = t->N + t->pad;
    float *A = matrix(t->ta ? t->K : t->M, t->ta ? t->M : t->K, lda);
    float *B = matrix(t->tb ? t->N : t->K, t->tb ? t->K : t->N, ldb);
    float *C = matrix(t->M, t->N, ldc), *C0 = matrix(t->M, t->N, ldc);
    for (size_t i = 0; i < (size_t)t->M * ldc; i++) {
        if (t->nan_c && (int)(i % ldc) < t->N) C[i] = NAN;
        C0[i] = C[i];
    }
    kn_gemm(t->ta, t->tb, t->M, t->N, t->K, t->alpha, A, lda, B, ldb, t->beta, C, ldc);
    double worst = 0.0, u = ldexp(1.0, -24);
    for (int i = 0; i < t->M; i++) {
        for (int j = 0; j < t->N; j++) {
            double s = 0.0, mag = 0.0;
            for (int k = 0; k < t->K; k++) {
                double a = t->ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                double b = t->tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += a * b;
                mag += fabs(a * b);
            }
            double c0 = t->beta == 0.0f ? 0.0 : C0[(size_t)i * ldc + j];
            double want = t->alpha * s + t->beta * c0;
            double bound = (t->K + 4) * u * (fabs(t->alpha) * mag + fabs(t->beta * c0)) + 1e-30;
            double got = C[(size_t)i * ldc + j];
            double e = isfinite(got) ? fabs(got - want) / bound : INFINITY;
            if (e > worst) worst = e;
        }
        for (int j = t->N; j < ldc; j++)
            if (!isnan(C[(size_t)i * ldc + j])) worst = INFINITY;
    }
    kn_free(A); kn_free(B); kn_free(C); kn_free(C0);
    return worst;
}

static const char *layout(bool ta, bool tb)
{
    return ta ? (tb ? "TT" : "TN") : (tb ? "NT" : "NN");
}

/* Every combination of a set of small sizes (1..70, around the 6×16 tile), per layout. */
static void test_small_shapes(void)
{
    static const int sizes[] = {1, 2, 5, 6, 7, 12, 15, 16, 17, 31, 33, 48, 70};
    enum { NS = sizeof sizes / sizeof sizes[0] };
    for (int l = 0; l < 4; l++) {
        bool ta = l & 2, tb = l & 1;
        double worst = 0;
        int wm = 0, wn = 0, wk = 0, cases = 0;
        for (int a = 0; a < NS; a++)
            for (int b = 0; b < NS; b++)
                for (int c = 0; c < NS; c++) {
                    gemm_case t = {ta, tb, sizes[a], sizes[b], sizes[c], (a + b + c) % 3, 1.0f, 0.0f, false};
                    double e = run_case(&t);
                    cases++;
                    if (e > worst) { worst = e; wm = t.M; wn = t.N; wk = t.K; }
                }
        CHECK(worst <= 1.0, "%s: %d shapes (M, N, K in 1..70) within (K+4)·u·Σ|ab| of double (worst %.3f of the bound at %dx%dx%d)",
              layout(ta, tb), cases, worst, wm, wn, wk);
    }
}

/* Shapes past the cache blocks (rows past a row block, columns past a column slab, K past
 * a K slice), with padding and both ways of using beta. */
static void test_large_shapes(void)
{
    static const int shapes[][3] = {{145, 1030, 257}, {300, 17, 600}, {7, 2100, 520}, {200, 160, 1100}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int l = 0; l < 4; l++) {
            gemm_case t = {l & 2, l & 1, shapes[s][0], shapes[s][1], shapes[s][2], 3, 1.0f,
                           s % 2 ? 1.0f : 0.0f, s % 2 == 0};
            double e = run_case(&t);
            CHECK(e <= 1.0, "%s %dx%dx%d, beta %g%s: within the bound (worst %.3f of it)",
                  layout(t.ta, t.tb), t.M, t.N, t.K, (double)t.beta,
                  t.nan_c ? " over NaN" : "", e);
        }
}

static void test_alpha_beta(void)
{
    const gemm_case cases[] = {
        {false, true, 37, 41, 300, 2, 0.5f, -1.5f, false},
        {true, false, 23, 50, 70, 0, -2.0f, 1.0f, false},
        {false, false, 64, 48, 9, 5, 1.0f, 0.0f, true},
        {true, true, 13, 29, 513, 1, 3.0f, 0.25f, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const gemm_case *t = &cases[i];
        double e = run_case(t);
        CHECK(e <= 1.0, "%s %dx%dx%d alpha %g beta %g%s: within the bound (worst %.3f of it)",
              layout(t->ta, t->tb), t->M, t->N, t->K, (double)t->alpha, (double)t->beta,
              t->nan_c ? " (C full of NaN)" : "", e);
    }
    /* K = 0 and alpha = 0: C = beta·C (beta = 0 clears NaN); M = 0 touches nothing. */
    float A[4] = {NAN, NAN, NAN, NAN}, C[4] = {NAN, NAN, 2.0f, 4.0f};
    kn_gemm(false, false, 1, 2, 0, 1.0f, A, 1, A, 2, 0.0f, C, 4);
    kn_gemm(false, false, 1, 2, 2, 0.0f, A, 2, A, 2, 0.5f, C + 2, 4);
    CHECK(C[0] == 0.0f && C[1] == 0.0f && C[2] == 1.0f && C[3] == 2.0f,
          "K = 0, beta = 0 writes zeros over NaN; alpha = 0 scales C by beta without reading A");
    float D[2] = {5.0f, 6.0f};
    kn_gemm(false, false, 0, 2, 2, 1.0f, A, 2, A, 2, 0.0f, D, 2);
    CHECK(D[0] == 5.0f && D[1] == 6.0f, "M = 0 leaves C alone");
}

typedef struct { const float *A, *B; float *C; int M, N, K; bool ta, tb; } split_ctx;

/* Rows [r0, r1) of C in one call, as kiln's kernels do per chunk. */
static void gemm_rows(void *p, int64_t r0, int64_t r1, int tid)
{
    const split_ctx *s = p;
    int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    const float *a = s->ta ? s->A + r0 : s->A + (size_t)r0 * lda;
    kn_gemm(s->ta, s->tb, (int)(r1 - r0), s->N, s->K, 1.0f, a, lda, s->B, ldb, 0.0f,
            s->C + (size_t)r0 * s->N, s->N);
}

/* A row of C is the same bits whichever block of rows it is computed in, and whichever
 * thread (with its own packing buffers) computes it. */
static void test_row_split(void)
{
    int M = 301, N = 77, K = 530;
    for (int l = 0; l < 4; l++) {
        split_ctx s = {.M = M, .N = N, .K = K, .ta = l & 2, .tb = l & 1};
        float *A = matrix(M, K, K), *B = matrix(K, N, N);
        float *whole = kn_alloc(sizeof(float) * M * N), *parts = kn_alloc(sizeof(float) * M * N);
        float *threaded = kn_alloc(sizeof(float) * M * N);
        s.A = A; s.B = B;
        s.C = whole;
        gemm_rows(&s, 0, M, 0);
        s.C = parts;
        static const int cuts[] = {0, 1, 7, 40, 41, 150, 295, 301};
        for (int c = 0; c + 1 < 8; c++) gemm_rows(&s, cuts[c], cuts[c + 1], 0);
        s.C = threaded;
        int saved = kn_get_threads();
        kn_set_threads(2);
        CHECK_OK(kn_gemm_reserve(), "kn_gemm_reserve on 2 threads");
        kn_parallel_for_dynamic(M, 5, gemm_rows, &s);
        kn_set_threads(saved);
        CHECK(!memcmp(whole, parts, sizeof(float) * M * N) && !memcmp(whole, threaded, sizeof(float) * M * N),
              "%s %dx%dx%d: rows computed in 7 uneven blocks and on 2 threads are bit-identical to one call",
              layout(s.ta, s.tb), M, N, K);
        kn_free(A); kn_free(B); kn_free(whole); kn_free(parts); kn_free(threaded);
    }
}

static void test_switch(void)
{
    kn_gemm_impl before = kn_gemm_selected();
    CHECK(kn_gemm_select("kiln") == KN_OK && kn_gemm_selected() == KN_GEMM_KILN &&
          !strcmp(kn_gemm_name(kn_gemm_selected()), "kiln"), "kn_gemm_select(\"kiln\") selects kn_gemm");
    int M = 50, N = 40, K = 90;
    float *A = matrix(M, K, K), *B = matrix(N, K, K);
    float *c1 = kn_alloc(sizeof(float) * M * N), *c2 = kn_alloc(sizeof(float) * M * N);
    float *c3 = kn_alloc(sizeof(float) * M * N);
    kn_sgemm(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, c1, N);
    kn_gemm(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, c2, N);
    CHECK(!memcmp(c1, c2, sizeof(float) * M * N), "kn_sgemm with kiln selected is kn_gemm, bit for bit");
    CHECK_OK(kn_gemm_select("openblas"), "kn_gemm_select(\"openblas\")");
    kn_sgemm(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, c3, N);
    double worst = 0;
    for (int i = 0; i < M * N; i++) worst = fmax(worst, fabs((double)c3[i] - c2[i]));
    CHECK(kn_gemm_selected() == KN_GEMM_OPENBLAS && worst < 1e-4,
          "with openblas selected kn_sgemm agrees with kn_gemm to float accuracy (max diff %.2g)", worst);
    CHECK_FAILS(kn_gemm_select("mkl"), "'mkl'", "an unknown implementation is refused, naming it");
    CHECK_FAILS(kn_gemm_select(NULL), "expected \"openblas\" or \"kiln\"", "NULL is refused, saying what is expected");
    CHECK(kn_gemm_selected() == KN_GEMM_OPENBLAS, "a refused name leaves the selection alone");
    kn_gemm_select(kn_gemm_name(before));
    kn_free(A); kn_free(B); kn_free(c1); kn_free(c2); kn_free(c3);
}

int main(void)
{
    kn_rng_seed(&rng, 7);
    test_small_shapes();
    test_large_shapes();
    test_alpha_beta();
    test_row_split();
    test_switch();
    kn_pool_shutdown();
    CHECK_DONE();
}
