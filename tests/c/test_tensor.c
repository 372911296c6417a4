/* test_tensor.c — owned tensors and views, narrow/reshape/at, strided copy and add,
 * fill/scale, normal init order, double-accumulated reductions, non-finite detection. */
#include "check.h"
#include "tensor.h"

#include <math.h>
#include <stdint.h>

static void fill_iota(kn_tensor *t)
{
    int64_t n = kn_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) t->data[i] = (float)i;   /* contiguous only */
}

int main(void)
{
    /* The harness itself: a failing condition's side effect must not run a second time. */
    int calls = 0;
    CHECK(++calls == 1, "CHECK evaluates its condition");
    CHECK(calls == 1, "  ... exactly once (calls = %d)", calls);

    /* --- new / free / wrap ----------------------------------------------------------- */
    kn_tensor t;
    int64_t s234[3] = {2, 3, 4};
    CHECK_OK(kn_tensor_new(&t, 3, s234), "new (2,3,4)");
    CHECK(!t.view && t.storage && t.ndim == 3 && kn_tensor_numel(&t) == 24, "owned, 3-d, 24 elements");
    CHECK(t.stride[0] == 12 && t.stride[1] == 4 && t.stride[2] == 1, "row-major strides");
    CHECK(((uintptr_t)t.data & 63) == 0, "data 64-byte aligned");
    CHECK(kn_tensor_sum(&t) == 0.0 && kn_tensor_norm(&t) == 0.0, "zeroed");
    CHECK(kn_tensor_is_contiguous(&t), "contiguous");
    kn_tensor_free(&t);
    CHECK(t.data == NULL && t.ndim == 0 && kn_tensor_numel(&t) == 0, "free leaves it empty");
    kn_tensor_free(&t);
    CHECK(t.data == NULL && t.ndim == 0 && !t.storage && kn_tensor_numel(&t) == 0,
          "free twice is harmless: still empty");

    int64_t bad0[2] = {2, 0}, big[4] = {INT64_MAX / 2, 4, 4, 4};
    CHECK_FAILS(kn_tensor_new(&t, 0, s234), "ndim 0, expected 1..4", "new rejects ndim 0");
    CHECK_FAILS(kn_tensor_new(&t, 5, s234), "ndim 5", "new rejects ndim 5");
    CHECK_FAILS(kn_tensor_new(&t, 2, bad0), "size 0 of dim 1, expected >= 1", "new rejects size 0");
    CHECK_FAILS(kn_tensor_new(&t, 4, big), "overflows", "new rejects an overflowing numel");

    float buf[24];
    kn_tensor w = kn_tensor_wrap(buf, 3, s234);
    CHECK(w.view && !w.storage && w.data == buf && kn_tensor_numel(&w) == 24, "wrap is a view over the buffer");
    fill_iota(&w);
    kn_tensor_free(&w);   /* a no-op on the memory for views */
    CHECK(buf[23] == 23.0f, "freeing a view leaves its memory alone");

    /* --- narrow / at / reshape ------------------------------------------------------- */
    w = kn_tensor_wrap(buf, 3, s234);
    kn_tensor v;
    CHECK_OK(kn_tensor_narrow(&w, 2, 1, 2, &v), "narrow dim 2 [1,3)");
    CHECK(v.shape[2] == 2 && v.stride[2] == 1 && v.view && !kn_tensor_is_contiguous(&v),
          "narrowed view: shape, stride, not contiguous");
    int64_t idx[3] = {1, 2, 1};
    CHECK(*kn_tensor_at(&v, idx) == 1 * 12 + 2 * 4 + 2, "at() follows strides (value 22)");
    idx[2] = 2;
    CHECK(kn_tensor_at(&v, idx) == NULL && strstr(kn_errmsg(), "index 2 out of range for dim 2 of size 2"),
          "at() out of range is NULL with a message");
    CHECK_FAILS(kn_tensor_narrow(&w, 2, 1, 4, &v), "narrow: dim 2 start 1 len 4 exceeds size 4",
                "narrow past the end names dim, start, len, size");
    CHECK_FAILS(kn_tensor_narrow(&w, 3, 0, 1, &v), "dim 3 out of range for a 3-d tensor", "narrow bad dim");
    CHECK_FAILS(kn_tensor_narrow(&w, 0, -1, 1, &v), "start -1", "narrow negative start");
    CHECK_FAILS(kn_tensor_narrow(&w, 0, 0, 0, &v), "len 0", "narrow zero length");
    kn_tensor rows;
    CHECK_OK(kn_tensor_narrow(&w, 0, 1, 1, &rows), "narrow dim 0 (contiguous slab)");
    CHECK(kn_tensor_is_contiguous(&rows) && rows.data == buf + 12, "a leading-dim slab is contiguous");

    kn_tensor r;
    int64_t s64[2] = {6, 4}, s7[1] = {7};
    CHECK_OK(kn_tensor_reshape(&w, 2, s64, &r), "reshape (2,3,4) -> (6,4)");
    int64_t i2[2] = {5, 3};
    CHECK(*kn_tensor_at(&r, i2) == 23.0f && r.data == buf, "reshape is a view of the same data");
    CHECK_FAILS(kn_tensor_reshape(&w, 1, s7, &r), "has 24 elements, new shape (7) has 7", "reshape numel mismatch");
    CHECK_OK(kn_tensor_narrow(&w, 2, 1, 2, &v), "narrow again");
    CHECK_FAILS(kn_tensor_reshape(&v, 1, s7, &r), "not contiguous", "reshape of a strided view refuses");

    /* --- copy / add with strides ----------------------------------------------------- */
    /* src = columns 1..2 of a (3,4) matrix; dst = a transposed-stride view of a (2,3) one. */
    float a[12], bbuf[6];
    int64_t s34[2] = {3, 4}, s32[2] = {3, 2};
    kn_tensor A = kn_tensor_wrap(a, 2, s34);
    fill_iota(&A);
    kn_tensor As;
    CHECK_OK(kn_tensor_narrow(&A, 1, 1, 2, &As), "narrow columns 1..2");
    kn_tensor Bt;   /* shape (3,2) with strides (1,3): the transpose of a (2,3) buffer */
    memset(&Bt, 0, sizeof Bt);
    Bt.data = bbuf; Bt.ndim = 2; Bt.shape[0] = 3; Bt.shape[1] = 2; Bt.stride[0] = 1; Bt.stride[1] = 3;
    CHECK_OK(kn_tensor_copy(&Bt, &As), "copy between two strided views");
    int ok = 1;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) ok &= bbuf[j * 3 + i] == a[i * 4 + 1 + j];
    CHECK(ok, "strided copy puts every element in place");
    CHECK_OK(kn_tensor_add(&Bt, &As, -2.0f), "add alpha=-2 strided");
    ok = 1;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) ok &= bbuf[j * 3 + i] == -a[i * 4 + 1 + j];
    CHECK(ok, "strided add: x + (-2)x = -x");
    kn_tensor C32 = kn_tensor_wrap(bbuf, 2, s32);
    CHECK_FAILS(kn_tensor_copy(&C32, &A), "shape mismatch: destination (3,2), source (3,4)", "copy shape mismatch");
    CHECK_FAILS(kn_tensor_add(&C32, &A, 1.0f), "add: shape mismatch", "add shape mismatch");

    /* --- fill / scale / reductions on views ------------------------------------------ */
    fill_iota(&A);
    kn_tensor_fill(&As, 2.0f);
    ok = 1;
    for (int i = 0; i < 12; i++) ok &= a[i] == ((i % 4 == 1 || i % 4 == 2) ? 2.0f : (float)i);
    CHECK(ok, "fill touches exactly the view's elements");
    kn_tensor_scale(&As, -1.5f);
    CHECK(kn_tensor_sum(&As) == -18.0, "scale then sum over the view (6 x -3)");
    CHECK(fabs(kn_tensor_norm(&As) - sqrt(6 * 9.0)) < 1e-12, "norm over the view");

    /* sum in double: 1e8 + many ones would be lost in float accumulation */
    kn_tensor big1;
    int64_t n1[1] = {1 << 20};
    CHECK_OK(kn_tensor_new(&big1, 1, n1), "new 1M");
    kn_tensor_fill(&big1, 1.0f);
    big1.data[0] = 1e8f;
    CHECK(kn_tensor_sum(&big1) == 1e8 + (double)((1 << 20) - 1), "sum accumulates in double");
    kn_tensor_fill(&big1, 3.0f);
    CHECK(kn_tensor_norm(&big1) == 3.0 * 1024.0, "norm of 1M threes is 3*sqrt(1M)");

    /* --- first_nonfinite ------------------------------------------------------------- */
    CHECK(kn_tensor_first_nonfinite(&big1) == -1, "no non-finite: -1");
    big1.data[777] = NAN;
    big1.data[900] = INFINITY;
    CHECK(kn_tensor_first_nonfinite(&big1) == 777, "first NaN found at 777");
    big1.data[777] = 0.0f;
    CHECK(kn_tensor_first_nonfinite(&big1) == 900, "then Inf at 900");
    fill_iota(&A);
    a[6] = -INFINITY;   /* (1,2) of A = (1,1) of As = row-major index 3 of the view */
    CHECK(kn_tensor_first_nonfinite(&As) == 3, "index is row-major within a strided view");
    kn_tensor_free(&big1);

    /* --- normal: row-major draw order, same for a view and a contiguous tensor -------- */
    kn_rng r1, r2;
    kn_rng_seed(&r1, 42);
    kn_rng_seed(&r2, 42);
    kn_tensor c;
    CHECK_OK(kn_tensor_new(&c, 2, s32), "new (3,2)");
    kn_tensor_normal(&c, &r1, 0.5f, 2.0f);
    ok = 1;
    for (int i = 0; i < 6; i++) ok &= c.data[i] == (float)(0.5 + 2.0 * kn_rng_normal(&r2));
    CHECK(ok, "normal draws one value per element in row-major order");
    CHECK(r1.s[0] == r2.s[0] && r1.s[3] == r2.s[3], "and consumes exactly numel draws");
    kn_rng_seed(&r1, 42);
    kn_tensor_fill(&A, 0.0f);
    kn_tensor_normal(&Bt, &r1, 0.5f, 2.0f);   /* (3,2) view with transposed strides */
    ok = 1;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) ok &= bbuf[j * 3 + i] == c.data[i * 2 + j];
    CHECK(ok, "a strided view of the same shape gets the same values at the same indices");
    kn_tensor_free(&c);

    /* statistics of a larger draw */
    kn_tensor g;
    int64_t ng[2] = {256, 256};
    CHECK_OK(kn_tensor_new(&g, 2, ng), "new (256,256)");
    kn_rng_seed(&r1, 7);
    kn_tensor_normal(&g, &r1, 0.0f, 0.02f);
    double mean = kn_tensor_sum(&g) / 65536.0, sd = kn_tensor_norm(&g) / 256.0;
    CHECK(fabs(mean) < 0.02 * 0.02 && fabs(sd - 0.02) < 0.02 * 0.02, "N(0, 0.02): mean %.2g, std %.5f", mean, sd);
    kn_tensor_free(&g);

    CHECK_DONE();
}
