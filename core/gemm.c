/* gemm.c — kiln's sgemm, organised the way BLIS and GotoBLAS organise theirs: C is cut into
 * NC-column slabs, K into KC-deep slices, rows into MC-row blocks; the current slice of op(B)
 * (KC×NC) and block of op(A) (MC×KC) are copied ("packed") into contiguous panels NR columns
 * or MR rows wide, so that the register tile (MR×NR accumulators) reads both with unit
 * stride and the B micro-panel stays in L1 while the A block stays in L2. Panels are zero-padded
 * to whole tiles; a tile at the edge of C runs the same register code on a padded copy of
 * its corner, so every element is computed by exactly the same instructions. */
#include "gemm.h"
#include "pool.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Blocking for Zen 4 (32 KiB L1d, 1 MiB L2 per core): a KC×NR micro-panel of B (32 KiB with
 * AVX-512's NR = 32, 16 KiB with AVX2's 16) is reused from L1 by every tile of a row block,
 * an MC×KC block of A (144 KiB) from L2 by every micro-panel. MC 144-720, KC 256-384 and
 * NC 1024-2048 measured the same within the noise of a shared machine at kiln's shapes. */
#define MR 6
#if defined(__AVX512F__)
#define NR 32
#else
#define NR 16
#endif
#define KC 256
#define MC 144
#define NC 1024

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
/* One multiply-add as the register tile does it (fused), so that the fallback below
 * rounds the same way. */
#define MADD(a, b, c) fmaf((a), (b), (c))
#else
#define MADD(a, b, c) ((a) * (b) + (c))
#endif

/* ---------------------------------------------------------------- the register tile */

/* Ask for the tile's lines of C (both lines of a row, for rows not 64-byte aligned) before
 * the k loop: they are needed only at its end, and a miss there would stall the whole tile
 * (the loop is far longer than the out-of-order window). For writing: C is updated in place. */
static inline void prefetch_tile(const float *C, int ldc)
{
    for (int r = 0; r < MR; r++) {
        for (int j = 0; j < NR; j += 16) __builtin_prefetch(C + (size_t)r * ldc + j, 1, 3);
        __builtin_prefetch(C + (size_t)r * ldc + NR - 1, 1, 3);
    }
}

#if defined(__AVX512F__)
/* The 6×32 tile in 12 zmm accumulators: half the instructions per FMA of the AVX2 tile
 * (Zen 4 runs a zmm FMA as two ymm halves, so the peak is the same; the front end does less). */
#define ROW_FMA(r)                                                                         \
    {                                                                                      \
        __m512 a_ = _mm512_set1_ps(a[r]);                                                  \
        c##r##0 = _mm512_fmadd_ps(a_, b0, c##r##0);                                        \
        c##r##1 = _mm512_fmadd_ps(a_, b1, c##r##1);                                        \
    }
#define ROW_UPDATE(r)                                                                      \
    {                                                                                      \
        float *c_ = C + (size_t)(r) * ldc;                                                 \
        if (beta == 0.0f) {                                                                \
            _mm512_storeu_ps(c_, _mm512_mul_ps(va, c##r##0));                              \
            _mm512_storeu_ps(c_ + 16, _mm512_mul_ps(va, c##r##1));                         \
        } else {                                                                           \
            __m512 o0 = _mm512_mul_ps(vb, _mm512_loadu_ps(c_));                            \
            __m512 o1 = _mm512_mul_ps(vb, _mm512_loadu_ps(c_ + 16));                       \
            _mm512_storeu_ps(c_, _mm512_fmadd_ps(va, c##r##0, o0));                        \
            _mm512_storeu_ps(c_ + 16, _mm512_fmadd_ps(va, c##r##1, o1));                   \
        }                                                                                  \
    }
/* Not inlined: inside kn_gemm the compiler would keep values of the loops around it in
 * registers the tile needs (with AVX2 an accumulator then lives on the stack). */
__attribute__((noinline)) static void tile_kernel(int kc, const float *a, const float *b, float *C, int ldc, float alpha,
                        float beta)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    prefetch_tile(C, ldc);
    for (int k = 0; k < kc; k++, a += MR, b += NR) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3) ROW_FMA(4) ROW_FMA(5)
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    ROW_UPDATE(0) ROW_UPDATE(1) ROW_UPDATE(2) ROW_UPDATE(3) ROW_UPDATE(4) ROW_UPDATE(5)
}
#undef ROW_FMA
#undef ROW_UPDATE
#elif defined(__AVX2__) && defined(__FMA__)
/* The 6×16 tile in 12 named accumulators (two ymm per row), plus two B vectors and one
 * broadcast A value: 15 of the 16 ymm registers. */
#define ROW_FMA(r)                                                                         \
    {                                                                                      \
        __m256 a_ = _mm256_broadcast_ss(a + (r));                                          \
        c##r##0 = _mm256_fmadd_ps(a_, b0, c##r##0);                                        \
        c##r##1 = _mm256_fmadd_ps(a_, b1, c##r##1);                                        \
    }
/* C = alpha·acc (beta = 0: C is not read) or alpha·acc + beta·C. */
#define ROW_UPDATE(r)                                                                      \
    {                                                                                      \
        float *c_ = C + (size_t)(r) * ldc;                                                 \
        if (beta == 0.0f) {                                                                \
            _mm256_storeu_ps(c_, _mm256_mul_ps(va, c##r##0));                              \
            _mm256_storeu_ps(c_ + 8, _mm256_mul_ps(va, c##r##1));                          \
        } else {                                                                           \
            __m256 o0 = _mm256_mul_ps(vb, _mm256_loadu_ps(c_));                            \
            __m256 o1 = _mm256_mul_ps(vb, _mm256_loadu_ps(c_ + 8));                        \
            _mm256_storeu_ps(c_, _mm256_fmadd_ps(va, c##r##0, o0));                        \
            _mm256_storeu_ps(c_ + 8, _mm256_fmadd_ps(va, c##r##1, o1));                    \
        }                                                                                  \
    }
/* A from a packed panel (a[k·MR + r]), B from a packed panel (b[k·NR + j]). */
/* Not inlined: inside kn_gemm the compiler would keep values of the loops around it in
 * registers the tile needs (with AVX2 an accumulator then lives on the stack). */
__attribute__((noinline)) static void tile_kernel(int kc, const float *a, const float *b, float *C, int ldc, float alpha,
                        float beta)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    prefetch_tile(C, ldc);
    for (int k = 0; k < kc; k++, a += MR, b += NR) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3) ROW_FMA(4) ROW_FMA(5)
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    ROW_UPDATE(0) ROW_UPDATE(1) ROW_UPDATE(2) ROW_UPDATE(3) ROW_UPDATE(4) ROW_UPDATE(5)
}
#undef ROW_FMA
#undef ROW_UPDATE
#else
/* Portable: the compiler vectorises the inner j loop. */
/* Not inlined: inside kn_gemm the compiler would keep values of the loops around it in
 * registers the tile needs (with AVX2 an accumulator then lives on the stack). */
__attribute__((noinline)) static void tile_kernel(int kc, const float *a, const float *b, float *C, int ldc, float alpha,
                        float beta)
{
    float acc[MR][NR] = {{0}};
    for (int k = 0; k < kc; k++, a += MR, b += NR)
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < NR; j++) acc[r][j] = MADD(a[r], b[j], acc[r][j]);
    for (int r = 0; r < MR; r++) {
        float *c = C + (size_t)r * ldc;
        for (int j = 0; j < NR; j++)
            c[j] = beta == 0.0f ? alpha * acc[r][j] : MADD(alpha, acc[r][j], beta * c[j]);
    }
}
#endif

/* A tile of mr ≤ MR rows and nr ≤ NR columns: in place in C when whole, else through a
 * padded copy of C's corner so that the arithmetic is the whole tile's. */
static void tile(int kc, const float *a, const float *b, float *C, int ldc, int mr, int nr,
                 float alpha, float beta)
{
    float t[MR * NR] = {0};
    bool whole = mr == MR && nr == NR;
    float *c = whole ? C : t;
    int ldt = whole ? ldc : NR;
    if (!whole && beta != 0.0f)
        for (int r = 0; r < mr; r++) memcpy(t + r * NR, C + (size_t)r * ldc, sizeof(float) * nr);
    tile_kernel(kc, a, b, c, ldt, alpha, beta);
    if (!whole)
        for (int r = 0; r < mr; r++) memcpy(C + (size_t)r * ldc, t + r * NR, sizeof(float) * nr);
}

/* ---------------------------------------------------------------- packing */

/* kc × nc of op(B) = B (row k at src + k·ldb) as panels NR wide: dst[panel][k·NR + j], the
 * last panel zero-padded. Row by row, so B is read sequentially. */
static void pack_b_rows(float *restrict dst, const float *restrict src, size_t ldb, int nc, int kc)
{
    for (int k = 0; k < kc; k++) {
        const float *s = src + k * ldb;
        int j = 0;
        for (; j + NR <= nc; j += NR) memcpy(dst + (size_t)j * kc + (size_t)k * NR, s + j, sizeof(float) * NR);
        if (j < nc) {
            float *d = dst + (size_t)j * kc + (size_t)k * NR;
            memset(d, 0, sizeof(float) * NR);
            memcpy(d, s + j, sizeof(float) * (nc - j));
        }
    }
}

#if defined(__AVX2__) && defined(__FMA__)
/* x[r] = 8 values of row r, r < 8; afterwards x[k] = the 8 rows' values at k. */
static inline void transpose8(__m256 x[8])
{
    __m256 y[8];
    for (int i = 0; i < 8; i += 2) {
        y[i] = _mm256_unpacklo_ps(x[i], x[i + 1]);
        y[i + 1] = _mm256_unpackhi_ps(x[i], x[i + 1]);
    }
    __m256 z[8];
    for (int i = 0; i < 8; i += 4) {
        z[i] = _mm256_shuffle_ps(y[i], y[i + 2], 0x44);
        z[i + 1] = _mm256_shuffle_ps(y[i], y[i + 2], 0xEE);
        z[i + 2] = _mm256_shuffle_ps(y[i + 1], y[i + 3], 0x44);
        z[i + 3] = _mm256_shuffle_ps(y[i + 1], y[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        x[i] = _mm256_permute2f128_ps(z[i], z[i + 4], 0x20);
        x[i + 4] = _mm256_permute2f128_ps(z[i], z[i + 4], 0x31);
    }
}
#endif

/* lanes (≤ w) rows of a matrix, rows `ld` apart, kc values each from src, as one panel
 * dst[k·w + lane], zero-padded. From k0 on, one value at a time. */
static void pack_rows_scalar(float *restrict dst, const float *restrict src, size_t ld, int w,
                             int lanes, int k0, int kc)
{
    for (int k = k0; k < kc; k++) {
        for (int l = 0; l < lanes; l++) dst[(size_t)k * w + l] = src[l * ld + k];
        for (int l = lanes; l < w; l++) dst[(size_t)k * w + l] = 0.0f;
    }
}

/* kc × nc of op(B) = Bᵀ (column j of op(B) is row j of B, src + j·ldb) as NR-wide panels,
 * 8 × 8 blocks transposed in registers. */
static void pack_b_cols(float *restrict dst, const float *restrict src, size_t ldb, int nc, int kc)
{
    for (int j = 0; j < nc; j += NR, dst += (size_t)NR * kc) {
        int lanes = nc - j < NR ? nc - j : NR, k = 0;
        const float *s = src + (size_t)j * ldb;
#if defined(__AVX2__) && defined(__FMA__)
        for (; lanes == NR && k + 8 <= kc; k += 8)
            for (int g = 0; g < NR; g += 8) {
                __m256 x[8];
                for (int r = 0; r < 8; r++) x[r] = _mm256_loadu_ps(s + (g + r) * ldb + k);
                transpose8(x);
                for (int q = 0; q < 8; q++) _mm256_store_ps(dst + (size_t)(k + q) * NR + g, x[q]);
            }
#endif
        pack_rows_scalar(dst, s, ldb, NR, lanes, k, kc);
    }
}

/* mc × kc of op(A) = A (rows lda apart) as MR-high panels dst[panel][k·MR + r]. Eight values
 * of six rows are transposed in registers and stored 8 wide at MR-float steps, each store's
 * two spare lanes overwritten by the next; the last store runs 2 floats past the panel (the
 * buffer has room). */
static void pack_a_rows(float *restrict dst, const float *restrict src, size_t lda, int mc, int kc)
{
    for (int i = 0; i < mc; i += MR, dst += (size_t)MR * kc) {
        int lanes = mc - i < MR ? mc - i : MR, k = 0;
        const float *s = src + (size_t)i * lda;
#if defined(__AVX2__) && defined(__FMA__) && MR == 6
        for (; lanes == MR && k + 8 <= kc; k += 8) {
            __m256 x[8];
            for (int r = 0; r < 6; r++) x[r] = _mm256_loadu_ps(s + r * lda + k);
            x[6] = x[7] = _mm256_setzero_ps();
            transpose8(x);
            for (int q = 0; q < 8; q++) _mm256_storeu_ps(dst + (size_t)(k + q) * MR, x[q]);
        }
#endif
        pack_rows_scalar(dst, s, lda, MR, lanes, k, kc);
    }
}

/* mc × kc of op(A) = Aᵀ (step k of op(A)'s rows is row k of A, src + k·lda) as MR-high
 * panels: dst[panel][k·MR + r], the last panel zero-padded. Row k of A at a time, into every
 * panel: rows of A are often far apart (an output layer's gradient, V floats), and going
 * down a panel first would touch a new page for each MR floats. */
static void pack_a_cols(float *restrict dst, const float *restrict src, size_t lda, int mc, int kc)
{
    int whole = mc / MR * MR, lanes = mc - whole;
    float *tail = dst + (size_t)whole * kc;
    if (lanes) memset(tail, 0, sizeof(float) * MR * kc);
    for (int k = 0; k < kc; k++) {
        const float *s = src + k * lda;
        float *d = dst + (size_t)k * MR;
        for (int i = 0; i < whole; i += MR, d += (size_t)MR * kc) memcpy(d, s + i, sizeof(float) * MR);
        if (lanes) memcpy(tail + (size_t)k * MR, s + whole, sizeof(float) * lanes);
    }
}

/* ---------------------------------------------------------------- per-thread buffers */

/* An A block with 16 floats of slack (pack_a_rows stores 2 past its last panel), a B slice. */
#define PACK_A_FLOATS ((size_t)MC * KC + 16)
#define PACK_FLOATS (PACK_A_FLOATS + (size_t)KC * NC)

static pthread_key_t pack_key;
static pthread_once_t pack_once = PTHREAD_ONCE_INIT;
static _Thread_local float *pack_buf;

static void pack_key_init(void) { (void)pthread_key_create(&pack_key, free); }

/* This thread's packing buffer, allocated on its first use (freed when the thread exits);
 * NULL if memory ran out. */
static float *pack_buffer(void)
{
    if (pack_buf) return pack_buf;
    pthread_once(&pack_once, pack_key_init);
    pack_buf = aligned_alloc(64, PACK_FLOATS * sizeof(float));
    if (pack_buf) (void)pthread_setspecific(pack_key, pack_buf);
    return pack_buf;
}

static void reserve_body(void *ctx, int64_t begin, int64_t end, int tid)
{
    if (!pack_buffer()) atomic_store((atomic_int *)ctx, 1);
}

kn_status kn_gemm_reserve(void)
{
    atomic_int failed = 0;
    kn_parallel_for(kn_pool_threads(), reserve_body, &failed);
    if (atomic_load(&failed))
        return kn_fail(KN_ERR_NOMEM, "out of memory for kn_gemm's packing buffers (%zu KiB per thread)",
                       PACK_FLOATS * sizeof(float) >> 10);
    return KN_OK;
}

/* ---------------------------------------------------------------- the blocked product */

typedef struct {
    const float *A, *B;
    size_t lda, ldb;
    bool ta, tb;
    float *C;
    int ldc;
    float alpha, beta;
} gemm_args;

/* op(A)[i][k], op(B)[k][j] */
static float a_at(const gemm_args *g, int i, int k)
{
    return g->ta ? g->A[(size_t)k * g->lda + i] : g->A[(size_t)i * g->lda + k];
}
static float b_at(const gemm_args *g, int k, int j)
{
    return g->tb ? g->B[(size_t)j * g->ldb + k] : g->B[(size_t)k * g->ldb + j];
}

/* Without a packing buffer: the same per-element order (a KC slice at a time, each slice's
 * sum started from zero and then folded into C) with plain loops. */
static void gemm_unpacked(const gemm_args *g, int M, int N, int K)
{
    for (int p = 0; p < K; p += KC) {
        int kc = K - p < KC ? K - p : KC;
        float beta = p == 0 ? g->beta : 1.0f;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float s = 0.0f;
                for (int k = p; k < p + kc; k++) s = MADD(a_at(g, i, k), b_at(g, k, j), s);
                float *c = g->C + (size_t)i * g->ldc + j;
                *c = beta == 0.0f ? g->alpha * s : MADD(g->alpha, s, beta * *c);
            }
    }
}

/* One MC block of rows (i0, mc), packed, against the packed slice of B (nc columns from j0,
 * kc deep from p). */
static void gemm_block(const gemm_args *g, float *abuf, const float *bbuf, int i0, int mc,
                       int j0, int nc, int p, int kc, float beta)
{
    if (g->ta) pack_a_cols(abuf, g->A + (size_t)p * g->lda + i0, g->lda, mc, kc);
    else pack_a_rows(abuf, g->A + (size_t)i0 * g->lda + p, g->lda, mc, kc);
    for (int j = 0; j < nc; j += NR) {
        int nr = nc - j < NR ? nc - j : NR;
        const float *b = bbuf + (size_t)j * kc;
        for (int i = 0; i < mc; i += MR) {
            int mr = mc - i < MR ? mc - i : MR;
            float *c = g->C + (size_t)(i0 + i) * g->ldc + j0 + j;
            tile(kc, abuf + (size_t)i * kc, b, c, g->ldc, mr, nr, g->alpha, beta);
        }
    }
}

/* One KC slice p of K and NC slab j0 of columns: B's slice is packed once for all rows. */
static void gemm_slice(const gemm_args *g, float *abuf, float *bbuf, int M, int j0, int nc,
                       int p, int kc)
{
    if (g->tb) pack_b_cols(bbuf, g->B + (size_t)j0 * g->ldb + p, g->ldb, nc, kc);
    else pack_b_rows(bbuf, g->B + (size_t)p * g->ldb + j0, g->ldb, nc, kc);
    float beta = p == 0 ? g->beta : 1.0f;
    for (int i0 = 0; i0 < M; i0 += MC)
        gemm_block(g, abuf, bbuf, i0, M - i0 < MC ? M - i0 : MC, j0, nc, p, kc, beta);
}

/* C = beta·C, for K = 0 or alpha = 0 (beta = 0 writes zeros without reading C). */
static void scale_c(float *C, int ldc, int M, int N, float beta)
{
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        for (int j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
    }
}

void kn_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(C, ldc, M, N, beta);
        return;
    }
    gemm_args g = {.A = A, .B = B, .lda = (size_t)lda, .ldb = (size_t)ldb, .ta = trans_a,
                   .tb = trans_b, .C = C, .ldc = ldc, .alpha = alpha, .beta = beta};
    float *buf = pack_buffer();
    if (!buf) {
        gemm_unpacked(&g, M, N, K);
        return;
    }
    float *abuf = buf, *bbuf = buf + PACK_A_FLOATS;
    for (int j0 = 0; j0 < N; j0 += NC) {
        int nc = N - j0 < NC ? N - j0 : NC;
        for (int p = 0; p < K; p += KC)
            gemm_slice(&g, abuf, bbuf, M, j0, nc, p, K - p < KC ? K - p : KC);
    }
}

/* ---------------------------------------------------------------- the switch */

/* The default is what measured faster in the whole training step on the machine kiln is
 * tuned on (Zen 4): kn_gemm with its AVX-512 tile against OpenBLAS's Haswell kernel. The AVX2
 * tile was measured only by itself (level with OpenBLAS, within 0-8%), so without AVX-512
 * OpenBLAS stays the default. */
#if defined(__AVX512F__)
#define DEFAULT_IMPL KN_GEMM_KILN
#else
#define DEFAULT_IMPL KN_GEMM_OPENBLAS
#endif
static kn_gemm_impl selected = DEFAULT_IMPL;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static void select_from_env(void)
{
    const char *e = getenv("KILN_GEMM");
    if (e && !strcmp(e, "kiln")) selected = KN_GEMM_KILN;
    if (e && !strcmp(e, "openblas")) selected = KN_GEMM_OPENBLAS;
}

const char *kn_gemm_name(kn_gemm_impl impl) { return impl == KN_GEMM_KILN ? "kiln" : "openblas"; }

kn_status kn_gemm_select(const char *name)
{
    pthread_once(&env_once, select_from_env);
    if (name && !strcmp(name, "kiln")) selected = KN_GEMM_KILN;
    else if (name && !strcmp(name, "openblas")) selected = KN_GEMM_OPENBLAS;
    else
        return kn_fail(KN_ERR_ARG, "gemm: unknown implementation '%s' (expected \"openblas\" or \"kiln\")",
                       name ? name : "(null)");
    return KN_OK;
}

kn_gemm_impl kn_gemm_selected(void)
{
    pthread_once(&env_once, select_from_env);
    return selected;
}

void kn_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (kn_gemm_selected() == KN_GEMM_KILN)
        kn_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
