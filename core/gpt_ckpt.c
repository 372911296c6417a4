/* gpt_ckpt.c — the mapping between a model (+ optimizer) and a checkpoint's tensors and
 * metadata. The file format itself (header, offsets, atomic writes) is core/ckpt.c's. */
#include "gpt_ckpt.h"
#include "hash.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const config_keys[] = {
    "kiln.config.vocab_size", "kiln.config.block_size", "kiln.config.n_layer",
    "kiln.config.n_head", "kiln.config.n_embd"};
static const char *const mup_keys[] = {
    "kiln.config.base_width", "kiln.config.output_mult", "kiln.config.attn_mult"};
#define T_KEY "kiln.adamw.t"
#define MOMENT_NAME 80   /* "optim.m." + a parameter name (< 64) */

static const char *describe(const kn_gpt *g, char *buf, size_t n)
{
    const kn_gpt_config *c = kn_gpt_get_config(g);
    snprintf(buf, n, "model %p: n_layer=%d n_head=%d n_embd=%d block_size=%d vocab_size=%d",
             (const void *)g, c->n_layer, c->n_head, c->n_embd, c->block_size, c->vocab_size);
    return buf;
}

/* An optimizer updates the buffers of the model it was made for; any other model's
 * tensors have other sizes or offsets, so reading or writing its moments would run off
 * one heap block or silently mix two models. */
static kn_status check_owner(const char *path, const kn_gpt *g, const kn_adamw *o)
{
    if (!o || kn_adamw_model(o) == g) return KN_OK;
    char a[160], b[160];
    return kn_fail(KN_ERR_ARG, "%s: the optimizer belongs to another model (its %s; given %s)",
                   path, describe(kn_adamw_model(o), a, sizeof a), describe(g, b, sizeof b));
}

/* ---------------------------------------------------------------- saving */

typedef struct {
    kn_ckpt_tensor *tensors;
    kn_ckpt_meta *meta;
    char (*names)[MOMENT_NAME];   /* moment names, 2 per parameter */
    char (*values)[40];           /* formatted metadata values */
    int n_tensors, n_meta, n_values;
} save_plan;

static void add_tensor(save_plan *p, const char *name, const float *data, const kn_param_info *info)
{
    kn_ckpt_tensor *t = &p->tensors[p->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->data = data;
    t->ndim = info->ndim;
    for (int d = 0; d < info->ndim; d++) t->shape[d] = info->shape[d];
}

static void add_meta(save_plan *p, const char *key, const char *fmt, double v, int64_t i)
{
    char *buf = p->values[p->n_values++];
    if (fmt[1] == 'g') snprintf(buf, 40, "%.9g", v);
    else snprintf(buf, 40, "%lld", (long long)i);
    p->meta[p->n_meta++] = (kn_ckpt_meta){key, buf};
}

static void plan_tensors(save_plan *p, kn_gpt *g, kn_adamw *o)
{
    int nt = kn_gpt_num_tensors(g);
    const float *params = kn_gpt_params(g);
    for (int i = 0; i < nt; i++) {
        const kn_param_info *info = kn_gpt_param_info(g, i);
        add_tensor(p, info->name, params + info->offset, info);
    }
    /* nanoGPT's state_dict also carries the tied head under its own name. */
    const kn_param_info *wte = kn_gpt_param_info(g, 0);
    add_tensor(p, "lm_head.weight", params + wte->offset, wte);
    for (int i = 0; o && i < nt; i++) {
        const kn_param_info *info = kn_gpt_param_info(g, i);
        snprintf(p->names[2 * i], MOMENT_NAME, "optim.m.%s", info->name);
        snprintf(p->names[2 * i + 1], MOMENT_NAME, "optim.v.%s", info->name);
        add_tensor(p, p->names[2 * i], kn_adamw_m(o) + info->offset, info);
        add_tensor(p, p->names[2 * i + 1], kn_adamw_v(o) + info->offset, info);
    }
}

static void plan_meta(save_plan *p, const kn_gpt *g, const kn_adamw *o)
{
    const kn_gpt_config *c = kn_gpt_get_config(g);
    p->meta[p->n_meta++] = (kn_ckpt_meta){"kiln.format", KN_GPT_CKPT_FORMAT};
    p->meta[p->n_meta++] = (kn_ckpt_meta){"kiln.version", kn_version()};
    const int sizes[] = {c->vocab_size, c->block_size, c->n_layer, c->n_head, c->n_embd};
    for (int i = 0; i < 5; i++) add_meta(p, config_keys[i], "%d", 0, sizes[i]);
    /* The parametrisation always (a reader must not guess it); the μP values exactly. */
    p->meta[p->n_meta++] = (kn_ckpt_meta){"kiln.config.parametrization", c->mup ? "mup" : "sp"};
    p->meta[p->n_meta++] = (kn_ckpt_meta){"kiln.config.activation", kn_gpt_activation_name(c->activation)};
    if (c->mup) {
        const float mv[] = {c->mup_base_width, c->mup_output_mult, c->mup_attn_mult};
        for (int i = 0; i < 3; i++) add_meta(p, mup_keys[i], "%g", mv[i], 0);
        p->meta[p->n_meta++] =
            (kn_ckpt_meta){"kiln.config.zero_query", c->mup_zero_query ? "true" : "false"};
    }
    if (o) add_meta(p, T_KEY, "%d", 0, kn_adamw_t(o));
}

/* The tokenizer's metadata: kind, and for BPE its JSON text (malloc'ed into *json), hash and
 * size. Checked against the model first: ids the tokenizer makes must fit the embedding. */
static kn_status plan_tokenizer(save_plan *p, const char *path, const kn_gpt *g,
                                const kn_gpt_save_opts *opts, char **json, char *sha_hex)
{
    int V = kn_gpt_get_config(g)->vocab_size;
    if (opts->tok_kind == KN_CKPT_TOK_NONE) return KN_OK;
    if (opts->tok_kind == KN_CKPT_TOK_BYTES) {
        if (V < 256)
            return kn_fail(KN_ERR_ARG, "%s: tokenizer \"bytes\" has 256 tokens but the model's vocab_size "
                           "is %d", path, V);
        p->meta[p->n_meta++] = (kn_ckpt_meta){"kiln.tokenizer", "bytes"};
        return KN_OK;
    }
    if (opts->tok_kind != KN_CKPT_TOK_BPE || !opts->tokenizer)
        return kn_fail(KN_ERR_ARG, "%s: tokenizer kind %d without a tokenizer (expected bytes, or bpe "
                       "with one)", path, (int)opts->tok_kind);
    int tv = kn_tok_vocab_size(opts->tokenizer);
    if (tv > V)
        return kn_fail(KN_ERR_ARG, "%s: the tokenizer has %d tokens but the model's vocab_size is %d",
                       path, tv, V);
    kn_status st = kn_tok_to_json(opts->tokenizer, json);
    if (st) return st;
    uint8_t digest[KN_SHA256_BYTES];
    kn_hash_sha256(*json, strlen(*json), digest);
    kn_hash_hex(digest, KN_SHA256_BYTES, sha_hex);
    p->meta[p->n_meta++] = (kn_ckpt_meta){"kiln.tokenizer", "bpe"};
    p->meta[p->n_meta++] = (kn_ckpt_meta){"kiln.tokenizer.json", *json};
    p->meta[p->n_meta++] = (kn_ckpt_meta){"kiln.tokenizer.sha256", sha_hex};
    add_meta(p, "kiln.tokenizer.vocab_size", "%d", 0, tv);
    return KN_OK;
}

kn_status kn_gpt_save(const char *path, kn_gpt *g, kn_adamw *o, const kn_ckpt_meta *meta,
                      int n_meta)
{
    kn_gpt_save_opts opts = {.optimizer = o, .meta = meta, .n_meta = n_meta};
    return kn_gpt_save_with(path, g, &opts);
}

kn_status kn_gpt_save_with(const char *path, kn_gpt *g, const kn_gpt_save_opts *opts)
{
    if (!path || !g || !opts) return kn_fail(KN_ERR_ARG, "gpt_save: path, model or options is NULL");
    kn_adamw *o = opts->optimizer;
    const kn_ckpt_meta *meta = opts->meta;
    int n_meta = opts->n_meta;
    if (n_meta < 0 || (n_meta > 0 && !meta))
        return kn_fail(KN_ERR_ARG, "%s: metadata count %d without metadata", path, n_meta);
    kn_status st = check_owner(path, g, o);
    if (st) return st;
    for (int i = 0; i < n_meta; i++)
        if (!meta[i].key || !meta[i].value || strncmp(meta[i].key, "kiln.", 5) == 0)
            return kn_fail(KN_ERR_ARG, "%s: metadata key '%s' is NULL or uses the reserved prefix 'kiln.'",
                           path, meta[i].key ? meta[i].key : "(null)");
    int nt = kn_gpt_num_tensors(g);
    save_plan p = {0};
    char *json = NULL, sha_hex[KN_SHA256_HEX];
    p.tensors = calloc((size_t)(1 + 3 * nt), sizeof *p.tensors);
    p.meta = calloc((size_t)(20 + n_meta), sizeof *p.meta);
    p.names = calloc((size_t)(2 * nt), sizeof *p.names);
    p.values = calloc(20, sizeof *p.values);
    if (p.tensors && p.meta && p.names && p.values) {
        plan_tensors(&p, g, o);
        plan_meta(&p, g, o);
        st = plan_tokenizer(&p, path, g, opts, &json, sha_hex);
        for (int i = 0; i < n_meta; i++) p.meta[p.n_meta++] = meta[i];
        if (!st) st = kn_ckpt_write(path, p.tensors, p.n_tensors, p.meta, p.n_meta);
    } else {
        st = kn_fail(KN_ERR_NOMEM, "%s: out of memory planning the checkpoint", path);
    }
    free(json);
    free(p.tensors);
    free(p.meta);
    free(p.names);
    free(p.values);
    return st;
}

/* ---------------------------------------------------------------- the config */

/* A whole-string integer in [lo, hi]; anything else ("abc", "3x", "1e3", "") is refused. */
static kn_status parse_int(const kn_ckpt *c, const char *key, const char *v, long long lo,
                           long long hi, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long n = v && *v ? strtoll(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || n < lo || n > hi)
        return kn_fail(KN_ERR_FORMAT, "%s: metadata '%s' = '%s' is not an integer in [%lld, %lld]",
                       kn_ckpt_path(c), key, v ? v : "(missing)", lo, hi);
    *out = n;
    return KN_OK;
}

static kn_status recorded_sizes(const kn_ckpt *c, kn_gpt_config *cfg)
{
    int *fields[] = {&cfg->vocab_size, &cfg->block_size, &cfg->n_layer, &cfg->n_head, &cfg->n_embd};
    for (int i = 0; i < 5; i++) {
        const char *v = kn_ckpt_meta_get(c, config_keys[i]);
        long long n;
        if (!v) continue;
        kn_status st = parse_int(c, config_keys[i], v, 1, 1 << 24, &n);
        if (st) return st;
        *fields[i] = (int)n;
    }
    return KN_OK;
}

/* Sizes a nanoGPT file does not record, from its tensors' shapes. */
static kn_status implied_sizes(const kn_ckpt *c, int n_head, kn_gpt_config *cfg)
{
    const char *path = kn_ckpt_path(c);
    if (!cfg->vocab_size || !cfg->n_embd) {
        const kn_ckpt_tensor *wte = kn_ckpt_find(c, "transformer.wte.weight");
        if (!wte || wte->ndim != 2 || wte->shape[0] > 1 << 24 || wte->shape[1] > 1 << 24)
            return kn_fail(KN_ERR_FORMAT, "%s: no kiln config and no 2-D 'transformer.wte.weight' "
                           "to infer it from", path);
        cfg->vocab_size = (int)wte->shape[0];
        cfg->n_embd = (int)wte->shape[1];
    }
    if (!cfg->block_size) {
        const kn_ckpt_tensor *wpe = kn_ckpt_find(c, "transformer.wpe.weight");
        if (!wpe || wpe->ndim != 2 || wpe->shape[0] > 1 << 24)
            return kn_fail(KN_ERR_FORMAT, "%s: no kiln config and no 2-D 'transformer.wpe.weight'", path);
        cfg->block_size = (int)wpe->shape[0];
    }
    if (!cfg->n_layer) {
        char name[96];
        while (cfg->n_layer < 1 << 20 &&
               (snprintf(name, sizeof name, "transformer.h.%d.ln_1.weight", cfg->n_layer),
                kn_ckpt_find(c, name)))
            cfg->n_layer++;
    }
    if (!cfg->n_head) cfg->n_head = n_head;
    if (!cfg->n_head)
        return kn_fail(KN_ERR_ARG, "%s: the file does not record n_head; pass it (n_head = ...)", path);
    return KN_OK;
}

/* μP fields; files without the key (older kiln, nanoGPT) are the standard parametrisation. */
static kn_status recorded_mup(const kn_ckpt *c, kn_gpt_config *cfg)
{
    const char *path = kn_ckpt_path(c);
    const char *par = kn_ckpt_meta_get(c, "kiln.config.parametrization");
    if (!par || strcmp(par, "sp") == 0) return KN_OK;
    if (strcmp(par, "mup") != 0)
        return kn_fail(KN_ERR_FORMAT, "%s: metadata 'kiln.config.parametrization' = '%s' "
                       "(expected sp or mup)", path, par);
    cfg->mup = 1;
    float *mf[] = {&cfg->mup_base_width, &cfg->mup_output_mult, &cfg->mup_attn_mult};
    for (int i = 0; i < 3; i++) {
        const char *v = kn_ckpt_meta_get(c, mup_keys[i]);
        char *end = NULL;
        double x = v ? strtod(v, &end) : 0.0;
        if (!v || !*v || *end || !(x > 0 && x < 1e30))
            return kn_fail(KN_ERR_FORMAT, "%s: metadata '%s' = '%s' is not a positive number", path,
                           mup_keys[i], v ? v : "(missing)");
        *mf[i] = (float)x;
    }
    const char *zq = kn_ckpt_meta_get(c, "kiln.config.zero_query");
    cfg->mup_zero_query = zq && strcmp(zq, "true") == 0;
    return KN_OK;
}

/* The MLP's GELU. kiln files without the key predate the option (tanh); a file without kiln
 * metadata is nanoGPT's, whose nn.GELU() is the exact form, unless the hint says otherwise. */
static kn_status recorded_activation(const kn_ckpt *c, const char *hint, kn_gpt_config *cfg)
{
    const char *path = kn_ckpt_path(c);
    const char *act = kn_ckpt_meta_get(c, "kiln.config.activation");
    if (act) {
        if (!kn_gpt_activation_parse(act, &cfg->activation))
            return kn_fail(KN_ERR_FORMAT, "%s: metadata 'kiln.config.activation' = '%s' "
                           "(expected gelu_tanh or gelu)", path, act);
        return KN_OK;
    }
    if (kn_ckpt_meta_get(c, "kiln.format")) { cfg->activation = KN_GELU_TANH; return KN_OK; }
    if (!kn_gpt_activation_parse(hint ? hint : "gelu", &cfg->activation))
        return kn_fail(KN_ERR_ARG, "%s: activation '%s' (expected gelu_tanh or gelu)", path, hint);
    return KN_OK;
}

kn_status kn_gpt_ckpt_config(const kn_ckpt *c, const kn_gpt_ckpt_hints *hints, kn_gpt_config *out)
{
    if (!c || !out) return kn_fail(KN_ERR_ARG, "gpt_ckpt_config: checkpoint or output is NULL");
    kn_gpt_config cfg = {0};
    kn_status st;
    int n_head = hints ? hints->n_head : 0;
    if ((st = recorded_sizes(c, &cfg)) || (st = implied_sizes(c, n_head, &cfg)) ||
        (st = recorded_mup(c, &cfg)) || (st = recorded_activation(c, hints ? hints->activation : NULL, &cfg)))
        return st;
    if (kn_gpt_config_check(&cfg) != KN_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", kn_errmsg());
        return kn_fail(KN_ERR_FORMAT, "%s: bad model config: %s", kn_ckpt_path(c), why);
    }
    *out = cfg;
    return KN_OK;
}

/* ---------------------------------------------------------------- checking */

static bool ignorable(const char *name)
{
    size_t n = strlen(name);
    return strcmp(name, "lm_head.weight") == 0 || strncmp(name, "optim.", 6) == 0 ||
           (n > 10 && strcmp(name + n - 10, ".attn.bias") == 0) ||
           (n > 17 && strcmp(name + n - 17, ".attn.masked_bias") == 0);
}

static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = 0;
    for (int d = 0; d < ndim && used < n; d++)
        used += (size_t)snprintf(buf + used, n - used, d ? "x%lld" : "%lld", (long long)shape[d]);
    return buf;
}

static kn_status check_tensor(const kn_ckpt *c, const char *name, const kn_param_info *info,
                              bool moment)
{
    const char *path = kn_ckpt_path(c);
    const kn_ckpt_tensor *t = kn_ckpt_find(c, name);
    if (!t && moment)
        return kn_fail(KN_ERR_FORMAT, "%s: has no optimizer state ('%s' missing); save with the "
                       "optimizer or load without one", path, name);
    if (!t) return kn_fail(KN_ERR_FORMAT, "%s: tensor '%s' is missing", path, name);
    bool same = t->ndim == info->ndim;
    for (int d = 0; same && d < info->ndim; d++) same = t->shape[d] == info->shape[d];
    if (!same) {
        char got[96], want[96];
        return kn_fail(KN_ERR_FORMAT, "%s: tensor '%s' has shape %s, the model expects %s", path,
                       name, shape_str(t->ndim, t->shape, got, sizeof got),
                       shape_str(info->ndim, info->shape, want, sizeof want));
    }
    return KN_OK;
}

static kn_status check_names(const kn_ckpt *c, const kn_param_info *info, int nt,
                             bool with_optimizer)
{
    char name[MOMENT_NAME];
    kn_status st;
    for (int i = 0; i < nt; i++) {
        if ((st = check_tensor(c, info[i].name, &info[i], false))) return st;
        for (int k = 0; with_optimizer && k < 2; k++) {
            snprintf(name, sizeof name, "optim.%c.%s", k ? 'v' : 'm', info[i].name);
            if ((st = check_tensor(c, name, &info[i], true))) return st;
        }
    }
    for (int i = 0; i < kn_ckpt_num_tensors(c); i++) {
        const char *n = kn_ckpt_tensor_at(c, i)->name;
        bool known = ignorable(n);
        for (int j = 0; !known && j < nt; j++) known = strcmp(info[j].name, n) == 0;
        if (!known)
            return kn_fail(KN_ERR_FORMAT, "%s: unexpected tensor '%s' (not a parameter of this model)",
                           kn_ckpt_path(c), n);
    }
    return KN_OK;
}

static kn_status step_count(const kn_ckpt *c, int64_t *t)
{
    long long n;
    kn_status st = parse_int(c, T_KEY, kn_ckpt_meta_get(c, T_KEY), 0, INT64_MAX, &n);
    if (!st) *t = n;
    return st;
}

kn_status kn_gpt_ckpt_check(const kn_ckpt *c, const kn_gpt_config *cfg, bool with_optimizer)
{
    if (!c || !cfg) return kn_fail(KN_ERR_ARG, "gpt_ckpt_check: checkpoint or config is NULL");
    if (kn_gpt_config_check(cfg) != KN_OK) return KN_ERR_ARG;
    int nt = kn_gpt_config_num_tensors(cfg);
    kn_param_info *info = calloc((size_t)nt, sizeof *info);
    if (!info) return kn_fail(KN_ERR_NOMEM, "%s: out of memory checking tensors", kn_ckpt_path(c));
    kn_gpt_config_layout(cfg, info);
    kn_status st = check_names(c, info, nt, with_optimizer);
    free(info);
    int64_t t;
    if (!st && with_optimizer) st = step_count(c, &t);
    return st;
}

/* ---------------------------------------------------------------- loading */

/* What the shapes cannot show: the head count and the parametrisation change the function
 * the same weights compute, so a file that records them must agree with the model. */
static kn_status check_recorded_config(const kn_ckpt *c, const kn_gpt_config *mine)
{
    const char *path = kn_ckpt_path(c);
    const char *par = kn_ckpt_meta_get(c, "kiln.config.parametrization");
    const char *my_par = mine->mup ? "mup" : "sp";
    if (par && strcmp(par, my_par) != 0)
        return kn_fail(KN_ERR_ARG, "%s: the checkpoint's parametrization is %s, the model's is %s",
                       path, par, my_par);
    const char *act = kn_ckpt_meta_get(c, "kiln.config.activation");
    const char *my_act = kn_gpt_activation_name(mine->activation);
    if (act && strcmp(act, my_act) != 0)
        return kn_fail(KN_ERR_ARG, "%s: the checkpoint's activation is %s, the model's is %s",
                       path, act, my_act);
    const char *nh = kn_ckpt_meta_get(c, "kiln.config.n_head");
    long long n;
    if (nh) {
        kn_status st = parse_int(c, "kiln.config.n_head", nh, 1, 1 << 24, &n);
        if (st) return st;
        if (n != mine->n_head)
            return kn_fail(KN_ERR_ARG, "%s: the checkpoint's n_head is %lld, the model's is %d",
                           path, n, mine->n_head);
    }
    return KN_OK;
}

kn_status kn_gpt_load(const kn_ckpt *c, kn_gpt *g, kn_adamw *o)
{
    if (!c || !g) return kn_fail(KN_ERR_ARG, "gpt_load: checkpoint or model is NULL");
    kn_status st;
    const kn_gpt_config *cfg = kn_gpt_get_config(g);
    if ((st = check_owner(kn_ckpt_path(c), g, o)) || (st = check_recorded_config(c, cfg)) ||
        (st = kn_gpt_ckpt_check(c, cfg, o != NULL)))
        return st;
    int64_t t = 0;
    if (o && (st = step_count(c, &t))) return st;
    for (int i = 0; i < kn_gpt_num_tensors(g); i++) {
        const kn_param_info *info = kn_gpt_param_info(g, i);
        size_t bytes = info->numel * sizeof(float);
        memcpy(kn_gpt_params(g) + info->offset, kn_ckpt_find(c, info->name)->data, bytes);
        if (!o) continue;
        char name[MOMENT_NAME];
        snprintf(name, sizeof name, "optim.m.%s", info->name);
        memcpy(kn_adamw_m(o) + info->offset, kn_ckpt_find(c, name)->data, bytes);
        snprintf(name, sizeof name, "optim.v.%s", info->name);
        memcpy(kn_adamw_v(o) + info->offset, kn_ckpt_find(c, name)->data, bytes);
    }
    if (o) kn_adamw_set_t(o, t);
    return KN_OK;
}

kn_status kn_gpt_from_ckpt(kn_gpt **out, const kn_ckpt *c, const kn_gpt_ckpt_hints *hints)
{
    if (!out) return kn_fail(KN_ERR_ARG, "gpt_from_ckpt: output is NULL");
    *out = NULL;
    kn_gpt_config cfg;
    kn_status st;
    if ((st = kn_gpt_ckpt_config(c, hints, &cfg)) || (st = kn_gpt_ckpt_check(c, &cfg, false)))
        return st;
    kn_gpt *g;
    if ((st = kn_gpt_new(&g, &cfg))) {
        char why[256];
        snprintf(why, sizeof why, "%s", kn_errmsg());
        return kn_fail(st, "%s: %s", kn_ckpt_path(c), why);
    }
    if ((st = kn_gpt_load(c, g, NULL))) {
        kn_gpt_free(g);
        return st;
    }
    *out = g;
    return KN_OK;
}

/* ---------------------------------------------------------------- the tokenizer */

kn_status kn_gpt_ckpt_tokenizer(const kn_ckpt *c, kn_ckpt_tok_kind *kind, kn_tokenizer **tok)
{
    if (!c || !kind || !tok) return kn_fail(KN_ERR_ARG, "gpt_ckpt_tokenizer: NULL argument");
    *kind = KN_CKPT_TOK_NONE;
    *tok = NULL;
    const char *path = kn_ckpt_path(c);
    const char *k = kn_ckpt_meta_get(c, "kiln.tokenizer");
    if (!k) return KN_OK;
    if (strcmp(k, "bytes") == 0) { *kind = KN_CKPT_TOK_BYTES; return KN_OK; }
    if (strcmp(k, "bpe") != 0)
        return kn_fail(KN_ERR_FORMAT, "%s: metadata 'kiln.tokenizer' = '%s' (expected bytes or bpe)", path, k);
    const char *json = kn_ckpt_meta_get(c, "kiln.tokenizer.json");
    const char *want = kn_ckpt_meta_get(c, "kiln.tokenizer.sha256");
    if (!json || !want)
        return kn_fail(KN_ERR_FORMAT, "%s: records a bpe tokenizer but lacks '%s'", path,
                       json ? "kiln.tokenizer.sha256" : "kiln.tokenizer.json");
    uint8_t digest[KN_SHA256_BYTES];
    char got[KN_SHA256_HEX];
    kn_hash_sha256(json, strlen(json), digest);
    kn_hash_hex(digest, KN_SHA256_BYTES, got);
    if (strcmp(got, want) != 0)
        return kn_fail(KN_ERR_FORMAT, "%s: the embedded tokenizer's SHA-256 is %s, the file records %s "
                       "(the tokenizer text was changed)", path, got, want);
    char origin[512];
    snprintf(origin, sizeof origin, "%s (metadata kiln.tokenizer.json)", path);
    kn_status st = kn_tok_load_json_text(tok, json, strlen(json), origin);
    if (!st) *kind = KN_CKPT_TOK_BPE;
    return st;
}
