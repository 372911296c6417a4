/* kernels.c — GPT layers on raw pointers. Matmuls go to cblas_sgemm (single-threaded per
 * call; kiln's pool splits rows/heads across threads), elementwise loops are written so
 * that gcc vectorises them without -ffast-math: reductions keep 8 independent partial sums
 * (a fixed order, so results stay reproducible), exp is a branch-free polynomial. */
#include "kernels.h"
#include "pool.h"

#include <cblas.h>
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
    int N, in, out, nparts;
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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, c->out, c->in, 1.0f,
                c->x + (size_t)r0 * c->in, c->in, c->w, c->in, c->acc ? 1.0f : 0.0f, y, c->out);
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

/* Part i of nparts computes rows chunk i of dx and output-rows chunk i of dw/db, so a
 * backward is a single dispatch. */
static void lin_bwd_part(void *p, int64_t i0, int64_t i1, int tid)
{
    lin_ctx *c = p;
    for (int64_t i = i0; i < i1; i++) {
        int64_t b, e;
        if (c->dx) {
            part_range(c->N, 32, c->nparts, (int)i, &b, &e);
            if (e > b)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(e - b), c->in, c->out,
                            1.0f, c->dy + (size_t)b * c->out, c->out, c->w, c->in,
                            c->acc ? 1.0f : 0.0f, c->dx + (size_t)b * c->in, c->in);
        }
        part_range(c->out, 16, c->nparts, (int)i, &b, &e);
        if (e <= b) continue;
        if (c->dw)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(e - b), c->in, c->N, 1.0f,
                        c->dy + b, c->out, c->x, c->in, 1.0f, c->dw + (size_t)b * c->in, c->in);
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

static void ln_bwd_cols(void *p, int64_t j0, int64_t j1, int tid)
{
    ln_ctx *c = p;
    int C = c->C;
    for (int64_t r = 0; r < c->N; r++) {
        const float *x = c->x + (size_t)r * C, *dy = c->dy + (size_t)r * C;
        float m = c->cmean[r], s = c->crstd[r];
        for (int64_t j = j0; j < j1; j++) {
            c->dw[j] += dy[j] * ((x[j] - m) * s);
            c->db[j] += dy[j];
        }
    }
}

void kn_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, const float *mean, const float *rstd, int N, int C,
                           bool accumulate)
{
    ln_ctx c = {.dx = dx, .dw = dw, .db = db, .dy = dy, .x = x, .w = w, .cmean = mean,
                .crstd = rstd, .N = N, .C = C, .acc = accumulate};
    /* dx must not alias dy or x: the row pass reads both while writing dx. */
    kn_parallel_for_dynamic(C, 16, ln_bwd_cols, &c);
    if (dx) kn_parallel_for_dynamic(N, 16, ln_bwd_rows, &c);
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

typedef struct {
    float *y, *att, *dqkv, *scratch;
    const float *qkv, *dy, *catt;
    int B, T, C, NH;
    bool acc;
} att_ctx;

/* Per (b, h): for each block of query rows [i0, i1), scores against keys [0, i1) only. */
static void att_fwd_heads(void *p, int64_t k0, int64_t k1, int tid)
{
    att_ctx *c = p;
    int T = c->T, C = c->C, NH = c->NH, hs = C / NH, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    for (int64_t k = k0; k < k1; k++) {
        int b = (int)(k / NH), h = (int)(k % NH);
        const float *q = c->qkv + (size_t)b * T * ld + (size_t)h * hs;
        const float *kk = q + C, *v = q + 2 * C;
        float *att = c->att + (size_t)k * T * T;
        float *y = c->y + (size_t)b * T * C + (size_t)h * hs;
        for (int i0 = 0; i0 < T; i0 += KN_ATT_BLOCK) {
            int i1 = i0 + KN_ATT_BLOCK < T ? i0 + KN_ATT_BLOCK : T, m = i1 - i0;
            float *S = att + (size_t)i0 * T;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, i1, hs, scale,
                        q + (size_t)i0 * ld, ld, kk, ld, 0.0f, S, T);
            for (int r = 0; r < m; r++) {
                float *s = S + (size_t)r * T;
                int n = i0 + r + 1;
                float mx = max_f(s, n);
                for (int j = 0; j < n; j++) s[j] = expf_poly(s[j] - mx);
                float inv = 1.0f / sum_f(s, n);
                for (int j = 0; j < n; j++) s[j] *= inv;
                for (int j = n; j < i1; j++) s[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hs, i1, 1.0f, S, T, v, ld,
                        0.0f, y + (size_t)i0 * C, C);
        }
    }
}

void kn_attention_forward(float *y, float *att, const float *qkv, int B, int T, int C, int NH)
{
    kn_blas_single_thread();
    att_ctx c = {.y = y, .att = att, .qkv = qkv, .B = B, .T = T, .C = C, .NH = NH};
    kn_parallel_for_dynamic((int64_t)B * NH, 1, att_fwd_heads, &c);
}

size_t kn_attention_scratch_floats(int T, int nthreads)
{
    return (size_t)(nthreads < 1 ? 1 : nthreads) * KN_ATT_BLOCK * (size_t)T;
}

static void att_bwd_heads(void *p, int64_t k0, int64_t k1, int tid)
{
    att_ctx *c = p;
    int T = c->T, C = c->C, NH = c->NH, hs = C / NH, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    float *dP = c->scratch + (size_t)tid * KN_ATT_BLOCK * T;
    for (int64_t k = k0; k < k1; k++) {
        int b = (int)(k / NH), h = (int)(k % NH);
        const float *q = c->qkv + (size_t)b * T * ld + (size_t)h * hs;
        const float *kk = q + C, *v = q + 2 * C;
        float *dq = c->dqkv + (size_t)b * T * ld + (size_t)h * hs, *dk = dq + C, *dv = dq + 2 * C;
        const float *att = c->catt + (size_t)k * T * T;
        const float *dy = c->dy + (size_t)b * T * C + (size_t)h * hs;
        if (!c->acc)
            for (int t = 0; t < T; t++) {
                memset(dq + (size_t)t * ld, 0, sizeof(float) * hs);
                memset(dk + (size_t)t * ld, 0, sizeof(float) * hs);
                memset(dv + (size_t)t * ld, 0, sizeof(float) * hs);
            }
        for (int i0 = 0; i0 < T; i0 += KN_ATT_BLOCK) {
            int i1 = i0 + KN_ATT_BLOCK < T ? i0 + KN_ATT_BLOCK : T, m = i1 - i0;
            const float *P = att + (size_t)i0 * T;
            const float *dO = dy + (size_t)i0 * C;
            /* dV[0:i1] += Pᵀ·dO;  dP = dO·V[0:i1]ᵀ */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, hs, m, 1.0f, P, T, dO, C,
                        1.0f, dv, ld);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, i1, hs, 1.0f, dO, C, v, ld,
                        0.0f, dP, T);
            /* dS = scale · P ⊙ (dP - Σ_j P·dP), in place in dP; zero above the diagonal. */
            for (int r = 0; r < m; r++) {
                const float *pr = P + (size_t)r * T;
                float *g = dP + (size_t)r * T;
                int n = i0 + r + 1;
                float d = dot_f(pr, g, n);
                for (int j = 0; j < n; j++) g[j] = scale * pr[j] * (g[j] - d);
                for (int j = n; j < i1; j++) g[j] = 0.0f;
            }
            /* dQ[i0:i1] += dS·K[0:i1];  dK[0:i1] += dSᵀ·Q[i0:i1] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hs, i1, 1.0f, dP, T, kk, ld,
                        1.0f, dq + (size_t)i0 * ld, ld);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, hs, m, 1.0f, dP, T,
                        q + (size_t)i0 * ld, ld, 1.0f, dk, ld);
        }
    }
}

void kn_attention_backward(float *dqkv, float *scratch, const float *dy, const float *qkv,
                           const float *att, int B, int T, int C, int NH, bool accumulate)
{
    kn_blas_single_thread();
    att_ctx c = {.dqkv = dqkv, .scratch = scratch, .dy = dy, .qkv = qkv, .catt = att,
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

/* ---------------------------------------------------------------- residual */

void kn_residual_forward(float *y, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void kn_residual_backward(float *da, float *db, const float *dy, int64_t n)
{
    for (int64_t i = 0; i < n; i++) { da[i] += dy[i]; db[i] += dy[i]; }
}
