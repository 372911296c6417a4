/* tmpfiles.h — a test's own temp directory and files in it (test_ckpt.c, test_data.c).
 * tmp_dir_make() creates /tmp/kiln-test-<what>-XXXXXX into dir; the test removes what it
 * wrote and then dir itself, and checks that the rmdir succeeded (no leftovers). */
#ifndef KN_TEST_TMPFILES_H
#define KN_TEST_TMPFILES_H

#include <stdio.h>
#include <stdlib.h>

static char dir[64];

/* Exits with status 2 (before any test) when the directory cannot be made. */
static inline void tmp_dir_make(const char *what)
{
    snprintf(dir, sizeof dir, "/tmp/kiln-test-%s-XXXXXX", what);
    if (!mkdtemp(dir)) { perror("mkdtemp"); exit(2); }
}

/* dir/name, in one of four rotating static buffers (copy a path that must live longer). */
static inline const char *in_dir(const char *name)
{
    static char buf[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", dir, name);
    return buf[i];
}

static inline void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) { perror(path); exit(2); }
}

#endif
