/* l_files.c — files the library writes and checks: the core's atomic writer, SHA-256 of
 * strings and files, stale temporary files, and run-directory locks. */
#include "binding.h"
#include "fsio.h"
#include "hash.h"
#include "lock.h"

#include <stdlib.h>
#include <string.h>

/* kiln.sha256(s) -> 64 hex digits */
static int l_sha256(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    uint8_t d[KN_SHA256_BYTES];
    char hex[KN_SHA256_HEX];
    kn_hash_sha256(s, n, d);
    kn_hash_hex(d, sizeof d, hex);
    lua_pushstring(L, hex);
    return 1;
}

/* kiln.sha256_file(path) -> hex, bytes */
static int l_sha256_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    uint8_t d[KN_SHA256_BYTES];
    char hex[KN_SHA256_HEX];
    uint64_t bytes = 0;
    KNL_TRY(L, kn_hash_sha256_file(path, d, &bytes));
    kn_hash_hex(d, sizeof d, hex);
    lua_pushstring(L, hex);
    lua_pushinteger(L, (lua_Integer)bytes);
    return 2;
}

/* kiln.write_atomic(path, text): temp file, fsync, rename, directory fsync. */
static int l_write_atomic(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t n;
    const char *text = luaL_checklstring(L, 2, &n);
    KNL_TRY(L, kn_file_write_atomic_buffer(path, text, n));
    return 0;
}

/* kiln.remove_stale_temps(dir [, basename]) -> number removed */
static int l_remove_stale_temps(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    const char *base = luaL_optstring(L, 2, NULL);
    int removed = 0;
    KNL_TRY(L, kn_file_remove_stale_temps(dir, base, &removed));
    lua_pushinteger(L, removed);
    return 1;
}

/* ---- kiln.lock(path) -> Lock: held until lock:close() (or collection, or process exit) */

typedef struct { int fd; char path[]; } held_lock;

static void release_lock(void *obj)
{
    held_lock *h = obj;
    kn_lock_release(h->fd);
    free(h);
}

static void describe_lock(lua_State *L, void *obj)
{
    lua_pushfstring(L, "kiln.Lock (%s)", ((held_lock *)obj)->path);
}

static const knL_type lock_type = {"kiln.Lock", release_lock, describe_lock};

static int l_lock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    knL_handle *h = knL_handle_new(L, &lock_type, 0);
    held_lock *held = malloc(sizeof *held + strlen(path) + 1);
    if (!held) return luaL_error(L, "kiln.lock: out of memory");
    strcpy(held->path, path);
    if (kn_lock_acquire(path, &held->fd, NULL) != KN_OK) {
        free(held);
        return knL_error(L);
    }
    h->obj = held;
    return 1;
}

/* kiln.lock_holder(path) -> pid holding it, or nil when free (-1: held, pid not known) */
static int l_lock_holder(lua_State *L)
{
    long pid = kn_lock_holder(luaL_checkstring(L, 1));
    if (pid == 0) lua_pushnil(L);
    else lua_pushinteger(L, pid);
    return 1;
}

static const luaL_Reg funcs[] = {
    {"sha256", l_sha256},
    {"sha256_file", l_sha256_file},
    {"write_atomic", l_write_atomic},
    {"remove_stale_temps", l_remove_stale_temps},
    {"lock", l_lock},
    {"lock_holder", l_lock_holder},
    {NULL, NULL}
};

void knL_open_files(lua_State *L)
{
    static const luaL_Reg lock_methods[] = {{NULL, NULL}};   /* close() comes with every handle */
    knL_handle_class(L, &lock_type, lock_methods, NULL);
    luaL_setfuncs(L, funcs, 0);
}
