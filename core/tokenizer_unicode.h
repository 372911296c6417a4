/* tokenizer_unicode.h — the three Unicode classes the GPT-2 pre-tokenizer distinguishes, as a
 * generated table of ranges (tokenizer_unicode.c, from tools/gen-unicode-classes). */
#ifndef KN_TOKENIZER_UNICODE_H
#define KN_TOKENIZER_UNICODE_H

#include <stdint.h>

typedef enum { KN_UC_OTHER = 0, KN_UC_LETTER, KN_UC_NUMBER, KN_UC_SPACE } kn_uc_class;

typedef struct { uint32_t first, last; uint8_t klass; } kn_uc_range;

extern const kn_uc_range kn_uc_ranges[];   /* sorted, non-overlapping; absent = OTHER */
extern const int kn_uc_nranges;
extern const char kn_unicode_version[];

#endif
