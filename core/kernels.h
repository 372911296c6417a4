/* kernels.h — the layers of the GPT as forward/backward pairs on raw float pointers.
 * Row-major everywhere; N = B·T rows; linear weights are [out, in] (PyTorch's layout).
 * Backward kernels add into parameter gradients (+=). Input gradients are added too when
 * `accumulate` is true, or overwritten when it is false (so callers need not zero scratch).
 * Every kernel splits its work over kiln's pool (pool.h, fixed chunk boundaries) and runs
 * sgemm (kn_sgemm, gemm.h) single-threaded inside each piece, so results depend only on the
 * thread count (and on which sgemm is selected). */
#ifndef KN_KERNELS_H
#define KN_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Side of the attention's square tiles (queries × keys): tiles above the diagonal are skipped. */
#define KN_ATT_BLOCK 96

/* Embedding: x[N,C] = wte[tokens[b,t]] + wpe[t]. Tokens must already be in range. */
void kn_embedding_forward(float *x, const int32_t *tokens, const float *wte, const float *wpe,
                          int B, int T, int C);
/* dwte[tokens[b,t]] += dx[b,t]; dwpe[t] += dx[b,t] (either may be NULL). */
void kn_embedding_backward(float *dwte, float *dwpe, const float *dx, const int32_t *tokens,
                           int B, int T, int C);

/* Linear: y[N,out] (+)= x[N,in]·w[out,in]ᵀ + b[out] (b may be NULL). */
void kn_linear_forward(float *y, const float *x, const float *w, const float *b,
                       int N, int in, int out, bool accumulate);
/* dx[N,in] (+)= dy[N,out]·w; dw[out,in] += dyᵀ·x; db[out] += column sums of dy.
 * dx, dw, db may each be NULL (skipped). */
void kn_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int N, int in, int out, bool accumulate);
/* The same without BLAS (plain loops, single-threaded): a reference and a fallback. */
void kn_linear_forward_naive(float *y, const float *x, const float *w, const float *b,
                             int N, int in, int out, bool accumulate);
void kn_linear_backward_naive(float *dx, float *dw, float *db, const float *dy, const float *x,
                              const float *w, int N, int in, int out, bool accumulate);

/* LayerNorm over the last dim, eps 1e-5: y[N,C] = (x - mean)·rstd·w + b; caches mean[N],
 * rstd[N] for backward. */
void kn_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int N, int C);
/* dx[N,C] (+)= the input gradient; dw[C] += Σ_rows dy·x̂; db[C] += Σ_rows dy. x is the
 * forward input; dx (may be NULL) must not alias dy or x. */
void kn_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, const float *mean, const float *rstd, int N, int C,
                           bool accumulate);

/* GELU, tanh form: y = x/2·(1 + tanh(√(2/π)(x + 0.044715x³))); n elements. */
void kn_gelu_forward(float *y, const float *x, int64_t n);
/* dx (+)= dy·gelu'(x). With accumulate false, dx may be the same buffer as dy. */
void kn_gelu_backward(float *dx, const float *x, const float *dy, int64_t n, bool accumulate);
/* GELU, exact (erf) form: y = x/2·(1 + erf(x/√2)), torch.nn.GELU()'s default; n elements. */
void kn_gelu_erf_forward(float *y, const float *x, int64_t n);
/* dx (+)= dy·gelu'(x) of the exact form. With accumulate false, dx may be the same buffer as dy. */
void kn_gelu_erf_backward(float *dx, const float *x, const float *dy, int64_t n, bool accumulate);

/* Causal multi-head self-attention over fused qkv[B,T,3C] (q | k | v; head h uses columns
 * h·hs..(h+1)·hs-1 of each, hs = C/NH), scale 1/√hs: y[B,T,C] = softmax(q·kᵀ)·v per head.
 * Fused and tiled (KN_ATT_BLOCK queries × keys, upper triangle skipped): no T×T matrix is
 * kept; lse[B,NH,T] gets each row's log-sum-exp of the scaled scores for the backward.
 * scratch: kn_attention_scratch_floats(T, hs, kn_pool_threads()) floats. */
void kn_attention_forward(float *y, float *lse, float *scratch, const float *qkv, int B, int T,
                          int C, int NH);
/* dqkv[B,T,3C] (+)= gradient through attention given dy[B,T,C], from the forward's inputs
 * qkv, output y and lse (probabilities are recomputed tile by tile). */
void kn_attention_backward(float *dqkv, float *scratch, const float *dy, const float *qkv,
                           const float *y, const float *lse, int B, int T, int C, int NH,
                           bool accumulate);
/* Per-thread working memory of the fused attention: O(T·head_size), never O(T²). */
size_t kn_attention_scratch_floats(int T, int head_size, int nthreads);

/* Softmax cross-entropy on logits[N,V] (N = B·T) against targets[N] (in [0,V)).
 * losses[N] = CE per token. Returns Σ_b Σ_t w[t]·CE[b,t] / denom, denom = B·T, or with
 * normalize B·Σw (= B·T·mean(w)); w (length T) NULL means all ones. Summed in double, in
 * row order. */
float kn_crossentropy_forward(float *losses, const float *logits, const int32_t *targets,
                              const float *w, int B, int T, int V, bool normalize);
/* dlogits (+)= dloss · w[t]/denom · (softmax(logits) - onehot(target)). */
void kn_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                              const float *w, int B, int T, int V, bool normalize, float dloss,
                              bool accumulate);

/* The fused output layer (linear + softmax cross-entropy), a chunk of rows at a time so that
 * only chunk·V logits ever exist: logits = scale·x[N,C]·w[V,C]ᵀ, losses[N] and the return
 * value as kn_crossentropy_forward. With dx and/or dw (either may be NULL; both NULL is an
 * evaluation), also dx[N,C] = dloss·d(loss)/dx (overwritten) and dw[V,C] += dloss·d(loss)/dw.
 * logits: scratch of chunk·V floats. */
float kn_linear_xent(float *losses, float *dx, float *dw, float *logits, const float *x,
                     const float *w, const int32_t *targets, const float *pw, int B, int T,
                     int C, int V, bool normalize, float scale, float dloss, int chunk);
/* The chunk (rows) kiln uses for N rows and V classes: at most 256 MiB of logits. */
int kn_linear_xent_chunk(int N, int V);

/* exp(x) in float, accurate to ~2 ulp over the float range, branch-free so loops using it
 * vectorise (libm's expf is a call per element). Exposed for tests. */
float kn_expf(float x);

#endif
