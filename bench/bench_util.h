/* bench_util.h — what the bench programs time with: seconds on a clock
 * (CLOCK_MONOTONIC for wall time; a process or thread CPU clock where a
 * shared machine's other loads should not count) and the median of a
 * sample. */
#ifndef TAPEGRAD_BENCH_UTIL_H
#define TAPEGRAD_BENCH_UTIL_H

#include <stdlib.h>
#include <time.h>

static inline double bench_seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* qsort's order of doubles */
static inline int bench_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0, n) (n >= 1), sorting v. */
static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], bench_cmp);
    return v[n / 2];
}

#endif
