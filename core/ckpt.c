/* ckpt.c — safetensors reading and writing.
 *
 * Byte order: the 8-byte header length is assembled byte by byte, so it is little-endian on
 * any host; tensor data is written and read as the host's raw float32 bytes, which is the
 * file's little-endian layout only on a little-endian host (x86-64, arm64 — all kiln runs
 * on). A big-endian port would byte-swap in write_contents and after read_data.
 *
 * Reading trusts nothing in the file: the header length is checked against the file size
 * before the header is read, the JSON is parsed with an explicit length, its raw text is
 * checked for what cJSON lets through (NULs inside strings, control bytes, invalid UTF-8),
 * and every tensor's dtype, shape and offsets are checked (with overflow-safe arithmetic)
 * against the data section, which the tensors must cover exactly, before it is read at all. */
#include "ckpt.h"
#include "fsio.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KN_CKPT_MAX_HEADER (100u * 1000u * 1000u)   /* as the reference implementation */
#define META_KEY "__metadata__"

/* ------------------------------------------------------------------------------------ */
/* Writing                                                                              */

/* Element count of a shape, or false on a negative dim or on overflow of bytes in int64. */
static bool shape_bytes(int ndim, const int64_t *shape, uint64_t *bytes)
{
    uint64_t n = 4;   /* sizeof(float) */
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return false;
        if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n)) return false;
    }
    if (n > (uint64_t)INT64_MAX) return false;
    *bytes = n;
    return true;
}

static cJSON *json_int(uint64_t v)
{
    /* Raw text, not a cJSON number: cJSON prints doubles with %g, which is not an exact
     * integer past 1e15, and readers of safetensors want exact unsigned integers. */
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return cJSON_CreateRaw(buf);
}

static kn_status check_write_args(const char *path, const kn_ckpt_tensor *tensors, int n_tensors,
                                  const kn_ckpt_meta *meta, int n_meta)
{
    if (!path || !*path) return kn_fail(KN_ERR_ARG, "ckpt: write: empty path");
    if (n_tensors < 0 || (n_tensors > 0 && !tensors))
        return kn_fail(KN_ERR_ARG, "ckpt: '%s': write: %d tensors but no tensor list", path, n_tensors);
    if (n_meta < 0 || (n_meta > 0 && !meta))
        return kn_fail(KN_ERR_ARG, "ckpt: '%s': write: %d metadata entries but no list", path, n_meta);
    for (int i = 0; i < n_tensors; i++) {
        const kn_ckpt_tensor *t = &tensors[i];
        if (!t->name) return kn_fail(KN_ERR_ARG, "ckpt: '%s': write: tensor %d has no name", path, i);
        if (strcmp(t->name, META_KEY) == 0)
            return kn_fail(KN_ERR_ARG, "ckpt: '%s': write: '%s' is reserved, not a tensor name", path, META_KEY);
        if (t->ndim < 0 || t->ndim > KN_CKPT_MAX_DIMS)
            return kn_fail(KN_ERR_ARG, "ckpt: '%s': write: tensor '%s' has ndim %d, expected 0..%d", path,
                           t->name, t->ndim, KN_CKPT_MAX_DIMS);
        uint64_t bytes = 0;
        if (!shape_bytes(t->ndim, t->shape, &bytes))
            return kn_fail(KN_ERR_ARG, "ckpt: '%s': write: tensor '%s' has a negative or overflowing shape",
                           path, t->name);
        if (bytes > 0 && !t->data)
            return kn_fail(KN_ERR_ARG, "ckpt: '%s': write: tensor '%s' has no data", path, t->name);
        for (int j = 0; j < i; j++)
            if (strcmp(tensors[j].name, t->name) == 0)
                return kn_fail(KN_ERR_ARG, "ckpt: '%s': write: duplicate tensor name '%s'", path, t->name);
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta[i].key || !meta[i].value)
            return kn_fail(KN_ERR_ARG, "ckpt: '%s': write: metadata entry %d has a NULL key or value", path, i);
        for (int j = 0; j < i; j++)
            if (strcmp(meta[j].key, meta[i].key) == 0)
                return kn_fail(KN_ERR_ARG, "ckpt: '%s': write: duplicate metadata key '%s'", path, meta[i].key);
    }
    return KN_OK;
}

/* The header text, padded with spaces so that the data section starts 8-byte aligned. */
static char *build_header(const char *path, const kn_ckpt_tensor *tensors, int n_tensors,
                          const kn_ckpt_meta *meta, int n_meta, size_t *len)
{
    cJSON *root = cJSON_CreateObject();
    bool ok = root != NULL;
    if (ok && n_meta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, META_KEY);
        ok = m != NULL;
        for (int i = 0; ok && i < n_meta; i++) ok = cJSON_AddStringToObject(m, meta[i].key, meta[i].value) != NULL;
    }
    uint64_t off = 0;
    for (int i = 0; ok && i < n_tensors; i++) {
        const kn_ckpt_tensor *t = &tensors[i];
        uint64_t bytes = 0;
        shape_bytes(t->ndim, t->shape, &bytes);
        cJSON *e = cJSON_AddObjectToObject(root, t->name);
        cJSON *shape = e ? cJSON_CreateArray() : NULL, *offs = shape ? cJSON_CreateArray() : NULL;
        ok = e && shape && offs && cJSON_AddStringToObject(e, "dtype", "F32");
        if (shape) cJSON_AddItemToObject(e, "shape", shape);
        if (offs) cJSON_AddItemToObject(e, "data_offsets", offs);
        for (int d = 0; ok && d < t->ndim; d++) {
            cJSON *v = json_int((uint64_t)t->shape[d]);
            ok = v && cJSON_AddItemToArray(shape, v);
        }
        cJSON *b = ok ? json_int(off) : NULL, *en = b ? json_int(off + bytes) : NULL;
        if (b) cJSON_AddItemToArray(offs, b);
        if (en) cJSON_AddItemToArray(offs, en);
        ok = ok && b && en;
        off += bytes;
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) {
        kn_fail(KN_ERR_NOMEM, "ckpt: '%s': out of memory building the header", path);
        return NULL;
    }
    size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
    char *out = malloc(padded + 1);
    if (!out) {
        free(text);
        kn_fail(KN_ERR_NOMEM, "ckpt: '%s': out of memory building the header", path);
        return NULL;
    }
    memcpy(out, text, n);
    memset(out + n, ' ', padded - n);
    out[padded] = '\0';
    free(text);
    *len = padded;
    return out;
}

typedef struct {
    const kn_ckpt_tensor *tensors;
    int n_tensors;
    const char *header;
    size_t hlen;
} write_job;

static kn_status write_contents(kn_file_out *out, void *ctx)
{
    const write_job *job = ctx;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)job->hlen >> (8 * i));
    kn_file_out_write(out, len8, 8);
    kn_file_out_write(out, job->header, job->hlen);
    for (int i = 0; i < job->n_tensors; i++) {
        uint64_t bytes = 0;
        shape_bytes(job->tensors[i].ndim, job->tensors[i].shape, &bytes);
        if (bytes > 0) kn_file_out_write(out, job->tensors[i].data, (size_t)bytes);
    }
    return KN_OK;   /* a failed write is sticky in out; the atomic writer reports it */
}

kn_status kn_ckpt_write(const char *path, const kn_ckpt_tensor *tensors, int n_tensors,
                        const kn_ckpt_meta *meta, int n_meta)
{
    kn_status st = check_write_args(path, tensors, n_tensors, meta, n_meta);
    if (st) return st;
    write_job job = {tensors, n_tensors, NULL, 0};
    char *header = build_header(path, tensors, n_tensors, meta, n_meta, &job.hlen);
    if (!header) return KN_ERR_NOMEM;
    job.header = header;
    st = kn_file_write_atomic(path, write_contents, &job);
    free(header);
    if (st) {
        /* The writer's message names the file and the failure; say whose file it was. */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", kn_errmsg());
        kn_fail(st, "ckpt: %s", msg);
    }
    return st;
}

/* ------------------------------------------------------------------------------------ */
/* Reading                                                                              */

struct kn_ckpt {
    char *path;
    cJSON *root;              /* owns the name, key and value strings */
    int n_tensors, n_meta;
    kn_ckpt_tensor *tensors;  /* in order of data offsets */
    int *by_name;             /* indices into tensors, sorted by name */
    kn_ckpt_meta *meta;       /* in header order */
    uint8_t *data;            /* the data section, kn_alloc'd (64-byte aligned) */
};

typedef struct {
    const char *name;
    uint64_t begin, end;
    int ndim;
    int64_t shape[KN_CKPT_MAX_DIMS];
    int order;                /* header position, to keep ties stable */
} entry;

void kn_ckpt_close(kn_ckpt *c)
{
    if (!c) return;
    kn_free(c->data);
    free(c->tensors);
    free(c->by_name);
    free(c->meta);
    cJSON_Delete(c->root);
    free(c->path);
    free(c);
}

/* A JSON number that is a non-negative integer exactly representable in a double. */
static bool json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

static int cmp_offsets(const void *a, const void *b)
{
    const entry *p = a, *q = b;
    if (p->begin != q->begin) return p->begin < q->begin ? -1 : 1;
    if (p->end != q->end) return p->end < q->end ? -1 : 1;
    return (p->order > q->order) - (p->order < q->order);
}

typedef struct { const char *name; int index; } named;

static int cmp_names(const void *a, const void *b)
{
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

static int cmp_meta(const void *a, const void *b)
{
    return strcmp(((const kn_ckpt_meta *)a)->key, ((const kn_ckpt_meta *)b)->key);
}

/* The dtypes of the safetensors format, for telling "another format's tensor" from garbage. */
static bool known_dtype(const char *d)
{
    static const char *const known[] = {"BOOL", "U8", "I8", "U16", "I16", "F16", "BF16", "U32", "I32",
                                        "F32", "U64", "I64", "F64", "F8_E5M2", "F8_E4M3", "F8_E8M0",
                                        "F6_E2M3", "F6_E3M2", "F4", "C64"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (strcmp(d, known[i]) == 0) return true;
    return false;
}

static kn_status parse_entry(const char *path, const cJSON *e, uint64_t data_size, entry *out)
{
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': tensor '%s': expected an object with dtype, shape "
                       "and data_offsets", path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dtype))
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': tensor '%s': field dtype %s, expected a string", path,
                       name, dtype ? "is not a string" : "is missing");
    /* strcmp is exact here: check_header_text refused every string with a NUL inside. */
    if (strcmp(dtype->valuestring, "F32") != 0)
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': tensor '%s' has %s dtype '%.32s'; kiln reads only F32 "
                       "tensors", path, name, known_dtype(dtype->valuestring) ? "unsupported" : "unknown",
                       dtype->valuestring);
    if (!cJSON_IsArray(shape))
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': tensor '%s': field shape %s, expected an array of "
                       "non-negative integers", path, name, shape ? "is not an array" : "is missing");
    int nd = cJSON_GetArraySize(shape);
    if (nd > KN_CKPT_MAX_DIMS)
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': tensor '%s': shape has %d dims, expected at most %d",
                       path, name, nd, KN_CKPT_MAX_DIMS);
    out->name = name;
    out->ndim = nd;
    uint64_t bytes = 4;
    bool overflow = false;
    int d = 0;
    for (const cJSON *v = shape->child; v; v = v->next, d++) {
        uint64_t dim;
        if (!json_uint(v, &dim))
            return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': tensor '%s': shape[%d] is not a non-negative "
                           "integer", path, name, d);
        out->shape[d] = (int64_t)dim;
        overflow |= __builtin_mul_overflow(bytes, dim, &bytes);
    }
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(offs->child, &out->begin) ||
        !json_uint(offs->child->next, &out->end))
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': tensor '%s': field data_offsets %s, expected "
                       "[begin, end] (non-negative integers)", path, name, offs ? "is malformed" : "is missing");
    if (out->begin > out->end || out->end > data_size)
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] "
                       "are not a range within the %" PRIu64 "-byte data section", path, name, out->begin,
                       out->end, data_size);
    if (overflow || bytes != out->end - out->begin)
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': tensor '%s': shape needs %s bytes of F32, but "
                       "data_offsets span %" PRIu64, path, name, overflow ? "more than 2^64" : "a different number of",
                       out->end - out->begin);
    return KN_OK;
}

/* Every read is checked against the size seen at open: a file truncated meanwhile is an error
 * naming it, never a short buffer. */
static kn_status read_at(int fd, const char *path, void *buf, size_t n, uint64_t off, uint64_t size)
{
    return kn_file_read_at(fd, path, "ckpt", buf, n, off, size);
}

/* Length of the valid UTF-8 sequence at p (1..4 bytes), or 0 if it is not one: a stray
 * continuation byte, an overlong form, a surrogate, past U+10FFFF or cut off by the end. */
static int utf8_len(const unsigned char *p, size_t avail)
{
    unsigned b = p[0], n;
    uint32_t cp, min;
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) { n = 2; cp = b & 0x1F; min = 0x80; }
    else if ((b & 0xF0) == 0xE0) { n = 3; cp = b & 0x0F; min = 0x800; }
    else if (b >= 0xF0 && b <= 0xF4) { n = 4; cp = b & 0x07; min = 0x10000; }
    else return 0;
    if (n > avail) return 0;
    for (unsigned i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return (int)n;
}

/* How a JSON string starting at text[i] (after its opening quote) goes wrong, or NULL: a raw
 * control character (not JSON; a raw NUL among them), an escaped NUL, or bytes that are not
 * UTF-8 (which safetensors requires of the header). cJSON keeps strings
 * NUL-terminated, so a NUL inside one would silently cut it short: "F32\u0000x" would read as
 * "F32". *end gets the index of the closing quote (or where the scan stopped). */
static const char *string_fault(const char *text, size_t hlen, size_t i, size_t *end)
{
    for (; i < hlen && text[i] != '"'; i++) {
        unsigned char b = (unsigned char)text[i];
        if (b < 0x20) { *end = i; return b == 0 ? "a raw NUL byte" : "a raw control character"; }
        if (b >= 0x80) {
            int len = utf8_len((const unsigned char *)text + i, hlen - i);
            if (len == 0) { *end = i; return "invalid UTF-8"; }
            i += (size_t)len - 1;
            continue;
        }
        if (b != '\\') continue;
        if (i + 5 < hlen && text[i + 1] == 'u' && memcmp(text + i + 2, "0000", 4) == 0) {
            *end = i;
            return "an escaped NUL (\\u0000)";
        }
        i++;   /* skip the escaped character, which may be a quote */
    }
    *end = i;
    return NULL;
}

/* How many bytes of the string starting at text[i] to show in a message: up to its closing
 * quote, a control character or invalid UTF-8 (either would garble the message), or about
 * 64 bytes. */
static int shown_len(const char *text, size_t hlen, size_t i)
{
    size_t j = i;
    while (j < hlen && j - i < 64 && text[j] != '"' && (unsigned char)text[j] >= 0x20) {
        int len = utf8_len((const unsigned char *)text + j, hlen - j);
        if (len == 0) break;
        j += text[j] == '\\' && j + 1 < hlen && (unsigned char)text[j + 1] >= 0x20 ? 2 : (size_t)len;
    }
    return (int)(j - i);
}

/* The header text has no control bytes but JSON whitespace outside strings, and every string
 * (names, dtypes, metadata) is free of NULs and control characters; a fault in a string names
 * the top-level entry it is in and shows the string up to it. */
static kn_status check_header_text(const char *path, const char *text, size_t hlen)
{
    int depth = 0;
    size_t key = 0, key_len = 0;   /* the raw text of the current top-level name */
    for (size_t i = 0; i < hlen; i++) {
        char ch = text[i];
        if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') depth--;
        /* cJSON skips every byte <= 0x20 as whitespace; JSON allows only these four. */
        if ((unsigned char)ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r')
            return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': the header has a control byte 0x%02x at byte %zu; "
                           "a JSON header has none outside strings", path, (unsigned char)ch, i);
        if (ch != '"') continue;
        size_t end;
        const char *fault = string_fault(text, hlen, i + 1, &end);
        int shown = shown_len(text, hlen, i + 1);
        if (fault && depth == 1)
            return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': the header name \"%.*s\" has %s at byte %zu of the "
                           "header; names, dtypes and metadata must be UTF-8 without NUL or control characters",
                           path, shown, text + i + 1, fault, end);
        if (fault)
            return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': in entry '%.*s', the string \"%.*s\" has %s at byte %zu "
                           "of the header; names, dtypes and metadata must be UTF-8 without NUL or "
                           "control characters", path, (int)(key_len < 64 ? key_len : 64), text + key, shown,
                           text + i + 1, fault, end);
        if (depth == 1) { key = i + 1; key_len = end - (i + 1); }   /* strings at depth 1 are names */
        i = end;
    }
    return KN_OK;
}

/* Parse the header text into c->root: one JSON object starting at byte 0, followed by
 * nothing but space padding, with clean strings. */
static kn_status parse_json(kn_ckpt *c, const char *text, size_t hlen)
{
    const char *path = c->path, *end = NULL;
    c->root = cJSON_ParseWithLengthOpts(text, hlen, &end, false);
    if (!c->root) {
        long at = end && end >= text && end <= text + hlen ? (long)(end - text) : -1;
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': the header is not valid JSON (error near byte %ld of %zu)",
                       path, at, hlen);
    }
    for (const char *p = end; p < text + hlen; p++)
        if (*p != ' ')
            return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': the header has bytes after its JSON object "
                           "(0x%02x at byte %ld of %zu); expected only space padding", path,
                           (unsigned char)*p, (long)(p - text), hlen);
    if (!cJSON_IsObject(c->root))
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': the header is not a JSON object", path);
    if (text[0] != '{')
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': the header starts with 0x%02x; a safetensors header "
                       "starts with '{'", path, (unsigned char)text[0]);
    return check_header_text(path, text, hlen);
}

/* __metadata__ e into c->meta: strings only, no duplicate keys. */
static kn_status parse_meta(kn_ckpt *c, const cJSON *e)
{
    const char *path = c->path;
    if (c->meta) return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': duplicate %s", path, META_KEY);
    if (!cJSON_IsObject(e))
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': %s is not an object of strings", path, META_KEY);
    int nm = cJSON_GetArraySize(e);
    c->meta = calloc((size_t)nm + 1, sizeof *c->meta);
    if (!c->meta) return kn_fail(KN_ERR_NOMEM, "ckpt: '%s': out of memory", path);
    for (const cJSON *m = e->child; m; m = m->next) {
        if (!m->string || !cJSON_IsString(m))
            return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': %s['%s'] is not a string; metadata values must be "
                           "strings", path, META_KEY, m->string ? m->string : "?");
        c->meta[c->n_meta++] = (kn_ckpt_meta){m->string, m->valuestring};
    }
    if (c->n_meta < 2) return KN_OK;
    /* A sorted copy finds duplicates in n log n even for a hostile header. */
    kn_ckpt_meta *sorted = malloc((size_t)c->n_meta * sizeof *sorted);
    if (!sorted) return kn_fail(KN_ERR_NOMEM, "ckpt: '%s': out of memory", path);
    memcpy(sorted, c->meta, (size_t)c->n_meta * sizeof *sorted);
    qsort(sorted, (size_t)c->n_meta, sizeof *sorted, cmp_meta);
    kn_status st = KN_OK;
    for (int i = 1; i < c->n_meta && !st; i++)
        if (strcmp(sorted[i - 1].key, sorted[i].key) == 0)
            st = kn_fail(KN_ERR_FORMAT, "ckpt: '%s': duplicate metadata key '%s'", path, sorted[i].key);
    free(sorted);
    return st;
}

/* The data section is exactly the tensors' bytes back to back from 0 (ents sorted by
 * offsets): no gap, no overlap, nothing after the last. A header length a few bytes off
 * moves where the data section starts; without this check every tensor would load shifted. */
static kn_status check_coverage(const char *path, const entry *ents, int n, uint64_t data_size)
{
    uint64_t covered = 0;
    const char *last = NULL;
    for (int i = 0; i < n; i++) {
        if (ents[i].begin < covered)
            return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': tensors '%s' and '%s' have overlapping data_offsets",
                           path, last, ents[i].name);
        if (ents[i].begin > covered)
            return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': bytes [%" PRIu64 ", %" PRIu64 ") of the data section "
                           "belong to no tensor (a gap before tensor '%s'); the tensors must cover it back to back",
                           path, covered, ents[i].begin, ents[i].name);
        covered = ents[i].end;
        last = ents[i].name;
    }
    if (covered != data_size)
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': the tensors cover %" PRIu64 " bytes but the data section has "
                       "%" PRIu64 "; the header length field or the file size is wrong (truncated, or "
                       "bytes appended?)", path, covered, data_size);
    return KN_OK;
}

/* c->by_name: indices sorted by name, so duplicates are neighbours and kn_ckpt_find can bisect. */
static kn_status index_by_name(kn_ckpt *c)
{
    int n = c->n_tensors;
    named *byn = malloc((size_t)n * sizeof *byn + 1);
    if (!byn) return kn_fail(KN_ERR_NOMEM, "ckpt: '%s': out of memory", c->path);
    for (int i = 0; i < n; i++) byn[i] = (named){c->tensors[i].name, i};
    qsort(byn, (size_t)n, sizeof *byn, cmp_names);
    kn_status st = KN_OK;
    for (int i = 0; i < n; i++) c->by_name[i] = byn[i].index;
    for (int i = 1; i < n && !st; i++)
        if (strcmp(byn[i - 1].name, byn[i].name) == 0)
            st = kn_fail(KN_ERR_FORMAT, "ckpt: '%s': duplicate tensor name '%s'", c->path, byn[i].name);
    free(byn);
    return st;
}

/* Header entries into ents (tensors) and c->meta; returns the tensor count in *n. */
static kn_status parse_entries(kn_ckpt *c, uint64_t data_size, entry *ents, int *n)
{
    *n = 0;
    for (const cJSON *e = c->root->child; e; e = e->next) {
        if (!e->string) return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': header entry without a name", c->path);
        kn_status st = strcmp(e->string, META_KEY) == 0 ? parse_meta(c, e)
                                                        : parse_entry(c->path, e, data_size, &ents[*n]);
        if (st) return st;
        if (strcmp(e->string, META_KEY) != 0) ents[*n].order = *n, (*n)++;
    }
    return KN_OK;
}

static kn_status parse_header(kn_ckpt *c, const char *text, size_t hlen, uint64_t data_size)
{
    kn_status st = parse_json(c, text, hlen);
    if (st) return st;
    int n_children = cJSON_GetArraySize(c->root), n = 0;
    entry *ents = calloc((size_t)n_children + 1, sizeof *ents);
    c->tensors = calloc((size_t)n_children + 1, sizeof *c->tensors);
    c->by_name = calloc((size_t)n_children + 1, sizeof *c->by_name);
    if (!ents || !c->tensors || !c->by_name) {
        free(ents);
        return kn_fail(KN_ERR_NOMEM, "ckpt: '%s': out of memory for %d header entries", c->path, n_children);
    }
    st = parse_entries(c, data_size, ents, &n);
    if (!st) {
        qsort(ents, (size_t)n, sizeof *ents, cmp_offsets);
        st = check_coverage(c->path, ents, n, data_size);
    }
    for (int i = 0; i < n && !st; i++) {
        kn_ckpt_tensor *t = &c->tensors[i];
        t->name = ents[i].name;
        t->ndim = ents[i].ndim;
        memcpy(t->shape, ents[i].shape, sizeof t->shape);
        t->data = (const float *)(uintptr_t)ents[i].begin;   /* offset for now; pointer after the read */
    }
    c->n_tensors = st ? 0 : n;
    if (!st) st = index_by_name(c);
    free(ents);
    return st;
}

/* The length field and the header text (NUL-terminated, malloc'd into *text), both checked
 * against the file size before anything is allocated by them. */
static kn_status read_header(int fd, const char *path, uint64_t size, char **text, uint64_t *hlen)
{
    if (size < 8)
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s' is %" PRIu64 " bytes, too short for the 8-byte header "
                       "length of a safetensors file", path, size);
    uint8_t len8[8];
    kn_status st = read_at(fd, path, len8, 8, 0, size);
    if (st) return st;
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)len8[i] << (8 * i);
    if (n > size - 8)
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': header length %" PRIu64 " exceeds the %" PRIu64 " bytes "
                       "after the length field (truncated or not a safetensors file)", path, n, size - 8);
    if (n > KN_CKPT_MAX_HEADER)
        return kn_fail(KN_ERR_FORMAT, "ckpt: '%s': header length %" PRIu64 " exceeds the %u-byte limit", path,
                       n, KN_CKPT_MAX_HEADER);
    *text = malloc((size_t)n + 1);
    if (!*text) return kn_fail(KN_ERR_NOMEM, "ckpt: '%s': out of memory for a %" PRIu64 "-byte header", path, n);
    (*text)[n] = '\0';
    *hlen = n;
    return read_at(fd, path, *text, (size_t)n, 8, size);
}

/* The data section into c->data, and the tensors' offsets turned into pointers. */
static kn_status read_data(kn_ckpt *c, int fd, uint64_t offset, uint64_t data_size, uint64_t size)
{
    c->data = kn_alloc((size_t)data_size);
    if (!c->data)
        return kn_fail(KN_ERR_NOMEM, "ckpt: '%s': out of memory for %" PRIu64 " bytes of tensor data", c->path,
                       data_size);
    kn_status st = read_at(fd, c->path, c->data, (size_t)data_size, offset, size);
    if (st) return st;
    /* Offsets are sums of F32 sizes from 0 (check_coverage) and c->data is 64-byte aligned,
     * so every tensor's floats are aligned in place. */
    for (int i = 0; i < c->n_tensors; i++) {
        kn_ckpt_tensor *t = &c->tensors[i];
        t->data = (const float *)(const void *)(c->data + (uintptr_t)t->data);
    }
    return KN_OK;
}

kn_status kn_ckpt_open(kn_ckpt **out, const char *path)
{
    if (!out) return kn_fail(KN_ERR_ARG, "ckpt: output pointer is NULL");
    *out = NULL;
    if (!path) return kn_fail(KN_ERR_ARG, "ckpt: path is NULL");
    kn_ckpt *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) {
        free(c);
        return kn_fail(KN_ERR_NOMEM, "ckpt: '%s': out of memory", path);
    }
    char *text = NULL;
    int fd = -1;
    uint64_t size = 0, hlen = 0;
    kn_status st = kn_file_open_read(path, "ckpt", "a safetensors file", &fd, &size);
    if (!st) st = read_header(fd, path, size, &text, &hlen);
    if (!st) st = parse_header(c, text, (size_t)hlen, size - 8 - hlen);
    /* Only now, with every range checked against the data section, touch the data. */
    if (!st) st = read_data(c, fd, 8 + hlen, size - 8 - hlen, size);
    if (fd >= 0) close(fd);
    free(text);
    if (st) {
        kn_ckpt_close(c);
        return st;
    }
    *out = c;
    return KN_OK;
}

int kn_ckpt_num_tensors(const kn_ckpt *c) { return c ? c->n_tensors : 0; }

const kn_ckpt_tensor *kn_ckpt_tensor_at(const kn_ckpt *c, int i)
{
    if (!c || i < 0 || i >= c->n_tensors) return NULL;
    return &c->tensors[i];
}

const kn_ckpt_tensor *kn_ckpt_find(const kn_ckpt *c, const char *name)
{
    if (!c || !name) return NULL;
    int lo = 0, hi = c->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int r = strcmp(c->tensors[c->by_name[mid]].name, name);
        if (r == 0) return &c->tensors[c->by_name[mid]];
        if (r < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

int kn_ckpt_num_meta(const kn_ckpt *c) { return c ? c->n_meta : 0; }

const kn_ckpt_meta *kn_ckpt_meta_at(const kn_ckpt *c, int i)
{
    if (!c || i < 0 || i >= c->n_meta) return NULL;
    return &c->meta[i];
}

const char *kn_ckpt_meta_get(const kn_ckpt *c, const char *key)
{
    if (!c || !key) return NULL;
    for (int i = 0; i < c->n_meta; i++)
        if (strcmp(c->meta[i].key, key) == 0) return c->meta[i].value;
    return NULL;
}

const char *kn_ckpt_path(const kn_ckpt *c) { return c ? c->path : NULL; }
