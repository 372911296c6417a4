/* rng.h — a small, serialisable random generator (xoshiro256**), so that a checkpoint can
 * store the exact state of every random choice a run makes. */
#ifndef KN_RNG_H
#define KN_RNG_H

#include <stdint.h>

typedef struct { uint64_t s[4]; } kn_rng;

/* Seed through splitmix64, so nearby seeds give unrelated streams. */
void kn_rng_seed(kn_rng *r, uint64_t seed);
/* Next 64 random bits. */
uint64_t kn_rng_u64(kn_rng *r);
/* Uniform double in [0, 1). */
double kn_rng_uniform(kn_rng *r);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint64_t kn_rng_below(kn_rng *r, uint64_t n);
/* Standard normal (Box-Muller, no cached spare: the state is only s[4]). */
double kn_rng_normal(kn_rng *r);
/* State as 64 lowercase hex digits (buf >= 65 bytes) and back; parse returns 0 on success. */
void kn_rng_format(const kn_rng *r, char *buf);
int kn_rng_parse(kn_rng *r, const char *hex);

#endif
