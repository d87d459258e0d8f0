/* test_vmath.c — the vector transcendentals (autograd/kernels/vmath.h) on
 * every code path this CPU runs, against libm one precision up: f32
 * results against double libm, f64 results against long double, over a
 * dense sweep of each function's useful range (where its result is a
 * normal or subnormal number, not a constant).  Asserts the error bounds
 * vmath.h promises, in ulp of the exact result: 4 (erf, ncdf, gelu,
 * gelu_tanh: 8), and prints each function's largest error.  Also: NaN and
 * infinity handling, and the array edges (every tail length, in place). */
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

#include "kernels/vmath.h"

static const char *const k_archs[] = {"avx512", "avx2", "scalar"};

/* ---- references, one precision up ---- */

static double ref_sigmoid(double x)
{
    return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x));
}
static long double ref_sigmoidl(long double x)
{
    return x >= 0 ? 1 / (1 + expl(-x)) : expl(x) / (1 + expl(x));
}
static double ref_softplus(double x) { return fmax(x, 0) + log1p(exp(-fabs(x))); }
static long double ref_softplusl(long double x)
{
    return fmaxl(x, 0) + log1pl(expl(-fabsl(x)));
}
/* double's 53 bits carry the rounding of x / sqrt 2 far below f32's ulp */
static double ref_ncdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752440); }
/* long double's 64 do not quite for f64: b + l carries 1/sqrt 2 exactly
 * enough, erfc(b + l) = erfc(b) - l 2/sqrt(pi) e^(-b^2) */
static long double ref_ncdfl(long double x)
{
    const long double hi = 0.707106781186547524381894L, lo = 1.8950325588932570797e-20L;
    long double b = -(x * hi), l = -(fmal(x, hi, b) + x * lo);
    return 0.5L * (erfcl(b) - l * 1.128379167095512573896L * expl(-b * b));
}
static double ref_gelu(double x) { return x * ref_ncdf(x); }
static long double ref_gelul(long double x) { return x * ref_ncdfl(x); }
/* x sigmoid(2u), which is x (1 + tanh u) / 2 without its cancellation */
static double ref_gelu_tanh(double x)
{
    return x * ref_sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x));
}
static long double ref_gelu_tanhl(long double x)
{
    return x * ref_sigmoidl(1.595769121605730711706272L * (x + 0.044715L * x * x * x));
}

/* ---- the cases ---- */

typedef struct vcase {
    const char *name;
    size_t off_f, off_d;     /* the function's slot in each table */
    double (*ref)(double);
    long double (*refl)(long double);
    double lo, hi;           /* f32 range */
    double lo_d, hi_d;       /* f64 range */
    double bound;            /* ulp */
} vcase;

#define SLOT(f) offsetof(ag_vmath_float, f), offsetof(ag_vmath_double, f)
static const vcase k_cases[] = {
    {"exp", SLOT(exp), exp, expl, -103, 88.7, -744, 709.7, 4},
    {"log", SLOT(log), log, logl, 0, 0, 0, 0, 4}, /* range: every positive float */
    {"tanh", SLOT(tanh), tanh, tanhl, -10, 10, -20, 20, 4},
    {"sigmoid", SLOT(sigmoid), ref_sigmoid, ref_sigmoidl, -103, 20, -744, 40, 4},
    {"softplus", SLOT(softplus), ref_softplus, ref_softplusl, -103, 100, -744, 800, 4},
    {"erf", SLOT(erf), erf, erfl, -4, 4, -6, 6, 8},
    /* gelu = x Phi(x): down to where Phi leaves the normal numbers */
    {"ncdf", SLOT(ncdf), ref_ncdf, ref_ncdfl, -13, 6, -37.5, 9, 8},
    {"gelu", SLOT(gelu), ref_gelu, ref_gelul, -13, 10, -37.5, 10, 8},
    {"gelu_tanh", SLOT(gelu_tanh), ref_gelu_tanh, ref_gelu_tanhl, -10, 10, -12, 12, 8},
    {"sin", SLOT(sin), sin, sinl, -1000, 1000, -1000, 1000, 4},
    {"cos", SLOT(cos), cos, cosl, -1000, 1000, -1000, 1000, 4},
};
#define N_CASES (sizeof k_cases / sizeof k_cases[0])

typedef void (*map_f)(const float *, float *, int64_t);
typedef void (*map_d)(const double *, double *, int64_t);

static map_f fn_f(const vcase *c)
{
    map_f f;
    memcpy(&f, (const char *)ag_vm_float() + c->off_f, sizeof f);
    return f;
}

static map_d fn_d(const vcase *c)
{
    map_d f;
    memcpy(&f, (const char *)ag_vm_double() + c->off_d, sizeof f);
    return f;
}

/* Error of y in ulp of the exact r (r rounded to the dtype first when it
 * lies past the largest finite value: then y must be that infinity). */
static double ulp_err_f(float y, double r)
{
    if (fabs(r) > FLT_MAX)
        return (double)y == (r > 0 ? INFINITY : -INFINITY) ? 0 : INFINITY;
    int e = r == 0 ? -126 : ilogb(r);
    return fabs((double)y - r) / ldexp(1, (e < -126 ? -126 : e) - 23);
}

static double ulp_err_d(double y, long double r)
{
    if (fabsl(r) > DBL_MAX)
        return y == (r > 0 ? INFINITY : -INFINITY) ? 0 : INFINITY;
    int e = r == 0 ? -1022 : ilogbl(r);
    return (double)(fabsl((long double)y - r) / ldexpl(1, (e < -1022 ? -1022 : e) - 52));
}

#define NF (1 << 22) /* points per f32 sweep */
#define ND (1 << 20) /* per f64 sweep */

/* The sweep's points: a uniform grid over [lo, hi], or for log (lo == hi)
 * every 507th positive float, subnormals to FLT_MAX. */
static void grid_f(const vcase *c, float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (c->lo == c->hi) {
            uint32_t bits = (uint32_t)(1 + i * (0x7f7fffff / NF));
            memcpy(&x[i], &bits, sizeof bits);
        } else {
            x[i] = (float)(c->lo + (c->hi - c->lo) * (double)i / (double)(n - 1));
        }
    }
}

static void grid_d(const vcase *c, double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (c->lo_d == c->hi_d) /* every bit pattern region, subnormals to DBL_MAX */
            x[i] = ldexp(1.0 + (double)(i % 4093) / 4093.0, (int)(i * 2100 / n) - 1074);
        else
            x[i] = c->lo_d + (c->hi_d - c->lo_d) * (double)i / (double)(n - 1);
    }
}

/* Largest ulp error of c on the current code path, and where. */
static double sweep_f(const vcase *c, const float *x, const double *ref, float *y,
                      float *worst_x)
{
    fn_f(c)(x, y, NF);
    double worst = 0;
    for (int64_t i = 0; i < NF; i++) {
        double e = ulp_err_f(y[i], ref[i]);
        if (!(e <= worst)) {
            worst = e;
            *worst_x = x[i];
        }
    }
    return worst;
}

static double sweep_d(const vcase *c, const double *x, const long double *ref, double *y,
                      double *worst_x)
{
    fn_d(c)(x, y, ND);
    double worst = 0;
    for (int64_t i = 0; i < ND; i++) {
        double e = ulp_err_d(y[i], ref[i]);
        if (!(e <= worst)) {
            worst = e;
            *worst_x = x[i];
        }
    }
    return worst;
}

static void test_vmath_f32_ulp(void **state)
{
    (void)state;
    float *x = malloc(NF * sizeof *x), *y = malloc(NF * sizeof *y);
    double *ref = malloc(NF * sizeof *ref);
    assert_true(x && y && ref);
    for (size_t k = 0; k < N_CASES; k++) {
        const vcase *c = &k_cases[k];
        grid_f(c, x, NF);
        for (int64_t i = 0; i < NF; i++)
            ref[i] = c->ref(x[i]);
        for (size_t a = 0; a < sizeof k_archs / sizeof k_archs[0]; a++) {
            if (!ag_vm_set_arch(k_archs[a]))
                continue;
            float wx = 0;
            double w = sweep_f(c, x, ref, y, &wx);
            print_message("f32 %-9s %-6s max %.2f ulp (at x = %.9g)\n", c->name, k_archs[a],
                          w, (double)wx);
            assert_true(w <= c->bound);
        }
    }
    ag_vm_set_arch(NULL);
    free(x);
    free(y);
    free(ref);
}

static void test_vmath_f64_ulp(void **state)
{
    (void)state;
    double *x = malloc(ND * sizeof *x), *y = malloc(ND * sizeof *y);
    long double *ref = malloc(ND * sizeof *ref);
    assert_true(x && y && ref);
    for (size_t k = 0; k < N_CASES; k++) {
        const vcase *c = &k_cases[k];
        grid_d(c, x, ND);
        for (int64_t i = 0; i < ND; i++)
            ref[i] = c->refl(x[i]);
        for (size_t a = 0; a < sizeof k_archs / sizeof k_archs[0]; a++) {
            if (!ag_vm_set_arch(k_archs[a]))
                continue;
            double wx = 0;
            double w = sweep_d(c, x, ref, y, &wx);
            print_message("f64 %-9s %-6s max %.2f ulp (at x = %.17g)\n", c->name, k_archs[a],
                          w, wx);
            assert_true(w <= c->bound);
        }
    }
    ag_vm_set_arch(NULL);
    free(x);
    free(y);
    free(ref);
}

/* pow and powc: bases and exponents drawn over ranges whose results stay
 * finite; negative bases with integer exponents (sign from the parity). */
static uint64_t g_seed = 7;
static double rnd(double lo, double hi)
{
    g_seed = g_seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (double)(g_seed >> 11) / (double)(1ULL << 53);
}

static void test_vmath_pow_ulp(void **state)
{
    (void)state;
    enum { N = 1 << 18 };
    static float xf[N], ef[N], yf[N];
    static double xd[N], ed[N], yd[N];
    static const double powc_c[] = {2.5, -1.5, 3, 0.5};
    for (size_t a = 0; a < sizeof k_archs / sizeof k_archs[0]; a++) {
        if (!ag_vm_set_arch(k_archs[a]))
            continue;
        double wf = 0, wd = 0;
        for (int i = 0; i < N; i++) {
            xf[i] = (float)rnd(1e-3, 100);
            ef[i] = (float)rnd(-15, 15);
            xd[i] = rnd(1e-3, 100);
            ed[i] = rnd(-100, 100);
        }
        ag_vm_float()->pow(xf, ef, yf, N);
        ag_vm_double()->pow(xd, ed, yd, N);
        for (int i = 0; i < N; i++) {
            wf = fmax(wf, ulp_err_f(yf[i], pow(xf[i], ef[i])));
            wd = fmax(wd, ulp_err_d(yd[i], powl(xd[i], ed[i])));
        }
        for (size_t k = 0; k < sizeof powc_c / sizeof powc_c[0]; k++) {
            double c = powc_c[k], lo = c == 3 ? -50 : 0;
            for (int i = 0; i < N; i++) {
                xf[i] = (float)rnd(lo, 100);
                xd[i] = rnd(lo, 100);
            }
            ag_vm_float()->powc(xf, (float)c, yf, N);
            ag_vm_double()->powc(xd, c, yd, N);
            for (int i = 0; i < N; i++) {
                wf = fmax(wf, ulp_err_f(yf[i], pow(xf[i], c)));
                wd = fmax(wd, ulp_err_d(yd[i], powl(xd[i], c)));
            }
        }
        print_message("pow/powc  %-6s max %.2f ulp (f32), %.2f ulp (f64)\n", k_archs[a], wf,
                      wd);
        assert_true(wf <= 4);
        assert_true(wd <= 4);
    }
    ag_vm_set_arch(NULL);
}

/* NaN in gives NaN out; the infinities give the limits (gelu(-inf) is
 * -inf * 0, NaN, as in PyTorch's formula). */
static void test_vmath_special_values(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        float at_minus_inf, at_plus_inf;
    } lim[] = {
        {"exp", 0, INFINITY},    {"tanh", -1, 1},        {"sigmoid", 0, 1},
        {"softplus", 0, INFINITY}, {"erf", -1, 1},       {"ncdf", 0, 1},
        {"gelu_tanh", NAN, INFINITY}, {"gelu", NAN, INFINITY},
    };
    for (size_t a = 0; a < sizeof k_archs / sizeof k_archs[0]; a++) {
        if (!ag_vm_set_arch(k_archs[a]))
            continue;
        for (size_t k = 0; k < N_CASES; k++) {
            float x[3] = {NAN, -INFINITY, INFINITY}, y[3];
            double xd[3] = {NAN, -INFINITY, INFINITY}, yd[3];
            fn_f(&k_cases[k])(x, y, 3);
            fn_d(&k_cases[k])(xd, yd, 3);
            assert_true(isnan(y[0]) && isnan(yd[0]));
            for (size_t j = 0; j < sizeof lim / sizeof lim[0]; j++) {
                if (strcmp(lim[j].name, k_cases[k].name) != 0)
                    continue;
                for (int s = 0; s < 2; s++) {
                    float want = s ? lim[j].at_plus_inf : lim[j].at_minus_inf;
                    if (isnan(want)) {
                        assert_true(isnan(y[1 + s]) && isnan(yd[1 + s]));
                    } else {
                        assert_true(y[1 + s] == want);
                        assert_true(yd[1 + s] == (double)want);
                    }
                }
            }
        }
    }
    ag_vm_set_arch(NULL);
}

/* Every length 0..40 (all tails of 4, 8 and 16 lanes), out of place and in
 * place, gives the same values as the full array, and writes nothing past
 * n. */
static void test_vmath_tails_in_place(void **state)
{
    (void)state;
    enum { M = 40 };
    float x[M], full[M], y[M + 1], z[M + 1];
    for (int i = 0; i < M; i++)
        x[i] = (float)(i - 20) * 0.37f;
    for (size_t a = 0; a < sizeof k_archs / sizeof k_archs[0]; a++) {
        if (!ag_vm_set_arch(k_archs[a]))
            continue;
        for (size_t k = 0; k < N_CASES; k++) {
            map_f f = fn_f(&k_cases[k]);
            float xs[M];
            for (int i = 0; i < M; i++) /* log's domain */
                xs[i] = strcmp(k_cases[k].name, "log") ? x[i] : fabsf(x[i]) + 0.1f;
            f(xs, full, M);
            for (int n = 0; n <= M; n++) {
                y[n] = z[n] = -7.0f;
                memcpy(z, xs, (size_t)n * sizeof *z);
                f(xs, y, n);
                f(z, z, n);
                assert_memory_equal(y, full, (size_t)n * sizeof *y);
                assert_memory_equal(z, full, (size_t)n * sizeof *z);
                assert_true(y[n] == -7.0f && z[n] == -7.0f);
            }
        }
    }
    ag_vm_set_arch(NULL);
}

static void test_vmath_arch_names(void **state)
{
    (void)state;
    assert_true(ag_vm_set_arch("scalar"));
    assert_string_equal(ag_vm_arch(), "scalar");
    assert_false(ag_vm_set_arch("no-such-isa"));
    assert_string_equal(ag_vm_arch(), "scalar");
    assert_true(ag_vm_set_arch(NULL));
    print_message("vmath: best code path here: %s\n", ag_vm_arch());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vmath_arch_names),
        cmocka_unit_test(test_vmath_tails_in_place),
        cmocka_unit_test(test_vmath_special_values),
        cmocka_unit_test(test_vmath_pow_ulp),
        cmocka_unit_test(test_vmath_f32_ulp),
        cmocka_unit_test(test_vmath_f64_ulp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
