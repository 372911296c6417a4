/* data.h — token datasets: a file of bytes (V = 256) or of raw
 * little-endian uint16 tokens (nanoGPT's train.bin), seen as a list of contiguous segments.
 * A split selects segments: a single file is cut into 64 KiB blocks and every 20th block
 * goes to validation. Windows never cross a segment boundary. */
#ifndef KN_DATA_H
#define KN_DATA_H

#include "kn.h"
#include "rng.h"
#include "tokenizer.h"

typedef enum { KN_DATA_BYTES, KN_DATA_U16 } kn_data_format;
typedef enum { KN_SPLIT_ALL, KN_SPLIT_TRAIN, KN_SPLIT_VAL } kn_split;

#define KN_SPLIT_BLOCK_BYTES 65536  /* block size of the interleaved split */
#define KN_SPLIT_EVERY 20           /* every 20th block (index % 20 == 19) is validation */

typedef struct kn_dataset kn_dataset;

/* Open path read-only (a regular file only: a FIFO or device is refused without blocking).
 * U16 files must have an even size. The message names the file. Windows are read from the
 * file when sampled; if its size or modification time changes meanwhile (truncated, rewritten
 * in place), sampling and evaluation fail with a message naming it. */
kn_status kn_dataset_open(kn_dataset **out, const char *path, kn_data_format fmt, kn_split split);
/* The same for a u16 file made by tok (may be NULL: as kn_dataset_open). The dataset holds a
 * reference to tok, its vocabulary is tok's size, and the whole file is scanned at open: an id
 * >= that size is refused, naming the file, the id and its byte offset. Bytes take no
 * tokenizer. */
kn_status kn_dataset_open_tok(kn_dataset **out, const char *path, kn_data_format fmt, kn_split split,
                              kn_tokenizer *tok);
/* Datasets are reference-counted (open gives the caller one reference): retain adds one,
 * close drops one and the last closes the file. */
kn_dataset *kn_dataset_retain(kn_dataset *d);
void kn_dataset_close(kn_dataset *d);
int kn_dataset_refs(const kn_dataset *d);
const char *kn_dataset_path(const kn_dataset *d);
/* Tokens in the selected split. */
int64_t kn_dataset_num_tokens(const kn_dataset *d);
/* 256 for bytes; for U16 its tokenizer's vocabulary size, or without one 1 + the largest
 * token (scanned once at open, over the whole file whatever the split, so train and val of
 * one file agree). */
int kn_dataset_vocab(const kn_dataset *d);
/* The tokenizer that made the file (borrowed; the dataset holds it), or NULL: bytes, or u16
 * opened without one. */
kn_tokenizer *kn_dataset_tokenizer(const kn_dataset *d);
kn_data_format kn_dataset_format(const kn_dataset *d);
/* Fail, naming the file and where its vocabulary comes from, unless every id the dataset
 * can hold is < model_vocab (a model's vocab_size may exceed it: padded embeddings). */
kn_status kn_dataset_check_vocab(const kn_dataset *d, int model_vocab);
/* Fail (naming the file, its usable length and T) unless a window of T+1 tokens fits. */
kn_status kn_dataset_check_window(const kn_dataset *d, int T);
/* B random windows of T+1 tokens, uniform over all valid starts, drawn from r:
 * inputs[b,t] = x[s+t], targets[b,t] = x[s+t+1]. */
kn_status kn_dataset_sample(const kn_dataset *d, kn_rng *r, int B, int T, int32_t *inputs, int32_t *targets);
/* The fixed evaluation list: non-overlapping windows of T+1 tokens tiled from the start of
 * each segment with stride T+1 (segment order, then position), floor(len/(T+1)) per segment;
 * the tail of a segment shorter than a window is left out. How many there are, and window k
 * of it (0-based). Stride T+1 rather than T: no token is read by two windows, so each window
 * is an independent sample; the price is that the first token of each window is never a
 * target (1 token in T+1). */
int64_t kn_dataset_num_eval_windows(const kn_dataset *d, int T);
kn_status kn_dataset_eval_window(const kn_dataset *d, int T, int64_t k, int32_t *inputs, int32_t *targets);

#endif
