/* generate.h — sampling text from a kn_gpt with a key/value cache. The prompt is fed once
 * (batched matrix products over its rows); after that each new token costs one row through
 * every layer, attending to the cached keys and values, and one row of logits. Work is cut
 * into fixed tiles (never by thread count) and each tile runs single-threaded BLAS, so the
 * logits, and therefore the sampled tokens, are the same at any thread count. */
#ifndef KN_GENERATE_H
#define KN_GENERATE_H

#include "gpt.h"
#include "rng.h"

/* What to do when the context (block_size tokens) is full and another token must be fed. */
typedef enum {
    KN_GEN_SLIDE = 0,   /* keep the last block_size-1 tokens plus the new one, re-feed them
                         * (exactly what cropping the context before a full forward does) */
    KN_GEN_STOP = 1     /* end the generation */
} kn_gen_full;

/* Why kn_gen_run ended. */
typedef enum {
    KN_GEN_END_LENGTH = 0,  /* max_new_tokens were produced */
    KN_GEN_END_STOP,        /* a stop token or stop sequence was produced (it is in the output) */
    KN_GEN_END_FULL,        /* the context was full under KN_GEN_STOP */
    KN_GEN_END_CALLBACK     /* the per-token callback asked to end */
} kn_gen_end;

typedef struct {
    int max_new_tokens;      /* >= 0 */
    float temperature;       /* >= 0; 0 is greedy (argmax, ties to the lowest id) */
    int top_k;               /* 0: off; else keep the k most likely tokens (1..vocab_size) */
    float top_p;             /* in (0, 1]; keep the smallest most-likely set with mass >= top_p */
    uint64_t seed;           /* the sampler's xoshiro stream */
    const int32_t *stop_tokens;   /* n_stop_tokens ids that end the generation */
    int n_stop_tokens;
    const int32_t *stop_seqs;     /* n_stop_seqs sequences, concatenated; stop_seq_lens[i] each */
    const int *stop_seq_lens;
    int n_stop_seqs;
    kn_gen_full on_full;
} kn_gen_opts;

typedef struct kn_gen kn_gen;

/* Called with each new token as soon as it is drawn; return nonzero to end there. */
typedef int (*kn_gen_token_fn)(void *ud, int32_t token);

/* Defaults: 100 new tokens, temperature 1, no top_k/top_p, seed 1, no stops, slide. */
kn_gen_opts kn_gen_default_opts(void);
/* Check options against a vocabulary size; the message names the field. */
kn_status kn_gen_check_opts(const kn_gen_opts *o, int vocab_size);

/* A cache for block_size positions of g, plus every buffer generation needs (allocated here,
 * once). g must outlive the generator; its parameters are read at each call, not copied. */
kn_status kn_gen_new(kn_gen **out, kn_gpt *g);
void kn_gen_free(kn_gen *s);
/* Bytes held by the cache and buffers. */
size_t kn_gen_memory_bytes(const kn_gen *s);

/* Forget the cache and feed tokens[0..n) at positions 0..n-1 (1 <= n <= block_size). */
kn_status kn_gen_prefill(kn_gen *s, const int32_t *tokens, int n);
/* Feed one token at the next position (the cache must not be full). */
kn_status kn_gen_append(kn_gen *s, int32_t token);
/* Tokens in the cache. */
int kn_gen_length(const kn_gen *s);
/* Next-token logits [vocab_size] after the last token fed (NULL before any feed). */
const float *kn_gen_logits(const kn_gen *s);

/* Draw a token from logits [vocab_size] under o's temperature, top_k and top_p (in that
 * order: top_p applies to the renormalised top_k set). Uses s's scratch; no allocation. */
kn_status kn_gen_sample(kn_gen *s, const float *logits, const kn_gen_opts *o, kn_rng *r,
                        int32_t *token);

/* Generate after prompt[0..n_prompt) (n_prompt >= 1; under KN_GEN_SLIDE a longer prompt
 * than block_size keeps its last block_size tokens). out has room for max_new_tokens ids;
 * *n_out is how many were produced; *why (why may be NULL) why it ended. on_token (may be
 * NULL) sees each token as it is drawn. Afterwards kn_gen_logits is the distribution the
 * last token was drawn from: the last token itself is never fed. */
kn_status kn_gen_run(kn_gen *s, const int32_t *prompt, int n_prompt, const kn_gen_opts *o,
                     int32_t *out, int *n_out, kn_gen_end *why, kn_gen_token_fn on_token,
                     void *ud);

#endif
