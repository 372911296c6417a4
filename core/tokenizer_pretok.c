/* tokenizer_pretok.c — GPT-2 pre-tokenization as a hand-written scanner (no regex engine):
 * the pattern's seven alternatives are tried in order at each position, exactly as a
 * backtracking regex would, using the classes of tokenizer_unicode.c. Also the byte-level
 * alphabet and UTF-8 decoding that the rest of the tokenizer shares. */
#include "tokenizer_internal.h"
#include "tokenizer_unicode.h"

#include <pthread.h>
#include <string.h>

/* ---- character classes ------------------------------------------------------------------ */

static uint8_t bmp_class[0x10000];
static pthread_once_t bmp_once = PTHREAD_ONCE_INIT;

static void fill_bmp_class(void)
{
    for (int i = 0; i < kn_uc_nranges; i++) {
        const kn_uc_range *r = &kn_uc_ranges[i];
        if (r->first > 0xFFFF) break;
        uint32_t last = r->last > 0xFFFF ? 0xFFFF : r->last;
        for (uint32_t c = r->first; c <= last; c++) bmp_class[c] = r->klass;
    }
}

static int astral_class(uint32_t cp)
{
    int lo = 0, hi = kn_uc_nranges - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < kn_uc_ranges[mid].first) hi = mid - 1;
        else if (cp > kn_uc_ranges[mid].last) lo = mid + 1;
        else return kn_uc_ranges[mid].klass;
    }
    return KN_UC_OTHER;
}

static inline int uc_class(uint32_t cp)
{
    return cp < 0x10000 ? bmp_class[cp] : astral_class(cp);
}

/* ---- UTF-8 ------------------------------------------------------------------------------ */

int kn_utf8_decode(const uint8_t *s, size_t len, size_t pos, uint32_t *cp)
{
    uint8_t b = s[pos];
    if (b < 0x80) { *cp = b; return 1; }
    int n;
    uint32_t c, min;
    if (b >= 0xC2 && b <= 0xDF) { n = 2; c = b & 0x1F; min = 0x80; }
    else if (b >= 0xE0 && b <= 0xEF) { n = 3; c = b & 0x0F; min = 0x800; }
    else if (b >= 0xF0 && b <= 0xF4) { n = 4; c = b & 0x07; min = 0x10000; }
    else return 0;
    if (pos + (size_t)n > len) return 0;
    for (int i = 1; i < n; i++) {
        uint8_t x = s[pos + (size_t)i];
        if ((x & 0xC0) != 0x80) return 0;
        c = (c << 6) | (x & 0x3F);
    }
    /* overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8 */
    if (c < min || (c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF) return 0;
    *cp = c;
    return n;
}

/* The class of the character at pos and its length; length 0 at the end of the text or at
 * a byte that is not valid UTF-8 (both end the current run of valid text). */
static inline int char_at(const uint8_t *s, size_t len, size_t pos, int *klass)
{
    if (pos >= len) return 0;
    uint32_t cp;
    int n = kn_utf8_decode(s, len, pos, &cp);
    if (n) *klass = uc_class(cp);
    return n;
}

/* End of the run of characters of class k starting at pos. */
static size_t run_of(const uint8_t *s, size_t len, size_t pos, int k)
{
    int c, n;
    while ((n = char_at(s, len, pos, &c)) > 0 && c == k) pos += (size_t)n;
    return pos;
}

/* End of the run of characters that are none of letter, number, space. */
static size_t run_of_other(const uint8_t *s, size_t len, size_t pos)
{
    return run_of(s, len, pos, KN_UC_OTHER);
}

/* 's 't 're 've 'm 'll 'd (case-sensitive, as in GPT-2): the length, or 0. */
static size_t contraction(const uint8_t *s, size_t len, size_t pos)
{
    if (s[pos] != '\'' || pos + 1 >= len) return 0;
    uint8_t a = s[pos + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= len) return 0;
    uint8_t b = s[pos + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

size_t kn_pretok_next(const uint8_t *s, size_t len, size_t pos)
{
    pthread_once(&bmp_once, fill_bmp_class);
    int c0;
    int n0 = char_at(s, len, pos, &c0);
    if (n0 == 0) return pos + 1;                       /* an invalid byte stands alone */
    size_t k = contraction(s, len, pos);
    if (k) return pos + k;
    size_t after = pos + (size_t)n0;
    if (c0 == KN_UC_LETTER || c0 == KN_UC_NUMBER) return run_of(s, len, after, c0);
    if (c0 == KN_UC_OTHER) return run_of_other(s, len, after);
    /* c0 is white space: " ?X+" first, for a plain space followed by X */
    int c1;
    int n1 = char_at(s, len, after, &c1);
    if (s[pos] == ' ' && n1 > 0 && c1 != KN_UC_SPACE) {
        size_t from = after + (size_t)n1;
        return c1 == KN_UC_OTHER ? run_of_other(s, len, from) : run_of(s, len, from, c1);
    }
    /* \s+(?!\S): the whole run if text (or valid text) ends after it, else all but its last
     * character; a run of one character before \S falls through to \s+ (that character). */
    size_t end = pos, last = pos;
    int c, n;
    while ((n = char_at(s, len, end, &c)) > 0 && c == KN_UC_SPACE) { last = end; end += (size_t)n; }
    if (n == 0) return end;
    return last > pos ? last : end;
}

/* ---- the byte-level alphabet ------------------------------------------------------------ */

static bool printable_latin1(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

static uint16_t byte_char[256];     /* byte -> code point */
static int16_t char_byte[512];      /* code point -> byte, -1 if none */
static pthread_once_t alphabet_once = PTHREAD_ONCE_INIT;

static void fill_alphabet(void)
{
    for (int i = 0; i < 512; i++) char_byte[i] = -1;
    unsigned n = 0;   /* the non-printable bytes, in byte order, take 256, 257, ... */
    for (unsigned b = 0; b < 256; b++) {
        byte_char[b] = (uint16_t)(printable_latin1(b) ? b : 256 + n++);
        char_byte[byte_char[b]] = (int16_t)b;
    }
}

uint32_t kn_bytelevel_char(uint8_t b)
{
    pthread_once(&alphabet_once, fill_alphabet);
    return byte_char[b];
}

int kn_bytelevel_byte(uint32_t cp)
{
    pthread_once(&alphabet_once, fill_alphabet);
    return cp < 512 ? char_byte[cp] : -1;
}

size_t kn_bytelevel_encode(const uint8_t *bytes, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = kn_bytelevel_char(bytes[i]);
        if (cp < 0x80) out[o++] = (char)cp;
        else { out[o++] = (char)(0xC0 | (cp >> 6)); out[o++] = (char)(0x80 | (cp & 0x3F)); }
    }
    return o;
}

bool kn_bytelevel_decode(const char *s, size_t len, uint8_t *out, size_t *out_len)
{
    size_t o = 0, pos = 0;
    while (pos < len) {
        uint32_t cp;
        int n = kn_utf8_decode((const uint8_t *)s, len, pos, &cp);
        if (n == 0) return false;
        int b = kn_bytelevel_byte(cp);
        if (b < 0) return false;
        out[o++] = (uint8_t)b;
        pos += (size_t)n;
    }
    *out_len = o;
    return true;
}
