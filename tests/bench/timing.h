/* timing.h — the clocks and the median the benchmark programs share (header-only: each
 * benchmark is one C file linked against libkiln). */
#ifndef KILN_BENCH_TIMING_H
#define KILN_BENCH_TIMING_H

#include <stdlib.h>
#include <time.h>

static inline double clock_seconds(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wall-clock seconds, and this process's CPU seconds (all threads): at 1 thread the second
 * leaves out the time a busy host takes the core away. */
static inline double now(void) { return clock_seconds(CLOCK_MONOTONIC); }
static inline double cpu_now(void) { return clock_seconds(CLOCK_PROCESS_CPUTIME_ID); }

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts x in place. */
static inline double median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

#endif
