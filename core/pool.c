/* pool.c — a persistent pthread pool with passive waiting. One job at a time: the caller
 * publishes (fn, ctx, n), bumps a generation counter and broadcasts; the last worker to
 * finish signals the caller. Static jobs give thread t exactly chunk t. Dynamic jobs cut
 * the range into more chunks (a function of n, grain and the thread count only) that
 * participants claim through an atomic counter, so when the second vCPU stalls the caller
 * simply takes more of them. */
#include "pool.h"
#include "kn.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    pthread_t *threads;
    int nworkers;          /* threads besides the caller */
    int started;           /* workers actually created */
    uint64_t gen;          /* bumped once per job */
    int pending;           /* workers that have not finished the current job */
    int stop;
    uint64_t start_gen;    /* gen when the workers were created: their first job is the next */
    /* the current job */
    kn_range_fn fn;
    void *ctx;
    int64_t n, grain;
    int nchunks;
    bool dynamic;
    atomic_int next;       /* next unclaimed chunk (dynamic jobs) */
} kn_pool;

/* Chunks per thread: enough slack to rebalance when a vCPU is slow, few enough that each
 * sgemm piece stays large. */
#define CHUNKS_PER_THREAD 4

static kn_pool pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .work_cv = PTHREAD_COND_INITIALIZER,
    .done_cv = PTHREAD_COND_INITIALIZER,
};
/* Serialises dispatchers: a second thread calling in while a job runs goes serial. */
static pthread_mutex_t dispatch_mu = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int in_pool;

static void chunk_bounds(int64_t n, int64_t grain, int nchunks, int t, int64_t *b, int64_t *e)
{
    int64_t units = (n + grain - 1) / grain;
    int64_t u0 = units * t / nchunks, u1 = units * (t + 1) / nchunks;
    *b = u0 * grain;
    *e = u1 * grain < n ? u1 * grain : n;
}

static void run_chunks(kn_range_fn fn, void *ctx, int64_t n, int64_t grain, int nchunks,
                       bool dynamic, int tid)
{
    if (!dynamic) {
        if (tid < nchunks) {
            int64_t b, e;
            chunk_bounds(n, grain, nchunks, tid, &b, &e);
            if (b < e) fn(ctx, b, e, tid);
        }
        return;
    }
    for (;;) {
        int c = atomic_fetch_add_explicit(&pool.next, 1, memory_order_relaxed);
        if (c >= nchunks) break;
        int64_t b, e;
        chunk_bounds(n, grain, nchunks, c, &b, &e);
        if (b < e) fn(ctx, b, e, tid);
    }
}

static void *worker_main(void *arg)
{
    int tid = (int)(intptr_t)arg;
    in_pool = 1;
    uint64_t seen = 0;
    pthread_mutex_lock(&pool.mu);
    seen = pool.start_gen;
    for (;;) {
        while (pool.gen == seen && !pool.stop) pthread_cond_wait(&pool.work_cv, &pool.mu);
        if (pool.stop) break;
        seen = pool.gen;
        kn_range_fn fn = pool.fn;
        void *ctx = pool.ctx;
        int64_t n = pool.n, grain = pool.grain;
        int nchunks = pool.nchunks;
        bool dynamic = pool.dynamic;
        pthread_mutex_unlock(&pool.mu);
        run_chunks(fn, ctx, n, grain, nchunks, dynamic, tid);
        pthread_mutex_lock(&pool.mu);
        if (--pool.pending == 0) pthread_cond_signal(&pool.done_cv);
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

static void pool_stop_locked_out(void)
{
    pthread_mutex_lock(&pool.mu);
    pool.stop = 1;
    pthread_cond_broadcast(&pool.work_cv);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 0; i < pool.started; i++) pthread_join(pool.threads[i], NULL);
    free(pool.threads);
    pool.threads = NULL;
    pool.nworkers = pool.started = 0;
    pool.stop = 0;
}

/* Make the pool have exactly nworkers threads; on failure it shrinks to what it got. */
static void pool_resize(int nworkers)
{
    if (nworkers == pool.nworkers) return;
    if (pool.started) pool_stop_locked_out();
    if (nworkers <= 0) return;
    pool.start_gen = pool.gen;
    pool.threads = calloc((size_t)nworkers, sizeof *pool.threads);
    if (!pool.threads) return;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 8u << 20);
    for (int i = 0; i < nworkers; i++) {
        if (pthread_create(&pool.threads[i], &attr, worker_main, (void *)(intptr_t)(i + 1)) != 0) break;
        pool.started++;
    }
    pthread_attr_destroy(&attr);
    pool.nworkers = pool.started;
}

int kn_pool_threads(void)
{
    int n = kn_get_threads();
    return n < 1 ? 1 : n;
}

static void dispatch(int64_t n, int64_t grain, kn_range_fn fn, void *ctx, bool dynamic)
{
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int nt = kn_pool_threads();
    int64_t units = (n + grain - 1) / grain, most = dynamic ? (int64_t)nt * CHUNKS_PER_THREAD : nt;
    int nchunks = units < most ? (int)units : (int)most;
    if (nt <= 1 || nchunks <= 1 || in_pool || pthread_mutex_trylock(&dispatch_mu) != 0) {
        fn(ctx, 0, n, 0);
        return;
    }
    pool_resize(nt - 1);
    if (pool.nworkers < nt - 1) {   /* thread creation failed: run alone */
        pthread_mutex_unlock(&dispatch_mu);
        fn(ctx, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&pool.mu);
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.grain = grain;
    pool.nchunks = nchunks;
    pool.dynamic = dynamic;
    atomic_store_explicit(&pool.next, 0, memory_order_relaxed);
    pool.pending = pool.nworkers;
    pool.gen++;
    pthread_cond_broadcast(&pool.work_cv);
    pthread_mutex_unlock(&pool.mu);

    in_pool = 1;
    run_chunks(fn, ctx, n, grain, nchunks, dynamic, 0);
    in_pool = 0;

    pthread_mutex_lock(&pool.mu);
    while (pool.pending > 0) pthread_cond_wait(&pool.done_cv, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&dispatch_mu);
}

void kn_parallel_for_grain(int64_t n, int64_t grain, kn_range_fn fn, void *ctx)
{
    dispatch(n, grain, fn, ctx, false);
}

void kn_parallel_for(int64_t n, kn_range_fn fn, void *ctx) { dispatch(n, 1, fn, ctx, false); }

void kn_parallel_for_dynamic(int64_t n, int64_t grain, kn_range_fn fn, void *ctx)
{
    dispatch(n, grain, fn, ctx, true);
}

void kn_pool_shutdown(void)
{
    pthread_mutex_lock(&dispatch_mu);
    if (pool.started) pool_stop_locked_out();
    pthread_mutex_unlock(&dispatch_mu);
}

void kn_blas_single_thread(void)
{
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}
