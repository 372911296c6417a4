/* gpt_setup.h — the setup shared by the whole-model tests (test_gpt.c, test_mup.c): a
 * seeded model, spread-out parameters and random tokens, all drawn from one file-wide rng
 * that the including test seeds in main(). Include once per test, after gpt.h and rng.h. */
#ifndef KN_TEST_GPT_SETUP_H
#define KN_TEST_GPT_SETUP_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static kn_rng rng;

static kn_gpt *make(kn_gpt_config c, uint64_t seed)
{
    kn_gpt *g = NULL;
    if (kn_gpt_new(&g, &c) != KN_OK) { printf("# new: %s\n", kn_errmsg()); exit(1); }
    kn_rng r;
    kn_rng_seed(&r, seed);
    kn_gpt_init(g, &r);
    return g;
}

/* Spread the parameters out (init's tiny weights make attention nearly uniform and the
 * gradients of many tensors nearly zero, which a gradient check could not tell apart). */
static void perturb(kn_gpt *g, double scale)
{
    float *p = kn_gpt_params(g);
    for (int i = 0; i < kn_gpt_num_tensors(g); i++) {
        const kn_param_info *t = kn_gpt_param_info(g, i);
        for (size_t j = 0; j < t->numel; j++) {
            double z = kn_rng_normal(&rng);
            float *v = &p[t->offset + j];
            if (t->kind == KN_PARAM_NORM) *v = (float)(1.0 + 0.2 * z);
            else if (t->kind == KN_PARAM_BIAS) *v = (float)(0.2 * z);
            else *v = (float)(scale * z);
        }
    }
}

static void rand_tokens(int32_t *t, int n, int V)
{
    for (int i = 0; i < n; i++) t[i] = (int32_t)kn_rng_below(&rng, V);
}

/* The logits of every position of the last forward, [B,T,V] (the model keeps none). */
static inline float *all_logits(kn_gpt *g, int B, int T)
{
    int V = kn_gpt_get_config(g)->vocab_size;
    float *out = malloc(sizeof(float) * (size_t)B * T * V);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            if (kn_gpt_logits_at(g, b, t, out + ((size_t)b * T + t) * V)) {
                printf("# logits: %s\n", kn_errmsg());
                exit(1);
            }
    return out;
}

#endif
