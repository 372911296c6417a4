/* hash.h — SHA-256 (FIPS 180-4) of buffers and files: the content hash behind run
 * fingerprints, tokenizer and data file identities and checkpoint hashes. Uses the CPU's
 * SHA extensions when it has them (x86-64), plain C otherwise; both give the same digest. */
#ifndef KN_HASH_H
#define KN_HASH_H

#include "kn.h"

#define KN_SHA256_BYTES 32
#define KN_SHA256_HEX (2 * KN_SHA256_BYTES + 1)   /* hex digits and the NUL */

/* A running hash; plain data, so it can live on the stack or be copied mid-stream. */
typedef struct {
    uint32_t h[8];
    uint64_t bytes;        /* hashed so far */
    uint8_t block[64];     /* a partial block of `bytes % 64` bytes */
} kn_sha256;

void kn_hash_sha256_init(kn_sha256 *s);
void kn_hash_sha256_update(kn_sha256 *s, const void *p, size_t n);
/* The digest of everything given to update; s must be initialised again before reuse. */
void kn_hash_sha256_final(kn_sha256 *s, uint8_t digest[KN_SHA256_BYTES]);

/* One buffer, in one call. */
void kn_hash_sha256(const void *p, size_t n, uint8_t digest[KN_SHA256_BYTES]);

/* A whole regular file, streamed (a FIFO or device is refused without blocking); *bytes (if
 * not NULL) gets its length. Errors name the file. */
kn_status kn_hash_sha256_file(const char *path, uint8_t digest[KN_SHA256_BYTES], uint64_t *bytes);

/* n bytes as 2n lowercase hex digits and a NUL into hex (2n+1 bytes). */
void kn_hash_hex(const uint8_t *bytes, size_t n, char *hex);

/* Allow (default) or forbid the CPU's SHA extensions; returns whether they are now in use.
 * For tests and benchmarks of both code paths. */
bool kn_hash_use_cpu_sha(bool allow);

#endif
