/* gpt.h — the GPT-2 style model (nanoGPT layout and names): configuration, one flat parameter buffer
 * with nanoGPT-named views, hand-written forward and backward, per-token losses. */
#ifndef KN_GPT_H
#define KN_GPT_H

#include "kn.h"
#include "rng.h"

/* The MLP's nonlinearity. The zero value is GPT-2's (and llm.c's, HF gpt2's) tanh form;
 * KN_GELU_ERF is the exact x·Φ(x) that nanoGPT's nn.GELU() computes. */
typedef enum { KN_GELU_TANH = 0, KN_GELU_ERF = 1 } kn_activation;

typedef struct {
    int vocab_size;   /* V: 256 for bytes */
    int block_size;   /* max context T; wpe has this many rows */
    int n_layer;
    int n_head;
    int n_embd;       /* d, divisible by n_head */
    /* μP (Tensor Programs V, in the `mup` package's multiplier form). mup = 0 is
     * the standard parametrisation and the fields below must then be 0 (their zero values
     * are what a designated initialiser leaves). With mup = 1, width_mult = n_embd /
     * mup_base_width and:
     *   logits    = mup_output_mult / width_mult · ln_f(x)·wteᵀ  (the tied readout, MuReadout)
     *   attention = softmax(mup_attn_mult · q·kᵀ / d_head)       (1/d_head, not 1/√d_head)
     *   init      = hidden matrices N(0, 0.02²/width_mult) (residual projections also
     *               /(2·n_layer)), embeddings N(0, 0.02²), biases 0, LayerNorm 1; with
     *               mup_zero_query the query third of every c_attn weight starts at 0.
     * Per-group Adam LRs are the optimizer's business (lua/kiln/mup.lua). */
    int mup;
    float mup_base_width;   /* > 0 under μP: the width whose hyperparameters were tuned */
    float mup_output_mult;  /* > 0 under μP (1 by default in the binding) */
    float mup_attn_mult;    /* > 0 under μP (1 by default in the binding) */
    int mup_zero_query;     /* 0/1 */
    kn_activation activation;   /* KN_GELU_TANH (0, the default) or KN_GELU_ERF */
} kn_gpt_config;

/* What kind of tensor a parameter is. AdamW decays every 2-D tensor by default (matrices and
 * the embeddings, as nanoGPT), never biases or LayerNorm. */
typedef enum { KN_PARAM_EMBEDDING, KN_PARAM_MATRIX, KN_PARAM_BIAS, KN_PARAM_NORM } kn_param_kind;

typedef struct {
    char name[64];      /* nanoGPT state_dict name, e.g. "transformer.h.0.attn.c_attn.weight" */
    int ndim;           /* 1 or 2 */
    int64_t shape[2];   /* [out, in] for linear weights */
    size_t offset;      /* in floats, into the flat parameter (and gradient) buffer */
    size_t numel;
    kn_param_kind kind;
    int layer;          /* block index, or -1 for wte/wpe/ln_f */
} kn_param_info;

typedef struct kn_gpt kn_gpt;

/* An activation's name in configs and checkpoints: "gelu_tanh" or "gelu" (exact, erf). */
const char *kn_gpt_activation_name(kn_activation a);
/* Sets *out from a name above and returns true; false for any other name. */
bool kn_gpt_activation_parse(const char *name, kn_activation *out);

/* Check a config; the message names the offending field and what was expected. */
kn_status kn_gpt_config_check(const kn_gpt_config *c);
/* How many tensors a model of config c has, and their layout (names, shapes, offsets into
 * the flat buffer) written to info[0..n); returns the flat buffer's length in floats. For
 * checking a file against a config before allocating the model. c must pass config_check. */
int kn_gpt_config_num_tensors(const kn_gpt_config *c);
size_t kn_gpt_config_layout(const kn_gpt_config *c, kn_param_info *info);

/* Allocate a model (parameters and gradients, zeroed; no activations yet) holding one
 * reference, the caller's. Models are reference-counted: an optimizer and a tensor view of
 * the weights each hold one, so the model lives as long as any of them. */
kn_status kn_gpt_new(kn_gpt **out, const kn_gpt_config *c);
/* Add a reference (returns g). */
kn_gpt *kn_gpt_retain(kn_gpt *g);
/* Drop one reference; the last frees the model. NULL is ignored. */
void kn_gpt_free(kn_gpt *g);
int kn_gpt_refs(const kn_gpt *g);
const kn_gpt_config *kn_gpt_get_config(const kn_gpt *g);

/* GPT-2 init from r: N(0, 0.02), residual projections N(0, 0.02/sqrt(2·n_layer)), biases 0,
 * LayerNorm weights 1 (under μP, see kn_gpt_config, the matrices' std is divided by
 * sqrt(width_mult)). Tensors are filled in the order of kn_gpt_param_info. */
void kn_gpt_init(kn_gpt *g, kn_rng *r);
/* The init standard deviation kn_gpt_init uses for tensor i (0 for biases and norms). */
double kn_gpt_init_std(const kn_gpt *g, int i);
/* n_embd / mup_base_width under μP, 1 otherwise. */
double kn_gpt_width_mult(const kn_gpt *g);

size_t kn_gpt_num_params(const kn_gpt *g);     /* all floats in the flat buffer */
float *kn_gpt_params(kn_gpt *g);
float *kn_gpt_grads(kn_gpt *g);
int kn_gpt_num_tensors(const kn_gpt *g);
const kn_param_info *kn_gpt_param_info(const kn_gpt *g, int i);
/* Index of the named tensor, or -1. */
int kn_gpt_find(const kn_gpt *g, const char *name);

/* Size activation buffers for training batches up to B x T (T <= block_size). Called once;
 * forward with a larger shape reallocates (outside the step), a smaller one reuses. */
kn_status kn_gpt_reserve(kn_gpt *g, int B, int T);
/* Bytes of activations (arena and attention scratch) for batches of B x T, `chunk` rows of
 * logits at a time and `threads` threads; training adds what the backward needs, an
 * evaluation keeps one layer. A sum of terms in B·T, T (per thread), chunk·V and V·d: no
 * T² and no B·T·V. */
size_t kn_gpt_arena_bytes(const kn_gpt_config *c, int B, int T, int chunk, int threads,
                          bool training);

/* Forward over tokens [B,T] (values in [0, V)). With targets, computes per-token
 * cross-entropy into the loss buffer and *loss_out = sum_b sum_t w[t]·CE[b,t] / (B·T), or,
 * with normalize, divided by B·T·mean(w) instead. weights (length T) may be NULL: uniform.
 * targets may be NULL (no loss; loss_out untouched). Keeps what backward needs, including
 * the output layer's gradient, computed here chunk by chunk. */
kn_status kn_gpt_forward(kn_gpt *g, const int32_t *inputs, const int32_t *targets, int B, int T,
                         const float *weights, bool normalize, float *loss_out);
/* The same forward for evaluation: no gradient work, and an arena of its own (one layer's
 * activations) when none was reserved for training. No backward may follow. */
kn_status kn_gpt_evaluate(kn_gpt *g, const int32_t *inputs, const int32_t *targets, int B, int T,
                          const float *weights, bool normalize, float *loss_out);
/* Backward of the last forward's loss, multiplied by grad_scale (1 normally, 1/k when
 * accumulating k micro-batches). Adds into the gradient buffer (+=). */
kn_status kn_gpt_backward(kn_gpt *g, float grad_scale);
/* Told by kn_gpt_backward_with that grads[offset .. offset + count) (in floats) holds its
 * final value for this backward, so that it can be sent away (reduced over processes) while
 * the backward goes on. KN_OK continues; any other status (set its message with kn_fail)
 * stops the backward, which returns that status and leaves the gradient partly updated. */
typedef kn_status (*kn_gpt_grads_ready)(void *ctx, size_t offset, size_t count);
/* kn_gpt_backward, calling ready (when not NULL) as ranges become final. The ranges run from
 * the end of the flat buffer towards its start, each directly below the previous one, and
 * together cover [0, kn_gpt_num_params) once: ln_f first, then each block from the last,
 * a weight-and-bias pair at a time, and last [0, offset of block 0) — wte and wpe, final
 * only after the embedding backward, since wte also collects the output layer's gradient. */
kn_status kn_gpt_backward_with(kn_gpt *g, float grad_scale, kn_gpt_grads_ready ready, void *ctx);
void kn_gpt_zero_grad(kn_gpt *g);

/* Per-token cross-entropy [B,T] of the last forward (unweighted). */
const float *kn_gpt_token_losses(const kn_gpt *g);
/* out[V] = the logits at position [b, t] of the last forward (with or without targets),
 * recomputed from the final LayerNorm's output: the logits of a whole batch are never kept. */
kn_status kn_gpt_logits_at(kn_gpt *g, int b, int t, float *out);
/* Whether the last forward's outputs are still there (false before the first forward,
 * after a failed one and after reserve), and its batch shape. */
bool kn_gpt_last_forward(const kn_gpt *g, int *B, int *T);
/* Bytes held by parameters, gradients and activations. */
size_t kn_gpt_memory_bytes(const kn_gpt *g);

#endif
