/* test_ckpt.c — safetensors: bit-exact round trips with metadata, the file layout, atomic
 * writes that never damage an existing file or leave temp files, and a reader that turns
 * every truncation, bit flip, wrong header length and hand-crafted bad header (gaps, NULs in
 * strings, stray padding) into a message naming the file. */
#include "check.h"
#include "tmpfiles.h"
#include "ckpt.h"

#include <cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)sz + 1);
    *n = fread(p, 1, (size_t)sz, f);
    fclose(f);
    return p;
}

/* Files in dir whose name contains needle. */
static int count_files(const char *needle)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, needle)) n++;
    if (d) closedir(d);
    return n;
}

/* A file made of an explicit header text (length field = its length unless hlen_override
 * is not -1) and data bytes. */
static void craft_n(const char *path, const char *header, size_t h, int64_t hlen_override, const void *data,
                    size_t n)
{
    uint64_t L = hlen_override >= 0 ? (uint64_t)hlen_override : h;
    uint8_t *buf = malloc(8 + h + n + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(L >> (8 * i));
    memcpy(buf + 8, header, h);
    if (n) memcpy(buf + 8 + h, data, n);
    write_file(path, buf, 8 + h + n);
    free(buf);
}

static void craft(const char *path, const char *header, int64_t hlen_override, const void *data, size_t n)
{
    craft_n(path, header, strlen(header), hlen_override, data, n);
}

/* Open must fail with a message containing needle and the path; nothing may leak. */
static int open_fails(const char *path, const char *needle)
{
    kn_ckpt *c = (kn_ckpt *)&c;
    kn_status st = kn_ckpt_open(&c, path);
    int ok = st != KN_OK && c == NULL && strstr(kn_errmsg(), path) && (!needle || strstr(kn_errmsg(), needle));
    if (!ok) printf("#   status %d, message \"%s\", wanted \"%s\"\n", (int)st, kn_errmsg(), needle ? needle : "");
    if (st == KN_OK) kn_ckpt_close(c);
    return ok;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

int main(void)
{
    tmp_dir_make("ckpt");

    /* --- round trip ------------------------------------------------------------------ */
    float wte[5 * 3], bias[7], cube[2 * 3 * 4], scalar[1] = {-0.0f};
    uint32_t special[] = {0x7fc00001u, 0xffc12345u, 0x7f800000u, 0xff800000u, 0x00000001u, 0x80000000u, 0x3f800000u};
    for (int i = 0; i < 15; i++) wte[i] = (float)i * 0.1f - 0.7f;
    for (int i = 0; i < 7; i++) memcpy(&bias[i], &special[i], 4);   /* NaN payloads, Inf, denormal, -0 */
    for (int i = 0; i < 24; i++) cube[i] = 1.0f / (float)(i + 1);
    kn_ckpt_tensor ts[] = {
        {"transformer.wte.weight", wte, 2, {5, 3}},
        {"transformer.h.0.attn.c_attn.bias", bias, 1, {7}},
        {"optim.m.cube", cube, 3, {2, 3, 4}},
        {"scalar", scalar, 0, {0}},
        {"empty", NULL, 2, {0, 3}},
    };
    kn_ckpt_meta meta[] = {
        {"step", "1200"},
        {"config", "{\"n_layer\": 2, \"quote\": \"\\\"\", \"nl\": \"a\nb\"}"},
        {"rng", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},
        {"unicode", "temp\xc3\xa9rature \xe2\x86\x92 loss"},
        {"", "empty key"},
    };
    char *p1 = strdup(in_dir("model.safetensors"));   /* long-lived: in_dir reuses its buffers */
    CHECK_OK(kn_ckpt_write(p1, ts, 5, meta, 5), "write 5 tensors + 5 metadata entries");
    CHECK(count_files(".tmp.") == 0, "no temp file left after a successful write");

    kn_ckpt *c = NULL;
    CHECK_OK(kn_ckpt_open(&c, p1), "open it again");
    CHECK(c && kn_ckpt_num_tensors(c) == 5 && kn_ckpt_num_meta(c) == 5, "5 tensors, 5 metadata entries");
    CHECK(c && strcmp(kn_ckpt_path(c), p1) == 0, "path kept");
    int order_ok = 1, bits_ok = 1, shape_ok = 1, align_ok = 1;
    for (int i = 0; c && i < 5; i++) {
        const kn_ckpt_tensor *t = kn_ckpt_tensor_at(c, i);
        order_ok &= strcmp(t->name, ts[i].name) == 0;   /* empty tensors tie at the end */
        shape_ok &= t->ndim == ts[i].ndim;
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) { shape_ok &= t->shape[d] == ts[i].shape[d]; n *= t->shape[d]; }
        align_ok &= ((uintptr_t)t->data & 3) == 0;
        for (int64_t k = 0; k < n; k++) bits_ok &= bits_of(t->data[k]) == bits_of(ts[i].data[k]);
    }
    CHECK(order_ok, "tensors come back in file (offset) order = write order");
    CHECK(shape_ok, "shapes round-trip, incl. a 0-d scalar and a (0,3) empty tensor");
    CHECK(bits_ok, "data round-trips bit for bit (NaN payloads, Inf, denormal, -0)");
    CHECK(align_ok, "data pointers are 4-byte aligned");
    int meta_ok = 1;
    for (int i = 0; c && i < 5; i++) {
        meta_ok &= strcmp(kn_ckpt_meta_get(c, meta[i].key), meta[i].value) == 0;
        meta_ok &= kn_ckpt_meta_at(c, i) != NULL;
    }
    CHECK(meta_ok, "metadata round-trips exactly (quotes, newlines, UTF-8, empty key)");
    CHECK(c && kn_ckpt_meta_get(c, "nope") == NULL && kn_ckpt_meta_at(c, 5) == NULL, "missing key: NULL");
    CHECK(c && kn_ckpt_find(c, "optim.m.cube") == kn_ckpt_tensor_at(c, 2) && !kn_ckpt_find(c, "optim.m"),
          "find by name");
    CHECK(c && kn_ckpt_tensor_at(c, 5) == NULL && kn_ckpt_tensor_at(c, -1) == NULL, "tensor_at out of range: NULL");
    kn_ckpt_close(c);
    kn_ckpt_close(NULL);

    /* --- layout: length field, padding, contiguous offsets, F32 ----------------------- */
    size_t n1;
    uint8_t *f1 = read_file(p1, &n1);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)f1[i] << (8 * i);
    CHECK((8 + hl) % 8 == 0 && 8 + hl + (15 + 7 + 24 + 1) * 4 == n1,
          "header padded to 8 bytes; file = 8 + header + data exactly (%zu bytes)", n1);
    CHECK(f1[8 + hl - 1] == ' ' || f1[8 + hl - 1] == '}', "header padding is spaces");
    cJSON *h = cJSON_ParseWithLength((const char *)f1 + 8, hl);
    uint64_t expect = 0;
    int lay_ok = h != NULL;
    for (int i = 0; lay_ok && i < 5; i++) {
        cJSON *e = cJSON_GetObjectItemCaseSensitive(h, ts[i].name);
        cJSON *o = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        lay_ok &= strcmp(cJSON_GetObjectItemCaseSensitive(e, "dtype")->valuestring, "F32") == 0;
        lay_ok &= cJSON_GetArrayItem(o, 0)->valuedouble == (double)expect;
        int64_t n = 1;
        for (int d = 0; d < ts[i].ndim; d++) n *= ts[i].shape[d];
        expect += 4 * (uint64_t)n;
        lay_ok &= cJSON_GetArrayItem(o, 1)->valuedouble == (double)expect;
    }
    CHECK(lay_ok, "dtype F32, offsets contiguous in the given order");
    CHECK(h && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(h, "__metadata__")), "__metadata__ is an object");
    cJSON_Delete(h);

    /* --- truncations: every shorter prefix is a clean error naming the file ----------- */
    {
        const char *pt = in_dir("truncated.safetensors");
        int all_ok = 1;
        for (size_t len = 0; len < n1; len++) {
            write_file(pt, f1, len);
            all_ok &= open_fails(pt, NULL);
        }
        CHECK(all_ok, "all %zu truncations fail cleanly, naming the file", n1);
        unlink(pt);
    }

    /* --- bit flips: length field and header give an error or a valid load; data flips load */
    {
        const char *pf = in_dir("flipped.safetensors");
        uint8_t *g = malloc(n1);
        int clean = 1, loaded = 0, failed = 0, data_ok = 1;
        for (size_t byte = 0; byte < n1; byte++) {
            bool in_data = byte >= 8 + hl;
            if (in_data && byte % 7 != 0) continue;   /* a sample of the data section */
            for (int bit = 0; bit < 8; bit++) {
                memcpy(g, f1, n1);
                g[byte] ^= (uint8_t)(1u << bit);
                write_file(pf, g, n1);
                kn_ckpt *d = NULL;
                kn_status st = kn_ckpt_open(&d, pf);
                if (st == KN_OK) {
                    loaded++;
                    if (in_data) {
                        /* exactly one bit of one tensor differs */
                        size_t off = byte - 8 - hl;
                        const kn_ckpt_tensor *t = kn_ckpt_tensor_at(d, off < 60 ? 0 : off < 88 ? 1 : off < 184 ? 2 : 3);
                        const float *orig = off < 60 ? wte : off < 88 ? bias : off < 184 ? cube : scalar;
                        size_t base = off < 60 ? 0 : off < 88 ? 60 : off < 184 ? 88 : 184;
                        size_t k = (off - base) / 4;
                        data_ok &= (bits_of(t->data[k]) ^ bits_of(orig[k])) == 1u << (8 * ((off - base) % 4) + bit);
                    }
                    kn_ckpt_close(d);
                } else {
                    failed++;
                    clean &= !in_data && d == NULL && strstr(kn_errmsg(), pf) != NULL;
                }
            }
        }
        CHECK(clean, "every failing flip is a clean error naming the file; no data flip fails");
        CHECK(data_ok, "data flips load with exactly that bit changed");
        NOTE("%d flips loaded, %d were rejected", loaded, failed);
        CHECK(failed > 0 && loaded > 0, "some flips rejected (%d), some loaded (%d)", failed, loaded);
        /* the top bits of the length field: huge lengths */
        int len_ok = 1;
        for (int bit = 0; bit < 64; bit++) {
            memcpy(g, f1, n1);
            g[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            write_file(pf, g, n1);
            len_ok &= open_fails(pf, NULL);
        }
        CHECK(len_ok, "all 64 length-field flips fail cleanly");
        /* every other header length near the true one moves the data section: all refused */
        int near_ok = 1;
        for (int64_t delta = -16; delta <= 16; delta++) {
            if (delta == 0) continue;
            memcpy(g, f1, n1);
            for (int i = 0; i < 8; i++) g[i] = (uint8_t)((hl + (uint64_t)delta) >> (8 * i));
            write_file(pf, g, n1);
            near_ok &= open_fails(pf, NULL);
        }
        CHECK(near_ok, "header lengths true-16 .. true+16 (other than the true one) are all refused");
        free(g);
        unlink(pf);
    }

    /* --- atomic writes ---------------------------------------------------------------- */
    {
        /* (a) the file system refuses the bytes mid-write (RLIMIT_FSIZE, as on a full disk) */
        static float bigbuf[64 * 1024];
        kn_ckpt_tensor big = {"big", bigbuf, 1, {64 * 1024}};
        struct rlimit old, lim;
        getrlimit(RLIMIT_FSIZE, &old);
        lim = old;
        lim.rlim_cur = 4096;
        signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &lim);
        kn_status st = kn_ckpt_write(p1, &big, 1, NULL, 0);
        setrlimit(RLIMIT_FSIZE, &old);
        CHECK(st == KN_ERR_IO && strstr(kn_errmsg(), p1) && strstr(kn_errmsg(), "File too large"),
              "a write that runs out of space fails with the path and the reason: %s", kn_errmsg());
        size_t n2;
        uint8_t *f2 = read_file(p1, &n2);
        CHECK(f2 && n2 == n1 && memcmp(f1, f2, n1) == 0, "the existing file is untouched");
        free(f2);
        CHECK(count_files(".tmp.") == 0, "and the temp file is removed");

        /* (b) rename fails: the target is a non-empty directory */
        char *pd = strdup(in_dir("adir"));
        mkdir(pd, 0755);
        char inner[300];
        snprintf(inner, sizeof inner, "%s/x", pd);
        write_file(inner, "x", 1);
        CHECK_FAILS(kn_ckpt_write(pd, ts, 1, NULL, 0), "renaming it over the target", "rename over a directory fails");
        CHECK(strstr(kn_errmsg(), pd) != NULL, "  ... naming the path");
        CHECK(count_files(".tmp.") == 0, "  ... and no temp file is left");

        /* (c) the temp name is taken by a directory: cannot create it */
        char tmpname[300];
        snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", p1, (long)getpid());
        mkdir(tmpname, 0755);
        CHECK_FAILS(kn_ckpt_write(p1, ts, 2, meta, 1), "cannot create", "temp file cannot be created");
        rmdir(tmpname);
        f2 = read_file(p1, &n2);
        CHECK(f2 && n2 == n1 && memcmp(f1, f2, n1) == 0, "  ... existing file untouched");
        free(f2);

        /* (d) an unwritable directory (root ignores permissions, so only as a normal user) */
        if (geteuid() != 0) {
            const char *ro = in_dir("ro");
            mkdir(ro, 0755);
            char target[300];
            snprintf(target, sizeof target, "%s/m.safetensors", ro);
            CHECK_OK(kn_ckpt_write(target, ts, 1, NULL, 0), "write into ro/ while writable");
            chmod(ro, 0555);
            CHECK_FAILS(kn_ckpt_write(target, ts, 2, NULL, 0), "Permission denied", "unwritable directory fails");
            chmod(ro, 0755);
            kn_ckpt *d;
            CHECK_OK(kn_ckpt_open(&d, target), "  ... and the old file still loads");
            CHECK(kn_ckpt_num_tensors(d) == 1, "  ... with its one tensor");
            kn_ckpt_close(d);
            unlink(target);
            rmdir(ro);
        } else {
            NOTE("running as root: the unwritable-directory case is covered by (a)-(c) instead");
        }
        /* (e) a directory that does not exist */
        const char *nodir = in_dir("no/such/dir/m.safetensors");
        CHECK_FAILS(kn_ckpt_write(nodir, ts, 1, NULL, 0), "No such file or directory", "missing directory");

        /* (f) bad arguments are refused before any file is created */
        kn_ckpt_tensor dup[2] = {ts[0], ts[0]};
        CHECK_FAILS(kn_ckpt_write(p1, dup, 2, NULL, 0), "duplicate tensor name 'transformer.wte.weight'", "duplicate names");
        kn_ckpt_tensor nodata = {"x", NULL, 1, {4}};
        CHECK_FAILS(kn_ckpt_write(p1, &nodata, 1, NULL, 0), "tensor 'x' has no data", "NULL data");
        kn_ckpt_tensor neg = {"x", wte, 2, {3, -1}};
        CHECK_FAILS(kn_ckpt_write(p1, &neg, 1, NULL, 0), "negative or overflowing shape", "negative dim");
        kn_ckpt_tensor res = {"__metadata__", wte, 1, {1}};
        CHECK_FAILS(kn_ckpt_write(p1, &res, 1, NULL, 0), "reserved", "__metadata__ as a tensor name");
        kn_ckpt_meta dm[2] = {{"a", "1"}, {"a", "2"}};
        CHECK_FAILS(kn_ckpt_write(p1, ts, 1, dm, 2), "duplicate metadata key 'a'", "duplicate metadata keys");
        f2 = read_file(p1, &n2);
        CHECK(f2 && n2 == n1 && memcmp(f1, f2, n1) == 0 && count_files(".tmp.") == 0,
              "after all failures: old file intact, no temp files");
        free(f2);

        /* (g) a successful write replaces the file */
        CHECK_OK(kn_ckpt_write(p1, ts + 1, 1, NULL, 0), "overwrite with one tensor, no metadata");
        kn_ckpt *d;
        CHECK_OK(kn_ckpt_open(&d, p1), "reopen");
        CHECK(kn_ckpt_num_tensors(d) == 1 && kn_ckpt_num_meta(d) == 0 &&
              strcmp(kn_ckpt_tensor_at(d, 0)->name, ts[1].name) == 0, "the new contents replaced the old");
        kn_ckpt_close(d);
        CHECK_OK(kn_ckpt_write(in_dir("nothing.safetensors"), NULL, 0, NULL, 0), "a file with no tensors");
        CHECK_OK(kn_ckpt_open(&d, in_dir("nothing.safetensors")), "  ... loads");
        CHECK(kn_ckpt_num_tensors(d) == 0, "  ... with 0 tensors");
        kn_ckpt_close(d);
        unlink(in_dir("nothing.safetensors"));
        unlink(inner);
        rmdir(pd);
        free(pd);
    }
    free(f1);

    /* --- hand-crafted headers --------------------------------------------------------- */
    {
        const char *p = in_dir("crafted.safetensors");
        float four[4] = {1, 2, 3, 4};
        static const struct { const char *header; size_t data; const char *needle; const char *what; } bad[] = {
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
             "tensor 'a': data_offsets [0, 8] are not a range within the 4-byte data section", "offsets past the end"},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "tensor 'a': data_offsets [8, 4]",
             "begin > end"},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
             "\"data_offsets\":[4,12]}}", 12, "tensors 'a' and 'b' have overlapping data_offsets", "overlapping ranges"},
            {"{\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
             "\"data_offsets\":[8,12]}}", 16, "overlapping", "a range inside another"},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
             "tensor 'a': shape needs a different number of bytes of F32, but data_offsets span 8", "wrong shape product"},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,8]}}", 8,
             "more than 2^64", "shape product overflows"},
            {"{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
             "tensor 'w' has unsupported dtype 'BF16'; kiln reads only F32", "BF16"},
            {"{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "unsupported dtype 'F64'", "F64"},
            {"{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'w': field dtype is not a string",
             "dtype not a string"},
            {"{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "field dtype is missing", "dtype missing"},
            {"{\"w\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, "tensor 'w': field shape is not an array",
             "shape not an array"},
            {"{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "field shape is missing", "shape missing"},
            {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0] is not a non-negative integer",
             "negative dim"},
            {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]", "fractional dim"},
            {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,\"2\"],\"data_offsets\":[0,8]}}", 8, "shape[1]", "string dim"},
            {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
             "shape has 9 dims, expected at most 8", "9 dims"},
            {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "tensor 'w': field data_offsets is malformed",
             "one offset"},
            {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "data_offsets is malformed", "three offsets"},
            {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", 4, "data_offsets is malformed",
             "huge offset"},
            {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "field data_offsets is missing", "offsets missing"},
            {"{\"w\":[1,2]}", 4, "tensor 'w': expected an object", "entry not an object"},
            {"{\"__metadata__\":{\"step\":5}}", 0, "__metadata__['step'] is not a string", "non-string metadata"},
            {"{\"__metadata__\":{\"a\":\"x\",\"b\":null}}", 0, "__metadata__['b'] is not a string", "null metadata"},
            {"{\"__metadata__\":[\"a\"]}", 0, "__metadata__ is not an object", "metadata not an object"},
            {"{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0, "duplicate metadata key 'a'", "duplicate metadata key"},
            {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate __metadata__", "two __metadata__"},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
             "\"data_offsets\":[4,8]}}", 8, "duplicate tensor name 'a'", "duplicate tensor names"},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "not valid JSON", "unterminated JSON"},
            {"", 4, "not valid JSON", "empty header"},
            {"[1,2,3]", 0, "not a JSON object", "a JSON array"},
            {"\"F32\"", 0, "not a JSON object", "a JSON string"},
            {"{} x", 0, "bytes after its JSON object", "trailing garbage"},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],"
             "\"data_offsets\":[8,12]}}", 12, "bytes [4, 8) of the data section belong to no tensor (a gap before tensor 'b')",
             "a gap between tensors"},
            {"{\"u\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[2,14]}}", 14, "bytes [0, 2) of the data section",
             "a gap before the first tensor (an unaligned offset)"},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
             "the tensors cover 4 bytes but the data section has 8", "bytes after the last tensor"},
            {"{}", 4, "the tensors cover 0 bytes but the data section has 4", "data but no tensors"},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"z\":{\"dtype\":\"F32\",\"shape\":[0],"
             "\"data_offsets\":[4,4]}}", 8, "tensors 'a' and 'z' have overlapping data_offsets", "an empty range inside another"},
            {"{\"w\":{\"dtype\":\"F32\\u0000x\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
             "in entry 'w', the string \"F32\\u0000x\" has an escaped NUL (\\u0000)", "dtype F32\\u0000x"},
            {"{\"w\":{\"dtype\":\"F32\\u0000\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "escaped NUL",
             "dtype F32\\u0000"},
            {"{\"w\\u0000x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
             "the header name \"w\\u0000x\" has an escaped NUL", "a tensor name with \\u0000"},
            {"{\"__metadata__\":{\"step\":\"5\\u0000junk\"}}", 0, "in entry '__metadata__', the string \"5\\u0000junk\"",
             "a metadata value with \\u0000"},
            {"{\"w\":{\"dtype\":\"F\t32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "a raw control character",
             "a raw tab inside a dtype"},
            {"{\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'w' has unknown dtype 'F33'",
             "an unknown dtype"},
            {"{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype 'f32'",
             "dtype in lower case"},
            {"{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "unsupported dtype 'F16'", "F16"},
            {"{\"w\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
             "the header name \"w\" has invalid UTF-8", "a name with a byte that is never UTF-8"},
            {"{\"__metadata__\":{\"k\":\"\xc0\xaf\"}}", 0, "in entry '__metadata__', the string \"\" has invalid UTF-8",
             "an overlong UTF-8 form in metadata"},
            {"{\"__metadata__\":{\"k\":\"\xed\xa0\x80\"}}", 0, "invalid UTF-8", "a UTF-8 encoded surrogate"},
            {"{\"__metadata__\":{\"k\":\"ok \xe2\x86\"}}", 0, "invalid UTF-8", "a cut-off UTF-8 sequence"},
            {" {}", 0, "the header starts with 0x20", "a header starting with a space"},
            {"{}\n", 0, "bytes after its JSON object (0x0a at byte 2 of 3)", "newline padding"},
            {"{}\0\0\0\0", 0, NULL, NULL},   /* placeholder, replaced below */
        };
        int n_bad = (int)(sizeof bad / sizeof *bad) - 1;
        for (int i = 0; i < n_bad; i++) {
            craft(p, bad[i].header, -1, four, bad[i].data);
            CHECK(open_fails(p, bad[i].needle), "crafted: %s -> error naming the file and the field", bad[i].what);
        }
        /* a header length larger than the file, and beyond the 100 MB limit */
        craft(p, "{}      ", 1000, NULL, 0);
        CHECK(open_fails(p, "header length 1000 exceeds the 8 bytes after the length field"), "header length > file");
        craft(p, "{}      ", (int64_t)1 << 62, NULL, 0);
        CHECK(open_fails(p, "exceeds"), "header length 2^62");
        {
            int fd = open(p, O_WRONLY | O_TRUNC | O_CREAT, 0644);
            uint8_t L[8];
            uint64_t hlen = 100000001;
            for (int i = 0; i < 8; i++) L[i] = (uint8_t)(hlen >> (8 * i));
            bool made = fd >= 0 && write(fd, L, 8) == 8 && ftruncate(fd, 8 + 100000001 + 16) == 0;
            if (fd >= 0) close(fd);
            CHECK(made && open_fails(p, "exceeds the 100000000-byte limit"), "a 100 MB + 1 header is refused (sparse file)");
        }
        write_file(p, "\x02\0\0\0", 4);
        CHECK(open_fails(p, "4 bytes, too short for the 8-byte header length"), "a 4-byte file");
        write_file(p, "", 0);
        CHECK(open_fails(p, "0 bytes"), "an empty file");
        CHECK(open_fails(dir, "is a directory"), "a directory");
        CHECK(open_fails(in_dir("missing.safetensors"), "No such file"), "a missing file");

        /* a raw NUL byte inside a string (the header given with its explicit length) */
        static const char rawnul[] = "{\"w\":{\"dtype\":\"F32\0x\",\"shape\":[1],\"data_offsets\":[0,4]}}";
        craft_n(p, rawnul, sizeof rawnul - 1, -1, four, 4);
        CHECK(open_fails(p, "in entry 'w', the string \"F32\" has a raw NUL byte"), "crafted: a raw NUL inside the dtype");
        static const char rawkey[] = "{\"w\0\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
        craft_n(p, rawkey, sizeof rawkey - 1, -1, four, 4);
        CHECK(open_fails(p, "the header name \"w\" has a raw NUL byte"), "crafted: a raw NUL inside a tensor name");

        static const char nul_between[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}\0\0 }";
        craft_n(p, nul_between, sizeof nul_between - 1, -1, four, 4);
        CHECK(open_fails(p, "the header has a control byte 0x00 at byte 53"), "crafted: NUL bytes between JSON tokens");
        craft(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}\x01}", -1, four, 4);
        CHECK(open_fails(p, "control byte 0x01"), "crafted: a control byte between JSON tokens");
        craft(p, "{\"a\":{\"dtype\":\"F32\",\t\"shape\":[1],\r\n\"data_offsets\":[0,4]}}", -1, four, 4);
        kn_ckpt *c3;
        CHECK_OK(kn_ckpt_open(&c3, p), "JSON whitespace (tab, CR, LF) between tokens is fine");
        kn_ckpt_close(c3);

        /* the header length one byte short or long: the data section moves by one byte */
        const char *padded = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}   ";
        int64_t plen = (int64_t)strlen(padded);
        craft(p, padded, plen - 1, four, 8);
        CHECK(open_fails(p, "the tensors cover 8 bytes but the data section has 9"),
              "header length one short (a padding space read as data) is refused");
        craft(p, padded, plen + 1, four, 8);
        CHECK(open_fails(p, "bytes after its JSON object"), "header length one long (a data byte read as header)");
        float spaces[2];
        memset(spaces, ' ', sizeof spaces);   /* data that starts with a 0x20 byte */
        craft(p, padded, plen + 1, spaces, 8);
        CHECK(open_fails(p, "not a range within the 7-byte data section"),
              "  ... even when that data byte is a space");
        craft(p, padded, plen, spaces, 8);
        kn_ckpt *c2;
        CHECK_OK(kn_ckpt_open(&c2, p), "with the right length it loads");
        CHECK(kn_ckpt_find(c2, "a") && memcmp(kn_ckpt_find(c2, "a")->data, spaces, 8) == 0, "  ... the data intact");
        kn_ckpt_close(c2);

        /* acceptable variations: no padding, extra fields, empty ranges at the boundaries,
         * header order unlike offset order, an escaped backslash before "u0000" */
        craft(p, "{\"u\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12],\"extra\":1},"
                 "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[12,12]},"
                 "\"y\":{\"dtype\":\"F32\",\"shape\":[2,0],\"data_offsets\":[0,0]},"
                 "\"__metadata__\":{\"format\":\"pt\",\"path\":\"C:\\\\u0000\"}}", -1, four, 12);
        CHECK_OK(kn_ckpt_open(&c2, p), "unpadded header, extra field, empty tensors at both ends, backslash-u0000 text");
        const kn_ckpt_tensor *u = kn_ckpt_find(c2, "u");
        CHECK(u && ((uintptr_t)u->data & 3) == 0 && u->data[0] == 1.0f && u->data[2] == 3.0f, "values read in place");
        CHECK(kn_ckpt_num_tensors(c2) == 3 && strcmp(kn_ckpt_tensor_at(c2, 0)->name, "y") == 0 &&
              strcmp(kn_ckpt_tensor_at(c2, 2)->name, "z") == 0 && strcmp(kn_ckpt_meta_get(c2, "format"), "pt") == 0,
              "order by offset; metadata read");
        CHECK(strcmp(kn_ckpt_meta_get(c2, "path"), "C:\\u0000") == 0, "an escaped backslash then u0000 is 8 plain bytes");
        kn_ckpt_close(c2);
        craft(p, "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}       ", -1, four, 8);
        CHECK_OK(kn_ckpt_open(&c2, p), "header order differs from offset order, trailing spaces");
        CHECK(strcmp(kn_ckpt_tensor_at(c2, 0)->name, "a") == 0 && kn_ckpt_tensor_at(c2, 1)->data[0] == 2.0f,
              "tensor_at follows offsets, not header order");
        kn_ckpt_close(c2);
        unlink(p);
    }

    unlink(p1);
    free(p1);
    int rm = rmdir(dir);
    CHECK(rm == 0, "temp directory empty and removed (no leftovers)");
    CHECK_DONE();
}
