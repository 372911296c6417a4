/* fuzz_ckpt.c — libFuzzer target for the safetensors reader: any byte string given to
 * kn_ckpt_open must yield either a loaded checkpoint whose every tensor can be read in full,
 * or an error message naming the file; never a crash, leak or out-of-bounds read.
 *
 *   make fuzz                                  # builds build-fuzz/fuzz_ckpt (needs clang) and runs it
 *   build-fuzz/fuzz_ckpt -max_total_time=60 -dict=tests/fuzz/ckpt.dict build-fuzz/corpus-ckpt tests/fuzz/seeds-ckpt
 *
 * tests/fuzz/seeds-ckpt holds hand-made starting points: valid files and the near misses the
 * reader must refuse (header length off by one, NUL inside a dtype, gaps, trailing data).
 *
 * The input is served through a memfd, so no disk is touched per input. */
#include "ckpt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz.safetensors", 0);
        if (fd < 0) abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) abort();

    kn_ckpt *c = NULL;
    if (kn_ckpt_open(&c, path) != KN_OK) {
        if (c != NULL || strstr(kn_errmsg(), path) == NULL) abort();
        return 0;
    }
    /* A loaded file's tensors cover its data section exactly, and its header has no raw NUL. */
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)data[i] << (8 * i);
    if (memchr(data + 8, 0, (size_t)hlen) != NULL) abort();
    uint64_t covered = 0;
    volatile float sink = 0;
    for (int i = 0; i < kn_ckpt_num_tensors(c); i++) {
        const kn_ckpt_tensor *t = kn_ckpt_tensor_at(c, i);
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
        for (int64_t k = 0; k < n; k++) sink += t->data[k];   /* ASan checks every byte */
        if (kn_ckpt_find(c, t->name) == NULL || ((uintptr_t)t->data & 3) != 0) abort();
        covered += 4 * (uint64_t)n;
    }
    if (covered != size - 8 - hlen) abort();
    for (int i = 0; i < kn_ckpt_num_meta(c); i++) {
        const kn_ckpt_meta *m = kn_ckpt_meta_at(c, i);
        sink += (float)strlen(m->key) + (float)strlen(m->value);
    }
    kn_ckpt_close(c);
    return 0;
}
