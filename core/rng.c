/* rng.c — xoshiro256** seeded by splitmix64. Small, fast, and its whole state is four
 * words, so checkpoints can carry it as a hex string. */
#include "rng.h"

#include <math.h>
#include <stdio.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void kn_rng_seed(kn_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t kn_rng_u64(kn_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double kn_rng_uniform(kn_rng *r) { return (double)(kn_rng_u64(r) >> 11) * 0x1.0p-53; }

uint64_t kn_rng_below(kn_rng *r, uint64_t n)
{
    /* Rejection on the top of the range keeps every value equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = kn_rng_u64(r); while (x >= limit);
    return x % n;
}

double kn_rng_normal(kn_rng *r)
{
    double u1 = 1.0 - kn_rng_uniform(r);   /* (0, 1]: log is finite */
    double u2 = kn_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void kn_rng_format(const kn_rng *r, char *buf)
{
    for (int i = 0; i < 4; i++) snprintf(buf + 16 * i, 17, "%016llx", (unsigned long long)r->s[i]);
}

int kn_rng_parse(kn_rng *r, const char *hex)
{
    kn_rng tmp;
    for (int i = 0; i < 4; i++) {
        uint64_t v = 0;
        for (int j = 0; j < 16; j++) {
            char c = hex[16 * i + j];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0) return -1;
            v = v << 4 | (uint64_t)d;
        }
        tmp.s[i] = v;
    }
    if (hex[64] != '\0') return -1;
    if ((tmp.s[0] | tmp.s[1] | tmp.s[2] | tmp.s[3]) == 0) return -1;  /* a dead state */
    *r = tmp;
    return 0;
}
