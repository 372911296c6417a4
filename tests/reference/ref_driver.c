/* ref_driver.c — the kiln side of the whole-model check against PyTorch (torch_ref.py).
 *
 *   ref_driver OUTDIR [gelu_tanh|gelu]
 *
 * Builds a small GPT with odd shapes and the given MLP activation (default gelu_tanh), initialises it from a seed and writes, as safetensors:
 *   OUTDIR/model.safetensors  the initial parameters under their nanoGPT names
 *   OUTDIR/fwd.safetensors    inputs, targets, position weights; loss with the weighting, and
 *                             with normalize; per-token and per-position losses; every gradient
 *                             of both losses ("grad.<name>", "grad_normalized.<name>")
 *   OUTDIR/spread.safetensors the parameters drawn wider (see spread()), and the weighted
 *                             loss, per-token losses and every gradient ("grad.<name>") there
 *   OUTDIR/train.safetensors  three AdamW steps (zero_grad, forward, backward, clipped step) on
 *                             fresh batches: their inputs, targets, losses, pre-clip grad norms,
 *                             then the parameters after ("<name>") and the moments
 *                             ("optim.m.<name>", "optim.v.<name>")
 *   OUTDIR/kernels.safetensors the fused kernels alone at shapes that span several tiles:
 *                             attention (qkv, dy; kiln's y and dqkv) over 3 tiles per side
 *                             with head size 32 and 24, and the chunked output layer (x, w, targets,
 *                             position weights; kiln's loss, per-token losses, dx, dw)
 * Token ids are stored as F32 (exact below 2^24); the config (with "activation") and the
 * hyperparameters go in __metadata__. */
#include "adamw.h"
#include "ckpt.h"
#include "gpt.h"
#include "kernels.h"
#include "pool.h"
#include "rng.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V 256
#define BLOCK 32
#define NLAYER 2
#define NHEAD 3
#define NEMBD 48
#define B 3
#define T 29
#define STEPS 3

static int fail(const char *what)
{
    fprintf(stderr, "ref_driver: %s: %s\n", what, kn_errmsg());
    return 1;
}

/* A growing list of tensors to write; names and data are owned by the list. */
typedef struct {
    kn_ckpt_tensor t[512];
    char *names[512];
    float *data[512];
    int n;
} tlist;

static void tl_add(tlist *l, const char *name, const float *src, int ndim, const int64_t *shape)
{
    if (l->n >= 512) { fprintf(stderr, "ref_driver: too many tensors\n"); exit(1); }
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (size_t)shape[i];
    kn_ckpt_tensor *t = &l->t[l->n];
    l->names[l->n] = strdup(name);
    l->data[l->n] = malloc(numel * sizeof(float));
    if (!l->names[l->n] || !l->data[l->n]) { fprintf(stderr, "ref_driver: out of memory\n"); exit(1); }
    memcpy(l->data[l->n], src, numel * sizeof(float));
    t->name = l->names[l->n];
    t->data = l->data[l->n];
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    l->n++;
}

static void tl_add1(tlist *l, const char *name, const float *src, int64_t n)
{
    tl_add(l, name, src, 1, &n);
}

static void tl_free(tlist *l)
{
    for (int i = 0; i < l->n; i++) { free(l->names[i]); free(l->data[i]); }
    l->n = 0;
}

/* Every tensor of the flat buffer `base` (parameters, gradients or moments) under prefix+name. */
static void tl_add_model(tlist *l, kn_gpt *g, const float *base, const char *prefix)
{
    char name[160];
    for (int i = 0; i < kn_gpt_num_tensors(g); i++) {
        const kn_param_info *pi = kn_gpt_param_info(g, i);
        snprintf(name, sizeof name, "%s%s", prefix, pi->name);
        tl_add(l, name, base + pi->offset, pi->ndim, pi->shape);
    }
}

/* GPT-2's init keeps every MLP input within about ±0.1, where the tanh and erf GELUs agree
 * to ~1e-9, and the logits near 0: a check at init could not tell the two forms apart. For
 * the spread check every parameter is drawn wider, so MLP inputs and logits are O(1). */
static void spread(kn_gpt *g, kn_rng *r)
{
    float *p = kn_gpt_params(g);
    for (int i = 0; i < kn_gpt_num_tensors(g); i++) {
        const kn_param_info *t = kn_gpt_param_info(g, i);
        for (size_t j = 0; j < t->numel; j++) {
            double z = kn_rng_normal(r);
            double sd = strstr(t->name, ".mlp.c_") ? 0.3 : 0.15;   /* MLP inputs ~N(0, 2²) */
            p[t->offset + j] = (float)(t->kind == KN_PARAM_NORM ? 1.0 + 0.2 * z
                                       : t->kind == KN_PARAM_BIAS ? 0.2 * z : sd * z);
        }
    }
}

static void tokens_f32(const int32_t *tok, float *out, int n)
{
    for (int i = 0; i < n; i++) out[i] = (float)tok[i];
}

static void random_batch(kn_rng *r, int32_t *in, int32_t *tg)
{
    /* A shifted random sequence, as a data loader would produce. */
    int32_t seq[B][T + 1];
    for (int b = 0; b < B; b++)
        for (int t = 0; t <= T; t++) seq[b][t] = (int32_t)kn_rng_below(r, V);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) { in[b * T + t] = seq[b][t]; tg[b * T + t] = seq[b][t + 1]; }
}

static void fill_normal(kn_rng *r, float *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(kn_rng_normal(r) * scale);
}

/* Fused attention at one shape: inputs and kiln's outputs under "att<tag>.*". */
static int kernel_attention(tlist *l, kn_rng *r, const char *tag, int Bk, int Tk, int C, int NH)
{
    size_t nq = (size_t)Bk * Tk * 3 * C, ny = (size_t)Bk * Tk * C;
    float *qkv = malloc(nq * sizeof(float)), *dy = malloc(ny * sizeof(float));
    float *y = malloc(ny * sizeof(float)), *dq = malloc(nq * sizeof(float));
    float *lse = malloc((size_t)Bk * NH * Tk * sizeof(float));
    float *scr = kn_alloc(kn_attention_scratch_floats(Tk, C / NH, kn_pool_threads()) * sizeof(float));
    if (!qkv || !dy || !y || !dq || !lse || !scr) { fprintf(stderr, "ref_driver: out of memory\n"); return 1; }
    fill_normal(r, qkv, nq, 1.0);
    fill_normal(r, dy, ny, 1.0);
    kn_attention_forward(y, lse, scr, qkv, Bk, Tk, C, NH);
    kn_attention_backward(dq, scr, dy, qkv, y, lse, Bk, Tk, C, NH, false);
    int64_t shq[3] = { Bk, Tk, 3 * C }, shy[3] = { Bk, Tk, C };
    char name[64];
    float heads = (float)NH, block = (float)KN_ATT_BLOCK;
    snprintf(name, sizeof name, "att%s.n_head", tag); tl_add1(l, name, &heads, 1);
    snprintf(name, sizeof name, "att%s.tile", tag); tl_add1(l, name, &block, 1);
    snprintf(name, sizeof name, "att%s.qkv", tag); tl_add(l, name, qkv, 3, shq);
    snprintf(name, sizeof name, "att%s.dy", tag); tl_add(l, name, dy, 3, shy);
    snprintf(name, sizeof name, "att%s.y", tag); tl_add(l, name, y, 3, shy);
    snprintf(name, sizeof name, "att%s.dqkv", tag); tl_add(l, name, dq, 3, shq);
    free(qkv); free(dy); free(y); free(dq); free(lse); kn_free(scr);
    return 0;
}

/* The chunked output layer with a chunk that does not divide the rows. */
static int kernel_output_layer(tlist *l, kn_rng *r)
{
    enum { BO = 3, TO = 37, CO = 40, VO = 300, CHUNK = 16 };
    int N = BO * TO;
    float *x = malloc(sizeof(float) * N * CO), *w = malloc(sizeof(float) * VO * CO);
    float *dx = malloc(sizeof(float) * N * CO), *dw = calloc((size_t)VO * CO, sizeof(float));
    float *losses = malloc(sizeof(float) * N), *logits = malloc(sizeof(float) * CHUNK * VO);
    float pw[TO], tgf[BO * TO];
    int32_t tg[BO * TO];
    if (!x || !w || !dx || !dw || !losses || !logits) { fprintf(stderr, "ref_driver: out of memory\n"); return 1; }
    fill_normal(r, x, (size_t)N * CO, 1.0);
    fill_normal(r, w, (size_t)VO * CO, 0.3);
    for (int i = 0; i < N; i++) { tg[i] = (int32_t)kn_rng_below(r, VO); tgf[i] = (float)tg[i]; }
    for (int t = 0; t < TO; t++) pw[t] = 0.5f + (float)(t % 5) * 0.25f;
    float loss = kn_linear_xent(losses, dx, dw, logits, x, w, tg, pw, BO, TO, CO, VO, true, 1.0f,
                                1.0f, CHUNK);
    int64_t shx[2] = { N, CO }, shw[2] = { VO, CO }, shbt[2] = { BO, TO };
    tl_add(l, "out.x", x, 2, shx);
    tl_add(l, "out.w", w, 2, shw);
    tl_add(l, "out.targets", tgf, 2, shbt);
    tl_add1(l, "out.weights", pw, TO);
    tl_add1(l, "out.loss", &loss, 1);
    tl_add(l, "out.losses", losses, 2, shbt);
    tl_add(l, "out.dx", dx, 2, shx);
    tl_add(l, "out.dw", dw, 2, shw);
    free(x); free(w); free(dx); free(dw); free(losses); free(logits);
    return 0;
}

int main(int argc, char **argv)
{
    kn_activation act = KN_GELU_TANH;
    if (argc < 2 || argc > 3 || (argc == 3 && !kn_gpt_activation_parse(argv[2], &act))) {
        fprintf(stderr, "usage: ref_driver OUTDIR [gelu_tanh|gelu]\n");
        return 2;
    }
    const char *dir = argv[1];
    char path[4096];
    kn_set_threads(1);

    kn_gpt_config cfg = { .vocab_size = V, .block_size = BLOCK, .n_layer = NLAYER,
                          .n_head = NHEAD, .n_embd = NEMBD, .activation = act };
    kn_gpt *g;
    if (kn_gpt_new(&g, &cfg) != KN_OK) return fail("kn_gpt_new");
    kn_rng rng;
    kn_rng_seed(&rng, 20240601);
    kn_gpt_init(g, &rng);
    if (kn_gpt_reserve(g, B, T) != KN_OK) return fail("kn_gpt_reserve");

    char sV[16], sBl[16], sL[16], sH[16], sD[16], sB[16], sT[16];
    snprintf(sV, sizeof sV, "%d", V); snprintf(sBl, sizeof sBl, "%d", BLOCK);
    snprintf(sL, sizeof sL, "%d", NLAYER); snprintf(sH, sizeof sH, "%d", NHEAD);
    snprintf(sD, sizeof sD, "%d", NEMBD); snprintf(sB, sizeof sB, "%d", B); snprintf(sT, sizeof sT, "%d", T);
    kn_ckpt_meta cmeta[] = { { "vocab_size", sV }, { "block_size", sBl }, { "n_layer", sL },
                             { "n_head", sH }, { "n_embd", sD }, { "batch", sB }, { "T", sT },
                             { "activation", kn_gpt_activation_name(act) } };
    int ncmeta = (int)(sizeof cmeta / sizeof cmeta[0]);

    tlist *l = calloc(1, sizeof *l);
    if (!l) return 1;
    tl_add_model(l, g, kn_gpt_params(g), "");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (kn_ckpt_write(path, l->t, l->n, cmeta, ncmeta) != KN_OK) return fail("writing model.safetensors");
    tl_free(l);

    /* Forward + backward with a non-uniform position weighting, then with normalize. */
    int32_t in[B * T], tg[B * T];
    float w[T], tmp[STEPS * B * T];
    random_batch(&rng, in, tg);
    for (int t = 0; t < T; t++) w[t] = 0.25f + 0.125f * (float)(t % 7) + (t < 4 ? 1.0f : 0.0f);

    float loss, loss_n;
    kn_gpt_zero_grad(g);
    if (kn_gpt_forward(g, in, tg, B, T, w, false, &loss) != KN_OK) return fail("forward (weighted)");
    if (kn_gpt_backward(g, 1.0f) != KN_OK) return fail("backward (weighted)");
    int64_t sh_bt[2] = { B, T };
    tokens_f32(in, tmp, B * T);
    tl_add(l, "inputs", tmp, 2, sh_bt);
    tokens_f32(tg, tmp, B * T);
    tl_add(l, "targets", tmp, 2, sh_bt);
    tl_add1(l, "weights", w, T);
    tl_add1(l, "loss", &loss, 1);
    const float *tl = kn_gpt_token_losses(g);
    tl_add(l, "token_losses", tl, 2, sh_bt);
    float pos[T];
    for (int t = 0; t < T; t++) {
        double s = 0;
        for (int b = 0; b < B; b++) s += tl[b * T + t];
        pos[t] = (float)(s / B);
    }
    tl_add1(l, "position_losses", pos, T);
    tl_add_model(l, g, kn_gpt_grads(g), "grad.");

    kn_gpt_zero_grad(g);
    if (kn_gpt_forward(g, in, tg, B, T, w, true, &loss_n) != KN_OK) return fail("forward (normalized)");
    if (kn_gpt_backward(g, 1.0f) != KN_OK) return fail("backward (normalized)");
    tl_add1(l, "loss_normalized", &loss_n, 1);
    tl_add_model(l, g, kn_gpt_grads(g), "grad_normalized.");
    snprintf(path, sizeof path, "%s/fwd.safetensors", dir);
    if (kn_ckpt_write(path, l->t, l->n, cmeta, ncmeta) != KN_OK) return fail("writing fwd.safetensors");
    tl_free(l);

    /* The same batch with the parameters spread: where the activation's form matters. The
     * AdamW steps below start from these parameters' copy of the init, saved first. */
    float *init = malloc(sizeof(float) * kn_gpt_num_params(g));
    if (!init) return 1;
    memcpy(init, kn_gpt_params(g), sizeof(float) * kn_gpt_num_params(g));
    kn_rng spread_rng;
    kn_rng_seed(&spread_rng, 7);
    spread(g, &spread_rng);
    float loss_s;
    kn_gpt_zero_grad(g);
    if (kn_gpt_forward(g, in, tg, B, T, w, false, &loss_s) != KN_OK) return fail("forward (spread)");
    if (kn_gpt_backward(g, 1.0f) != KN_OK) return fail("backward (spread)");
    tl_add_model(l, g, kn_gpt_params(g), "");
    tl_add(l, "inputs", (tokens_f32(in, tmp, B * T), tmp), 2, sh_bt);
    tl_add(l, "targets", (tokens_f32(tg, tmp, B * T), tmp), 2, sh_bt);
    tl_add1(l, "weights", w, T);
    tl_add1(l, "loss", &loss_s, 1);
    tl_add(l, "token_losses", kn_gpt_token_losses(g), 2, sh_bt);
    tl_add_model(l, g, kn_gpt_grads(g), "grad.");
    snprintf(path, sizeof path, "%s/spread.safetensors", dir);
    if (kn_ckpt_write(path, l->t, l->n, cmeta, ncmeta) != KN_OK) return fail("writing spread.safetensors");
    tl_free(l);
    memcpy(kn_gpt_params(g), init, sizeof(float) * kn_gpt_num_params(g));
    free(init);

    /* Three AdamW steps with clipping active and non-default hyperparameters. eps is 1e-6, not
     * 1e-8: the gradient of the key bias is exactly zero in exact arithmetic (softmax ignores a
     * shift shared by all keys), so float32 leaves ~1e-11 of noise there, and Adam divides by
     * sqrt(v) + eps, turning noise into updates of up to lr·noise/eps. With eps 1e-8 any two
     * float32 implementations (torch float32 against float64 too) differ by ~1e-4 on those
     * biases; with 1e-6 the disagreement floor is ~3e-5 and the check means something. */
    kn_adamw *o;
    if (kn_adamw_new(&o, g) != KN_OK) return fail("kn_adamw_new");
    kn_adamw_hparams h = { .lr = 1e-3f, .beta1 = 0.85f, .beta2 = 0.97f, .eps = 1e-6f,
                           .weight_decay = 0.2f, .clip = 0.5f };
    int32_t sin[STEPS][B * T], stg[STEPS][B * T];
    float slosses[STEPS], snorms[STEPS];
    for (int s = 0; s < STEPS; s++) {
        random_batch(&rng, sin[s], stg[s]);
        kn_gpt_zero_grad(g);
        if (kn_gpt_forward(g, sin[s], stg[s], B, T, w, false, &slosses[s]) != KN_OK) return fail("train forward");
        if (kn_gpt_backward(g, 1.0f) != KN_OK) return fail("train backward");
        if (kn_adamw_step(o, &h, &snorms[s]) != KN_OK) return fail("adamw step");
        if (!(snorms[s] > h.clip)) {
            fprintf(stderr, "ref_driver: step %d grad norm %g does not exceed clip %g: clipping inactive\n",
                    s + 1, (double)snorms[s], (double)h.clip);
            return 1;
        }
    }
    int64_t sh_sbt[3] = { STEPS, B, T };
    tokens_f32(&sin[0][0], tmp, STEPS * B * T);
    tl_add(l, "step_inputs", tmp, 3, sh_sbt);
    tokens_f32(&stg[0][0], tmp, STEPS * B * T);
    tl_add(l, "step_targets", tmp, 3, sh_sbt);
    tl_add1(l, "step_losses", slosses, STEPS);
    tl_add1(l, "grad_norms", snorms, STEPS);
    tl_add_model(l, g, kn_gpt_params(g), "");
    tl_add_model(l, g, kn_adamw_m(o), "optim.m.");
    tl_add_model(l, g, kn_adamw_v(o), "optim.v.");
    char slr[32], sb1[32], sb2[32], seps[32], swd[32], sclip[32], ssteps[16];
    snprintf(slr, sizeof slr, "%.9g", (double)h.lr);
    snprintf(sb1, sizeof sb1, "%.9g", (double)h.beta1);
    snprintf(sb2, sizeof sb2, "%.9g", (double)h.beta2);
    snprintf(seps, sizeof seps, "%.9g", (double)h.eps);
    snprintf(swd, sizeof swd, "%.9g", (double)h.weight_decay);
    snprintf(sclip, sizeof sclip, "%.9g", (double)h.clip);
    snprintf(ssteps, sizeof ssteps, "%d", STEPS);
    kn_ckpt_meta tmeta[] = { { "lr", slr }, { "beta1", sb1 }, { "beta2", sb2 }, { "eps", seps },
                             { "weight_decay", swd }, { "clip", sclip }, { "steps", ssteps } };
    snprintf(path, sizeof path, "%s/train.safetensors", dir);
    if (kn_ckpt_write(path, l->t, l->n, tmeta, (int)(sizeof tmeta / sizeof tmeta[0])) != KN_OK)
        return fail("writing train.safetensors");
    tl_free(l);

    /* the fused kernels alone, at 2 threads: several tiles per side, odd sizes */
    kn_set_threads(2);
    if (kernel_attention(l, &rng, "32", 2, 2 * KN_ATT_BLOCK + 11, 96, 3) ||
        kernel_attention(l, &rng, "24", 1, 2 * KN_ATT_BLOCK + 11, 48, 2) ||
        kernel_output_layer(l, &rng))
        return 1;
    snprintf(path, sizeof path, "%s/kernels.safetensors", dir);
    if (kn_ckpt_write(path, l->t, l->n, NULL, 0) != KN_OK) return fail("writing kernels.safetensors");
    tl_free(l);
    free(l);

    printf("ref_driver (%s): loss %.7g, normalized %.7g; steps:", kn_gpt_activation_name(act), (double)loss, (double)loss_n);
    for (int s = 0; s < STEPS; s++) printf(" loss %.7g norm %.5g;", (double)slosses[s], (double)snorms[s]);
    printf(" spread loss %.7g; wrote %s/{model,fwd,spread,train,kernels}.safetensors\n", (double)loss_s, dir);
    kn_adamw_free(o);
    kn_gpt_free(g);
    return 0;
}
