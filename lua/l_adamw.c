/* l_adamw.c — kiln.AdamW: the optimizer of core/adamw.h. Hyperparameters come with every
 * step (the schedule is Lua's); defaults are set at construction. User value 1 keeps the
 * model alive. */
#include "binding.h"

#include <math.h>
#include <string.h>

#define ADAMW_MT "kiln.AdamW"

knL_AdamW *knL_check_adamw(lua_State *L, int arg)
{
    knL_AdamW *a = luaL_checkudata(L, arg, ADAMW_MT);
    if (!a->o) luaL_argerror(L, arg, "optimizer was closed");
    /* The model must still be open: the optimizer points into its buffers. */
    lua_getiuservalue(L, arg, 1);
    knL_Model *m = lua_touserdata(L, -1);
    if (!m || !m->g) luaL_argerror(L, arg, "the optimizer's model was closed");
    lua_pop(L, 1);
    return a;
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

/* kiln.adamw(model [, {lr=3e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, clip=1}]) */
static int l_adamw(lua_State *L)
{
    knL_Model *m = knL_check_model(L, 1);
    kn_adamw_hparams h = read_hparams(L, 2, kn_adamw_defaults(), "kiln.adamw");
    knL_AdamW *a = lua_newuserdatauv(L, sizeof *a, 1);
    memset(a, 0, sizeof *a);
    luaL_setmetatable(L, ADAMW_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    a->h = h;
    KNL_TRY(L, kn_adamw_new(&a->o, m->g));
    return 1;
}

/* opt:step([{lr=...}]) -> global gradient norm before clipping. */
static int a_step(lua_State *L)
{
    knL_AdamW *a = knL_check_adamw(L, 1);
    kn_adamw_hparams h = read_hparams(L, 2, a->h, "step");
    float norm = 0;
    KNL_TRY(L, kn_adamw_step(a->o, &h, &norm));
    lua_pushnumber(L, norm);
    return 1;
}

static kn_gpt *model_of(lua_State *L, int arg)
{
    lua_getiuservalue(L, arg, 1);
    knL_Model *m = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return m->g;
}

/* Index of the parameter named by argument arg, or an argument error. */
static int check_param(lua_State *L, kn_gpt *g, int arg)
{
    const char *name = luaL_checkstring(L, arg);
    int i = kn_gpt_find(g, name);
    if (i < 0) luaL_argerror(L, arg, lua_pushfstring(L, "no parameter named '%s'", name));
    return i;
}

/* opt:set_group(pattern, {lr_scale=, wd_scale=, frozen=}) -> how many tensors matched.
 * pattern is a Lua pattern matched against the parameter names (string.find). */
static int a_set_group(lua_State *L)
{
    knL_AdamW *a = knL_check_adamw(L, 1);
    luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    kn_gpt *g = model_of(L, 1);
    int matched = 0;
    lua_getglobal(L, "string");
    lua_getfield(L, -1, "find");
    int find = lua_gettop(L);
    for (int i = 0; i < kn_gpt_num_tensors(g); i++) {
        const kn_param_info *p = kn_gpt_param_info(g, i);
        lua_pushvalue(L, find);
        lua_pushstring(L, p->name);
        lua_pushvalue(L, 2);
        lua_call(L, 2, 1);
        bool hit = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (!hit) continue;
        kn_adamw_group *grp = kn_adamw_group_of(a->o, i);
        grp->lr_scale = (float)knL_opt_number_field(L, 3, "lr_scale", grp->lr_scale);
        grp->wd_scale = (float)knL_opt_number_field(L, 3, "wd_scale", grp->wd_scale);
        grp->frozen = knL_opt_bool_field(L, 3, "frozen", grp->frozen);
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
    knL_AdamW *a = knL_check_adamw(L, 1);
    kn_gpt *g = model_of(L, 1);
    int i = check_param(L, g, 2);
    kn_adamw_group *grp = kn_adamw_group_of(a->o, i);
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, grp->lr_scale); lua_setfield(L, -2, "lr_scale");
    lua_pushnumber(L, grp->wd_scale); lua_setfield(L, -2, "wd_scale");
    lua_pushboolean(L, grp->frozen); lua_setfield(L, -2, "frozen");
    return 1;
}

static int a_reset(lua_State *L)
{
    kn_adamw_reset(knL_check_adamw(L, 1)->o);
    return 0;
}

/* opt:moments(name) -> views of m and v for one parameter. */
static int a_moments(lua_State *L)
{
    knL_AdamW *a = knL_check_adamw(L, 1);
    kn_gpt *g = model_of(L, 1);
    int i = check_param(L, g, 2);
    const kn_param_info *p = kn_gpt_param_info(g, i);
    knL_push_view(L, kn_adamw_m(a->o) + p->offset, p->ndim, p->shape, 1);
    knL_push_view(L, kn_adamw_v(a->o) + p->offset, p->ndim, p->shape, 1);
    return 2;
}

/* opt:hparams() -> the defaults used for fields a step does not give. */
static int a_hparams(lua_State *L)
{
    knL_AdamW *a = knL_check_adamw(L, 1);
    if (!lua_isnoneornil(L, 2)) a->h = read_hparams(L, 2, a->h, "hparams");
    lua_createtable(L, 0, 6);
    lua_pushnumber(L, a->h.lr); lua_setfield(L, -2, "lr");
    lua_pushnumber(L, a->h.beta1); lua_setfield(L, -2, "beta1");
    lua_pushnumber(L, a->h.beta2); lua_setfield(L, -2, "beta2");
    lua_pushnumber(L, a->h.eps); lua_setfield(L, -2, "eps");
    lua_pushnumber(L, a->h.weight_decay); lua_setfield(L, -2, "weight_decay");
    lua_pushnumber(L, a->h.clip); lua_setfield(L, -2, "clip");
    return 1;
}

/* Weight averaging (core/adamw.h): the five methods below are the whole Lua surface. */
static const char *const average_kinds[] = { "none", "ema", "mean", NULL };

/* opt:set_average{kind = "ema" | "mean" | "none", decay = 0.999, every = 1, start = 1,
 * warmup = false}: select averaging; the count restarts at 0. */
static int a_set_average(lua_State *L)
{
    knL_AdamW *a = knL_check_adamw(L, 1);
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
    KNL_TRY(L, kn_adamw_set_average(a->o, &c));
    return 0;
}

/* opt:average() -> {kind, decay, every, start, warmup, count, swapped} */
static int a_average(lua_State *L)
{
    knL_AdamW *a = knL_check_adamw(L, 1);
    kn_average_cfg c = kn_adamw_average_cfg(a->o);
    lua_createtable(L, 0, 7);
    lua_pushstring(L, average_kinds[c.kind]); lua_setfield(L, -2, "kind");
    lua_pushnumber(L, c.decay); lua_setfield(L, -2, "decay");
    lua_pushinteger(L, c.every); lua_setfield(L, -2, "every");
    lua_pushinteger(L, c.start); lua_setfield(L, -2, "start");
    lua_pushboolean(L, c.warmup); lua_setfield(L, -2, "warmup");
    lua_pushinteger(L, kn_adamw_average_count(a->o)); lua_setfield(L, -2, "count");
    lua_pushboolean(L, kn_adamw_average_swapped(a->o)); lua_setfield(L, -2, "swapped");
    return 1;
}

/* opt:average_of(name) -> a view of one parameter's average (read and write, e.g. to save
 * or restore it); an error before set_average. */
static int a_average_of(lua_State *L)
{
    knL_AdamW *a = knL_check_adamw(L, 1);
    kn_gpt *g = model_of(L, 1);
    int i = check_param(L, g, 2);
    float *avg = kn_adamw_average(a->o);
    if (!avg) return luaL_error(L, "average_of: no averaging selected (call opt:set_average first)");
    const kn_param_info *p = kn_gpt_param_info(g, i);
    knL_push_view(L, avg + p->offset, p->ndim, p->shape, 1);
    return 1;
}

/* opt:set_average_count(n): the count that goes with an average written back. */
static int a_set_average_count(lua_State *L)
{
    knL_AdamW *a = knL_check_adamw(L, 1);
    KNL_TRY(L, kn_adamw_set_average_count(a->o, luaL_checkinteger(L, 2)));
    return 0;
}

/* opt:swap_average(): exchange the model's weights and the average; call again to restore. */
static int a_swap_average(lua_State *L)
{
    KNL_TRY(L, kn_adamw_swap_average(knL_check_adamw(L, 1)->o));
    return 0;
}

static int a_model(lua_State *L)
{
    knL_check_adamw(L, 1);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

static int a_gc(lua_State *L)
{
    knL_AdamW *a = luaL_checkudata(L, 1, ADAMW_MT);
    if (a->o) kn_adamw_free(a->o);
    a->o = NULL;
    return 0;
}

static int a_tostring(lua_State *L)
{
    knL_AdamW *a = luaL_checkudata(L, 1, ADAMW_MT);
    if (!a->o) { lua_pushstring(L, "kiln.AdamW (closed)"); return 1; }
    char buf[256];
    snprintf(buf, sizeof buf, "kiln.AdamW(lr=%g, betas=(%g, %g), eps=%g, weight_decay=%g, clip=%g; step %lld)",
             a->h.lr, a->h.beta1, a->h.beta2, a->h.eps, a->h.weight_decay, a->h.clip,
             (long long)kn_adamw_t(a->o));
    lua_pushstring(L, buf);
    return 1;
}

static const luaL_Reg adamw_methods[] = {
    {"step", a_step}, {"set_group", a_set_group}, {"group", a_group}, {"reset", a_reset},
    {"moments", a_moments}, {"hparams", a_hparams}, {"model", a_model}, {"close", a_gc},
    {"set_average", a_set_average}, {"average", a_average}, {"average_of", a_average_of},
    {"set_average_count", a_set_average_count}, {"swap_average", a_swap_average},
    {NULL, NULL}
};

/* opt.t is the number of steps taken (read-only); methods come from __methods. */
static int a_index(lua_State *L)
{
    knL_AdamW *a = luaL_checkudata(L, 1, ADAMW_MT);
    const char *k = lua_tostring(L, 2);
    if (k && strcmp(k, "t") == 0) {
        if (!a->o) return luaL_error(L, "optimizer was closed");
        lua_pushinteger(L, kn_adamw_t(a->o));
        return 1;
    }
    luaL_getmetafield(L, 1, "__methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static const luaL_Reg adamw_meta[] = {
    {"__gc", a_gc}, {"__close", a_gc}, {"__tostring", a_tostring}, {"__index", a_index},
    {NULL, NULL}
};

void knL_open_adamw(lua_State *L)
{
    knL_new_class(L, ADAMW_MT, adamw_methods, adamw_meta);
    lua_pushcfunction(L, l_adamw);
    lua_setfield(L, -2, "adamw");
}
