/* hash.c — SHA-256 as FIPS 180-4 specifies it: 64-byte blocks, big-endian words, a final
 * block padded with 0x80, zeros and the bit length. Two implementations of the block
 * function: plain C, and one on the x86 SHA extensions (about 4-5x faster, which matters
 * when a run fingerprints gigabytes of data files). The extension path is chosen at run time
 * from CPUID, so a binary built for any x86-64 runs on any x86-64. */
#include "hash.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsio.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86_SHA 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static inline uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* n 64-byte blocks into h, in plain C. */
static void blocks_c(uint32_t h[8], const uint8_t *p, size_t n)
{
    for (; n > 0; n--, p += 64) {
        uint32_t w[64];
        for (int i = 0; i < 16; i++) w[i] = load_be32(p + 4 * i);
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
            uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            hh = g; g = f; f = e; e = d + t1;
            d = c; c = b; b = a; a = t1 + t2;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d;
        h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
}

#ifdef HAVE_X86_SHA
/* The same on SHA-NI. sha256rnds2 keeps the state as two registers, (A,B,E,F) and (C,D,G,H),
 * and does two rounds per call on two words of W+K; msg1/msg2 extend the message schedule
 * four words at a time. */
__attribute__((target("sha,sse4.1,ssse3")))
static void blocks_x86(uint32_t h[8], const uint8_t *p, size_t n)
{
    const __m128i byteswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i dcba = _mm_loadu_si128((const __m128i *)(const void *)&h[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)(const void *)&h[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
    for (; n > 0; n--, p += 64) {
        __m128i abef0 = abef, cdgh0 = cdgh, w[16];
        for (int i = 0; i < 16; i++) {
            if (i < 4) {
                w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i)), byteswap);
            } else {
                __m128i t = _mm_add_epi32(_mm_sha256msg1_epu32(w[i - 4], w[i - 3]),
                                          _mm_alignr_epi8(w[i - 1], w[i - 2], 4));
                w[i] = _mm_sha256msg2_epu32(t, w[i - 1]);
            }
            __m128i wk = _mm_add_epi32(w[i], _mm_loadu_si128((const __m128i *)(const void *)&K[4 * i]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0E));
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)(void *)&h[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)(void *)&h[4], _mm_alignr_epi8(dchg, feba, 8));
}

static bool cpu_has_sha(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & bit_SHA)) return false;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    return (c & bit_SSE4_1) && (c & bit_SSSE3);
}
#endif

typedef void (*block_fn)(uint32_t h[8], const uint8_t *p, size_t n);
/* Chosen on first use; atomic because threads may hash concurrently from the start. */
static _Atomic(block_fn) block_impl;

bool kn_hash_use_cpu_sha(bool allow)
{
    block_fn f = blocks_c;
#ifdef HAVE_X86_SHA
    if (allow && cpu_has_sha()) f = blocks_x86;
#endif
    atomic_store(&block_impl, f);
    return f != blocks_c;
}

static void blocks(uint32_t h[8], const uint8_t *p, size_t n)
{
    block_fn f = atomic_load_explicit(&block_impl, memory_order_relaxed);
    if (!f) {
        kn_hash_use_cpu_sha(true);
        f = atomic_load(&block_impl);
    }
    f(h, p, n);
}

void kn_hash_sha256_init(kn_sha256 *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->bytes = 0;
}

void kn_hash_sha256_update(kn_sha256 *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    size_t fill = (size_t)(s->bytes % 64);
    s->bytes += n;
    if (fill > 0) {
        size_t take = n < 64 - fill ? n : 64 - fill;
        memcpy(s->block + fill, p, take);
        p += take;
        n -= take;
        if (fill + take < 64) return;
        blocks(s->h, s->block, 1);
    }
    blocks(s->h, p, n / 64);   /* whole blocks straight from the caller's memory */
    memcpy(s->block, p + (n & ~(size_t)63), n % 64);
}

void kn_hash_sha256_final(kn_sha256 *s, uint8_t digest[KN_SHA256_BYTES])
{
    uint64_t bits = s->bytes * 8;
    size_t fill = (size_t)(s->bytes % 64);
    s->block[fill++] = 0x80;
    if (fill > 56) {
        memset(s->block + fill, 0, 64 - fill);
        blocks(s->h, s->block, 1);
        fill = 0;
    }
    memset(s->block + fill, 0, 56 - fill);
    for (int i = 0; i < 8; i++) s->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    blocks(s->h, s->block, 1);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) digest[4 * i + j] = (uint8_t)(s->h[i] >> (24 - 8 * j));
}

void kn_hash_sha256(const void *p, size_t n, uint8_t digest[KN_SHA256_BYTES])
{
    kn_sha256 s;
    kn_hash_sha256_init(&s);
    kn_hash_sha256_update(&s, p, n);
    kn_hash_sha256_final(&s, digest);
}

kn_status kn_hash_sha256_file(const char *path, uint8_t digest[KN_SHA256_BYTES], uint64_t *bytes)
{
    if (!path) return kn_fail(KN_ERR_ARG, "hash: path is NULL");
    int fd;
    uint64_t size;
    kn_status st = kn_file_open_read(path, "hash", "a regular file", &fd, &size);
    if (st) return st;
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = malloc(CHUNK);
    if (!buf) {
        close(fd);
        return kn_fail(KN_ERR_NOMEM, "hash: '%s': out of memory for a read buffer", path);
    }
    kn_sha256 s;
    kn_hash_sha256_init(&s);
    /* To the end of the file as it is now: the digest is of the bytes actually read. */
    for (;;) {
        ssize_t r = read(fd, buf, CHUNK);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = kn_fail(KN_ERR_IO, "hash: cannot read '%s': %s", path, strerror(errno));
            break;
        }
        if (r == 0) break;
        kn_hash_sha256_update(&s, buf, (size_t)r);
    }
    free(buf);
    close(fd);
    if (st) return st;
    if (bytes) *bytes = s.bytes;
    kn_hash_sha256_final(&s, digest);
    return KN_OK;
}

void kn_hash_hex(const uint8_t *bytes, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[bytes[i] >> 4];
        hex[2 * i + 1] = digits[bytes[i] & 15];
    }
    hex[2 * n] = '\0';
}
