/* tensor.c — float32 strided tensors of up to KN_MAX_DIMS dimensions.
 *
 * Every elementwise operation walks its operands in row-major index order, whatever their
 * strides, so results (and the order of random draws) never depend on memory layout. A
 * tensor with ndim 0 is "empty" (freshly zeroed or freed): it has no elements. */
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reference counts are plain ints: core objects are created, shared and released by one
 * thread (the worker pool only ever borrows memory for the length of a call). */
struct kn_storage {
    float *data;
    size_t n;
    int refs;
    void *owner;                     /* NULL: data is ours (kn_alloc) */
    void (*release_owner)(void *owner);
};

kn_status kn_storage_new(kn_storage **out, size_t n)
{
    if (!out) return kn_fail(KN_ERR_ARG, "storage_new: output is NULL");
    *out = NULL;
    if (n < 1) return kn_fail(KN_ERR_ARG, "storage_new: %zu elements, expected >= 1", n);
    if (n > SIZE_MAX / sizeof(float))
        return kn_fail(KN_ERR_NOMEM, "storage_new: %zu elements do not fit in memory", n);
    kn_storage *s = calloc(1, sizeof *s);
    if (!s) return kn_fail(KN_ERR_NOMEM, "storage_new: out of memory");
    s->data = kn_alloc(n * sizeof(float));
    if (!s->data) {
        free(s);
        return KN_ERR_NOMEM;
    }
    s->n = n;
    s->refs = 1;
    *out = s;
    return KN_OK;
}

kn_status kn_storage_borrow(kn_storage **out, float *data, size_t n, void *owner,
                            void (*release)(void *owner))
{
    kn_storage *s = out && data && n >= 1 ? calloc(1, sizeof *s) : NULL;
    if (!s) {
        if (release) release(owner);   /* the stolen reference must not leak */
        if (out) *out = NULL;
        if (!out || !data || n < 1)
            return kn_fail(KN_ERR_ARG, "storage_borrow: NULL output or data, or no elements");
        return kn_fail(KN_ERR_NOMEM, "storage_borrow: out of memory");
    }
    s->data = data;
    s->n = n;
    s->refs = 1;
    s->owner = owner;
    s->release_owner = release;
    *out = s;
    return KN_OK;
}

kn_storage *kn_storage_retain(kn_storage *s)
{
    if (s) s->refs++;
    return s;
}

void kn_storage_release(kn_storage *s)
{
    if (!s || --s->refs > 0) return;
    if (s->release_owner) s->release_owner(s->owner);
    else if (!s->owner) kn_free(s->data);
    free(s);
}

float *kn_storage_data(const kn_storage *s) { return s ? s->data : NULL; }
size_t kn_storage_numel(const kn_storage *s) { return s ? s->n : 0; }
int kn_storage_refs(const kn_storage *s) { return s ? s->refs : 0; }

/* Shapes as "(2,3,4)" for messages. */
static const char *shape_str(const kn_tensor *t, char *buf, size_t n)
{
    size_t used = 0;
    used += (size_t)snprintf(buf + used, n - used, "(");
    for (int i = 0; i < t->ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (used < n) snprintf(buf + used, n - used, ")");
    return buf;
}

static kn_status check_shape(const char *what, int ndim, const int64_t *shape)
{
    if (ndim < 1 || ndim > KN_MAX_DIMS)
        return kn_fail(KN_ERR_ARG, "%s: ndim %d, expected 1..%d", what, ndim, KN_MAX_DIMS);
    if (!shape) return kn_fail(KN_ERR_ARG, "%s: shape is NULL", what);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1)
            return kn_fail(KN_ERR_ARG, "%s: size %lld of dim %d, expected >= 1", what,
                           (long long)shape[i], i);
        /* float elements, addressed by int64 and sized by size_t: stay far below both. */
        if (shape[i] > (INT64_MAX / 8) / n)
            return kn_fail(KN_ERR_ARG, "%s: shape too large (numel overflows)", what);
        n *= shape[i];
    }
    return KN_OK;
}

static void set_contiguous(kn_tensor *t, float *data, int ndim, const int64_t *shape)
{
    memset(t, 0, sizeof *t);
    t->data = data;
    t->ndim = ndim;
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->stride[i] = s;
        s *= shape[i];
    }
}

kn_status kn_tensor_new(kn_tensor *t, int ndim, const int64_t *shape)
{
    if (!t) return kn_fail(KN_ERR_ARG, "tensor_new: output is NULL");
    memset(t, 0, sizeof *t);
    kn_status st = check_shape("tensor_new", ndim, shape);
    if (st) return st;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    if ((uint64_t)n > SIZE_MAX / sizeof(float))
        return kn_fail(KN_ERR_NOMEM, "tensor_new: %lld elements do not fit in memory", (long long)n);
    kn_storage *s;
    if ((st = kn_storage_new(&s, (size_t)n)) != KN_OK) return st;
    set_contiguous(t, s->data, ndim, shape);
    t->storage = s;
    return KN_OK;
}

void kn_tensor_free(kn_tensor *t)
{
    if (!t) return;
    kn_storage_release(t->storage);
    memset(t, 0, sizeof *t);
}

kn_status kn_tensor_on(kn_tensor *t, kn_storage *s, size_t offset, int ndim, const int64_t *shape)
{
    if (!t || !s) return kn_fail(KN_ERR_ARG, "tensor_on: tensor or storage is NULL");
    memset(t, 0, sizeof *t);
    kn_status st = check_shape("tensor_on", ndim, shape);
    if (st) return st;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    if (offset > s->n || (uint64_t)n > s->n - offset)
        return kn_fail(KN_ERR_ARG, "tensor_on: %lld elements at offset %zu exceed the storage's %zu",
                       (long long)n, offset, s->n);
    set_contiguous(t, s->data + offset, ndim, shape);
    t->storage = kn_storage_retain(s);
    t->view = true;
    return KN_OK;
}

kn_tensor kn_tensor_wrap(float *data, int ndim, const int64_t *shape)
{
    kn_tensor t;
    memset(&t, 0, sizeof t);
    if (ndim < 1 || ndim > KN_MAX_DIMS || !shape) return t;  /* empty: nothing to wrap */
    set_contiguous(&t, data, ndim, shape);
    t.view = true;
    return t;
}

int64_t kn_tensor_numel(const kn_tensor *t)
{
    if (!t || t->ndim < 1) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

bool kn_tensor_is_contiguous(const kn_tensor *t)
{
    if (!t || t->ndim < 1) return true;
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        /* A dim of size 1 can carry any stride without changing the layout. */
        if (t->shape[i] != 1 && t->stride[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

kn_status kn_tensor_narrow(const kn_tensor *t, int dim, int64_t start, int64_t len, kn_tensor *out)
{
    if (!t || !out) return kn_fail(KN_ERR_ARG, "narrow: tensor or output is NULL");
    if (t->ndim < 1) return kn_fail(KN_ERR_ARG, "narrow: tensor is empty");
    if (dim < 0 || dim >= t->ndim)
        return kn_fail(KN_ERR_ARG, "narrow: dim %d out of range for a %d-d tensor", dim, t->ndim);
    if (start < 0 || len < 1 || start > t->shape[dim] || len > t->shape[dim] - start)
        return kn_fail(KN_ERR_ARG, "narrow: dim %d start %lld len %lld exceeds size %lld "
                       "(expected start >= 0, len >= 1, start+len <= size)", dim,
                       (long long)start, (long long)len, (long long)t->shape[dim]);
    kn_tensor v = *t;
    v.data = t->data + start * t->stride[dim];
    v.shape[dim] = len;
    v.view = true;
    if (out != t) kn_storage_retain(t->storage);   /* into itself: t's reference carries over */
    *out = v;
    return KN_OK;
}

kn_status kn_tensor_reshape(const kn_tensor *t, int ndim, const int64_t *shape, kn_tensor *out)
{
    if (!t || !out) return kn_fail(KN_ERR_ARG, "reshape: tensor or output is NULL");
    if (t->ndim < 1) return kn_fail(KN_ERR_ARG, "reshape: tensor is empty");
    kn_status st = check_shape("reshape", ndim, shape);
    if (st) return st;
    char a[96];
    if (!kn_tensor_is_contiguous(t))
        return kn_fail(KN_ERR_ARG, "reshape: tensor %s is not contiguous (copy it first)",
                       shape_str(t, a, sizeof a));
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    if (n != kn_tensor_numel(t)) {
        kn_tensor tmp;
        memset(&tmp, 0, sizeof tmp);
        tmp.ndim = ndim;
        memcpy(tmp.shape, shape, (size_t)ndim * sizeof *shape);
        char b[96];
        return kn_fail(KN_ERR_ARG, "reshape: %s has %lld elements, new shape %s has %lld",
                       shape_str(t, a, sizeof a), (long long)kn_tensor_numel(t),
                       shape_str(&tmp, b, sizeof b), (long long)n);
    }
    kn_storage *s = t->storage;   /* before out is cleared: out may be t */
    if (out != t) kn_storage_retain(s);   /* into itself: t's reference carries over */
    set_contiguous(out, t->data, ndim, shape);
    out->view = true;
    out->storage = s;
    return KN_OK;
}

float *kn_tensor_at(const kn_tensor *t, const int64_t *idx)
{
    if (!t || !idx || t->ndim < 1) {
        kn_fail(KN_ERR_ARG, "at: empty tensor or NULL index");
        return NULL;
    }
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (idx[i] < 0 || idx[i] >= t->shape[i]) {
            kn_fail(KN_ERR_ARG, "at: index %lld out of range for dim %d of size %lld",
                    (long long)idx[i], i, (long long)t->shape[i]);
            return NULL;
        }
        off += idx[i] * t->stride[i];
    }
    return t->data + off;
}

/* The walk: pad to 4 dims (leading size-1 dims) and loop, innermost dim with its stride. */
typedef struct { int64_t n[4], s[4]; } walk4;

static void walk_of(const kn_tensor *t, walk4 *w)
{
    int pad = KN_MAX_DIMS - t->ndim;
    for (int i = 0; i < KN_MAX_DIMS; i++) {
        if (i < pad) { w->n[i] = 1; w->s[i] = 0; }
        else { w->n[i] = t->shape[i - pad]; w->s[i] = t->stride[i - pad]; }
    }
}

#define WALK1(t, BODY) do { \
    walk4 w_; walk_of((t), &w_); float *base_ = (t)->data; \
    for (int64_t i0 = 0; i0 < w_.n[0]; i0++) \
    for (int64_t i1 = 0; i1 < w_.n[1]; i1++) \
    for (int64_t i2 = 0; i2 < w_.n[2]; i2++) { \
        float *row_ = base_ + i0 * w_.s[0] + i1 * w_.s[1] + i2 * w_.s[2]; \
        int64_t rs_ = w_.s[3]; \
        for (int64_t i3 = 0; i3 < w_.n[3]; i3++) { float *p = row_ + i3 * rs_; BODY; } \
    } \
} while (0)

#define WALK2(d, sr, BODY) do { \
    walk4 wd_, ws_; walk_of((d), &wd_); walk_of((sr), &ws_); \
    float *bd_ = (d)->data; const float *bs_ = (sr)->data; \
    for (int64_t i0 = 0; i0 < wd_.n[0]; i0++) \
    for (int64_t i1 = 0; i1 < wd_.n[1]; i1++) \
    for (int64_t i2 = 0; i2 < wd_.n[2]; i2++) { \
        float *rd_ = bd_ + i0 * wd_.s[0] + i1 * wd_.s[1] + i2 * wd_.s[2]; \
        const float *rs_ = bs_ + i0 * ws_.s[0] + i1 * ws_.s[1] + i2 * ws_.s[2]; \
        int64_t sd_ = wd_.s[3], ss_ = ws_.s[3]; \
        for (int64_t i3 = 0; i3 < wd_.n[3]; i3++) { \
            float *p = rd_ + i3 * sd_; const float *q = rs_ + i3 * ss_; BODY; \
        } \
    } \
} while (0)

static kn_status check_same(const char *what, const kn_tensor *dst, const kn_tensor *src)
{
    if (!dst || !src) return kn_fail(KN_ERR_ARG, "%s: tensor is NULL", what);
    bool same = dst->ndim == src->ndim && dst->ndim >= 1;
    for (int i = 0; same && i < dst->ndim; i++) same = dst->shape[i] == src->shape[i];
    if (!same) {
        char a[96], b[96];
        return kn_fail(KN_ERR_ARG, "%s: shape mismatch: destination %s, source %s (expected equal)",
                       what, shape_str(dst, a, sizeof a), shape_str(src, b, sizeof b));
    }
    return KN_OK;
}

kn_status kn_tensor_copy(kn_tensor *dst, const kn_tensor *src)
{
    kn_status st = check_same("copy", dst, src);
    if (st) return st;
    if (kn_tensor_is_contiguous(dst) && kn_tensor_is_contiguous(src)) {
        memmove(dst->data, src->data, (size_t)kn_tensor_numel(dst) * sizeof(float));
        return KN_OK;
    }
    WALK2(dst, src, *p = *q);
    return KN_OK;
}

kn_status kn_tensor_add(kn_tensor *dst, const kn_tensor *src, float alpha)
{
    kn_status st = check_same("add", dst, src);
    if (st) return st;
    WALK2(dst, src, *p += alpha * *q);
    return KN_OK;
}

void kn_tensor_fill(kn_tensor *t, float v)
{
    if (!t || t->ndim < 1) return;
    WALK1(t, *p = v);
}

void kn_tensor_scale(kn_tensor *t, float a)
{
    if (!t || t->ndim < 1) return;
    WALK1(t, *p *= a);
}

void kn_tensor_normal(kn_tensor *t, kn_rng *r, float mean, float std)
{
    if (!t || t->ndim < 1 || !r) return;
    /* One draw per element in row-major order, so the same seed gives the same values
     * for a contiguous tensor and for a strided view of the same shape. */
    WALK1(t, *p = (float)((double)mean + (double)std * kn_rng_normal(r)));
}

double kn_tensor_sum(const kn_tensor *t)
{
    double s = 0.0;
    if (!t || t->ndim < 1) return s;
    WALK1(t, s += (double)*p);
    return s;
}

double kn_tensor_norm(const kn_tensor *t)
{
    double s = 0.0;
    if (!t || t->ndim < 1) return s;
    WALK1(t, s += (double)*p * (double)*p);
    return sqrt(s);
}

int64_t kn_tensor_first_nonfinite(const kn_tensor *t)
{
    if (!t || t->ndim < 1) return -1;
    int64_t k = 0, found = -1;
    /* The walk cannot break out of its nest early; a goto-free scan that stops testing
     * once found is clearer than a second iterator, and the common case scans it all. */
    WALK1(t, { if (found < 0 && !isfinite(*p)) found = k; k++; });
    return found;
}
