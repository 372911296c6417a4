/* check.h — TAP output for kiln's C tests: `ok N - what`, then `1..N` and a plain
 * `N passed, N failed` line; exit status non-zero if anything failed (CHECK_DONE). */
#ifndef KN_CHECK_H
#define KN_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

static int check_n_, check_failed_;

/* The condition is evaluated exactly once (it may have side effects, e.g. a call). */
#define CHECK(cond, ...) do { \
    int check_ok_ = (cond) ? 1 : 0; \
    ++check_n_; \
    if (check_ok_) { printf("ok %d - ", check_n_); } \
    else { ++check_failed_; printf("not ok %d - ", check_n_); } \
    printf(__VA_ARGS__); printf("\n"); \
    if (!check_ok_) printf("#   failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    fflush(stdout); \
} while (0)

/* A status-returning call that must succeed; on failure prints the core's message. */
#define CHECK_OK(call, ...) do { \
    kn_status st_ = (call); \
    CHECK(st_ == KN_OK, __VA_ARGS__); \
    if (st_ != KN_OK) printf("#   status %d: %s\n", (int)st_, kn_errmsg()); \
} while (0)

/* A call that must fail with a message containing `needle`. */
#define CHECK_FAILS(call, needle, ...) do { \
    kn_status st_ = (call); \
    CHECK(st_ != KN_OK && strstr(kn_errmsg(), (needle)) != NULL, __VA_ARGS__); \
    if (st_ == KN_OK || strstr(kn_errmsg(), (needle)) == NULL) \
        printf("#   status %d, message \"%s\", wanted \"%s\"\n", (int)st_, kn_errmsg(), (needle)); \
} while (0)

#define NOTE(...) do { printf("# "); printf(__VA_ARGS__); printf("\n"); } while (0)

#define CHECK_DONE() do { \
    printf("1..%d\n", check_n_); \
    printf("%d passed, %d failed\n", check_n_ - check_failed_, check_failed_); \
    return check_failed_ ? 1 : 0; \
} while (0)

#endif
