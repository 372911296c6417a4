/* data.c — token files cut into segments.
 *
 * The file is read, never mapped: each window is one pread() into the caller's buffers. A
 * mapping would turn a file truncated during a run into SIGBUS; a read turns it into an error
 * naming the file. After each batch (and each evaluation window) the file's size and mtime are
 * compared with those at open, so a file rewritten in place under a run is an error too, not
 * a silent change of data. The cost is a syscall per window plus one per call (microseconds
 * against a training step of milliseconds); the page cache serves repeated reads as it
 * served the mapping.
 * Tokens are decoded explicitly as little-endian bytes, so nothing depends on the host's
 * byte order.
 *
 * Segment lengths never increase along the list: ALL is one segment; TRAIN is runs of 19
 * blocks, VAL single blocks, and only the last segment of either can be shorter (the file
 * ends inside it). So for any T the segments able to hold a window of T+1 tokens form a
 * prefix of the list, and their valid-start counts (len - T each) add up to
 * prefix[k] - k*T, which lets sampling binary-search a prefix-sum array built once at open
 * without any per-T table. */
#include "data.h"
#include "fsio.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct { int64_t start, len; } segment;   /* in tokens */

struct kn_dataset {
    int refs;
    char *path;
    int fd;                /* open for the dataset's lifetime; -1 once closed */
    uint64_t file_bytes;   /* size at open: every read is checked against it */
    kn_file_stamp stamp;   /* size and mtime at open: a file changed under a run is refused */
    kn_data_format fmt;
    kn_split split;
    kn_tokenizer *tok;     /* a reference, or NULL (bytes, or u16 without a tokenizer) */
    int vocab;
    int64_t n_tokens;      /* in the selected split */
    int64_t n_seg;
    segment *seg;
    int64_t *prefix;       /* prefix[k] = tokens in segments 0..k-1; n_seg+1 entries */
};

static const char *split_name(kn_split s)
{
    return s == KN_SPLIT_TRAIN ? "train" : s == KN_SPLIT_VAL ? "val" : "whole-file";
}

static int token_bytes(const kn_dataset *d) { return d->fmt == KN_DATA_U16 ? 2 : 1; }

/* Token i of raw file bytes p (little-endian for u16). */
static inline int32_t decode(const uint8_t *p, int tb, int64_t i)
{
    if (tb == 1) return p[i];
    return (int32_t)p[2 * i] | ((int32_t)p[2 * i + 1] << 8);
}

kn_dataset *kn_dataset_retain(kn_dataset *d)
{
    if (d) d->refs++;
    return d;
}

int kn_dataset_refs(const kn_dataset *d) { return d->refs; }

void kn_dataset_close(kn_dataset *d)
{
    if (!d || --d->refs > 0) return;
    if (d->fd >= 0) close(d->fd);
    kn_tok_release(d->tok);
    free(d->seg);
    free(d->prefix);
    free(d->path);
    free(d);
}

/* The vocabulary of a u16 file, from one pass over the whole file in chunks: with a
 * tokenizer, its size, and the first id at or past it is refused with its byte offset;
 * without one, 1 + the largest id. About 15 MB for a corpus: cheap next to a training run,
 * and it means no id can reach the model that its tokenizer could not have made. */
static kn_status scan_vocab(kn_dataset *d)
{
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = malloc(CHUNK);
    if (!buf) return kn_fail(KN_ERR_NOMEM, "data: '%s': out of memory scanning tokens", d->path);
    int32_t limit = d->tok ? kn_tok_vocab_size(d->tok) : 65536, mx = 0;
    kn_status st = KN_OK;
    for (uint64_t off = 0; off < d->file_bytes && !st; off += CHUNK) {
        size_t n = d->file_bytes - off < CHUNK ? (size_t)(d->file_bytes - off) : CHUNK;
        st = kn_file_read_at(d->fd, d->path, "data", buf, n, off, d->file_bytes);
        for (size_t i = 0; !st && i < n / 2; i++) {
            int32_t t = decode(buf, 2, (int64_t)i);
            if (t > mx) mx = t;
            if (t >= limit)
                st = kn_fail(KN_ERR_FORMAT, "data: '%s': token %d at byte offset %llu is >= the "
                             "vocabulary size %d of its tokenizer", d->path, (int)t,
                             (unsigned long long)(off + 2 * i), (int)limit);
        }
    }
    free(buf);
    d->vocab = d->tok ? limit : mx + 1;
    return st;
}

/* Cut the file into segments for d->split; fills seg, prefix, n_seg, n_tokens. */
static kn_status build_segments(kn_dataset *d, int64_t file_tokens, int64_t block_tokens)
{
    int64_t n_blocks = (file_tokens + block_tokens - 1) / block_tokens;
    int64_t cap = d->split == KN_SPLIT_ALL ? 1 : n_blocks;
    d->seg = calloc((size_t)cap, sizeof *d->seg);
    d->prefix = calloc((size_t)cap + 1, sizeof *d->prefix);
    if (!d->seg || !d->prefix)
        return kn_fail(KN_ERR_NOMEM, "data: '%s': out of memory for %lld segments", d->path, (long long)cap);
    d->n_seg = 0;
    if (d->split == KN_SPLIT_ALL) {
        d->seg[0] = (segment){0, file_tokens};
        d->n_seg = 1;
    } else {
        bool want_val = d->split == KN_SPLIT_VAL;
        int64_t prev = -2;   /* last selected block, to merge consecutive ones */
        for (int64_t b = 0; b < n_blocks; b++) {
            bool is_val = b % KN_SPLIT_EVERY == KN_SPLIT_EVERY - 1;
            if (is_val != want_val) continue;
            int64_t start = b * block_tokens;
            int64_t len = file_tokens - start < block_tokens ? file_tokens - start : block_tokens;
            if (prev == b - 1) d->seg[d->n_seg - 1].len += len;
            else d->seg[d->n_seg++] = (segment){start, len};
            prev = b;
        }
    }
    d->n_tokens = 0;
    for (int64_t k = 0; k < d->n_seg; k++) {
        /* Sampling's binary search depends on this; a change to the split rule must keep it. */
        if (k > 0 && d->seg[k].len > d->seg[k - 1].len)
            return kn_fail(KN_ERR_ARG, "data: '%s': internal error: segment %lld is longer than the one "
                           "before it", d->path, (long long)k);
        d->prefix[k] = d->n_tokens;
        d->n_tokens += d->seg[k].len;
    }
    d->prefix[d->n_seg] = d->n_tokens;
    return KN_OK;
}

/* Open d->path, take its stamp and check that its size can hold tokens of d->fmt. */
static kn_status open_file(kn_dataset *d)
{
    const char *path = d->path;
    kn_status st = kn_file_open_read(path, "data", "a regular file of tokens", &d->fd, &d->file_bytes);
    if (!st) st = kn_file_stamp_of(d->fd, path, "data", &d->stamp);
    if (st) return st;
    d->file_bytes = d->stamp.size;
    if (d->file_bytes == 0) return kn_fail(KN_ERR_FORMAT, "data: '%s' is empty (0 bytes), expected tokens", path);
    if (d->fmt == KN_DATA_U16 && d->file_bytes % 2 != 0)
        return kn_fail(KN_ERR_FORMAT, "data: '%s' has %llu bytes, an odd size; a file of uint16 tokens must "
                       "have an even size", path, (unsigned long long)d->file_bytes);
    if (d->file_bytes > (uint64_t)INT64_MAX / 2)
        return kn_fail(KN_ERR_FORMAT, "data: '%s' is too large (%llu bytes)", path,
                       (unsigned long long)d->file_bytes);
    return KN_OK;
}

kn_status kn_dataset_open(kn_dataset **out, const char *path, kn_data_format fmt, kn_split split)
{
    return kn_dataset_open_tok(out, path, fmt, split, NULL);
}

kn_status kn_dataset_open_tok(kn_dataset **out, const char *path, kn_data_format fmt, kn_split split,
                              kn_tokenizer *tok)
{
    if (!out) return kn_fail(KN_ERR_ARG, "data: output pointer is NULL");
    *out = NULL;
    if (!path) return kn_fail(KN_ERR_ARG, "data: path is NULL");
    if (fmt != KN_DATA_BYTES && fmt != KN_DATA_U16)
        return kn_fail(KN_ERR_ARG, "data: '%s': unknown format %d (expected bytes or u16)", path, (int)fmt);
    if (split != KN_SPLIT_ALL && split != KN_SPLIT_TRAIN && split != KN_SPLIT_VAL)
        return kn_fail(KN_ERR_ARG, "data: '%s': unknown split %d (expected all, train or val)", path, (int)split);
    if (tok && fmt != KN_DATA_U16)
        return kn_fail(KN_ERR_ARG, "data: '%s': a tokenizer was given for a file of bytes; bytes are "
                       "their own tokens (V = 256), a tokenizer's ids come as u16", path);
    if (tok && kn_tok_vocab_size(tok) > 65536)
        return kn_fail(KN_ERR_ARG, "data: '%s': the tokenizer has %d tokens, more than u16 ids can "
                       "hold (65536)", path, kn_tok_vocab_size(tok));

    kn_dataset *d = calloc(1, sizeof *d);
    if (!d || !(d->path = strdup(path))) {
        free(d);
        return kn_fail(KN_ERR_NOMEM, "data: '%s': out of memory", path);
    }
    d->refs = 1;
    d->fmt = fmt;
    d->split = split;
    d->fd = -1;
    d->tok = kn_tok_retain(tok);
    kn_status st = open_file(d);
    if (st) goto fail;
    int tok_bytes = token_bytes(d);
    int64_t file_tokens = (int64_t)d->file_bytes / tok_bytes;
    /* Over the whole file, not the split: train and val opened from one file must agree on V. */
    if (fmt == KN_DATA_BYTES) d->vocab = 256;
    else if ((st = scan_vocab(d))) goto fail;

    st = build_segments(d, file_tokens, KN_SPLIT_BLOCK_BYTES / tok_bytes);
    if (st) goto fail;
    if (d->n_tokens == 0) {
        /* Only VAL can be empty: a non-empty file always starts with a train block. */
        st = kn_fail(KN_ERR_FORMAT, "data: '%s' (%lld bytes) is too small for an interleaved "
                     "train/val split: the val split takes every %dth block of %d KiB, so it needs "
                     "more than %d blocks (%.2f MiB); use separate train and val files instead",
                     path, (long long)d->file_bytes, KN_SPLIT_EVERY, KN_SPLIT_BLOCK_BYTES / 1024,
                     KN_SPLIT_EVERY - 1,
                     (double)(KN_SPLIT_EVERY - 1) * KN_SPLIT_BLOCK_BYTES / (1024.0 * 1024.0));
        goto fail;
    }
    *out = d;
    return KN_OK;

fail:
    kn_dataset_close(d);
    return st;
}

const char *kn_dataset_path(const kn_dataset *d) { return d ? d->path : NULL; }
int64_t kn_dataset_num_tokens(const kn_dataset *d) { return d ? d->n_tokens : 0; }
int kn_dataset_vocab(const kn_dataset *d) { return d ? d->vocab : 0; }
kn_tokenizer *kn_dataset_tokenizer(const kn_dataset *d) { return d ? d->tok : NULL; }
kn_data_format kn_dataset_format(const kn_dataset *d) { return d ? d->fmt : KN_DATA_BYTES; }

static const char *vocab_source(const kn_dataset *d)
{
    return d->fmt == KN_DATA_BYTES ? "bytes" : d->tok ? "its tokenizer's" : "no tokenizer: the largest id + 1";
}

kn_status kn_dataset_check_vocab(const kn_dataset *d, int model_vocab)
{
    if (!d) return kn_fail(KN_ERR_ARG, "data: dataset is NULL");
    if (d->vocab <= model_vocab) return KN_OK;
    return kn_fail(KN_ERR_ARG, "data: '%s': its vocabulary has %d tokens (%s) but the model's "
                   "vocab_size is %d; ids >= %d would index past the embedding", d->path, d->vocab,
                   vocab_source(d), model_vocab, model_vocab);
}

/* How many leading segments hold a window of T+1 tokens (lengths are non-increasing). */
static int64_t segments_holding(const kn_dataset *d, int T)
{
    int64_t lo = 0, hi = d->n_seg;   /* answer in [lo, hi] */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (d->seg[mid].len > (int64_t)T) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

kn_status kn_dataset_check_window(const kn_dataset *d, int T)
{
    if (!d) return kn_fail(KN_ERR_ARG, "data: dataset is NULL");
    if (T < 1) return kn_fail(KN_ERR_ARG, "data: '%s': T = %d, expected T >= 1", d->path, T);
    int64_t longest = d->n_seg ? d->seg[0].len : 0;
    if (longest > (int64_t)T) return KN_OK;
    if (d->n_seg == 1 && d->split == KN_SPLIT_ALL)
        return kn_fail(KN_ERR_ARG, "data: '%s' has %lld tokens, too few for one window of "
                       "T+1 = %lld tokens (T = %d)", d->path, (long long)d->n_tokens,
                       (long long)T + 1, T);
    return kn_fail(KN_ERR_ARG, "data: '%s': the %s split has %lld tokens in segments of at most "
                   "%lld, too few for one window of T+1 = %lld tokens (T = %d); windows never "
                   "cross a %d KiB split block boundary", d->path, split_name(d->split),
                   (long long)d->n_tokens, (long long)longest, (long long)T + 1, T,
                   KN_SPLIT_BLOCK_BYTES / 1024);
}

/* Window of T+1 tokens from token s: in[t] = x[s+t], tg[t] = x[s+t+1]. The raw bytes are read
 * into in's own memory (4T bytes >= (T+1)*2 for any T >= 1), decoded into tg, and in is then
 * tg shifted by one: no buffer of the dataset's, so concurrent readers never share one. */
static kn_status read_window(const kn_dataset *d, int64_t s, int T, int32_t *in, int32_t *tg)
{
    int tb = token_bytes(d);
    uint8_t *raw = (uint8_t *)in;
    kn_status st = kn_file_read_at(d->fd, d->path, "data", raw, ((size_t)T + 1) * (size_t)tb,
                                   (uint64_t)s * (uint64_t)tb, d->file_bytes);
    if (st) return st;
    int32_t first = decode(raw, tb, 0);
    for (int t = 0; t < T; t++) tg[t] = decode(raw, tb, t + 1);
    in[0] = first;
    for (int t = 1; t < T; t++) in[t] = tg[t - 1];
    return KN_OK;
}

kn_status kn_dataset_sample(const kn_dataset *d, kn_rng *r, int B, int T, int32_t *inputs, int32_t *targets)
{
    kn_status st = kn_dataset_check_window(d, T);
    if (st) return st;
    if (B < 1) return kn_fail(KN_ERR_ARG, "data: '%s': B = %d, expected B >= 1", d->path, B);
    if (!r || !inputs || !targets)
        return kn_fail(KN_ERR_ARG, "data: '%s': sample needs an rng and two [B,T] buffers", d->path);
    int64_t m = segments_holding(d, T);
    int64_t total = d->prefix[m] - m * (int64_t)T;   /* valid starts over segments 0..m-1 */
    for (int b = 0; b < B; b++) {
        int64_t u = (int64_t)kn_rng_below(r, (uint64_t)total);
        /* The segment k with starts_before(k) <= u < starts_before(k+1). */
        int64_t lo = 0, hi = m - 1;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo + 1) / 2;
            if (d->prefix[mid] - mid * (int64_t)T <= u) lo = mid;
            else hi = mid - 1;
        }
        int64_t s = d->seg[lo].start + (u - (d->prefix[lo] - lo * (int64_t)T));
        st = read_window(d, s, T, inputs + (size_t)b * T, targets + (size_t)b * T);
        if (st) return st;
    }
    /* After the reads: a batch read while the file changed is refused, not trained on. */
    return kn_file_check_stamp(d->fd, d->path, "data", &d->stamp);
}

int64_t kn_dataset_num_eval_windows(const kn_dataset *d, int T)
{
    if (!d || T < 1) return 0;
    int64_t n = 0;
    for (int64_t k = 0; k < d->n_seg; k++) n += d->seg[k].len / ((int64_t)T + 1);
    return n;
}

kn_status kn_dataset_eval_window(const kn_dataset *d, int T, int64_t k, int32_t *inputs, int32_t *targets)
{
    kn_status st = kn_dataset_check_window(d, T);
    if (st) return st;
    if (!inputs || !targets)
        return kn_fail(KN_ERR_ARG, "data: '%s': eval_window needs two [T] buffers", d->path);
    int64_t w = (int64_t)T + 1;
    /* A linear walk: a few thousand segments even for a GB file, and evaluation calls this
     * once per window, far from the training step's hot path. */
    int64_t before = 0;
    for (int64_t i = 0; i < d->n_seg && k >= 0; i++) {
        int64_t here = d->seg[i].len / w;
        if (k < before + here) {
            st = read_window(d, d->seg[i].start + (k - before) * w, T, inputs, targets);
            return st ? st : kn_file_check_stamp(d->fd, d->path, "data", &d->stamp);
        }
        before += here;
    }
    int64_t n = kn_dataset_num_eval_windows(d, T);
    return kn_fail(KN_ERR_ARG, "data: '%s': eval window %lld out of range: the %s split has %lld "
                   "windows of T+1 = %lld tokens (expected 0 <= k < %lld)", d->path, (long long)k,
                   split_name(d->split), (long long)n, (long long)w, (long long)n);
}
