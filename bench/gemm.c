/* bench/gemm.c — GFLOP/s of tapegrad's built-in GEMM next to OpenBLAS
 * (cblas, when the build found it) and the core's FMA peak, for square
 * n x n x n products.  Never fails on a timing.
 *
 *   bench_gemm [threads] [repeats] [mlp [batch]]   defaults: 1 thread, 7 repeats
 *
 * With "mlp", instead of the squares: the eight products of one training
 * step of bench_mlp's 784-256-128-10 MLP at batch 128 (or `batch`: 128 is
 * what each of two MPI ranks takes of the trainer's 256; nn_linear's
 * forward x w^T, its dx = dy w and dw += dy^T x), each with its
 * GFLOP/s, and their total microseconds per step.
 *
 * Each number is the median of `repeats` timed runs; a run repeats the
 * product until it has taken >= 20 ms.  Ratios: builtin / openblas and
 * builtin / peak.  With one thread the clock is the thread's CPU time, so
 * neighbours on a shared machine do not count (their cache pollution
 * still does); with more, wall time. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "autograd.h"
#include "kernels/kernels_internal.h"

#ifdef AG_HAVE_BLAS
#include <cblas.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

static clockid_t g_clock = CLOCK_MONOTONIC;

static double now(void) { return bench_seconds(g_clock); }

/* ---- FMA peak: 12 independent chains, registers only ---- */

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"), noinline)) static float fma_loop(int64_t iters)
{
    __m256 acc[12], x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++)
        acc[i] = _mm256_set1_ps((float)i);
    for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++)
            acc[i] = _mm256_fmadd_ps(acc[i], x, y);
    }
    __m256 s = acc[0];
    for (int i = 1; i < 12; i++)
        s = _mm256_add_ps(s, acc[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0];
}

/* f32 GFLOP/s of one core (AVX2 FMA; Zen 4 runs AVX-512 at the same rate) */
static double fma_peak(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return 0;
    double t[7];
    volatile float sink = 0;
    int64_t iters = 50 * 1000 * 1000;
    for (int r = 0; r < 7; r++) {
        double t0 = now();
        sink += fma_loop(iters);
        t[r] = now() - t0;
    }
    (void)sink;
    qsort(t, 7, sizeof t[0], bench_cmp);
    return (double)iters * 12 * 8 * 2 / t[3] * 1e-9;
}
#else
static double fma_peak(void)
{
    return 0;
}
#endif

/* ---- one product, timed ---- */

typedef enum backend { BUILTIN, OPENBLAS } backend;

/* C (M x N) = beta C + op(A) op(B), operands stored densely */
typedef struct prod {
    bool f64, ta, tb;
    int64_t M, N, K;
    double beta;
    void *A, *B, *C;
} prod;

static void run(const prod *p, backend be)
{
    int64_t M = p->M, N = p->N, K = p->K;
    int64_t lda = p->ta ? M : K, ldb = p->tb ? K : N;
#ifdef AG_HAVE_BLAS
    if (be == OPENBLAS) {
        enum CBLAS_TRANSPOSE ta = p->ta ? CblasTrans : CblasNoTrans;
        enum CBLAS_TRANSPOSE tb = p->tb ? CblasTrans : CblasNoTrans;
        if (p->f64)
            cblas_dgemm(CblasRowMajor, ta, tb, (blasint)M, (blasint)N, (blasint)K, 1.0,
                        p->A, (blasint)lda, p->B, (blasint)ldb, p->beta, p->C, (blasint)N);
        else
            cblas_sgemm(CblasRowMajor, ta, tb, (blasint)M, (blasint)N, (blasint)K, 1.0f,
                        p->A, (blasint)lda, p->B, (blasint)ldb, (float)p->beta, p->C,
                        (blasint)N);
        return;
    }
#endif
    (void)be;
    if (p->f64)
        ag_gemm_f64(p->ta, p->tb, M, N, K, 1.0, p->A, lda, p->B, ldb, p->beta, p->C, N);
    else
        ag_gemm_f32(p->ta, p->tb, M, N, K, 1.0f, p->A, lda, p->B, ldb, (float)p->beta, p->C,
                    N);
}

static double flop_of(const prod *p)
{
    return 2.0 * (double)p->M * (double)p->N * (double)p->K;
}

/* One timed run: repeats the product for >= 20 ms; GFLOP/s. */
static double timed(const prod *p, backend be)
{
    double flop = flop_of(p);
    int calls = 0;
    double t0 = now(), t;
    do {
        run(p, be);
        calls++;
    } while ((t = now() - t0) < 0.02);
    return flop * calls / t * 1e-9;
}

/* Lets the other backend's idle threads stop spinning and park
 * (OpenBLAS spins ~0.1 s after a call, OpenMP a little). */
static void settle(void)
{
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

/* Medians of `repeats` runs of each backend.  One thread: taken in turns
 * so both see the same machine.  More: one backend after the other with a
 * pause between, since in turns each pool's spinning threads would steal
 * the cores of the other (a real cost of mixing pools, but not the one
 * measured here). */
static void gflops(const prod *p, int repeats, bool blas, double *bi, double *ob)
{
    double *rb = malloc(2 * (size_t)repeats * sizeof *rb), *ro = rb + repeats;
    *bi = *ob = 0;
    if (!rb)
        return;
    bool turns = ag_get_num_threads() == 1;
    ag_gemm_force_builtin(true);
    run(p, BUILTIN); /* warm-up: pack buffers, thread pools, page faults */
    for (int r = 0; r < repeats; r++) {
        rb[r] = timed(p, BUILTIN);
        ro[r] = blas && turns ? timed(p, OPENBLAS) : 0;
    }
    if (blas && !turns) {
        settle();
        run(p, OPENBLAS);
        for (int r = 0; r < repeats; r++)
            ro[r] = timed(p, OPENBLAS);
        settle();
    }
    ag_gemm_force_builtin(false);
    qsort(rb, (size_t)repeats, sizeof *rb, bench_cmp);
    qsort(ro, (size_t)repeats, sizeof *ro, bench_cmp);
    *bi = rb[repeats / 2];
    *ob = ro[repeats / 2];
    free(rb);
}

static void *random_matrix(int64_t rows, int64_t cols, bool f64)
{
    size_t cnt = (size_t)(rows * cols);
    void *p = malloc(cnt * (f64 ? sizeof(double) : sizeof(float)));
    if (!p) {
        fprintf(stderr, "bench_gemm: out of memory\n");
        exit(1);
    }
    uint64_t s = 12345;
    for (size_t i = 0; i < cnt; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double v = (double)(s >> 11) / (double)(1ULL << 53) - 0.5;
        if (f64)
            ((double *)p)[i] = v;
        else
            ((float *)p)[i] = (float)v;
    }
    return p;
}

/* One table row: the label, the size (n, or M x N x K), GFLOP/s of both
 * backends, their ratio and the built-in's share of the peak; returns the
 * built-in's seconds per product. */
static double row(const char *label, prod *p, int repeats, double peak)
{
#ifdef AG_HAVE_BLAS
    bool blas = true;
#else
    bool blas = false;
#endif
    double b, o;
    gflops(p, repeats, blas, &b, &o);
    char size[48];
    if (p->M == p->N && p->N == p->K)
        snprintf(size, sizeof size, "%lld", (long long)p->M);
    else
        snprintf(size, sizeof size, "%lldx%lldx%lld", (long long)p->M, (long long)p->N,
                 (long long)p->K);
    printf("%-8s %13s  %8.1f", label, size, b);
    if (blas)
        printf("  %8.1f  %6.2f", o, o > 0 ? b / o : 0);
    else
        printf("  %8s  %6s", "-", "-");
    /* f64 peak is half the f32 one */
    if (peak > 0)
        printf("  %5.0f%%", 100 * b / (p->f64 ? peak / 2 : peak));
    printf("\n");
    fflush(stdout);
    return b > 0 ? flop_of(p) / b * 1e-9 : 0;
}

static void alloc_operands(prod *p)
{
    p->A = random_matrix(p->M, p->K, p->f64);
    p->B = random_matrix(p->K, p->N, p->f64);
    p->C = random_matrix(p->M, p->N, p->f64);
}

static void free_operands(prod *p)
{
    free(p->A);
    free(p->B);
    free(p->C);
}

static void bench_dtype(bool f64, int repeats, double peak)
{
    static const int64_t sizes[] = {64, 128, 256, 512, 1024, 2048};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int64_t n = sizes[i];
        prod p = {.f64 = f64, .M = n, .N = n, .K = n};
        alloc_operands(&p);
        row(f64 ? "f64 NN" : "f32 NN", &p, repeats, peak);
        if (n == 512) { /* the two backward layouts of matmul */
            p.tb = true;
            row(f64 ? "f64 NT" : "f32 NT", &p, repeats, peak);
            p.tb = false;
            p.ta = true;
            row(f64 ? "f64 TN" : "f32 TN", &p, repeats, peak);
        }
        free_operands(&p);
    }
}

/* The products of one bench_mlp step, as ops_linalg.c's linear issues
 * them: forward NT (beta 0), dx NN and dw TN accumulating (beta 1); the
 * first layer's dx is not needed. */
static void bench_mlp_step(int repeats, double peak, int64_t B)
{
    static const struct {
        const char *label;
        bool ta, tb;
        int64_t M, N, K;
        double beta;
    } step[] = {
        {"fc1 y", false, true, 128, 256, 784, 0}, {"fc2 y", false, true, 128, 128, 256, 0},
        {"fc3 y", false, true, 128, 10, 128, 0},  {"fc3 dx", false, false, 128, 128, 10, 1},
        {"fc3 dw", true, false, 10, 128, 128, 1}, {"fc2 dx", false, false, 128, 256, 128, 1},
        {"fc2 dw", true, false, 128, 256, 128, 1}, {"fc1 dw", true, false, 256, 784, 128, 1},
    };
    double total = 0;
    for (size_t i = 0; i < sizeof step / sizeof step[0]; i++) {
        /* the batch is M of the forward and dx products, K of dw's */
        prod p = {.ta = step[i].ta, .tb = step[i].tb, .M = step[i].M, .N = step[i].N,
                  .K = step[i].K, .beta = step[i].beta};
        if (step[i].ta)
            p.K = B;
        else
            p.M = B;
        alloc_operands(&p);
        total += row(step[i].label, &p, repeats, peak);
        free_operands(&p);
    }
    printf("built-in total: %.1f us per step of %lld rows, %.3f s per 60000-row epoch\n",
           total * 1e6, (long long)B, total * 60000.0 / (double)B);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    int repeats = argc > 2 ? atoi(argv[2]) : 7;
    if (repeats < 1)
        repeats = 1;
    ag_set_num_threads(threads); /* also sizes OpenBLAS's pool */
    if (ag_get_num_threads() == 1)
        g_clock = CLOCK_THREAD_CPUTIME_ID;
    const char *dflt = ag_gemm_backend();
    ag_gemm_force_builtin(true);
    printf("# gemm: builtin = %s, default backend = %s, threads = %d, median of %d, %s\n",
           ag_gemm_backend(), dflt, ag_get_num_threads(), repeats,
           g_clock == CLOCK_MONOTONIC ? "wall time" : "thread CPU time");
    ag_gemm_force_builtin(false);
    double peak = fma_peak() * ag_get_num_threads();
    printf("# FMA peak (f32, %d thread%s): %.1f GFLOP/s\n",
           ag_get_num_threads(), ag_get_num_threads() == 1 ? "" : "s", peak);
    printf("%-8s %13s  %8s  %8s  %6s  %6s\n", "case", "n", "builtin", "openblas",
           "ratio", "%peak");
    if (argc > 3 && strcmp(argv[3], "mlp") == 0) {
        bench_mlp_step(repeats, peak, argc > 4 ? atoll(argv[4]) : 128);
        return 0;
    }
    bench_dtype(false, repeats, peak);
    bench_dtype(true, repeats, peak);
    return 0;
}
