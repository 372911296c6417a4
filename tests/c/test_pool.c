/* test_pool.c — the worker pool's contracts: static jobs run chunk t on thread t exactly
 * once, dynamic jobs cover every index exactly once, nesting runs serially, the pool
 * follows the thread setting and survives shutdown. */
#include "kn.h"
#include "pool.h"
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>

enum { N = 100003, MAXT = 8 };

static atomic_int hits[N];
static atomic_int calls_by_tid[MAXT];
static int64_t first_begin[MAXT], last_end[MAXT];
static pthread_t thread_of[MAXT];
static atomic_int bad;

static void mark(void *ctx, int64_t b, int64_t e, int tid)
{
    if (tid < 0 || tid >= MAXT) { atomic_fetch_add(&bad, 1); return; }
    atomic_fetch_add(&calls_by_tid[tid], 1);
    first_begin[tid] = b;
    last_end[tid] = e;
    thread_of[tid] = pthread_self();
    for (int64_t i = b; i < e; i++) atomic_fetch_add(&hits[i], 1);
}

static void reset(void)
{
    for (int i = 0; i < N; i++) atomic_store(&hits[i], 0);
    for (int t = 0; t < MAXT; t++) { atomic_store(&calls_by_tid[t], 0); first_begin[t] = last_end[t] = -1; }
    atomic_store(&bad, 0);
}

static int all_once(int64_t n)
{
    for (int64_t i = 0; i < n; i++) if (atomic_load(&hits[i]) != 1) return 0;
    for (int64_t i = n; i < N; i++) if (atomic_load(&hits[i]) != 0) return 0;
    return atomic_load(&bad) == 0;
}

static atomic_int nested_ok;
static void outer(void *ctx, int64_t b, int64_t e, int tid)
{
    /* a nested call runs serially in this thread */
    kn_parallel_for(10, mark, NULL);
    atomic_fetch_add(&nested_ok, 1);
}

int main(void)
{
    kn_set_threads(2);
    CHECK(kn_pool_threads() == 2, "pool follows kn_set_threads (2)");
    reset();
    kn_parallel_for_grain(N, 64, mark, NULL);
    CHECK(all_once(N), "static: every index exactly once");
    CHECK(calls_by_tid[0] == 1 && calls_by_tid[1] == 1 && first_begin[0] == 0 && last_end[1] == N &&
          last_end[0] == first_begin[1] && last_end[0] % 64 == 0,
          "static: chunk t on thread t, once each, contiguous, grain-aligned (split at %lld)", (long long)last_end[0]);
    CHECK(pthread_equal(thread_of[0], pthread_self()), "static: the caller runs chunk 0");

    reset();
    kn_parallel_for_dynamic(N, 100, mark, NULL);
    CHECK(all_once(N), "dynamic: every index exactly once");
    CHECK(calls_by_tid[0] + calls_by_tid[1] == 8 && calls_by_tid[2] == 0, "dynamic: 4 chunks per thread (%d + %d)",
          (int)calls_by_tid[0], (int)calls_by_tid[1]);

    reset();
    kn_parallel_for(1, mark, NULL);
    CHECK(all_once(1) && calls_by_tid[0] == 1 && calls_by_tid[1] == 0, "n = 1 runs once in the caller");
    reset();
    kn_parallel_for(0, mark, NULL);
    CHECK(all_once(0) && calls_by_tid[0] == 0, "n = 0 runs nothing");

    reset();
    atomic_store(&nested_ok, 0);
    kn_parallel_for(2, outer, NULL);
    int h = 0;
    for (int i = 0; i < 10; i++) h += atomic_load(&hits[i]);
    CHECK(nested_ok == 2 && h == 20, "nested calls run serially inside the workers (no deadlock)");

    kn_set_threads(3);
    reset();
    kn_parallel_for(N, mark, NULL);
    CHECK(all_once(N) && calls_by_tid[0] == 1 && calls_by_tid[1] == 1 && calls_by_tid[2] == 1,
          "resized to 3 threads: three static chunks");
    kn_set_threads(1);
    reset();
    kn_parallel_for(N, mark, NULL);
    CHECK(all_once(N) && calls_by_tid[0] == 1 && calls_by_tid[1] == 0, "1 thread: one chunk, in the caller");
    kn_set_threads(2);
    kn_pool_shutdown();
    reset();
    for (int rep = 0; rep < 2000; rep++) kn_parallel_for(N / 100, mark, NULL);
    int ok = 1;
    for (int i = 0; i < N / 100; i++) ok &= hits[i] == 2000;
    CHECK(ok, "recreated after shutdown; 2000 back-to-back jobs lose no work");
    kn_pool_shutdown();
    CHECK_DONE();
}
