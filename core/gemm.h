/* gemm.h — single-precision matrix multiply, row-major:
 *   C[M,N] = alpha·op(A)[M,K]·op(B)[K,N] + beta·C
 * where op(A) is A (stored [M, lda ≥ K]) or, with trans_a, Aᵀ (A stored [K, lda ≥ M]); the
 * same for B. kn_gemm is kiln's own (packed panels, cache blocking, an AVX-512 or AVX2/FMA
 * register tile, a portable C tile otherwise); kn_sgemm runs whichever of kn_gemm and OpenBLAS is
 * selected, so that the two can be compared in one binary.
 *
 * Reproducibility: kn_gemm sums each element over k in a fixed order that depends only on K,
 * never on M, N, the element's position or the leading dimensions, so a row of C is the
 * same whichever block of rows it is computed in. With beta = 0, C is only written (NaN or
 * garbage in it does not propagate). */
#ifndef KN_GEMM_H
#define KN_GEMM_H

#include "kn.h"

#include <stdbool.h>

/* The two implementations behind kn_sgemm. */
typedef enum { KN_GEMM_OPENBLAS, KN_GEMM_KILN } kn_gemm_impl;

/* kiln's single-threaded sgemm (callers split the work across threads themselves). Packing
 * buffers (about 1.2 MiB) are per thread, allocated on a thread's first call (or by
 * kn_gemm_reserve) and kept until the thread ends; without memory for them kn_gemm still
 * computes the same result, with plain loops. */
void kn_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Allocate now the packing buffers of the calling thread and of each of kiln's pool threads
 * (kn_gemm otherwise allocates a thread's on its first call), so that the steps that follow
 * allocate nothing; KN_ERR_NOMEM if memory ran out. */
kn_status kn_gemm_reserve(void);

/* The same contract, through the selected implementation (OpenBLAS's cblas_sgemm, whose own
 * threading the caller controls, or kn_gemm). */
void kn_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Select the implementation by name, "openblas" or "kiln"; anything else is KN_ERR_ARG. The
 * initial choice is the environment variable KILN_GEMM if it holds one of these names,
 * otherwise kiln's where kn_gemm was compiled with its AVX-512 tile and OpenBLAS where not
 * (see docs/guide.md, Benchmarks). Not to be changed while another thread multiplies. */
kn_status kn_gemm_select(const char *name);
/* The selected implementation and its name. */
kn_gemm_impl kn_gemm_selected(void);
const char *kn_gemm_name(kn_gemm_impl impl);

#endif
