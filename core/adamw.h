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

/* Weight averaging, fused into the step: on an averaging step the same pass that writes a
 * parameter also folds its new value into a flat average buffer parallel to the parameters
 * (frozen tensors too, so the average is a whole model). Step t is an averaging step when
 * t >= start and (t - start) % every == 0. The first averaging step copies the parameters
 * (no zero-initialised average, hence no bias correction); the k-th after it (k = 1, 2, ...)
 * does avg = a·avg + b·p with
 *   EMA:  a = decay (or min(decay, (1+k)/(10+k)) with warmup), b = 1 - a
 *   MEAN: a = k/(k+1), b = 1/(k+1)   (the uniform mean of every snapshot since start, SWA)
 * a and b are formed in double and rounded to float once. Averaging never changes the
 * parameters, moments or t the step computes. */
typedef enum { KN_AVERAGE_NONE = 0, KN_AVERAGE_EMA, KN_AVERAGE_MEAN } kn_average_kind;

typedef struct {
    kn_average_kind kind;
    double decay;       /* EMA: in [0, 1) */
    int64_t every;      /* >= 1 */
    int64_t start;      /* >= 1: the first step that can be averaged */
    bool warmup;        /* EMA: decay ramps as min(decay, (1+k)/(10+k)) */
} kn_average_cfg;

/* Select averaging (KN_AVERAGE_NONE turns it off and keeps the buffer). Allocates the
 * buffer the first time (outside any step); count restarts at 0. Refused while swapped. */
kn_status kn_adamw_set_average(kn_adamw *o, const kn_average_cfg *c);
/* The current settings (kind KN_AVERAGE_NONE if never set). */
kn_average_cfg kn_adamw_average_cfg(const kn_adamw *o);
/* The average, flat, same layout as the parameters; NULL before kn_adamw_set_average. */
float *kn_adamw_average(kn_adamw *o);
/* Snapshots folded in so far (0: the buffer holds nothing yet). */
int64_t kn_adamw_average_count(const kn_adamw *o);
/* For restoring a checkpoint: the count that goes with a buffer written back. */
kn_status kn_adamw_set_average_count(kn_adamw *o, int64_t count);
/* Exchange the contents of the parameters and the average, tensor by tensor, without
 * allocating: the model then computes with the averaged weights; a second call restores the
 * raw weights bit for bit. Steps and kn_adamw_set_average are refused while swapped. */
kn_status kn_adamw_swap_average(kn_adamw *o);
bool kn_adamw_average_swapped(const kn_adamw *o);

#endif
