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

#include <lualib.h>
#include <signal.h>
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

static void laction(int sig)
{
    signal(sig, SIG_DFL);   /* a second Ctrl-C kills, as in lua.c */
    kn_interrupted = 1;
    lua_sethook(globalL, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
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

static bool is_command(lua_State *L, const char *word)
{
    if (strchr(word, '.') || strchr(word, '/') || access(word, F_OK) == 0) return false;
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

/* ---- the interactive prompt ----------------------------------------------------------- */

#define EOFMARK "<eof>"
#define MARKLEN (sizeof(EOFMARK) / sizeof(char) - 1)

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
    if (lua_getglobal(L, firstline ? "_PROMPT" : "_PROMPT2") == LUA_TNIL)
        return firstline ? "kiln> " : "   >> ";
    const char *p = luaL_tolstring(L, -1, NULL);
    lua_remove(L, -2);
    return p;   /* left on the stack until the line is read */
}

static char *history_path(void)
{
    static char path[1024];
    const char *home = getenv("HOME");
    if (!home) return NULL;
    snprintf(path, sizeof path, "%s/.kiln_history", home);
    return path;
}

static int pushline(lua_State *L, int firstline)
{
    const char *prmt = get_prompt(L, firstline);
    char *b = readline(prmt);
    lua_pop(L, 1);
    if (b == NULL) return 0;
    size_t l = strlen(b);
    if (l > 0 && b[l - 1] == '\n') b[--l] = '\0';
    if (firstline && b[0] == '=') lua_pushfstring(L, "return %s", b + 1);
    else if (firstline && b[0] == '?') lua_pushfstring(L, "help(%s)", b + 1);
    else lua_pushlstring(L, b, l);
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
        if (line[0] != '\0') add_history(line);
    } else {
        lua_pop(L, 2);
    }
    return status;
}

static int multiline(lua_State *L)
{
    for (;;) {
        size_t len;
        const char *line = lua_tolstring(L, 1, &len);
        int status = luaL_loadbuffer(L, line, len, "=stdin");
        if (!incomplete(L, status) || !pushline(L, 0)) {
            if (line[0] != '\0') add_history(line);
            return status;
        }
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
}

static int loadline(lua_State *L)
{
    lua_settop(L, 0);
    if (!pushline(L, 1)) return -1;
    int status = addreturn(L);
    if (status != LUA_OK) status = multiline(L);
    lua_remove(L, 1);
    return status;
}

/* Print results through the global `print` (the Lua library replaces it with a pretty
 * printer in the REPL), so display is customisable from Lua. */
static void l_print(lua_State *L)
{
    int n = lua_gettop(L);
    if (n > 0) {
        luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
        lua_getglobal(L, "kiln_repl_print");
        if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_getglobal(L, "print"); }
        lua_insert(L, 1);
        if (lua_pcall(L, n, 0, 0) != LUA_OK)
            l_message(lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1)));
    }
}

static void doREPL(lua_State *L)
{
    const char *oldprogname = progname;
    progname = NULL;
    char *hist = history_path();
    if (hist) read_history(hist);
    int status;
    progname = "kiln";
    while ((status = loadline(L)) != -1) {
        if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK) l_print(L);
        else report(L, status);
    }
    lua_settop(L, 0);
    fputs("\n", stdout);
    fflush(stdout);
    if (hist) write_history(hist);
    progname = oldprogname;
}

/* ---- options -------------------------------------------------------------------------- */

static void print_usage(const char *badoption)
{
    if (badoption) fprintf(stderr, "kiln: unrecognized option '%s'\n", badoption);
    fprintf(stderr,
            "usage: kiln [options] [script.lua [args]] | kiln COMMAND [args]\n"
            "  -e code   run code\n"
            "  -i        stay at the prompt after running the script\n"
            "  -v        show version\n"
            "  -         run stdin\n"
            "  --        stop handling options\n"
            "A script's key=value arguments override its settings (see docs/guide.md).\n");
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
    luaL_openlibs(L);
    lua_gc(L, LUA_GCRESTART);
    lua_gc(L, LUA_GCGEN, 0, 0);
    createargtable(L, argv, argc, script ? script : argc);

    /* kiln and its submodules are always there: `require "kiln"` and the global `kiln`. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_kiln);
    lua_setfield(L, -2, "kiln");
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
    if (interactive) {
        lua_getglobal(L, "kiln");
        lua_getfield(L, -1, "repl_setup");
        if (lua_isfunction(L, -1)) docall(L, 0, 0); else lua_pop(L, 1);
        lua_pop(L, 1);
        doREPL(L);
    } else if (!script && !has_e && !version) {
        if (isatty(0)) {
            printf("kiln %s (%s) — Ctrl-D to leave, help(f) for documentation\n", kn_version(), LUA_RELEASE);
            lua_getglobal(L, "kiln");
            lua_getfield(L, -1, "repl_setup");
            if (lua_isfunction(L, -1)) docall(L, 0, 0); else lua_pop(L, 1);
            lua_pop(L, 1);
            doREPL(L);
        } else if (dochunk(L, luaL_loadfile(L, NULL)) != LUA_OK) {
            return 0;
        }
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
    lua_close(L);
    return (result && status == LUA_OK) ? EXIT_SUCCESS : EXIT_FAILURE;
}
