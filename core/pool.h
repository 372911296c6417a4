/* pool.h — kiln's one worker pool: persistent pthreads that sleep on a condition variable
 * between jobs (no spinning: on 2 vCPUs a spinning pool starves OpenBLAS and vice versa).
 * A range is cut into fixed chunks (up to 4 per thread, boundaries depending only on n,
 * grain and the thread count); threads claim chunks as they become free. A chunk's result
 * must not depend on which thread runs it (tid is only for per-thread scratch), so results
 * are reproducible for a given kn_get_threads() whatever the timing. */
#ifndef KN_POOL_H
#define KN_POOL_H

#include <stdint.h>

/* The body of a parallel loop: handle indices [begin, end); tid in [0, nthreads). */
typedef void (*kn_range_fn)(void *ctx, int64_t begin, int64_t end, int tid);

/* Run fn over [0, n) split into up to 4·kn_get_threads() contiguous chunks; the calling
 * thread takes part and returns when all chunks are done. The pool is created
 * on first use and resized when the thread setting changes. Nested calls (from inside fn)
 * run serially in the calling thread. */
void kn_parallel_for(int64_t n, kn_range_fn fn, void *ctx);

/* Like kn_parallel_for, but chunk boundaries are multiples of `grain` (except n itself). */
void kn_parallel_for_grain(int64_t n, int64_t grain, kn_range_fn fn, void *ctx);

/* Threads the next kn_parallel_for will use (kn_get_threads(), at least 1). */
int kn_pool_threads(void);

/* Join and free the workers (e.g. before exit, or in tests); the next call recreates them. */
void kn_pool_shutdown(void);

/* Make OpenBLAS run single-threaded in the caller: kiln splits the work itself. Cheap when
 * nothing changes; call from the thread that dispatches, never from inside a worker. */
void kn_blas_single_thread(void);

#endif
