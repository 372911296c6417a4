/* l_adamw.c — kiln.AdamW: the optimizer of core/adamw.h. Hyperparameters come with every
 * step (the schedule is Lua's); the defaults for fields a step leaves out are kept by the
 * core optimizer. The core optimizer holds its model, so closing the model's handle while
 * the optimizer lives frees nothing under it. */
#include "binding.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static void release_adamw(void *obj) { kn_adamw_free(obj); }

static void describe_adamw(lua_State *L, void *obj)
{
    kn_adamw_hparams h = kn_adamw_get_hparams(obj);
    char buf[256];
    snprintf(buf, sizeof buf, "kiln.AdamW(lr=%g, betas=(%g, %g), eps=%g, weight_decay=%g, clip=%g; step %lld)",
             h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.clip, (long long)kn_adamw_t(obj));
    lua_pushstring(L, buf);
}

static const knL_type adamw_type = {"kiln.AdamW", release_adamw, describe_adamw};

kn_adamw *knL_check_adamw(lua_State *L, int arg)
{
    return knL_handle_check(L, arg, &adamw_type);
}

static const char *const hparam_keys[] = {
    "lr", "beta1", "beta2", "eps", "weight_decay", "clip", NULL
};

static void check_hparam_keys(lua_State *L, int idx, const char *what)
{
    if (lua_isnoneornil(L, idx)) return;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        bool known = false;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (const char *const *k = hparam_keys; *k; k++)
                if (strcmp(*k, lua_tostring(L, -2)) == 0) known = true;
        if (!known)
            luaL_error(L, "%s: unknown field '%s' (known: lr, beta1, beta2, eps, weight_decay, clip)",
                       what, lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?");
        lua_pop(L, 1);
    }
}

static kn_adamw_hparams read_hparams(lua_State *L, int idx, kn_adamw_hparams h, const char *what)
{
    check_hparam_keys(L, idx, what);
    h.lr = (float)knL_opt_number_field(L, idx, "lr", h.lr);
    h.beta1 = (float)knL_opt_number_field(L, idx, "beta1", h.beta1);
    h.beta2 = (float)knL_opt_number_field(L, idx, "beta2", h.beta2);
    h.eps = (float)knL_opt_number_field(L, idx, "eps", h.eps);
    h.weight_decay = (float)knL_opt_number_field(L, idx, "weight_decay", h.weight_decay);
    h.clip = (float)knL_opt_number_field(L, idx, "clip", h.clip);
    if (!(h.lr >= 0) || !isfinite(h.lr)) luaL_error(L, "%s: 'lr' must be a finite number >= 0 (got %f)", what, h.lr);
    if (!(h.beta1 >= 0 && h.beta1 < 1)) luaL_error(L, "%s: 'beta1' must be in [0, 1) (got %f)", what, h.beta1);
    if (!(h.beta2 >= 0 && h.beta2 < 1)) luaL_error(L, "%s: 'beta2' must be in [0, 1) (got %f)", what, h.beta2);
    if (!(h.eps >= 0)) luaL_error(L, "%s: 'eps' must be >= 0 (got %f)", what, h.eps);
    if (!(h.weight_decay >= 0)) luaL_error(L, "%s: 'weight_decay' must be >= 0 (got %f)", what, h.weight_decay);
    return h;
}

/* kiln.adamw(model [, {lr=3e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, clip=1}])
 * The optimizer holds its model (in the core); user value 1 is the model's handle, so that
 * opt:model() is the very object the caller passed. */
static int l_adamw(lua_State *L)
{
    kn_gpt *g = knL_check_model(L, 1);
    kn_adamw_hparams h = read_hparams(L, 2, kn_adamw_defaults(), "kiln.adamw");
    knL_handle *u = knL_handle_new(L, &adamw_type, 1);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    kn_adamw *o;
    KNL_TRY(L, kn_adamw_new(&o, g));
    kn_adamw_set_hparams(o, &h);
    u->obj = o;
    return 1;
}

/* opt:step([{lr=...}]) -> global gradient norm before clipping. */
static int a_step(lua_State *L)
{
    kn_adamw *o = knL_check_adamw(L, 1);
    kn_adamw_hparams h = read_hparams(L, 2, kn_adamw_get_hparams(o), "step");
    float norm = 0;
    KNL_TRY(L, kn_adamw_step(o, &h, &norm));
    lua_pushnumber(L, norm);
    return 1;
}

/* Index of the parameter named by argument arg, or an argument error. */
static int check_param(lua_State *L, kn_gpt *g, int arg)
{
    const char *name = luaL_checkstring(L, arg);
    int i = kn_gpt_find(g, name);
    if (i < 0) luaL_argerror(L, arg, lua_pushfstring(L, "no parameter named '%s'", name));
    return i;
}

/* An optional group field: absent (keep), or a finite number >= 0 (NaN, Inf and negative
 * scales would poison or reverse every later step of the matched tensors). */
static float group_scale(lua_State *L, int idx, const char *k, float keep)
{
    lua_getfield(L, idx, k);
    bool absent = lua_isnil(L, -1);
    lua_pop(L, 1);
    if (absent) return keep;
    lua_Number v = knL_opt_number_field(L, idx, k, 0);
    if (!(v >= 0 && v <= FLT_MAX))
        luaL_error(L, "set_group: field '%s' must be a finite number >= 0 (got %f)", k, v);
    return (float)v;
}

/* opt:set_group(pattern, {lr_scale=, wd_scale=, frozen=}) -> how many tensors matched.
 * pattern is a Lua pattern matched against the parameter names (string.find). Every field
 * is checked before any group changes. */
static int a_set_group(lua_State *L)
{
    kn_adamw *o = knL_check_adamw(L, 1);
    luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    kn_gpt *g = kn_adamw_model(o);
    const float unset = -1.0f;
    float lr_scale = group_scale(L, 3, "lr_scale", unset);
    float wd_scale = group_scale(L, 3, "wd_scale", unset);
    int frozen = knL_opt_bool_field(L, 3, "frozen", -1);
    int matched = 0;
    lua_getglobal(L, "string");
    lua_getfield(L, -1, "find");
    int find = lua_gettop(L);
    for (int i = 0; i < kn_gpt_num_tensors(g); i++) {
        lua_pushvalue(L, find);
        lua_pushstring(L, kn_gpt_param_info(g, i)->name);
        lua_pushvalue(L, 2);
        lua_call(L, 2, 1);
        bool hit = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (!hit) continue;
        kn_adamw_group *grp = kn_adamw_group_of(o, i);
        if (lr_scale != unset) grp->lr_scale = lr_scale;
        if (wd_scale != unset) grp->wd_scale = wd_scale;
        if (frozen != -1) grp->frozen = frozen;
        matched++;
    }
    if (matched == 0)
        return luaL_error(L, "set_group: pattern '%s' matches no parameter (see model:params())", lua_tostring(L, 2));
    lua_pushinteger(L, matched);
    return 1;
}

/* opt:group(name) -> {lr_scale=, wd_scale=, frozen=} */
static int a_group(lua_State *L)
{
    kn_adamw *o = knL_check_adamw(L, 1);
    kn_adamw_group *grp = kn_adamw_group_of(o, check_param(L, kn_adamw_model(o), 2));
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, grp->lr_scale); lua_setfield(L, -2, "lr_scale");
    lua_pushnumber(L, grp->wd_scale); lua_setfield(L, -2, "wd_scale");
    lua_pushboolean(L, grp->frozen); lua_setfield(L, -2, "frozen");
    return 1;
}

static int a_reset(lua_State *L)
{
    kn_adamw_reset(knL_check_adamw(L, 1));
    return 0;
}

static void *retain_adamw(void *o) { return kn_adamw_retain(o); }

/* opt:moments(name) -> views of m and v for one parameter; they hold the optimizer. */
static int a_moments(lua_State *L)
{
    kn_adamw *o = knL_check_adamw(L, 1);
    kn_gpt *g = kn_adamw_model(o);
    const kn_param_info *p = kn_gpt_param_info(g, check_param(L, g, 2));
    size_t n = kn_gpt_num_params(g);
    knL_push_borrowed(L, kn_adamw_m(o), n, o, retain_adamw, release_adamw, p->offset, p->ndim, p->shape);
    knL_push_borrowed(L, kn_adamw_v(o), n, o, retain_adamw, release_adamw, p->offset, p->ndim, p->shape);
    return 2;
}

/* opt:hparams([h]) -> the defaults used for fields a step does not give (set from h). */
static int a_hparams(lua_State *L)
{
    kn_adamw *o = knL_check_adamw(L, 1);
    kn_adamw_hparams h = kn_adamw_get_hparams(o);
    if (!lua_isnoneornil(L, 2)) {
        h = read_hparams(L, 2, h, "hparams");
        kn_adamw_set_hparams(o, &h);
    }
    lua_createtable(L, 0, 6);
    lua_pushnumber(L, h.lr); lua_setfield(L, -2, "lr");
    lua_pushnumber(L, h.beta1); lua_setfield(L, -2, "beta1");
    lua_pushnumber(L, h.beta2); lua_setfield(L, -2, "beta2");
    lua_pushnumber(L, h.eps); lua_setfield(L, -2, "eps");
    lua_pushnumber(L, h.weight_decay); lua_setfield(L, -2, "weight_decay");
    lua_pushnumber(L, h.clip); lua_setfield(L, -2, "clip");
    return 1;
}

/* Weight averaging (core/adamw.h): the five methods below are the whole Lua surface. */
static const char *const average_kinds[] = { "none", "ema", "mean", NULL };

/* opt:set_average{kind = "ema" | "mean" | "none", decay = 0.999, every = 1, start = 1,
 * warmup = false}: select averaging; the count restarts at 0. */
static int a_set_average(lua_State *L)
{
    kn_adamw *o = knL_check_adamw(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const keys[] = { "kind", "decay", "every", "start", "warmup", NULL };
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        bool known = false;
        for (const char *const *k = keys; *k && lua_type(L, -2) == LUA_TSTRING; k++)
            if (strcmp(*k, lua_tostring(L, -2)) == 0) known = true;
        if (!known)
            return luaL_error(L, "set_average: unknown field '%s' (known: kind, decay, every, start, warmup)",
                              lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?");
        lua_pop(L, 1);
    }
    lua_getfield(L, 2, "kind");
    const char *ks = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    int kind = -1;
    for (int k = 0; average_kinds[k]; k++)
        if (strcmp(ks, average_kinds[k]) == 0) kind = k;
    if (kind < 0)
        return luaL_error(L, "set_average: 'kind' must be \"ema\", \"mean\" or \"none\" (got %s)",
                          luaL_tolstring(L, -1, NULL));
    lua_pop(L, 1);
    kn_average_cfg c = { .kind = (kn_average_kind)kind,
                         .decay = knL_opt_number_field(L, 2, "decay", 0.999),
                         .every = knL_opt_int_field(L, 2, "every", 1),
                         .start = knL_opt_int_field(L, 2, "start", 1),
                         .warmup = knL_opt_bool_field(L, 2, "warmup", 0) };
    KNL_TRY(L, kn_adamw_set_average(o, &c));
    return 0;
}

/* opt:average() -> {kind, decay, every, start, warmup, count, swapped} */
static int a_average(lua_State *L)
{
    kn_adamw *o = knL_check_adamw(L, 1);
    kn_average_cfg c = kn_adamw_average_cfg(o);
    lua_createtable(L, 0, 7);
    lua_pushstring(L, average_kinds[c.kind]); lua_setfield(L, -2, "kind");
    lua_pushnumber(L, c.decay); lua_setfield(L, -2, "decay");
    lua_pushinteger(L, c.every); lua_setfield(L, -2, "every");
    lua_pushinteger(L, c.start); lua_setfield(L, -2, "start");
    lua_pushboolean(L, c.warmup); lua_setfield(L, -2, "warmup");
    lua_pushinteger(L, kn_adamw_average_count(o)); lua_setfield(L, -2, "count");
    lua_pushboolean(L, kn_adamw_average_swapped(o)); lua_setfield(L, -2, "swapped");
    return 1;
}

/* opt:average_of(name) -> a view of one parameter's average (read and write, e.g. to save
 * or restore it); an error before set_average. */
static int a_average_of(lua_State *L)
{
    kn_adamw *o = knL_check_adamw(L, 1);
    kn_gpt *g = kn_adamw_model(o);
    int i = check_param(L, g, 2);
    float *avg = kn_adamw_average(o);
    if (!avg) return luaL_error(L, "average_of: no averaging selected (call opt:set_average first)");
    const kn_param_info *p = kn_gpt_param_info(g, i);
    knL_push_borrowed(L, avg, kn_gpt_num_params(g), o, retain_adamw, release_adamw, p->offset, p->ndim, p->shape);
    return 1;
}

/* opt:set_average_count(n): the count that goes with an average written back. */
static int a_set_average_count(lua_State *L)
{
    kn_adamw *o = knL_check_adamw(L, 1);
    KNL_TRY(L, kn_adamw_set_average_count(o, luaL_checkinteger(L, 2)));
    return 0;
}

/* opt:swap_average(): exchange the model's weights and the average; call again to restore. */
static int a_swap_average(lua_State *L)
{
    KNL_TRY(L, kn_adamw_swap_average(knL_check_adamw(L, 1)));
    return 0;
}

/* opt:model() -> the model handle given to kiln.adamw; if that handle was closed, a new
 * handle on the same model (which the optimizer kept alive), remembered for next time. */
static int a_model(lua_State *L)
{
    kn_adamw *o = knL_check_adamw(L, 1);
    lua_getiuservalue(L, 1, 1);
    if (knL_handle_test(L, -1, &knL_model_type) == kn_adamw_model(o)) return 1;
    lua_pop(L, 1);
    knL_handle *h = knL_push_model_handle(L);
    knL_model_opened(L, h, kn_gpt_retain(kn_adamw_model(o)));
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, 1);
    return 1;
}

static const luaL_Reg adamw_methods[] = {
    {"step", a_step}, {"set_group", a_set_group}, {"group", a_group}, {"reset", a_reset},
    {"moments", a_moments}, {"hparams", a_hparams}, {"model", a_model},
    {"set_average", a_set_average}, {"average", a_average}, {"average_of", a_average_of},
    {"set_average_count", a_set_average_count}, {"swap_average", a_swap_average},
    {NULL, NULL}
};

/* opt.t is the number of steps taken (read-only); methods come from __methods. */
static int a_index(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    if (k && strcmp(k, "t") == 0) {
        lua_pushinteger(L, kn_adamw_t(knL_check_adamw(L, 1)));
        return 1;
    }
    luaL_getmetafield(L, 1, "__methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static const luaL_Reg adamw_meta[] = {
    {"__index", a_index},
    {NULL, NULL}
};

void knL_open_adamw(lua_State *L)
{
    knL_handle_class(L, &adamw_type, adamw_methods, adamw_meta);
    lua_pushcfunction(L, l_adamw);
    lua_setfield(L, -2, "adamw");
}
