/* tokenizer_encode.c — encoding text to ids and back. A pre-token is merged by rank, lowest
 * first and leftmost among equals (GPT-2's rule); its ids are remembered in a bounded,
 * direct-mapped cache per worker thread, since the same words recur all through a text. */
#include "tokenizer_internal.h"
#include "pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_SLOTS (1u << 15)   /* 64-byte slots: 2 MiB per thread */
#define CACHE_KEY 24
#define CACHE_IDS 8
#define SHORT_PIECE 128          /* longer pre-tokens merge with a heap, not quadratic scans */
#define PARALLEL_MIN (1u << 21)  /* below 2 MiB one thread does it all */
#define CHUNKS_PER_THREAD 8

typedef struct {
    uint32_t hash;
    uint8_t klen, nids;          /* klen 0: empty slot */
    uint8_t key[CACHE_KEY];
    uint32_t ids[CACHE_IDS];
} cache_slot;

struct kn_tok_cache { cache_slot slot[CACHE_SLOTS]; };

static kn_status ids_reserve(kn_ids *out, size_t extra)
{
    if (out->n + extra <= out->cap) return KN_OK;
    size_t cap = out->cap ? out->cap : 1024;
    while (cap < out->n + extra) cap *= 2;
    uint32_t *p = realloc(out->ids, cap * sizeof *p);
    if (!p) return kn_fail(KN_ERR_NOMEM, "encode: out of memory for %zu token ids", cap);
    out->ids = p;
    out->cap = cap;
    return KN_OK;
}

static kn_status missing_byte(uint8_t b, size_t offset)
{
    return kn_fail(KN_ERR_ARG, "encode: byte 0x%02X at offset %zu has no token in this vocabulary "
                   "(it was trained without it)", b, offset);
}

/* ---- merging one pre-token ---------------------------------------------------------------- */

/* Short pieces: ranks of adjacent pairs in an array, the minimum found by a scan. */
static void merge_short(const kn_tokenizer *t, uint32_t *sym, size_t *np)
{
    size_t n = *np;
    uint32_t rank[SHORT_PIECE];
    for (size_t i = 0; i + 1 < n; i++) rank[i] = kn_tok_rank(t, sym[i], sym[i + 1]);
    while (n > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < n; i++)
            if (rank[i] < rank[best]) best = i;
        if (rank[best] == KN_TOK_NONE) break;
        sym[best] = t->merges[rank[best]][2];
        memmove(sym + best + 1, sym + best + 2, (n - best - 2) * sizeof *sym);
        memmove(rank + best + 1, rank + best + 2, (n - best - 2) * sizeof *rank);
        n--;
        if (best > 0) rank[best - 1] = kn_tok_rank(t, sym[best - 1], sym[best]);
        if (best + 1 < n) rank[best] = kn_tok_rank(t, sym[best], sym[best + 1]);
    }
    *np = n;
}

typedef struct { uint32_t rank; uint32_t pos; } heap_item;

static bool item_before(heap_item a, heap_item b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(heap_item *h, size_t *n, heap_item x)
{
    size_t i = (*n)++;
    while (i > 0 && item_before(x, h[(i - 1) / 2])) { h[i] = h[(i - 1) / 2]; i = (i - 1) / 2; }
    h[i] = x;
}

static heap_item heap_pop(heap_item *h, size_t *n)
{
    heap_item top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && item_before(h[c + 1], h[c])) c++;
        if (!item_before(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = x;
    return top;
}

/* Long pieces (long runs of digits, spaces, punctuation): a linked list of symbols and a
 * heap of candidate merges ordered by (rank, position); stale entries are skipped. */
static kn_status merge_long(const kn_tokenizer *t, uint32_t *sym, size_t *np)
{
    size_t n = *np;
    uint32_t *next = malloc(n * sizeof *next);
    uint32_t *prev = malloc(n * sizeof *prev);
    heap_item *heap = malloc(2 * n * sizeof *heap);
    if (!next || !prev || !heap) {
        free(next); free(prev); free(heap);
        return kn_fail(KN_ERR_NOMEM, "encode: out of memory for a pre-token of %zu bytes", n);
    }
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        next[i] = i + 1 < n ? (uint32_t)(i + 1) : KN_TOK_NONE;
        prev[i] = i > 0 ? (uint32_t)(i - 1) : KN_TOK_NONE;
        uint32_t r = i + 1 < n ? kn_tok_rank(t, sym[i], sym[i + 1]) : KN_TOK_NONE;
        if (r != KN_TOK_NONE) heap_push(heap, &nh, (heap_item){r, (uint32_t)i});
    }
    while (nh > 0) {
        heap_item it = heap_pop(heap, &nh);
        uint32_t p = it.pos, q = next[p];
        if (sym[p] == KN_TOK_NONE || q == KN_TOK_NONE || kn_tok_rank(t, sym[p], sym[q]) != it.rank)
            continue;
        sym[p] = t->merges[it.rank][2];
        sym[q] = KN_TOK_NONE;
        next[p] = next[q];
        if (next[q] != KN_TOK_NONE) prev[next[q]] = p;
        uint32_t r;
        if (prev[p] != KN_TOK_NONE && (r = kn_tok_rank(t, sym[prev[p]], sym[p])) != KN_TOK_NONE)
            heap_push(heap, &nh, (heap_item){r, prev[p]});
        if (next[p] != KN_TOK_NONE && (r = kn_tok_rank(t, sym[p], sym[next[p]])) != KN_TOK_NONE)
            heap_push(heap, &nh, (heap_item){r, p});
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (sym[i] != KN_TOK_NONE) sym[m++] = sym[i];
    *np = m;
    free(next); free(prev); free(heap);
    return KN_OK;
}

/* Append the ids of piece[0..n) (n >= 1) to out; offset locates it for messages. */
static kn_status encode_piece(const kn_tokenizer *t, kn_tok_cache *cache, const uint8_t *piece,
                              size_t n, size_t offset, kn_ids *out)
{
    if (ids_reserve(out, n) != KN_OK) return KN_ERR_NOMEM;
    if (n == 1) {
        uint32_t id = t->byte_id[piece[0]];
        if (id == KN_TOK_NONE) return missing_byte(piece[0], offset);
        out->ids[out->n++] = id;
        return KN_OK;
    }
    cache_slot *slot = NULL;
    uint32_t h = 0;
    if (n <= CACHE_KEY) {
        h = (uint32_t)kn_tok_hash(piece, n);
        slot = &cache->slot[h & (CACHE_SLOTS - 1)];
        if (slot->klen == n && slot->hash == h && memcmp(slot->key, piece, n) == 0) {
            memcpy(out->ids + out->n, slot->ids, slot->nids * sizeof *slot->ids);
            out->n += slot->nids;
            return KN_OK;
        }
    }
    uint32_t *sym = out->ids + out->n;     /* merge in place at the end of out */
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[piece[i]];
        if (sym[i] == KN_TOK_NONE) return missing_byte(piece[i], offset + i);
    }
    size_t m = n;
    if (n <= SHORT_PIECE) merge_short(t, sym, &m);
    else if (merge_long(t, sym, &m) != KN_OK) return KN_ERR_NOMEM;
    out->n += m;
    if (slot && m <= CACHE_IDS) {
        slot->hash = h;
        slot->klen = (uint8_t)n;
        slot->nids = (uint8_t)m;
        memcpy(slot->key, piece, n);
        memcpy(slot->ids, sym, m * sizeof *sym);
    }
    return KN_OK;
}

/* Ordinary text: pre-tokenize and merge. */
static kn_status encode_ordinary(const kn_tokenizer *t, kn_tok_cache *cache, const uint8_t *s,
                                 size_t len, size_t base, kn_ids *out)
{
    size_t pos = 0, next_poll = 1u << 20;
    while (pos < len) {
        size_t end = kn_pretok_next(s, len, pos);
        kn_status st = encode_piece(t, cache, s + pos, end - pos, base + pos, out);
        if (st != KN_OK) return st;
        pos = end;
        if (pos >= next_poll) {
            if (kn_interrupted) return kn_fail(KN_ERR_INTERRUPTED, "encode: interrupted");
            next_poll = pos + (1u << 20);
        }
    }
    return KN_OK;
}

/* The first occurrence of a special token at or after pos (the longest if several start
 * there); next[] caches each special's next occurrence. Returns len if none. */
static size_t next_special(const kn_tokenizer *t, const uint8_t *s, size_t len, size_t pos,
                           size_t *next, uint32_t *which)
{
    size_t best = len, best_len = 0;
    for (uint32_t k = 0; k < t->n_specials; k++) {
        size_t n;
        const uint8_t *sp = kn_tok_token_bytes(t, t->special_ids[k], &n);
        if (n == 0) continue;
        if (next[k] < pos || next[k] == SIZE_MAX - 1) {
            const uint8_t *hit = memmem(s + pos, len - pos, sp, n);
            next[k] = hit ? (size_t)(hit - s) : SIZE_MAX;
        }
        if (next[k] < best || (next[k] == best && n > best_len)) {
            best = next[k];
            best_len = n;
            *which = t->special_ids[k];
        }
    }
    return best;
}

static kn_status encode_serial(kn_tokenizer *t, kn_tok_cache *cache, const uint8_t *s, size_t len,
                               bool allow_special, size_t base, kn_ids *out)
{
    if (!allow_special || t->n_specials == 0) return encode_ordinary(t, cache, s, len, base, out);
    size_t *next = malloc(t->n_specials * sizeof *next);
    if (!next) return kn_fail(KN_ERR_NOMEM, "encode: out of memory");
    for (uint32_t k = 0; k < t->n_specials; k++) next[k] = SIZE_MAX - 1;   /* not searched yet */
    kn_status st = KN_OK;
    size_t pos = 0;
    while (st == KN_OK && pos < len) {
        uint32_t id = 0;
        size_t at = next_special(t, s, len, pos, next, &id);
        st = encode_ordinary(t, cache, s + pos, at - pos, base + pos, out);
        if (st != KN_OK || at == len) break;
        if ((st = ids_reserve(out, 1)) != KN_OK) break;
        out->ids[out->n++] = id;
        size_t n;
        kn_tok_token_bytes(t, id, &n);
        pos = at + n;
    }
    free(next);
    return st;
}

static kn_tok_cache *cache_for(kn_tokenizer *t, int tid)
{
    if (tid >= KN_TOK_MAX_THREADS) return NULL;
    if (!t->cache[tid]) t->cache[tid] = calloc(1, sizeof *t->cache[tid]);
    return t->cache[tid];
}

/* ---- many threads ----------------------------------------------------------------------- */

/* A cut at p (text[p-1] = text[p] = '\n', text[p+1] printable ASCII) changes no pre-token:
 * whole, the white space run ending at p+1 is split before its last character (that '\n'
 * is followed by a non-space), and cut, the left part ends in the same run minus that
 * character and the right part starts with the lone '\n'. Matching only ever looks ahead. */
static size_t find_cut(const uint8_t *s, size_t len, size_t from)
{
    for (size_t p = from < 1 ? 1 : from; p + 1 < len; p++) {
        const uint8_t *q = memchr(s + p, '\n', len - 1 - p);
        if (!q) return len;
        p = (size_t)(q - s);
        if (s[p - 1] == '\n' && s[p + 1] >= 0x21 && s[p + 1] <= 0x7E) return p;
    }
    return len;
}

typedef struct {
    kn_tokenizer *t;
    const uint8_t *s;
    bool allow_special;
    size_t *cut;                 /* [nchunks + 1] */
    kn_ids *part;
    kn_status *status;
    char (*msg)[256];
} chunk_job;

static void encode_chunk(void *ctx, int64_t begin, int64_t end, int tid)
{
    chunk_job *j = ctx;
    for (int64_t c = begin; c < end; c++) {
        kn_tok_cache *cache = cache_for(j->t, tid);
        kn_status st = cache ? encode_serial(j->t, cache, j->s + j->cut[c], j->cut[c + 1] - j->cut[c],
                                             j->allow_special, j->cut[c], &j->part[c])
                             : kn_fail(KN_ERR_NOMEM, "encode: out of memory for a cache");
        j->status[c] = st;
        if (st != KN_OK) snprintf(j->msg[c], sizeof j->msg[c], "%s", kn_errmsg());
    }
}

static bool specials_hold_newline(const kn_tokenizer *t)
{
    for (uint32_t k = 0; k < t->n_specials; k++) {
        size_t n;
        const uint8_t *s = kn_tok_token_bytes(t, t->special_ids[k], &n);
        if (memchr(s, '\n', n)) return true;
    }
    return false;
}

static kn_status encode_parallel(kn_tokenizer *t, const uint8_t *s, size_t len, bool allow_special,
                                 int threads, kn_ids *out)
{
    size_t want = (size_t)threads * CHUNKS_PER_THREAD;
    chunk_job j = {t, s, allow_special, calloc(want + 1, sizeof(size_t)), calloc(want, sizeof(kn_ids)),
                   calloc(want, sizeof(kn_status)), calloc(want, sizeof *j.msg)};
    kn_status st = KN_OK;
    if (!j.cut || !j.part || !j.status || !j.msg) st = kn_fail(KN_ERR_NOMEM, "encode: out of memory");
    size_t n = 0;
    if (st == KN_OK) {
        for (size_t c = 1; c < want; c++) {
            size_t p = find_cut(s, len, c * (len / want));
            if (p >= len) break;
            if (p > j.cut[n]) j.cut[++n] = p;
        }
        j.cut[++n] = len;
        kn_parallel_for_dynamic((int64_t)n, 1, encode_chunk, &j);
        for (size_t c = 0; c < n && st == KN_OK; c++)
            if (j.status[c] != KN_OK) st = kn_fail(j.status[c], "%s", j.msg[c]);
        size_t total = 0;
        for (size_t c = 0; c < n; c++) total += j.part[c].n;
        if (st == KN_OK) st = ids_reserve(out, total);
        for (size_t c = 0; c < n && st == KN_OK; c++) {
            memcpy(out->ids + out->n, j.part[c].ids, j.part[c].n * sizeof *out->ids);
            out->n += j.part[c].n;
        }
    }
    for (size_t c = 0; j.part && c < want; c++) free(j.part[c].ids);
    free(j.cut); free(j.part); free(j.status); free(j.msg);
    return st;
}

kn_status kn_tok_encode(kn_tokenizer *t, const void *text, size_t len, bool allow_special, kn_ids *out)
{
    const uint8_t *s = text;
    int threads = kn_pool_threads();
    if (threads > KN_TOK_MAX_THREADS) threads = KN_TOK_MAX_THREADS;
    if (threads > 1 && len >= PARALLEL_MIN && !(allow_special && specials_hold_newline(t)))
        return encode_parallel(t, s, len, allow_special, threads, out);
    kn_tok_cache *cache = cache_for(t, 0);
    if (!cache) return kn_fail(KN_ERR_NOMEM, "encode: out of memory for a cache");
    return encode_serial(t, cache, s, len, allow_special, 0, out);
}

kn_status kn_tok_decode(const kn_tokenizer *t, const uint32_t *ids, size_t n, uint8_t **buf, size_t *len)
{
    size_t need = *len;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] >= t->n_vocab)
            return kn_fail(KN_ERR_ARG, "decode: id %u at position %zu is outside the vocabulary (size %u)",
                           ids[i], i, t->n_vocab);
        need += t->tok_off[ids[i] + 1] - t->tok_off[ids[i]];
    }
    uint8_t *p = realloc(*buf, need + 1);
    if (!p) return kn_fail(KN_ERR_NOMEM, "decode: out of memory for %zu bytes", need);
    for (size_t i = 0; i < n; i++) {
        uint32_t a = t->tok_off[ids[i]], b = t->tok_off[ids[i] + 1];
        memcpy(p + *len, t->tok_bytes + a, b - a);
        *len += b - a;
    }
    p[*len] = 0;
    *buf = p;
    return KN_OK;
}
