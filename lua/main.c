/* main.c — the `kiln` host program, modelled on Lua's own lua.c: everything runs in
 * protected mode, every chunk goes through docall (traceback handler, SIGINT turned into
 * a Lua hook plus the core's interrupt flag), incomplete input is detected by the parser's
 * "<eof>" message, and expressions print without `return`.
 *
 *   kiln script.lua [args]      run a script (arguments in `arg`, as with lua)
 *   kiln -e 'code' [-e ...]     run code
 *   kiln -i [script.lua]        run the script, then stay at the prompt
 *   kiln COMMAND [args]         a kiln subcommand (module kiln.cmd.COMMAND), e.g. plot, fit
 *   kiln                        the prompt on a terminal; stdin as a script otherwise
 */
#include "binding.h"
#include "embedded.h"

#include <lualib.h>
#include <errno.h>
#include <signal.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <editline/readline.h>

static const char *progname = "kiln";
static lua_State *globalL = NULL;

/* ---- interrupts: a hook raises "interrupted" at the next Lua instruction; the flag stops
 * long C calls (forward/backward) at their next check. ----------------------------------- */

static void lstop(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    kn_interrupted = 0;
    luaL_error(L, "interrupted");
}

static volatile sig_atomic_t sigint_seen = 0;   /* for the newline after an echoed ^C */

static void laction(int sig)
{
    signal(sig, SIG_DFL);   /* a second Ctrl-C kills, as in lua.c */
    sigint_seen = 1;
    kn_interrupted = 1;
    lua_sethook(globalL, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* A settings mistake (kiln.config raises a table whose metatable is named
 * "kiln.settings_error") is the user's to fix: its one line, no traceback. */
static int is_settings_error(lua_State *L, int idx)
{
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
    lua_getfield(L, -1, "__name");
    int yes = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "kiln.settings_error") == 0;
    lua_pop(L, 2);
    return yes;
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL && is_settings_error(L, 1)) {
        luaL_tolstring(L, 1, NULL);
        return 1;
    }
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int docall(lua_State *L, int narg, int nres)
{
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    globalL = L;
    kn_interrupted = 0;
    signal(SIGINT, laction);
    int status = lua_pcall(L, narg, nres, base);
    signal(SIGINT, SIG_DFL);
    lua_sethook(L, NULL, 0, 0);
    kn_interrupted = 0;
    lua_remove(L, base);
    return status;
}

static void l_message(const char *msg)
{
    fprintf(stderr, "%s: %s\n", progname, msg);
    fflush(stderr);
}

static int report(lua_State *L, int status)
{
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg == NULL) msg = "(error message not a string)";
        l_message(msg);
        lua_pop(L, 1);
    }
    return status;
}

static int dochunk(lua_State *L, int status)
{
    if (status == LUA_OK) status = docall(L, 0, 0);
    return report(L, status);
}

static int dostring(lua_State *L, const char *s, const char *name)
{
    return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* arg table as lua.c builds it: script at 0, its arguments at 1.., interpreter below. */
static void createargtable(lua_State *L, char **argv, int argc, int script)
{
    if (script == argc) script = 0;
    lua_createtable(L, argc - script - 1, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int pushargs(lua_State *L)
{
    if (lua_getglobal(L, "arg") != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
    int n = (int)luaL_len(L, -1);
    luaL_checkstack(L, n + 3, "too many arguments to script");
    for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
    lua_remove(L, -n - 1);
    return n;
}

static int handle_script(lua_State *L, char **argv)
{
    const char *fname = argv[0];
    if (strcmp(fname, "-") == 0) fname = NULL;
    int status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        int n = pushargs(L);
        status = docall(L, n, 0);
    }
    return report(L, status);
}

/* `kiln COMMAND args`: run module kiln.cmd.COMMAND's returned function with the args. */
static int handle_command(lua_State *L, const char *cmd)
{
    lua_getglobal(L, "require");
    lua_pushfstring(L, "kiln.cmd.%s", cmd);
    int status = docall(L, 1, 1);
    if (status != LUA_OK) return report(L, status);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        l_message("subcommand module did not return a function");
        return LUA_ERRRUN;
    }
    int n = pushargs(L);
    return report(L, docall(L, n, 0));
}

/* A word names a command unless a file of that name (a script without an extension) is here;
 * a directory is never a script, so `kiln runs runs` works where experiments wrote runs/. */
static bool is_command(lua_State *L, const char *word)
{
    struct stat st;
    if (strchr(word, '.') || strchr(word, '/') || (stat(word, &st) == 0 && !S_ISDIR(st.st_mode))) return false;
    for (const char *p = word; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || *p == '_' || (*p >= '0' && *p <= '9'))) return false;
    /* Only known commands: look for the module without loading it. */
    char code[256];
    snprintf(code, sizeof code,
             "local n = 'kiln.cmd.%s'; for _, s in ipairs(package.searchers) do "
             "local f = s(n); if type(f) == 'function' then return true end end return false", word);
    if (luaL_dostring(L, code) != LUA_OK) { lua_pop(L, 1); return false; }
    bool found = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return found;
}

/* ---- the interactive prompt -----------------------------------------------------------
 * lua.c's loop (read a line, try "return <line>", else collect lines while the parser says
 * "<eof>", run through docall, print the results) plus what a researcher expects of a
 * prompt: Ctrl-C at the prompt clears the line, Tab completes names, fields and methods,
 * and results are pretty-printed. The Lua side is lua/kiln/repl.lua: its setup() defines
 * the globals kiln_repl_print (display) and kiln_repl_complete (candidates) used here. */

#define EOFMARK "<eof>"
#define MARKLEN (sizeof(EOFMARK) / sizeof(char) - 1)
#define HISTORY_MAX 2000

static lua_State *replL = NULL;                 /* the state completion calls into */
static volatile sig_atomic_t line_interrupted = 0;
static sigset_t prompt_mask;                    /* signal mask while waiting for a key */

static int incomplete(lua_State *L, int status)
{
    if (status == LUA_ERRSYNTAX) {
        size_t lmsg;
        const char *msg = lua_tolstring(L, -1, &lmsg);
        if (lmsg >= MARKLEN && strcmp(msg + lmsg - MARKLEN, EOFMARK) == 0) {
            lua_pop(L, 1);
            return 1;
        }
    }
    return 0;
}

static const char *get_prompt(lua_State *L, int firstline)
{
    if (lua_getglobal(L, firstline ? "_PROMPT" : "_PROMPT2") == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushstring(L, firstline ? "kiln> " : "   >> ");
        return lua_tostring(L, -1);
    }
    const char *p = luaL_tolstring(L, -1, NULL);
    lua_remove(L, -2);
    return p;   /* left on the stack until the line is read */
}

static char *history_path(void)
{
    static char path[1024];
    const char *home = getenv("HOME");
    if (!home || !*home) return NULL;
    snprintf(path, sizeof path, "%s/.kiln_history", home);
    return path;
}

static void save_line(const char *line)
{
    if (line[0] == '\0') return;
    HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
    if (last && last->line && strcmp(last->line, line) == 0) return;   /* no repeats */
    add_history(line);
}

/* SIGINT while a line is being read: note it; the key reader below sees it and ends the
 * line, which pushline then throws away. */
static void prompt_sigint(int sig)
{
    (void)sig;
    line_interrupted = 1;
}

/* libedit's character reader. SIGINT stays blocked except inside pselect, so a Ctrl-C can
 * never slip in between the check of the flag and the wait for a key. */
static int prompt_getc(FILE *f)
{
    int fd = fileno(f);
    for (;;) {
        if (line_interrupted) return EOF;
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(fd, &rd);
        int n = pselect(fd + 1, &rd, NULL, NULL, NULL, &prompt_mask);
        if (n < 0) {
            if (errno == EINTR) continue;
            return EOF;
        }
        unsigned char c;
        ssize_t k = read(fd, &c, 1);
        if (k == 1) return c;
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        return EOF;
    }
}

/* Read one line. Returns 1 with the line pushed, 0 at end of input, 2 after a Ctrl-C. */
static int pushline(lua_State *L, int firstline)
{
    const char *prmt = get_prompt(L, firstline);
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = prompt_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;                              /* no SA_RESTART: pselect must wake */
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &prompt_mask);
    sigdelset(&prompt_mask, SIGINT);
    line_interrupted = 0;
    sigaction(SIGINT, &sa, &old_sa);
    char *b = readline(prmt);
    sigprocmask(SIG_SETMASK, &prompt_mask, NULL);  /* a pending Ctrl-C is delivered here */
    sigaction(SIGINT, &old_sa, NULL);
    lua_pop(L, 1);
    if (line_interrupted) {
        line_interrupted = 0;
        free(b);
        fputs("^C\n", stdout);
        fflush(stdout);
        return 2;
    }
    if (b == NULL) return 0;
    size_t l = strlen(b);
    if (l > 0 && b[l - 1] == '\n') b[--l] = '\0';
    const char *s = b;
    while (firstline && (*s == ' ' || *s == '\t')) s++;
    if (firstline && s[0] == '=') {
        lua_pushfstring(L, "return %s", s + 1);           /* "=expr", as lua 5.1 */
    } else if (firstline && s[0] == '?') {               /* "?name": help("name") */
        const char *e = s + 1;
        while (*e == ' ') e++;
        size_t el = strlen(e);
        while (el > 0 && (e[el - 1] == ' ' || e[el - 1] == '\t')) el--;
        lua_getglobal(L, "string");
        lua_getfield(L, -1, "format");
        lua_remove(L, -2);
        lua_pushliteral(L, "help(%q)");
        lua_pushlstring(L, e, el);
        lua_call(L, 2, 1);
    } else {
        lua_pushlstring(L, b, l);
    }
    free(b);
    return 1;
}

static int addreturn(lua_State *L)
{
    const char *line = lua_tostring(L, -1);
    const char *retline = lua_pushfstring(L, "return %s;", line);
    int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
    if (status == LUA_OK) {
        lua_remove(L, -2);
        save_line(line);
    } else {
        lua_pop(L, 2);
    }
    return status;
}

/* Keep reading while the chunk is incomplete. Returns the load status, or -2 if the
 * statement was abandoned with Ctrl-C. */
static int multiline(lua_State *L)
{
    for (;;) {
        size_t len;
        const char *line = lua_tolstring(L, 1, &len);
        int status = luaL_loadbuffer(L, line, len, "=stdin");
        if (!incomplete(L, status)) {
            save_line(line);
            return status;
        }
        int r = pushline(L, 0);
        if (r == 2) return -2;
        if (r == 0) {   /* end of input inside a statement: report the parser's message */
            status = luaL_loadbuffer(L, line, len, "=stdin");
            save_line(line);
            return status;
        }
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
}

/* Read a whole statement and leave its compiled chunk (or an error message) on the stack.
 * Returns -1 at end of input. A Ctrl-C while typing starts over at a fresh prompt. */
static int loadline(lua_State *L)
{
    for (;;) {
        lua_settop(L, 0);
        int r = pushline(L, 1);
        if (r == 0) return -1;
        if (r == 2) continue;
        int status = addreturn(L);
        if (status != LUA_OK) status = multiline(L);
        if (status == -2) continue;
        lua_remove(L, 1);
        return status;
    }
}

/* Print the results through kiln_repl_print (lua/kiln/repl.lua, pretty printing) if it is
 * set, else the global `print`; printing runs under docall, so Ctrl-C stops a long one. */
static void l_print(lua_State *L)
{
    int n = lua_gettop(L);
    if (n > 0) {
        luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
        lua_getglobal(L, "kiln_repl_print");
        if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_getglobal(L, "print"); }
        lua_insert(L, 1);
        int status = docall(L, n, 0);
        if (status != LUA_OK)
            l_message(lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1)));
    }
    lua_settop(L, 0);
}

/* ---- tab completion: candidates come from kiln_repl_complete(word, line) in Lua ------ */

static char **comp_list = NULL;
static size_t comp_n = 0, comp_next = 0;

static void comp_clear(void)
{
    for (size_t i = 0; i < comp_n; i++) free(comp_list[i]);
    free(comp_list);
    comp_list = NULL;
    comp_n = comp_next = 0;
}

static char *comp_generator(const char *text, int state)
{
    (void)text;
    if (state == 0) comp_next = 0;
    if (comp_next < comp_n) return strdup(comp_list[comp_next++]);
    return NULL;
}

static int comp_collect(lua_State *L)
{
    const char *text = lua_tostring(L, 1);
    const char *line = lua_tostring(L, 2);
    if (lua_getglobal(L, "kiln_repl_complete") != LUA_TFUNCTION) return 0;
    lua_pushstring(L, text);
    lua_pushstring(L, line);
    lua_call(L, 2, 1);
    if (!lua_istable(L, -1)) return 0;
    lua_Integer n = luaL_len(L, -1);
    if (n <= 0) return 0;
    comp_list = calloc((size_t)n, sizeof *comp_list);
    if (!comp_list) return 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const char *s = lua_tostring(L, -1);
        if (s && (comp_list[comp_n] = strdup(s)) != NULL) comp_n++;
        lua_pop(L, 1);
    }
    return 0;
}

static char **kiln_completion(const char *text, int start, int end)
{
    (void)end;
    rl_attempted_completion_over = 1;     /* never fall back to file names */
    comp_clear();
    lua_State *L = replL;
    if (!L) return NULL;
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 8)) return NULL;
    lua_pushcfunction(L, comp_collect);
    lua_pushstring(L, text);
    lua_pushlstring(L, rl_line_buffer ? rl_line_buffer : "", rl_line_buffer ? (size_t)start : 0);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) comp_clear();   /* a failing completer completes nothing */
    lua_settop(L, top);
    if (comp_n == 0) return NULL;
    return rl_completion_matches(text, comp_generator);
}

static void repl_setup(lua_State *L)
{
    lua_getglobal(L, "kiln");
    if (lua_istable(L, -1)) {
        /* kiln.repl_setup if a library defines one, else kiln.repl.setup (lua/kiln/repl.lua) */
        if (lua_getfield(L, -1, "repl_setup") != LUA_TFUNCTION) {
            lua_pop(L, 1);
            lua_getfield(L, -1, "repl");   /* loads kiln.repl on first use */
            if (lua_istable(L, -1)) {
                lua_getfield(L, -1, "setup");
                lua_remove(L, -2);
            }
        }
        if (lua_isfunction(L, -1)) report(L, docall(L, 0, 0)); else lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void doREPL(lua_State *L)
{
    const char *oldprogname = progname;
    progname = NULL;
    replL = L;
    rl_readline_name = "kiln";           /* "kiln:" lines in ~/.editrc apply */
    rl_catch_signals = 0;                 /* SIGINT is ours (prompt_sigint), not libedit's */
    rl_getc_function = prompt_getc;
    rl_attempted_completion_function = kiln_completion;
    /* Words for completion run across '.' and ':' (kiln.sched<TAB>, model:for<TAB>). */
    static char breaks[] = " \t\n\"'`<>=;|&{}()[]+-*/%^~#,";
    rl_basic_word_break_characters = breaks;
    rl_completer_word_break_characters = breaks;
    rl_completion_append_character = '\0';
    using_history();
    stifle_history(HISTORY_MAX);
    char *hist = history_path();
    if (hist) read_history(hist);
    int status;
    progname = "kiln";
    while ((status = loadline(L)) != -1) {
        sigint_seen = 0;
        if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK) {
            l_print(L);
        } else {
            if (sigint_seen && isatty(1)) fputs("\n", stdout);   /* the terminal echoed ^C */
            fflush(stdout);
            report(L, status);
        }
        lua_settop(L, 0);
    }
    lua_settop(L, 0);
    fputs("\n", stdout);
    fflush(stdout);
    if (hist) write_history(hist);
    comp_clear();
    replL = NULL;
    progname = oldprogname;
}

/* ---- text compiled into the binary, for help() and completion ------------------------
 * package.preload["kiln.embedded_text"] returns {docs = {["lua-api.md"] = text, ...},
 * sources = {["[kiln]/lua/kiln/train.lua"] = text, ...}, modules = {"kiln.train", ...}}:
 * the docs/ markdown files (the Makefile compiles them in) and the embedded Lua library, so
 * help works from any directory. */

static int open_embedded_text(lua_State *L)
{
    lua_createtable(L, 0, 3);
    lua_newtable(L);
    for (const knL_embedded *d = knL_embedded_docs; d->name; d++) {
        lua_pushlstring(L, d->src, d->len);
        lua_setfield(L, -2, d->name);
    }
    lua_setfield(L, -2, "docs");
    lua_newtable(L);
    lua_newtable(L);
    int i = 1;
    for (const knL_embedded *m = knL_embedded_modules; m->name; m++) {
        lua_pushfstring(L, "[kiln]/%s", m->path);
        lua_pushlstring(L, m->src, m->len);
        lua_settable(L, -4);
        lua_pushstring(L, m->name);
        lua_rawseti(L, -2, i++);
    }
    lua_setfield(L, -3, "modules");
    lua_setfield(L, -2, "sources");
    return 1;
}

/* ---- options -------------------------------------------------------------------------- */

/* The commands are the embedded modules kiln.cmd.NAME; each one's first comment line is
 * its synopsis, so a new command appears here without editing this file. */
static void print_commands(FILE *out)
{
    fprintf(out, "commands:\n");
    for (const knL_embedded *m = knL_embedded_modules; m->name; m++) {
        if (strncmp(m->name, "kiln.cmd.", 9) != 0) continue;
        const char *line = m->src, *end = memchr(m->src, '\n', m->len);
        size_t n = end ? (size_t)(end - line) : m->len;
        while (n > 0 && (*line == '-' || *line == ' ' || *line == '`')) { line++; n--; }
        fprintf(out, "  %-6s %.*s\n", m->name + 9, (int)(n < 100 ? n : 100), line);
    }
}

static void print_usage(const char *badoption)
{
    FILE *out = badoption ? stderr : stdout;
    if (badoption) fprintf(stderr, "kiln: unrecognized option '%s'\n", badoption);
    fprintf(out,
            "usage: kiln [options] [script.lua [args]] | kiln COMMAND [args]\n"
            "  -e code   run code\n"
            "  -i        stay at the prompt after running the script\n"
            "  -v        show version\n"
            "  -h        this help\n"
            "  -         run stdin\n"
            "  --        stop handling options\n");
    print_commands(out);
    fprintf(out,
            "A script's key=value arguments override its settings; config=FILE.yaml adds a file\n"
            "of them and quick=true the quick profile (docs/guide.md, \"Settings\").\n");
}

static int pmain(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    int script = 0, interactive = 0, has_e = 0, version = 0;
    int i;
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) { i++; break; }
        if (strcmp(a, "-") == 0) break;
        if (strcmp(a, "-i") == 0) interactive = 1;
        else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) version = 1;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { print_usage(NULL); lua_pushboolean(L, 1); return 1; }
        else if (strcmp(a, "-e") == 0) {
            has_e = 1;
            if (++i >= argc) { print_usage("-e needs an argument"); return 0; }
        } else { print_usage(a); return 0; }
    }
    script = i < argc ? i : 0;
    /* MPI builds join the job here, before any script runs (a no-op in other builds); with
     * several ranks, messages name the rank they come from. */
    char mpi_err[256];
    if (knL_mpi_init(mpi_err, sizeof mpi_err) != 0) { l_message(mpi_err); return 0; }
    int mpi_rank, mpi_size;
    knL_mpi_world(&mpi_rank, &mpi_size);
    static char rank_name[64];
    if (mpi_size > 1) {
        snprintf(rank_name, sizeof rank_name, "kiln (rank %d of %d)", mpi_rank, mpi_size);
        progname = rank_name;
    }
    luaL_openlibs(L);
    lua_gc(L, LUA_GCRESTART);
    lua_gc(L, LUA_GCGEN, 0, 0);
    createargtable(L, argv, argc, script ? script : argc);

    /* kiln and its submodules are always there: `require "kiln"` and the global `kiln`. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_kiln);
    lua_setfield(L, -2, "kiln");
    lua_pushcfunction(L, open_embedded_text);
    lua_setfield(L, -2, "kiln.embedded_text");
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushstring(L, "kiln");
    if (docall(L, 1, 1) != LUA_OK) { report(L, LUA_ERRRUN); return 0; }
    lua_setglobal(L, "kiln");

    if (version) printf("kiln %s (%s)\n", kn_version(), LUA_RELEASE);
    for (int k = 1; k < (script ? script : argc); k++) {
        if (strcmp(argv[k], "-e") == 0) {
            if (dostring(L, argv[k + 1], "=(command line)") != LUA_OK) return 0;
            k++;
        }
    }
    if (script) {
        int status;
        if (is_command(L, argv[script])) {
            /* Commands see their own arguments in arg[1..]. */
            createargtable(L, argv, argc, script);
            status = handle_command(L, argv[script]);
        } else {
            status = handle_script(L, argv + script);
        }
        if (status != LUA_OK) return 0;
    }
    if (interactive || (!script && !has_e && !version && isatty(0))) {
        if (isatty(0))
            printf("kiln %s (%s) — help() for help, Tab completes, Ctrl-D leaves\n", kn_version(), LUA_RELEASE);
        repl_setup(L);
        doREPL(L);
    } else if (!script && !has_e && !version) {
        if (dochunk(L, luaL_loadfile(L, NULL)) != LUA_OK) return 0;   /* stdin as a script */
    }
    lua_pushboolean(L, 1);
    return 1;
}

int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        l_message("cannot create state: not enough memory");
        return EXIT_FAILURE;
    }
    lua_gc(L, LUA_GCSTOP);
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status = lua_pcall(L, 2, 1, 0);
    int result = lua_toboolean(L, -1);
    report(L, status);
    /* MPI: finalise, or after an error (already printed) with other ranks, end the job. */
    knL_mpi_finish(!(result && status == LUA_OK));
    lua_close(L);
    return (result && status == LUA_OK) ? EXIT_SUCCESS : EXIT_FAILURE;
}
