/* test_tokenizer.c — byte-level BPE: the pre-tokenizer's splits (GPT-2 pattern, invalid
 * UTF-8 bytes alone), training order and tie rule, min_frequency and vocab_size, special
 * tokens kept apart unless allowed, decode(encode(x)) == x for random bytes, the same ids at
 * any thread count, tokenizer.json round trip, and errors that name what is wrong. */
#include "check.h"
#include "tmpfiles.h"
#include "tokenizer.h"
#include "rng.h"
#include "pool.h"

#include <unistd.h>

/* The pre-tokens of s joined by '|'. */
static const char *split(const char *s, size_t len)
{
    static char out[512];
    size_t o = 0, pos = 0;
    while (pos < len) {
        size_t end = kn_pretok_next((const uint8_t *)s, len, pos);
        if (pos) out[o++] = '|';
        memcpy(out + o, s + pos, end - pos);
        o += end - pos;
        pos = end;
    }
    out[o] = 0;
    return out;
}

static void test_pretokenizer(void)
{
    static const struct { const char *in, *want; } cases[] = {
        {"Hello world", "Hello| world"},
        {"a  b", "a| | b"},
        {"x\n\n  y", "x|\n\n | y"},
        {"a  ", "a|  "},
        {"don't we'll I'm", "don|'t| we|'ll| I|'m"},
        {"I'LL", "I|'|LL"},
        {"123abc 45", "123|abc| 45"},
        {"hi!!! ?x", "hi|!!!| ?|x"},
        {"\xc3\xa9\xe4\xb8\xad" "1", "\xc3\xa9\xe4\xb8\xad|1"},        /* letters then a digit */
        {"x \xc2\xa0" "y", "x| |\xc2\xa0|y"},                          /* U+00A0 is white space */
        {"tab\t\tend", "tab|\t|\t|end"},                              /* only a plain space joins a word */
        {"a\xff" "b", "a|\xff|b"},                                  /* invalid bytes stand alone */
        {" \xff", " |\xff"},
        {"\xe2\x82" " x", "\xe2|\x82| x"},                             /* a truncated sequence */
        {"\xc0\xaf", "\xc0|\xaf"},                                  /* an overlong form */
        {"\xed\xa0\x80", "\xed|\xa0|\x80"},                         /* a UTF-16 surrogate */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = split(cases[i].in, strlen(cases[i].in));
        CHECK(strcmp(got, cases[i].want) == 0, "pre-tokens of case %zu", i);
        if (strcmp(got, cases[i].want) != 0) NOTE("got \"%s\"", got);
    }
}

static uint32_t id_of(const kn_tokenizer *t, const char *s)
{
    for (int id = 0; id < kn_tok_vocab_size(t); id++) {
        size_t n;
        const uint8_t *b = kn_tok_token_bytes(t, (uint32_t)id, &n);
        if (n == strlen(s) && memcmp(b, s, n) == 0) return (uint32_t)id;
    }
    return UINT32_MAX;
}

static uint32_t id_of_byte(const kn_tokenizer *t, uint8_t b)
{
    for (int id = 0; id < kn_tok_vocab_size(t); id++) {
        size_t n;
        const uint8_t *p = kn_tok_token_bytes(t, (uint32_t)id, &n);
        if (n == 1 && p[0] == b && !kn_tok_is_special(t, (uint32_t)id)) return (uint32_t)id;
    }
    return UINT32_MAX;
}

static bool merge_is(const kn_tokenizer *t, int rank, const char *left, const char *right)
{
    uint32_t l, r, m;
    return kn_tok_merge(t, rank, &l, &r, &m) == KN_OK && l == id_of(t, left) && r == id_of(t, right);
}

/* "ab" x3, " cd" x3, " ab" x2 as words: (a,b), (c,d), (Ġ,c) all have count 3 at first and
 * the smallest pair by id wins: 'a' < 'c' < 'Ġ' in the byte-level order. */
static void test_training_rules(void)
{
    const char *text = "ab ab ab cd cd cd";
    const char *specials[] = {"<|endoftext|>", "<pad>"};
    kn_tok_train_opts o = {.vocab_size = 1000, .specials = specials, .n_specials = 2};
    kn_tokenizer *t = NULL;
    CHECK_OK(kn_tok_train_text(&t, text, strlen(text), &o), "train on a tiny text");
    if (!t) return;
    CHECK(kn_tok_is_special(t, 0) && kn_tok_is_special(t, 1) && kn_tok_special_id(t, "<pad>") == 1,
          "special tokens take ids 0 and 1 in the order given");
    CHECK(id_of(t, "!") == 2 && id_of(t, "~") == 2 + 93 && id_of(t, "\xa1") == 2 + 94 &&
          id_of_byte(t, 0) == 2 + 188,
          "the byte alphabet follows in byte-level code point order ('!' first, byte 0 after the 188 printable)");
    CHECK(id_of(t, " ") == 2 + 188 + 32, "the space byte is Ġ = 256 + 32 in that order");
    CHECK(kn_tok_vocab_size(t) == 2 + 256 + kn_tok_num_merges(t), "vocab = specials + 256 bytes + merges");
    CHECK(kn_tok_num_merges(t) == 4 && merge_is(t, 0, "a", "b") && merge_is(t, 1, "c", "d") &&
          merge_is(t, 2, " ", "cd") && merge_is(t, 3, " ", "ab"),
          "merges: most frequent first, ties to the smallest pair of ids");
    kn_tok_release(t);

    o.min_frequency = 3;
    CHECK_OK(kn_tok_train_text(&t, text, strlen(text), &o), "train with min_frequency 3");
    CHECK(t && kn_tok_num_merges(t) == 3, "min_frequency 3 stops before the pair seen twice");
    kn_tok_release(t);

    o.min_frequency = 0;
    o.vocab_size = 2 + 256 + 2;
    CHECK_OK(kn_tok_train_text(&t, text, strlen(text), &o), "train to a vocabulary of 260");
    CHECK(t && kn_tok_vocab_size(t) == 260 && kn_tok_num_merges(t) == 2, "vocab_size bounds the merges");
    kn_tok_release(t);

    o.seen_alphabet = true;
    o.n_specials = 0;
    o.vocab_size = 100;
    CHECK_OK(kn_tok_train_text(&t, text, strlen(text), &o), "train with the seen alphabet");
    CHECK(t && id_of(t, "a") == 0 && id_of(t, " ") == 4 && id_of(t, "z") == UINT32_MAX,
          "seen alphabet: only the bytes present, in byte-level order (a b c d Ġ)");
    kn_ids ids = {0};
    CHECK_FAILS(kn_tok_encode(t, "abz", 3, false, &ids), "byte 0x7A at offset 2",
                "encoding a byte the vocabulary lacks names the byte and its offset");
    free(ids.ids);
    kn_tok_release(t);

    o = (kn_tok_train_opts){.vocab_size = 0};
    CHECK_FAILS(kn_tok_train_text(&t, text, 3, &o), "vocab_size", "vocab_size 0 is refused by name");
}

static kn_tokenizer *train_file(const char *path, int vocab)
{
    const char *specials[] = {"<|endoftext|>"};
    kn_tok_train_opts o = {.vocab_size = vocab, .specials = specials, .n_specials = 1};
    kn_tokenizer *t = NULL;
    CHECK_OK(kn_tok_train_files(&t, &path, 1, &o), "train %d tokens on %s", vocab, path);
    return t;
}

static bool same_ids(const kn_ids *a, const kn_ids *b)
{
    return a->n == b->n && memcmp(a->ids, b->ids, a->n * sizeof *a->ids) == 0;
}

static void test_round_trip(kn_tokenizer *t)
{
    kn_rng r;
    kn_rng_seed(&r, 7);
    uint8_t buf[600];
    int bad = 0;
    for (int k = 0; k < 300; k++) {
        size_t n = kn_rng_below(&r, sizeof buf);
        for (size_t i = 0; i < n; i++) {
            /* mostly bytes of text (ASCII, spaces, 2-byte letters), some of anything */
            uint64_t u = kn_rng_below(&r, 10);
            buf[i] = u < 5 ? (uint8_t)(0x20 + kn_rng_below(&r, 0x5F)) : u < 7 ? (uint8_t)" \n\t"[kn_rng_below(&r, 3)]
                   : u < 8 ? (uint8_t)(0xC3) : (uint8_t)kn_rng_below(&r, 256);
        }
        kn_ids ids = {0};
        uint8_t *back = NULL;
        size_t len = 0;
        if (kn_tok_encode(t, buf, n, false, &ids) != KN_OK || /* evaluated once: not inside CHECK */
            kn_tok_decode(t, ids.ids, ids.n, &back, &len) != KN_OK || len != n || memcmp(back, buf, n) != 0)
            bad++;
        free(ids.ids);
        free(back);
    }
    CHECK(bad == 0, "decode(encode(x)) == x for 300 random byte strings (%d failed)", bad);
}

static void test_specials(kn_tokenizer *t)
{
    const char *s = "one<|endoftext|>two";
    kn_ids plain = {0}, allowed = {0};
    CHECK_OK(kn_tok_encode(t, s, strlen(s), false, &plain), "encode text holding a special's string");
    CHECK_OK(kn_tok_encode(t, s, strlen(s), true, &allowed), "encode it with specials allowed");
    bool plain_has = false, allowed_has = false;
    for (size_t i = 0; i < plain.n; i++) plain_has |= plain.ids[i] == 0;
    for (size_t i = 0; i < allowed.n; i++) allowed_has |= allowed.ids[i] == 0;
    CHECK(!plain_has, "without allow_special the string stays ordinary text");
    CHECK(allowed_has && allowed.n < plain.n, "with allow_special it becomes the special token (id 0)");
    uint8_t *back = NULL;
    size_t len = 0;
    bool decoded = kn_tok_decode(t, allowed.ids, allowed.n, &back, &len) == KN_OK;
    CHECK(decoded && len == strlen(s) && memcmp(back, s, len) == 0, "the special decodes to its text");
    uint32_t bad_id = (uint32_t)kn_tok_vocab_size(t);
    CHECK_FAILS(kn_tok_decode(t, &bad_id, 1, &back, &len), "outside the vocabulary", "decoding an unknown id fails");
    free(back);
    free(plain.ids);
    free(allowed.ids);
}

/* A text of several MiB (paragraphs of the test corpora) encodes the same at 1 and 2 threads. */
static void test_threads(kn_tokenizer *t, const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
    size_t cap = 3u << 20, n = 0;
    uint8_t *text = malloc(cap + na + nb + 2);
    while (n < cap) {
        memcpy(text + n, a, na); n += na;
        text[n++] = '\n';
        memcpy(text + n, b, nb); n += nb;
    }
    kn_ids one = {0}, two = {0};
    int saved = kn_get_threads();
    kn_set_threads(1);
    CHECK_OK(kn_tok_encode(t, text, n, true, &one), "encode %zu bytes on 1 thread", n);
    kn_set_threads(2);
    CHECK_OK(kn_tok_encode(t, text, n, true, &two), "encode them on 2 threads");
    CHECK(same_ids(&one, &two), "the same %zu ids at 1 and 2 threads", one.n);
    kn_set_threads(saved);
    free(one.ids); free(two.ids); free(text);
}

static void test_json(kn_tokenizer *t, const uint8_t *text, size_t len)
{
    const char *path = in_dir("tokenizer.json");
    CHECK_OK(kn_tok_save_json(t, path), "save tokenizer.json");
    kn_tokenizer *u = NULL;
    CHECK_OK(kn_tok_load_json(&u, path), "load it back");
    if (!u) return;
    CHECK(kn_tok_vocab_size(u) == kn_tok_vocab_size(t) && kn_tok_num_merges(u) == kn_tok_num_merges(t) &&
          kn_tok_special_id(u, "<|endoftext|>") == 0, "same vocabulary, merges and special");
    kn_ids a = {0}, b = {0};
    bool encoded = kn_tok_encode(t, text, len, false, &a) == KN_OK && kn_tok_encode(u, text, len, false, &b) == KN_OK;
    CHECK(encoded && same_ids(&a, &b), "same ids for a corpus file (%zu tokens)", a.n);
    free(a.ids); free(b.ids);
    kn_tok_release(u);
    unlink(path);

    CHECK_FAILS(kn_tok_load_json(&u, in_dir("missing.json")), "missing.json", "a missing file is named");
    static const struct { const char *json, *needle, *what; } bad[] = {
        {"{\"model\": ", "not valid JSON", "truncated JSON"},
        {"{\"normalizer\": {\"type\": \"NFC\"}, \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
         " \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}", "normalizer", "a normalizer is refused"},
        {"{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true},"
         " \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}", "add_prefix_space", "a prefix space is refused"},
        {"{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
         " \"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}", "their join", "a merge whose join is missing"},
        {"{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
         " \"model\": {\"vocab\": {\"a\": 0, \"b\": 2}, \"merges\": []}}", "token ids must be 0..1", "a gap in the ids"},
        {"{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
         " \"model\": {\"vocab\": {\"a b\": 0}, \"merges\": []}}", "not a byte-level string", "a token that is not byte-level"},
        {"{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
         " \"model\": {\"vocab\": {\"a\": 900000000}, \"merges\": []}}", "must be 0..0", "a huge id is refused before allocating"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *p = in_dir("bad.json");
        write_file(p, bad[i].json, strlen(bad[i].json));
        CHECK_FAILS(kn_tok_load_json(&u, p), bad[i].needle, "%s", bad[i].what);
        unlink(p);
    }
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(*len + 1);
    if (fread(p, 1, *len, f) != *len) { perror(path); exit(2); }
    fclose(f);
    return p;
}

int main(void)
{
    tmp_dir_make("tok");
    test_pretokenizer();
    test_training_rules();
    size_t na, nb;
    uint8_t *en = slurp("tests/data/tiny_en.txt", &na), *other = slurp("tests/data/tiny_other.txt", &nb);
    kn_tokenizer *t = train_file("tests/data/tiny_en.txt", 600);
    if (t) {
        test_round_trip(t);
        test_specials(t);
        test_threads(t, en, na, other, nb);
        test_json(t, other, nb);
    }
    kn_tok_release(t);
    kn_pool_shutdown();
    free(en);
    free(other);
    int removed = rmdir(dir);
    CHECK(removed == 0, "the test left no files behind");
    CHECK_DONE();
}
