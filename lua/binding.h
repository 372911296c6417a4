/* binding.h — what the binding files (lua/l_*.c) share. The binding is thin: check
 * arguments, call core, turn a failed status into a Lua error carrying the core's message.
 *
 * Layering: l_util.c (errors, classes, option fields) and l_handle.c (the one userdata type)
 * depend on nothing else in the binding; each class file (l_tensor, l_rng, l_batch,
 * l_model, l_adamw, l_data, l_ckpt, ...) uses them and the accessors of the classes it takes
 * as arguments; l_module.c only assembles the module from the knL_open_* functions. */
#ifndef KNL_BINDING_H
#define KNL_BINDING_H

#include <lua.h>
#include <lauxlib.h>
#include "kn.h"
#include "tensor.h"
#include "gpt.h"
#include "rng.h"
#include "adamw.h"
#include "data.h"
#include "tokenizer.h"

/* ---- l_util.c ---------------------------------------------------------------------- */

/* Raise the core's last message as a Lua error (always "%s": a message is never a format). */
int knL_error(lua_State *L);
#define KNL_TRY(L, call) do { if ((call) != KN_OK) return knL_error(L); } while (0)

/* Create a class metatable named tname with methods (as __index) and metamethods. */
void knL_new_class(lua_State *L, const char *tname, const luaL_Reg *methods, const luaL_Reg *metamethods);
/* Read an optional field of the table at idx: number / integer / boolean / string. */
lua_Number knL_opt_number_field(lua_State *L, int idx, const char *k, lua_Number def);
lua_Integer knL_opt_int_field(lua_State *L, int idx, const char *k, lua_Integer def);
int knL_opt_bool_field(lua_State *L, int idx, const char *k, int def);

/* ---- l_handle.c: the one userdata type of every kiln object ------------------------- */

/* What a handle holds: the metatable name, how to drop the handle's reference to its
 * object, and a one-line description of an open object for __tostring. */
typedef struct knL_type {
    const char *name;                                   /* "kiln.Model" */
    void (*release)(void *obj);
    void (*describe)(lua_State *L, void *obj);          /* pushes a string */
} knL_type;

/* A handle is created closed (obj NULL) before its object exists, so an allocation failure
 * (a Lua error) never leaks: __gc of a closed handle does nothing. Set obj once the object
 * is complete; from then on the handle owns one reference to it. */
typedef struct {
    void *obj;
    const knL_type *type;
} knL_handle;

/* Register type's metatable: methods (plus close) as __index, meta (may be NULL) plus the
 * shared __gc / __close / __tostring. A meta with its own __index finds methods in
 * __methods. */
void knL_handle_class(lua_State *L, const knL_type *type, const luaL_Reg *methods, const luaL_Reg *meta);
/* Push a new closed handle of type with nuv user values. */
knL_handle *knL_handle_new(lua_State *L, const knL_type *type, int nuv);
/* The open object of argument arg, or an argument error ("kiln.Model: object is closed"). */
void *knL_handle_check(lua_State *L, int arg, const knL_type *type);
/* The object of arg if it is an open handle of type, else NULL (never raises). */
void *knL_handle_test(lua_State *L, int arg, const knL_type *type);
/* close / __gc / __close: release the object once; a closed handle stays closed. */
int knL_handle_close(lua_State *L);

/* ---- class accessors (each raises an argument error on the wrong type or a closed one) -- */

/* l_tensor.c */
extern const knL_type knL_tensor_type;
kn_tensor *knL_check_tensor(lua_State *L, int arg);
/* Push a new zeroed tensor of its own storage. */
kn_tensor *knL_push_tensor(lua_State *L, int ndim, const int64_t *shape);
/* Push a contiguous tensor over base[offset ..] of an object's memory base[0..n). The view
 * holds the owner: retain(owner) is called once the handle exists, release(owner) when the
 * last view of that storage goes (or at once if making the view fails). */
kn_tensor *knL_push_borrowed(lua_State *L, float *base, size_t n, void *owner,
                             void *(*retain)(void *), void (*release)(void *), size_t offset,
                             int ndim, const int64_t *shape);

/* l_rng.c */
kn_rng *knL_check_rng(lua_State *L, int arg);

/* l_batch.c: token windows [cap_B, T] (inputs and targets), the first rows filled. Each
 * row remembers where its tokens came from, so that b:text can decode it: set by hand,
 * bytes, a u16 dataset without a tokenizer, or a tokenizer (the row holds a reference). */
typedef enum { KNL_ROW_HAND, KNL_ROW_BYTES, KNL_ROW_U16_UNKNOWN, KNL_ROW_TOKENIZER } knL_row_kind;
typedef struct {
    int32_t *inputs, *targets;
    int cap_B, T, rows;
    uint8_t *row_kind;          /* [cap_B] knL_row_kind */
    kn_tokenizer **row_tok;     /* [cap_B] a reference for KNL_ROW_TOKENIZER rows, else NULL */
} knL_batch;
knL_batch *knL_check_batch(lua_State *L, int arg);
/* Record that rows first .. first+count-1 (0-based) were filled from d. No allocation:
 * it runs in the training step. */
void knL_batch_rows_from(knL_batch *b, int first, int count, const kn_dataset *d);

/* l_model.c */
extern const knL_type knL_model_type;
kn_gpt *knL_check_model(lua_State *L, int arg);
/* Push a closed Model handle (before making the model: nothing leaks if this raises), then
 * give it the new model's reference with knL_model_opened. */
knL_handle *knL_push_model_handle(lua_State *L);
void knL_model_opened(lua_State *L, knL_handle *h, kn_gpt *g);
/* Push a model config as a table. */
void knL_push_config(lua_State *L, const kn_gpt_config *c);

/* l_adamw.c */
kn_adamw *knL_check_adamw(lua_State *L, int arg);

/* l_data.c */
kn_dataset *knL_check_dataset(lua_State *L, int arg);

/* l_tokenizer.c */
kn_tokenizer *knL_check_tokenizer(lua_State *L, int arg);
/* The kiln.Tokenizer at arg, or NULL if it is something else (never raises). */
kn_tokenizer *knL_test_tokenizer(lua_State *L, int arg);
/* Push t as a kiln.Tokenizer holding a new reference to it. */
void knL_push_tokenizer(lua_State *L, kn_tokenizer *t);
/* Push a closed kiln.Tokenizer and return where to store the one reference it will own
 * (create the tokenizer into it after the push, so a Lua error in between leaks nothing). */
kn_tokenizer **knL_new_tokenizer(lua_State *L);

/* ---- module assembly (l_module.c) and the parts it assembles ------------------------ */

/* Each registers its functions / metatables into the module table at the top of the stack. */
void knL_open_runtime(lua_State *L);   /* clock, isatty, threads, interrupted */
void knL_open_files(lua_State *L);     /* write_atomic, sha256, sha256_file, lock, ... */
void knL_open_tensor(lua_State *L);
void knL_open_rng(lua_State *L);
void knL_open_batch(lua_State *L);
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

/* The C module (`kiln.core`) and the full module (`kiln`: C + the embedded Lua library). */
int luaopen_kiln_core(lua_State *L);
int luaopen_kiln(lua_State *L);

#endif
