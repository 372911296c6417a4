/* test_gpt_hook.c — kn_gpt_backward_with: the ranges it reports as final run down the flat
 * gradient buffer without gaps or overlaps, each is bit for bit what the whole backward ends
 * with (also on top of an earlier micro-batch's gradient), and a hook's error stops it. */
#include "kn.h"
#include "gpt.h"
#include "pool.h"
#include "rng.h"
#include "check.h"
#include "gpt_setup.h"

#include <string.h>

enum { B = 2, T = 8, MAX_CALLS = 64 };

typedef struct {
    kn_gpt *g;
    const float *final;      /* the gradient the whole backward ends with */
    int calls, stop_at;
    size_t next_end;         /* where the next range must end: the previous one's start */
    bool contiguous, all_final;
    size_t first_count;
} watch;

static kn_status on_ready(void *ctx, size_t offset, size_t count)
{
    watch *w = ctx;
    w->calls++;
    if (w->calls == 1) w->first_count = count;
    if (count == 0 || offset + count != w->next_end) w->contiguous = false;
    w->next_end = offset;
    const float *now = kn_gpt_grads(w->g) + offset;
    if (memcmp(now, w->final + offset, sizeof(float) * count) != 0) w->all_final = false;
    if (w->calls == w->stop_at) return kn_fail(KN_ERR_ARG, "stopped by the test at call %d", w->calls);
    return KN_OK;
}

/* Two micro-batches, the second one's backward watched (or plain when w is NULL). */
static kn_status two_micro_batches(kn_gpt *g, const int32_t *x, const int32_t *y, watch *w)
{
    float loss;
    kn_gpt_zero_grad(g);
    kn_status st = kn_gpt_forward(g, x, y, B, T, NULL, false, &loss);
    if (!st) st = kn_gpt_backward(g, 0.5f);
    if (!st) st = kn_gpt_forward(g, x + B * T, y + B * T, B, T, NULL, false, &loss);
    if (!st) st = w ? kn_gpt_backward_with(g, 0.5f, on_ready, w) : kn_gpt_backward(g, 0.5f);
    return st;
}

int main(void)
{
    kn_rng_seed(&rng, 77);
    kn_set_threads(2);
    kn_gpt_config c = {.vocab_size = 40, .block_size = T, .n_layer = 3, .n_head = 2, .n_embd = 16};
    kn_gpt *g = make(c, 5);
    perturb(g, 0.3);
    int32_t x[2 * B * T], y[2 * B * T];
    rand_tokens(x, 2 * B * T, c.vocab_size);
    rand_tokens(y, 2 * B * T, c.vocab_size);
    size_t n = kn_gpt_num_params(g);
    float *final = malloc(sizeof(float) * n);
    CHECK_OK(two_micro_batches(g, x, y, NULL), "two micro-batches, plain backward");
    memcpy(final, kn_gpt_grads(g), sizeof(float) * n);

    watch w = {.g = g, .final = final, .next_end = n, .contiguous = true, .all_final = true};
    CHECK_OK(two_micro_batches(g, x, y, &w), "the same with the hook on the second backward");
    CHECK(w.calls == 2 + 6 * c.n_layer, "one range for ln_f, six per block, one for the embeddings (%d)",
          w.calls);
    CHECK(w.contiguous && w.next_end == 0, "the ranges run from the end of the buffer down to 0, each "
          "directly below the previous one");
    const kn_param_info *lnf = kn_gpt_param_info(g, kn_gpt_find(g, "transformer.ln_f.weight"));
    CHECK(w.first_count == n - lnf->offset, "the first range is ln_f (and the padding after it)");
    CHECK(w.all_final, "every range already holds, bit for bit, the gradient the backward ends with");
    CHECK(memcmp(kn_gpt_grads(g), final, sizeof(float) * n) == 0,
          "and the whole gradient equals the plain backward's");

    watch stop = {.g = g, .final = final, .next_end = n, .contiguous = true, .all_final = true,
                  .stop_at = 3};
    CHECK_FAILS(two_micro_batches(g, x, y, &stop), "stopped by the test at call 3",
                "a hook's error stops the backward and is returned with its message");
    CHECK(stop.calls == 3, "no range is reported after the hook's error (%d calls)", stop.calls);
    free(final);
    kn_gpt_free(g);
    kn_pool_shutdown();
    CHECK_DONE();
}
