/* test_gemm.c — the GEMM kernels against a naive triple loop in double:
 * every transpose combination, odd and edge sizes (0, 1, tile and block
 * edges), alpha/beta cases, strided leading dimensions, both dtypes, every
 * built-in code path the CPU runs, OpenBLAS when built with it, and the
 * same bits for 1 and 2 threads. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "kernels/kernels_internal.h"

typedef struct dims {
    int64_t M, N, K;
} dims;

/* Shapes that cross the tile edges (mr 4/6/12, nr 4..32), the cache
 * blocks (kc 192/256, mc 72..192, nc 4096) and the small-product cutoff. */
static const dims k_dims[] = {
    {1, 1, 1},     {1, 17, 3},    {3, 1, 17},    {17, 3, 1},
    {31, 33, 35},  {33, 31, 40},  {65, 17, 129}, {17, 65, 31},
    {129, 31, 65}, {7, 4100, 5},  {300, 13, 11}, {64, 64, 64},
    {13, 97, 513}, {100, 200, 257}, {257, 255, 129}, {255, 257, 65},
};

static const double k_alpha_beta[][2] = {
    {1, 0}, {0.5, 2}, {-1.5, 1}, {2, 0}, {0, 0.5}, {1, -0.25},
};

static uint64_t g_seed = 42;

static double rnd(void)
{
    g_seed = g_seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(g_seed >> 11) / (double)(1ULL << 53) * 2.0 - 1.0;
}

/* One test case: operands stored with padded rows (ld = cols + 3). */
typedef struct gcase {
    bool ta, tb, f64;
    int64_t M, N, K, lda, ldb, ldc;
    double alpha, beta;
    double *a, *b, *c0;      /* values, as stored */
    void *A, *B, *C;         /* in the dtype under test */
} gcase;

static void *to_dtype(const double *x, size_t n, bool f64)
{
    void *p = malloc((n ? n : 1) * (f64 ? sizeof(double) : sizeof(float)));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        if (f64)
            ((double *)p)[i] = x[i];
        else
            ((float *)p)[i] = (float)x[i];
    }
    return p;
}

static void case_init(gcase *g, bool ta, bool tb, bool f64, dims d, double alpha,
                      double beta)
{
    *g = (gcase){.ta = ta, .tb = tb, .f64 = f64, .M = d.M, .N = d.N, .K = d.K,
                 .alpha = alpha, .beta = beta};
    int64_t ar = ta ? d.K : d.M, ac = ta ? d.M : d.K;
    int64_t br = tb ? d.N : d.K, bc = tb ? d.K : d.N;
    g->lda = ac + 3;
    g->ldb = bc + 3;
    g->ldc = d.N + 3;
    size_t na = (size_t)(ar * g->lda), nb = (size_t)(br * g->ldb);
    size_t nc = (size_t)(d.M * g->ldc);
    g->a = malloc((na + 1) * sizeof(double));
    g->b = malloc((nb + 1) * sizeof(double));
    g->c0 = malloc((nc + 1) * sizeof(double));
    assert_true(g->a && g->b && g->c0);
    for (size_t i = 0; i < na; i++)
        g->a[i] = rnd();
    for (size_t i = 0; i < nb; i++)
        g->b[i] = rnd();
    /* beta == 0 must overwrite, so C starts as NaN then */
    for (size_t i = 0; i < nc; i++)
        g->c0[i] = beta == 0 ? NAN : rnd();
    g->A = to_dtype(g->a, na, f64);
    g->B = to_dtype(g->b, nb, f64);
    g->C = to_dtype(g->c0, nc, f64);
    if (!f64) { /* reference sees the rounded inputs */
        for (size_t i = 0; i < na; i++)
            g->a[i] = ((float *)g->A)[i];
        for (size_t i = 0; i < nb; i++)
            g->b[i] = ((float *)g->B)[i];
        for (size_t i = 0; i < nc; i++)
            g->c0[i] = ((float *)g->C)[i];
    }
}

static void case_free(gcase *g)
{
    free(g->a);
    free(g->b);
    free(g->c0);
    free(g->A);
    free(g->B);
    free(g->C);
}

static void case_reset_c(gcase *g)
{
    size_t nc = (size_t)(g->M * g->ldc);
    free(g->C);
    g->C = to_dtype(g->c0, nc, g->f64);
}

static void case_run(gcase *g)
{
    if (g->f64)
        ag_gemm_f64(g->ta, g->tb, g->M, g->N, g->K, g->alpha, g->A, g->lda,
                    g->B, g->ldb, g->beta, g->C, g->ldc);
    else
        ag_gemm_f32(g->ta, g->tb, g->M, g->N, g->K, (float)g->alpha, g->A,
                    g->lda, g->B, g->ldb, (float)g->beta, g->C, g->ldc);
}

static double c_at(const gcase *g, int64_t i)
{
    return g->f64 ? ((const double *)g->C)[i] : ((const float *)g->C)[i];
}

/* Naive product in double; each element within (K + 4) * eps * scale,
 * scale = |alpha| sum |a b| + |beta c|.  The row padding of C (ldc > N)
 * must be untouched. */
static void case_check(const gcase *g, const char *what)
{
    double eps = g->f64 ? DBL_EPSILON : FLT_EPSILON;
    for (int64_t i = 0; i < g->M; i++) {
        for (int64_t j = 0; j < g->ldc; j++) {
            double got = c_at(g, i * g->ldc + j), c0 = g->c0[i * g->ldc + j];
            if (j >= g->N) {
                assert_true(got == c0 || (isnan(got) && isnan(c0)));
                continue;
            }
            double s = 0, mag = 0;
            for (int64_t p = 0; g->alpha != 0 && p < g->K; p++) {
                double x = g->a[g->ta ? p * g->lda + i : i * g->lda + p];
                double y = g->b[g->tb ? j * g->ldb + p : p * g->ldb + j];
                s += x * y;
                mag += fabs(x * y);
            }
            double want = g->alpha * s, scale = fabs(g->alpha) * mag;
            if (g->beta != 0) {
                want += g->beta * c0;
                scale += fabs(g->beta * c0);
            }
            double tol = (double)(g->K + 4) * eps * scale + 1e-300;
            if (!(fabs(got - want) <= tol)) {
                fprintf(stderr,
                        "%s: %s ta=%d tb=%d M=%lld N=%lld K=%lld alpha=%g beta=%g: "
                        "C[%lld,%lld] = %.17g, want %.17g (tol %.3g)\n",
                        what, g->f64 ? "f64" : "f32", g->ta, g->tb, (long long)g->M,
                        (long long)g->N, (long long)g->K, g->alpha, g->beta,
                        (long long)i, (long long)j, got, want, tol);
                fail();
            }
        }
    }
}

/* Every shape, transpose pair, alpha/beta and dtype on the current backend. */
static void check_all(const char *what)
{
    for (size_t d = 0; d < sizeof k_dims / sizeof k_dims[0]; d++) {
        for (int t = 0; t < 4; t++) {
            for (int f = 0; f < 2; f++) {
                /* cycle alpha/beta with the case so all meet all shapes */
                size_t ab = (d * 8 + (size_t)t * 2 + (size_t)f) %
                            (sizeof k_alpha_beta / sizeof k_alpha_beta[0]);
                gcase g;
                case_init(&g, t & 1, t >> 1, f, k_dims[d], k_alpha_beta[ab][0],
                          k_alpha_beta[ab][1]);
                case_run(&g);
                case_check(&g, what);
                case_free(&g);
            }
        }
    }
}

static void test_gemm_builtin_paths_match_naive(void **state)
{
    (void)state;
    static const char *const archs[] = {"avx512", "avx2", "generic"};
    ag_gemm_force_builtin(true);
    int ran = 0;
    for (size_t i = 0; i < 3; i++) {
        if (!ag_gemm_set_arch(archs[i])) {
            printf("# gemm: %s not supported here, skipped\n", archs[i]);
            continue;
        }
        check_all(archs[i]);
        ran++;
    }
    assert_true(ag_gemm_set_arch(NULL));
    ag_gemm_force_builtin(false);
    assert_true(ran >= 1);
}

static void test_gemm_default_backend_matches_naive(void **state)
{
    (void)state;
    const char *b = ag_gemm_backend();
    assert_true(strcmp(b, "openblas") == 0 || strncmp(b, "builtin-", 8) == 0);
    check_all(b);
}

/* Every alpha/beta on every shape with all four transposes, smaller set. */
static void test_gemm_alpha_beta_cases(void **state)
{
    (void)state;
    static const dims d[] = {{5, 7, 9}, {70, 50, 60}};
    ag_gemm_force_builtin(true);
    for (size_t s = 0; s < 2; s++)
        for (size_t ab = 0; ab < sizeof k_alpha_beta / sizeof k_alpha_beta[0]; ab++)
            for (int t = 0; t < 8; t++) {
                gcase g;
                case_init(&g, t & 1, (t >> 1) & 1, t >> 2, d[s],
                          k_alpha_beta[ab][0], k_alpha_beta[ab][1]);
                case_run(&g);
                case_check(&g, "alpha/beta");
                case_free(&g);
            }
    ag_gemm_force_builtin(false);
}

static void test_gemm_empty_dims(void **state)
{
    (void)state;
    static const dims d[] = {{0, 5, 7}, {5, 0, 7}, {5, 7, 0}, {0, 0, 0}, {300, 300, 0}};
    for (size_t s = 0; s < sizeof d / sizeof d[0]; s++)
        for (int t = 0; t < 8; t++)
            for (int ab = 0; ab < 3; ab++) {
                gcase g;
                case_init(&g, t & 1, (t >> 1) & 1, t >> 2, d[s],
                          k_alpha_beta[ab][0], k_alpha_beta[ab][1]);
                case_run(&g); /* K == 0: C = beta * C, zeros for beta 0 */
                case_check(&g, "empty");
                case_free(&g);
            }
}

/* Same bits for 1 and 2 threads, strips by columns (N >= M) and by rows. */
static void test_gemm_threads_same_bits(void **state)
{
    (void)state;
    static const dims d[] = {{150, 301, 170}, {301, 150, 170}, {97, 97, 300}};
    ag_gemm_force_builtin(true);
    for (size_t s = 0; s < sizeof d / sizeof d[0]; s++)
        for (int t = 0; t < 8; t++) {
            gcase g;
            case_init(&g, t & 1, (t >> 1) & 1, t >> 2, d[s], 0.75, 0.5);
            size_t bytes = (size_t)(g.M * g.ldc) * (g.f64 ? 8 : 4);
            ag_set_num_threads(1);
            case_run(&g);
            void *one = malloc(bytes);
            assert_non_null(one);
            memcpy(one, g.C, bytes);
            case_reset_c(&g);
            ag_set_num_threads(2);
            case_run(&g);
            assert_memory_equal(one, g.C, bytes);
            case_check(&g, "threads");
            free(one);
            case_free(&g);
        }
    ag_set_num_threads(0);
    ag_gemm_force_builtin(false);
}

/* With OpenBLAS built in, it and the built-in GEMM agree. */
static void test_gemm_builtin_matches_openblas(void **state)
{
    (void)state;
    if (!ag_gemm_force_openblas(true)) {
        printf("# gemm: built without OpenBLAS, skipped\n");
        return;
    }
    assert_string_equal(ag_gemm_backend(), "openblas");
    static const dims d[] = {{257, 129, 300}, {64, 1000, 33}};
    for (size_t s = 0; s < 2; s++)
        for (int t = 0; t < 8; t++) {
            gcase g;
            case_init(&g, t & 1, (t >> 1) & 1, t >> 2, d[s], 1.25, 0.5);
            size_t n = (size_t)(g.M * g.ldc);
            case_run(&g);
            double *blas = malloc(n * sizeof(double));
            assert_non_null(blas);
            for (size_t i = 0; i < n; i++)
                blas[i] = c_at(&g, (int64_t)i);
            case_reset_c(&g);
            ag_gemm_force_builtin(true);
            case_run(&g);
            assert_true(ag_gemm_force_openblas(true));
            double tol = g.f64 ? 1e-12 : 1e-4;
            for (size_t i = 0; i < n; i++)
                assert_true(fabs(blas[i] - c_at(&g, (int64_t)i)) <=
                            tol * (1 + fabs(blas[i])));
            free(blas);
            case_free(&g);
        }
    ag_gemm_force_openblas(false);
}

/* One packer against the layout it promises: panels of R rows, k-major,
 * zero-padded, nothing written past the end. */
static void check_pack(const ag_gemm_arch *arch, bool f64, int R, bool along,
                       int64_t rows, int64_t kb)
{
    int64_t ld = (along ? rows : kb) + 5, nsrc = (along ? kb : rows) * ld;
    int64_t nout = (rows + R - 1) / R * R * kb;
    double *src = malloc((size_t)nsrc * sizeof(double));
    double *out = malloc((size_t)(nout + 8) * sizeof(double));
    assert_true(src && out);
    for (int64_t i = 0; i < nsrc; i++)
        src[i] = (double)(i + 1);
    for (int64_t i = 0; i < nout + 8; i++)
        out[i] = -1; /* junk the packer must overwrite, or leave past the end */
    void *s = to_dtype(src, (size_t)nsrc, f64);
    void *d = to_dtype(out, (size_t)(nout + 8), f64);
    if (f64)
        arch->dpack(s, ld, along, rows, kb, R, d);
    else
        arch->spack(s, ld, along, rows, kb, R, d);
    for (int64_t i = 0; i < nout + 8; i++)
        out[i] = f64 ? ((double *)d)[i] : ((float *)d)[i];
    for (int64_t r = 0; r < (rows + R - 1) / R * R; r++) {
        for (int64_t p = 0; p < kb; p++) {
            double want = r >= rows ? 0 : src[along ? p * ld + r : r * ld + p];
            double got = out[(r / R) * R * kb + p * R + r % R];
            if (got != want) {
                fprintf(stderr, "pack %s %s R=%d along=%d rows=%lld kb=%lld: (%lld,%lld) = %g, want %g\n",
                        arch->name, f64 ? "f64" : "f32", R, along, (long long)rows,
                        (long long)kb, (long long)r, (long long)p, got, want);
                fail();
            }
        }
    }
    for (int64_t i = nout; i < nout + 8; i++) /* untouched past the end */
        assert_true(out[i] == -1);
    free(src);
    free(out);
    free(s);
    free(d);
}

/* Every packer, at the panel widths of every tile (the AVX-512 ones too:
 * its packers are the AVX2 ones, so they are checked here on any AVX2
 * CPU), edge panels and k tails included. */
static void test_gemm_pack_layouts(void **state)
{
    (void)state;
    static const int widths[] = {2, 4, 6, 8, 12, 16, 32};
    static const int64_t kbs[] = {1, 3, 4, 8, 17, 33};
    const ag_gemm_arch *archs[] = {
        &ag_gemm_arch_generic,
#ifdef AG_GEMM_X86
        &ag_gemm_arch_avx2,
        &ag_gemm_arch_avx512,
#endif
    };
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++) {
        /* the AVX-512 descriptor packs with AVX2 */
        if (archs[a] != &ag_gemm_arch_generic && !ag_gemm_set_arch("avx2"))
            continue;
        for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++)
            for (size_t k = 0; k < sizeof kbs / sizeof kbs[0]; k++)
                for (int v = 0; v < 4; v++) {
                    int R = widths[w];
                    int64_t rows[] = {1, R, 2 * R + 3};
                    for (int r = 0; r < 3; r++)
                        check_pack(archs[a], v & 1, R, v >> 1, rows[r], kbs[k]);
                }
    }
    assert_true(ag_gemm_set_arch(NULL));
}

/* The kernel that reads A in place gives the bits of the packed one on
 * the same tile, for each arch that has it: depths 1 to 200, full and
 * edge columns, beta 0 and 1. */
static void in_place_a_same_bits(const ag_gemm_arch *arch)
{
    const int mr = arch->s.mr, nr = arch->s.nr;
    static const int64_t kcs[] = {1, 7, 64, 200};
    for (size_t k = 0; k < sizeof kcs / sizeof kcs[0]; k++) {
        int64_t kc = kcs[k], lda = kc + 3, ldc = nr + 5;
        float *A = malloc(sizeof(float) * (size_t)(mr * lda));
        float *Ap = malloc(sizeof(float) * (size_t)(mr * kc));
        float *Bp = malloc(sizeof(float) * (size_t)(kc * nr));
        float *C1 = malloc(sizeof(float) * (size_t)(mr * ldc));
        float *C2 = malloc(sizeof(float) * (size_t)(mr * ldc));
        assert_true(A && Ap && Bp && C1 && C2);
        for (int64_t i = 0; i < mr * lda; i++)
            A[i] = (float)sin((double)i * 0.37) * 1.7f;
        for (int64_t i = 0; i < kc * nr; i++)
            Bp[i] = (float)cos((double)i * 0.21) * 0.9f;
        arch->spack(A, lda, false, mr, kc, mr, Ap);
        for (int n = nr; n >= nr - 5; n -= 5)
            for (int b = 0; b < 2; b++) {
                for (int64_t i = 0; i < mr * ldc; i++)
                    C1[i] = C2[i] = (float)i * 0.01f;
                arch->sukr(kc, Ap, Bp, C1, ldc, 0.75f, (float)b, mr, n);
                arch->sukr_rows(kc, A, lda, Bp, C2, ldc, 0.75f, (float)b, mr, n);
                assert_memory_equal(C1, C2, sizeof(float) * (size_t)(mr * ldc));
            }
        free(A);
        free(Ap);
        free(Bp);
        free(C1);
        free(C2);
    }
}

static void test_gemm_in_place_a_same_bits(void **state)
{
    (void)state;
#ifdef AG_GEMM_X86
    const ag_gemm_arch *archs[] = {&ag_gemm_arch_avx512, &ag_gemm_arch_avx2};
    int ran = 0;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
        if (archs[i]->supported() && archs[i]->sukr_rows) {
            in_place_a_same_bits(archs[i]);
            ran++;
        }
    }
    if (!ran)
        skip();
#else
    skip();
#endif
}

/* The switches land where they say, and undo. */
static void test_gemm_backend_switches(void **state)
{
    (void)state;
    const char *dflt = ag_gemm_backend();
    ag_gemm_force_builtin(true);
    assert_int_equal(strncmp(ag_gemm_backend(), "builtin-", 8), 0);
    ag_gemm_force_builtin(false);
    assert_string_equal(ag_gemm_backend(), dflt);
    if (ag_gemm_force_openblas(true))
        assert_string_equal(ag_gemm_backend(), "openblas");
    assert_true(ag_gemm_force_openblas(false));
    assert_string_equal(ag_gemm_backend(), dflt);
    assert_false(ag_gemm_set_arch("no-such-arch"));
    assert_true(ag_gemm_set_arch("generic"));
    ag_gemm_force_builtin(true);
    assert_string_equal(ag_gemm_backend(), "builtin-generic");
    ag_gemm_force_builtin(false);
    assert_true(ag_gemm_set_arch(NULL));
    assert_string_equal(ag_gemm_backend(), dflt);
}

/* Freed buffers come back on the next product. */
static void test_gemm_release_buffers(void **state)
{
    (void)state;
    ag_gemm_force_builtin(true);
    for (int r = 0; r < 2; r++) {
        gcase g;
        case_init(&g, false, true, false, (dims){90, 80, 70}, 1, 0);
        case_run(&g);
        case_check(&g, "release");
        case_free(&g);
        ag_gemm_release_buffers();
    }
    ag_gemm_force_builtin(false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_builtin_paths_match_naive),
        cmocka_unit_test(test_gemm_default_backend_matches_naive),
        cmocka_unit_test(test_gemm_alpha_beta_cases),
        cmocka_unit_test(test_gemm_empty_dims),
        cmocka_unit_test(test_gemm_threads_same_bits),
        cmocka_unit_test(test_gemm_builtin_matches_openblas),
        cmocka_unit_test(test_gemm_release_buffers),
        cmocka_unit_test(test_gemm_backend_switches),
        cmocka_unit_test(test_gemm_pack_layouts),
        cmocka_unit_test(test_gemm_in_place_a_same_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
