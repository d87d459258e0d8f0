/* gemm.c — C = alpha * op(A) * op(B) + beta * C, the product behind
 * ag_matmul and its backward.
 *
 * Dimension legend: C is M x N, op(A) M x K, op(B) K x N (row-major; see
 * kernels_internal.h).  Blocking, GotoBLAS/BLIS style:
 *   jc: nc columns of C      (a kc x nc panel of B, packed, lives in L3)
 *   pc: kc of the depth      (beta applies on the first pass only)
 *   ic: mc rows of C         (an mc x kc block of A, packed, lives in L2)
 *   jr, ir: nr x mr tiles    (the micro-kernel, gemm_ukernel.h)
 * Packing copies A and B into k-major panels, zero-padded to mr / nr, so
 * the micro-kernel streams both with unit stride and never branches on
 * edges; reading the transposed layouts happens there and only there.
 *
 * Threads: C is cut into one strip per thread (columns when N >= M, else
 * rows), whole micro-tiles each.  Each thread packs what its strip needs
 * into its own buffers, and every C element sees the same kc passes and
 * micro-kernel arithmetic whatever the split, so the result is
 * bit-identical for any thread count.
 *
 * On a machine busier than its cores (other processes runnable), the
 * thread that finishes first spins at the end of the parallel region
 * (libgomp's default OMP_WAIT_POLICY) while the other waits for a core:
 * measured on the shared 2-core box, 2 threads at n = 128 fell to 0.5
 * GFLOP/s, against 35 with OMP_WAIT_POLICY=passive or one thread.  Such
 * users want ag_set_num_threads(1) or that variable; nothing a library
 * can set after libgomp has started.
 *
 * Which backend runs by default (built-in or OpenBLAS), and the numbers
 * behind it: see use_blas().
 */
#include "kernels_internal.h"

#include "autograd_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef AG_HAVE_BLAS
#include <cblas.h>
#endif

/* Below this many multiply-adds a direct loop runs instead of packing.
 * Measured (Zen 4, f32, all layouts): packing pays from about 5^3 on;
 * 8^3 takes 0.22 us packed vs 0.56 us direct, 32^3 1.3 us vs 30 us, and
 * skinny products (64x784x1, 1x256x256) win 4-15x packed too. */
#define GEMM_SMALL_MACS 128.0
/* Below this a second thread costs more (wake-up, barrier, duplicated
 * packing) than it saves: on the 2-core Zen 4, best of 15, 96^3 took
 * 36 us on one thread and 35 on two, 192^3 282 vs 168 us. */
#define GEMM_PARALLEL_MACS (96.0 * 96 * 96)

/* One product, dtype-erased: alpha and beta travel as double (a float
 * round-trips exactly), pointers as bytes. */
typedef struct gemm_call {
    bool ta, tb, f64;
    int64_t M, N, K, lda, ldb, ldc;
    const unsigned char *A, *B;
    unsigned char *C;
    double alpha, beta;
} gemm_call;

/* Offset of element (r, c) of op(X) in X as stored. */
static inline int64_t off(bool trans, int64_t ld, int64_t r, int64_t c)
{
    return trans ? c * ld + r : r * ld + c;
}

static inline int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static inline int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* ---- code path and backend selection ---- */

static const ag_gemm_arch *const k_archs[] = {
#ifdef AG_GEMM_X86
    &ag_gemm_arch_avx512,
    &ag_gemm_arch_avx2,
#endif
    &ag_gemm_arch_generic,
};

static _Atomic(const ag_gemm_arch *) g_arch;
enum { MODE_DEFAULT, MODE_BUILTIN, MODE_BLAS };
static atomic_int g_mode;

static const ag_gemm_arch *best_arch(void)
{
    for (size_t i = 0; i < sizeof k_archs / sizeof k_archs[0]; i++)
        if (k_archs[i]->supported())
            return k_archs[i];
    return &ag_gemm_arch_generic;
}

static const ag_gemm_arch *cur_arch(void)
{
    const ag_gemm_arch *a = atomic_load_explicit(&g_arch, memory_order_acquire);
    if (!a) {
        /* racing first calls all store the same answer */
        a = best_arch();
        atomic_store_explicit(&g_arch, a, memory_order_release);
    }
    return a;
}

bool ag_gemm_set_arch(const char *name)
{
    if (!name) {
        atomic_store(&g_arch, best_arch());
        return true;
    }
    for (size_t i = 0; i < sizeof k_archs / sizeof k_archs[0]; i++) {
        if (strcmp(k_archs[i]->name, name) == 0) {
            if (!k_archs[i]->supported())
                return false;
            atomic_store(&g_arch, k_archs[i]);
            return true;
        }
    }
    return false;
}

void ag_gemm_force_builtin(bool on)
{
    atomic_store(&g_mode, on ? MODE_BUILTIN : MODE_DEFAULT);
}

bool ag_gemm_force_openblas(bool on)
{
#ifdef AG_HAVE_BLAS
    atomic_store(&g_mode, on ? MODE_BLAS : MODE_DEFAULT);
    return true;
#else
    return !on;
#endif
}

/* Whether large products go to OpenBLAS.
 *
 * Default: the built-in GEMM where its path was measured on par with
 * OpenBLAS, OpenBLAS (when built with it) everywhere else.  Measured on
 * the 2-core Zen 4 of issue 9 (AVX2 visible, AVX-512 not) against
 * OpenBLAS 0.3.21 (pthread):
 *   1 thread, bench/gemm medians of 7, built-in / OpenBLAS GFLOP/s:
 *     f32 NN n = 256 / 512 / 1024: 83.5/69.5  79.8/74.6  80.6/79.2
 *     f32 NT, TN n = 512: 85.0/80.0  78.6/70.4;  f64 n = 512: 39.7/37.4
 *   2 threads, quiet moments, best of 21, n = 256 / 512 / 1024:
 *     265 / 1732 / 15537 us vs OpenBLAS 331 / 2176 / 16840 us
 *   2 threads, two GEMMs + two OpenMP elementwise loops, n = 256 / 512:
 *     1.43 / 4.4 ms vs OpenBLAS 1.98 / 8.0 ms
 * The last row decides it: OpenBLAS keeps its own thread pool, which
 * spins against the OpenMP pool the other kernels use.  The built-in path
 * also gives the same bits for any thread count.  Against it: OpenBLAS
 * waits by yielding, so on a machine busier than its cores it does not
 * collapse the way libgomp's default spin does (see the top of the file).
 * The AVX-512 path has not been timed on hardware yet and the generic one
 * runs at ~0.3x, so those defer to OpenBLAS. */
static bool use_blas(void)
{
#ifdef AG_HAVE_BLAS
    int mode = atomic_load_explicit(&g_mode, memory_order_relaxed);
    if (mode != MODE_DEFAULT)
        return mode == MODE_BLAS;
#ifdef AG_GEMM_X86
    return cur_arch() != &ag_gemm_arch_avx2;
#else
    return true;
#endif
#else
    return false;
#endif
}

const char *ag_gemm_backend(void)
{
    return use_blas() ? "openblas" : cur_arch()->backend;
}

/* ---- per-thread pack buffers ----
 * Allocated on a thread's first large product and grown, never shrunk, so
 * a training loop allocates nothing after its first step.  Each thread's
 * pair is on a list so ag_gemm_release_buffers can free all of them, and
 * a thread's exit frees its own (pthread key destructor). */

typedef struct gemm_ws {
    void *a, *b;
    size_t a_cap, b_cap;
    bool listed;
    struct gemm_ws *next;
} gemm_ws;

static _Thread_local gemm_ws t_ws;
static gemm_ws *g_ws_list;
static pthread_mutex_t g_ws_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t g_ws_key;
static pthread_once_t g_ws_once = PTHREAD_ONCE_INIT;
static bool g_ws_key_ok;

static void ws_drop(gemm_ws *w)
{
    ag_mem_free(w->a);
    ag_mem_free(w->b);
    w->a = w->b = NULL;
    w->a_cap = w->b_cap = 0;
}

static void ws_thread_exit(void *p)
{
    gemm_ws *w = p;
    pthread_mutex_lock(&g_ws_lock);
    for (gemm_ws **it = &g_ws_list; *it; it = &(*it)->next) {
        if (*it == w) {
            *it = w->next;
            break;
        }
    }
    pthread_mutex_unlock(&g_ws_lock);
    ws_drop(w);
    w->listed = false;
}

static void ws_key_init(void)
{
    g_ws_key_ok = pthread_key_create(&g_ws_key, ws_thread_exit) == 0;
}

void ag_gemm_release_buffers(void)
{
    pthread_mutex_lock(&g_ws_lock);
    for (gemm_ws *w = g_ws_list; w; w = w->next)
        ws_drop(w);
    pthread_mutex_unlock(&g_ws_lock);
}

static bool ws_grow(void **p, size_t *cap, size_t need)
{
    if (*cap >= need)
        return true;
    ag_mem_free(*p);
    *p = ag_mem_alloc(need);
    *cap = *p ? need : 0;
    return *p != NULL;
}

/* This thread's buffers with room for a_bytes and b_bytes, or NULL. */
static gemm_ws *ws_get(size_t a_bytes, size_t b_bytes)
{
    gemm_ws *w = &t_ws;
    if (!w->listed) {
        pthread_once(&g_ws_once, ws_key_init);
        pthread_mutex_lock(&g_ws_lock);
        w->next = g_ws_list;
        g_ws_list = w;
        pthread_mutex_unlock(&g_ws_lock);
        w->listed = true;
        if (g_ws_key_ok)
            pthread_setspecific(g_ws_key, w);
    }
    if (!ws_grow(&w->a, &w->a_cap, a_bytes) || !ws_grow(&w->b, &w->b_cap, b_bytes))
        return NULL;
    return w;
}

/* ---- the direct loop: tiny products, and the fallback without memory ---- */

static void direct_f32(const gemm_call *g)
{
    const float *A = (const float *)g->A, *B = (const float *)g->B;
    float *C = (float *)g->C;
    float alpha = (float)g->alpha, beta = (float)g->beta;
    for (int64_t i = 0; i < g->M; i++) {
        for (int64_t j = 0; j < g->N; j++) {
            float s = 0;
            for (int64_t p = 0; p < g->K; p++)
                s += A[off(g->ta, g->lda, i, p)] * B[off(g->tb, g->ldb, p, j)];
            float *c = &C[i * g->ldc + j];
            *c = beta == 0 ? alpha * s : alpha * s + beta * *c;
        }
    }
}

static void direct_f64(const gemm_call *g)
{
    const double *A = (const double *)g->A, *B = (const double *)g->B;
    double *C = (double *)g->C;
    double alpha = g->alpha, beta = g->beta;
    for (int64_t i = 0; i < g->M; i++) {
        for (int64_t j = 0; j < g->N; j++) {
            double s = 0;
            for (int64_t p = 0; p < g->K; p++)
                s += A[off(g->ta, g->lda, i, p)] * B[off(g->tb, g->ldb, p, j)];
            double *c = &C[i * g->ldc + j];
            *c = beta == 0 ? alpha * s : alpha * s + beta * *c;
        }
    }
}

static void direct(const gemm_call *g)
{
    if (g->f64)
        direct_f64(g);
    else
        direct_f32(g);
}

/* ---- the blocked product ---- */

/* Depth of each pass: K cut into equal passes of at most bk->kc, so a
 * K just above kc does not end with a sliver pass.  Depends on K only,
 * which keeps results independent of the thread split. */
static int64_t pass_depth(int64_t K, int64_t kc)
{
    return ceil_div(K, ceil_div(K, kc));
}

static void pack(const gemm_call *g, const ag_gemm_arch *arch, const void *src,
                 int64_t ld, bool along, int64_t rows, int64_t kb, int R,
                 void *dst)
{
    if (g->f64)
        arch->dpack(src, ld, along, rows, kb, R, dst);
    else
        arch->spack(src, ld, along, rows, kb, R, dst);
}

/* Every mr x nr tile of an mb x nb block of C from packed Ap and Bp. */
static void macro_tile(const gemm_call *g, const ag_gemm_arch *arch,
                       const ag_gemm_blocking *bk, int64_t kb, int64_t mb,
                       int64_t nb, const unsigned char *Ap,
                       const unsigned char *Bp, unsigned char *C, double beta)
{
    size_t esz = g->f64 ? sizeof(double) : sizeof(float);
    for (int64_t jr = 0; jr < nb; jr += bk->nr) {
        int n = (int)min64(bk->nr, nb - jr);
        const unsigned char *b = Bp + (size_t)(jr * kb) * esz;
        for (int64_t ir = 0; ir < mb; ir += bk->mr) {
            int m = (int)min64(bk->mr, mb - ir);
            const unsigned char *a = Ap + (size_t)(ir * kb) * esz;
            unsigned char *c = C + (size_t)(ir * g->ldc + jr) * esz;
            if (g->f64)
                arch->dukr(kb, (const double *)a, (const double *)b, (double *)c,
                           g->ldc, g->alpha, beta, m, n);
            else
                arch->sukr(kb, (const float *)a, (const float *)b, (float *)c,
                           g->ldc, (float)g->alpha, (float)beta, m, n);
        }
    }
}

/* The whole of g (itself possibly one thread's strip of a larger C). */
static void blocked(const gemm_call *g, const ag_gemm_arch *arch)
{
    const ag_gemm_blocking *bk = g->f64 ? &arch->d : &arch->s;
    size_t esz = g->f64 ? sizeof(double) : sizeof(float);
    int64_t kc = pass_depth(g->K, bk->kc);
    int64_t mc = min64(bk->mc, ceil_div(g->M, bk->mr) * bk->mr);
    int64_t nc = min64(bk->nc, ceil_div(g->N, bk->nr) * bk->nr);
    gemm_ws *w = ws_get((size_t)(mc * kc) * esz, (size_t)(kc * nc) * esz);
    if (!w) {
        direct(g);
        return;
    }
    for (int64_t jc = 0; jc < g->N; jc += nc) {
        int64_t nb = min64(nc, g->N - jc);
        for (int64_t pc = 0; pc < g->K; pc += kc) {
            int64_t kb = min64(kc, g->K - pc);
            const void *bsrc = g->B + (size_t)off(g->tb, g->ldb, pc, jc) * esz;
            pack(g, arch, bsrc, g->ldb, !g->tb, nb, kb, bk->nr, w->b);
            double beta = pc == 0 ? g->beta : 1.0;
            for (int64_t ic = 0; ic < g->M; ic += mc) {
                int64_t mb = min64(mc, g->M - ic);
                const void *asrc = g->A + (size_t)off(g->ta, g->lda, ic, pc) * esz;
                pack(g, arch, asrc, g->lda, g->ta, mb, kb, bk->mr, w->a);
                macro_tile(g, arch, bk, kb, mb, nb, w->a, w->b,
                           g->C + (size_t)(ic * g->ldc + jc) * esz, beta);
            }
        }
    }
}

#ifdef _OPENMP
/* Strip t of nt: whole micro-tiles of columns (N >= M) or rows. */
static bool strip(const gemm_call *g, const ag_gemm_blocking *bk, int t,
                  int nt, gemm_call *s)
{
    size_t esz = g->f64 ? sizeof(double) : sizeof(float);
    bool by_cols = g->N >= g->M;
    int64_t len = by_cols ? g->N : g->M, unit = by_cols ? bk->nr : bk->mr;
    int64_t chunk = ceil_div(ceil_div(len, unit), nt) * unit;
    int64_t lo = t * chunk, n = min64(chunk, len - lo);
    if (n <= 0)
        return false;
    *s = *g;
    if (by_cols) {
        s->N = n;
        s->B += (size_t)off(g->tb, g->ldb, 0, lo) * esz;
        s->C += (size_t)lo * esz;
    } else {
        s->M = n;
        s->A += (size_t)off(g->ta, g->lda, lo, 0) * esz;
        s->C += (size_t)(lo * g->ldc) * esz;
    }
    return true;
}

static void builtin(const gemm_call *g, double macs)
{
    const ag_gemm_arch *arch = cur_arch();
    /* inside the caller's parallel region the cores are already busy */
    if (macs < GEMM_PARALLEL_MACS || omp_in_parallel() || ag_get_num_threads() <= 1) {
        blocked(g, arch);
        return;
    }
    const ag_gemm_blocking *bk = g->f64 ? &arch->d : &arch->s;
#pragma omp parallel num_threads(ag_get_num_threads())
    {
        gemm_call s;
        if (strip(g, bk, omp_get_thread_num(), omp_get_num_threads(), &s))
            blocked(&s, arch);
    }
}
#else
static void builtin(const gemm_call *g, double macs)
{
    (void)macs;
    blocked(g, cur_arch());
}
#endif

/* ---- entry points ---- */

/* C = beta * C, for products that read neither A nor B. */
static void scale_c(const gemm_call *g)
{
    for (int64_t i = 0; i < g->M; i++) {
        if (g->f64) {
            double *c = (double *)g->C + i * g->ldc;
            for (int64_t j = 0; j < g->N; j++)
                c[j] = g->beta == 0 ? 0.0 : g->beta * c[j];
        } else {
            float *c = (float *)g->C + i * g->ldc;
            float beta = (float)g->beta;
            for (int64_t j = 0; j < g->N; j++)
                c[j] = beta == 0 ? 0.0f : beta * c[j];
        }
    }
}

#ifdef AG_HAVE_BLAS
static void blas(const gemm_call *g)
{
    enum CBLAS_TRANSPOSE ta = g->ta ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = g->tb ? CblasTrans : CblasNoTrans;
    /* cblas takes int (blasint) sizes; all fit, checked by the caller */
    if (g->f64)
        cblas_dgemm(CblasRowMajor, ta, tb, (blasint)g->M, (blasint)g->N,
                    (blasint)g->K, g->alpha, (const double *)g->A, (blasint)g->lda,
                    (const double *)g->B, (blasint)g->ldb, g->beta,
                    (double *)g->C, (blasint)g->ldc);
    else
        cblas_sgemm(CblasRowMajor, ta, tb, (blasint)g->M, (blasint)g->N,
                    (blasint)g->K, (float)g->alpha, (const float *)g->A,
                    (blasint)g->lda, (const float *)g->B, (blasint)g->ldb,
                    (float)g->beta, (float *)g->C, (blasint)g->ldc);
}

static bool blas_fits(const gemm_call *g)
{
    int64_t lim = INT32_MAX;
    return g->M <= lim && g->N <= lim && g->K <= lim && g->lda <= lim &&
           g->ldb <= lim && g->ldc <= lim;
}
#endif

static void gemm(const gemm_call *g)
{
    if (g->M <= 0 || g->N <= 0)
        return;
    if (g->K <= 0 || g->alpha == 0) {
        scale_c(g);
        return;
    }
    double macs = (double)g->M * (double)g->N * (double)g->K;
    if (macs < GEMM_SMALL_MACS) {
        direct(g);
        return;
    }
#ifdef AG_HAVE_BLAS
    if (use_blas() && blas_fits(g)) {
        blas(g);
        return;
    }
#endif
    builtin(g, macs);
}

void ag_gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                 float alpha, const float *A, int64_t lda, const float *B,
                 int64_t ldb, float beta, float *C, int64_t ldc)
{
    gemm_call g = {trans_a, trans_b, false, M, N, K, lda, ldb, ldc,
                   (const unsigned char *)A, (const unsigned char *)B,
                   (unsigned char *)C, alpha, beta};
    gemm(&g);
}

void ag_gemm_f64(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                 double alpha, const double *A, int64_t lda, const double *B,
                 int64_t ldb, double beta, double *C, int64_t ldc)
{
    gemm_call g = {trans_a, trans_b, true, M, N, K, lda, ldb, ldc,
                   (const unsigned char *)A, (const unsigned char *)B,
                   (unsigned char *)C, alpha, beta};
    gemm(&g);
}
