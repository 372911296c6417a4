/* binding.h — what the binding files (lua/l_*.c) share. The binding is thin: check
 * arguments, call core, turn a failed status into a Lua error carrying the core's message. */
#ifndef KNL_BINDING_H
#define KNL_BINDING_H

#include <lua.h>
#include <lauxlib.h>
#include "kn.h"

/* Raise the core's last message as a Lua error (always "%s": a message is never a format). */
int knL_error(lua_State *L);
#define KNL_TRY(L, call) do { if ((call) != KN_OK) return knL_error(L); } while (0)

/* Each registers its functions / metatables into the module table at the top of the stack. */
void knL_open_tensor(lua_State *L);
void knL_open_model(lua_State *L);
void knL_open_adamw(lua_State *L);
void knL_open_data(lua_State *L);
void knL_open_ckpt(lua_State *L);
void knL_open_yaml(lua_State *L);   /* module.yaml = {load = f, dump = f} */

/* The C module (`kiln.core`) and the full module (`kiln`: C + the embedded Lua library). */
int luaopen_kiln_core(lua_State *L);
int luaopen_kiln(lua_State *L);

#endif
