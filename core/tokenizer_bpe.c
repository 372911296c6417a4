/* tokenizer_bpe.c — building a tokenizer from its parts, the merge table, encoding (with a
 * bounded per-thread cache of pre-token -> ids) and decoding. */
#include "tokenizer_internal.h"
#include "pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parts ------------------------------------------------------------------------------- */

static kn_status grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return KN_OK;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return kn_fail(KN_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", c * elem);
    *p = q;
    *cap = c;
    return KN_OK;
}

kn_status kn_tok_parts_add_token(kn_tok_parts *p, const uint8_t *bytes, size_t len, bool special)
{
    if (p->bytes_len + len > UINT32_MAX || p->n_vocab >= UINT32_MAX - 2)
        return kn_fail(KN_ERR_ARG, "%s: the vocabulary is too large", p->origin);
    if (grow((void **)&p->off, &p->off_cap, p->n_vocab + 2, sizeof *p->off) != KN_OK ||
        grow((void **)&p->special, &p->special_cap, p->n_vocab + 2, 1) != KN_OK ||
        grow((void **)&p->bytes, &p->bytes_cap, p->bytes_len + len + 1, 1) != KN_OK)
        return KN_ERR_NOMEM;
    if (p->n_vocab == 0) p->off[0] = 0;
    if (len) memcpy(p->bytes + p->bytes_len, bytes, len);
    p->bytes_len += len;
    p->special[p->n_vocab] = special;
    p->off[++p->n_vocab] = (uint32_t)p->bytes_len;
    return KN_OK;
}

kn_status kn_tok_parts_add_merge(kn_tok_parts *p, uint32_t left, uint32_t right, uint32_t made)
{
    if (grow((void **)&p->merges, &p->merges_cap, (size_t)p->n_merges + 1, sizeof *p->merges) != KN_OK)
        return KN_ERR_NOMEM;
    p->merges[p->n_merges][0] = left;
    p->merges[p->n_merges][1] = right;
    p->merges[p->n_merges][2] = made;
    p->n_merges++;
    return KN_OK;
}

void kn_tok_parts_free(kn_tok_parts *p)
{
    free(p->bytes);
    free(p->off);
    free(p->special);
    free(p->merges);
    memset(p, 0, sizeof *p);
}

/* ---- hashing and the merge table ---------------------------------------------------------- */

uint64_t kn_tok_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 32;
    return h * 0x9E3779B97F4A7C15ull;
}

static inline uint64_t pair_key(uint32_t left, uint32_t right)
{
    return ((uint64_t)left << 32 | right) + 1;
}

static inline uint64_t mix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    return k;
}

uint32_t kn_tok_rank(const kn_tokenizer *t, uint32_t left, uint32_t right)
{
    uint64_t key = pair_key(left, right);
    for (uint64_t i = mix64(key) & t->mmask;; i = (i + 1) & t->mmask) {
        if (t->mkey[i] == key) return t->mval[i];
        if (t->mkey[i] == 0) return KN_TOK_NONE;
    }
}

/* Insert or overwrite; returns the rank that was there (KN_TOK_NONE if none). */
static uint32_t rank_put(kn_tokenizer *t, uint32_t left, uint32_t right, uint32_t rank)
{
    uint64_t key = pair_key(left, right);
    uint64_t i = mix64(key) & t->mmask;
    while (t->mkey[i] != 0 && t->mkey[i] != key) i = (i + 1) & t->mmask;
    uint32_t old = t->mkey[i] ? t->mval[i] : KN_TOK_NONE;
    t->mkey[i] = key;
    t->mval[i] = rank;
    return old;
}

static bool token_is(const kn_tok_parts *p, uint32_t id, const uint8_t *a, size_t na,
                     const uint8_t *b, size_t nb)
{
    size_t n = p->off[id + 1] - p->off[id];
    const uint8_t *s = p->bytes + p->off[id];
    return n == na + nb && memcmp(s, a, na) == 0 && memcmp(s + na, b, nb) == 0;
}

static kn_status check_merges(const kn_tok_parts *p)
{
    for (uint32_t r = 0; r < p->n_merges; r++) {
        uint32_t l = p->merges[r][0], rt = p->merges[r][1], m = p->merges[r][2];
        if (l >= p->n_vocab || rt >= p->n_vocab || m >= p->n_vocab)
            return kn_fail(KN_ERR_FORMAT, "%s: merge %u refers to a token id outside the vocabulary of %u",
                           p->origin, r, p->n_vocab);
        const uint8_t *a = p->bytes + p->off[l], *b = p->bytes + p->off[rt];
        if (!token_is(p, m, a, p->off[l + 1] - p->off[l], b, p->off[rt + 1] - p->off[rt]))
            return kn_fail(KN_ERR_FORMAT, "%s: merge %u (ids %u + %u) does not make token %u "
                           "(its bytes are not the two tokens' bytes joined)", p->origin, r, l, rt, m);
    }
    return KN_OK;
}

/* A pair merged twice keeps its later rank; the earlier entry is dropped so ranks stay dense. */
static kn_status build_merge_table(kn_tokenizer *t, kn_tok_parts *p)
{
    uint64_t cap = 16;
    while (cap < 2ull * p->n_merges + 16) cap *= 2;
    t->mkey = calloc(cap, sizeof *t->mkey);
    t->mval = calloc(cap, sizeof *t->mval);
    if (!t->mkey || !t->mval) return kn_fail(KN_ERR_NOMEM, "tokenizer: out of memory for the merge table");
    t->mmask = cap - 1;
    uint8_t *dead = calloc(p->n_merges + 1, 1);
    if (!dead) return kn_fail(KN_ERR_NOMEM, "tokenizer: out of memory");
    for (uint32_t r = 0; r < p->n_merges; r++) {
        uint32_t old = rank_put(t, p->merges[r][0], p->merges[r][1], r);
        if (old != KN_TOK_NONE) dead[old] = 1;
    }
    uint32_t n = 0;
    for (uint32_t r = 0; r < p->n_merges; r++)
        if (!dead[r]) memmove(p->merges[n++], p->merges[r], sizeof p->merges[r]);
    free(dead);
    if (n != p->n_merges) {     /* ranks moved: refill */
        memset(t->mkey, 0, cap * sizeof *t->mkey);
        for (uint32_t r = 0; r < n; r++) rank_put(t, p->merges[r][0], p->merges[r][1], r);
        p->n_merges = n;
    }
    t->merges = p->merges;
    t->n_merges = p->n_merges;
    p->merges = NULL;
    return KN_OK;
}

static void find_byte_tokens(kn_tokenizer *t)
{
    for (int b = 0; b < 256; b++) t->byte_id[b] = KN_TOK_NONE;
    for (uint32_t id = 0; id < t->n_vocab; id++) {
        if (t->special[id] || t->tok_off[id + 1] - t->tok_off[id] != 1) continue;
        uint8_t b = t->tok_bytes[t->tok_off[id]];
        if (t->byte_id[b] == KN_TOK_NONE) t->byte_id[b] = id;
    }
}

kn_status kn_tok_build(kn_tokenizer **out, kn_tok_parts *p)
{
    *out = NULL;
    kn_status st = p->n_vocab ? check_merges(p)
                              : kn_fail(KN_ERR_FORMAT, "%s: the vocabulary is empty", p->origin);
    kn_tokenizer *t = NULL;
    if (st == KN_OK && !(t = calloc(1, sizeof *t)))
        st = kn_fail(KN_ERR_NOMEM, "tokenizer: out of memory");
    if (st == KN_OK) {
        t->refs = 1;
        t->n_vocab = p->n_vocab;
        t->tok_off = p->off; p->off = NULL;
        t->tok_bytes = p->bytes; p->bytes = NULL;
        t->special = p->special; p->special = NULL;
        st = build_merge_table(t, p);
    }
    if (st == KN_OK) {
        find_byte_tokens(t);
        for (uint32_t id = 0; id < t->n_vocab; id++) t->n_specials += t->special[id];
        t->special_ids = malloc((t->n_specials + 1) * sizeof *t->special_ids);
        if (!t->special_ids) st = kn_fail(KN_ERR_NOMEM, "tokenizer: out of memory");
        uint32_t k = 0;
        for (uint32_t id = 0; st == KN_OK && id < t->n_vocab; id++)
            if (t->special[id]) t->special_ids[k++] = id;
    }
    kn_tok_parts_free(p);
    if (st != KN_OK) { kn_tok_release(t); return st; }
    *out = t;
    return KN_OK;
}

kn_tokenizer *kn_tok_retain(kn_tokenizer *t)
{
    if (t) t->refs++;
    return t;
}

void kn_tok_release(kn_tokenizer *t)
{
    if (!t || --t->refs > 0) return;
    for (int i = 0; i < KN_TOK_MAX_THREADS; i++) free(t->cache[i]);
    free(t->tok_off);
    free(t->tok_bytes);
    free(t->special);
    free(t->merges);
    free(t->mkey);
    free(t->mval);
    free(t->special_ids);
    free(t);
}

/* ---- queries ------------------------------------------------------------------------------- */

int kn_tok_vocab_size(const kn_tokenizer *t) { return (int)t->n_vocab; }
int kn_tok_num_merges(const kn_tokenizer *t) { return (int)t->n_merges; }

const uint8_t *kn_tok_token_bytes(const kn_tokenizer *t, uint32_t id, size_t *len)
{
    if (id >= t->n_vocab) return NULL;
    *len = t->tok_off[id + 1] - t->tok_off[id];
    return t->tok_bytes + t->tok_off[id];
}

bool kn_tok_is_special(const kn_tokenizer *t, uint32_t id)
{
    return id < t->n_vocab && t->special[id];
}

int64_t kn_tok_special_id(const kn_tokenizer *t, const char *text)
{
    size_t n = strlen(text);
    for (uint32_t k = 0; k < t->n_specials; k++) {
        size_t len;
        const uint8_t *s = kn_tok_token_bytes(t, t->special_ids[k], &len);
        if (len == n && memcmp(s, text, n) == 0) return t->special_ids[k];
    }
    return -1;
}

kn_status kn_tok_merge(const kn_tokenizer *t, int rank, uint32_t *left, uint32_t *right, uint32_t *made)
{
    if (rank < 0 || (uint32_t)rank >= t->n_merges)
        return kn_fail(KN_ERR_ARG, "merge rank %d out of range (the tokenizer has %u merges)", rank, t->n_merges);
    *left = t->merges[rank][0];
    *right = t->merges[rank][1];
    *made = t->merges[rank][2];
    return KN_OK;
}

/* ---- files ---------------------------------------------------------------------------------- */

kn_status kn_tok_read_file(const char *path, uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return kn_fail(KN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        uint8_t *q = realloc(buf, 2 * cap + 1);
        if (!q) { free(buf); buf = NULL; break; }
        buf = q;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf) return kn_fail(KN_ERR_NOMEM, "%s: out of memory reading the file", path);
    if (err) { free(buf); return kn_fail(KN_ERR_IO, "%s: read error", path); }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return KN_OK;
}
