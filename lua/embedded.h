/* embedded.h — files compiled into the binary as strings by tools/embed.c: the Lua library
 * (knL_embedded_modules, for require) and the docs (knL_embedded_docs, for help()). */
#ifndef KNL_EMBEDDED_H
#define KNL_EMBEDDED_H

#include <stddef.h>

typedef struct {
    const char *name;   /* module name ("kiln.train") or doc file name */
    const char *path;   /* the source file's path at build time */
    const char *src;
    size_t len;
} knL_embedded;

/* Both tables end with an entry whose name is NULL. */
extern const knL_embedded knL_embedded_modules[];
extern const knL_embedded knL_embedded_docs[];

#endif
