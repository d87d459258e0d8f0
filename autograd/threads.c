/* threads.c — one thread count for every pool tapegrad drives: its own
 * OpenMP regions (passed as num_threads, so the caller's omp settings are
 * left alone) and OpenBLAS's pool, so the two never oversubscribe. */
#include "autograd_internal.h"

#include <stdatomic.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef AG_HAVE_BLAS
#include <cblas.h>
#endif

static atomic_int g_threads; /* 0: not set yet */

static int default_threads(void)
{
#ifdef _OPENMP
    int n = omp_get_num_procs();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#endif
    return n > 0 ? (int)n : 1;
}

void ag_set_num_threads(int n)
{
    if (n <= 0)
        n = default_threads();
    atomic_store(&g_threads, n);
#ifdef AG_HAVE_BLAS
    openblas_set_num_threads(n);
#endif
}

int ag_get_num_threads(void)
{
    int n = atomic_load_explicit(&g_threads, memory_order_relaxed);
    if (n == 0) {
        /* first use: adopt the default for OpenBLAS too, which otherwise
         * sizes its pool from its own environment variables */
        ag_set_num_threads(0);
        n = atomic_load_explicit(&g_threads, memory_order_relaxed);
    }
    return n;
}
