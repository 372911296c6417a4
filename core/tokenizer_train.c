#include "tokenizer_internal.h"
kn_status kn_tok_train_files(kn_tokenizer **out, const char *const *paths, int n_paths, const kn_tok_train_opts *opts)
{ (void)out; (void)paths; (void)n_paths; (void)opts; return kn_fail(KN_ERR_ARG, "todo"); }
kn_status kn_tok_train_text(kn_tokenizer **out, const void *text, size_t len, const kn_tok_train_opts *opts)
{ (void)out; (void)text; (void)len; (void)opts; return kn_fail(KN_ERR_ARG, "todo"); }
