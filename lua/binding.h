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
void knL_open_generate(lua_State *L);   /* m:generate, m:logits on kiln.Model */
void knL_open_adamw(lua_State *L);
void knL_open_data(lua_State *L);
void knL_open_ckpt(lua_State *L);
void knL_open_yaml(lua_State *L);   /* module.yaml = {load = f, dump = f} */
void knL_open_fit(lua_State *L);    /* module.fit = {curve = f, eval = f, ...} */
void knL_open_mpi(lua_State *L);    /* module.mpi = {rank = f, size = f, allreduce = f, ...} */

/* The host's MPI life cycle (lua/l_mpi.c; no-ops in builds without -DKILN_MPI). */
int knL_mpi_init(char *err, size_t errlen);      /* 0, or -1 with a message in err */
void knL_mpi_world(int *rank, int *size);        /* 0 and 1 when MPI is not running */
void knL_mpi_finish(int failed);                 /* failed (an exit code) with size > 1: MPI_Abort */

/* Shared userdata accessors (raise a Lua argument error on the wrong type). */
#include "tensor.h"
#include "gpt.h"
#include "rng.h"
#include "adamw.h"
typedef struct {
    kn_gpt *g;
    int B, T;            /* shape of the last forward, for losses()/position sums */
    bool has_forward;
} knL_Model;
typedef struct {
    int32_t *inputs, *targets;   /* [cap_B, T] each */
    int cap_B, T, rows;          /* rows: how many rows are filled (<= cap_B) */
} knL_Batch;
typedef struct {
    kn_adamw *o;
    kn_adamw_hparams h;          /* defaults for step{} fields not given */
} knL_AdamW;

kn_tensor *knL_check_tensor(lua_State *L, int arg);
/* Push a view over data, keeping the value at owner_idx alive as long as the view lives. */
void knL_push_view(lua_State *L, float *data, int ndim, const int64_t *shape, int owner_idx);
/* Push a new owned zeroed tensor. */
kn_tensor *knL_push_tensor(lua_State *L, int ndim, const int64_t *shape);
knL_Model *knL_check_model(lua_State *L, int arg);
knL_Batch *knL_check_batch(lua_State *L, int arg);
knL_AdamW *knL_check_adamw(lua_State *L, int arg);
kn_rng *knL_check_rng(lua_State *L, int arg);
/* Push a new Model userdata owning g (takes ownership even on error). */
knL_Model *knL_push_model(lua_State *L, kn_gpt *g);
/* Push a model config as a table. */
void knL_push_config(lua_State *L, const kn_gpt_config *c);
/* Create a class metatable named tname with methods (as __index) and metamethods. */
void knL_new_class(lua_State *L, const char *tname, const luaL_Reg *methods, const luaL_Reg *metamethods);
/* Read an optional field of the table at idx: number / integer / boolean / string. */
lua_Number knL_opt_number_field(lua_State *L, int idx, const char *k, lua_Number def);
lua_Integer knL_opt_int_field(lua_State *L, int idx, const char *k, lua_Integer def);
int knL_opt_bool_field(lua_State *L, int idx, const char *k, int def);

/* The C module (`kiln.core`) and the full module (`kiln`: C + the embedded Lua library). */
int luaopen_kiln_core(lua_State *L);
int luaopen_kiln(lua_State *L);

#endif
