/* adamw.h — torch.optim.AdamW semantics over the model's flat buffers:
 * global-norm clipping, then per tensor p -= lr_t·wd·p (decoupled), bias-corrected moments.
 * The learning rate arrives with every step: schedules are the caller's business. */
#ifndef KN_ADAMW_H
#define KN_ADAMW_H

#include "gpt.h"

typedef struct {
    float lr;            /* base learning rate of this step */
    float beta1, beta2;  /* default 0.9, 0.95 */
    float eps;           /* default 1e-8 */
    float weight_decay;  /* default 0.1; applied to tensors whose group says so */
    float clip;          /* max global grad norm; <= 0 disables clipping */
} kn_adamw_hparams;

/* Per-tensor group settings: the tensor's lr is lr·lr_scale, its decay is
 * weight_decay·wd_scale (wd_scale 1 for 2-D weights, 0 otherwise, by default). A frozen
 * tensor is not updated and its moments stay as they are. */
typedef struct {
    float lr_scale;
    float wd_scale;
    bool frozen;
} kn_adamw_group;

typedef struct kn_adamw kn_adamw;

/* Defaults: lr 3e-4, betas (0.9, 0.95), eps 1e-8, wd 0.1, clip 1.0. */
kn_adamw_hparams kn_adamw_defaults(void);
/* Moments zeroed, t = 0, default groups and hyperparameters, one reference (the caller's).
 * The optimizer retains g: the model lives at least as long as its optimizer. */
kn_status kn_adamw_new(kn_adamw **out, kn_gpt *g);
/* Add a reference (returns o); drop one (the last frees the moments and releases g). */
kn_adamw *kn_adamw_retain(kn_adamw *o);
void kn_adamw_free(kn_adamw *o);
int kn_adamw_refs(const kn_adamw *o);
/* The model this optimizer updates (a borrowed pointer; retain it to keep it). */
kn_gpt *kn_adamw_model(const kn_adamw *o);
/* The hyperparameters a caller uses for what a step does not set (kn_adamw_defaults at
 * first). Stored for callers; kn_adamw_step uses only the h it is given. */
kn_adamw_hparams kn_adamw_get_hparams(const kn_adamw *o);
void kn_adamw_set_hparams(kn_adamw *o, const kn_adamw_hparams *h);
/* Group of tensor i (model tensor index). */
kn_adamw_group *kn_adamw_group_of(kn_adamw *o, int i);
/* Clip, then update. *grad_norm_out gets the global norm before clipping. A non-finite norm
 * changes nothing and returns KN_ERR_NONFINITE naming the first non-finite gradient tensor. */
kn_status kn_adamw_step(kn_adamw *o, const kn_adamw_hparams *h, float *grad_norm_out);
/* Zero the moments and t (a fresh optimizer for a new phase); groups stay. */
void kn_adamw_reset(kn_adamw *o);
float *kn_adamw_m(kn_adamw *o);   /* flat, same layout as the parameters */
float *kn_adamw_v(kn_adamw *o);
int64_t kn_adamw_t(const kn_adamw *o);
void kn_adamw_set_t(kn_adamw *o, int64_t t);

#endif
