/* l_yaml.c — YAML <-> Lua tables over libyaml: kiln.yaml.{load, decode, dump, encode}.
 *
 *   yaml.load(path)            -> value      (the file's one document)
 *   yaml.decode(text [, name]) -> value      (name is used in error messages, default "<string>")
 *   yaml.dump(value, path)                   (atomic, through the core's writer: temp file in the
 *                                             same directory, fsync, rename, directory fsync)
 *   yaml.encode(value)         -> text
 *
 * Decoding (YAML 1.2 core schema, plain scalars only; quoted and block scalars are strings):
 *   null, Null, NULL, ~, empty  -> nil (a mapping key whose value is null is absent; null in a
 *                                  sequence is an error since a Lua array cannot hold nil)
 *   true/True/TRUE, false/...   -> boolean   (yes/no/on/off stay strings, as in YAML 1.2)
 *   [-+]?[0-9]+, 0o17, 0x1F     -> integer   (a decimal too large for 64 bits becomes a float)
 *   1.5, 1e-3, .5, -2.        -> float     (also .inf, -.inf, .nan in any of the 3 cases)
 *   anything else               -> string
 *   !!str forces a string; !!int/!!float/!!bool/!!null check the value; other tags are errors.
 *   sequences -> arrays (1-based), mappings -> tables; keys resolve like values (`1: x` gives the
 *   integer key 1); duplicate keys and sequence/mapping keys are errors. Anchors and aliases are
 *   supported: an alias is the same Lua table as its anchor (no copy); an alias inside its own
 *   anchor (a recursive structure) is an error, and so is a document that would hold more than
 *   MAX_NODES (10^7) nodes if every alias were a copy of its anchor. Merge keys (`<<: *base`,
 *   or a list of them) fill in the keys the mapping does not set itself; earlier ones win.
 *   A stream without a document, or whose document is null, decodes to an empty table; a second
 *   document is an error. Nesting deeper than 256 levels is an error.
 *   Errors read "name:line:column: problem" (1-based), with libyaml's problem text and, when it
 *   has one, its context ("... (while parsing a block mapping at line 2, column 1)").
 *
 * Encoding: tables with keys 1..n (n >= 1) are sequences, other tables mappings with keys sorted
 *   (numbers first, ascending, then strings bytewise); keys must be strings or numbers. The empty
 *   table is `{}`. Integers print as integers, floats as the shortest of %.15g/%.16g/%.17g that
 *   reads back to the same double (with ".0" added when it would otherwise read as an integer),
 *   so every number round-trips with its Lua subtype; inf/nan as .inf/-.inf/.nan. Strings that
 *   would read back as something else (e.g. "true", "1.5", "null", "") or hold control
 *   characters are double-quoted. Sequences of scalars are written in flow style [a, b].
 *   A table referred to more than once is written once with an anchor (&t1, &t2, ... in the
 *   order written) and as an alias (*t1) after, so shared tables cost their size once and
 *   decode back shared. Cycles, functions, userdata and non-UTF-8 strings are errors naming
 *   the path (a.b[3]).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <yaml.h>

#include "binding.h"
#include "fsio.h"

#define MAX_DEPTH 256
/* A decoded document may hold at most this many nodes when every alias is counted as a copy
 * of its anchor: an alias is the same Lua table, but code walking the result (a deep copy, an
 * encoder that expands) would see the copies, and a few kilobytes of nested aliases can
 * stand for billions of nodes. */
#define MAX_NODES 10000000
#define DEC_MT "kiln.yaml.decoder"
#define ENC_MT "kiln.yaml.encoder"

/* ------------------------------------------------------------------------------------- */
/* Decoder                                                                               */
/* ------------------------------------------------------------------------------------- */

/* libyaml state lives in a userdata so a Lua error anywhere (ours, or out of memory) still
 * frees it when the userdata is collected. */
typedef struct {
    yaml_parser_t parser;
    yaml_event_t event;
    int parser_ok, event_ok;
} ydec;

static int ydec_gc(lua_State *L) {
    ydec *d = luaL_checkudata(L, 1, DEC_MT);
    if (d->event_ok) { yaml_event_delete(&d->event); d->event_ok = 0; }
    if (d->parser_ok) { yaml_parser_delete(&d->parser); d->parser_ok = 0; }
    return 0;
}

typedef struct {
    lua_State *L;
    ydec *d;
    const char *name;
    const char *input;
    size_t len;
    int anchors;    /* stack index: anchor name -> value (the anchors table itself marks null) */
    int sizes;      /* stack index: finished table -> its node count with aliases expanded */
    int depth;
} dctx;

/* Node counts saturate just past the limit, so a billion-laughs document cannot overflow them. */
static size_t add_nodes(size_t a, size_t b) {
    size_t s = a + b;
    return (s < a || s > MAX_NODES) ? MAX_NODES + 1 : s;
}

static int fail_at(dctx *c, yaml_mark_t m, const char *fmt, ...) {
    lua_State *L = c->L;
    va_list ap;
    lua_pushfstring(L, "%s:%d:%d: ", c->name, (int)m.line + 1, (int)m.column + 1);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

static int parser_fail(dctx *c) {
    lua_State *L = c->L;
    yaml_parser_t *p = &c->d->parser;
    const char *problem = p->problem ? p->problem : "malformed YAML";
    switch (p->error) {
    case YAML_MEMORY_ERROR:
        return luaL_error(L, "%s: out of memory while reading YAML", c->name);
    case YAML_READER_ERROR: {
        /* The reader reports a byte offset; turn it into line and column. */
        size_t off = p->problem_offset < c->len ? p->problem_offset : c->len;
        int line = 1, col = 1;
        for (size_t i = 0; i < off; i++) {
            if (c->input[i] == '\n') { line++; col = 1; } else col++;
        }
        char byte[32] = "";
        if (p->problem_value != -1)
            snprintf(byte, sizeof byte, " (byte 0x%02X)", (unsigned)p->problem_value & 0xFFu);
        return luaL_error(L, "%s:%d:%d: %s%s", c->name, line, col, problem, byte);
    }
    default:
        if (p->context)
            return luaL_error(L, "%s:%d:%d: %s (%s at line %d, column %d)", c->name,
                              (int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1,
                              problem, p->context, (int)p->context_mark.line + 1,
                              (int)p->context_mark.column + 1);
        return luaL_error(L, "%s:%d:%d: %s", c->name, (int)p->problem_mark.line + 1,
                          (int)p->problem_mark.column + 1, problem);
    }
}

static void next_event(dctx *c) {
    ydec *d = c->d;
    if (d->event_ok) { yaml_event_delete(&d->event); d->event_ok = 0; }
    if (!yaml_parser_parse(&d->parser, &d->event)) parser_fail(c);
    d->event_ok = 1;
}

static int eq(const char *s, size_t n, const char *w) { return strlen(w) == n && memcmp(s, w, n) == 0; }

static int is_null_word(const char *s, size_t n) {
    return n == 0 || eq(s, n, "~") || eq(s, n, "null") || eq(s, n, "Null") || eq(s, n, "NULL");
}
static int bool_word(const char *s, size_t n) {   /* 1 true, 0 false, -1 neither */
    if (eq(s, n, "true") || eq(s, n, "True") || eq(s, n, "TRUE")) return 1;
    if (eq(s, n, "false") || eq(s, n, "False") || eq(s, n, "FALSE")) return 0;
    return -1;
}
static size_t digits(const char *s, size_t i, size_t n) {
    size_t j = i;
    while (j < n && s[j] >= '0' && s[j] <= '9') j++;
    return j - i;
}
static int is_int(const char *s, size_t n) {           /* [-+]?[0-9]+ */
    size_t i = (n > 0 && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    return i < n && digits(s, i, n) == n - i;
}
static int is_octal(const char *s, size_t n) {         /* 0o[0-7]+ */
    if (n < 3 || s[0] != '0' || s[1] != 'o') return 0;
    for (size_t i = 2; i < n; i++) if (s[i] < '0' || s[i] > '7') return 0;
    return 1;
}
static int is_hex(const char *s, size_t n) {           /* 0x[0-9a-fA-F]+ */
    if (n < 3 || s[0] != '0' || s[1] != 'x') return 0;
    for (size_t i = 2; i < n; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'))) return 0;
    }
    return 1;
}
/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static int is_float(const char *s, size_t n) {
    size_t i = (n > 0 && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    size_t before = digits(s, i, n), after = 0;
    i += before;
    int dot = 0;
    if (i < n && s[i] == '.') { dot = 1; i++; after = digits(s, i, n); i += after; }
    if (before == 0 && !(dot && after > 0)) return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+')) i++;
        size_t e = digits(s, i, n);
        if (e == 0) return 0;
        i += e;
    }
    return i == n;
}
static int special_float(const char *s, size_t n, double *out) {
    size_t i = (n > 0 && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    const char *r = s + i;
    size_t m = n - i;
    if (eq(r, m, ".inf") || eq(r, m, ".Inf") || eq(r, m, ".INF")) {
        *out = (s[0] == '-') ? -HUGE_VAL : HUGE_VAL;
        return 1;
    }
    if (i == 0 && (eq(r, m, ".nan") || eq(r, m, ".NaN") || eq(r, m, ".NAN"))) { *out = NAN; return 1; }
    return 0;
}

/* What a plain scalar means; pushes it (nil for null). Returns the Lua type pushed, or
 * LUA_TSTRING when it is just a string. */
static int push_plain(lua_State *L, const char *s, size_t n) {
    double d;
    int b;
    if (is_null_word(s, n)) { lua_pushnil(L); return LUA_TNIL; }
    if ((b = bool_word(s, n)) >= 0) { lua_pushboolean(L, b); return LUA_TBOOLEAN; }
    if (is_octal(s, n)) {
        lua_Unsigned v = 0;
        for (size_t i = 2; i < n; i++) {
            if (v > ((lua_Unsigned)LUA_MAXINTEGER >> 3)) { lua_pushlstring(L, s, n); return LUA_TSTRING; }
            v = v * 8 + (lua_Unsigned)(s[i] - '0');
        }
        lua_pushinteger(L, (lua_Integer)v);
        return LUA_TNUMBER;
    }
    if (is_int(s, n) || is_hex(s, n) || is_float(s, n)) {
        if (lua_stringtonumber(L, s) == n + 1) return LUA_TNUMBER;
        lua_pushlstring(L, s, n);   /* unreachable for NUL-free scalars; keep it a string */
        return LUA_TSTRING;
    }
    if (special_float(s, n, &d)) { lua_pushnumber(L, d); return LUA_TNUMBER; }
    lua_pushlstring(L, s, n);
    return LUA_TSTRING;
}

static void push_scalar(dctx *c) {
    lua_State *L = c->L;
    yaml_event_t *ev = &c->d->event;
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    int plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (tag && strcmp(tag, "!") != 0) {
        if (strcmp(tag, YAML_STR_TAG) == 0) { lua_pushlstring(L, s, n); return; }
        int want = strcmp(tag, YAML_INT_TAG) == 0 ? 1 : strcmp(tag, YAML_FLOAT_TAG) == 0 ? 2
                 : strcmp(tag, YAML_BOOL_TAG) == 0 ? 3 : strcmp(tag, YAML_NULL_TAG) == 0 ? 4 : 0;
        if (!want) fail_at(c, ev->start_mark, "unsupported tag '%s' (kiln reads plain YAML data)", tag);
        int ty = push_plain(L, s, n);
        int okk = (want == 1 && lua_isinteger(L, -1)) || (want == 2 && ty == LUA_TNUMBER)
               || (want == 3 && ty == LUA_TBOOLEAN) || (want == 4 && ty == LUA_TNIL);
        if (!okk) fail_at(c, ev->start_mark, "'%s' is not a valid %s", s, tag);
        if (want == 2 && lua_isinteger(L, -1)) lua_pushnumber(L, (lua_Number)lua_tointeger(L, -1)), lua_remove(L, -2);
        return;
    }
    if (!plain || tag) { lua_pushlstring(L, s, n); return; }
    push_plain(L, s, n);
}

static void register_anchor(dctx *c, const yaml_char_t *anchor) {
    lua_State *L = c->L;
    if (!anchor) return;
    if (lua_isnil(L, -1)) lua_pushvalue(L, c->anchors);    /* null marker */
    else lua_pushvalue(L, -1);
    lua_setfield(L, c->anchors, (const char *)anchor);
}

static size_t parse_node(dctx *c);

static void check_nodes(dctx *c, size_t nodes, yaml_mark_t m) {
    if (nodes > MAX_NODES)
        fail_at(c, m, "the document expands to more than %d nodes when aliases are counted as copies "
                      "of their anchors (refused: nested aliases)", MAX_NODES);
}

/* Record a finished table's expanded node count (an alias to it counts that many). */
static void set_size(dctx *c, size_t nodes) {
    lua_State *L = c->L;
    lua_pushvalue(L, -1);
    lua_pushinteger(L, (lua_Integer)nodes);
    lua_rawset(L, c->sizes);
}

static size_t parse_sequence(dctx *c) {
    lua_State *L = c->L;
    lua_newtable(L);
    register_anchor(c, c->d->event.data.sequence_start.anchor);
    yaml_mark_t start = c->d->event.start_mark;
    size_t nodes = 1;
    lua_Integer i = 0;
    for (;;) {
        next_event(c);
        if (c->d->event.type == YAML_SEQUENCE_END_EVENT) break;
        yaml_mark_t m = c->d->event.start_mark;
        nodes = add_nodes(nodes, parse_node(c));
        check_nodes(c, nodes, m);
        if (lua_isnil(L, -1))
            fail_at(c, m, "null in a sequence (item %d) is not supported: a Lua array cannot hold nil", (int)(i + 1));
        lua_rawseti(L, -2, ++i);
    }
    check_nodes(c, nodes, start);
    set_size(c, nodes);
    return nodes;
}

static size_t parse_mapping(dctx *c) {
    lua_State *L = c->L;
    lua_newtable(L);
    int t = lua_gettop(L);
    register_anchor(c, c->d->event.data.mapping_start.anchor);
    lua_newtable(L);                      /* t+1: merge sources, in order */
    int merges = t + 1;
    yaml_mark_t start = c->d->event.start_mark;
    size_t nodes = 1;
    for (;;) {
        next_event(c);
        yaml_event_t *ev = &c->d->event;
        if (ev->type == YAML_MAPPING_END_EVENT) break;
        yaml_mark_t km = ev->start_mark;
        if (ev->type == YAML_SEQUENCE_START_EVENT || ev->type == YAML_MAPPING_START_EVENT)
            fail_at(c, km, "a sequence or mapping as a mapping key is not supported");
        int is_merge = ev->type == YAML_SCALAR_EVENT && ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE
                    && !ev->data.scalar.tag && eq((const char *)ev->data.scalar.value, ev->data.scalar.length, "<<");
        nodes = add_nodes(nodes, parse_node(c));   /* key */
        int kt = lua_type(L, -1);
        if (kt == LUA_TNIL) fail_at(c, km, "a null mapping key is not supported");
        if (kt == LUA_TTABLE) fail_at(c, km, "a sequence or mapping as a mapping key is not supported");
        if (kt == LUA_TNUMBER) {
            lua_Number x = lua_tonumber(L, -1);
            if (x != x) fail_at(c, km, "a NaN mapping key is not supported");
        }
        lua_pushvalue(L, -1);
        lua_rawget(L, t);
        if (!lua_isnil(L, -1))
            fail_at(c, km, "duplicate key '%s'", luaL_tolstring(L, -2, NULL));
        lua_pop(L, 1);
        next_event(c);
        yaml_mark_t vm = c->d->event.start_mark;
        nodes = add_nodes(nodes, parse_node(c));   /* value (a merge source counts in full) */
        check_nodes(c, nodes, vm);
        if (is_merge) {
            if (!lua_istable(L, -1))
                fail_at(c, vm, "a merge key '<<' needs a mapping or a list of mappings");
            lua_rawgeti(L, -1, 1);
            int list = lua_istable(L, -1);
            lua_pop(L, 1);
            if (list) {
                lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
                for (lua_Integer i = 1; i <= n; i++) {
                    lua_rawgeti(L, -1, i);
                    if (!lua_istable(L, -1))
                        fail_at(c, vm, "a merge key '<<' needs a mapping or a list of mappings");
                    lua_rawseti(L, merges, (lua_Integer)lua_rawlen(L, merges) + 1);
                }
            } else {
                lua_pushvalue(L, -1);
                lua_rawseti(L, merges, (lua_Integer)lua_rawlen(L, merges) + 1);
            }
            lua_pop(L, 2);
        } else if (lua_isnil(L, -1)) {
            lua_pop(L, 2);                /* key: null -> the key is absent */
        } else {
            lua_rawset(L, t);
        }
    }
    lua_Integer nm = (lua_Integer)lua_rawlen(L, merges);
    for (lua_Integer i = 1; i <= nm; i++) {
        lua_rawgeti(L, merges, i);
        int src = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, src)) {
            lua_pushvalue(L, -2);
            lua_rawget(L, t);
            int absent = lua_isnil(L, -1);
            lua_pop(L, 1);
            if (absent) {
                lua_pushvalue(L, -2);
                lua_pushvalue(L, -2);
                lua_rawset(L, t);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_settop(L, t);
    check_nodes(c, nodes, start);
    set_size(c, nodes);
    return nodes;
}

/* An alias: its anchor's value, and how many nodes it stands for. */
static size_t push_alias(dctx *c) {
    lua_State *L = c->L;
    yaml_event_t *ev = &c->d->event;
    const char *name = (const char *)ev->data.alias.anchor;
    lua_getfield(L, c->anchors, name);
    if (lua_isnil(L, -1))
        fail_at(c, ev->start_mark, "unknown anchor '%s' (an alias must follow its anchor)", name);
    if (lua_rawequal(L, -1, c->anchors)) { lua_pop(L, 1); lua_pushnil(L); return 1; }
    if (!lua_istable(L, -1)) return 1;
    lua_pushvalue(L, -1);
    lua_rawget(L, c->sizes);
    int known;
    lua_Integer nodes = lua_tointegerx(L, -1, &known);
    lua_pop(L, 1);
    if (!known)
        fail_at(c, ev->start_mark, "alias '*%s' inside its own anchor: recursive structures are not supported", name);
    return (size_t)nodes;
}

/* Parse the node starting at the current event, push its value and return its node count
 * with aliases expanded. */
static size_t parse_node(dctx *c) {
    lua_State *L = c->L;
    yaml_event_t *ev = &c->d->event;
    size_t nodes = 1;
    if (++c->depth > MAX_DEPTH) fail_at(c, ev->start_mark, "nesting deeper than %d levels", MAX_DEPTH);
    luaL_checkstack(L, 10, "YAML nesting");
    switch (ev->type) {
    case YAML_ALIAS_EVENT: nodes = push_alias(c); break;
    case YAML_SCALAR_EVENT:
        push_scalar(c);
        register_anchor(c, ev->data.scalar.anchor);
        break;
    case YAML_SEQUENCE_START_EVENT: nodes = parse_sequence(c); break;
    case YAML_MAPPING_START_EVENT: nodes = parse_mapping(c); break;
    default:
        fail_at(c, ev->start_mark, "unexpected YAML event");
    }
    c->depth--;
    return nodes;
}

/* Decode input[0..len) (NUL-terminated) and push the value. */
static int decode_buffer(lua_State *L, const char *input, size_t len, const char *name) {
    int base = lua_gettop(L);
    ydec *d = lua_newuserdatauv(L, sizeof *d, 0);
    memset(d, 0, sizeof *d);
    luaL_setmetatable(L, DEC_MT);
    if (!yaml_parser_initialize(&d->parser)) return luaL_error(L, "%s: cannot initialise the YAML parser", name);
    d->parser_ok = 1;
    yaml_parser_set_input_string(&d->parser, (const unsigned char *)input, len);
    lua_newtable(L);
    lua_newtable(L);
    dctx c = { L, d, name, input, len, lua_gettop(L) - 1, lua_gettop(L), 0 };

    next_event(&c);                                   /* STREAM-START */
    next_event(&c);
    if (d->event.type == YAML_STREAM_END_EVENT) {     /* no document at all */
        lua_newtable(L);
    } else {
        next_event(&c);                               /* the root node */
        parse_node(&c);
        if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_newtable(L); }
        next_event(&c);                               /* DOCUMENT-END */
        next_event(&c);
        if (d->event.type == YAML_DOCUMENT_START_EVENT)
            fail_at(&c, d->event.start_mark, "a second document: kiln reads one document per file");
    }
    if (d->event_ok) { yaml_event_delete(&d->event); d->event_ok = 0; }
    yaml_parser_delete(&d->parser);
    d->parser_ok = 0;
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
    return 1;
}

static int l_decode(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "<string>");
    lua_settop(L, 2);
    return decode_buffer(L, s, len, name);
}

static int l_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    FILE *f = fopen(path, "rb");
    if (!f) return luaL_error(L, "%s: cannot open: %s", path, strerror(errno));
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (;;) {
        char *p = luaL_prepbuffer(&b);
        size_t got = fread(p, 1, LUAL_BUFFERSIZE, f);
        luaL_addsize(&b, got);
        if (got < LUAL_BUFFERSIZE) break;
    }
    int err = ferror(f);
    int e = errno;
    fclose(f);
    if (err) return luaL_error(L, "%s: cannot read: %s", path, strerror(e));
    luaL_pushresult(&b);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    return decode_buffer(L, s, len, path);
}

/* ------------------------------------------------------------------------------------- */
/* Encoder                                                                               */
/* ------------------------------------------------------------------------------------- */

typedef struct {
    yaml_emitter_t em;
    int em_ok;
    char *buf;
    size_t len, cap;
} yenc;

static int yenc_gc(lua_State *L) {
    yenc *e = luaL_checkudata(L, 1, ENC_MT);
    if (e->em_ok) { yaml_emitter_delete(&e->em); e->em_ok = 0; }
    free(e->buf);
    e->buf = NULL;
    return 0;
}

static int write_handler(void *data, unsigned char *bytes, size_t size) {
    yenc *e = data;
    if (e->len + size + 1 > e->cap) {
        size_t cap = e->cap ? e->cap : 4096;
        while (cap < e->len + size + 1) cap *= 2;
        char *nb = realloc(e->buf, cap);
        if (!nb) return 0;
        e->buf = nb;
        e->cap = cap;
    }
    memcpy(e->buf + e->len, bytes, size);
    e->len += size;
    return 1;
}

typedef struct {
    lua_State *L;
    yenc *e;
    int visiting;          /* stack index: tables on the current path */
    int refs;              /* stack index: table -> how many times the value refers to it */
    int anchors;           /* stack index: shared table already written -> its anchor name */
    int next_anchor;
    int depth;
    char path[512];
    size_t plen;
} ectx;

static const char *path_of(ectx *c) { return c->plen ? c->path : "(top)"; }

static int enc_fail(ectx *c, const char *what) {
    return luaL_error(c->L, "yaml.encode: %s at '%s'", what, path_of(c));
}

static void emit(ectx *c, yaml_event_t *ev) {
    if (!yaml_emitter_emit(&c->e->em, ev))
        luaL_error(c->L, "yaml.encode: %s at '%s'",
                   c->e->em.problem ? c->e->em.problem : "cannot write YAML", path_of(c));
}

static int resolves_as_nonstring(const char *s, size_t n) {
    double d;
    return is_null_word(s, n) || bool_word(s, n) >= 0 || is_int(s, n) || is_octal(s, n) || is_hex(s, n)
        || is_float(s, n) || special_float(s, n, &d) || eq(s, n, "<<");
}

static void emit_scalar(ectx *c, const char *s, size_t n, int plain) {
    yaml_event_t ev;
    yaml_scalar_style_t style = YAML_ANY_SCALAR_STYLE;
    if (!plain) {
        if (resolves_as_nonstring(s, n)) style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
        for (size_t i = 0; i < n && style == YAML_ANY_SCALAR_STYLE; i++) {
            unsigned char ch = (unsigned char)s[i];
            if (ch < 0x20 || ch == 0x7F) style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
        }
    }
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)n, 1, 1,
                                      plain ? YAML_PLAIN_SCALAR_STYLE : style))
        enc_fail(c, "a string that is not valid UTF-8");
    emit(c, &ev);
}

static void format_float(double x, char *out, size_t cap) {
    if (x != x) { snprintf(out, cap, ".nan"); return; }
    if (isinf(x)) { snprintf(out, cap, x > 0 ? ".inf" : "-.inf"); return; }
    for (int p = 15; p <= 17; p++) {
        snprintf(out, cap, "%.*g", p, x);
        for (char *q = out; *q; q++) if (*q == ',') *q = '.';   /* a non-C locale's point */
        if (strtod(out, NULL) == x) break;
    }
    if (!strpbrk(out, ".eEn")) {               /* would read back as an integer */
        size_t l = strlen(out);
        snprintf(out + l, cap - l, ".0");
    }
}

static void emit_number(ectx *c, int idx) {
    lua_State *L = c->L;
    char tmp[64];
    if (lua_isinteger(L, idx)) snprintf(tmp, sizeof tmp, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, idx));
    else format_float((double)lua_tonumber(L, idx), tmp, sizeof tmp);
    emit_scalar(c, tmp, strlen(tmp), 1);
}

typedef struct {
    int isnum;
    lua_Number num;
    const char *s;
    size_t len;
} ekey;

static int key_cmp(const void *a, const void *b) {
    const ekey *x = a, *y = b;
    if (x->isnum != y->isnum) return x->isnum ? -1 : 1;
    if (x->isnum) return (x->num > y->num) - (x->num < y->num);
    size_t m = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->s, y->s, m);
    if (r) return r;
    return (x->len > y->len) - (x->len < y->len);
}

static void path_push(ectx *c, lua_State *L, int key_idx, size_t *saved) {
    *saved = c->plen;
    char seg[96];
    if (lua_type(L, key_idx) == LUA_TNUMBER) {
        if (lua_isinteger(L, key_idx)) snprintf(seg, sizeof seg, "[" LUA_INTEGER_FMT "]", (LUAI_UACINT)lua_tointeger(L, key_idx));
        else snprintf(seg, sizeof seg, "[%g]", (double)lua_tonumber(L, key_idx));
    } else {
        snprintf(seg, sizeof seg, "%s%.80s", c->plen ? "." : "", lua_tostring(L, key_idx));
    }
    size_t l = strlen(seg);
    if (c->plen + l < sizeof c->path) {
        memcpy(c->path + c->plen, seg, l + 1);
        c->plen += l;
    }
}
static void path_pop(ectx *c, size_t saved) { c->plen = saved; c->path[saved] = 0; }

static void encode_value(ectx *c, int idx);

static int is_scalar_type(int t) { return t == LUA_TNUMBER || t == LUA_TSTRING || t == LUA_TBOOLEAN; }

/* First pass: how many times each table is referred to (a table's contents are walked once,
 * so shared tables cost nothing extra and a cycle ends the walk). Depth is capped at the
 * encoder's limit, which the second pass reports. */
static void count_refs(ectx *c, int idx, int depth) {
    lua_State *L = c->L;
    lua_pushvalue(L, idx);
    lua_rawget(L, c->refs);
    lua_Integer n = lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushinteger(L, n + 1);
    lua_rawset(L, c->refs);
    if (n > 0 || depth > MAX_DEPTH) return;
    luaL_checkstack(L, 6, "YAML nesting");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_istable(L, -1)) count_refs(c, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
    }
}

/* A table referred to more than once: the anchor to write with it the first time (or NULL
 * when it is not shared), or, once written, an alias event instead of the table (returns 1). */
static int anchor_or_alias(ectx *c, int idx, const char **anchor) {
    lua_State *L = c->L;
    *anchor = NULL;
    lua_pushvalue(L, idx);
    lua_rawget(L, c->anchors);
    if (lua_isstring(L, -1)) {
        yaml_event_t ev;
        yaml_alias_event_initialize(&ev, (yaml_char_t *)lua_tostring(L, -1));
        emit(c, &ev);
        lua_pop(L, 1);
        return 1;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_rawget(L, c->refs);
    lua_Integer n = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (n > 1) {
        lua_pushvalue(L, idx);
        *anchor = lua_pushfstring(L, "t%d", ++c->next_anchor);
        lua_rawset(L, c->anchors);        /* the string stays alive in the anchors table */
        lua_pushvalue(L, idx);
        lua_rawget(L, c->anchors);
        *anchor = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    return 0;
}

static void encode_table(ectx *c, int idx) {
    lua_State *L = c->L;
    yaml_event_t ev;
    lua_pushvalue(L, idx);
    lua_rawget(L, c->visiting);
    if (!lua_isnil(L, -1)) enc_fail(c, "a cycle (a table that contains itself)");
    lua_pop(L, 1);
    const char *anchor;
    if (anchor_or_alias(c, idx, &anchor)) return;
    if (++c->depth > MAX_DEPTH) enc_fail(c, "nesting deeper than 256 levels");
    luaL_checkstack(L, 10, "YAML nesting");
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, c->visiting);

    /* Sequence when the keys are exactly 1..n, n >= 1. */
    lua_Integer count = 0, maxk = 0;
    int seq = 1, all_scalar = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        if (lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1) {
            if (lua_tointeger(L, -2) > maxk) maxk = lua_tointeger(L, -2);
        } else seq = 0;
        if (!is_scalar_type(lua_type(L, -1))) all_scalar = 0;
        lua_pop(L, 1);
    }
    if (count == 0 || maxk != count) seq = 0;

    if (seq) {
        yaml_sequence_start_event_initialize(&ev, (yaml_char_t *)anchor, NULL, 1, all_scalar ? YAML_FLOW_SEQUENCE_STYLE : YAML_BLOCK_SEQUENCE_STYLE);
        emit(c, &ev);
        for (lua_Integer i = 1; i <= count; i++) {
            size_t saved;
            lua_pushinteger(L, i);
            path_push(c, L, -1, &saved);
            lua_pop(L, 1);
            lua_rawgeti(L, idx, i);
            encode_value(c, lua_gettop(L));
            lua_pop(L, 1);
            path_pop(c, saved);
        }
        yaml_sequence_end_event_initialize(&ev);
        emit(c, &ev);
    } else {
        ekey *keys = lua_newuserdatauv(L, sizeof(ekey) * (size_t)(count ? count : 1), 0);
        int kidx = lua_gettop(L);
        lua_Integer k = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            int kt = lua_type(L, -1);
            if (kt == LUA_TSTRING) {
                keys[k].isnum = 0;
                keys[k].s = lua_tolstring(L, -1, &keys[k].len);  /* anchored by the table */
            } else if (kt == LUA_TNUMBER) {
                keys[k].isnum = 1;
                keys[k].num = lua_tonumber(L, -1);
                keys[k].s = NULL;
                keys[k].len = 0;
            } else {
                lua_pushfstring(L, "a key of type %s (keys must be strings or numbers)", luaL_typename(L, -1));
                enc_fail(c, lua_tostring(L, -1));
            }
            k++;
        }
        qsort(keys, (size_t)count, sizeof *keys, key_cmp);
        yaml_mapping_start_event_initialize(&ev, (yaml_char_t *)anchor, NULL, 1, count ? YAML_BLOCK_MAPPING_STYLE : YAML_FLOW_MAPPING_STYLE);
        emit(c, &ev);
        for (lua_Integer i = 0; i < count; i++) {
            /* Number keys go back in as numbers; integer-valued floats index like integers. */
            if (keys[i].isnum) {
                lua_Number x = keys[i].num;
                lua_Integer ix;
                if (lua_numbertointeger(x, &ix) && (lua_Number)ix == x) {
                    lua_pushinteger(L, ix);
                    lua_pushvalue(L, -1);
                    lua_rawget(L, idx);
                    if (lua_isnil(L, -1)) { lua_pop(L, 2); lua_pushnumber(L, x); }
                    else lua_pop(L, 1);
                } else lua_pushnumber(L, x);
            } else {
                lua_pushlstring(L, keys[i].s, keys[i].len);
            }
            int key = lua_gettop(L);
            size_t saved;
            path_push(c, L, key, &saved);
            if (keys[i].isnum) emit_number(c, key);
            else emit_scalar(c, keys[i].s, keys[i].len, 0);
            lua_pushvalue(L, key);
            lua_rawget(L, idx);
            encode_value(c, lua_gettop(L));
            lua_pop(L, 2);
            path_pop(c, saved);
        }
        yaml_mapping_end_event_initialize(&ev);
        emit(c, &ev);
        lua_settop(L, kidx - 1);
    }
    lua_pushvalue(L, idx);
    lua_pushnil(L);
    lua_rawset(L, c->visiting);
    c->depth--;
}

static void encode_value(ectx *c, int idx) {
    lua_State *L = c->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: emit_scalar(c, "null", 4, 1); break;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx)) emit_scalar(c, "true", 4, 1);
        else emit_scalar(c, "false", 5, 1);
        break;
    case LUA_TNUMBER: emit_number(c, idx); break;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        emit_scalar(c, s, n, 0);
        break;
    }
    case LUA_TTABLE: encode_table(c, idx); break;
    default: {
        lua_pushfstring(L, "cannot encode a %s", luaL_typename(L, idx));
        enc_fail(c, lua_tostring(L, -1));
    }
    }
}

/* Encode the value at index 1; leaves the yenc userdata on the stack and returns it. */
static yenc *encode_to_buffer(lua_State *L) {
    luaL_checkany(L, 1);
    yenc *e = lua_newuserdatauv(L, sizeof *e, 0);
    memset(e, 0, sizeof *e);
    luaL_setmetatable(L, ENC_MT);
    int eidx = lua_gettop(L);
    if (!yaml_emitter_initialize(&e->em)) luaL_error(L, "yaml.encode: cannot initialise the YAML emitter");
    e->em_ok = 1;
    yaml_emitter_set_output(&e->em, write_handler, e);
    yaml_emitter_set_unicode(&e->em, 1);
    yaml_emitter_set_indent(&e->em, 2);
    yaml_emitter_set_width(&e->em, 100);
    lua_newtable(L);
    lua_newtable(L);
    lua_newtable(L);
    ectx c;
    memset(&c, 0, sizeof c);
    c.L = L;
    c.e = e;
    c.visiting = lua_gettop(L) - 2;
    c.refs = lua_gettop(L) - 1;
    c.anchors = lua_gettop(L);
    if (lua_istable(L, 1)) count_refs(&c, 1, 0);
    yaml_event_t ev;
    yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
    emit(&c, &ev);
    yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1);
    emit(&c, &ev);
    encode_value(&c, 1);
    yaml_document_end_event_initialize(&ev, 1);
    emit(&c, &ev);
    yaml_stream_end_event_initialize(&ev);
    emit(&c, &ev);
    if (!yaml_emitter_flush(&e->em)) luaL_error(L, "yaml.encode: out of memory");
    lua_settop(L, eidx);
    return e;
}

static int l_encode(lua_State *L) {
    lua_settop(L, 1);
    yenc *e = encode_to_buffer(L);
    lua_pushlstring(L, e->buf ? e->buf : "", e->len);
    return 1;
}

static int l_dump(lua_State *L) {
    const char *path = luaL_checkstring(L, 2);
    luaL_checkany(L, 1);
    lua_settop(L, 2);
    lua_pushvalue(L, 1);
    lua_replace(L, 1);                                  /* value stays at 1 */
    yenc *e = encode_to_buffer(L);                      /* fails before any file is touched */
    /* The core's one atomic writer: temp file, fsync, rename, directory fsync. */
    if (kn_file_write_atomic_buffer(path, e->buf ? e->buf : "", e->len) != KN_OK)
        return luaL_error(L, "yaml.dump: %s", kn_errmsg());
    return 0;
}

void knL_open_yaml(lua_State *L) {
    if (luaL_newmetatable(L, DEC_MT)) {
        lua_pushcfunction(L, ydec_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, ENC_MT)) {
        lua_pushcfunction(L, yenc_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        { "load", l_load }, { "decode", l_decode }, { "dump", l_dump }, { "encode", l_encode }, { NULL, NULL }
    };
    luaL_newlib(L, fns);
    lua_setfield(L, -2, "yaml");
}
