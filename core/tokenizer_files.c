/* tokenizer_files.c — tokenizer files: Hugging Face tokenizer.json (BPE model, ByteLevel
 * pre-tokenizer and decoder; read and write) and GPT-2's encoder.json + vocab.bpe (read).
 * Both name tokens by their byte-level strings; kiln keeps the bytes. */
#include "tokenizer_internal.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- name -> id: the vocabulary's strings, looked up while reading merges ------------- */

typedef struct {
    const char **name;           /* [n]: the string of each id (borrowed from the JSON tree) */
    uint32_t n;
    uint32_t *slot;              /* open addressing over ids, KN_TOK_NONE = empty */
    uint64_t mask;
} name_index;

static void index_free(name_index *x) { free(x->name); free(x->slot); }

static uint32_t index_find(const name_index *x, const char *s, size_t len)
{
    for (uint64_t i = kn_tok_hash((const uint8_t *)s, len) & x->mask;; i = (i + 1) & x->mask) {
        uint32_t id = x->slot[i];
        if (id == KN_TOK_NONE) return KN_TOK_NONE;
        if (strlen(x->name[id]) == len && memcmp(x->name[id], s, len) == 0) return id;
    }
}

/* After name[] is filled: build the table; a name given to two ids is an error. */
static kn_status index_build(name_index *x, const char *file)
{
    uint64_t cap = 16;
    while (cap < 2ull * x->n + 16) cap *= 2;
    x->slot = malloc(cap * sizeof *x->slot);
    if (!x->slot) return kn_fail(KN_ERR_NOMEM, "%s: out of memory", file);
    memset(x->slot, 0xFF, cap * sizeof *x->slot);
    x->mask = cap - 1;
    for (uint32_t id = 0; id < x->n; id++) {
        size_t len = strlen(x->name[id]);
        if (index_find(x, x->name[id], len) != KN_TOK_NONE)
            return kn_fail(KN_ERR_FORMAT, "%s: token \"%s\" appears twice in the vocabulary", file, x->name[id]);
        uint64_t i = kn_tok_hash((const uint8_t *)x->name[id], len) & x->mask;
        while (x->slot[i] != KN_TOK_NONE) i = (i + 1) & x->mask;
        x->slot[i] = id;
    }
    return KN_OK;
}

static kn_status index_alloc(name_index *x, uint32_t n, const char *file)
{
    x->n = n;
    x->name = calloc(n ? n : 1, sizeof *x->name);
    return x->name ? KN_OK : kn_fail(KN_ERR_NOMEM, "%s: out of memory", file);
}

static kn_status index_set(name_index *x, uint32_t id, const char *name, const char *file)
{
    if (x->name[id] && strcmp(x->name[id], name) != 0)
        return kn_fail(KN_ERR_FORMAT, "%s: id %u is given to both \"%s\" and \"%s\"", file, id, x->name[id], name);
    x->name[id] = name;
    return KN_OK;
}

static bool json_id(const cJSON *v, uint32_t limit, uint32_t *id)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= limit ||
        v->valuedouble != (double)(uint32_t)v->valuedouble)
        return false;
    *id = (uint32_t)v->valuedouble;
    return true;
}

/* Names from a JSON object {string: id} with ids below limit. */
static kn_status index_from_vocab(name_index *x, const cJSON *vocab, const char *file)
{
    for (const cJSON *e = vocab->child; e; e = e->next) {
        uint32_t id;
        if (!json_id(e, x->n, &id))
            return kn_fail(KN_ERR_FORMAT, "%s: vocabulary entry \"%s\": expected an integer id in 0..%u",
                           file, e->string, x->n - 1);
        kn_status st = index_set(x, id, e->string, file);
        if (st != KN_OK) return st;
    }
    return KN_OK;
}

static kn_status index_check_complete(const name_index *x, const char *file)
{
    for (uint32_t id = 0; id < x->n; id++)
        if (!x->name[id]) return kn_fail(KN_ERR_FORMAT, "%s: no token has id %u (ids must be 0..%u)", file, id, x->n - 1);
    return KN_OK;
}

/* The vocabulary as parts: specials as their text, the others byte-level decoded. */
static kn_status parts_from_names(kn_tok_parts *p, const name_index *x, const uint8_t *is_special)
{
    size_t cap = 64;
    uint8_t *buf = malloc(cap);
    kn_status st = buf ? KN_OK : kn_fail(KN_ERR_NOMEM, "%s: out of memory", p->origin);
    for (uint32_t id = 0; st == KN_OK && id < x->n; id++) {
        const char *s = x->name[id];
        size_t len = strlen(s), n = 0;
        if (is_special[id]) { st = kn_tok_parts_add_token(p, (const uint8_t *)s, len, true); continue; }
        if (len > cap) {
            uint8_t *q = realloc(buf, len);
            if (!q) { st = kn_fail(KN_ERR_NOMEM, "%s: out of memory", p->origin); break; }
            buf = q;
            cap = len;
        }
        if (!kn_bytelevel_decode(s, len, buf, &n))
            st = kn_fail(KN_ERR_FORMAT, "%s: token %u \"%s\" is not a byte-level string (each character "
                         "must stand for one byte, as in GPT-2's alphabet)", p->origin, id, s);
        else
            st = kn_tok_parts_add_token(p, buf, n, false);
    }
    free(buf);
    return st;
}

/* One merge "left right" (names): add (left, right, left+right) to the parts. */
static kn_status add_named_merge(kn_tok_parts *p, const name_index *x, const char *left, size_t nl,
                                 const char *right, size_t nr, size_t line)
{
    uint32_t a = index_find(x, left, nl), b = index_find(x, right, nr);
    char joined[1024];
    if (nl + nr >= sizeof joined)
        return kn_fail(KN_ERR_FORMAT, "%s: merge %zu: tokens too long", p->origin, line);
    memcpy(joined, left, nl);
    memcpy(joined + nl, right, nr);
    uint32_t m = index_find(x, joined, nl + nr);
    if (a == KN_TOK_NONE || b == KN_TOK_NONE || m == KN_TOK_NONE)
        return kn_fail(KN_ERR_FORMAT, "%s: merge %zu \"%.*s %.*s\": %s is not in the vocabulary", p->origin,
                       line, (int)nl, left, (int)nr, right,
                       a == KN_TOK_NONE ? "the left token" : b == KN_TOK_NONE ? "the right token" : "their join");
    return kn_tok_parts_add_merge(p, a, b, m);
}

/* ---- GPT-2: encoder.json + vocab.bpe ------------------------------------------------------ */

static kn_status parse_json_file(const char *path, cJSON **root)
{
    uint8_t *data;
    size_t len;
    kn_status st = kn_tok_read_file(path, &data, &len);
    if (st != KN_OK) return st;
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts((const char *)data, len, &end, 0);
    if (!*root) {
        size_t at = end ? (size_t)(end - (const char *)data) : 0;
        free(data);
        return kn_fail(KN_ERR_FORMAT, "%s: not valid JSON (near byte %zu)", path, at);
    }
    free(data);
    return KN_OK;
}

static kn_status read_gpt2_merges(kn_tok_parts *p, const name_index *x, const char *path)
{
    uint8_t *data;
    size_t len;
    kn_status st = kn_tok_read_file(path, &data, &len);
    size_t line = 0, pos = 0;
    while (st == KN_OK && pos < len) {
        const char *s = (const char *)data + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + 1;
        line++;
        if (n && s[n - 1] == '\r') n--;
        if (n == 0 || (line == 1 && s[0] == '#')) continue;
        const char *sp = memchr(s, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp - s) - 1))
            st = kn_fail(KN_ERR_FORMAT, "%s:%zu: expected two tokens separated by one space", path, line);
        else
            st = add_named_merge(p, x, s, (size_t)(sp - s), sp + 1, n - (size_t)(sp - s) - 1, line);
    }
    free(data);
    return st;
}

kn_status kn_tok_load_gpt2(kn_tokenizer **out, const char *encoder_json, const char *vocab_bpe)
{
    *out = NULL;
    cJSON *root = NULL;
    name_index x = {0};
    uint8_t *special = NULL;
    kn_tok_parts p = {.origin = encoder_json};
    kn_status st = parse_json_file(encoder_json, &root);
    if (st == KN_OK && !cJSON_IsObject(root))
        st = kn_fail(KN_ERR_FORMAT, "%s: expected a JSON object {token: id}", encoder_json);
    if (st == KN_OK) st = index_alloc(&x, (uint32_t)cJSON_GetArraySize(root), encoder_json);
    if (st == KN_OK) st = index_from_vocab(&x, root, encoder_json);
    if (st == KN_OK) st = index_check_complete(&x, encoder_json);
    if (st == KN_OK) st = index_build(&x, encoder_json);
    if (st == KN_OK && !(special = calloc(x.n, 1))) st = kn_fail(KN_ERR_NOMEM, "out of memory");
    if (st == KN_OK) {
        uint32_t eot = index_find(&x, "<|endoftext|>", 13);
        if (eot != KN_TOK_NONE) special[eot] = 1;
        st = parts_from_names(&p, &x, special);
    }
    if (st == KN_OK) { p.origin = vocab_bpe; st = read_gpt2_merges(&p, &x, vocab_bpe); }
    if (st == KN_OK) st = kn_tok_build(out, &p);
    kn_tok_parts_free(&p);
    free(special);
    index_free(&x);
    cJSON_Delete(root);
    return st;
}

/* ---- tokenizer.json ---------------------------------------------------------------------- */

static bool json_false_or_absent(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return !v || cJSON_IsNull(v) || cJSON_IsFalse(v);
}

static bool json_empty_string_or_null(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return !v || cJSON_IsNull(v) || (cJSON_IsString(v) && v->valuestring[0] == 0);
}

/* kiln implements one pipeline: no normalizer, ByteLevel pre-tokenizer without prefix space
 * (GPT-2's), plain BPE. Anything else is refused rather than silently encoded differently. */
static kn_status check_pipeline(const cJSON *root, const cJSON *model, const char *path)
{
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm))
        return kn_fail(KN_ERR_FORMAT, "%s: field \"normalizer\": kiln supports only null", path);
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *type = pre ? cJSON_GetObjectItemCaseSensitive(pre, "type") : NULL;
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "ByteLevel") != 0)
        return kn_fail(KN_ERR_FORMAT, "%s: field \"pre_tokenizer\": kiln supports only {\"type\": \"ByteLevel\"}", path);
    const cJSON *aps = cJSON_GetObjectItemCaseSensitive(pre, "add_prefix_space");
    const cJSON *regex = cJSON_GetObjectItemCaseSensitive(pre, "use_regex");
    if (!cJSON_IsFalse(aps) || (regex && !cJSON_IsTrue(regex)))
        return kn_fail(KN_ERR_FORMAT, "%s: field \"pre_tokenizer\": kiln needs add_prefix_space false and "
                       "use_regex true (GPT-2's pre-tokenization)", path);
    type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "BPE") == 0))
        return kn_fail(KN_ERR_FORMAT, "%s: field \"model.type\": expected \"BPE\"", path);
    if (!json_empty_string_or_null(model, "continuing_subword_prefix") ||
        !json_empty_string_or_null(model, "end_of_word_suffix") || !json_false_or_absent(model, "byte_fallback") ||
        !json_false_or_absent(model, "ignore_merges") || !json_false_or_absent(model, "dropout"))
        return kn_fail(KN_ERR_FORMAT, "%s: field \"model\": kiln supports plain BPE (no subword prefix/suffix, "
                       "byte_fallback, ignore_merges or dropout)", path);
    return KN_OK;
}

/* The largest id in added_tokens plus one (at least n); checks each entry's shape. */
static kn_status added_extent(const cJSON *added, const char *path, uint32_t *n)
{
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        uint32_t id;
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!json_id(cJSON_GetObjectItemCaseSensitive(a, "id"), 1u << 30, &id) || !cJSON_IsString(content))
            return kn_fail(KN_ERR_FORMAT, "%s: field \"added_tokens\": each entry needs an integer \"id\" "
                           "and a string \"content\"", path);
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "special")))
            return kn_fail(KN_ERR_FORMAT, "%s: added token \"%s\" is not special; kiln supports only special "
                           "added tokens", path, content->valuestring);
        if (id + 1 > *n) *n = id + 1;
    }
    return KN_OK;
}

static kn_status names_from_added(name_index *x, uint8_t *special, const cJSON *added, const char *path)
{
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        uint32_t id = (uint32_t)cJSON_GetObjectItemCaseSensitive(a, "id")->valuedouble;
        kn_status st = index_set(x, id, cJSON_GetObjectItemCaseSensitive(a, "content")->valuestring, path);
        if (st != KN_OK) return st;
        special[id] = 1;
    }
    return KN_OK;
}

static kn_status read_json_merges(kn_tok_parts *p, const name_index *x, const cJSON *merges)
{
    size_t i = 0;
    for (const cJSON *m = merges->child; m; m = m->next, i++) {
        kn_status st;
        if (cJSON_IsString(m)) {
            const char *s = m->valuestring, *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' '))
                return kn_fail(KN_ERR_FORMAT, "%s: model.merges[%zu]: expected \"left right\"", p->origin, i);
            st = add_named_merge(p, x, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), i);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            const char *a = m->child->valuestring, *b = m->child->next->valuestring;
            st = add_named_merge(p, x, a, strlen(a), b, strlen(b), i);
        } else {
            return kn_fail(KN_ERR_FORMAT, "%s: model.merges[%zu]: expected \"left right\" or [left, right]",
                           p->origin, i);
        }
        if (st != KN_OK) return st;
    }
    return KN_OK;
}

static kn_status load_json_tree(kn_tokenizer **out, const cJSON *root, const char *path)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = model ? cJSON_GetObjectItemCaseSensitive(model, "vocab") : NULL;
    const cJSON *merges = model ? cJSON_GetObjectItemCaseSensitive(model, "merges") : NULL;
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return kn_fail(KN_ERR_FORMAT, "%s: expected \"model\" with a \"vocab\" object and a \"merges\" array", path);
    if (added && !cJSON_IsArray(added) && !cJSON_IsNull(added))
        return kn_fail(KN_ERR_FORMAT, "%s: field \"added_tokens\": expected an array", path);
    if (added && cJSON_IsNull(added)) added = NULL;
    kn_status st = check_pipeline(root, model, path);
    uint32_t n = 0;
    for (const cJSON *e = vocab->child; e; e = e->next)
        if (cJSON_IsNumber(e) && e->valuedouble >= 0 && e->valuedouble < (1u << 30) && e->valuedouble + 1 > n)
            n = (uint32_t)e->valuedouble + 1;
    if (st == KN_OK) st = added_extent(added, path, &n);
    /* ids are dense, so there are at most as many as entries: refuse before allocating */
    uint32_t entries = (uint32_t)cJSON_GetArraySize(vocab) + (uint32_t)cJSON_GetArraySize(added);
    if (st == KN_OK && n > entries)
        st = kn_fail(KN_ERR_FORMAT, "%s: token ids must be 0..%u (the number of entries), found id %u",
                     path, entries ? entries - 1 : 0, n - 1);
    name_index x = {0};
    uint8_t *special = NULL;
    kn_tok_parts p = {.origin = path};
    if (st == KN_OK) st = index_alloc(&x, n, path);
    if (st == KN_OK && !(special = calloc(n ? n : 1, 1))) st = kn_fail(KN_ERR_NOMEM, "%s: out of memory", path);
    if (st == KN_OK) st = index_from_vocab(&x, vocab, path);
    if (st == KN_OK) st = names_from_added(&x, special, added, path);
    if (st == KN_OK) st = index_check_complete(&x, path);
    if (st == KN_OK) st = index_build(&x, path);
    if (st == KN_OK) st = parts_from_names(&p, &x, special);
    if (st == KN_OK) st = read_json_merges(&p, &x, merges);
    if (st == KN_OK) st = kn_tok_build(out, &p);
    kn_tok_parts_free(&p);
    free(special);
    index_free(&x);
    return st;
}

kn_status kn_tok_load_json(kn_tokenizer **out, const char *path)
{
    *out = NULL;
    cJSON *root = NULL;
    kn_status st = parse_json_file(path, &root);
    if (st == KN_OK) st = load_json_tree(out, root, path);
    cJSON_Delete(root);
    return st;
}

/* ---- writing tokenizer.json ----------------------------------------------------------- */

/* The vocabulary name of a token: a special's text, else its byte-level string. */
static char *token_name(const kn_tokenizer *t, uint32_t id)
{
    size_t n;
    const uint8_t *b = kn_tok_token_bytes(t, id, &n);
    char *s = malloc(2 * n + 1);
    if (!s) return NULL;
    if (t->special[id]) { memcpy(s, b, n); s[n] = 0; }
    else s[kn_bytelevel_encode(b, n, s)] = 0;
    return s;
}

static cJSON *byte_level_json(bool add_prefix_space)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
    cJSON_AddBoolToObject(o, "trim_offsets", true);
    cJSON_AddBoolToObject(o, "use_regex", true);
    return o;
}

static cJSON *added_tokens_json(const kn_tokenizer *t, char **names)
{
    cJSON *arr = cJSON_CreateArray();
    for (uint32_t k = 0; k < t->n_specials; k++) {
        uint32_t id = t->special_ids[k];
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", id);
        cJSON_AddStringToObject(a, "content", names[id]);
        cJSON_AddBoolToObject(a, "single_word", false);
        cJSON_AddBoolToObject(a, "lstrip", false);
        cJSON_AddBoolToObject(a, "rstrip", false);
        cJSON_AddBoolToObject(a, "normalized", false);
        cJSON_AddBoolToObject(a, "special", true);
        cJSON_AddItemToArray(arr, a);
    }
    return arr;
}

static cJSON *model_json(const kn_tokenizer *t, char **names)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "type", "BPE");
    cJSON_AddNullToObject(m, "dropout");
    cJSON_AddNullToObject(m, "unk_token");
    cJSON_AddNullToObject(m, "continuing_subword_prefix");
    cJSON_AddNullToObject(m, "end_of_word_suffix");
    cJSON_AddBoolToObject(m, "fuse_unk", false);
    cJSON_AddBoolToObject(m, "byte_fallback", false);
    cJSON_AddBoolToObject(m, "ignore_merges", false);
    cJSON *vocab = cJSON_AddObjectToObject(m, "vocab");
    for (uint32_t id = 0; id < t->n_vocab; id++) cJSON_AddNumberToObject(vocab, names[id], id);
    cJSON *merges = cJSON_AddArrayToObject(m, "merges");
    for (uint32_t r = 0; r < t->n_merges; r++) {
        const char *pair[2] = {names[t->merges[r][0]], names[t->merges[r][1]]};
        cJSON_AddItemToArray(merges, cJSON_CreateStringArray(pair, 2));
    }
    return m;
}

static kn_status write_whole_bytes(const char *path, const void *data, size_t len);

static kn_status write_whole(const char *path, const char *text)
{
    return write_whole_bytes(path, text, strlen(text));
}

static kn_status write_whole_bytes(const char *path, const void *data, size_t len)
{
    const char *text = data;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return kn_fail(KN_ERR_ARG, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return kn_fail(KN_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        done += (size_t)w;
    }
    bool ok = done == len && fsync(fd) == 0;
    int err = errno;
    ok = close(fd) == 0 && ok;
    if (ok && rename(tmp, path) != 0) { err = errno; ok = false; }
    if (!ok) {
        unlink(tmp);
        return kn_fail(KN_ERR_IO, "%s: cannot write: %s", path, strerror(err));
    }
    return KN_OK;
}

/* The tokenizer.json tree of t, or NULL (out of memory; the message names `what`). */
static cJSON *tokenizer_tree(const kn_tokenizer *t, const char *what, kn_status *st)
{
    char **names = calloc(t->n_vocab, sizeof *names);
    *st = names ? KN_OK : kn_fail(KN_ERR_NOMEM, "%s: out of memory", what);
    for (uint32_t id = 0; *st == KN_OK && id < t->n_vocab; id++)
        if (!(names[id] = token_name(t, id))) *st = kn_fail(KN_ERR_NOMEM, "%s: out of memory", what);
    cJSON *root = NULL;
    if (*st == KN_OK) {
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "version", "1.0");
        cJSON_AddNullToObject(root, "truncation");
        cJSON_AddNullToObject(root, "padding");
        cJSON_AddItemToObject(root, "added_tokens", added_tokens_json(t, names));
        cJSON_AddNullToObject(root, "normalizer");
        cJSON_AddItemToObject(root, "pre_tokenizer", byte_level_json(false));
        cJSON_AddNullToObject(root, "post_processor");
        cJSON_AddItemToObject(root, "decoder", byte_level_json(true));
        cJSON_AddItemToObject(root, "model", model_json(t, names));
    }
    for (uint32_t id = 0; names && id < t->n_vocab; id++) free(names[id]);
    free(names);
    return root;
}

kn_status kn_tok_save_json(const kn_tokenizer *t, const char *path)
{
    kn_status st;
    cJSON *root = tokenizer_tree(t, path, &st);
    char *text = NULL;
    if (st == KN_OK && !(text = cJSON_Print(root)))
        st = kn_fail(KN_ERR_NOMEM, "%s: out of memory formatting the JSON", path);
    if (st == KN_OK) st = write_whole(path, text);
    cJSON_free(text);
    cJSON_Delete(root);
    return st;
}

kn_status kn_tok_to_json(const kn_tokenizer *t, char **text)
{
    if (!t || !text) return kn_fail(KN_ERR_ARG, "tokenizer: to_json needs a tokenizer and an output");
    *text = NULL;
    kn_status st;
    cJSON *root = tokenizer_tree(t, "tokenizer.json", &st);
    if (st == KN_OK && !(*text = cJSON_PrintUnformatted(root)))
        st = kn_fail(KN_ERR_NOMEM, "tokenizer.json: out of memory formatting the JSON");
    cJSON_Delete(root);
    return st;
}

kn_status kn_tok_load_json_text(kn_tokenizer **out, const char *text, size_t len, const char *origin)
{
    if (!out || !text || !origin) return kn_fail(KN_ERR_ARG, "tokenizer: load_json_text: NULL argument");
    *out = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)(end - text) : 0;
        return kn_fail(KN_ERR_FORMAT, "%s: not valid JSON (near byte %zu)", origin, at);
    }
    kn_status st = load_json_tree(out, root, origin);
    cJSON_Delete(root);
    return st;
}

/* ---- token files --------------------------------------------------------------------- */

kn_status kn_tok_encode_file_u16(kn_tokenizer *t, const char *in, const char *out, bool allow_special,
                                 int64_t *n_tokens)
{
    uint8_t *text;
    size_t len;
    kn_status st = kn_tok_read_file(in, &text, &len);
    if (st != KN_OK) return st;
    kn_ids ids = {0};
    st = kn_tok_encode(t, text, len, allow_special, &ids);
    free(text);
    uint16_t *u16 = NULL;
    if (st == KN_OK && !(u16 = malloc((ids.n + 1) * sizeof *u16)))
        st = kn_fail(KN_ERR_NOMEM, "%s: out of memory for %zu tokens", in, ids.n);
    for (size_t i = 0; st == KN_OK && i < ids.n; i++) {
        if (ids.ids[i] > UINT16_MAX)
            st = kn_fail(KN_ERR_ARG, "%s: token id %u (at token %zu) does not fit in uint16; a vocabulary "
                         "of at most 65536 is needed for a .bin file", in, ids.ids[i], i);
        uint16_t v = (uint16_t)ids.ids[i];
        memcpy(&u16[i], (uint8_t[2]){(uint8_t)(v & 0xFF), (uint8_t)(v >> 8)}, 2);   /* little-endian */
    }
    if (st == KN_OK) st = write_whole_bytes(out, u16, ids.n * sizeof *u16);
    if (st == KN_OK && n_tokens) *n_tokens = (int64_t)ids.n;
    free(u16);
    free(ids.ids);
    return st;
}
