/* test_data.c — token files: the interleaved split's exact boundaries, sampled windows
 * reconstructed from the file (never straddling a segment), sampling determinism, the fixed
 * eval list, uint16 files, large files read window by window, files that shrink during a run,
 * FIFOs and devices refused without blocking, and every error naming its path. */
#include "check.h"
#include "tmpfiles.h"
#include "data.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLK KN_SPLIT_BLOCK_BYTES

/* The test's own model of a split: segments [start, end) in tokens, computed block by block
 * from the rule "block index % 20 == 19 is val", independently of data.c. */
typedef struct { int64_t start, end; } span;

static int model_split(int64_t n_tok, int64_t blk_tok, kn_split split, span *out)
{
    int n = 0;
    if (split == KN_SPLIT_ALL) { out[0] = (span){0, n_tok}; return 1; }
    for (int64_t s = 0, b = 0; s < n_tok; s += blk_tok, b++) {
        int64_t e = s + blk_tok < n_tok ? s + blk_tok : n_tok;
        bool val = b % 20 == 19;
        if (val != (split == KN_SPLIT_VAL)) continue;
        if (n && out[n - 1].end == s) out[n - 1].end = e;
        else out[n++] = (span){s, e};
    }
    return n;
}

/* An index of every position of x by a hash of its next 8 tokens, to find where a sampled
 * window came from. */
typedef struct { uint64_t key; int64_t pos; } entry;
static int64_t n_x;
static const int32_t *x;
static entry *idx;

static uint64_t key_at(const int32_t *p)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 8; i++) h = (h ^ (uint64_t)p[i]) * 1099511628211ull;
    return h;
}

static int cmp_entry(const void *a, const void *b)
{
    const entry *p = a, *q = b;
    return p->key < q->key ? -1 : p->key > q->key ? 1 : (p->pos > q->pos) - (p->pos < q->pos);
}

static void build_index(const int32_t *tokens, int64_t n)
{
    x = tokens;
    n_x = n;
    free(idx);
    idx = malloc((size_t)(n - 7) * sizeof *idx);
    for (int64_t i = 0; i + 8 <= n; i++) idx[i] = (entry){key_at(x + i), i};
    qsort(idx, (size_t)(n - 7), sizeof *idx, cmp_entry);
}

/* The unique position whose T+1 tokens equal the window (inputs, last target); -1 if none,
 * -2 if several. Also checks targets are inputs shifted by one. */
static int64_t locate(const int32_t *in, const int32_t *tg, int T)
{
    for (int t = 0; t + 1 < T; t++) if (tg[t] != in[t + 1]) return -1;
    int32_t w[8];
    for (int i = 0; i < 8; i++) w[i] = i < T ? in[i] : tg[T - 1];
    uint64_t k = key_at(w);
    int64_t lo = 0, hi = n_x - 7;
    while (lo < hi) { int64_t m = (lo + hi) / 2; if (idx[m].key < k) lo = m + 1; else hi = m; }
    int64_t found = -1;
    for (int64_t j = lo; j < n_x - 7 && idx[j].key == k; j++) {
        int64_t s = idx[j].pos;
        if (s + T >= n_x) continue;
        bool same = x[s + T] == tg[T - 1];
        for (int t = 0; same && t < T; t++) same = x[s + t] == in[t];
        if (same) found = found == -1 ? s : -2;
    }
    return found;
}

static int in_span(const span *sp, int n, int64_t s, int T)
{
    for (int i = 0; i < n; i++)
        if (s >= sp[i].start && s + T < sp[i].end) return i;   /* all T+1 tokens inside */
    return -1;
}

#define CHECK_FAILS_PATH(call, needle, path, ...) do { \
    CHECK_FAILS(call, needle, __VA_ARGS__); \
    CHECK(strstr(kn_errmsg(), (path)) != NULL, "  ... and the message names %s", (path)); \
} while (0)

static int64_t rss_anon_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int64_t v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "RssAnon: %lld", (long long *)&v) == 1) break;
    if (f) fclose(f);
    return v;
}

/* Sample many windows and check each against the file and the split's segments; returns
 * how many windows fell in each segment (counts[], up to 8 segments). */
static void check_samples(kn_dataset *d, const span *sp, int nsp, int T, int rounds, int64_t *counts,
                          const char *what)
{
    enum { B = 16 };
    int32_t *in = malloc(sizeof(int32_t) * B * T), *tg = malloc(sizeof(int32_t) * B * T);
    kn_rng r;
    kn_rng_seed(&r, 1234);
    int bad_loc = 0, bad_seg = 0;
    for (int i = 0; i < nsp; i++) counts[i] = 0;
    for (int k = 0; k < rounds; k++) {
        if (kn_dataset_sample(d, &r, B, T, in, tg) != KN_OK) { bad_loc++; break; }
        for (int b = 0; b < B; b++) {
            int64_t s = locate(in + b * T, tg + b * T, T);
            if (s < 0) { bad_loc++; continue; }
            int seg = in_span(sp, nsp, s, T);
            if (seg < 0) bad_seg++;
            else counts[seg]++;
        }
    }
    CHECK(bad_loc == 0, "%s: every sampled window is a unique slice of the file (%d not)", what, bad_loc);
    CHECK(bad_seg == 0, "%s: no window straddles a segment boundary or leaves the split (%d did)", what, bad_seg);
    free(in);
    free(tg);
}

int main(void)
{
    tmp_dir_make("data");
    kn_rng g;
    kn_rng_seed(&g, 99);

    /* --- a 2.5 MiB + 1000 byte file of random bytes: 41 blocks, the last one partial ---- */
    const int64_t N = 40 * BLK + 1000;
    uint8_t *raw = malloc(N);
    int32_t *tok = malloc(sizeof(int32_t) * N);
    for (int64_t i = 0; i < N; i++) tok[i] = raw[i] = (uint8_t)kn_rng_below(&g, 256);
    char *p25 = strdup(in_dir("bytes2.5M.txt"));   /* long-lived: in_dir reuses its buffers */
    write_file(p25, raw, N);
    build_index(tok, N);

    kn_dataset *all, *tr, *va;
    CHECK_OK(kn_dataset_open(&all, p25, KN_DATA_BYTES, KN_SPLIT_ALL), "open all");
    CHECK_OK(kn_dataset_open(&tr, p25, KN_DATA_BYTES, KN_SPLIT_TRAIN), "open train");
    CHECK_OK(kn_dataset_open(&va, p25, KN_DATA_BYTES, KN_SPLIT_VAL), "open val");
    CHECK(kn_dataset_vocab(tr) == 256 && strcmp(kn_dataset_path(tr), p25) == 0, "V = 256, path kept");
    CHECK(kn_dataset_num_tokens(all) == N, "all: every byte");
    /* blocks 0..18 and 20..38 and 40 (1000 bytes) train; 19 and 39 val */
    CHECK(kn_dataset_num_tokens(tr) == 38 * BLK + 1000, "train: 38 blocks + the 1000-byte tail");
    CHECK(kn_dataset_num_tokens(va) == 2 * BLK, "val: blocks 19 and 39");

    span sp[64];
    int nsp = model_split(N, BLK, KN_SPLIT_TRAIN, sp);
    CHECK(nsp == 3 && sp[0].start == 0 && sp[0].end == 19 * BLK && sp[1].start == 20 * BLK &&
          sp[1].end == 39 * BLK && sp[2].start == 40 * BLK && sp[2].end == N,
          "model of train: [0,19), [20,39), [40, 40+1000B) blocks");
    span vs[8];
    int nvs = model_split(N, BLK, KN_SPLIT_VAL, vs);
    CHECK(nvs == 2 && vs[0].start == 19 * BLK && vs[0].end == 20 * BLK && vs[1].start == 39 * BLK &&
          vs[1].end == 40 * BLK, "model of val: blocks 19 and 39");

    int64_t cnt[8];
    int T = 64;
    check_samples(tr, sp, nsp, T, 1500, cnt, "train T=64");
    int64_t tot = cnt[0] + cnt[1] + cnt[2];
    double v0 = 19 * BLK - T, v2 = 1000 - T, vt = 2 * v0 + v2;
    CHECK(cnt[2] > 0, "the short last train segment is sampled (%lld of %lld)", (long long)cnt[2], (long long)tot);
    CHECK(fabs(cnt[0] - tot * v0 / vt) < 4 * sqrt(tot * v0 / vt) &&
          fabs(cnt[2] - tot * v2 / vt) < 4 * sqrt(tot * v2 / vt) + 1,
          "segments sampled in proportion to their valid starts (%lld/%lld/%lld)",
          (long long)cnt[0], (long long)cnt[1], (long long)cnt[2]);
    check_samples(va, vs, nvs, T, 300, cnt, "val T=64");
    CHECK(cnt[0] > 0 && cnt[1] > 0, "both val blocks sampled (%lld, %lld)", (long long)cnt[0], (long long)cnt[1]);
    span as[1] = {{0, N}};
    check_samples(all, as, 1, 1000, 40, cnt, "all T=1000");

    /* T = 2000: the 1000-byte tail cannot hold a window and must never be chosen */
    check_samples(tr, sp, nsp, 2000, 100, cnt, "train T=2000");
    CHECK(cnt[2] == 0 && cnt[0] > 0 && cnt[1] > 0, "T=2000: the short tail segment is never used");

    /* T+1 = a whole val block: exactly one valid start per val segment, at its first byte */
    {
        int TT = BLK - 1;
        int32_t *in = malloc(sizeof(int32_t) * 4 * TT), *tg = malloc(sizeof(int32_t) * 4 * TT);
        kn_rng r;
        kn_rng_seed(&r, 5);
        int ok = 1, seen[2] = {0, 0};
        for (int k = 0; k < 8; k++) {
            CHECK_OK(kn_dataset_sample(va, &r, 4, TT, in, tg), "val sample with T+1 = block size");
            for (int b = 0; b < 4; b++) {
                int64_t s = locate(in + (size_t)b * TT, tg + (size_t)b * TT, TT);
                ok &= s == 19 * BLK || s == 39 * BLK;
                seen[s == 39 * BLK]++;
            }
        }
        CHECK(ok && seen[0] && seen[1], "T+1 = 65536: val windows are exactly blocks 19 and 39");
        CHECK_FAILS_PATH(kn_dataset_check_window(va, BLK), "T+1 = 65537", p25,
                         "T+1 = block+1 does not fit any val segment");
        CHECK(strstr(kn_errmsg(), "val split") != NULL, "  ... and names the split");
        free(in);
        free(tg);
    }

    /* determinism: same rng state -> same batch and same final state; another seed differs */
    {
        enum { B = 8, TT = 32 };
        int32_t i1[B * TT], t1[B * TT], i2[B * TT], t2[B * TT];
        kn_rng r1, r2;
        kn_rng_seed(&r1, 77);
        kn_rng_seed(&r2, 77);
        CHECK_OK(kn_dataset_sample(tr, &r1, B, TT, i1, t1), "sample seed 77");
        CHECK_OK(kn_dataset_sample(tr, &r2, B, TT, i2, t2), "sample seed 77 again");
        CHECK(!memcmp(i1, i2, sizeof i1) && !memcmp(t1, t2, sizeof t1) && !memcmp(&r1, &r2, sizeof r1),
              "same state, same windows, same state after");
        /* each window consumes exactly one kn_rng_below draw over the valid starts */
        kn_rng r3;
        kn_rng_seed(&r3, 77);
        for (int b = 0; b < B; b++) kn_rng_below(&r3, (uint64_t)(2 * (19 * BLK - TT) + (1000 - TT)));
        CHECK(!memcmp(&r1, &r3, sizeof r1), "one kn_rng_below(total valid starts) per window");
        /* and the draw maps to a start through the segment table */
        kn_rng_seed(&r3, 77);
        int64_t u = (int64_t)kn_rng_below(&r3, (uint64_t)(2 * (19 * BLK - TT) + (1000 - TT)));
        int64_t s = u < 19 * BLK - TT ? u : u < 2 * (19 * BLK - TT) ? 20 * BLK + (u - (19 * BLK - TT))
                  : 40 * BLK + (u - 2 * (19 * BLK - TT));
        CHECK(locate(i1, t1, TT) == s, "the first window starts where the draw says (%lld)", (long long)s);
        kn_rng_seed(&r2, 78);
        CHECK_OK(kn_dataset_sample(tr, &r2, B, TT, i2, t2), "sample seed 78");
        CHECK(memcmp(i1, i2, sizeof i1) != 0, "another seed, other windows");
        kn_rng before = r2;
        CHECK_FAILS(kn_dataset_sample(tr, &r2, 0, TT, i2, t2), "B = 0", "B = 0 rejected");
        CHECK_FAILS(kn_dataset_sample(tr, &r2, B, 0, i2, t2), "T = 0", "T = 0 rejected");
        CHECK(!memcmp(&before, &r2, sizeof r2), "a failed sample leaves the rng untouched");
    }

    /* eval list: fixed, complete, stride T+1, segment by segment */
    {
        int TT = 100;
        int64_t n = kn_dataset_num_eval_windows(tr, TT);
        int64_t want = 2 * ((19 * BLK) / (TT + 1)) + 1000 / (TT + 1);
        CHECK(n == want, "train eval windows: %lld (expected %lld)", (long long)n, (long long)want);
        int32_t in[100], tg[100];
        int ok = 1;
        int64_t k = 0;
        for (int i = 0; i < nsp; i++)
            for (int64_t s = sp[i].start; s + TT < sp[i].end; s += TT + 1, k++) {
                ok &= kn_dataset_eval_window(tr, TT, k, in, tg) == KN_OK;
                for (int t = 0; t < TT; t++) ok &= in[t] == tok[s + t] && tg[t] == tok[s + t + 1];
            }
        CHECK(ok && k == n, "window k is the k-th tile of T+1 tokens, in segment order (%lld)", (long long)k);
        CHECK_FAILS_PATH(kn_dataset_eval_window(tr, TT, n, in, tg), "out of range", p25, "k = n rejected");
        CHECK_FAILS(kn_dataset_eval_window(tr, TT, -1, in, tg), "expected 0 <= k <", "k = -1 rejected");
        int32_t in2[100], tg2[100];
        CHECK_OK(kn_dataset_eval_window(tr, TT, 12345, in, tg), "eval window 12345");
        CHECK_OK(kn_dataset_eval_window(tr, TT, 12345, in2, tg2), "again");
        CHECK(!memcmp(in, in2, sizeof in) && !memcmp(tg, tg2, sizeof tg), "the eval list is fixed");
        CHECK(kn_dataset_num_eval_windows(va, TT) == 2 * (BLK / (TT + 1)), "val eval windows: 2 blocks' worth");
        CHECK(kn_dataset_num_eval_windows(all, 9) == N / 10, "all with T=9: N/10 windows");
    }
    kn_dataset_close(all);
    kn_dataset_close(tr);
    kn_dataset_close(va);

    /* --- uint16 files ---------------------------------------------------------------- */
    {
        const int64_t NT = 40 * (BLK / 2) + 300;   /* 40 blocks of 32768 tokens + 300 */
        uint8_t *b = malloc(2 * NT);
        int32_t *t16 = malloc(sizeof(int32_t) * NT);
        for (int64_t i = 0; i < NT; i++) {
            t16[i] = (int32_t)kn_rng_below(&g, 50000);
            b[2 * i] = (uint8_t)(t16[i] & 0xff);
            b[2 * i + 1] = (uint8_t)(t16[i] >> 8);
        }
        t16[1234] = 50256;   /* the GPT-2 EOT token is the max */
        b[2 * 1234] = 50256 & 0xff;
        b[2 * 1234 + 1] = 50256 >> 8;
        char *pu = strdup(in_dir("train.bin"));
        write_file(pu, b, 2 * NT);
        build_index(t16, NT);
        kn_dataset *u, *ut, *uv;
        CHECK_OK(kn_dataset_open(&u, pu, KN_DATA_U16, KN_SPLIT_ALL), "open u16 all");
        CHECK_OK(kn_dataset_open(&ut, pu, KN_DATA_U16, KN_SPLIT_TRAIN), "open u16 train");
        CHECK_OK(kn_dataset_open(&uv, pu, KN_DATA_U16, KN_SPLIT_VAL), "open u16 val");
        CHECK(kn_dataset_vocab(u) == 50257 && kn_dataset_vocab(ut) == 50257 && kn_dataset_vocab(uv) == 50257,
              "V = 1 + max token, the same for every split (%d)", kn_dataset_vocab(uv));
        CHECK(kn_dataset_num_tokens(u) == NT && kn_dataset_num_tokens(ut) == 38 * (BLK / 2) + 300 &&
              kn_dataset_num_tokens(uv) == 2 * (BLK / 2), "u16 blocks are 64 KiB of file = 32768 tokens");
        int32_t in[16], tg[16];
        CHECK_OK(kn_dataset_eval_window(uv, 15, 0, in, tg), "u16 val eval window 0");
        int ok = 1;
        for (int t = 0; t < 15; t++) ok &= in[t] == t16[19 * (BLK / 2) + t] && tg[t] == t16[19 * (BLK / 2) + t + 1];
        CHECK(ok, "u16 tokens decoded little-endian, val starts at token 19*32768");
        span us[8];
        int nus = model_split(NT, BLK / 2, KN_SPLIT_TRAIN, us);
        int64_t c[8];
        check_samples(ut, us, nus, 48, 400, c, "u16 train T=48");
        nus = model_split(NT, BLK / 2, KN_SPLIT_VAL, us);
        check_samples(uv, us, nus, 48, 100, c, "u16 val T=48");
        kn_dataset_close(u);
        kn_dataset_close(ut);
        kn_dataset_close(uv);
        free(pu);
        free(b);
        free(t16);
    }

    /* --- split size limits ------------------------------------------------------------ */
    {
        uint8_t *z = calloc(19 * BLK + 1, 1);
        const char *p19 = in_dir("exactly19blocks.txt"), *p19p = in_dir("19blocks+1.txt");
        write_file(p19, z, 19 * BLK);
        write_file(p19p, z, 19 * BLK + 1);
        kn_dataset *d = (kn_dataset *)1;
        CHECK_FAILS_PATH(kn_dataset_open(&d, p19, KN_DATA_BYTES, KN_SPLIT_VAL),
                         "too small for an interleaved train/val split", p19, "19 blocks: no val split");
        CHECK(strstr(kn_errmsg(), "1.19 MiB") || strstr(kn_errmsg(), "1.25 MiB") ||
              strstr(kn_errmsg(), "more than 19 blocks"), "  ... says how big it must be");
        CHECK(strstr(kn_errmsg(), "separate train and val files") != NULL, "  ... and suggests separate files");
        CHECK(d == NULL, "  ... and leaves *out NULL");
        CHECK_OK(kn_dataset_open(&d, p19, KN_DATA_BYTES, KN_SPLIT_TRAIN), "19 blocks: train is fine");
        CHECK(kn_dataset_num_tokens(d) == 19 * BLK, "  ... with every byte");
        kn_dataset_close(d);
        CHECK_OK(kn_dataset_open(&d, p19p, KN_DATA_BYTES, KN_SPLIT_VAL), "19 blocks + 1 byte: val has 1 token");
        CHECK(kn_dataset_num_tokens(d) == 1, "  ... exactly 1");
        CHECK_FAILS_PATH(kn_dataset_check_window(d, 1), "T+1 = 2", p19p, "  ... too few for any window");
        CHECK(kn_dataset_num_eval_windows(d, 1) == 0, "  ... and no eval windows");
        kn_dataset_close(d);
        free(z);
    }

    /* --- errors ---------------------------------------------------------------------- */
    {
        kn_dataset *d = NULL;
        const char *missing = in_dir("no-such-file.bin");
        CHECK_FAILS_PATH(kn_dataset_open(&d, missing, KN_DATA_BYTES, KN_SPLIT_ALL), "No such file",
                         missing, "missing file");
        CHECK_FAILS_PATH(kn_dataset_open(&d, dir, KN_DATA_BYTES, KN_SPLIT_ALL), "is a directory", dir,
                         "a directory");
        const char *empty = in_dir("empty.txt");
        write_file(empty, "", 0);
        CHECK_FAILS_PATH(kn_dataset_open(&d, empty, KN_DATA_BYTES, KN_SPLIT_ALL), "is empty", empty, "empty file");
        CHECK_FAILS_PATH(kn_dataset_open(&d, empty, KN_DATA_U16, KN_SPLIT_TRAIN), "is empty", empty,
                         "empty u16 file");
        const char *odd = in_dir("odd.bin");
        write_file(odd, "abcde", 5);
        CHECK_FAILS_PATH(kn_dataset_open(&d, odd, KN_DATA_U16, KN_SPLIT_ALL), "5 bytes, an odd size", odd,
                         "odd-size u16 file");
        CHECK_OK(kn_dataset_open(&d, odd, KN_DATA_BYTES, KN_SPLIT_ALL), "the same file as bytes is fine");
        CHECK_FAILS_PATH(kn_dataset_check_window(d, 5), "has 5 tokens, too few for one window of T+1 = 6", odd,
                         "file smaller than a window: names file, length and T+1");
        int32_t in[8], tg[8];
        kn_rng r;
        kn_rng_seed(&r, 1);
        CHECK_FAILS(kn_dataset_sample(d, &r, 1, 5, in, tg), "T+1 = 6", "sample refuses it too");
        CHECK_FAILS(kn_dataset_eval_window(d, 5, 0, in, tg), "T+1 = 6", "eval refuses it too");
        CHECK(kn_dataset_num_eval_windows(d, 5) == 0, "no eval windows");
        CHECK_OK(kn_dataset_sample(d, &r, 2, 4, in, tg), "T+1 = file length works");
        CHECK(in[0] == 'a' && tg[3] == 'e' && in[4] == 'a', "  ... the only window is the whole file");
        kn_dataset_close(d);
        CHECK_FAILS(kn_dataset_open(&d, odd, (kn_data_format)7, KN_SPLIT_ALL), "unknown format", "bad format");
        CHECK_FAILS(kn_dataset_open(&d, odd, KN_DATA_BYTES, (kn_split)9), "unknown split", "bad split");
        kn_dataset_close(NULL);
        CHECK(kn_dataset_path(NULL) == NULL && kn_dataset_num_tokens(NULL) == 0 && kn_dataset_vocab(NULL) == 0 &&
              kn_dataset_num_eval_windows(NULL, 4) == 0, "close(NULL) returns; NULL accessors give NULL and 0");
    }

    /* --- a file that shrinks while a run reads it: an error naming it, never SIGBUS ------ */
    {
        const char *ps = in_dir("shrinks.txt");
        uint8_t *buf = malloc(200000);
        for (int i = 0; i < 200000; i++) buf[i] = (uint8_t)(i * 7);
        write_file(ps, buf, 200000);
        kn_dataset *d;
        CHECK_OK(kn_dataset_open(&d, ps, KN_DATA_BYTES, KN_SPLIT_ALL), "open a 200000-byte file");
        int32_t in[64 * 64], tg[64 * 64];
        kn_rng r;
        kn_rng_seed(&r, 11);
        CHECK_OK(kn_dataset_sample(d, &r, 64, 64, in, tg), "sample before it shrinks");
        int64_t last = kn_dataset_num_eval_windows(d, 64) - 1;
        CHECK_OK(kn_dataset_eval_window(d, 64, last, in, tg), "last eval window before it shrinks");
        CHECK(truncate(ps, 1000) == 0, "truncate it to 1000 bytes under the open dataset");
        kn_status st = KN_OK;
        for (int i = 0; i < 10 && st == KN_OK; i++) st = kn_dataset_sample(d, &r, 64, 64, in, tg);
        CHECK(st == KN_ERR_IO && strstr(kn_errmsg(), ps) &&
              strstr(kn_errmsg(), "file shrank from 200000 to 1000 bytes while reading"),
              "sampling past the new end fails naming the file and both sizes: %s", kn_errmsg());
        CHECK_FAILS(kn_dataset_eval_window(d, 64, last, in, tg), "file shrank from 200000 to 1000 bytes",
                    "an eval window past the new end fails the same way");
        CHECK_FAILS(kn_dataset_eval_window(d, 64, 0, in, tg), "file shrank from 200000 to 1000 bytes",
                    "eval window 0, inside what is left, is refused too: the file is not the one opened");
        kn_dataset_close(d);

        /* rewritten in place: same size, other bytes, a new mtime; or grown */
        write_file(ps, buf, 200000);
        CHECK_OK(kn_dataset_open(&d, ps, KN_DATA_BYTES, KN_SPLIT_ALL), "reopen");
        CHECK_OK(kn_dataset_eval_window(d, 64, 0, in, tg), "eval window 0 reads");
        CHECK(in[0] == buf[0] && tg[63] == buf[64], "  ... with the right tokens");
        int fd = open(ps, O_WRONLY);
        struct timespec later[2] = {{0, UTIME_OMIT}, {4000000000LL, 0}};
        bool rewrote = fd >= 0 && pwrite(fd, "XYZ", 3, 0) == 3 && futimens(fd, later) == 0;
        if (fd >= 0) close(fd);
        CHECK(rewrote, "rewrite 3 bytes in place (the size stays, the mtime moves)");
        CHECK_FAILS(kn_dataset_sample(d, &r, 4, 64, in, tg), "was modified while reading (same size, 200000 bytes",
                    "sampling after an in-place rewrite fails naming it");
        CHECK(strstr(kn_errmsg(), ps) != NULL, "  ... and the file");
        CHECK_FAILS(kn_dataset_eval_window(d, 64, 1, in, tg), "was modified while reading", "  ... and so does eval");
        kn_dataset_close(d);
        write_file(ps, buf, 100000);
        CHECK_OK(kn_dataset_open(&d, ps, KN_DATA_BYTES, KN_SPLIT_ALL), "open a 100000-byte file");
        FILE *fa = fopen(ps, "ab");
        bool grew = fa && fwrite(buf, 1, 5000, fa) == 5000 && fclose(fa) == 0;
        CHECK(grew, "append 5000 bytes to it");
        CHECK_FAILS(kn_dataset_sample(d, &r, 4, 64, in, tg), "file grew from 100000 to 105000 bytes while reading",
                    "sampling after the file grew fails naming both sizes");
        kn_dataset_close(d);
        write_file(ps, buf, 200000);
        CHECK_OK(kn_dataset_open(&d, ps, KN_DATA_U16, KN_SPLIT_TRAIN), "open it again as u16");
        CHECK(truncate(ps, 0) == 0, "truncate it to 0 bytes");
        CHECK_FAILS(kn_dataset_sample(d, &r, 4, 64, in, tg), "file shrank from 200000 to 0 bytes", "u16 sampling fails too");
        kn_dataset_close(d);
        unlink(ps);
        free(buf);
    }

    /* --- a FIFO or a device is refused at once, not waited on ------------------------------ */
    {
        const char *fifo = in_dir("fifo.txt");
        CHECK(mkfifo(fifo, 0600) == 0, "made a FIFO");
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        kn_dataset *d = NULL;
        CHECK_FAILS_PATH(kn_dataset_open(&d, fifo, KN_DATA_BYTES, KN_SPLIT_ALL), "is a FIFO (named pipe)", fifo,
                         "a FIFO as a dataset is refused, naming its type");
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        CHECK(secs < 2.0 && d == NULL, "  ... without blocking (%.4f s)", secs);
        unlink(fifo);
        CHECK_FAILS_PATH(kn_dataset_open(&d, "/dev/zero", KN_DATA_U16, KN_SPLIT_ALL), "is a character device",
                         "/dev/zero", "a character device is refused");
    }

    /* --- a 1 GiB (sparse) file is read window by window, never loaded ------------------ */
    {
        const char *pbig = in_dir("big.bin");
        int fd = open(pbig, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        int64_t big = (int64_t)1 << 30;
        bool made = fd >= 0 && ftruncate(fd, big) == 0;
        if (fd >= 0) close(fd);
        CHECK(made, "made a 1 GiB sparse file");
        int64_t before = rss_anon_kb();
        kn_dataset *d;
        CHECK_OK(kn_dataset_open(&d, pbig, KN_DATA_BYTES, KN_SPLIT_TRAIN), "open 1 GiB train split");
        int64_t nb = big / BLK;
        CHECK(kn_dataset_num_tokens(d) == big - (nb / 20) * BLK, "train has all but every 20th block");
        int32_t in[256 * 8], tg[256 * 8];
        kn_rng r;
        kn_rng_seed(&r, 3);
        for (int i = 0; i < 10; i++) kn_dataset_sample(d, &r, 8, 256, in, tg);
        CHECK_OK(kn_dataset_sample(d, &r, 8, 256, in, tg), "sampling from it");
        int64_t after = rss_anon_kb();
        CHECK(before >= 0 && after - before < 16 * 1024, "anonymous memory grew by %lld KiB, not 1 GiB",
              (long long)(after - before));
        kn_dataset_close(d);
        unlink(pbig);
    }

    /* cleanup */
    const char *names[] = {"bytes2.5M.txt", "train.bin", "exactly19blocks.txt", "19blocks+1.txt",
                           "empty.txt", "odd.bin"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) unlink(in_dir(names[i]));
    int rm = rmdir(dir);
    CHECK(rm == 0, "temp directory removed (nothing left behind)");
    free(p25);
    free(raw);
    free(tok);
    free(idx);
    CHECK_DONE();
}
