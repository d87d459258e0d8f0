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
 * Except: an untransposed f32 A, whose pack is a transpose, is read in
 * place by a kernel variant (broadcasts from mr rows; whole tiles only),
 * on the AVX-512 and AVX2 paths: same arithmetic, same bits.  In a GPT
 * step those packs of activations and output gradients, memory-bound,
 * were 5% of the time; without them the step took ~2% less (noisy pairs
 * on the 2-core Zen 4, GEMMs cache-hot up to 8% faster: 768x128x512 NT,
 * 910 vs 994 us).  On the 2-core Zen 3 (AVX2), `bench_gemm T 5 mlp`
 * taken in turns 8 times, best run each, the MLP's 128x256x784 NT: one
 * thread 79.9 vs 80.0 GFLOP/s packed (a wash), two threads 144.3 vs 119.7
 * (cut by columns, both strips packed all of A before).
 *
 * Threads: C is cut into one strip per thread (columns when N >= M, else
 * rows), whole micro-tiles each, run on tapegrad's thread pool
 * (threads.c).  Each thread packs what its strip needs into its own
 * buffers, and every C element sees the same kc passes and micro-kernel
 * arithmetic whatever the split, so the result is bit-identical for any
 * thread count.  Strips are claimed, not assigned: on a machine busier
 * than its cores a descheduled thread's strip is run by the caller
 * instead of waited for (with OpenMP's spinning barrier, 2 threads at
 * n = 128 fell to 0.5 GFLOP/s next to one busy process, against 35 on
 * one thread), and the pool falls back to one thread while its threads
 * bring no gain.
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
 * spins against the pool the other kernels use.  The built-in path also
 * gives the same bits for any thread count.
 * The AVX-512 path, timed on the same box once it showed AVX-512 (issue
 * 16: bench/gemm, 1 thread, median of 5 in thread CPU time, load ~4),
 * built-in / OpenBLAS GFLOP/s: f32 NN n = 128 / 256 / 512 / 1024:
 * 98.5/95.7  91.6/95.0  95.3/95.9  93.8/95.0; NT, TN 512: 101.3/99.4
 * 97.1/96.5; f64 NN 512: 47.6/47.3 — on par, so it runs built-in too.
 * The generic path runs at ~0.3x and defers to OpenBLAS (one thread per
 * strip: ag_set_num_threads keeps OpenBLAS's own pool at one thread). */
static bool use_blas(void)
{
#ifdef AG_HAVE_BLAS
    int mode = atomic_load_explicit(&g_mode, memory_order_relaxed);
    if (mode != MODE_DEFAULT)
        return mode == MODE_BLAS;
#ifdef AG_GEMM_X86
    return cur_arch() != &ag_gemm_arch_avx2 && cur_arch() != &ag_gemm_arch_avx512;
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

/* ---- pack buffers ----
 * A product takes one of ag_get_num_threads() buffer sets, whichever is
 * free, so which thread (or strip of a product on the pool) runs which
 * product does not matter: every set is grown to the largest size any
 * product has asked for (the high-water mark), the free ones at once and
 * a busy one when it is given back.  So a training loop allocates in its
 * first step only, however its products are spread over threads from one
 * step to the next (on a busy machine the pool runs on one thread for a
 * while, then on two again).  A product that finds no free set (more
 * threads multiplying at once than there are sets) uses its thread's own
 * pair.  Every pair is on a list so ag_gemm_release_buffers can free all
 * of them, and a thread's exit frees its own (pthread key destructor). */

typedef struct gemm_ws {
    void *a, *b;
    size_t a_cap, b_cap;
    bool listed;
    struct gemm_ws *next;
} gemm_ws;

/* Pack buffer bytes for A and B. */
typedef struct ws_size {
    size_t a, b;
} ws_size;

#define SETS_MAX 64
static gemm_ws g_sets[SETS_MAX];
static atomic_flag g_set_busy[SETS_MAX];
static ws_size g_mark;          /* the high-water mark, under g_mark_lock */
static int g_sets_marked;       /* sets 0..n-1 were grown to it (unless busy) */
static pthread_mutex_t g_mark_lock = PTHREAD_MUTEX_INITIALIZER;

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
    pthread_mutex_lock(&g_mark_lock);
    g_mark = (ws_size){0, 0};
    g_sets_marked = 0;
    pthread_mutex_lock(&g_ws_lock);
    for (gemm_ws *w = g_ws_list; w; w = w->next)
        ws_drop(w);
    pthread_mutex_unlock(&g_ws_lock);
    pthread_mutex_unlock(&g_mark_lock);
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

static bool ws_fit(gemm_ws *w, ws_size need)
{
    if (!w->listed) {
        pthread_mutex_lock(&g_ws_lock);
        w->next = g_ws_list;
        g_ws_list = w;
        pthread_mutex_unlock(&g_ws_lock);
        w->listed = true;
    }
    return ws_grow(&w->a, &w->a_cap, need.a) && ws_grow(&w->b, &w->b_cap, need.b);
}

/* The mark, read under its lock. */
static ws_size mark_now(void)
{
    pthread_mutex_lock(&g_mark_lock);
    ws_size m = g_mark;
    pthread_mutex_unlock(&g_mark_lock);
    return m;
}

/* Raises the mark to need and grows the free sets of the first n to it
 * (a busy one catches up when given back).  A product calls it before it
 * takes a set; one that will be cut into strips calls it with its whole
 * size too, for the times it runs whole. */
static void ws_mark(ws_size need, int n)
{
    pthread_mutex_lock(&g_mark_lock);
    if (need.a > g_mark.a || need.b > g_mark.b || n > g_sets_marked) {
        g_mark.a = need.a > g_mark.a ? need.a : g_mark.a;
        g_mark.b = need.b > g_mark.b ? need.b : g_mark.b;
        for (int t = 0; t < n; t++) {
            if (!atomic_flag_test_and_set(&g_set_busy[t])) {
                ws_fit(&g_sets[t], g_mark); /* no memory: its taker retries */
                atomic_flag_clear(&g_set_busy[t]);
            }
        }
        g_sets_marked = n > g_sets_marked ? n : g_sets_marked;
    }
    pthread_mutex_unlock(&g_mark_lock);
}

static int sets_for_threads(void)
{
    int n = ag_get_num_threads();
    return n < SETS_MAX ? n : SETS_MAX;
}

/* A free set with room for need, its index in *held (-1: this thread's
 * own pair instead); NULL on no memory. */
static gemm_ws *ws_take(ws_size need, int *held)
{
    int n = sets_for_threads();
    ws_mark(need, n);
    for (int t = 0; t < n; t++) {
        if (!atomic_flag_test_and_set(&g_set_busy[t])) {
            *held = t;
            if (ws_fit(&g_sets[t], need))
                return &g_sets[t];
            atomic_flag_clear(&g_set_busy[t]);
            *held = -1;
            return NULL;
        }
    }
    *held = -1;
    gemm_ws *w = &t_ws;
    if (!w->listed) {
        pthread_once(&g_ws_once, ws_key_init);
        if (g_ws_key_ok)
            pthread_setspecific(g_ws_key, w);
    }
    return ws_fit(w, need) ? w : NULL;
}

/* Gives set `held` back, first grown to a mark raised while it was busy. */
static void ws_give(int held)
{
    if (held < 0)
        return;
    ws_fit(&g_sets[held], mark_now());
    atomic_flag_clear(&g_set_busy[held]);
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

/* Every mr x nr tile of an mb x nb block of C from packed Ap and Bp; the
 * tiles of the first `whole` rows (0: none; a multiple of mr) read A in
 * place from Ar (row stride g->lda), and Ap holds only the rows past them. */
static void macro_tile(const gemm_call *g, const ag_gemm_arch *arch,
                       const ag_gemm_blocking *bk, int64_t kb, int64_t mb,
                       int64_t nb, const unsigned char *Ap, const float *Ar, int64_t whole,
                       const unsigned char *Bp, unsigned char *C, double beta)
{
    size_t esz = g->f64 ? sizeof(double) : sizeof(float);
    for (int64_t jr = 0; jr < nb; jr += bk->nr) {
        int n = (int)min64(bk->nr, nb - jr);
        const unsigned char *b = Bp + (size_t)(jr * kb) * esz;
        for (int64_t ir = 0; ir < mb; ir += bk->mr) {
            int m = (int)min64(bk->mr, mb - ir);
            unsigned char *c = C + (size_t)(ir * g->ldc + jr) * esz;
            if (ir < whole) {
                arch->sukr_rows(kb, Ar + ir * g->lda, g->lda, (const float *)b, (float *)c,
                                g->ldc, (float)g->alpha, (float)beta, m, n);
                continue;
            }
            const unsigned char *a = Ap + (size_t)((ir - whole) * kb) * esz;
            if (g->f64)
                arch->dukr(kb, (const double *)a, (const double *)b, (double *)c,
                           g->ldc, g->alpha, beta, m, n);
            else
                arch->sukr(kb, (const float *)a, (const float *)b, (float *)c,
                           g->ldc, (float)g->alpha, (float)beta, m, n);
        }
    }
}

/* The blocked loops over g with buffers w.  An untransposed f32 A is read
 * in place where the arch has the kernel for it, whole tiles of rows; only
 * the last rows of a block (fewer than mr) are packed. */
static void blocked_with(const gemm_call *g, const ag_gemm_arch *arch,
                         const ag_gemm_blocking *bk, int64_t kc, int64_t mc, int64_t nc,
                         gemm_ws *w)
{
    size_t esz = g->f64 ? sizeof(double) : sizeof(float);
    bool rows = !g->f64 && !g->ta && arch->sukr_rows;
    for (int64_t jc = 0; jc < g->N; jc += nc) {
        int64_t nb = min64(nc, g->N - jc);
        for (int64_t pc = 0; pc < g->K; pc += kc) {
            int64_t kb = min64(kc, g->K - pc);
            const void *bsrc = g->B + (size_t)off(g->tb, g->ldb, pc, jc) * esz;
            pack(g, arch, bsrc, g->ldb, !g->tb, nb, kb, bk->nr, w->b);
            double beta = pc == 0 ? g->beta : 1.0;
            for (int64_t ic = 0; ic < g->M; ic += mc) {
                int64_t mb = min64(mc, g->M - ic);
                const unsigned char *asrc = g->A + (size_t)off(g->ta, g->lda, ic, pc) * esz;
                int64_t whole = rows ? mb / bk->mr * bk->mr : 0;
                if (whole < mb)
                    pack(g, arch, asrc + (size_t)(whole * g->lda) * esz, g->lda, g->ta,
                         mb - whole, kb, bk->mr, w->a);
                macro_tile(g, arch, bk, kb, mb, nb, w->a, (const float *)asrc, whole, w->b,
                           g->C + (size_t)(ic * g->ldc + jc) * esz, beta);
            }
        }
    }
}

/* The blocking of g: pass depth kc, block rows mc, panel columns nc. */
static void blocking_of(const gemm_call *g, const ag_gemm_blocking *bk, int64_t *kc,
                        int64_t *mc, int64_t *nc)
{
    *kc = pass_depth(g->K, bk->kc);
    *mc = min64(bk->mc, ceil_div(g->M, bk->mr) * bk->mr);
    *nc = min64(bk->nc, ceil_div(g->N, bk->nr) * bk->nr);
}

static ws_size ws_need(const gemm_call *g, const ag_gemm_arch *arch)
{
    int64_t kc, mc, nc;
    blocking_of(g, g->f64 ? &arch->d : &arch->s, &kc, &mc, &nc);
    size_t esz = g->f64 ? sizeof(double) : sizeof(float);
    return (ws_size){(size_t)(mc * kc) * esz, (size_t)(kc * nc) * esz};
}

/* The whole of g (a product, or a strip of one) on this thread. */
static void blocked(const gemm_call *g, const ag_gemm_arch *arch)
{
    const ag_gemm_blocking *bk = g->f64 ? &arch->d : &arch->s;
    int64_t kc, mc, nc;
    blocking_of(g, bk, &kc, &mc, &nc);
    int held;
    gemm_ws *w = ws_take(ws_need(g, arch), &held);
    if (w)
        blocked_with(g, arch, bk, kc, mc, nc, w);
    else
        direct(g);
    ws_give(held);
}

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

#ifdef AG_HAVE_BLAS
static void blas(const gemm_call *g);
#endif

/* A product cut into nt strips for the thread pool. */
typedef struct strips {
    const gemm_call *g;
    const ag_gemm_arch *arch;
    int nt;
    bool blas;
} strips;

/* The whole of g (a strip of a product, or all of it) on this thread. */
static void one_thread(const gemm_call *g, const ag_gemm_arch *arch, bool use_openblas)
{
#ifdef AG_HAVE_BLAS
    if (use_openblas) {
        blas(g);
        return;
    }
#endif
    (void)use_openblas;
    blocked(g, arch);
}

static void strip_body(void *ctx, int64_t lo, int64_t hi)
{
    const strips *p = ctx;
    const ag_gemm_blocking *bk = p->g->f64 ? &p->arch->d : &p->arch->s;
    for (int64_t t = lo; t < hi; t++) {
        gemm_call s;
        if (strip(p->g, bk, (int)t, p->nt, &s))
            one_thread(&s, p->arch, p->blas);
    }
}

/* Large products go to the pool (threads.c) as one strip per thread,
 * each packing what it needs; a strip is claimed by whichever thread is
 * free, so one the OS has descheduled costs a second strip's time on the
 * caller, never a wait.  Every C element sees the same computation
 * whatever the split (built-in backend); OpenBLAS, at one thread per
 * strip, may round a strip's elements differently for another shape.
 * While the pool stays on one thread (threads.c), no strips: their
 * operands would be packed once each. */
static void product(const gemm_call *g, double macs, bool use_openblas)
{
    const ag_gemm_arch *arch = cur_arch();
    int nt = ag_get_num_threads();
    bool alone = !ag_pool_would_thread();
#ifdef _OPENMP
    /* inside the caller's OpenMP region the cores are busy already */
    alone = alone || omp_in_parallel();
#endif
    if (macs < GEMM_PARALLEL_MACS || alone) {
        one_thread(g, arch, use_openblas);
        return;
    }
    ws_mark(ws_need(g, arch), sets_for_threads()); /* for when it runs whole */
    strips p = {g, arch, nt, use_openblas};
    ag_parallel_for(nt, 1, strip_body, &p);
}

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
    product(g, macs, use_blas() && blas_fits(g));
#else
    product(g, macs, false);
#endif
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
