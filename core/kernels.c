/* kernels.c — GPT layers on raw pointers. The linear layers' matmuls go to kn_sgemm (OpenBLAS
 * or kiln's own kn_gemm, see gemm.h; single-threaded per call: kiln's pool splits rows across
 * threads), elementwise loops are written so
 * that gcc vectorises them without -ffast-math: reductions keep 8 independent partial sums
 * (a fixed order, so results stay reproducible), exp is a branch-free polynomial. */
#include "kernels.h"
#include "gemm.h"
#include "pool.h"

#include <math.h>
#include <string.h>

#define LN_EPS 1e-5f
#define GELU_K0 0.7978845608028654f   /* sqrt(2/pi) */
#define GELU_K1 0.044715f

/* ---------------------------------------------------------------- small helpers */

/* Cephes-style expf: e^x = 2^n · e^r, |r| <= ln2/2, degree-6 polynomial for e^r.
 * Inputs are clamped to [-87, 88] (e^-87 ~ 1.6e-38 stands in for 0, e^88 for +inf);
 * NaN propagates. */
static inline float expf_poly(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* Round x·log2(e) to the nearest integer n by adding 1.5·2^23 (floorf would not
     * vectorise without -fno-trapping-math); n also sits in the low bits of t. */
    float t = x * 1.44269504088896341f + 12582912.0f;
    float fx = t - 12582912.0f;
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    float r = x - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    uint32_t bits = (tb - 0x4B400000u + 127u) << 23;   /* 2^n */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

float kn_expf(float x) { return expf_poly(x); }

/* tanh(u) = 1 - 2/(e^{2u} + 1): absolute error ~1e-7, saturates cleanly at ±1. */
static inline float tanhf_poly(float u) { return 1.0f - 2.0f / (expf_poly(2.0f * u) + 1.0f); }

static float sum_f(const float *x, int n)
{
    float acc[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) acc[l] += x[j + l];
    float s = 0.0f;
    for (; j < n; j++) s += x[j];
    for (int l = 0; l < 8; l++) s += acc[l];
    return s;
}

static float dot_f(const float *x, const float *y, int n)
{
    float acc[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) acc[l] += x[j + l] * y[j + l];
    float s = 0.0f;
    for (; j < n; j++) s += x[j] * y[j];
    for (int l = 0; l < 8; l++) s += acc[l];
    return s;
}

static float max_f(const float *x, int n)
{
    float acc[8];
    for (int l = 0; l < 8; l++) acc[l] = -INFINITY;
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) acc[l] = x[j + l] > acc[l] ? x[j + l] : acc[l];
    float m = -INFINITY;
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    for (int l = 0; l < 8; l++) m = acc[l] > m ? acc[l] : m;
    return m;
}

/* ---------------------------------------------------------------- embedding */

typedef struct {
    float *x, *dwte, *dwpe;
    const float *dx, *wte, *wpe;
    const int32_t *tok;
    int B, T, C;
} emb_ctx;

static void emb_fwd_rows(void *p, int64_t r0, int64_t r1, int tid)
{
    emb_ctx *c = p;
    for (int64_t r = r0; r < r1; r++) {
        const float *e = c->wte + (size_t)c->tok[r] * c->C;
        const float *q = c->wpe + (size_t)(r % c->T) * c->C;
        float *o = c->x + (size_t)r * c->C;
        for (int j = 0; j < c->C; j++) o[j] = e[j] + q[j];
    }
}

void kn_embedding_forward(float *x, const int32_t *tokens, const float *wte, const float *wpe,
                          int B, int T, int C)
{
    emb_ctx c = {.x = x, .wte = wte, .wpe = wpe, .tok = tokens, .B = B, .T = T, .C = C};
    kn_parallel_for_dynamic((int64_t)B * T, 16, emb_fwd_rows, &c);
}

/* Split over columns: each column's sums run over rows in order, whatever the thread count. */
static void emb_bwd_cols(void *p, int64_t j0, int64_t j1, int tid)
{
    emb_ctx *c = p;
    int64_t N = (int64_t)c->B * c->T;
    for (int64_t r = 0; r < N; r++) {
        const float *g = c->dx + (size_t)r * c->C;
        if (c->dwte) {
            float *e = c->dwte + (size_t)c->tok[r] * c->C;
            for (int64_t j = j0; j < j1; j++) e[j] += g[j];
        }
        if (c->dwpe) {
            float *q = c->dwpe + (size_t)(r % c->T) * c->C;
            for (int64_t j = j0; j < j1; j++) q[j] += g[j];
        }
    }
}

void kn_embedding_backward(float *dwte, float *dwpe, const float *dx, const int32_t *tokens,
                           int B, int T, int C)
{
    emb_ctx c = {.dwte = dwte, .dwpe = dwpe, .dx = dx, .tok = tokens, .B = B, .T = T, .C = C};
    kn_parallel_for_dynamic(C, 16, emb_bwd_cols, &c);
}

/* ---------------------------------------------------------------- linear */

typedef struct {
    float *y, *dx, *dw, *db;
    const float *x, *w, *b, *dy;
    int N, in, out, nparts, dw_parts;
    bool acc;
} lin_ctx;

static void part_range(int64_t n, int64_t grain, int parts, int i, int64_t *b, int64_t *e)
{
    int64_t units = (n + grain - 1) / grain;
    int64_t u0 = units * i / parts, u1 = units * (i + 1) / parts;
    *b = u0 * grain;
    *e = u1 * grain < n ? u1 * grain : n;
}

static void lin_fwd_rows(void *p, int64_t r0, int64_t r1, int tid)
{
    lin_ctx *c = p;
    int m = (int)(r1 - r0);
    float *y = c->y + (size_t)r0 * c->out;
    kn_sgemm(false, true, m, c->out, c->in, 1.0f, c->x + (size_t)r0 * c->in, c->in, c->w, c->in,
             c->acc ? 1.0f : 0.0f, y, c->out);
    if (c->b)
        for (int r = 0; r < m; r++) {
            float *yr = y + (size_t)r * c->out;
            for (int j = 0; j < c->out; j++) yr[j] += c->b[j];
        }
}

void kn_linear_forward(float *y, const float *x, const float *w, const float *b,
                       int N, int in, int out, bool accumulate)
{
    kn_blas_single_thread();
    lin_ctx c = {.y = y, .x = x, .w = w, .b = b, .N = N, .in = in, .out = out, .acc = accumulate};
    kn_parallel_for_dynamic(N, 32, lin_fwd_rows, &c);
}

/* Part i of nparts computes rows chunk i of dx and, for i < dw_parts, output-rows chunk i of
 * dw/db, so a backward is a single dispatch. Every dw chunk packs all of x (N·in floats), so
 * dw has one chunk per thread, not four: at four, the packing cost up to half the product's
 * time again at d = 256 (measured). The dynamic claim hands out these heavy parts first. */
static void lin_bwd_part(void *p, int64_t i0, int64_t i1, int tid)
{
    lin_ctx *c = p;
    for (int64_t i = i0; i < i1; i++) {
        int64_t b, e;
        if (c->dx) {
            part_range(c->N, 32, c->nparts, (int)i, &b, &e);
            if (e > b)
                kn_sgemm(false, false, (int)(e - b), c->in, c->out, 1.0f, c->dy + (size_t)b * c->out,
                         c->out, c->w, c->in, c->acc ? 1.0f : 0.0f, c->dx + (size_t)b * c->in, c->in);
        }
        if (i >= c->dw_parts) continue;
        part_range(c->out, 16, c->dw_parts, (int)i, &b, &e);
        if (e <= b) continue;
        if (c->dw)
            kn_sgemm(true, false, (int)(e - b), c->in, c->N, 1.0f, c->dy + b, c->out, c->x, c->in, 1.0f,
                     c->dw + (size_t)b * c->in, c->in);
        if (c->db)
            for (int64_t r = 0; r < c->N; r++) {
                const float *g = c->dy + (size_t)r * c->out;
                for (int64_t j = b; j < e; j++) c->db[j] += g[j];
            }
    }
}

void kn_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int N, int in, int out, bool accumulate)
{
    kn_blas_single_thread();
    lin_ctx c = {.dx = dx, .dw = dw, .db = db, .dy = dy, .x = x, .w = w,
                 .N = N, .in = in, .out = out, .acc = accumulate};
    int nt = kn_pool_threads();
    c.nparts = nt > 1 ? 4 * nt : 1;
    c.dw_parts = nt;
    kn_parallel_for_dynamic(c.nparts, 1, lin_bwd_part, &c);
}

void kn_linear_forward_naive(float *y, const float *x, const float *w, const float *b,
                             int N, int in, int out, bool accumulate)
{
    for (int r = 0; r < N; r++)
        for (int o = 0; o < out; o++) {
            float s = b ? b[o] : 0.0f;
            const float *xr = x + (size_t)r * in, *wo = w + (size_t)o * in;
            for (int k = 0; k < in; k++) s += xr[k] * wo[k];
            y[(size_t)r * out + o] = accumulate ? y[(size_t)r * out + o] + s : s;
        }
}

void kn_linear_backward_naive(float *dx, float *dw, float *db, const float *dy, const float *x,
                              const float *w, int N, int in, int out, bool accumulate)
{
    if (dx)
        for (int r = 0; r < N; r++)
            for (int k = 0; k < in; k++) {
                float s = 0.0f;
                for (int o = 0; o < out; o++) s += dy[(size_t)r * out + o] * w[(size_t)o * in + k];
                dx[(size_t)r * in + k] = accumulate ? dx[(size_t)r * in + k] + s : s;
            }
    if (dw)
        for (int o = 0; o < out; o++)
            for (int k = 0; k < in; k++) {
                float s = 0.0f;
                for (int r = 0; r < N; r++) s += dy[(size_t)r * out + o] * x[(size_t)r * in + k];
                dw[(size_t)o * in + k] += s;
            }
    if (db)
        for (int r = 0; r < N; r++)
            for (int o = 0; o < out; o++) db[o] += dy[(size_t)r * out + o];
}

/* ---------------------------------------------------------------- layernorm */

typedef struct {
    float *y, *mean, *rstd, *dx, *dw, *db;
    const float *x, *w, *b, *dy, *cmean, *crstd;
    int N, C;
    bool acc;
} ln_ctx;

static void ln_fwd_rows(void *p, int64_t r0, int64_t r1, int tid)
{
    ln_ctx *c = p;
    int C = c->C;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = c->x + (size_t)r * C;
        float *y = c->y + (size_t)r * C;
        float m = sum_f(x, C) / (float)C;
        float acc[8] = {0}, v = 0.0f;
        int j = 0;
        for (; j + 8 <= C; j += 8)
            for (int l = 0; l < 8; l++) { float d = x[j + l] - m; acc[l] += d * d; }
        for (; j < C; j++) { float d = x[j] - m; v += d * d; }
        for (int l = 0; l < 8; l++) v += acc[l];
        float s = 1.0f / sqrtf(v / (float)C + LN_EPS);
        for (j = 0; j < C; j++) y[j] = (x[j] - m) * s * c->w[j] + c->b[j];
        c->mean[r] = m;
        c->rstd[r] = s;
    }
}

void kn_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int N, int C)
{
    ln_ctx c = {.y = y, .mean = mean, .rstd = rstd, .x = x, .w = w, .b = b, .N = N, .C = C};
    kn_parallel_for_dynamic(N, 16, ln_fwd_rows, &c);
}

/* dx = rstd·(g - mean(g) - x̂·mean(g·x̂)), g = dy·w. */
static void ln_bwd_rows(void *p, int64_t r0, int64_t r1, int tid)
{
    ln_ctx *c = p;
    int C = c->C;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = c->x + (size_t)r * C, *dy = c->dy + (size_t)r * C;
        float *dx = c->dx + (size_t)r * C;
        float m = c->cmean[r], s = c->crstd[r];
        float a1[8] = {0}, a2[8] = {0}, g1 = 0.0f, g2 = 0.0f;
        int j = 0;
        for (; j + 8 <= C; j += 8)
            for (int l = 0; l < 8; l++) {
                float g = dy[j + l] * c->w[j + l];
                a1[l] += g;
                a2[l] += g * ((x[j + l] - m) * s);
            }
        for (; j < C; j++) {
            float g = dy[j] * c->w[j];
            g1 += g;
            g2 += g * ((x[j] - m) * s);
        }
        for (int l = 0; l < 8; l++) { g1 += a1[l]; g2 += a2[l]; }
        g1 /= (float)C;
        g2 /= (float)C;
        if (c->acc)
            for (j = 0; j < C; j++) {
                float xh = (x[j] - m) * s;
                dx[j] += s * (dy[j] * c->w[j] - g1 - xh * g2);
            }
        else
            for (j = 0; j < C; j++) {
                float xh = (x[j] - m) * s;
                dx[j] = s * (dy[j] * c->w[j] - g1 - xh * g2);
            }
    }
}

static void ln_bwd_cols(ln_ctx *c)
{
    int C = c->C;
    for (int64_t r = 0; r < c->N; r++) {
        const float *x = c->x + (size_t)r * C, *dy = c->dy + (size_t)r * C;
        float m = c->cmean[r], s = c->crstd[r];
        for (int j = 0; j < C; j++) {
            c->dw[j] += dy[j] * ((x[j] - m) * s);
            c->db[j] += dy[j];
        }
    }
}

/* Unit 0 is the whole column pass (dw, db over every row), units 1.. are LN_ROWS-row chunks of
 * the row pass (dx), all in one dispatch: at 2 threads one thread sums the columns while the
 * other starts on the rows. Split by columns, the column pass ran 2-4x slower at 2 threads than
 * at 1 (measured at M: both threads stream every row, and the lines of dw and db at the split
 * were written by both). */
enum { LN_ROWS = 64 };
static void ln_bwd_units(void *p, int64_t u0, int64_t u1, int tid)
{
    ln_ctx *c = p;
    if (u0 == 0) {
        ln_bwd_cols(c);
        if (u1 == 1) return;
        u0 = 1;
    }
    int64_t r1 = u1 * LN_ROWS - LN_ROWS;
    ln_bwd_rows(c, (u0 - 1) * LN_ROWS, r1 < c->N ? r1 : c->N, tid);
}

void kn_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, const float *mean, const float *rstd, int N, int C,
                           bool accumulate)
{
    ln_ctx c = {.dx = dx, .dw = dw, .db = db, .dy = dy, .x = x, .w = w, .cmean = mean,
                .crstd = rstd, .N = N, .C = C, .acc = accumulate};
    /* dx must not alias dy or x: the row pass reads both while writing dx. */
    int64_t row_units = dx ? ((int64_t)N + LN_ROWS - 1) / LN_ROWS : 0;
    kn_parallel_for_dynamic(1 + row_units, 1, ln_bwd_units, &c);
}

/* ---------------------------------------------------------------- gelu */

typedef struct {
    float *y;
    const float *x, *dy;
    bool acc;
} gelu_ctx;

static void gelu_fwd_range(void *p, int64_t i0, int64_t i1, int tid)
{
    gelu_ctx *c = p;
    const float *x = c->x;
    float *y = c->y;
    for (int64_t i = i0; i < i1; i++) {
        float v = x[i];
        float u = GELU_K0 * (v + GELU_K1 * v * v * v);
        y[i] = 0.5f * v * (1.0f + tanhf_poly(u));
    }
}

void kn_gelu_forward(float *y, const float *x, int64_t n)
{
    gelu_ctx c = {.y = y, .x = x};
    kn_parallel_for_dynamic(n, 1024, gelu_fwd_range, &c);
}

static void gelu_bwd_range(void *p, int64_t i0, int64_t i1, int tid)
{
    gelu_ctx *c = p;
    const float *x = c->x, *dy = c->dy;
    float *dx = c->y;
    for (int64_t i = i0; i < i1; i++) {
        float v = x[i];
        float u = GELU_K0 * (v + GELU_K1 * v * v * v);
        float t = tanhf_poly(u);
        float du = GELU_K0 * (1.0f + 3.0f * GELU_K1 * v * v);
        float g = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
        float d = dy[i] * g;
        dx[i] = c->acc ? dx[i] + d : d;
    }
}

void kn_gelu_backward(float *dx, const float *x, const float *dy, int64_t n, bool accumulate)
{
    gelu_ctx c = {.y = dx, .x = x, .dy = dy, .acc = accumulate};
    kn_parallel_for_dynamic(n, 1024, gelu_bwd_range, &c);
}

/* The exact GELU, x·Φ(x) with Φ the normal CDF, as torch.nn.GELU() computes it: the tanh
 * form above differs by up to ~5e-4 per element, enough to move a model's loss by ~5e-3. */
#define GELU_RSQRT2 0.70710678118654752f      /* 1/sqrt(2) */
#define GELU_RSQRT2PI 0.39894228040143268f    /* 1/sqrt(2*pi) */

static void gelu_erf_fwd_range(void *p, int64_t i0, int64_t i1, int tid)
{
    gelu_ctx *c = p;
    const float *x = c->x;
    float *y = c->y;
    for (int64_t i = i0; i < i1; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + erff(v * GELU_RSQRT2));
    }
}

void kn_gelu_erf_forward(float *y, const float *x, int64_t n)
{
    gelu_ctx c = {.y = y, .x = x};
    kn_parallel_for_dynamic(n, 1024, gelu_erf_fwd_range, &c);
}

/* d/dx x·Φ(x) = Φ(x) + x·φ(x), φ the normal density. */
static void gelu_erf_bwd_range(void *p, int64_t i0, int64_t i1, int tid)
{
    gelu_ctx *c = p;
    const float *x = c->x, *dy = c->dy;
    float *dx = c->y;
    for (int64_t i = i0; i < i1; i++) {
        float v = x[i];
        float g = 0.5f * (1.0f + erff(v * GELU_RSQRT2)) + v * GELU_RSQRT2PI * expf(-0.5f * v * v);
        float d = dy[i] * g;
        dx[i] = c->acc ? dx[i] + d : d;
    }
}

void kn_gelu_erf_backward(float *dx, const float *x, const float *dy, int64_t n, bool accumulate)
{
    gelu_ctx c = {.y = dx, .x = x, .dy = dy, .acc = accumulate};
    kn_parallel_for_dynamic(n, 1024, gelu_erf_bwd_range, &c);
}

/* ---------------------------------------------------------------- attention */

/* Fused causal attention in the manner of FlashAttention-2, on the CPU. Per (batch, head) the
 * head's q, k, v are packed into per-thread scratch (rows padded to a multiple of 8 floats,
 * keys also transposed), then tiles of KN_ATT_BLOCK queries × KN_ATT_BLOCK keys are visited
 * below and on the diagonal only. The forward keeps a running max and sum per query row
 * (online softmax) and stores the row's log-sum-exp; the backward recomputes each tile's
 * probabilities from it and uses rowsum(dO ∘ O) in place of the probability matrix. Nothing
 * larger than a tile or one head's T × head-size panel ever exists. */

#define ATT_BLK KN_ATT_BLOCK

static int round8(int n) { return (n + 7) & ~7; }
static int round_blk(int n) { return (n + ATT_BLK - 1) / ATT_BLK * ATT_BLK; }

/* C[i,j] (+)= Σ_k A[i·as + k·ks] · Bm[k·ldb + j] for i < M, j < N (N a multiple of 8).
 * Every C[i,j] is a sequential sum over k = 0..K-1 (from 0 or from C), whatever the blocking,
 * so the result does not depend on which path a tile takes.
 *
 * On a tile of the diagonal, where query i sees keys j <= i only, `tri` skips the work above
 * the diagonal a register strip of rows at a time (the skipped terms are zero or unused):
 *   TRI_COLS    C[i,j] is computed only for column chunks that hold some j <= i (the rest of
 *               the row is left as it was and must not be read);
 *   TRI_K_END   the sum for row i stops at k <= i (A's row i is zero past its diagonal);
 *   TRI_K_START the sum for row i starts at k >= i (A's column i is zero above it). */
enum { TRI_NONE, TRI_COLS, TRI_K_END, TRI_K_START };

/* The k range [k0, k1) and column count of a strip of rows [i, i + mr) under `tri`. */
static void tri_bounds(int tri, int i, int mr, int N, int K, int *k0, int *k1, int *n)
{
    *k0 = 0; *k1 = K; *n = N;
    if (tri == TRI_COLS) *n = i + mr < N ? (i + mr + 31) / 32 * 32 : N;
    if (tri == TRI_K_END) *k1 = i + mr < K ? i + mr : K;
    if (tri == TRI_K_START) *k0 = i < K ? i : K;
    if (*n > N) *n = N;
}
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

/* The register tile: MR rows × 32 columns in named accumulators (an array of them is
 * spilled to the stack by gcc on every iteration). With AVX-512VL's 32 vector registers 6
 * rows fit (24 accumulators) and run ~1.3x faster at these sizes than 4; AVX2 has 16. One
 * function per row count 1..TILE_MR (rows past MR are compiled out), so a tile whose height
 * is not a multiple of TILE_MR still keeps its last strip in registers. */
#ifdef __AVX512VL__
#define TILE_MR 6
#else
#define TILE_MR 4
#endif
#define ROW_INIT(r)                                                                        \
    __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = c##r##0, c##r##2 = c##r##0, c##r##3 = c##r##0; \
    if ((r) < ROWS && acc) {                                                                 \
        c##r##0 = _mm256_loadu_ps(C + (size_t)(r) * ldc);                                  \
        c##r##1 = _mm256_loadu_ps(C + (size_t)(r) * ldc + 8);                              \
        c##r##2 = _mm256_loadu_ps(C + (size_t)(r) * ldc + 16);                             \
        c##r##3 = _mm256_loadu_ps(C + (size_t)(r) * ldc + 24);                             \
    }
#define ROW_FMA(r)                                                                         \
    if ((r) < ROWS) {                                                                        \
        __m256 a = _mm256_broadcast_ss(A + (size_t)(r) * as + (size_t)k * ks);             \
        c##r##0 = _mm256_fmadd_ps(a, b0, c##r##0);                                         \
        c##r##1 = _mm256_fmadd_ps(a, b1, c##r##1);                                         \
        c##r##2 = _mm256_fmadd_ps(a, b2, c##r##2);                                         \
        c##r##3 = _mm256_fmadd_ps(a, b3, c##r##3);                                         \
    }
#define ROW_STORE(r)                                                                       \
    if ((r) < ROWS) {                                                                        \
        _mm256_storeu_ps(C + (size_t)(r) * ldc, c##r##0);                                  \
        _mm256_storeu_ps(C + (size_t)(r) * ldc + 8, c##r##1);                              \
        _mm256_storeu_ps(C + (size_t)(r) * ldc + 16, c##r##2);                             \
        _mm256_storeu_ps(C + (size_t)(r) * ldc + 24, c##r##3);                             \
    }
#define DEFINE_TILE_RX32(MR)                                                               \
    static void tile_mm_r##MR##x32(float *C, int ldc, const float *A, int as, int ks,      \
                                   const float *Bm, int ldb, int K, bool acc)              \
    {                                                                                      \
        enum { ROWS = MR };                                                                \
        ROW_INIT(0) ROW_INIT(1) ROW_INIT(2) ROW_INIT(3) ROW_INIT(4) ROW_INIT(5)             \
        for (int k = 0; k < K; k++) {                                                      \
            const float *b = Bm + (size_t)k * ldb;                                         \
            __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);                   \
            __m256 b2 = _mm256_loadu_ps(b + 16), b3 = _mm256_loadu_ps(b + 24);             \
            ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3) ROW_FMA(4) ROW_FMA(5)              \
        }                                                                                  \
        ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4) ROW_STORE(5)      \
    }
DEFINE_TILE_RX32(1)
DEFINE_TILE_RX32(2)
DEFINE_TILE_RX32(3)
DEFINE_TILE_RX32(4)
#if TILE_MR == 6
DEFINE_TILE_RX32(5)
DEFINE_TILE_RX32(6)
#endif
#undef ROW_INIT
#undef ROW_FMA
#undef ROW_STORE
#undef DEFINE_TILE_RX32

typedef void (*tile_rx32_fn)(float *, int, const float *, int, int, const float *, int, int, bool);
static const tile_rx32_fn TILE_RX32[TILE_MR + 1] = {
    NULL, tile_mm_r1x32, tile_mm_r2x32, tile_mm_r3x32, tile_mm_r4x32,
#if TILE_MR == 6
    tile_mm_r5x32, tile_mm_r6x32,
#endif
};

/* Column edges: mr rows × nv < 4 vectors of 8 columns, one row at a time (head sizes that are
 * not a multiple of 32). */
static void tile_mm_edge(float *C, int ldc, const float *A, int as, int ks, const float *Bm,
                         int ldb, int K, int mr, int nv, bool acc)
{
    for (int r = 0; r < mr; r++) {
        __m256 c[4];
        for (int v = 0; v < nv; v++)
            c[v] = acc ? _mm256_loadu_ps(C + (size_t)r * ldc + 8 * v) : _mm256_setzero_ps();
        for (int k = 0; k < K; k++) {
            __m256 a = _mm256_broadcast_ss(A + (size_t)r * as + (size_t)k * ks);
            for (int v = 0; v < nv; v++)
                c[v] = _mm256_fmadd_ps(a, _mm256_loadu_ps(Bm + (size_t)k * ldb + 8 * v), c[v]);
        }
        for (int v = 0; v < nv; v++) _mm256_storeu_ps(C + (size_t)r * ldc + 8 * v, c[v]);
    }
}

static void tile_mm(float *C, int ldc, const float *A, int as, int ks, const float *Bm, int ldb,
                    int M, int N, int K, bool acc, int tri)
{
    for (int i = 0; i < M; i += TILE_MR) {
        int mr = M - i < TILE_MR ? M - i : TILE_MR, k0, k1, nc;
        tri_bounds(tri, i, mr, N, K, &k0, &k1, &nc);
        const float *a = A + (size_t)i * as + (size_t)k0 * ks, *bk = Bm + (size_t)k0 * ldb;
        for (int j = 0; j < nc; j += 32) {
            int nv = (nc - j) / 8 < 4 ? (nc - j) / 8 : 4;
            float *c = C + (size_t)i * ldc + j;
            if (nv == 4) TILE_RX32[mr](c, ldc, a, as, ks, bk + j, ldb, k1 - k0, acc);
            else tile_mm_edge(c, ldc, a, as, ks, bk + j, ldb, k1 - k0, mr, nv, acc);
        }
    }
}
#else
#define TILE_MR 1
static void tile_mm(float *C, int ldc, const float *A, int as, int ks, const float *Bm, int ldb,
                    int M, int N, int K, bool acc, int tri)
{
    for (int i = 0; i < M; i++) {
        int k0, k1, nc;
        tri_bounds(tri, i, 1, N, K, &k0, &k1, &nc);
        for (int j = 0; j < nc; j++) {
            float s = acc ? C[(size_t)i * ldc + j] : 0.0f;
            for (int k = k0; k < k1; k++)
                s = fmaf(A[(size_t)i * as + (size_t)k * ks], Bm[(size_t)k * ldb + j], s);
            C[(size_t)i * ldc + j] = s;
        }
    }
}
#endif

/* One thread's view of its scratch for one head: T padded to whole blocks (Tp), head size
 * padded to a multiple of 8 (hp); padding is zero so it adds nothing to any product. */
typedef struct {
    int T, Tp, hs, hp;
    float *q;      /* [Tp, hp] query · scale */
    float *k;      /* [Tp, hp] */
    float *kt;     /* [hp, Tp] keys transposed */
    float *v;      /* [Tp, hp] */
    float *vt;     /* [hp, Tp] values transposed (backward) */
    float *dout;   /* [Tp, hp] dO (backward) */
    float *dq;     /* [Tp, hp] (backward); O accumulator in the forward */
    float *s, *dp; /* [BLK, BLK] scores / probabilities, dP / dS */
    float *dk, *dv;/* [BLK, hp] key block accumulators (backward) */
    float *rows;   /* [Tp] per-row max and sum (forward), rowsum(dO ∘ O) (backward) */
    float *rows2;  /* [Tp] */
} att_ws;

size_t kn_attention_scratch_floats(int T, int head_size, int nthreads)
{
    size_t Tp = (size_t)round_blk(T), hp = (size_t)round8(head_size);
    size_t per = 7 * Tp * hp + 2 * (size_t)ATT_BLK * ATT_BLK + 2 * (size_t)ATT_BLK * hp + 2 * Tp;
    per = (per + 15) & ~(size_t)15;
    return (size_t)(nthreads < 1 ? 1 : nthreads) * per;
}

static att_ws att_workspace(float *scratch, int tid, int T, int hs)
{
    att_ws w = {.T = T, .Tp = round_blk(T), .hs = hs, .hp = round8(hs)};
    float *p = scratch + (size_t)tid * kn_attention_scratch_floats(T, hs, 1);
    size_t panel = (size_t)w.Tp * w.hp;
    w.q = p; p += panel;
    w.k = p; p += panel;
    w.kt = p; p += panel;
    w.v = p; p += panel;
    w.vt = p; p += panel;
    w.dout = p; p += panel;
    w.dq = p; p += panel;
    w.s = p; p += ATT_BLK * ATT_BLK;
    w.dp = p; p += ATT_BLK * ATT_BLK;
    w.dk = p; p += (size_t)ATT_BLK * w.hp;
    w.dv = p; p += (size_t)ATT_BLK * w.hp;
    w.rows = p; p += w.Tp;
    w.rows2 = p;
    return w;
}

/* dst[cols, rows] = src[rows, cols]ᵀ (rows and cols multiples of 8), 8 × 8 blocks at a time. */
static void transpose_panel(float *dst, const float *src, int rows, int cols)
{
    for (int r = 0; r < rows; r += 8)
        for (int c = 0; c < cols; c += 8) {
#if defined(__AVX2__) && defined(__FMA__)
            const float *s = src + (size_t)r * cols + c;
            __m256 x[8], y[8];
            for (int i = 0; i < 8; i++) x[i] = _mm256_loadu_ps(s + (size_t)i * cols);
            for (int i = 0; i < 8; i += 2) {   /* pairs of rows interleaved */
                y[i] = _mm256_unpacklo_ps(x[i], x[i + 1]);
                y[i + 1] = _mm256_unpackhi_ps(x[i], x[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) {   /* then quads: 4 rows × 2 columns per lane */
                x[i] = _mm256_shuffle_ps(y[i], y[i + 2], 0x44);
                x[i + 1] = _mm256_shuffle_ps(y[i], y[i + 2], 0xEE);
                x[i + 2] = _mm256_shuffle_ps(y[i + 1], y[i + 3], 0x44);
                x[i + 3] = _mm256_shuffle_ps(y[i + 1], y[i + 3], 0xEE);
            }
            float *d = dst + (size_t)c * rows + r;
            for (int i = 0; i < 4; i++) {      /* finally the 128-bit halves */
                _mm256_storeu_ps(d + (size_t)i * rows, _mm256_permute2f128_ps(x[i], x[i + 4], 0x20));
                _mm256_storeu_ps(d + (size_t)(i + 4) * rows,
                                 _mm256_permute2f128_ps(x[i], x[i + 4], 0x31));
            }
#else
            for (int i = 0; i < 8; i++)
                for (int j = 0; j < 8; j++)
                    dst[(size_t)(c + j) * rows + r + i] = src[(size_t)(r + i) * cols + c + j];
#endif
        }
}

/* dst[Tp, hp] = a·src rows (stride ld), zero padded; if dst_t, also its transpose [hp, Tp].
 * The rows are a head's slice of much longer rows, usually not in cache: fetch ahead. */
static void pack_panel(float *dst, float *dst_t, const float *src, int ld, float a, const att_ws *w)
{
    enum { AHEAD = 8 };
    for (int t = 0; t < w->Tp; t++) {
        float *d = dst + (size_t)t * w->hp;
        int j = 0;
        if (t + AHEAD < w->T)
            for (int l = 0; l < w->hs; l += 16) __builtin_prefetch(src + (size_t)(t + AHEAD) * ld + l);
        if (t < w->T)
            for (; j < w->hs; j++) d[j] = a * src[(size_t)t * ld + j];
        for (; j < w->hp; j++) d[j] = 0.0f;
    }
    if (dst_t) transpose_panel(dst_t, dst, w->Tp, w->hp);
}

typedef struct {
    float *y, *lse, *dqkv, *scratch;
    const float *qkv, *dy, *cy, *clse;
    int B, T, C, NH;
    bool acc;
} att_ctx;

/* Online softmax over one tile's scores s[m, BLK] (n valid keys; on the diagonal row r sees
 * keys 0..r only): updates the row max mx[] and sum l[], rescales the output rows o[] by
 * e^(old max - new max), and leaves the tile's e^(s - new max) in s (0 where masked). */
/* The softmax work on one row of a tile: sr[0, nv) holds valid scores, sr[nv, n) is masked
 * (or not computed at all) and must come out as exact zeros.
 *   probs_row_online: sr = e^(sr - mnew) with mnew = max(*mx, max sr); returns e^(*mx - mnew)
 *     (the factor for the row's earlier sum and output), adds Σ sr to the rescaled *l.
 *   probs_dscores_row: sr = P = e^(sr - lse), gr = P ∘ (gr - D). */
#if defined(__AVX2__) && defined(__FMA__)
/* expf_poly on 8 lanes, with fused multiply-adds (so not bit-identical to kn_expf). The clamps
 * take x second: max/min return their second operand when either is NaN, so NaN propagates. */
static inline __m256 expf_poly8(__m256 x)
{
    x = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
    __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(12582912.0f));
    __m256 fx = _mm256_sub_ps(t, _mm256_set1_ps(12582912.0f));
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i n = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B400000 - 127));
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
}

#if defined(__AVX512F__)
/* The softmax rows in 16-lane vectors: half the instructions of the 8-lane code, which matters
 * at head size 32, where a score costs only 4·32 FLOPs of products against its exponential.
 * expf_poly16 is expf_poly8's arithmetic lane for lane. */
static inline __m512 expf_poly16(__m512 x)
{
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-87.0f), x));
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f),
                               _mm512_set1_ps(12582912.0f));
    __m512 fx = _mm512_sub_ps(t, _mm512_set1_ps(12582912.0f));
    __m512 r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B400000 - 127));
    return _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(e, 23)));
}

/* Lanes j..j+15 that are < nv. */
static inline __mmask16 mask_below(int j, int nv)
{
    int k = nv - j;
    return k >= 16 ? (__mmask16)0xFFFF : k <= 0 ? (__mmask16)0 : (__mmask16)((1u << k) - 1);
}

static float probs_row_online(float *sr, int nv, int n, float *mx, float *l)
{
    int n8 = round8(n);
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < nv; j += 16)
        vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(vmax, mask_below(j, nv), sr + j));
    float mnew = _mm512_reduce_max_ps(vmax);
    mnew = mnew > *mx ? mnew : *mx;
    __m512 vm = _mm512_set1_ps(mnew), vsum = _mm512_setzero_ps();
    for (int j = 0; j < n8; j += 16) {
        __mmask16 in = mask_below(j, n8), valid = mask_below(j, nv);
        __m512 s = _mm512_maskz_loadu_ps(in, sr + j);
        __m512 e = _mm512_maskz_mov_ps(valid, expf_poly16(_mm512_sub_ps(s, vm)));
        _mm512_mask_storeu_ps(sr + j, in, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    float alpha = expf_poly(*mx - mnew);
    *l = *l * alpha + _mm512_reduce_add_ps(vsum);
    *mx = mnew;
    return alpha;
}

static void probs_dscores_row(float *sr, float *gr, int nv, int n, float lse, float D)
{
    int n8 = round8(n);
    __m512 vl = _mm512_set1_ps(lse), vd = _mm512_set1_ps(D);
    for (int j = 0; j < n8; j += 16) {
        __mmask16 in = mask_below(j, n8), valid = mask_below(j, nv);
        __m512 s = _mm512_maskz_loadu_ps(in, sr + j), dp = _mm512_maskz_loadu_ps(in, gr + j);
        __m512 p = _mm512_maskz_mov_ps(valid, expf_poly16(_mm512_sub_ps(s, vl)));
        __m512 g = _mm512_maskz_mov_ps(valid, _mm512_mul_ps(p, _mm512_sub_ps(dp, vd)));
        _mm512_mask_storeu_ps(sr + j, in, p);
        _mm512_mask_storeu_ps(gr + j, in, g);
    }
}
#else
/* Lanes j..j+7 that are < nv. */
static inline __m256 lanes_below(int j, int nv)
{
    __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(nv), idx));
}

static float hmax8(__m256 v)
{
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

static float hsum8(__m256 v)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

static float probs_row_online(float *sr, int nv, int n, float *mx, float *l)
{
    int nv8 = round8(nv), n8 = round8(n);
    __m256 vmax = _mm256_set1_ps(-INFINITY), ninf = vmax;
    for (int j = 0; j < nv8; j += 8)
        vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(ninf, _mm256_loadu_ps(sr + j), lanes_below(j, nv)));
    float mnew = hmax8(vmax);
    mnew = mnew > *mx ? mnew : *mx;
    __m256 vm = _mm256_set1_ps(mnew), vsum = _mm256_setzero_ps();
    for (int j = 0; j < nv8; j += 8) {
        __m256 e = expf_poly8(_mm256_sub_ps(_mm256_loadu_ps(sr + j), vm));
        e = _mm256_and_ps(e, lanes_below(j, nv));
        _mm256_storeu_ps(sr + j, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    for (int j = nv8; j < n8; j += 8) _mm256_storeu_ps(sr + j, _mm256_setzero_ps());
    float alpha = expf_poly(*mx - mnew);
    *l = *l * alpha + hsum8(vsum);
    *mx = mnew;
    return alpha;
}

static void probs_dscores_row(float *sr, float *gr, int nv, int n, float lse, float D)
{
    int nv8 = round8(nv), n8 = round8(n);
    __m256 vl = _mm256_set1_ps(lse), vd = _mm256_set1_ps(D);
    for (int j = 0; j < nv8; j += 8) {
        __m256 p = expf_poly8(_mm256_sub_ps(_mm256_loadu_ps(sr + j), vl));
        p = _mm256_and_ps(p, lanes_below(j, nv));
        _mm256_storeu_ps(sr + j, p);
        _mm256_storeu_ps(gr + j, _mm256_mul_ps(p, _mm256_sub_ps(_mm256_loadu_ps(gr + j), vd)));
    }
    for (int j = nv8; j < n8; j += 8) {
        _mm256_storeu_ps(sr + j, _mm256_setzero_ps());
        _mm256_storeu_ps(gr + j, _mm256_setzero_ps());
    }
}
#endif /* __AVX512F__ */
#else
static float probs_row_online(float *sr, int nv, int n, float *mx, float *l)
{
    float mnew = max_f(sr, nv);
    mnew = mnew > *mx ? mnew : *mx;
    float alpha = expf_poly(*mx - mnew);
    for (int j = 0; j < nv; j++) sr[j] = expf_poly(sr[j] - mnew);
    for (int j = nv; j < n; j++) sr[j] = 0.0f;
    *l = *l * alpha + sum_f(sr, nv);
    *mx = mnew;
    return alpha;
}

static void probs_dscores_row(float *sr, float *gr, int nv, int n, float lse, float D)
{
    for (int j = 0; j < nv; j++) {
        float p = expf_poly(sr[j] - lse);
        sr[j] = p;
        gr[j] = p * (gr[j] - D);
    }
    for (int j = nv; j < n; j++) sr[j] = gr[j] = 0.0f;
}
#endif

/* Online softmax over one tile's scores s[m, BLK] (n valid keys; on the diagonal row r sees
 * keys 0..r only): updates the row max mx[] and sum l[], rescales the output rows o[] by
 * e^(old max - new max), and leaves the tile's e^(s - new max) in s (0 where masked). */
static void online_softmax_tile(float *s, float *o, float *mx, float *l, int m, int n, bool diag,
                                int hp)
{
    for (int r = 0; r < m; r++) {
        float alpha = probs_row_online(s + (size_t)r * ATT_BLK, diag ? r + 1 : n, n, &mx[r], &l[r]);
        float *orow = o + (size_t)r * hp;
        if (alpha != 1.0f)
            for (int j = 0; j < hp; j++) orow[j] *= alpha;
    }
}

static void att_fwd_head(att_ctx *c, att_ws *w, int b, int h)
{
    int T = c->T, C = c->C, hs = w->hs, hp = w->hp, ld = 3 * C;
    const float *q = c->qkv + (size_t)b * T * ld + (size_t)h * hs;
    pack_panel(w->q, NULL, q, ld, 1.0f / sqrtf((float)hs), w);
    pack_panel(w->k, w->kt, q + C, ld, 1.0f, w);
    pack_panel(w->v, NULL, q + 2 * C, ld, 1.0f, w);
    float *lse = c->lse + ((size_t)b * c->NH + h) * T;
    float *y = c->y + (size_t)b * T * C + (size_t)h * hs;
    for (int i0 = 0; i0 < T; i0 += ATT_BLK) {
        int m = T - i0 < ATT_BLK ? T - i0 : ATT_BLK;
        float *o = w->dq, *mx = w->rows, *l = w->rows2;
        memset(o, 0, sizeof(float) * (size_t)m * hp);
        for (int r = 0; r < m; r++) { mx[r] = -INFINITY; l[r] = 0.0f; }
        for (int j0 = 0; j0 <= i0; j0 += ATT_BLK) {
            int n = T - j0 < ATT_BLK ? T - j0 : ATT_BLK;
            int tri = j0 == i0;
            tile_mm(w->s, ATT_BLK, w->q + (size_t)i0 * hp, hp, 1, w->kt + j0, w->Tp, m, ATT_BLK, hs,
                    false, tri ? TRI_COLS : TRI_NONE);
            online_softmax_tile(w->s, o, mx, l, m, n, tri, hp);
            tile_mm(o, hp, w->s, ATT_BLK, 1, w->v + (size_t)j0 * hp, hp, m, hp, n, true,
                    tri ? TRI_K_END : TRI_NONE);
        }
        for (int r = 0; r < m; r++) {
            float inv = 1.0f / l[r];
            float *yr = y + (size_t)(i0 + r) * C;
            for (int j = 0; j < hs; j++) yr[j] = o[(size_t)r * hp + j] * inv;
            lse[i0 + r] = mx[r] + logf(l[r]);
        }
    }
}

static void att_fwd_heads(void *p, int64_t k0, int64_t k1, int tid)
{
    att_ctx *c = p;
    att_ws w = att_workspace(c->scratch, tid, c->T, c->C / c->NH);
    for (int64_t k = k0; k < k1; k++) att_fwd_head(c, &w, (int)(k / c->NH), (int)(k % c->NH));
}

void kn_attention_forward(float *y, float *lse, float *scratch, const float *qkv, int B, int T,
                          int C, int NH)
{
    att_ctx c = {.y = y, .lse = lse, .scratch = scratch, .qkv = qkv, .B = B, .T = T, .C = C,
                 .NH = NH};
    kn_parallel_for_dynamic((int64_t)B * NH, 1, att_fwd_heads, &c);
}

/* One (query block, key block) tile of the backward: recompute P from the log-sum-exp, then
 * dV += Pᵀ·dO, dP = dO·Vᵀ, dS = P ∘ (dP - rowsum(dO ∘ O)), dQ += dS·K, dK += dSᵀ·Q. */
static void att_bwd_tile(att_ws *w, const float *lse, int i0, int m, int j0, int n)
{
    int hs = w->hs, hp = w->hp;
    bool diag = i0 == j0;
    const float *qb = w->q + (size_t)i0 * hp, *dob = w->dout + (size_t)i0 * hp;
    int cols = diag ? TRI_COLS : TRI_NONE, kend = diag ? TRI_K_END : TRI_NONE;
    int kstart = diag ? TRI_K_START : TRI_NONE;
    tile_mm(w->s, ATT_BLK, qb, hp, 1, w->kt + j0, w->Tp, m, ATT_BLK, hs, false, cols);
    tile_mm(w->dp, ATT_BLK, dob, hp, 1, w->vt + j0, w->Tp, m, ATT_BLK, hs, false, cols);
    for (int r = 0; r < m; r++)
        probs_dscores_row(w->s + (size_t)r * ATT_BLK, w->dp + (size_t)r * ATT_BLK, diag ? r + 1 : n,
                          n, lse[i0 + r], w->rows[i0 + r]);
    tile_mm(w->dv, hp, w->s, 1, ATT_BLK, dob, hp, n, hp, m, true, kstart);
    tile_mm(w->dq + (size_t)i0 * hp, hp, w->dp, ATT_BLK, 1, w->k + (size_t)j0 * hp, hp, m, hp, n,
            true, kend);
    tile_mm(w->dk, hp, w->dp, 1, ATT_BLK, qb, hp, n, hp, m, true, kstart);
}

/* dst rows (stride ld) (+)= a·src[t, 0..hs) for t in [t0, t0 + n). */
static void unpack_rows(float *dst, int ld, const float *src, int hp, int hs, int t0, int n,
                        float a, bool acc)
{
    for (int t = t0; t < t0 + n; t++) {
        float *d = dst + (size_t)t * ld;
        const float *s = src + (size_t)(t - t0) * hp;
        if (acc) for (int j = 0; j < hs; j++) d[j] += a * s[j];
        else for (int j = 0; j < hs; j++) d[j] = a * s[j];
    }
}

static void att_bwd_head(att_ctx *c, att_ws *w, int b, int h)
{
    int T = c->T, C = c->C, hs = w->hs, hp = w->hp, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    const float *q = c->qkv + (size_t)b * T * ld + (size_t)h * hs;
    const float *dy = c->dy + (size_t)b * T * C + (size_t)h * hs;
    const float *yo = c->cy + (size_t)b * T * C + (size_t)h * hs;
    const float *lse = c->clse + ((size_t)b * c->NH + h) * T;
    float *dq = c->dqkv + (size_t)b * T * ld + (size_t)h * hs;
    pack_panel(w->q, NULL, q, ld, scale, w);
    pack_panel(w->k, w->kt, q + C, ld, 1.0f, w);
    pack_panel(w->v, w->vt, q + 2 * C, ld, 1.0f, w);
    pack_panel(w->dout, NULL, dy, C, 1.0f, w);
    for (int t = 0; t < T; t++) w->rows[t] = dot_f(dy + (size_t)t * C, yo + (size_t)t * C, hs);
    memset(w->dq, 0, sizeof(float) * (size_t)w->Tp * hp);
    for (int j0 = 0; j0 < T; j0 += ATT_BLK) {
        int n = T - j0 < ATT_BLK ? T - j0 : ATT_BLK;
        memset(w->dk, 0, sizeof(float) * (size_t)ATT_BLK * hp);
        memset(w->dv, 0, sizeof(float) * (size_t)ATT_BLK * hp);
        for (int i0 = j0; i0 < T; i0 += ATT_BLK)
            att_bwd_tile(w, lse, i0, T - i0 < ATT_BLK ? T - i0 : ATT_BLK, j0, n);
        unpack_rows(dq + C, ld, w->dk, hp, hs, j0, n, 1.0f, c->acc);
        unpack_rows(dq + 2 * C, ld, w->dv, hp, hs, j0, n, 1.0f, c->acc);
    }
    unpack_rows(dq, ld, w->dq, hp, hs, 0, T, scale, c->acc);
}

static void att_bwd_heads(void *p, int64_t k0, int64_t k1, int tid)
{
    att_ctx *c = p;
    att_ws w = att_workspace(c->scratch, tid, c->T, c->C / c->NH);
    for (int64_t k = k0; k < k1; k++) att_bwd_head(c, &w, (int)(k / c->NH), (int)(k % c->NH));
}

void kn_attention_backward(float *dqkv, float *scratch, const float *dy, const float *qkv,
                           const float *y, const float *lse, int B, int T, int C, int NH,
                           bool accumulate)
{
    att_ctx c = {.dqkv = dqkv, .scratch = scratch, .dy = dy, .qkv = qkv, .cy = y, .clse = lse,
                 .B = B, .T = T, .C = C, .NH = NH, .acc = accumulate};
    kn_parallel_for_dynamic((int64_t)B * NH, 1, att_bwd_heads, &c);
}

/* ---------------------------------------------------------------- cross-entropy */

typedef struct {
    float *losses, *dlogits;
    const float *logits, *w;
    const int32_t *targets;
    int T, V;
    float coef;    /* dloss / denom */
    bool acc;
} ce_ctx;

/* Σ_j exp(z[j] - mx), 8 partial sums so the loop vectorises. */
static float sumexp_f(const float *z, int n, float mx)
{
    float acc[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) acc[l] += expf_poly(z[j + l] - mx);
    float s = 0.0f;
    for (; j < n; j++) s += expf_poly(z[j] - mx);
    for (int l = 0; l < 8; l++) s += acc[l];
    return s;
}

static void ce_fwd_rows(void *p, int64_t r0, int64_t r1, int tid)
{
    ce_ctx *c = p;
    for (int64_t r = r0; r < r1; r++) {
        const float *z = c->logits + (size_t)r * c->V;
        float mx = max_f(z, c->V);
        float s = sumexp_f(z, c->V, mx);
        c->losses[r] = logf(s) + mx - z[c->targets[r]];
    }
}

static double ce_denom(const float *w, int B, int T, bool normalize)
{
    if (!w || !normalize) return (double)B * T;
    double sw = 0.0;
    for (int t = 0; t < T; t++) sw += w[t];
    return (double)B * sw;
}

float kn_crossentropy_forward(float *losses, const float *logits, const int32_t *targets,
                              const float *w, int B, int T, int V, bool normalize)
{
    ce_ctx c = {.losses = losses, .logits = logits, .targets = targets, .w = w, .T = T, .V = V};
    int64_t N = (int64_t)B * T;
    kn_parallel_for_dynamic(N, 16, ce_fwd_rows, &c);
    double s = 0.0;
    for (int64_t r = 0; r < N; r++) s += (w ? (double)w[r % T] : 1.0) * losses[r];
    return (float)(s / ce_denom(w, B, T, normalize));
}

static void ce_bwd_rows(void *p, int64_t r0, int64_t r1, int tid)
{
    ce_ctx *c = p;
    int V = c->V;
    for (int64_t r = r0; r < r1; r++) {
        const float *z = c->logits + (size_t)r * V;
        float *dz = c->dlogits + (size_t)r * V;
        float g = c->coef * (c->w ? c->w[r % c->T] : 1.0f);
        float mx = max_f(z, V);
        float inv = g / sumexp_f(z, V, mx);
        int tgt = c->targets[r];
        if (c->acc)
            for (int j = 0; j < V; j++) dz[j] += expf_poly(z[j] - mx) * inv;
        else
            for (int j = 0; j < V; j++) dz[j] = expf_poly(z[j] - mx) * inv;
        dz[tgt] -= g;
    }
}

void kn_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                              const float *w, int B, int T, int V, bool normalize, float dloss,
                              bool accumulate)
{
    ce_ctx c = {.dlogits = dlogits, .logits = logits, .targets = targets, .w = w, .T = T, .V = V,
                .acc = accumulate};
    c.coef = (float)((double)dloss / ce_denom(w, B, T, normalize));
    kn_parallel_for_dynamic((int64_t)B * T, 16, ce_bwd_rows, &c);
}

/* ---------------------------------------------------------------- fused output layer */

typedef struct {
    float *losses, *z;
    const float *w;
    const int32_t *targets;
    int T, V, r0;
    float coef;    /* dloss · scale / denom */
    bool grad;
} lx_ctx;

/* Rows of one chunk: the loss of each; with a gradient, z becomes d(loss)/d(raw logits) in
 * place (the raw logits being x·wᵀ before the scale). */
static void lx_rows(void *p, int64_t i0, int64_t i1, int tid)
{
    lx_ctx *c = p;
    int V = c->V;
    for (int64_t i = i0; i < i1; i++) {
        int64_t r = c->r0 + i;
        float *z = c->z + (size_t)i * V;
        int tgt = c->targets[r];
        float mx = max_f(z, V);
        float s = sumexp_f(z, V, mx);
        c->losses[r] = logf(s) + mx - z[tgt];
        if (!c->grad) continue;
        float g = c->coef * (c->w ? c->w[r % c->T] : 1.0f);
        float inv = g / s;
        for (int j = 0; j < V; j++) z[j] = expf_poly(z[j] - mx) * inv;
        z[tgt] -= g;
    }
}

int kn_linear_xent_chunk(int N, int V)
{
    int chunk = (1 << 26) / (V > 0 ? V : 1);   /* 256 MiB of logits at most */
    chunk = chunk / 32 * 32;
    if (chunk < 32) chunk = 32;
    return chunk < N ? chunk : N;
}

/* logits[m,V] = x[m,C]·w[V,C]ᵀ split over vocabulary columns: each part packs only its own
 * rows of w (a split over rows would pack all of w, V·C floats, once per part). */
static void logit_cols(void *p, int64_t v0, int64_t v1, int tid)
{
    lin_ctx *c = p;
    kn_sgemm(false, true, c->N, (int)(v1 - v0), c->in, 1.0f, c->x, c->in, c->w + (size_t)v0 * c->in,
             c->in, 0.0f, c->y + v0, c->out);
}

float kn_linear_xent(float *losses, float *dx, float *dw, float *logits, const float *x,
                     const float *w, const int32_t *targets, const float *pw, int B, int T,
                     int C, int V, bool normalize, float scale, float dloss, int chunk)
{
    int N = B * T;
    lx_ctx c = {.losses = losses, .z = logits, .w = pw, .targets = targets, .T = T, .V = V};
    bool grad = dx || dw;
    c.grad = grad;
    c.coef = (float)((double)dloss * scale / ce_denom(pw, B, T, normalize));
    for (int r0 = 0; r0 < N; r0 += chunk) {
        int m = N - r0 < chunk ? N - r0 : chunk;
        kn_blas_single_thread();
        lin_ctx lc = {.y = logits, .x = x + (size_t)r0 * C, .w = w, .N = m, .in = C, .out = V};
        kn_parallel_for_dynamic(V, 64, logit_cols, &lc);
        if (scale != 1.0f)
            for (size_t i = 0; i < (size_t)m * V; i++) logits[i] *= scale;
        c.r0 = r0;
        kn_parallel_for_dynamic(m, 4, lx_rows, &c);
        if (grad)
            kn_linear_backward(dx ? dx + (size_t)r0 * C : NULL, dw, NULL, logits,
                               x + (size_t)r0 * C, w, m, C, V, false);
    }
    double s = 0.0;
    for (int64_t r = 0; r < N; r++) s += (pw ? (double)pw[r % T] : 1.0) * losses[r];
    return (float)(s / ce_denom(pw, B, T, normalize));
}
