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

#define KN_GPT_CKPT_FORMAT "kiln-1"

/* Write g (and, when o is not NULL, o's moments and step count) with the caller's metadata
 * (keys must not start with "kiln.") to path, atomically. o must be g's own optimizer. */
kn_status kn_gpt_save(const char *path, kn_gpt *g, kn_adamw *o, const kn_ckpt_meta *meta,
                      int n_meta);

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
