/* tokenizer.h — byte-level BPE tokenizers (GPT-2's scheme): pre-tokenization by the GPT-2
 * pattern, merges by rank, special tokens kept apart from text; training by the rules of
 * Hugging Face tokenizers' BpeTrainer; HF tokenizer.json (read/write) and GPT-2's
 * encoder.json + vocab.bpe (read). Token ids are uint32. A tokenizer is reference-counted.
 * Encoding calls on one tokenizer must not run concurrently (per-thread caches are reused);
 * a call may itself use kiln's worker pool. */
#ifndef KN_TOKENIZER_H
#define KN_TOKENIZER_H

#include "kn.h"

typedef struct kn_tokenizer kn_tokenizer;

/* A growable id buffer (the caller frees ids with free()). */
typedef struct { uint32_t *ids; size_t n, cap; } kn_ids;

/* ---- loading, saving, lifetime ------------------------------------------------------- */

/* GPT-2's encoder.json + vocab.bpe; "<|endoftext|>" becomes the special token it is. */
kn_status kn_tok_load_gpt2(kn_tokenizer **out, const char *encoder_json, const char *vocab_bpe);
/* A Hugging Face tokenizer.json with a BPE model and ByteLevel pre-tokenizer/decoder. */
kn_status kn_tok_load_json(kn_tokenizer **out, const char *path);
/* Write tokenizer.json (temporary file, then rename). */
kn_status kn_tok_save_json(const kn_tokenizer *t, const char *path);
/* The same tokenizer.json as one line of text (no line breaks; *text freed with free()).
 * Deterministic: the same tokenizer always gives the same bytes, so its hash identifies it. */
kn_status kn_tok_to_json(const kn_tokenizer *t, char **text);
/* A tokenizer from tokenizer.json text held in memory; origin names it in messages. */
kn_status kn_tok_load_json_text(kn_tokenizer **out, const char *text, size_t len, const char *origin);
kn_tokenizer *kn_tok_retain(kn_tokenizer *t);
void kn_tok_release(kn_tokenizer *t);           /* frees at the last release; NULL is a no-op */

/* ---- queries ----------------------------------------------------------------------------- */

int kn_tok_vocab_size(const kn_tokenizer *t);
int kn_tok_num_merges(const kn_tokenizer *t);
/* The bytes a token decodes to (a special token: its text). NULL for an id out of range. */
const uint8_t *kn_tok_token_bytes(const kn_tokenizer *t, uint32_t id, size_t *len);
bool kn_tok_is_special(const kn_tokenizer *t, uint32_t id);
/* The id of special token `text`, or -1. */
int64_t kn_tok_special_id(const kn_tokenizer *t, const char *text);
/* Merge number `rank` (0-based): left and right ids and the id it makes. */
kn_status kn_tok_merge(const kn_tokenizer *t, int rank, uint32_t *left, uint32_t *right, uint32_t *made);

/* ---- encoding and decoding -------------------------------------------------------------- */

/* Append the ids of text[0..len) to out. With allow_special, occurrences of special-token
 * texts become those tokens; without, they are ordinary text. Large inputs are cut at blank
 * lines (points where cutting provably changes nothing) and encoded on the worker pool: the
 * result is the same at every thread count. */
kn_status kn_tok_encode(kn_tokenizer *t, const void *text, size_t len, bool allow_special, kn_ids *out);
/* Append the bytes of ids to *buf (realloc'ed; *len updated). An unknown id is an error. */
kn_status kn_tok_decode(const kn_tokenizer *t, const uint32_t *ids, size_t n, uint8_t **buf, size_t *len);

/* Encode file `in` and write its ids as little-endian uint16 to `out` (nanoGPT's .bin;
 * temporary file, then rename). Fails, writing nothing, if an id does not fit in 16 bits.
 * The number of tokens goes to *n_tokens (may be NULL). */
kn_status kn_tok_encode_file_u16(kn_tokenizer *t, const char *in, const char *out, bool allow_special,
                                 int64_t *n_tokens);

/* ---- pre-tokenization (exposed for tests and tools) ----------------------------------- */

/* The end of the pre-token that starts at pos (pos < len). Rules: the GPT-2 pattern
 * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ applied to each
 * maximal run of valid UTF-8 as if it were the whole text; a byte that is not part of a
 * well-formed UTF-8 sequence is a pre-token by itself. */
size_t kn_pretok_next(const uint8_t *text, size_t len, size_t pos);

/* ---- training ------------------------------------------------------------------------------ */

typedef void (*kn_tok_progress_fn)(void *ctx, const char *stage, int64_t done, int64_t total);

typedef struct {
    int vocab_size;            /* target size, specials and alphabet included */
    int64_t min_frequency;     /* a pair seen fewer times is never merged (0 = no limit) */
    const char *const *specials;  /* special token texts, ids 0.. in this order */
    int n_specials;
    bool seen_alphabet;        /* false: all 256 bytes; true: only bytes in the corpus */
    kn_tok_progress_fn progress;  /* optional; called from the calling thread */
    void *progress_ctx;
} kn_tok_train_opts;

/* Train on files (read line by line, as HF's train_from_files does). */
kn_status kn_tok_train_files(kn_tokenizer **out, const char *const *paths, int n_paths,
                             const kn_tok_train_opts *opts);
/* Train on one buffer (the same rules; for tests and callers holding text in memory). */
kn_status kn_tok_train_text(kn_tokenizer **out, const void *text, size_t len,
                            const kn_tok_train_opts *opts);

/* ---- byte-level alphabet ------------------------------------------------------------------ */

/* The code point GPT-2's byte-level scheme shows byte b as (printable Latin-1 as itself,
 * the rest as 256 + n). */
uint32_t kn_bytelevel_char(uint8_t b);

#endif
