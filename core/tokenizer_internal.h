/* tokenizer_internal.h — the tokenizer's representation, shared by tokenizer_*.c only. */
#ifndef KN_TOKENIZER_INTERNAL_H
#define KN_TOKENIZER_INTERNAL_H

#include "tokenizer.h"

#define KN_TOK_NONE UINT32_MAX
#define KN_TOK_MAX_THREADS 256

typedef struct kn_tok_cache kn_tok_cache;

struct kn_tokenizer {
    int refs;
    uint32_t n_vocab;
    uint32_t *tok_off;          /* [n_vocab + 1]: token i is tok_bytes[tok_off[i] .. tok_off[i+1]) */
    uint8_t *tok_bytes;
    uint8_t *special;           /* [n_vocab]: 1 for special tokens */
    uint32_t byte_id[256];      /* the token of each single byte, KN_TOK_NONE if none */
    uint32_t n_merges;
    uint32_t (*merges)[3];      /* in rank order: left, right, made */
    uint64_t *mkey;             /* open addressing: key (left << 32 | right) + 1, 0 = empty */
    uint32_t *mval;             /* rank of the merge in the slot */
    uint64_t mmask;
    uint32_t n_specials;
    uint32_t *special_ids;      /* specials in the order they were declared */
    kn_tok_cache *cache[KN_TOK_MAX_THREADS];
};

/* What a loader or the trainer hands over to make a tokenizer: the vocabulary as bytes,
 * the special flags and the merges in rank order. */
typedef struct {
    uint32_t n_vocab;
    uint8_t *bytes;             /* concatenated token bytes */
    size_t bytes_len, bytes_cap;
    uint32_t *off;              /* [n_vocab + 1] */
    uint8_t *special;           /* [n_vocab] */
    size_t off_cap, special_cap;
    uint32_t (*merges)[3];
    uint32_t n_merges;
    size_t merges_cap;
    const char *origin;         /* for messages: the file (or "training") */
} kn_tok_parts;

kn_status kn_tok_parts_add_token(kn_tok_parts *p, const uint8_t *bytes, size_t len, bool special);
kn_status kn_tok_parts_add_merge(kn_tok_parts *p, uint32_t left, uint32_t right, uint32_t made);
void kn_tok_parts_free(kn_tok_parts *p);
/* Check the parts (every merge makes the concatenation of its two tokens) and build the
 * tokenizer; the parts are consumed (freed) either way. A pair merged twice keeps its later
 * rank, as Hugging Face's model does. */
kn_status kn_tok_build(kn_tokenizer **out, kn_tok_parts *p);

/* Rank of merging (left, right), or KN_TOK_NONE. */
uint32_t kn_tok_rank(const kn_tokenizer *t, uint32_t left, uint32_t right);

/* Byte-level strings: the inverse of kn_bytelevel_char (-1 when cp is not in the alphabet),
 * and conversion of a UTF-8 byte-level string to bytes (false if it is not one). */
int kn_bytelevel_byte(uint32_t cp);
bool kn_bytelevel_decode(const char *s, size_t len, uint8_t *out, size_t *out_len);
/* UTF-8 of the byte-level form of bytes[0..n) into out (room for 2n bytes); its length. */
size_t kn_bytelevel_encode(const uint8_t *bytes, size_t n, char *out);

/* Decode one UTF-8 character at s[pos] (pos < len): its length (1..4), 0 if the bytes there
 * are not a well-formed sequence. */
int kn_utf8_decode(const uint8_t *s, size_t len, size_t pos, uint32_t *cp);

/* 64-bit hash of a short byte string. */
uint64_t kn_tok_hash(const uint8_t *p, size_t n);

/* Read a whole file into memory (free()); the message names the file. */
kn_status kn_tok_read_file(const char *path, uint8_t **data, size_t *len);

#endif
