/* test_tokdata.c — token datasets and their tokenizers: the vocabulary comes from the
 * tokenizer (not the largest id), an id past it is refused at open naming the file and the
 * byte offset, a dataset keeps its tokenizer alive, the model-vocabulary check, and the
 * tokenizer's one-line JSON form round-trips, and checkpoints carry it (text + SHA-256). */
#include "check.h"
#include "tmpfiles.h"
#include "data.h"
#include "gpt_ckpt.h"
#include "tokenizer.h"

#include <stdint.h>
#include <unistd.h>

static const char *text =
    "the cat sat on the mat. the dog sat on the log. a cat and a dog met on a mat.\n"
    "the quick brown fox jumps over the lazy dog; the lazy dog sleeps.\n";

static kn_tokenizer *train_small(void)
{
    const char *specials[] = {"<|endoftext|>"};
    kn_tok_train_opts o = {.vocab_size = 300, .specials = specials, .n_specials = 1};
    kn_tokenizer *t = NULL;
    CHECK_OK(kn_tok_train_text(&t, text, strlen(text), &o), "train a small tokenizer");
    return t;
}

/* ids as little-endian uint16 into path; returns how many. */
static size_t write_ids(const char *path, const uint32_t *ids, size_t n)
{
    uint8_t *b = malloc(2 * n);
    for (size_t i = 0; i < n; i++) {
        b[2 * i] = (uint8_t)(ids[i] & 0xff);
        b[2 * i + 1] = (uint8_t)(ids[i] >> 8);
    }
    write_file(path, b, 2 * n);
    free(b);
    return n;
}

static void test_vocab_from_tokenizer(kn_tokenizer *t, const char *bin, const kn_ids *ids)
{
    int V = kn_tok_vocab_size(t);
    uint32_t mx = 0;
    for (size_t i = 0; i < ids->n; i++) if (ids->ids[i] > mx) mx = ids->ids[i];
    NOTE("tokenizer V = %d, largest id in the file = %u", V, mx);
    CHECK((int)mx + 1 < V, "the file does not use the tokenizer's last id (so the two rules differ)");

    kn_dataset *plain, *d;
    CHECK_OK(kn_dataset_open(&plain, bin, KN_DATA_U16, KN_SPLIT_ALL), "open without a tokenizer");
    CHECK(kn_dataset_vocab(plain) == (int)mx + 1 && kn_dataset_tokenizer(plain) == NULL,
          "without one: V = largest id + 1 (%d), no tokenizer", kn_dataset_vocab(plain));
    CHECK_OK(kn_dataset_open_tok(&d, bin, KN_DATA_U16, KN_SPLIT_ALL, t), "open with the tokenizer");
    CHECK(kn_dataset_vocab(d) == V && kn_dataset_tokenizer(d) == t && kn_dataset_format(d) == KN_DATA_U16,
          "with it: V = the tokenizer's size (%d), the tokenizer kept", kn_dataset_vocab(d));
    CHECK_OK(kn_dataset_check_vocab(d, V), "a model of the tokenizer's size takes it");
    CHECK_OK(kn_dataset_check_vocab(d, V + 47), "a padded embedding (V + 47) takes it");
    CHECK_FAILS(kn_dataset_check_vocab(d, V - 1), "vocabulary has 300 tokens (its tokenizer's) but the "
                "model's vocab_size is 299", "a model one token short is refused, saying why");
    CHECK_FAILS(kn_dataset_check_vocab(plain, (int)mx), "(no tokenizer: the largest id + 1)",
                "without a tokenizer the message says where V came from");
    kn_dataset_close(plain);
    kn_dataset_close(d);
}

static void test_out_of_range(kn_tokenizer *t)
{
    /* Valid ids with one equal to V (300) at token 31234 = byte offset 62468; then one past
     * the 1 MiB read chunk, so the offset must count from the file's start. */
    enum { N = 700000 };
    uint32_t *ids = calloc(N, sizeof *ids);
    for (size_t i = 0; i < N; i++) ids[i] = (uint32_t)(i % 290);
    ids[31234] = 300;
    const char *bad = in_dir("bad.bin");
    write_ids(bad, ids, N);
    kn_dataset *d = (kn_dataset *)1;
    char want[160];
    snprintf(want, sizeof want, "'%s': token 300 at byte offset 62468 is >= the vocabulary size 300 of "
             "its tokenizer", bad);
    CHECK_FAILS(kn_dataset_open_tok(&d, bad, KN_DATA_U16, KN_SPLIT_TRAIN, t), want,
                "an id == V is refused at open, naming file, id and byte offset");
    CHECK(d == NULL, "  ... and no dataset is returned");
    ids[31234] = 5;
    ids[600001] = 65535;   /* in the second 1 MiB chunk of the file */
    write_ids(bad, ids, N);
    snprintf(want, sizeof want, "'%s': token 65535 at byte offset 1200002 is >=", bad);
    CHECK_FAILS(kn_dataset_open_tok(&d, bad, KN_DATA_U16, KN_SPLIT_VAL, t), want,
                "a bad id in a later read chunk: the offset counts from the file's start");
    CHECK_OK(kn_dataset_open(&d, bad, KN_DATA_U16, KN_SPLIT_VAL), "the same file opens without a tokenizer");
    CHECK(kn_dataset_vocab(d) == 65536, "  ... with V = 65536 (largest id + 1)");
    kn_dataset_close(d);
    unlink(bad);
    free(ids);
}

static void test_lifetime(const char *bin)
{
    kn_tokenizer *t = train_small();
    if (!t) return;
    kn_dataset *d, *v;
    CHECK_OK(kn_dataset_open_tok(&d, bin, KN_DATA_U16, KN_SPLIT_ALL, t), "open with a fresh tokenizer");
    CHECK_OK(kn_dataset_open_tok(&v, bin, KN_DATA_U16, KN_SPLIT_ALL, t), "a second dataset shares it");
    kn_tok_release(t);   /* the caller's reference goes; the datasets hold theirs */
    kn_dataset_close(v);
    kn_tokenizer *held = kn_dataset_tokenizer(d);
    uint32_t one[] = {kn_tok_special_id(held, "<|endoftext|>") == 0 ? 1u : 0u};
    uint8_t *out = NULL;
    size_t len = 0;
    CHECK_OK(kn_tok_decode(held, one, 1, &out, &len), "the tokenizer still decodes after the caller "
             "and one dataset released it (ASan would see a use after free)");
    free(out);
    CHECK(kn_tok_vocab_size(held) == 300, "  ... and still has its 300 tokens");
    kn_dataset_close(d);   /* frees the tokenizer: LeakSanitizer checks that it is not leaked */
}

static void test_bytes_refuse_tokenizer(kn_tokenizer *t)
{
    const char *p = in_dir("bytes.txt");
    write_file(p, text, strlen(text));
    kn_dataset *d;
    CHECK_FAILS(kn_dataset_open_tok(&d, p, KN_DATA_BYTES, KN_SPLIT_ALL, t), "a tokenizer was given for a "
                "file of bytes", "bytes take no tokenizer");
    CHECK_OK(kn_dataset_open_tok(&d, p, KN_DATA_BYTES, KN_SPLIT_ALL, NULL), "bytes without one");
    CHECK(kn_dataset_vocab(d) == 256 && kn_dataset_tokenizer(d) == NULL && kn_dataset_format(d) == KN_DATA_BYTES,
          "bytes: V = 256, no tokenizer");
    CHECK_FAILS(kn_dataset_check_vocab(d, 200), "(bytes)", "a byte model needs 256");
    kn_dataset_close(d);
    unlink(p);
}

static void test_json_text(kn_tokenizer *t, const kn_ids *ids)
{
    char *json = NULL;
    CHECK_OK(kn_tok_to_json(t, &json), "tokenizer as one-line JSON");
    if (!json) return;
    CHECK(strchr(json, '\n') == NULL && strstr(json, "\"merges\"") != NULL, "no line breaks, has the merges");
    char *again = NULL;
    kn_tok_to_json(t, &again);
    CHECK(again && strcmp(json, again) == 0, "the same bytes every time (its hash identifies it)");
    free(again);
    kn_tokenizer *u = NULL;
    CHECK_OK(kn_tok_load_json_text(&u, json, strlen(json), "embedded"), "load it back from memory");
    kn_ids back = {0};
    if (u) kn_tok_encode(u, text, strlen(text), false, &back);
    bool same = u && back.n == ids->n && kn_tok_vocab_size(u) == kn_tok_vocab_size(t);
    for (size_t i = 0; same && i < back.n; i++) same = back.ids[i] == ids->ids[i];
    CHECK(same, "the loaded tokenizer encodes the text to the same %zu ids", ids->n);
    free(back.ids);
    kn_tok_release(u);
    json[strlen(json) / 2] = 0;
    CHECK_FAILS(kn_tok_load_json_text(&u, json, strlen(json), "ckpt.safetensors"), "ckpt.safetensors: not valid JSON",
                "truncated JSON is refused, naming its origin");
    free(json);
}

/* The last line of defence: whatever fills a batch, the forward refuses an id outside the
 * embedding rather than reading past it. */
static void test_forward_refuses(void)
{
    kn_gpt_config cfg = {.vocab_size = 300, .block_size = 4, .n_layer = 1, .n_head = 1, .n_embd = 8};
    kn_gpt *g = NULL;
    CHECK_OK(kn_gpt_new(&g, &cfg), "a model of V = 300");
    if (!g) return;
    int32_t in[4] = {1, 2, 299, 3}, tg[4] = {2, 299, 3, 4};
    float loss = 0;
    CHECK_OK(kn_gpt_forward(g, in, tg, 1, 4, NULL, false, &loss), "ids up to V - 1 are fine");
    in[2] = 300;
    CHECK_FAILS(kn_gpt_forward(g, in, tg, 1, 4, NULL, false, &loss), "input token 300 at position [b=0, t=2] "
                "is outside [0, 300)", "an input id == V is refused before any lookup");
    in[2] = 299;
    tg[3] = 65535;
    CHECK_FAILS(kn_gpt_forward(g, in, tg, 1, 4, NULL, false, &loss), "target token 65535", "a target id past V too");
    tg[3] = 4;
    in[0] = -1;
    CHECK_FAILS(kn_gpt_forward(g, in, tg, 1, 4, NULL, false, &loss), "input token -1", "a negative id too");
    kn_gpt_free(g);
}

static void test_checkpoint(kn_tokenizer *t, const kn_ids *ids)
{
    kn_gpt_config cfg = {.vocab_size = 304, .block_size = 8, .n_layer = 1, .n_head = 1, .n_embd = 8};
    kn_gpt *g = NULL;
    CHECK_OK(kn_gpt_new(&g, &cfg), "a model of V = 304");
    if (!g) return;
    const char *p = in_dir("m.safetensors");
    kn_gpt_save_opts o = {.tok_kind = KN_CKPT_TOK_BPE, .tokenizer = t};
    CHECK_OK(kn_gpt_save_with(p, g, &o), "save with the tokenizer");
    kn_ckpt *c = NULL;
    CHECK_OK(kn_ckpt_open(&c, p), "open it");
    kn_ckpt_tok_kind kind;
    kn_tokenizer *back = NULL;
    CHECK_OK(kn_gpt_ckpt_tokenizer(c, &kind, &back), "read the tokenizer back");
    kn_ids again = {0};
    if (back) kn_tok_encode(back, text, strlen(text), false, &again);
    bool same = kind == KN_CKPT_TOK_BPE && back && again.n == ids->n;
    for (size_t i = 0; same && i < again.n; i++) same = again.ids[i] == ids->ids[i];
    CHECK(same, "it is a BPE tokenizer that encodes the text to the same ids");
    free(again.ids);
    kn_tok_release(back);
    kn_ckpt_close(c);

    o = (kn_gpt_save_opts){.tok_kind = KN_CKPT_TOK_BYTES};
    CHECK_OK(kn_gpt_save_with(p, g, &o), "save with \"bytes\"");
    CHECK_OK(kn_ckpt_open(&c, p), "open it");
    CHECK(c && kn_gpt_ckpt_tokenizer(c, &kind, &back) == KN_OK && kind == KN_CKPT_TOK_BYTES && !back,
          "bytes come back as bytes, no tokenizer object");
    kn_ckpt_close(c);
    CHECK_OK(kn_gpt_save(p, g, NULL, NULL, 0), "kn_gpt_save records none");
    CHECK_OK(kn_ckpt_open(&c, p), "open it");
    CHECK(c && kn_gpt_ckpt_tokenizer(c, &kind, &back) == KN_OK && kind == KN_CKPT_TOK_NONE && !back,
          "none comes back as none");
    kn_ckpt_close(c);
    kn_gpt_free(g);

    cfg.vocab_size = 299;
    CHECK_OK(kn_gpt_new(&g, &cfg), "a model of V = 299");
    o = (kn_gpt_save_opts){.tok_kind = KN_CKPT_TOK_BPE, .tokenizer = t};
    CHECK_FAILS(kn_gpt_save_with(in_dir("small.safetensors"), g, &o), "the tokenizer has 300 tokens but "
                "the model's vocab_size is 299", "a tokenizer larger than the model is refused");
    CHECK(access(in_dir("small.safetensors"), F_OK) != 0, "  ... and nothing is written");
    kn_gpt_free(g);
    unlink(p);
}

int main(void)
{
    tmp_dir_make("tokdata");
    kn_tokenizer *t = train_small();
    if (!t) CHECK_DONE();
    kn_ids ids = {0};
    CHECK_OK(kn_tok_encode(t, text, strlen(text), false, &ids), "encode the text");
    /* The file: a short text whose ids stay below the tokenizer's last one. */
    const char *few = "the cat sat on the log.";
    kn_ids file_ids = {0};
    CHECK_OK(kn_tok_encode(t, few, strlen(few), false, &file_ids), "encode a short text for the file");
    char *bin = strdup(in_dir("train.bin"));
    write_ids(bin, file_ids.ids, file_ids.n);

    test_vocab_from_tokenizer(t, bin, &file_ids);
    test_out_of_range(t);
    test_lifetime(bin);
    test_bytes_refuse_tokenizer(t);
    test_json_text(t, &ids);
    test_checkpoint(t, &ids);
    test_forward_refuses();

    kn_tok_release(t);
    free(ids.ids);
    free(file_ids.ids);
    unlink(bin);
    free(bin);
    CHECK(rmdir(dir) == 0, "temp directory removed (nothing left behind)");
    CHECK_DONE();
}
