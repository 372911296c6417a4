/* gpt_ckpt.h — a model, and optionally its optimizer, to and from a checkpoint file
 * (core/ckpt.h): parameters under their nanoGPT names (plus the tied "lm_head.weight"),
 * AdamW moments as "optim.m.<name>" / "optim.v.<name>", and under the reserved "kiln."
 * metadata keys the format tag, the model config and the optimizer's step count.
 *
 * Loading checks every tensor's name and shape (the reader accepts F32 only) against the
 * config before anything is allocated or copied: a bad or hostile file is an error naming
 * the file, never a huge allocation or a half-loaded model. */
#ifndef KN_GPT_CKPT_H
#define KN_GPT_CKPT_H

#include "adamw.h"
#include "ckpt.h"
#include "tokenizer.h"

#define KN_GPT_CKPT_FORMAT "kiln-1"

/* Write g (and, when o is not NULL, o's moments and step count) with the caller's metadata
 * (keys must not start with "kiln.") to path, atomically. o must be g's own optimizer. */
kn_status kn_gpt_save(const char *path, kn_gpt *g, kn_adamw *o, const kn_ckpt_meta *meta,
                      int n_meta);

/* A checkpoint carries the tokenizer of the model's ids, so that it can decode its own
 * samples: "kiln.tokenizer" = "bytes" (V = 256) or "bpe", and for bpe the whole
 * tokenizer.json as one line ("kiln.tokenizer.json", ~1.3 MB for GPT-2's), its SHA-256
 * ("kiln.tokenizer.sha256") and vocabulary size ("kiln.tokenizer.vocab_size"). */
typedef enum { KN_CKPT_TOK_NONE, KN_CKPT_TOK_BYTES, KN_CKPT_TOK_BPE } kn_ckpt_tok_kind;

typedef struct {
    kn_adamw *optimizer;            /* NULL: parameters only; else g's own optimizer */
    kn_ckpt_tok_kind tok_kind;      /* NONE records nothing */
    const kn_tokenizer *tokenizer;  /* for KN_CKPT_TOK_BPE; its size must be <= vocab_size */
    const kn_ckpt_meta *meta;       /* the caller's metadata (keys not starting with "kiln.") */
    int n_meta;
} kn_gpt_save_opts;

/* kn_gpt_save with a tokenizer: everything in opts. */
kn_status kn_gpt_save_with(const char *path, kn_gpt *g, const kn_gpt_save_opts *opts);

/* The tokenizer c records: its kind, and for BPE a new tokenizer (one reference, the
 * caller's) built from the embedded text after checking its SHA-256. Files without one
 * (older kiln, nanoGPT) give KN_CKPT_TOK_NONE and *tok = NULL. */
kn_status kn_gpt_ckpt_tokenizer(const kn_ckpt *c, kn_ckpt_tok_kind *kind, kn_tokenizer **tok);

/* What a file without kiln metadata (nanoGPT's) cannot say about itself. */
typedef struct {
    int n_head;              /* 0: none given (an error for such a file) */
    const char *activation;  /* NULL: nanoGPT's "gelu"; or "gelu_tanh" */
} kn_gpt_ckpt_hints;

/* The config c records in its metadata, or for a file without it (nanoGPT) the one its
 * shapes imply, completed by hints (may be NULL). Checked with kn_gpt_config_check. */
kn_status kn_gpt_ckpt_config(const kn_ckpt *c, const kn_gpt_ckpt_hints *hints, kn_gpt_config *out);

/* Whether c holds every tensor of a model of config cfg with the right shape and nothing
 * foreign, and with with_optimizer also both moments of each and a valid step count. */
kn_status kn_gpt_ckpt_check(const kn_ckpt *c, const kn_gpt_config *cfg, bool with_optimizer);

/* Copy c into g, and into o (g's own optimizer, or NULL) the moments and step count. All
 * checks come first: on failure g and o are unchanged. */
kn_status kn_gpt_load(const kn_ckpt *c, kn_gpt *g, kn_adamw *o);

/* A new model (one reference, the caller's) built from c: config, check, then allocate. */
kn_status kn_gpt_from_ckpt(kn_gpt **out, const kn_ckpt *c, const kn_gpt_ckpt_hints *hints);

#endif
