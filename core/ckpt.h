/* ckpt.h — safetensors files: an 8-byte little-endian header length, a JSON
 * header {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}, raw
 * little-endian data. Writing is atomic (kn_file_write_atomic: temp file, fsync, rename).
 * Reading validates every size and offset against the file before any data is touched, and
 * accepts only a data section covered exactly by the tensors and header strings that are
 * UTF-8 without NUL or control characters. */
#ifndef KN_CKPT_H
#define KN_CKPT_H

#include "kn.h"

#define KN_CKPT_MAX_DIMS 8

typedef struct {
    const char *name;
    const float *data;     /* F32 only when writing */
    int ndim;
    int64_t shape[KN_CKPT_MAX_DIMS];
} kn_ckpt_tensor;

typedef struct {
    const char *key;
    const char *value;
} kn_ckpt_meta;

/* Write tensors (in the given order) and metadata to path atomically. Never leaves a
 * partial file under path; an existing file is replaced only by a complete one. */
kn_status kn_ckpt_write(const char *path, const kn_ckpt_tensor *tensors, int n_tensors,
                        const kn_ckpt_meta *meta, int n_meta);

typedef struct kn_ckpt kn_ckpt;

/* Read and validate a whole file (a regular file only; a FIFO is refused without blocking).
 * Only F32 tensors are accepted (others: a clear error naming tensor and dtype). */
kn_status kn_ckpt_open(kn_ckpt **out, const char *path);
void kn_ckpt_close(kn_ckpt *c);
int kn_ckpt_num_tensors(const kn_ckpt *c);
/* Tensor i (in file order of offsets); pointers stay valid until close. */
const kn_ckpt_tensor *kn_ckpt_tensor_at(const kn_ckpt *c, int i);
/* Tensor by name, or NULL. */
const kn_ckpt_tensor *kn_ckpt_find(const kn_ckpt *c, const char *name);
int kn_ckpt_num_meta(const kn_ckpt *c);
const kn_ckpt_meta *kn_ckpt_meta_at(const kn_ckpt *c, int i);
/* Metadata value by key, or NULL. */
const char *kn_ckpt_meta_get(const kn_ckpt *c, const char *key);
const char *kn_ckpt_path(const kn_ckpt *c);

#endif
