/* ref.h — straightforward double-precision references for the GPT layers and the whole
 * model, written independently of core/kernels.c (plain loops, libm tanh/exp, the full
 * causal softmax). Tests compare the float kernels against these and take finite
 * differences of them. */
#ifndef KN_TEST_REF_H
#define KN_TEST_REF_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* y[N,out] = x[N,in]·wᵀ + b */
static inline void ref_linear(double *y, const double *x, const double *w, const double *b, int N, int in,
                       int out)
{
    for (int r = 0; r < N; r++)
        for (int o = 0; o < out; o++) {
            double s = b ? b[o] : 0.0;
            for (int k = 0; k < in; k++) s += x[(size_t)r * in + k] * w[(size_t)o * in + k];
            y[(size_t)r * out + o] = s;
        }
}

static inline void ref_layernorm(double *y, const double *x, const double *w, const double *b, int N, int C)
{
    for (int r = 0; r < N; r++) {
        const double *xr = x + (size_t)r * C;
        double m = 0.0, v = 0.0;
        for (int j = 0; j < C; j++) m += xr[j];
        m /= C;
        for (int j = 0; j < C; j++) v += (xr[j] - m) * (xr[j] - m);
        v /= C;
        double s = 1.0 / sqrt(v + 1e-5);
        for (int j = 0; j < C; j++) y[(size_t)r * C + j] = (xr[j] - m) * s * w[j] + b[j];
    }
}

static inline double ref_gelu1(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

static inline void ref_gelu(double *y, const double *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = ref_gelu1(x[i]);
}

/* The exact GELU, x·Φ(x). */
static inline void ref_gelu_erf(double *y, const double *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = 0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0)));
}

/* y[B,T,C] from qkv[B,T,3C], causal, per head softmax(scale·q·kᵀ)·v. */
static inline void ref_attention_scaled(double *y, const double *qkv, int B, int T, int C, int NH,
                                        double scale)
{
    int hs = C / NH;
    double *p = malloc(sizeof(double) * (size_t)T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const double *q = qkv + ((size_t)b * T + t) * 3 * C + (size_t)h * hs;
                double mx = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    const double *k = qkv + ((size_t)b * T + s) * 3 * C + C + (size_t)h * hs;
                    double dot = 0.0;
                    for (int i = 0; i < hs; i++) dot += q[i] * k[i];
                    p[s] = dot * scale;
                    if (p[s] > mx) mx = p[s];
                }
                double sum = 0.0;
                for (int s = 0; s <= t; s++) { p[s] = exp(p[s] - mx); sum += p[s]; }
                double *o = y + ((size_t)b * T + t) * C + (size_t)h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0;
                for (int s = 0; s <= t; s++) {
                    const double *v = qkv + ((size_t)b * T + s) * 3 * C + 2 * C + (size_t)h * hs;
                    for (int i = 0; i < hs; i++) o[i] += p[s] / sum * v[i];
                }
            }
    free(p);
}

/* The standard attention: scale 1/√hs. */
static inline void ref_attention(double *y, const double *qkv, int B, int T, int C, int NH)
{
    ref_attention_scaled(y, qkv, B, T, C, NH, 1.0 / sqrt((double)(C / NH)));
}

/* Per-token CE into ce[N] (may be NULL); returns Σ w[t]·CE / denom as in docs/design.md §3.2. */
static inline double ref_xent(double *ce, const double *logits, const int32_t *targets, const float *w,
                       int B, int T, int V, int normalize)
{
    double total = 0.0, sw = 0.0;
    for (int t = 0; t < T; t++) sw += w ? w[t] : 1.0;
    for (int r = 0; r < B * T; r++) {
        const double *z = logits + (size_t)r * V;
        double mx = -INFINITY, s = 0.0;
        for (int j = 0; j < V; j++) if (z[j] > mx) mx = z[j];
        for (int j = 0; j < V; j++) s += exp(z[j] - mx);
        double l = log(s) + mx - z[targets[r]];
        if (ce) ce[r] = l;
        total += (w ? w[r % T] : 1.0) * l;
    }
    double denom = (w && normalize) ? B * sw : (double)B * T;
    return total / denom;
}

/* The whole GPT of docs/design.md §3.1 in double. Parameters are found through the model's own
 * name table (so the names and offsets are part of what is checked); p has the layout of
 * kn_gpt_params. */
typedef struct {
    const kn_gpt *g;
    const double *p;
} ref_model;

static inline const double *ref_param(ref_model *m, const char *name)
{
    int i = kn_gpt_find(m->g, name);
    if (i < 0) { fprintf(stderr, "ref: no tensor %s\n", name); abort(); }
    return m->p + kn_gpt_param_info(m->g, i)->offset;
}

/* With an explicit attention logit scale (softmax(att_scale·q·kᵀ)) and a multiplier on the
 * output logits, as μP has them; ref_gpt_loss below is the standard model. */
static inline double ref_gpt_loss_scaled(const kn_gpt *g, const double *p, const int32_t *tok,
                                         const int32_t *tgt, int B, int T, const float *w,
                                         int normalize, double *ce, double *logits_out,
                                         double att_scale, double logit_mult)
{
    const kn_gpt_config *c = kn_gpt_get_config(g);
    int d = c->n_embd, V = c->vocab_size, N = B * T;
    ref_model m = {g, p};
    double *x = malloc(sizeof(double) * N * d), *h = malloc(sizeof(double) * N * d);
    double *qkv = malloc(sizeof(double) * N * 3 * d), *a = malloc(sizeof(double) * N * d);
    double *f = malloc(sizeof(double) * N * 4 * d), *f2 = malloc(sizeof(double) * N * 4 * d);
    double *o = malloc(sizeof(double) * N * d), *lg = malloc(sizeof(double) * N * V);
    const double *wte = ref_param(&m, "transformer.wte.weight");
    const double *wpe = ref_param(&m, "transformer.wpe.weight");
    for (int r = 0; r < N; r++)
        for (int j = 0; j < d; j++)
            x[(size_t)r * d + j] = wte[(size_t)tok[r] * d + j] + wpe[(size_t)(r % T) * d + j];
    char nm[96];
#define PR(fmt) (snprintf(nm, sizeof nm, "transformer.h.%d." fmt, l), ref_param(&m, nm))
    for (int l = 0; l < c->n_layer; l++) {
        ref_layernorm(h, x, PR("ln_1.weight"), PR("ln_1.bias"), N, d);
        ref_linear(qkv, h, PR("attn.c_attn.weight"), PR("attn.c_attn.bias"), N, d, 3 * d);
        ref_attention_scaled(a, qkv, B, T, d, c->n_head, att_scale);
        ref_linear(o, a, PR("attn.c_proj.weight"), PR("attn.c_proj.bias"), N, d, d);
        for (size_t i = 0; i < (size_t)N * d; i++) x[i] += o[i];
        ref_layernorm(h, x, PR("ln_2.weight"), PR("ln_2.bias"), N, d);
        ref_linear(f, h, PR("mlp.c_fc.weight"), PR("mlp.c_fc.bias"), N, d, 4 * d);
        if (c->activation == KN_GELU_ERF) ref_gelu_erf(f2, f, (size_t)N * 4 * d);
        else ref_gelu(f2, f, (size_t)N * 4 * d);
        ref_linear(o, f2, PR("mlp.c_proj.weight"), PR("mlp.c_proj.bias"), N, 4 * d, d);
        for (size_t i = 0; i < (size_t)N * d; i++) x[i] += o[i];
    }
#undef PR
    ref_layernorm(h, x, ref_param(&m, "transformer.ln_f.weight"),
                  ref_param(&m, "transformer.ln_f.bias"), N, d);
    ref_linear(lg, h, wte, NULL, N, d, V);
    if (logit_mult != 1.0)
        for (size_t i = 0; i < (size_t)N * V; i++) lg[i] *= logit_mult;
    double loss = tgt ? ref_xent(ce, lg, tgt, w, B, T, V, normalize) : 0.0;
    if (logits_out) memcpy(logits_out, lg, sizeof(double) * N * V);
    free(x); free(h); free(qkv); free(a); free(f); free(f2); free(o); free(lg);
    return loss;
}

static inline double ref_gpt_loss(const kn_gpt *g, const double *p, const int32_t *tok,
                           const int32_t *tgt, int B, int T, const float *w, int normalize,
                           double *ce, double *logits_out)
{
    int hs = kn_gpt_get_config(g)->n_embd / kn_gpt_get_config(g)->n_head;
    return ref_gpt_loss_scaled(g, p, tok, tgt, B, T, w, normalize, ce, logits_out,
                               1.0 / sqrt((double)hs), 1.0);
}

#endif
