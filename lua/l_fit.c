/* l_fit.c — kiln.fit: least-squares curve fitting over core/fit.
 *
 *   kiln.fit.curve(f, xs, ys [, p0 [, opts]]) -> {p=, named=, r2=, mse=, ssr=, n=, nfev=, ...}
 *       f: a built-in law's name ("position", "log", ...) or a Lua function f(x, p) -> number
 *   kiln.fit.eval(law, p, xs)      predictions (a list, or a number for a number x)
 *   kiln.fit.guess(law, xs, ys)    the law's data-driven starting point
 *   kiln.fit.laws()                {{name=, params=, formula=, lower=, upper=}, ...} (also by name)
 *   kiln.fit.stats(ys, yhat)       r2, mse
 */
#include "binding.h"
#include "fit.h"

#include <math.h>
#include <string.h>

/* A Lua array of numbers as doubles in a userdata left on the stack (collected on error). */
static double *check_numbers(lua_State *L, int arg, const char *what, int *n_out)
{
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_Integer n = luaL_len(L, arg);
    if (n > 100000000) luaL_error(L, "%s: too many values (%d)", what, (int)n);
    double *v = lua_newuserdatauv(L, sizeof(double) * (size_t)(n > 0 ? n : 1), 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, arg, i);
        int isnum;
        v[i - 1] = lua_tonumberx(L, -1, &isnum);
        if (!isnum) luaL_error(L, "%s[%d] must be a number (got %s)", what, (int)i, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    *n_out = (int)n;
    return v;
}

static void push_numbers(lua_State *L, const double *v, int n)
{
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) { lua_pushnumber(L, v[i]); lua_rawseti(L, -2, i + 1); }
}

/* Law argument: a name; raises listing the laws. */
static int check_law(lua_State *L, int arg)
{
    const char *name = luaL_checkstring(L, arg);
    int law = kn_fit_law_find(name);
    if (law < 0) return knL_error(L);
    return law;
}

/* Bounds from opts[field]: a list indexed 1..np (nil = none) or, with names, keyed by name. */
static void read_bounds(lua_State *L, int opts, const char *field, int np, const char *const *names,
                        double *out)
{
    if (lua_isnoneornil(L, opts)) return;
    if (lua_getfield(L, opts, field) == LUA_TNIL) { lua_pop(L, 1); return; }
    if (!lua_istable(L, -1)) luaL_error(L, "opts.%s must be a table of bounds", field);
    int t = lua_gettop(L);
    for (int j = 0; j < np; j++) {
        lua_geti(L, t, j + 1);
        if (lua_isnil(L, -1) && names && names[j]) { lua_pop(L, 1); lua_getfield(L, t, names[j]); }
        if (!lua_isnil(L, -1)) {
            int isnum;
            double v = lua_tonumberx(L, -1, &isnum);
            if (!isnum) luaL_error(L, "opts.%s[%d] must be a number (got %s)", field, j + 1, luaL_typename(L, -1));
            out[j] = v;
        }
        lua_pop(L, 1);
    }
    /* A name that is not a parameter is a typo, not a silent no-op. */
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -1);
            bool known = false;
            for (int j = 0; names && j < np; j++) known = known || (names[j] && strcmp(names[j], k) == 0);
            if (!known) luaL_error(L, "opts.%s.%s: no parameter of that name", field, k);
        } else if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > np) {
            luaL_error(L, "opts.%s: keys must be 1..%d or parameter names", field, np);
        }
    }
    lua_pop(L, 1);
}

typedef struct {
    lua_State *L;
    int f, ptab, errslot, np;
} lua_model;

static int call_lua_model(void *vctx, const double *p, int n, const double *xs, double *out)
{
    lua_model *c = vctx;
    lua_State *L = c->L;
    for (int j = 0; j < c->np; j++) { lua_pushnumber(L, p[j]); lua_rawseti(L, c->ptab, j + 1); }
    for (int i = 0; i < n; i++) {
        lua_pushvalue(L, c->f);
        lua_pushnumber(L, xs[i]);
        lua_pushvalue(L, c->ptab);
        if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
            lua_pushfstring(L, "kiln.fit.curve: f(x, p) raised an error at x = %f: %s", xs[i],
                            lua_isstring(L, -1) ? lua_tostring(L, -1) : luaL_typename(L, -1));
            lua_replace(L, c->errslot);
            lua_pop(L, 1);
            return 1;
        }
        int isnum;
        out[i] = lua_tonumberx(L, -1, &isnum);
        if (!isnum) {
            lua_pushfstring(L, "kiln.fit.curve: f(x, p) returned %s at x = %f (expected a number)",
                            luaL_typename(L, -1), xs[i]);
            lua_replace(L, c->errslot);
            lua_pop(L, 1);
            return 1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

static void push_result(lua_State *L, const kn_fit_result *r, int np, int n, const char *const *names,
                        const char *lawname)
{
    lua_newtable(L);
    push_numbers(L, r->p, np);
    lua_setfield(L, -2, "p");
    if (names) {
        lua_newtable(L);
        for (int j = 0; j < np; j++)
            if (names[j]) { lua_pushnumber(L, r->p[j]); lua_setfield(L, -2, names[j]); }
        lua_setfield(L, -2, "named");
    }
    lua_pushnumber(L, r->r2); lua_setfield(L, -2, "r2");
    lua_pushnumber(L, r->mse); lua_setfield(L, -2, "mse");
    lua_pushnumber(L, r->ssr); lua_setfield(L, -2, "ssr");
    lua_pushinteger(L, n); lua_setfield(L, -2, "n");
    lua_pushinteger(L, r->nfev); lua_setfield(L, -2, "nfev");
    lua_pushinteger(L, r->starts_used); lua_setfield(L, -2, "starts_used");
    lua_pushboolean(L, r->info >= 1 && r->info <= 4); lua_setfield(L, -2, "converged");
    lua_pushinteger(L, r->info); lua_setfield(L, -2, "info");
    lua_pushstring(L, lawname); lua_setfield(L, -2, "law");
}

/* kiln.fit.curve(f, xs, ys [, p0 [, opts]]) */
static int l_curve(lua_State *L)
{
    lua_settop(L, 5);   /* the scratch arrays pushed below must not look like arguments */
    int is_fn = lua_isfunction(L, 1);
    if (!is_fn && !lua_isstring(L, 1)) luaL_argerror(L, 1, "expected a law name or a function f(x, p)");
    int opts = 5;
    if (!lua_isnoneornil(L, opts)) luaL_checktype(L, opts, LUA_TTABLE);
    int n, ny, np = 0;
    double *xs = check_numbers(L, 2, "xs", &n);
    double *ys = check_numbers(L, 3, "ys", &ny);
    if (n != ny) return luaL_error(L, "kiln.fit.curve: xs has %d values but ys has %d", n, ny);
    double *p0 = NULL;
    int law = -1;
    const char *names_buf[KN_FIT_MAXP] = {0};
    const char *const *names = NULL;
    if (!is_fn) {
        law = check_law(L, 1);
        np = kn_fit_law_nparams(law);
        for (int j = 0; j < np; j++) names_buf[j] = kn_fit_law_param(law, j);
        names = names_buf;
    }
    if (!lua_isnoneornil(L, 4)) {
        int n0;
        p0 = check_numbers(L, 4, "p0", &n0);
        if (is_fn) np = n0;
        else if (n0 != np)
            return luaL_error(L, "kiln.fit.curve: law '%s' has %d parameters but p0 has %d", kn_fit_law_name(law), np, n0);
    } else if (is_fn) {
        return luaL_error(L, "kiln.fit.curve: a Lua function needs a starting point p0 (a list of its parameters)");
    }
    if (np < 1 || np > KN_FIT_MAXP)
        return luaL_error(L, "kiln.fit.curve: %d parameters (1 to %d are supported)", np, KN_FIT_MAXP);
    if (is_fn && !lua_isnoneornil(L, opts)) {
        if (lua_getfield(L, opts, "names") == LUA_TTABLE) {
            for (int j = 0; j < np; j++) {
                lua_geti(L, -1, j + 1);
                names_buf[j] = lua_tostring(L, -1);   /* kept alive by opts.names */
                lua_pop(L, 1);
            }
            names = names_buf;
        }
        lua_pop(L, 1);
    }
    double lo[KN_FIT_MAXP], hi[KN_FIT_MAXP];
    if (law >= 0) kn_fit_law_bounds(law, lo, hi);
    else for (int j = 0; j < np; j++) { lo[j] = -INFINITY; hi[j] = INFINITY; }
    read_bounds(L, opts, "lower", np, names, lo);
    read_bounds(L, opts, "upper", np, names, hi);
    kn_fit_opts o = {.lower = lo, .upper = hi};
    o.starts = (int)knL_opt_int_field(L, opts, "starts", 8);
    o.max_evals = (int)knL_opt_int_field(L, opts, "max_evals", 0);
    o.tol = knL_opt_number_field(L, opts, "tol", 0);
    o.seed = (uint64_t)knL_opt_int_field(L, opts, "seed", 1);
    if (o.starts < 1 || o.starts > 1000) return luaL_error(L, "kiln.fit.curve: opts.starts must be 1..1000");
    kn_fit_result r;
    if (!is_fn) {
        KNL_TRY(L, kn_fit_law(law, n, xs, ys, p0, &o, &r));
        push_result(L, &r, np, n, names, kn_fit_law_name(law));
        return 1;
    }
    lua_pushnil(L);
    int errslot = lua_gettop(L);
    lua_createtable(L, np, 0);
    lua_model c = {L, 1, lua_gettop(L), errslot, np};
    kn_status st = kn_fit_curve(call_lua_model, &c, np, n, xs, ys, p0, &o, &r);
    if (st != KN_OK) {
        if (!lua_isnil(L, errslot)) { lua_pushvalue(L, errslot); return lua_error(L); }
        return knL_error(L);
    }
    push_result(L, &r, np, n, names, "function");
    return 1;
}

/* kiln.fit.eval(law, p, xs | x) */
static int l_eval(lua_State *L)
{
    lua_settop(L, 3);
    int law = check_law(L, 1);
    int np = kn_fit_law_nparams(law), n0, n;
    double *p = check_numbers(L, 2, "p", &n0);
    if (n0 != np) return luaL_error(L, "kiln.fit.eval: law '%s' has %d parameters but p has %d", kn_fit_law_name(law), np, n0);
    if (lua_type(L, 3) == LUA_TNUMBER) {
        double x = lua_tonumber(L, 3), y;
        KNL_TRY(L, kn_fit_law_eval(law, p, 1, &x, &y));
        lua_pushnumber(L, y);
        return 1;
    }
    double *xs = check_numbers(L, 3, "xs", &n);
    double *out = lua_newuserdatauv(L, sizeof(double) * (size_t)(n > 0 ? n : 1), 0);
    KNL_TRY(L, kn_fit_law_eval(law, p, n, xs, out));
    push_numbers(L, out, n);
    return 1;
}

/* kiln.fit.guess(law, xs, ys) */
static int l_guess(lua_State *L)
{
    lua_settop(L, 3);
    int law = check_law(L, 1);
    int n, ny;
    double *xs = check_numbers(L, 2, "xs", &n);
    double *ys = check_numbers(L, 3, "ys", &ny);
    if (n != ny) return luaL_error(L, "kiln.fit.guess: xs has %d values but ys has %d", n, ny);
    double p[KN_FIT_MAXP];
    KNL_TRY(L, kn_fit_law_guess(law, n, xs, ys, p));
    push_numbers(L, p, kn_fit_law_nparams(law));
    return 1;
}

/* kiln.fit.laws() */
static int l_laws(lua_State *L)
{
    lua_newtable(L);
    for (int k = 0; k < kn_fit_law_count(); k++) {
        int np = kn_fit_law_nparams(k);
        double lo[KN_FIT_MAXP], hi[KN_FIT_MAXP];
        kn_fit_law_bounds(k, lo, hi);
        lua_newtable(L);
        lua_pushstring(L, kn_fit_law_name(k)); lua_setfield(L, -2, "name");
        lua_pushstring(L, kn_fit_law_formula(k)); lua_setfield(L, -2, "formula");
        lua_createtable(L, np, 0);
        for (int j = 0; j < np; j++) { lua_pushstring(L, kn_fit_law_param(k, j)); lua_rawseti(L, -2, j + 1); }
        lua_setfield(L, -2, "params");
        push_numbers(L, lo, np); lua_setfield(L, -2, "lower");
        push_numbers(L, hi, np); lua_setfield(L, -2, "upper");
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, kn_fit_law_name(k));
        lua_rawseti(L, -2, k + 1);
    }
    return 1;
}

/* kiln.fit.stats(ys, yhat) -> r2, mse */
static int l_stats(lua_State *L)
{
    lua_settop(L, 2);
    int n, m;
    double *ys = check_numbers(L, 1, "ys", &n);
    double *yh = check_numbers(L, 2, "yhat", &m);
    if (n != m) return luaL_error(L, "kiln.fit.stats: ys has %d values but yhat has %d", n, m);
    if (n < 1) return luaL_error(L, "kiln.fit.stats: no values");
    double r2, mse;
    kn_fit_stats(n, ys, yh, &r2, &mse);
    lua_pushnumber(L, r2);
    lua_pushnumber(L, mse);
    return 2;
}

static const luaL_Reg fit_funcs[] = {
    {"curve", l_curve},
    {"eval", l_eval},
    {"guess", l_guess},
    {"laws", l_laws},
    {"stats", l_stats},
    {NULL, NULL}
};

void knL_open_fit(lua_State *L)
{
    luaL_newlib(L, fit_funcs);
    lua_setfield(L, -2, "fit");
}
