/* test_conv_kernels.c — the convolution kernels of kernels/conv_internal.h
 * against a naive direct convolution in double: forward (with and without
 * bias, overwriting and accumulating), input gradient and weight gradient
 * (with the bias gradient),
 * f32 and f64, on geometries chosen for each path of the row loops
 * (conv_loops.h): whole-vector row copies and col2im's gathering of dx rows
 * (rows of 1 to 4 vectors, row stride 2, padding, dilation, groups), the
 * Winograd forward and input gradient (conv_winograd.c), and
 * their fallbacks (a row stride of 2 along columns, rows wider than 4
 * vectors, more than 8 taps along a row, tap offsets beyond a vector,
 * padding beyond a vector), plus a pointwise kernel; and the 2x2 max
 * pooling rows and their gradient (pool2x2.c) against the scalar
 * definition, ties and NaNs included, for every row length up to 40, and
 * max_pool2d's gradient into reused tape memory.  Every tensor and the scratch
 * are allocated at their exact sizes, so a read or write past them shows
 * under ASan. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "kernels/conv_internal.h"

/* N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, G */
static const int64_t k_geoms[][14] = {
    {3, 32, 13, 13, 64, 3, 3, 1, 1, 0, 0, 1, 1, 1},  /* the CNN's conv2: Winograd */
    {2, 16, 9, 10, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1},   /* Winograd, padding 1, odd out */
    {3, 24, 6, 7, 16, 3, 3, 1, 1, 2, 0, 1, 1, 1},    /* Winograd, padding 2 and 0 */
    {2, 20, 8, 9, 18, 3, 3, 1, 1, 1, 1, 1, 1, 1},    /* Winograd, channels % 8 != 0 */
    {1, 16, 5, 6, 16, 3, 3, 1, 1, 3, 4, 1, 1, 1},    /* Winograd, padding 3 and 4 */
    {2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1},      /* padding */
    {2, 2, 9, 20, 3, 3, 3, 2, 1, 1, 1, 1, 1, 1},     /* row stride 2 */
    {2, 2, 9, 20, 3, 3, 3, 1, 2, 0, 1, 1, 1, 1},     /* column stride 2 */
    {1, 2, 9, 36, 2, 3, 3, 1, 1, 2, 2, 2, 2, 1},     /* dilation, 3 vectors f32 */
    {2, 4, 6, 50, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2},     /* groups, 4 vectors f32 */
    {1, 2, 5, 70, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* 5 vectors: fallback */
    {1, 2, 6, 20, 2, 3, 9, 1, 1, 1, 4, 1, 1, 1},     /* 9 taps a row: fallback */
    {1, 2, 6, 40, 2, 3, 3, 1, 1, 0, 0, 1, 9, 1},     /* offsets 18: fallback */
    {1, 2, 5, 6, 2, 3, 3, 1, 1, 1, 10, 1, 1, 1},     /* padding 10: f64 fallback */
    {2, 3, 7, 7, 3, 3, 3, 2, 2, 1, 1, 1, 1, 3},      /* depthwise, stride 2 */
    {2, 3, 5, 4, 5, 1, 1, 1, 1, 0, 0, 1, 1, 1},      /* pointwise */
    {2, 1, 20, 20, 16, 3, 3, 1, 1, 0, 0, 1, 1, 1},   /* one channel (direct in f32) */
    {1, 1, 19, 18, 5, 3, 3, 1, 1, 0, 0, 1, 1, 1},    /* direct, an odd channel count */
    {2, 1, 9, 28, 3, 3, 3, 1, 1, 0, 0, 1, 1, 1},     /* direct, rows of 26: 8-wide tail */
    {1, 1, 6, 43, 2, 3, 3, 1, 1, 0, 0, 1, 1, 1},     /* direct, rows of 41: both tails */
};

static ag_conv_geom geom_of(const int64_t *v)
{
    ag_conv_geom g = {.N = v[0], .C = v[1], .H = v[2], .W = v[3], .O = v[4], .kh = v[5],
                      .kw = v[6], .sh = v[7], .sw = v[8], .ph = v[9], .pw = v[10],
                      .dh = v[11], .dw = v[12], .G = v[13]};
    g.Ho = (g.H + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
    g.Wo = (g.W + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
    return g;
}

static uint64_t g_seed = 7;

static double rnd(void)
{
    g_seed = g_seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(g_seed >> 11) / 9007199254740992.0 * 2 - 1;
}

/* The input element a tap of output (oh, ow) reads, or -1 in the padding. */
static int64_t tap_at(const ag_conv_geom *g, int64_t n, int64_t c, int64_t oh, int64_t ow,
                      int64_t i, int64_t j)
{
    int64_t h = oh * g->sh - g->ph + i * g->dh, w = ow * g->sw - g->pw + j * g->dw;
    if (h < 0 || h >= g->H || w < 0 || w >= g->W)
        return -1;
    return ((n * g->C + c) * g->H + h) * g->W + w;
}

/* y, dx (of <y, dy>), dw in double, by the definition. */
static void naive(const ag_conv_geom *g, const double *x, const double *w, const double *b,
                  const double *dy, double *y, double *dx, double *dw)
{
    int64_t Cg = g->C / g->G, Og = g->O / g->G;
    memset(dx, 0, (size_t)(g->N * g->C * g->H * g->W) * sizeof *dx);
    memset(dw, 0, (size_t)(g->O * Cg * g->kh * g->kw) * sizeof *dw);
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t o = 0; o < g->O; o++)
            for (int64_t oh = 0; oh < g->Ho; oh++)
                for (int64_t ow = 0; ow < g->Wo; ow++) {
                    int64_t yi = ((n * g->O + o) * g->Ho + oh) * g->Wo + ow;
                    double s = b ? b[o] : 0;
                    for (int64_t c = 0; c < Cg; c++)
                        for (int64_t i = 0; i < g->kh; i++)
                            for (int64_t j = 0; j < g->kw; j++) {
                                int64_t xi = tap_at(g, n, o / Og * Cg + c, oh, ow, i, j);
                                int64_t wi = ((o * Cg + c) * g->kh + i) * g->kw + j;
                                if (xi < 0)
                                    continue;
                                s += w[wi] * x[xi];
                                dx[xi] += w[wi] * dy[yi];
                                dw[wi] += x[xi] * dy[yi];
                            }
                    y[yi] = s;
                }
}

/* n values of v in dt, in a buffer of exactly that size */
static void *as_dt(const double *v, int64_t n, ag_dtype dt)
{
    size_t esz = dt == AG_F64 ? 8 : 4;
    void *p = malloc((size_t)(n > 0 ? n : 1) * esz);
    for (int64_t i = 0; i < n; i++) {
        if (dt == AG_F64)
            ((double *)p)[i] = v[i];
        else
            ((float *)p)[i] = (float)v[i];
    }
    return p;
}

static double at(const void *p, int64_t i, ag_dtype dt)
{
    return dt == AG_F64 ? ((const double *)p)[i] : ((const float *)p)[i];
}

static void expect_close(const char *what, int geom, ag_dtype dt, const void *got,
                         const double *want, int64_t n, double scale)
{
    double tol = (dt == AG_F64 ? 1e-12 : 2e-5) * scale;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(at(got, i, dt) - want[i]);
        if (!(d <= tol * (1 + fabs(want[i])))) {
            print_error("geometry %d %s %s[%lld]: %.17g, want %.17g\n", geom,
                        dt == AG_F64 ? "f64" : "f32", what, (long long)i, at(got, i, dt),
                        want[i]);
            fail();
        }
    }
}

static double *rnd_vec(int64_t n)
{
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = rnd();
    return v;
}

static void check_geom(int k, ag_dtype dt)
{
    ag_conv_geom g = geom_of(k_geoms[k]);
    int64_t nx = g.N * g.C * g.H * g.W, nw = g.O * (g.C / g.G) * g.kh * g.kw;
    int64_t ny = g.N * g.O * g.Ho * g.Wo;
    double *x = rnd_vec(nx), *w = rnd_vec(nw), *b = rnd_vec(g.O), *dy = rnd_vec(ny);
    double *y = malloc((size_t)ny * sizeof *y), *dx = malloc((size_t)nx * sizeof *dx);
    double *dw = malloc((size_t)nw * sizeof *dw);
    naive(&g, x, w, b, dy, y, dx, dw);
    void *X = as_dt(x, nx, dt), *Wt = as_dt(w, nw, dt), *B = as_dt(b, g.O, dt);
    void *DY = as_dt(dy, ny, dt), *Y = as_dt(y, ny, dt), *DX = as_dt(dx, nx, dt);
    void *DW = as_dt(dw, nw, dt);
    size_t sb = ag_conv_scratch_bytes(&g, dt, true);
    void *s = sb ? aligned_alloc(64, (sb + 63) / 64 * 64) : NULL;
    double scale = (double)((g.C / g.G) * g.kh * g.kw > g.O ? (g.C / g.G) * g.kh * g.kw : g.O);

    /* the overwriting forward must write every output: start from NaNs */
    memset(Y, 0xff, (size_t)ny * (dt == AG_F64 ? 8 : 4));
    ag_conv_forward(&g, dt, X, Wt, B, Y, false, s);
    expect_close("y", k, dt, Y, y, ny, scale);
    /* accumulating, without bias: y + (y - b) */
    double *y2 = calloc((size_t)ny, sizeof *y2);
    for (int64_t i = 0; i < ny; i++)
        y2[i] = 2 * y[i] - b[i / (g.Ho * g.Wo) % g.O];
    ag_conv_forward(&g, dt, X, Wt, NULL, Y, true, s);
    expect_close("y acc", k, dt, Y, y2, ny, scale);

    /* input gradient into dx already holding dx: 2 dx */
    double *dx2 = calloc((size_t)nx, sizeof *dx2);
    for (int64_t i = 0; i < nx; i++)
        dx2[i] = 2 * dx[i];
    ag_conv_input_grad(&g, dt, DY, Wt, DX, s);
    expect_close("dx", k, dt, DX, dx2, nx, scale);

    /* with the bias gradient, into db holding b: b + sum of dy */
    for (int64_t i = 0; i < ny; i++)
        b[i / (g.Ho * g.Wo) % g.O] += dy[i];
    memset(DW, 0xff, (size_t)nw * (dt == AG_F64 ? 8 : 4)); /* overwritten whole */
    ag_conv_weight_grad(&g, dt, X, DY, DW, false, B, s);
    expect_close("dw", k, dt, DW, dw, nw, scale * (double)g.N * (double)(g.Ho * g.Wo));
    expect_close("db", k, dt, B, b, g.O, (double)g.N * (double)(g.Ho * g.Wo));
    free(y2);
    free(dx2);
    free(s);
    free(X), free(Wt), free(B), free(DY), free(Y), free(DX), free(DW);
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw);
}

static void test_conv_kernels_match_naive(void **state)
{
    (void)state;
    for (int t = 1; t <= 2; t++) {
        ag_set_num_threads(t);
        for (int k = 0; k < (int)(sizeof k_geoms / sizeof k_geoms[0]); k++) {
            check_geom(k, AG_F64);
            check_geom(k, AG_F32);
        }
    }
    ag_set_num_threads(0);
}

/* One row pair of n windows, both dtypes, values from a few levels (ties)
 * with NaNs sprinkled in, against the scalar loop: the first max, a NaN
 * taking over from anything before it. */
static void check_max2x2(int64_t n)
{
    int64_t W = 2 * n + 3, base = 1; /* the windows start at column 1 */
    double *x = malloc((size_t)(2 * W) * sizeof *x);
    for (int64_t i = 0; i < 2 * W; i++) {
        double r = rnd();
        x[i] = r > 0.9 ? NAN : floor(r * 3);
    }
    float *xf = as_dt(x, 2 * W, AG_F32), *yf = malloc((size_t)n * sizeof *yf);
    double *yd = malloc((size_t)n * sizeof *yd);
    int64_t *idx_f = malloc((size_t)n * sizeof *idx_f), *idx_d = malloc((size_t)n * sizeof *idx_d);
    ag_max2x2_row_f32(xf + base, xf + base + W, yf, idx_f, n, base, W);
    ag_max2x2_row_f64(x + base, x + base + W, yd, idx_d, n, base, W);
    for (int64_t j = 0; j < n; j++) {
        int64_t at = base + 2 * j;
        const int64_t taps[4] = {at, at + 1, at + W, at + W + 1};
        for (int k = 1; k < 4; k++)
            if (x[taps[k]] > x[at] || isnan(x[taps[k]]))
                at = taps[k];
        bool nan = isnan(x[at]);
        if (idx_d[j] != at || idx_f[j] != at || !(yd[j] == x[at] || (isnan(yd[j]) && nan)) ||
            !(yf[j] == (float)x[at] || (isnan(yf[j]) && nan))) {
            print_error("n %lld, output %lld: idx %lld / %lld, y %g / %g, want %lld, %g\n",
                        (long long)n, (long long)j, (long long)idx_d[j], (long long)idx_f[j],
                        yd[j], (double)yf[j], (long long)at, x[at]);
            fail();
        }
    }
    /* the gradient, into rows already holding values */
    double *g = rnd_vec(n), *want = rnd_vec(2 * W);
    float *gf = as_dt(g, n, AG_F32), *dxf = as_dt(want, 2 * W, AG_F32);
    double *dxd = as_dt(want, 2 * W, AG_F64);
    for (int64_t j = 0; j < n; j++)
        want[idx_d[j]] += g[j];
    ag_max2x2_back_row_f32(gf, idx_d, dxf + base, n, base, W, true);
    ag_max2x2_back_row_f64(g, idx_d, dxd + base, n, base, W, true);
    for (int64_t i = 0; i < 2 * W; i++)
        if (dxd[i] != want[i] || fabs(dxf[i] - want[i]) > 1e-6) {
            print_error("n %lld, dx[%lld]: %g / %g, want %g\n", (long long)n, (long long)i,
                        dxd[i], (double)dxf[i], want[i]);
            fail();
        }
    /* stored over NaNs: g at the argmax, 0 at the window's other taps,
     * the columns outside the windows untouched */
    for (int64_t i = 0; i < 2 * W; i++) {
        bool in = i % W >= base && i % W < base + 2 * n;
        want[i] = in ? 0 : -1;
        dxd[i] = in ? NAN : -1;
        dxf[i] = (float)dxd[i];
    }
    for (int64_t j = 0; j < n; j++)
        want[idx_d[j]] = g[j];
    ag_max2x2_back_row_f32(gf, idx_d, dxf + base, n, base, W, false);
    ag_max2x2_back_row_f64(g, idx_d, dxd + base, n, base, W, false);
    for (int64_t i = 0; i < 2 * W; i++)
        if (dxd[i] != want[i] || dxf[i] != (float)want[i]) {
            print_error("n %lld, stored dx[%lld]: %g / %g, want %g\n", (long long)n,
                        (long long)i, dxd[i], (double)dxf[i], want[i]);
            fail();
        }
    free(g), free(want), free(gf), free(dxf), free(dxd);
    free(x), free(xf), free(yf), free(yd), free(idx_f), free(idx_d);
}

static void test_max2x2_rows_match_scalar(void **state)
{
    (void)state;
    for (int rep = 0; rep < 20; rep++)
        for (int64_t n = 1; n <= 40; n++)
            check_max2x2(n);
}

/* max_pool2d's gradient of an intermediate tensor, which lands in tape
 * memory that held NaNs, against the definition (g at each window's first
 * argmax, 0 elsewhere, the rows and columns past the windows included),
 * for tiling 2x2 windows and overlapping 3x3 ones, on 1 and 2 threads.
 * The tiling case stores a new gradient whole (ag_grad_out) rather than
 * zeroing it and adding; the overlapping one zeroes and adds. */
static void test_max_pool_new_gradient_written_whole(void **state)
{
    (void)state;
    static const int64_t shapes[][4] = {{2, 3, 7, 9}, {1, 2, 8, 8}, {3, 2, 5, 4}, {1, 1, 3, 3}};
    static const ag_pool2d_opts opts[] = {{.kernel = {2, 2}}, {.kernel = {3, 3}, .stride = {2, 2}}};
    ag_tape *t = ag_tape_new();
    for (int nt = 1; nt <= 2; nt++) {
        ag_set_num_threads(nt);
        for (int k = 0; k < 4; k++)
            for (int o = 0; o < 2; o++) {
                const int64_t *sh = shapes[k];
                int64_t n = sh[0] * sh[1] * sh[2] * sh[3];
                ag_tensor *leaf = ag_tensor_new(AG_F64, 4, sh);
                for (int64_t i = 0; i < n; i++)
                    ag_set(leaf, i, NAN);
                ag_set_requires_grad(leaf, true);
                /* NaNs through the tape's gradient buffers, then reset */
                ag_tensor *h = ag_mul_scalar(t, leaf, 1);
                assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, h, h), AG_ALL, false)), AG_OK);
                ag_tape_reset(t);
                ag_zero_grad(leaf);
                for (int64_t i = 0; i < n; i++)
                    ag_set(leaf, i, floor(rnd() * 4));
                h = ag_mul_scalar(t, leaf, 1);
                ag_tensor *y = ag_max_pool2d(t, h, opts[o]);
                assert_non_null(y);
                int64_t ny = ag_numel(y);
                ag_tensor *g = ag_tensor_new(AG_F64, 4, ag_shape(y));
                for (int64_t i = 0; i < ny; i++)
                    ag_set(g, i, i + 1);
                assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, y, g), AG_ALL, false)), AG_OK);
                /* the definition: each window's first max takes its g */
                double *want = calloc((size_t)n, sizeof *want);
                int64_t Ho = ag_shape(y)[2], Wo = ag_shape(y)[3], kh = opts[o].kernel[0];
                int64_t st = opts[o].stride[0] ? opts[o].stride[0] : kh;
                for (int64_t p = 0; p < sh[0] * sh[1]; p++)
                    for (int64_t i = 0; i < Ho; i++)
                        for (int64_t j = 0; j < Wo; j++) {
                            int64_t best = -1;
                            for (int64_t a = i * st; a < i * st + kh && a < sh[2]; a++)
                                for (int64_t b = j * st; b < j * st + kh && b < sh[3]; b++) {
                                    int64_t at = (p * sh[2] + a) * sh[3] + b;
                                    if (best < 0 || ag_get(leaf, at) > ag_get(leaf, best))
                                        best = at;
                                }
                            want[best] += ag_get(g, (p * Ho + i) * Wo + j);
                        }
                ag_tensor *dx = ag_grad(leaf);
                for (int64_t i = 0; i < n; i++)
                    if (ag_get(dx, i) != want[i]) {
                        print_error("shape %d, opts %d, %d threads: dx[%lld] %g, want %g\n", k,
                                    o, nt, (long long)i, ag_get(dx, i), want[i]);
                        fail();
                    }
                free(want);
                ag_tape_reset(t);
                ag_tensor_free(g);
                ag_tensor_free(leaf);
            }
    }
    ag_set_num_threads(0);
    ag_tape_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_kernels_match_naive),
        cmocka_unit_test(test_max2x2_rows_match_scalar),
        cmocka_unit_test(test_max_pool_new_gradient_written_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
