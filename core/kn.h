/* kn.h — what every core module shares: status codes, the error message, aligned
 * allocation, the interrupt flag and the thread setting. No Lua here, ever. */
#ifndef KN_H
#define KN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

typedef enum {
    KN_OK = 0,
    KN_ERR_ARG,          /* a caller passed something impossible (shape, name, range) */
    KN_ERR_IO,           /* open/read/write/rename failed; message carries strerror */
    KN_ERR_FORMAT,       /* a file is malformed (checkpoint header, token file) */
    KN_ERR_NOMEM,        /* allocation failed */
    KN_ERR_NONFINITE,    /* NaN or Inf in a loss or gradient */
    KN_ERR_INTERRUPTED   /* kn_interrupted was set while a long call ran */
} kn_status;

/* Record a formatted message for the calling thread and return st (for `return kn_fail(...)`). */
kn_status kn_fail(kn_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The last message recorded on this thread ("" if none). */
const char *kn_errmsg(void);

/* 64-byte aligned, zeroed, large blocks advised as huge pages; NULL (with message) on failure. */
void *kn_alloc(size_t bytes);
void kn_free(void *p);

/* Set from a SIGINT handler; long core loops poll it and return KN_ERR_INTERRUPTED. The
 * caller clears it. */
extern volatile sig_atomic_t kn_interrupted;

/* One thread setting for the whole core: OpenBLAS threads and kiln's own worker pool. */
void kn_set_threads(int n);
int kn_get_threads(void);

/* kiln's version string, e.g. "0.1.0". */
const char *kn_version(void);

#endif
