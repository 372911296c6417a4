/* l_ckpt.c — kiln.save / kiln.load / kiln.checkpoint_info: models (and optionally AdamW
 * moments) as safetensors files with nanoGPT names (core/ckpt.h), plus a string metadata
 * map that the Lua side owns (step, RNG state, schedule position, protocol stage). */
#include "binding.h"
#include "ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORMAT_TAG "kiln-1"

/* Keys under "kiln." are written by this file; user metadata may not use that prefix. */
static const char *const config_fields[] = {"vocab_size", "block_size", "n_layer", "n_head", "n_embd"};

typedef struct {
    kn_ckpt_tensor *tensors;
    kn_ckpt_meta *meta;
    char **owned;        /* strings to free */
    int n_tensors, n_meta, n_owned;
} save_plan;

static void plan_free(save_plan *p)
{
    for (int i = 0; i < p->n_owned; i++) free(p->owned[i]);
    free(p->owned);
    free(p->tensors);
    free(p->meta);
    memset(p, 0, sizeof *p);
}

static char *keep(save_plan *p, const char *s)
{
    char *c = strdup(s);
    if (c) p->owned[p->n_owned++] = c;
    return c;
}

static void add_tensor(save_plan *p, const char *name, const float *data, const kn_param_info *info)
{
    kn_ckpt_tensor *t = &p->tensors[p->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->data = data;
    t->ndim = info->ndim;
    for (int d = 0; d < info->ndim; d++) t->shape[d] = info->shape[d];
}

static int meta_cmp(const void *a, const void *b)
{
    return strcmp(((const kn_ckpt_meta *)a)->key, ((const kn_ckpt_meta *)b)->key);
}

/* Convert a Lua metadata value to its string form (numbers exactly, %.17g). */
static const char *meta_string(lua_State *L, int idx, const char *key, char *buf, size_t cap)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: return lua_tostring(L, idx);
    case LUA_TBOOLEAN: return lua_toboolean(L, idx) ? "true" : "false";
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) snprintf(buf, cap, "%lld", (long long)lua_tointeger(L, idx));
        else snprintf(buf, cap, "%.17g", lua_tonumber(L, idx));
        return buf;
    default:
        luaL_error(L, "kiln.save: meta.%s must be a string, number or boolean (got %s)", key, luaL_typename(L, idx));
        return NULL;
    }
}

/* kiln.save(path, {model = m, optimizer = opt?, meta = {key = string|number|boolean}}) */
static int l_save(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "model");
    if (lua_isnil(L, -1)) return luaL_error(L, "kiln.save: field 'model' is required");
    knL_Model *m = knL_check_model(L, lua_gettop(L));
    lua_getfield(L, 2, "optimizer");
    knL_AdamW *a = lua_isnil(L, -1) ? NULL : knL_check_adamw(L, lua_gettop(L));
    lua_getfield(L, 2, "meta");
    int meta_idx = lua_gettop(L);
    if (!lua_isnil(L, meta_idx)) luaL_checktype(L, meta_idx, LUA_TTABLE);

    /* Validate user metadata before allocating anything (luaL_error must not leak). */
    int n_user = 0;
    if (!lua_isnil(L, meta_idx)) {
        lua_pushnil(L);
        while (lua_next(L, meta_idx)) {
            if (lua_type(L, -2) != LUA_TSTRING) return luaL_error(L, "kiln.save: meta keys must be strings");
            const char *k = lua_tostring(L, -2);
            if (strncmp(k, "kiln.", 5) == 0) return luaL_error(L, "kiln.save: meta key '%s' uses the reserved prefix 'kiln.'", k);
            char buf[64];
            meta_string(L, -1, k, buf, sizeof buf);
            n_user++;
            lua_pop(L, 1);
        }
    }

    kn_gpt *g = m->g;
    const kn_gpt_config *c = kn_gpt_get_config(g);
    int nt = kn_gpt_num_tensors(g);
    save_plan p = {0};
    int max_tensors = nt + 1 + (a ? 2 * nt : 0);
    int max_meta = 14 + n_user;   /* format, version, 5 sizes, 5 μP fields, activation, adamw.t */
    p.tensors = calloc((size_t)max_tensors, sizeof *p.tensors);
    p.meta = calloc((size_t)max_meta, sizeof *p.meta);
    p.owned = calloc((size_t)(2 * nt + 2 * max_meta + 8), sizeof *p.owned);
    if (!p.tensors || !p.meta || !p.owned) { plan_free(&p); return luaL_error(L, "kiln.save: out of memory"); }

    float *params = kn_gpt_params(g);
    for (int i = 0; i < nt; i++) {
        const kn_param_info *info = kn_gpt_param_info(g, i);
        add_tensor(&p, info->name, params + info->offset, info);
    }
    /* nanoGPT's state_dict also carries the tied head under its own name. */
    add_tensor(&p, "lm_head.weight", params + kn_gpt_param_info(g, 0)->offset, kn_gpt_param_info(g, 0));
    if (a) {
        char name[160];
        for (int i = 0; i < nt; i++) {
            const kn_param_info *info = kn_gpt_param_info(g, i);
            snprintf(name, sizeof name, "optim.m.%s", info->name);
            add_tensor(&p, keep(&p, name), kn_adamw_m(a->o) + info->offset, info);
            snprintf(name, sizeof name, "optim.v.%s", info->name);
            add_tensor(&p, keep(&p, name), kn_adamw_v(a->o) + info->offset, info);
        }
    }

    char buf[64];
    p.meta[p.n_meta++] = (kn_ckpt_meta){"kiln.format", FORMAT_TAG};
    p.meta[p.n_meta++] = (kn_ckpt_meta){"kiln.version", kn_version()};
    const int values[] = {c->vocab_size, c->block_size, c->n_layer, c->n_head, c->n_embd};
    for (int i = 0; i < 5; i++) {
        char key[64];
        snprintf(key, sizeof key, "kiln.config.%s", config_fields[i]);
        snprintf(buf, sizeof buf, "%d", values[i]);
        p.meta[p.n_meta++] = (kn_ckpt_meta){keep(&p, key), keep(&p, buf)};
    }
    /* The parametrisation, always (a reader must not guess it); the μP values exactly. */
    p.meta[p.n_meta++] = (kn_ckpt_meta){"kiln.config.parametrization", c->mup ? "mup" : "sp"};
    p.meta[p.n_meta++] = (kn_ckpt_meta){"kiln.config.activation", kn_gpt_activation_name(c->activation)};
    if (c->mup) {
        const struct { const char *key; double v; } mf[] = {
            {"kiln.config.base_width", c->mup_base_width}, {"kiln.config.output_mult", c->mup_output_mult},
            {"kiln.config.attn_mult", c->mup_attn_mult}};
        for (int i = 0; i < 3; i++) {
            snprintf(buf, sizeof buf, "%.9g", mf[i].v);
            p.meta[p.n_meta++] = (kn_ckpt_meta){mf[i].key, keep(&p, buf)};
        }
        p.meta[p.n_meta++] = (kn_ckpt_meta){"kiln.config.zero_query", c->mup_zero_query ? "true" : "false"};
    }
    if (a) {
        snprintf(buf, sizeof buf, "%lld", (long long)kn_adamw_t(a->o));
        p.meta[p.n_meta++] = (kn_ckpt_meta){"kiln.adamw.t", keep(&p, buf)};
    }
    if (!lua_isnil(L, meta_idx)) {
        int first_user = p.n_meta;
        lua_pushnil(L);
        while (lua_next(L, meta_idx)) {
            const char *k = lua_tostring(L, -2);
            const char *v = meta_string(L, -1, k, buf, sizeof buf);
            p.meta[p.n_meta++] = (kn_ckpt_meta){keep(&p, k), keep(&p, v)};
            lua_pop(L, 1);
        }
        /* Lua's table order is arbitrary: sort, so the same state gives the same bytes. */
        qsort(p.meta + first_user, (size_t)(p.n_meta - first_user), sizeof *p.meta, meta_cmp);
    }
    kn_status st = kn_ckpt_write(path, p.tensors, p.n_tensors, p.meta, p.n_meta);
    plan_free(&p);
    if (st != KN_OK) return knL_error(L);
    return 0;
}

/* ---- loading ------------------------------------------------------------------------ */

typedef struct { kn_ckpt *c; } knL_Ckpt;   /* a guard so an error while loading closes the file */

static int ckpt_guard_gc(lua_State *L)
{
    knL_Ckpt *u = lua_touserdata(L, 1);
    if (u->c) kn_ckpt_close(u->c);
    u->c = NULL;
    return 0;
}

/* Free the file's memory now rather than at the next collection. */
static void close_guard(lua_State *L, int idx)
{
    knL_Ckpt *u = lua_touserdata(L, idx);
    if (u->c) kn_ckpt_close(u->c);
    u->c = NULL;
}

static kn_ckpt *open_guarded(lua_State *L, const char *path)
{
    knL_Ckpt *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->c = NULL;
    if (luaL_newmetatable(L, "kiln.CkptGuard")) {
        lua_pushcfunction(L, ckpt_guard_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    if (kn_ckpt_open(&u->c, path) != KN_OK) knL_error(L);
    return u->c;
}

static void push_meta(lua_State *L, const kn_ckpt *c)
{
    lua_createtable(L, 0, kn_ckpt_num_meta(c));
    for (int i = 0; i < kn_ckpt_num_meta(c); i++) {
        const kn_ckpt_meta *m = kn_ckpt_meta_at(c, i);
        lua_pushstring(L, m->value);
        lua_setfield(L, -2, m->key);
    }
}

/* Config from kiln metadata, or inferred from a foreign (nanoGPT) file's shapes, with
 * n_head from opts when the file does not say. */
static kn_gpt_config config_from(lua_State *L, const kn_ckpt *c, int opts)
{
    const char *path = kn_ckpt_path(c);
    kn_gpt_config cfg = {0};
    int *fields[] = {&cfg.vocab_size, &cfg.block_size, &cfg.n_layer, &cfg.n_head, &cfg.n_embd};
    for (int i = 0; i < 5; i++) {
        char key[64];
        snprintf(key, sizeof key, "kiln.config.%s", config_fields[i]);
        const char *v = kn_ckpt_meta_get(c, key);
        if (v) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n <= 0 || n > 1 << 24)
                luaL_error(L, "%s: metadata '%s' = '%s' is not a positive integer", path, key, v);
            *fields[i] = (int)n;
        }
    }
    if (!cfg.vocab_size || !cfg.n_embd) {
        const kn_ckpt_tensor *wte = kn_ckpt_find(c, "transformer.wte.weight");
        if (!wte || wte->ndim != 2) luaL_error(L, "%s: no kiln config and no 2-D 'transformer.wte.weight' to infer it from", path);
        cfg.vocab_size = (int)wte->shape[0];
        cfg.n_embd = (int)wte->shape[1];
    }
    if (!cfg.block_size) {
        const kn_ckpt_tensor *wpe = kn_ckpt_find(c, "transformer.wpe.weight");
        if (!wpe || wpe->ndim != 2) luaL_error(L, "%s: no kiln config and no 2-D 'transformer.wpe.weight'", path);
        cfg.block_size = (int)wpe->shape[0];
    }
    if (!cfg.n_layer) {
        char name[96];
        while (snprintf(name, sizeof name, "transformer.h.%d.ln_1.weight", cfg.n_layer), kn_ckpt_find(c, name))
            cfg.n_layer++;
    }
    if (!cfg.n_head) {
        cfg.n_head = (int)knL_opt_int_field(L, opts, "n_head", 0);
        if (!cfg.n_head) luaL_error(L, "%s: the file does not record n_head; pass kiln.load(path, {n_head = ...})", path);
    }
    /* μP; files without the key (older kiln, nanoGPT) are the standard parametrisation */
    const char *par = kn_ckpt_meta_get(c, "kiln.config.parametrization");
    if (par && strcmp(par, "mup") == 0) {
        cfg.mup = 1;
        float *mf[] = {&cfg.mup_base_width, &cfg.mup_output_mult, &cfg.mup_attn_mult};
        const char *keys[] = {"kiln.config.base_width", "kiln.config.output_mult", "kiln.config.attn_mult"};
        for (int i = 0; i < 3; i++) {
            const char *v = kn_ckpt_meta_get(c, keys[i]);
            char *end = NULL;
            double x = v ? strtod(v, &end) : 0.0;
            if (!v || *end || !(x > 0))
                luaL_error(L, "%s: metadata '%s' = '%s' is not a positive number", path, keys[i], v ? v : "(missing)");
            *mf[i] = (float)x;
        }
        const char *zq = kn_ckpt_meta_get(c, "kiln.config.zero_query");
        cfg.mup_zero_query = zq && strcmp(zq, "true") == 0;
    } else if (par && strcmp(par, "sp") != 0) {
        luaL_error(L, "%s: metadata 'kiln.config.parametrization' = '%s' (expected sp or mup)", path, par);
    }
    /* The MLP's GELU. kiln files without the key predate the option (tanh, the zero value);
     * a foreign file is nanoGPT's, whose nn.GELU() is the exact form, unless opts say. */
    const char *act = kn_ckpt_meta_get(c, "kiln.config.activation");
    if (act && !kn_gpt_activation_parse(act, &cfg.activation))
        luaL_error(L, "%s: metadata 'kiln.config.activation' = '%s' (expected gelu_tanh or gelu)", path, act);
    if (!act && !kn_ckpt_meta_get(c, "kiln.format")) {
        act = "gelu";
        if (lua_istable(L, opts) && lua_getfield(L, opts, "activation") != LUA_TNIL) {
            act = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
            if (strcmp(act, "gelu") != 0 && strcmp(act, "gelu_tanh") != 0)
                luaL_error(L, "kiln.load: 'activation' must be \"gelu_tanh\" or \"gelu\"");
        }
        kn_gpt_activation_parse(act, &cfg.activation);
        if (lua_istable(L, opts)) lua_pop(L, 1);
    }
    return cfg;
}

static bool ignorable(const char *name)
{
    size_t n = strlen(name);
    return strcmp(name, "lm_head.weight") == 0 || strncmp(name, "optim.", 6) == 0 ||
           (n > 10 && strcmp(name + n - 10, ".attn.bias") == 0) ||
           (n > 17 && strcmp(name + n - 17, ".attn.masked_bias") == 0);
}

/* Copy every parameter (and, with an optimizer, its moments) from c into g; check first,
 * copy after, so a bad file leaves the model untouched. */
static void load_into(lua_State *L, const kn_ckpt *c, kn_gpt *g, kn_adamw *o)
{
    const char *path = kn_ckpt_path(c);
    int nt = kn_gpt_num_tensors(g);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < nt; i++) {
            const kn_param_info *info = kn_gpt_param_info(g, i);
            for (int which = 0; which < (o ? 3 : 1); which++) {
                char name[160];
                snprintf(name, sizeof name, "%s%s", which == 0 ? "" : which == 1 ? "optim.m." : "optim.v.", info->name);
                const kn_ckpt_tensor *t = kn_ckpt_find(c, name);
                if (pass == 0) {
                    if (!t) {
                        if (which) luaL_error(L, "%s: has no optimizer state ('%s' missing); save with {optimizer = opt} or load without one", path, name);
                        luaL_error(L, "%s: tensor '%s' is missing", path, name);
                    }
                    bool same = t->ndim == info->ndim;
                    for (int d = 0; same && d < info->ndim; d++) same = t->shape[d] == info->shape[d];
                    if (!same) {
                        char got[96] = "", want[96] = "", *q = got, *w = want;
                        for (int d = 0; d < t->ndim && q < got + 80; d++) q += sprintf(q, d ? "x%lld" : "%lld", (long long)t->shape[d]);
                        for (int d = 0; d < info->ndim && w < want + 80; d++) w += sprintf(w, d ? "x%lld" : "%lld", (long long)info->shape[d]);
                        luaL_error(L, "%s: tensor '%s' has shape %s, the model expects %s", path, name, got, want);
                    }
                } else {
                    float *dst = which == 0 ? kn_gpt_params(g) : which == 1 ? kn_adamw_m(o) : kn_adamw_v(o);
                    memcpy(dst + info->offset, t->data, info->numel * sizeof(float));
                }
            }
        }
        if (pass == 0) {
            for (int i = 0; i < kn_ckpt_num_tensors(c); i++) {
                const char *name = kn_ckpt_tensor_at(c, i)->name;
                if (!ignorable(name) && kn_gpt_find(g, name) < 0)
                    luaL_error(L, "%s: unexpected tensor '%s' (not a parameter of this model)", path, name);
            }
        }
    }
    if (o) {
        const char *t = kn_ckpt_meta_get(c, "kiln.adamw.t");
        kn_adamw_set_t(o, t ? strtoll(t, NULL, 10) : 0);
    }
}

/* kiln.load(path [, {model = m, optimizer = opt, n_head = n}]) -> model, meta
 * Without `model` a new model is built from the file's config; with it, the file must
 * match that model's shapes exactly. With `optimizer`, the AdamW moments are loaded too. */
static int l_load(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int opts = 2;
    if (!lua_isnoneornil(L, opts)) luaL_checktype(L, opts, LUA_TTABLE);
    lua_settop(L, 2);
    kn_ckpt *c = open_guarded(L, path);                     /* index 3 */
    knL_Model *m = NULL;
    knL_AdamW *a = NULL;
    if (!lua_isnil(L, opts)) {
        lua_getfield(L, opts, "model");
        if (!lua_isnil(L, -1)) m = knL_check_model(L, lua_gettop(L));
        lua_getfield(L, opts, "optimizer");
        if (!lua_isnil(L, -1)) a = knL_check_adamw(L, lua_gettop(L));
        lua_pop(L, 1);                                      /* model (or nil) stays at 4 */
    } else {
        lua_pushnil(L);
    }
    if (a && !m) return luaL_error(L, "kiln.load: 'optimizer' needs 'model' too (the one it optimizes)");
    if (!m) {
        kn_gpt_config cfg = config_from(L, c, opts);
        if (kn_gpt_config_check(&cfg) != KN_OK)
            return luaL_error(L, "%s: bad model config: %s", path, kn_errmsg());
        kn_gpt *g;
        KNL_TRY(L, kn_gpt_new(&g, &cfg));
        lua_pop(L, 1);
        m = knL_push_model(L, g);                           /* index 4 */
    } else {
        /* the same weights mean another function under the other parametrisation */
        const char *par = kn_ckpt_meta_get(c, "kiln.config.parametrization");
        const char *mine = kn_gpt_get_config(m->g)->mup ? "mup" : "sp";
        if (par && strcmp(par, mine) != 0)
            return luaL_error(L, "%s: the checkpoint's parametrization is %s, the model's is %s", path, par, mine);
        const char *act = kn_ckpt_meta_get(c, "kiln.config.activation");
        const char *my_act = kn_gpt_activation_name(kn_gpt_get_config(m->g)->activation);
        if (act && strcmp(act, my_act) != 0)
            return luaL_error(L, "%s: the checkpoint's activation is %s, the model's is %s", path, act, my_act);
    }
    load_into(L, c, m->g, a ? a->o : NULL);
    lua_pushvalue(L, 4);
    push_meta(L, c);
    close_guard(L, 3);
    return 2;
}

/* kiln.checkpoint_info(path) -> {tensors = {{name=, shape={}}...}, meta = {...}} */
static int l_checkpoint_info(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    kn_ckpt *c = open_guarded(L, path);
    lua_createtable(L, 0, 2);
    lua_createtable(L, kn_ckpt_num_tensors(c), 0);
    for (int i = 0; i < kn_ckpt_num_tensors(c); i++) {
        const kn_ckpt_tensor *t = kn_ckpt_tensor_at(c, i);
        lua_createtable(L, 0, 2);
        lua_pushstring(L, t->name);
        lua_setfield(L, -2, "name");
        lua_createtable(L, t->ndim, 0);
        for (int d = 0; d < t->ndim; d++) { lua_pushinteger(L, t->shape[d]); lua_rawseti(L, -2, d + 1); }
        lua_setfield(L, -2, "shape");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "tensors");
    push_meta(L, c);
    lua_setfield(L, -2, "meta");
    close_guard(L, 2);
    return 1;
}

void knL_open_ckpt(lua_State *L)
{
    lua_pushcfunction(L, l_save);
    lua_setfield(L, -2, "save");
    lua_pushcfunction(L, l_load);
    lua_setfield(L, -2, "load");
    lua_pushcfunction(L, l_checkpoint_info);
    lua_setfield(L, -2, "checkpoint_info");
}
