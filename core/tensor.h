/* tensor.h — float32 tensors of up to 4 dimensions: owned (aligned memory of their own) or
 * views (strided windows into someone else's memory, never freed through the view). */
#ifndef KN_TENSOR_H
#define KN_TENSOR_H

#include "kn.h"
#include "rng.h"

#define KN_MAX_DIMS 4

typedef struct {
    float *data;
    int ndim;
    int64_t shape[KN_MAX_DIMS];
    int64_t stride[KN_MAX_DIMS];   /* in elements */
    bool owned;
} kn_tensor;

/* A new zeroed contiguous tensor (ndim 1..4, every size >= 1). */
kn_status kn_tensor_new(kn_tensor *t, int ndim, const int64_t *shape);
/* Free an owned tensor's memory; a no-op for views. Leaves t empty. */
void kn_tensor_free(kn_tensor *t);
/* A contiguous view over data. */
kn_tensor kn_tensor_wrap(float *data, int ndim, const int64_t *shape);
int64_t kn_tensor_numel(const kn_tensor *t);
bool kn_tensor_is_contiguous(const kn_tensor *t);
/* View of [start, start+len) along dim (0-based). */
kn_status kn_tensor_narrow(const kn_tensor *t, int dim, int64_t start, int64_t len, kn_tensor *out);
/* Contiguous view with another shape of the same numel. */
kn_status kn_tensor_reshape(const kn_tensor *t, int ndim, const int64_t *shape, kn_tensor *out);
/* Element access by 0-based index vector. */
float *kn_tensor_at(const kn_tensor *t, const int64_t *idx);
/* dst = src elementwise (same shape, any strides). */
kn_status kn_tensor_copy(kn_tensor *dst, const kn_tensor *src);
/* dst += alpha * src (same shape). */
kn_status kn_tensor_add(kn_tensor *dst, const kn_tensor *src, float alpha);
void kn_tensor_fill(kn_tensor *t, float v);
void kn_tensor_scale(kn_tensor *t, float a);
/* Fill with N(mean, std^2) draws from r, in row-major element order. */
void kn_tensor_normal(kn_tensor *t, kn_rng *r, float mean, float std);
/* Sum, and L2 norm, accumulated in double. */
double kn_tensor_sum(const kn_tensor *t);
double kn_tensor_norm(const kn_tensor *t);
/* Index of the first non-finite element in row-major order, or -1. */
int64_t kn_tensor_first_nonfinite(const kn_tensor *t);

#endif
