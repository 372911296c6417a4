/* tensor.h — float32 tensors of up to 4 dimensions over a reference-counted storage.
 *
 * Ownership: a storage is a block of floats with a reference count. Every tensor that has a
 * storage holds one reference to it, whether it created the memory (kn_tensor_new) or is a
 * view of it (narrow, reshape, kn_tensor_on): the memory goes when the last tensor referring
 * to it is freed, so a view never outlives its memory. A storage may also borrow memory that
 * belongs to another object (a model's parameters, an optimizer's moments); it then holds a
 * reference to that object and releases it with its last reference. kn_tensor_wrap makes a
 * tensor without a storage (borrowed memory the caller keeps alive, as kernels' scratch). */
#ifndef KN_TENSOR_H
#define KN_TENSOR_H

#include "kn.h"
#include "rng.h"

#define KN_MAX_DIMS 4

typedef struct kn_storage kn_storage;

typedef struct {
    float *data;
    int ndim;
    int64_t shape[KN_MAX_DIMS];
    int64_t stride[KN_MAX_DIMS];   /* in elements */
    kn_storage *storage;           /* the one reference this tensor holds, or NULL (wrap) */
    bool view;                     /* made by narrow/reshape/on/wrap rather than by new */
} kn_tensor;

/* A storage of n >= 1 zeroed, 64-byte aligned floats, with one reference (the caller's). */
kn_status kn_storage_new(kn_storage **out, size_t n);
/* A storage over data[0..n) that belongs to owner: it steals one reference to owner, and
 * calls release(owner) with its own last reference, or at once if this call fails. */
kn_status kn_storage_borrow(kn_storage **out, float *data, size_t n, void *owner,
                            void (*release)(void *owner));
/* Add a reference (returns s); drop one (the last frees the memory or releases its owner). */
kn_storage *kn_storage_retain(kn_storage *s);
void kn_storage_release(kn_storage *s);
float *kn_storage_data(const kn_storage *s);
size_t kn_storage_numel(const kn_storage *s);
int kn_storage_refs(const kn_storage *s);

/* A new zeroed contiguous tensor (ndim 1..4, every size >= 1) on a storage of its own. */
kn_status kn_tensor_new(kn_tensor *t, int ndim, const int64_t *shape);
/* Drop t's reference to its storage (the memory goes with the last one). Leaves t empty. */
void kn_tensor_free(kn_tensor *t);
/* A contiguous view of s starting at element offset; retains s. Fails unless it fits. */
kn_status kn_tensor_on(kn_tensor *t, kn_storage *s, size_t offset, int ndim, const int64_t *shape);
/* A contiguous tensor over data without a storage: the caller keeps data alive. */
kn_tensor kn_tensor_wrap(float *data, int ndim, const int64_t *shape);
int64_t kn_tensor_numel(const kn_tensor *t);
bool kn_tensor_is_contiguous(const kn_tensor *t);
/* View of [start, start+len) along dim (0-based). The view (out) holds its own reference to
 * t's storage, so free it; out must hold none before, or be t itself (t becomes the view). */
kn_status kn_tensor_narrow(const kn_tensor *t, int dim, int64_t start, int64_t len, kn_tensor *out);
/* Contiguous view with another shape of the same numel; references as narrow. */
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
