/* tokenizer_train.c — byte-level BPE training by the rules of Hugging Face tokenizers'
 * BpeTrainer, so that the same corpus and settings give the same merges:
 *   - the text is read line by line (each line keeps its '\n') and each line is
 *     pre-tokenized on its own; words are counted;
 *   - ids: the special tokens, then the byte alphabet sorted by the code point of each
 *     byte's byte-level character, then one token per merge;
 *   - a max-heap of (count, pair) entries, each carrying the words where the pair was
 *     seen; the top is the highest count, ties going to the smallest (left id, right id);
 *     an entry whose count is stale is re-queued with the current count; merging updates
 *     pair counts from the words changed, and pairs that gained occurrences are queued anew
 *     (with just the words where they gained them);
 *   - training stops at the vocabulary size, or when the best count is below 1 or below
 *     min_frequency. A merge that makes an existing string reuses its id. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct { uint32_t *v; uint32_t n, cap; } u32_list;

static kn_status list_push(u32_list *l, uint32_t x)
{
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? 2 * l->cap : 4;
        uint32_t *p = realloc(l->v, (size_t)cap * sizeof *p);
        if (!p) return kn_fail(KN_ERR_NOMEM, "training: out of memory");
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = x;
    return KN_OK;
}

/* ---- counting words ------------------------------------------------------------------- */

typedef struct {
    uint64_t hash, count;
    uint32_t off, len;
} word_slot;

typedef struct {
    word_slot *slot;             /* open addressing; len 0 = empty */
    uint64_t mask, used;
    uint8_t *bytes;              /* the words' bytes */
    size_t nbytes, cap;
} word_table;

static kn_status words_grow(word_table *w)
{
    uint64_t cap = w->slot ? 2 * (w->mask + 1) : 1u << 16;
    word_slot *s = calloc(cap, sizeof *s);
    if (!s) return kn_fail(KN_ERR_NOMEM, "training: out of memory counting words");
    for (uint64_t i = 0; w->slot && i <= w->mask; i++) {
        if (!w->slot[i].len) continue;
        uint64_t j = w->slot[i].hash & (cap - 1);
        while (s[j].len) j = (j + 1) & (cap - 1);
        s[j] = w->slot[i];
    }
    free(w->slot);
    w->slot = s;
    w->mask = cap - 1;
    return KN_OK;
}

static kn_status words_add(word_table *w, const uint8_t *p, size_t n)
{
    if (!w->slot || 2 * (w->used + 1) > w->mask + 1) {
        kn_status st = words_grow(w);
        if (st != KN_OK) return st;
    }
    uint64_t h = kn_tok_hash(p, n), i = h & w->mask;
    for (; w->slot[i].len; i = (i + 1) & w->mask) {
        word_slot *s = &w->slot[i];
        if (s->hash == h && s->len == n && memcmp(w->bytes + s->off, p, n) == 0) { s->count++; return KN_OK; }
    }
    if (w->nbytes + n > UINT32_MAX) return kn_fail(KN_ERR_ARG, "training: the distinct words exceed 4 GiB");
    if (w->nbytes + n > w->cap) {
        size_t cap = w->cap ? w->cap : 1 << 20;
        while (cap < w->nbytes + n) cap *= 2;
        uint8_t *b = realloc(w->bytes, cap);
        if (!b) return kn_fail(KN_ERR_NOMEM, "training: out of memory counting words");
        w->bytes = b;
        w->cap = cap;
    }
    memcpy(w->bytes + w->nbytes, p, n);
    w->slot[i] = (word_slot){h, 1, (uint32_t)w->nbytes, (uint32_t)n};
    w->nbytes += n;
    w->used++;
    return KN_OK;
}

/* Each line (with its '\n') is pre-tokenized on its own, as HF's train_from_files reads. */
static kn_status count_words(word_table *w, const uint8_t *s, size_t len)
{
    size_t line = 0;
    while (line < len) {
        const uint8_t *nl = memchr(s + line, '\n', len - line);
        size_t end = nl ? (size_t)(nl - s) + 1 : len;
        for (size_t pos = line; pos < end;) {
            size_t next = line + kn_pretok_next(s + line, end - line, pos - line);
            kn_status st = words_add(w, s + pos, next - pos);
            if (st != KN_OK) return st;
            pos = next;
        }
        line = end;
        if (kn_interrupted) return kn_fail(KN_ERR_INTERRUPTED, "training: interrupted");
    }
    return KN_OK;
}

/* ---- the vocabulary under construction ------------------------------------------------ */

typedef struct {
    kn_tok_parts parts;
    uint32_t *slot;              /* bytes -> id, open addressing, KN_TOK_NONE = empty */
    uint64_t mask;
} vocab_builder;

static const uint8_t *vb_bytes(const vocab_builder *v, uint32_t id, size_t *n)
{
    *n = v->parts.off[id + 1] - v->parts.off[id];
    return v->parts.bytes + v->parts.off[id];
}

/* A special token is found by its bytes only when its text is printable ASCII: only then is
 * its text also the byte-level string of those bytes (HF keys its vocabulary by string). */
static bool indexable(const vocab_builder *v, uint32_t id)
{
    if (!v->parts.special[id]) return true;
    size_t n;
    const uint8_t *p = vb_bytes(v, id, &n);
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x21 || p[i] > 0x7E) return false;
    return true;
}

static uint32_t vb_find(const vocab_builder *v, const uint8_t *p, size_t n)
{
    if (!v->slot) return KN_TOK_NONE;
    for (uint64_t i = kn_tok_hash(p, n) & v->mask;; i = (i + 1) & v->mask) {
        uint32_t id = v->slot[i];
        if (id == KN_TOK_NONE) return KN_TOK_NONE;
        size_t m;
        const uint8_t *q = vb_bytes(v, id, &m);
        if (m == n && memcmp(p, q, n) == 0) return id;
    }
}

static kn_status vb_index(vocab_builder *v, uint32_t id)
{
    if (!v->slot || 2 * ((uint64_t)id + 1) > v->mask + 1) {
        uint64_t cap = v->slot ? 2 * (v->mask + 1) : 1024;
        uint32_t *s = malloc(cap * sizeof *s);
        if (!s) return kn_fail(KN_ERR_NOMEM, "training: out of memory");
        memset(s, 0xFF, cap * sizeof *s);
        free(v->slot);
        v->slot = s;
        v->mask = cap - 1;
        for (uint32_t j = 0; j < id; j++) {
            size_t n;
            const uint8_t *p = vb_bytes(v, j, &n);
            if (!indexable(v, j)) continue;
            uint64_t i = kn_tok_hash(p, n) & v->mask;
            while (v->slot[i] != KN_TOK_NONE) i = (i + 1) & v->mask;
            v->slot[i] = j;
        }
    }
    if (!indexable(v, id)) return KN_OK;
    size_t n;
    const uint8_t *p = vb_bytes(v, id, &n);
    uint64_t i = kn_tok_hash(p, n) & v->mask;
    while (v->slot[i] != KN_TOK_NONE) i = (i + 1) & v->mask;
    v->slot[i] = id;
    return KN_OK;
}

/* The id of the token with these bytes, added if new. */
static kn_status vb_get(vocab_builder *v, const uint8_t *p, size_t n, bool special, uint32_t *id)
{
    *id = vb_find(v, p, n);
    if (*id != KN_TOK_NONE) return KN_OK;
    kn_status st = kn_tok_parts_add_token(&v->parts, p, n, special);
    if (st != KN_OK) return st;
    *id = v->parts.n_vocab - 1;
    return vb_index(v, *id);
}

static kn_status add_specials(vocab_builder *v, const kn_tok_train_opts *o)
{
    for (int k = 0; k < o->n_specials; k++) {
        const char *s = o->specials[k];
        size_t len = strlen(s);
        if (len == 0) return kn_fail(KN_ERR_ARG, "training: special token %d is empty", k + 1);
        bool seen = false;
        for (uint32_t j = 0; j < v->parts.n_vocab && !seen; j++) {
            size_t n;
            const uint8_t *p = vb_bytes(v, j, &n);
            seen = n == len && memcmp(p, s, n) == 0;
        }
        if (seen) continue;
        kn_status st = kn_tok_parts_add_token(&v->parts, (const uint8_t *)s, len, true);
        if (st == KN_OK) st = vb_index(v, v->parts.n_vocab - 1);
        if (st != KN_OK) return st;
    }
    return KN_OK;
}

/* The byte alphabet in the order of the bytes' byte-level code points; byte_id[b] is the
 * token of byte b (KN_TOK_NONE for bytes left out of a seen-only alphabet). */
static kn_status add_alphabet(vocab_builder *v, const bool used[256], uint32_t byte_id[256])
{
    int order[256];
    int n = 0;
    for (uint32_t cp = 0; cp < 512; cp++) {
        int b = kn_bytelevel_byte(cp);
        if (b >= 0) order[n++] = b;
    }
    for (int i = 0; i < 256; i++) {
        int b = order[i];
        byte_id[b] = KN_TOK_NONE;
        if (!used[b]) continue;
        uint8_t x = (uint8_t)b;
        kn_status st = vb_get(v, &x, 1, false, &byte_id[b]);
        if (st != KN_OK) return st;
    }
    return KN_OK;
}

/* ---- pairs and the queue ------------------------------------------------------------- */

typedef struct {
    uint64_t *key;               /* (left << 32 | right) + 1; 0 = empty */
    uint32_t *idx;
    uint64_t mask, used;
    int64_t *count;              /* per pair index */
    u32_list *where;             /* words where the pair gained occurrences this round */
    uint32_t (*pair)[2];
    uint32_t n, cap;
} pair_table;

static uint64_t mix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    return k;
}

static kn_status pairs_rehash(pair_table *t)
{
    uint64_t cap = t->key ? 2 * (t->mask + 1) : 1u << 16;
    uint64_t *key = calloc(cap, sizeof *key);
    uint32_t *idx = malloc(cap * sizeof *idx);
    if (!key || !idx) { free(key); free(idx); return kn_fail(KN_ERR_NOMEM, "training: out of memory for pairs"); }
    for (uint32_t i = 0; i < t->n; i++) {
        uint64_t k = ((uint64_t)t->pair[i][0] << 32 | t->pair[i][1]) + 1, j = mix(k) & (cap - 1);
        while (key[j]) j = (j + 1) & (cap - 1);
        key[j] = k;
        idx[j] = i;
    }
    free(t->key);
    free(t->idx);
    t->key = key;
    t->idx = idx;
    t->mask = cap - 1;
    return KN_OK;
}

/* The index of pair (a, b), added with count 0 if new; UINT32_MAX when out of memory. */
static uint32_t pair_index(pair_table *t, uint32_t a, uint32_t b)
{
    if (!t->key || 2 * ((uint64_t)t->n + 1) > t->mask + 1) {
        if (pairs_rehash(t) != KN_OK) return UINT32_MAX;
    }
    uint64_t k = ((uint64_t)a << 32 | b) + 1, j = mix(k) & t->mask;
    for (; t->key[j]; j = (j + 1) & t->mask)
        if (t->key[j] == k) return t->idx[j];
    if (t->n == t->cap) {
        uint32_t cap = t->cap ? 2 * t->cap : 1u << 16;
        int64_t *c = realloc(t->count, (size_t)cap * sizeof *c);
        if (c) t->count = c;
        u32_list *w = realloc(t->where, (size_t)cap * sizeof *w);
        if (w) t->where = w;
        uint32_t (*p)[2] = realloc(t->pair, (size_t)cap * sizeof *p);
        if (p) t->pair = p;
        if (!c || !w || !p) { kn_fail(KN_ERR_NOMEM, "training: out of memory for pairs"); return UINT32_MAX; }
        t->cap = cap;
    }
    uint32_t i = t->n++;
    t->count[i] = 0;
    t->where[i] = (u32_list){0};
    t->pair[i][0] = a;
    t->pair[i][1] = b;
    t->key[j] = k;
    t->idx[j] = i;
    return i;
}

static void pairs_free(pair_table *t)
{
    for (uint32_t i = 0; i < t->n; i++) free(t->where[i].v);
    free(t->key); free(t->idx); free(t->count); free(t->where); free(t->pair);
}

typedef struct {
    int64_t count;
    uint32_t a, b;
    u32_list pos;
} entry;

typedef struct { entry *e; size_t n, cap; } queue;

/* Higher count first; equal counts: the smaller pair (left id, then right id) first. */
static bool entry_before(const entry *x, const entry *y)
{
    if (x->count != y->count) return x->count > y->count;
    return x->a != y->a ? x->a < y->a : x->b < y->b;
}

static kn_status queue_push(queue *q, entry x)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 1u << 16;
        entry *e = realloc(q->e, cap * sizeof *e);
        if (!e) { free(x.pos.v); return kn_fail(KN_ERR_NOMEM, "training: out of memory for the queue"); }
        q->e = e;
        q->cap = cap;
    }
    size_t i = q->n++;
    while (i > 0 && entry_before(&x, &q->e[(i - 1) / 2])) { q->e[i] = q->e[(i - 1) / 2]; i = (i - 1) / 2; }
    q->e[i] = x;
    return KN_OK;
}

static entry queue_pop(queue *q)
{
    entry top = q->e[0], x = q->e[--q->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->n) break;
        if (c + 1 < q->n && entry_before(&q->e[c + 1], &q->e[c])) c++;
        if (!entry_before(&q->e[c], &x)) break;
        q->e[i] = q->e[c];
        i = c;
    }
    if (q->n) q->e[i] = x;
    return top;
}

/* ---- the words as symbol sequences ------------------------------------------------------ */

typedef struct {
    uint32_t *sym;               /* all words' symbols */
    uint64_t *off;               /* [n + 1] start of each word's symbols */
    uint32_t *len;               /* current length (merges shorten words in place) */
    uint64_t *count;
    uint32_t n;
} word_list;

typedef struct {
    pair_table *pairs;
    u32_list touched;            /* pair indices with a gain this round */
} round_state;

/* Apply one change of HF's Word::merge: the pair's count moves by delta times the word's
 * count, and a gain records the word for the pair's next queue entry. */
static kn_status change(round_state *r, uint32_t a, uint32_t b, int delta, uint32_t w, uint64_t count)
{
    uint32_t i = pair_index(r->pairs, a, b);
    if (i == UINT32_MAX) return KN_ERR_NOMEM;
    r->pairs->count[i] += delta * (int64_t)count;
    if (delta < 0) return KN_OK;
    u32_list *where = &r->pairs->where[i];
    if (where->n == 0 && list_push(&r->touched, i) != KN_OK) return KN_ERR_NOMEM;
    if (where->n && where->v[where->n - 1] == w) return KN_OK;
    return list_push(where, w);
}

/* Merge (a, b) -> m left to right in word w, reporting changes exactly as HF's
 * Word::merge does (the merged pair itself is not decremented). */
static kn_status merge_word(word_list *W, round_state *r, uint32_t w, uint32_t a, uint32_t b, uint32_t m)
{
    uint32_t *s = W->sym + W->off[w];
    uint32_t n = W->len[w];
    uint64_t c = W->count[w];
    kn_status st = KN_OK;
    for (uint32_t i = 0; i < n && st == KN_OK; i++) {
        if (s[i] != a || i + 1 >= n || s[i + 1] != b) continue;
        if (i > 0) {
            st = change(r, s[i - 1], a, -1, w, c);
            if (st == KN_OK) st = change(r, s[i - 1], m, 1, w, c);
        }
        s[i] = m;
        memmove(s + i + 1, s + i + 2, (n - i - 2) * sizeof *s);
        n--;
        if (st == KN_OK && i + 1 < n) {
            st = change(r, b, s[i + 1], -1, w, c);
            if (st == KN_OK) st = change(r, m, s[i + 1], 1, w, c);
        }
    }
    W->len[w] = n;
    return st;
}

/* Pairs that gained occurrences go back in the queue with their words. */
static kn_status queue_touched(queue *q, round_state *r)
{
    kn_status st = KN_OK;
    for (uint32_t k = 0; k < r->touched.n; k++) {
        uint32_t i = r->touched.v[k];
        pair_table *p = r->pairs;
        u32_list where = p->where[i];
        p->where[i] = (u32_list){0};
        if (st == KN_OK && p->count[i] > 0)
            st = queue_push(q, (entry){p->count[i], p->pair[i][0], p->pair[i][1], where});
        else
            free(where.v);
    }
    r->touched.n = 0;
    return st;
}

/* ---- training ------------------------------------------------------------------------ */

typedef struct {
    vocab_builder v;
    word_list W;
    pair_table pairs;
    round_state r;
    queue q;
    uint8_t *join;               /* scratch for a new token's bytes */
    size_t join_cap;
} trainer;

static void trainer_free(trainer *T)
{
    kn_tok_parts_free(&T->v.parts);
    free(T->v.slot);
    free(T->W.sym); free(T->W.off); free(T->W.len); free(T->W.count);
    pairs_free(&T->pairs);
    free(T->r.touched.v);
    for (size_t i = 0; i < T->q.n; i++) free(T->q.e[i].pos.v);
    free(T->q.e);
    free(T->join);
}

static void report(const kn_tok_train_opts *o, const char *stage, int64_t done, int64_t total)
{
    if (o->progress) o->progress(o->progress_ctx, stage, done, total);
}

/* Words as symbols (byte tokens), and the first count of every pair. */
static kn_status load_words(trainer *T, const word_table *wt, const uint32_t byte_id[256])
{
    word_list *W = &T->W;
    W->n = (uint32_t)wt->used;
    W->sym = malloc((wt->nbytes + 1) * sizeof *W->sym);
    W->off = malloc(((size_t)W->n + 1) * sizeof *W->off);
    W->len = malloc(((size_t)W->n + 1) * sizeof *W->len);
    W->count = malloc(((size_t)W->n + 1) * sizeof *W->count);
    if (!W->sym || !W->off || !W->len || !W->count) return kn_fail(KN_ERR_NOMEM, "training: out of memory for words");
    uint32_t w = 0;
    uint64_t at = 0;
    for (uint64_t i = 0; wt->slot && i <= wt->mask; i++) {
        const word_slot *s = &wt->slot[i];
        if (!s->len) continue;
        W->off[w] = at;
        W->len[w] = s->len;
        W->count[w] = s->count;
        for (uint32_t j = 0; j < s->len; j++) W->sym[at + j] = byte_id[wt->bytes[s->off + j]];
        at += s->len;
        w++;
    }
    W->off[w] = at;
    T->r.pairs = &T->pairs;
    for (w = 0; w < W->n; w++) {
        const uint32_t *s = W->sym + W->off[w];
        for (uint32_t i = 0; i + 1 < W->len[w]; i++)
            if (change(&T->r, s[i], s[i + 1], 1, w, W->count[w]) != KN_OK) return KN_ERR_NOMEM;
    }
    return queue_touched(&T->q, &T->r);
}

/* The id of left's bytes followed by right's (a new token unless that string exists). */
static kn_status joined_id(trainer *T, uint32_t a, uint32_t b, uint32_t *m)
{
    size_t na, nb;
    const uint8_t *pa = vb_bytes(&T->v, a, &na), *pb = vb_bytes(&T->v, b, &nb);
    if (na + nb > T->join_cap) {
        size_t cap = 2 * (na + nb);
        uint8_t *j = realloc(T->join, cap);
        if (!j) return kn_fail(KN_ERR_NOMEM, "training: out of memory");
        T->join = j;
        T->join_cap = cap;
    }
    memcpy(T->join, pa, na);
    memcpy(T->join + na, pb, nb);
    return vb_get(&T->v, T->join, na + nb, false, m);
}

static kn_status merge_loop(trainer *T, const kn_tok_train_opts *o)
{
    uint32_t start = T->v.parts.n_vocab;
    int64_t total = o->vocab_size > (int)start ? o->vocab_size - (int)start : 0;
    while (T->v.parts.n_vocab < (uint32_t)o->vocab_size && T->q.n > 0) {
        entry top = queue_pop(&T->q);
        uint32_t pi = pair_index(&T->pairs, top.a, top.b);
        if (pi == UINT32_MAX) { free(top.pos.v); return KN_ERR_NOMEM; }
        if (top.count != T->pairs.count[pi]) {
            top.count = T->pairs.count[pi];
            kn_status st = queue_push(&T->q, top);
            if (st != KN_OK) return st;
            continue;
        }
        if (top.count < 1 || o->min_frequency > top.count) { free(top.pos.v); break; }
        uint32_t m = 0;
        kn_status st = joined_id(T, top.a, top.b, &m);
        if (st == KN_OK) st = kn_tok_parts_add_merge(&T->v.parts, top.a, top.b, m);
        for (uint32_t k = 0; st == KN_OK && k < top.pos.n; k++)
            st = merge_word(&T->W, &T->r, top.pos.v[k], top.a, top.b, m);
        free(top.pos.v);
        if (st == KN_OK) st = queue_touched(&T->q, &T->r);
        if (st != KN_OK) return st;
        if (T->v.parts.n_merges % 1000 == 0) {
            report(o, "merges", (int64_t)(T->v.parts.n_vocab - start), total);
            if (kn_interrupted) return kn_fail(KN_ERR_INTERRUPTED, "training: interrupted");
        }
    }
    report(o, "merges", (int64_t)(T->v.parts.n_vocab - start), total);
    return KN_OK;
}

static kn_status check_opts(const kn_tok_train_opts *o)
{
    if (o->vocab_size < 1 || o->vocab_size > (1 << 24))
        return kn_fail(KN_ERR_ARG, "training: vocab_size must be between 1 and 16777216 (got %d)", o->vocab_size);
    if (o->min_frequency < 0)
        return kn_fail(KN_ERR_ARG, "training: min_frequency must be >= 0 (got %lld)", (long long)o->min_frequency);
    if (o->n_specials < 0 || (o->n_specials > 0 && !o->specials))
        return kn_fail(KN_ERR_ARG, "training: bad list of special tokens");
    return KN_OK;
}

static kn_status train_counted(kn_tokenizer **out, const word_table *wt, const kn_tok_train_opts *o)
{
    trainer T = {.v.parts.origin = "training"};
    bool used[256];
    uint32_t byte_id[256];
    for (int b = 0; b < 256; b++) used[b] = !o->seen_alphabet;
    for (size_t i = 0; o->seen_alphabet && i < wt->nbytes; i++) used[wt->bytes[i]] = true;
    kn_status st = add_specials(&T.v, o);
    if (st == KN_OK) st = add_alphabet(&T.v, used, byte_id);
    if (st == KN_OK) st = load_words(&T, wt, byte_id);
    if (st == KN_OK) st = merge_loop(&T, o);
    if (st == KN_OK) st = kn_tok_build(out, &T.v.parts);
    trainer_free(&T);
    return st;
}

static void words_free(word_table *w) { free(w->slot); free(w->bytes); }

kn_status kn_tok_train_text(kn_tokenizer **out, const void *text, size_t len, const kn_tok_train_opts *opts)
{
    *out = NULL;
    kn_status st = check_opts(opts);
    word_table wt = {0};
    if (st == KN_OK) st = count_words(&wt, text, len);
    if (st == KN_OK) st = train_counted(out, &wt, opts);
    words_free(&wt);
    return st;
}

kn_status kn_tok_train_files(kn_tokenizer **out, const char *const *paths, int n_paths,
                             const kn_tok_train_opts *opts)
{
    *out = NULL;
    kn_status st = check_opts(opts);
    if (st == KN_OK && n_paths < 1) st = kn_fail(KN_ERR_ARG, "training: no files given");
    word_table wt = {0};
    for (int i = 0; st == KN_OK && i < n_paths; i++) {
        uint8_t *data;
        size_t len;
        st = kn_tok_read_file(paths[i], &data, &len);
        if (st == KN_OK) st = count_words(&wt, data, len);
        free(data);
        report(opts, "count words", i + 1, n_paths);
    }
    if (st == KN_OK) st = train_counted(out, &wt, opts);
    words_free(&wt);
    return st;
}
