/* test_generate.c — the key/value-cache decoder against the full forward, greedy decoding
 * of a memorised text, the sampler's statistics and edge cases, determinism, errors. */
#include "adamw.h"
#include "generate.h"
#include "gpt.h"
#include "pool.h"
#include "rng.h"

#include "check.h"
#include "gpt_setup.h"

static const kn_gpt_config SMALL = {.vocab_size = 64, .block_size = 128, .n_layer = 2,
                                    .n_head = 4, .n_embd = 32};

/* ------------------------------------------------ cache logits vs. the full forward */

typedef struct {
    kn_gpt *g;
    kn_gen *s;
    int32_t seq[512];
    int n, T, steps;
    double max_diff;
    bool forward_failed;
    float *full;       /* [V]: the full forward's logits at the last position */
} compare_ctx;

/* After each draw, the logits it was drawn from must be the full forward's last row over
 * the (cropped) sequence so far; then the token joins the sequence. */
static int compare_step(void *ud, int32_t tok)
{
    compare_ctx *c = ud;
    int start = c->n > c->T ? c->n - c->T : 0, len = c->n - start;
    if (kn_gpt_forward(c->g, c->seq + start, NULL, 1, len, NULL, false, NULL) != KN_OK) {
        c->forward_failed = true;
        return 1;
    }
    int V = kn_gpt_get_config(c->g)->vocab_size;
    float *full = c->full;
    if (kn_gpt_logits_at(c->g, 0, len - 1, full) != KN_OK) {
        c->forward_failed = true;
        return 1;
    }
    const float *cached = kn_gen_logits(c->s);
    for (int v = 0; v < V; v++) {
        double d = fabs((double)full[v] - (double)cached[v]);
        if (d > c->max_diff) c->max_diff = d;
    }
    c->seq[c->n++] = tok;
    c->steps++;
    return 0;
}

static void compare_with_forward(kn_gpt_config cfg, int n_prompt, int n_new, const char *what)
{
    kn_gpt *g = make(cfg, 7);
    perturb(g, 0.15);
    kn_gen *s = NULL;
    CHECK_OK(kn_gen_new(&s, g), "%s: generator", what);
    if (!s) return;
    compare_ctx c = {.g = g, .s = s, .n = n_prompt, .T = cfg.block_size,
                     .full = malloc(sizeof(float) * (size_t)cfg.vocab_size)};
    rand_tokens(c.seq, n_prompt, cfg.vocab_size);
    kn_gen_opts o = kn_gen_default_opts();
    o.max_new_tokens = n_new;
    o.seed = 3;
    int32_t out[512];
    int n_out = 0;
    kn_gen_end why;
    int32_t prompt[512];
    memcpy(prompt, c.seq, sizeof(int32_t) * (size_t)n_prompt);
    CHECK_OK(kn_gen_run(s, prompt, n_prompt, &o, out, &n_out, &why, compare_step, &c),
             "%s: run", what);
    CHECK(!c.forward_failed && c.steps == n_new && n_out == n_new && why == KN_GEN_END_LENGTH,
          "%s: %d steps compared (%d drawn)", what, c.steps, n_out);
    CHECK(c.max_diff < 1e-5, "%s: cached logits = full-forward logits at every step "
          "(max |diff| %.3g < 1e-5)", what, c.max_diff);
    free(c.full);
    kn_gen_free(s);
    kn_gpt_free(g);
}

static void test_cache_matches_forward(void)
{
    compare_with_forward(SMALL, 5, 100, "100 tokens in a 128 context");
    kn_gpt_config slide = SMALL;
    slide.block_size = 32;
    compare_with_forward(slide, 5, 60, "sliding a 32-token context");
    kn_gpt_config mup = SMALL;
    mup.mup = 1;
    mup.mup_base_width = 16;
    mup.mup_output_mult = 2.0f;
    mup.mup_attn_mult = 1.5f;
    compare_with_forward(mup, 3, 40, "under muP");
}

/* ------------------------------------------------ a memorised text */

static const char TEXT[] = "kiln bakes small language models; greedy decoding repeats them.";

static kn_gpt *memorise(void)
{
    int n = (int)strlen(TEXT);
    kn_gpt_config c = {.vocab_size = 256, .block_size = 64, .n_layer = 2, .n_head = 2,
                       .n_embd = 32};
    kn_gpt *g = make(c, 11);
    kn_adamw *o = NULL;
    if (kn_adamw_new(&o, g) != KN_OK) { printf("# adamw: %s\n", kn_errmsg()); exit(1); }
    kn_adamw_hparams h = kn_adamw_defaults();
    h.lr = 1e-2f;
    h.weight_decay = 0.0f;
    int32_t in[64], tg[64];
    for (int t = 0; t < n - 1; t++) {
        in[t] = (unsigned char)TEXT[t];
        tg[t] = (unsigned char)TEXT[t + 1];
    }
    float loss = 0;
    for (int step = 0; step < 300; step++) {
        kn_gpt_zero_grad(g);
        if (kn_gpt_forward(g, in, tg, 1, n - 1, NULL, false, &loss) || kn_gpt_backward(g, 1.0f) ||
            kn_adamw_step(o, &h, NULL)) {
            printf("# training: %s\n", kn_errmsg());
            exit(1);
        }
    }
    NOTE("memorised in 300 steps: loss %.4f", (double)loss);
    kn_adamw_free(o);
    return g;
}

static int run_text(kn_gen *s, const char *prompt, kn_gen_opts o, char *text, kn_gen_end *why)
{
    int32_t p[128], out[256];
    int n = (int)strlen(prompt), n_out = 0;
    if (n > 128 || o.max_new_tokens > 256) { printf("# run_text: buffers too small\n"); exit(1); }
    for (int i = 0; i < n; i++) p[i] = (unsigned char)prompt[i];
    if (kn_gen_run(s, p, n, &o, out, &n_out, why, NULL, NULL) != KN_OK) {
        printf("# run: %s\n", kn_errmsg());
        n_out = 0;
    }
    for (int i = 0; i < n_out; i++) text[i] = (char)out[i];
    text[n_out] = '\0';
    return n_out;
}

static void test_memorised(void)
{
    kn_gpt *g = memorise();
    kn_gen *s = NULL;
    CHECK_OK(kn_gen_new(&s, g), "generator for the memorised model");
    if (!s) return;
    kn_gen_opts o = kn_gen_default_opts();
    o.temperature = 0.0f;
    int n = (int)strlen(TEXT);
    o.max_new_tokens = n - 5;
    char text[300];
    kn_gen_end why;
    run_text(s, "kiln ", o, text, &why);
    CHECK(strcmp(text, TEXT + 5) == 0 && why == KN_GEN_END_LENGTH,
          "greedy decoding reproduces the memorised text: \"%s\"", text);

    /* a stop token, then a stop sequence: both end the output, which includes them */
    int32_t semi = ';';
    o.stop_tokens = &semi;
    o.n_stop_tokens = 1;
    run_text(s, "kiln ", o, text, &why);
    CHECK(strcmp(text, "bakes small language models;") == 0 && why == KN_GEN_END_STOP,
          "stop token ';' ends generation after it: \"%s\"", text);
    o.n_stop_tokens = 0;
    int32_t seq[] = {'d', 'e', 'c'};
    int len = 3;
    o.stop_seqs = seq;
    o.stop_seq_lens = &len;
    o.n_stop_seqs = 1;
    run_text(s, "kiln ", o, text, &why);
    CHECK(strcmp(text, "bakes small language models; greedy dec") == 0 && why == KN_GEN_END_STOP,
          "stop sequence \"dec\" ends generation after it: \"%s\"", text);
    o.n_stop_seqs = 0;

    /* the context is full under KN_GEN_STOP: block_size 64, a 62-token prompt */
    char prompt[64];
    memset(prompt, 'k', 62);
    prompt[62] = '\0';
    o.on_full = KN_GEN_STOP;
    o.max_new_tokens = 10;
    int got = run_text(s, prompt, o, text, &why);
    CHECK(got == 3 && why == KN_GEN_END_FULL,
          "context full without sliding: 3 tokens after 62 of 64 (got %d, why %d)", got, (int)why);
    o.on_full = KN_GEN_SLIDE;
    got = run_text(s, prompt, o, text, &why);
    CHECK(got == 10 && why == KN_GEN_END_LENGTH, "sliding: all 10 tokens (got %d)", got);

    /* a prompt longer than the context keeps its last block_size tokens under sliding */
    char longp[100], cropped[65];
    for (int i = 0; i < 99; i++) longp[i] = (char)('a' + i % 26);
    longp[99] = '\0';
    memcpy(cropped, longp + 35, 65);
    char t1[300], t2[300];
    o.temperature = 1.0f;
    o.seed = 5;
    run_text(s, longp, o, t1, &why);
    run_text(s, cropped, o, t2, &why);
    CHECK(strcmp(t1, t2) == 0, "a 99-token prompt is cropped to its last 64 tokens");
    kn_gen_free(s);
    kn_gpt_free(g);
}

/* ------------------------------------------------ seeds, top_k, top_p, threads */

static int draw(kn_gen *s, kn_gen_opts o, int32_t *out)
{
    int32_t prompt[3] = {1, 2, 3};
    int n_out = 0;
    if (kn_gen_run(s, prompt, 3, &o, out, &n_out, NULL, NULL, NULL) != KN_OK)
        printf("# run: %s\n", kn_errmsg());
    return n_out;
}

static bool same(const int32_t *a, const int32_t *b, int n)
{
    return memcmp(a, b, sizeof(int32_t) * (size_t)n) == 0;
}

static void test_seeds_and_filters(void)
{
    kn_gpt *g = make(SMALL, 5);
    perturb(g, 0.1);
    kn_gen *s = NULL;
    CHECK_OK(kn_gen_new(&s, g), "generator");
    if (!s) return;
    kn_gen_opts o = kn_gen_default_opts();
    o.max_new_tokens = 60;
    int32_t a[60], b[60], c[60];
    o.seed = 42;
    draw(s, o, a);
    draw(s, o, b);
    o.seed = 43;
    draw(s, o, c);
    CHECK(same(a, b, 60), "same seed, same tokens");
    CHECK(!same(a, c, 60), "another seed, other tokens");

    kn_gen_opts greedy = o;
    greedy.temperature = 0.0f;
    draw(s, greedy, a);
    o.top_k = 1;
    draw(s, o, b);
    CHECK(same(a, b, 60), "top_k = 1 equals greedy decoding");
    o.top_k = 0;
    o.top_p = 1e-6f;
    draw(s, o, b);
    CHECK(same(a, b, 60), "a tiny top_p equals greedy decoding");
    o.top_p = 1.0f;
    o.temperature = 1e-42f;   /* a denormal: 1/temperature would overflow in float */
    draw(s, o, b);
    CHECK(same(a, b, 60), "a denormal temperature equals greedy decoding");
    o.temperature = 1.0f;

    /* thread count: logits and tokens bit for bit */
    const int threads[] = {1, 2, 3};
    int32_t ref[60];
    float ref_logits[64];
    bool all_same = true;
    for (int i = 0; i < 3; i++) {
        kn_set_threads(threads[i]);
        o.seed = 9;
        int32_t t[60];
        draw(s, o, t);
        if (i == 0) {
            memcpy(ref, t, sizeof ref);
            memcpy(ref_logits, kn_gen_logits(s), sizeof ref_logits);
        } else {
            all_same = all_same && same(ref, t, 60) &&
                       memcmp(ref_logits, kn_gen_logits(s), sizeof ref_logits) == 0;
        }
    }
    kn_set_threads(2);
    CHECK(all_same, "1, 2 and 3 threads: the same tokens and bit-identical logits");
    kn_gen_free(s);
    kn_gpt_free(g);
}

/* ------------------------------------------------ the sampler's statistics */

/* Draw n tokens from fixed logits; every count within 5 standard deviations of n·p. */
static void check_frequencies(kn_gen *s, const float *logits, kn_gen_opts o, const double *p,
                              int V, const char *what)
{
    enum { DRAWS = 20000 };
    int count[8] = {0};
    kn_rng r;
    kn_rng_seed(&r, 77);
    bool ok = true;
    for (int i = 0; i < DRAWS && ok; i++) {
        int32_t t = -1;
        ok = kn_gen_sample(s, logits, &o, &r, &t) == KN_OK && t >= 0 && t < V;
        if (ok) count[t]++;
    }
    double worst = 0.0;
    for (int v = 0; v < V; v++) {
        double mean = DRAWS * p[v], sd = sqrt(DRAWS * p[v] * (1.0 - p[v]));
        if (p[v] == 0.0) { if (count[v]) ok = false; continue; }
        double z = fabs(count[v] - mean) / sd;
        if (z > worst) worst = z;
    }
    CHECK(ok && worst < 5.0, "%s: frequencies over %d draws match (worst |z| %.2f < 5)", what,
          DRAWS, worst);
}

static void test_distribution(void)
{
    kn_gpt_config c = {.vocab_size = 4, .block_size = 8, .n_layer = 1, .n_head = 1, .n_embd = 8};
    kn_gpt *g = make(c, 1);
    kn_gen *s = NULL;
    CHECK_OK(kn_gen_new(&s, g), "a 4-token generator");
    if (!s) return;
    const double p[4] = {0.4, 0.3, 0.2, 0.1};
    float logits[4];
    for (int v = 0; v < 4; v++) logits[v] = (float)log(p[v]) + 3.0f;   /* any shift */
    kn_gen_opts o = kn_gen_default_opts();
    check_frequencies(s, logits, o, p, 4, "temperature 1: the softmax");

    o.temperature = 2.0f;
    double q[4], z = 0.0;
    for (int v = 0; v < 4; v++) z += q[v] = sqrt(p[v]);
    for (int v = 0; v < 4; v++) q[v] /= z;
    check_frequencies(s, logits, o, q, 4, "temperature 2: the softmax of logits/2");

    o.temperature = 1.0f;
    o.top_k = 2;
    const double k2[4] = {0.4 / 0.7, 0.3 / 0.7, 0.0, 0.0};
    check_frequencies(s, logits, o, k2, 4, "top_k = 2: the two likeliest, renormalised");

    o.top_k = 0;
    o.top_p = 0.65f;   /* 0.4 < 0.65 <= 0.7: the first two */
    check_frequencies(s, logits, o, k2, 4, "top_p = 0.65: the smallest set with mass >= 0.65");
    o.top_p = 0.35f;   /* the likeliest alone already has 0.4 */
    const double one[4] = {1.0, 0.0, 0.0, 0.0};
    check_frequencies(s, logits, o, one, 4, "top_p = 0.35: only the likeliest");
    o.top_p = 0.95f;
    check_frequencies(s, logits, o, p, 4, "top_p = 0.95: all four (0.9 < 0.95)");
    o.top_p = 1.0f;

    /* ties: greedy takes the lowest id; top_k = 1 too */
    float tie[4] = {1.0f, 3.0f, 3.0f, 0.0f};
    int32_t t = -1;
    kn_rng r;
    kn_rng_seed(&r, 1);
    o.temperature = 0.0f;
    kn_gen_sample(s, tie, &o, &r, &t);
    int32_t t2 = -1;
    o.temperature = 1.0f;
    o.top_k = 1;
    kn_gen_sample(s, tie, &o, &r, &t2);
    CHECK(t == 1 && t2 == 1, "ties: greedy and top_k = 1 take the lowest id (%d, %d)", t, t2);

    float bad[4] = {0.0f, NAN, 1.0f, 0.0f};
    CHECK_FAILS(kn_gen_sample(s, bad, &o, &r, &t), "logit of token 1", "a NaN logit is an error");
    kn_gen_free(s);
    kn_gpt_free(g);
}

/* ------------------------------------------------ errors */

static void test_errors(void)
{
    kn_gpt *g = make(SMALL, 3);
    kn_gen *s = NULL;
    CHECK_OK(kn_gen_new(&s, g), "generator");
    if (!s) return;
    int32_t prompt[4] = {1, 2, 3, 4}, out[8];
    int n = 0;
    kn_gen_opts o = kn_gen_default_opts();
    o.max_new_tokens = 8;
#define BAD_OPT(field, value, needle) do { \
        kn_gen_opts b_ = o; b_.field = value; \
        CHECK_FAILS(kn_gen_run(s, prompt, 4, &b_, out, &n, NULL, NULL, NULL), needle, \
                    "%s = %s is refused", #field, #value); \
    } while (0)
    BAD_OPT(max_new_tokens, -1, "max_new_tokens (-1) must be >= 0");
    BAD_OPT(temperature, -0.5f, "temperature (-0.5)");
    BAD_OPT(temperature, NAN, "temperature (nan)");
    BAD_OPT(top_k, 65, "top_k (65) must be in [0, vocab_size = 64]");
    BAD_OPT(top_k, -1, "top_k (-1)");
    BAD_OPT(top_p, 0.0f, "top_p (0) must be in (0, 1]");
    BAD_OPT(top_p, 1.5f, "top_p (1.5)");
    int32_t bad_stop = 64;
    kn_gen_opts b = o;
    b.stop_tokens = &bad_stop;
    b.n_stop_tokens = 1;
    CHECK_FAILS(kn_gen_run(s, prompt, 4, &b, out, &n, NULL, NULL, NULL),
                "stop token 64 (number 1) is outside [0, 64)", "a stop token out of range");
    int zero = 0;
    b = o;
    b.stop_seqs = prompt;
    b.stop_seq_lens = &zero;
    b.n_stop_seqs = 1;
    CHECK_FAILS(kn_gen_run(s, prompt, 4, &b, out, &n, NULL, NULL, NULL),
                "stop sequence 1 is empty", "an empty stop sequence");
    CHECK_FAILS(kn_gen_run(s, prompt, 0, &o, out, &n, NULL, NULL, NULL), "prompt is empty",
                "an empty prompt");
    int32_t bad_prompt[2] = {5, 64};
    CHECK_FAILS(kn_gen_run(s, bad_prompt, 2, &o, out, &n, NULL, NULL, NULL),
                "prompt token 64 (at index 1) is outside [0, 64)", "a prompt token out of range");
    int32_t longp[200] = {0};
    b = o;
    b.on_full = KN_GEN_STOP;
    CHECK_FAILS(kn_gen_run(s, longp, 200, &b, out, &n, NULL, NULL, NULL),
                "longer than block_size", "a too-long prompt without sliding");
    CHECK_FAILS(kn_gen_prefill(s, longp, 129), "prompt length 129 must be in [1, block_size = 128]",
                "prefill longer than the context");
    CHECK_OK(kn_gen_prefill(s, longp, 128), "prefill of exactly block_size");
    CHECK_FAILS(kn_gen_append(s, 1), "context is full", "append to a full cache");
    CHECK(kn_gen_length(s) == 128, "the failed append left the cache as it was");
    kn_gen_free(s);
    kn_gpt_free(g);
}

int main(void)
{
    kn_rng_seed(&rng, 2026);
    kn_set_threads(2);
    test_cache_matches_forward();
    test_memorised();
    test_seeds_and_filters();
    test_distribution();
    test_errors();
    kn_pool_shutdown();
    CHECK_DONE();
}
