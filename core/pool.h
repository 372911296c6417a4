/* pool.h — kiln's one worker pool: persistent pthreads that sleep on a condition variable
 * between jobs (no spinning: on 2 vCPUs a spinning pool starves OpenBLAS and vice versa).
 * Static jobs give thread t exactly chunk t, so per-thread partial results can be combined
 * in thread order. Dynamic jobs cut the range into more chunks (boundaries depend only on
 * n, grain and the thread count) that threads claim as they become free; a chunk's result
 * must then not depend on which thread runs it (tid only picks per-thread scratch). Either
 * way results are reproducible for a given kn_get_threads(), whatever the timing. */
#ifndef KN_POOL_H
#define KN_POOL_H

#include <stdint.h>

/* The body of a parallel loop: handle indices [begin, end); tid in [0, nthreads). */
typedef void (*kn_range_fn)(void *ctx, int64_t begin, int64_t end, int tid);

/* Run fn over [0, n) split into kn_get_threads() contiguous chunks (fewer if n is small):
 * chunk t runs on thread t (the caller is thread 0), once; returns when all are done. The
 * pool is created on first use and resized when the thread setting changes. Nested calls
 * (from inside fn) and calls from a second thread while a job runs run serially, as one
 * chunk [0, n) with tid 0. */
void kn_parallel_for(int64_t n, kn_range_fn fn, void *ctx);

/* Like kn_parallel_for, but chunk boundaries are multiples of `grain` (except n itself). */
void kn_parallel_for_grain(int64_t n, int64_t grain, kn_range_fn fn, void *ctx);

/* Up to 4·kn_get_threads() chunks (multiples of grain), claimed dynamically: fn may run
 * several times per thread. For work whose chunks are independent of the thread. */
void kn_parallel_for_dynamic(int64_t n, int64_t grain, kn_range_fn fn, void *ctx);

/* Threads the next kn_parallel_for will use (kn_get_threads(), at least 1). */
int kn_pool_threads(void);

/* Join and free the workers (e.g. before exit, or in tests); the next call recreates them. */
void kn_pool_shutdown(void);

/* Make OpenBLAS run single-threaded in the caller: kiln splits the work itself. Cheap when
 * nothing changes; call from the thread that dispatches, never from inside a worker. */
void kn_blas_single_thread(void);

#endif
