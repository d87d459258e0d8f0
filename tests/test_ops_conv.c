/* test_ops_conv.c — convolution and pooling: values and gradients against
 * PyTorch (the fixtures of tests/reference/make_conv_fixtures.py, f64 within
 * 1e-10, f32 within 1e-5 of the value or of the tensor's largest, second
 * derivatives included), the options' defaults, max pooling's ties and
 * NaNs, results that do not depend on the thread count or the chunking, a
 * CNN training step that allocates nothing once warm, and the errors of
 * bad shapes and arguments (run under ASan too).  The op
 * table's gradcheck and gradgradcheck of every row are test_ops'. */
#include "test_util.h"

#include "kernels/kernels_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S(...) ((const int64_t[]){__VA_ARGS__})
#define D(...) ((const double[]){__VA_ARGS__})

/* ---- fixtures ---- */

/* |ours - torch| <= atol + rtol * |torch|, atol at least rtol times the
 * largest |torch| of the tensor in f32: a weight gradient sums hundreds
 * of products in f32, and where that sum cancels to a small value its
 * rounding (ours and torch's, in different orders) is that of the terms. */
static const struct {
    double rtol, atol;
} g_tol[2] = {[AG_F32] = {1e-5, 1e-6}, [AG_F64] = {1e-10, 1e-12}};
static double g_max_rel[2];

typedef struct {
    const ag_safetensors *f;
    const char *op;
    int k;
    json_t *args;
} fx_case;

static const ag_tensor *fx_get(const fx_case *c, const char *what)
{
    char name[64];
    snprintf(name, sizeof name, "case%d.%s", c->k, what);
    const ag_tensor *t = ag_safetensors_get(c->f, name);
    if (!t)
        fail_msg("%s case %d: no tensor %s", c->op, c->k, name);
    return t;
}

static json_t *fx_arg(const fx_case *c, const char *key)
{
    json_t *v = json_object_get(c->args, key);
    if (!v)
        fail_msg("%s case %d: argument \"%s\" missing", c->op, c->k, key);
    return v;
}

/* An integer list argument (or a number, as one item) into out[max]. */
static int fx_list(const fx_case *c, const char *key, int64_t *out, int max)
{
    json_t *v = fx_arg(c, key);
    if (json_is_integer(v)) {
        out[0] = json_integer_value(v);
        return 1;
    }
    int n = (int)json_array_size(v);
    assert_true(n <= max);
    for (int i = 0; i < n; i++)
        out[i] = json_integer_value(json_array_get(v, (size_t)i));
    return n;
}

static ag_conv2d_opts fx_conv2d_opts(const fx_case *c)
{
    ag_conv2d_opts o = {0};
    fx_list(c, "stride", o.stride, 2);
    fx_list(c, "padding", o.padding, 2);
    fx_list(c, "dilation", o.dilation, 2);
    o.groups = json_integer_value(fx_arg(c, "groups"));
    return o;
}

static ag_pool2d_opts fx_pool_opts(const fx_case *c)
{
    ag_pool2d_opts o = {0};
    fx_list(c, "kernel", o.kernel, 2);
    fx_list(c, "stride", o.stride, 2);
    fx_list(c, "padding", o.padding, 2);
    return o;
}

/* A zero persistent tensor that requires grad, of the shape in args[key]. */
static ag_tensor *fx_zeros(const fx_case *c, const char *key, ag_dtype dt)
{
    int64_t s[4];
    int n = fx_list(c, key, s, 4);
    ag_tensor *z = ag_tensor_new(dt, n, s);
    ag_set_requires_grad(z, true);
    return z;
}

/* The first derivative of <f(z), g> in z, with create_graph: what the
 * gradient rows compute, as a tape tensor.  z is freed by the caller. */
static ag_tensor *first_derivative(ag_tape *t, ag_tensor *fz, ag_tensor *g, ag_tensor *z)
{
    ag_tensor *l = ag_sum(t, ag_mul(t, fz, g), AG_ALL, false), *dz = NULL;
    if (!l || ag_gradients(t, l, NULL, 1, &z, &dz, true) != AG_OK)
        return NULL;
    return dz;
}

/* The op of a fixture file on its inputs (tapegrad's side); *tmp is a
 * persistent tensor to free after the case, or NULL. */
static ag_tensor *fx_run(ag_tape *t, const fx_case *c, ag_tensor **in, int n, ag_tensor **tmp)
{
    const char *op = c->op;
    ag_dtype dt = ag_dtype_of(in[0]);
    *tmp = NULL;
    if (!strcmp(op, "conv2d"))
        return ag_conv2d(t, in[0], in[1], n > 2 ? in[2] : NULL, fx_conv2d_opts(c));
    if (!strcmp(op, "conv1d")) {
        ag_conv1d_opts o = {0};
        fx_list(c, "stride", &o.stride, 1);
        fx_list(c, "padding", &o.padding, 1);
        fx_list(c, "dilation", &o.dilation, 1);
        o.groups = json_integer_value(fx_arg(c, "groups"));
        return ag_conv1d(t, in[0], in[1], n > 2 ? in[2] : NULL, o);
    }
    if (!strcmp(op, "conv2d_input_grad")) { /* in: g, w */
        *tmp = fx_zeros(c, "x_shape", dt);
        return first_derivative(t, ag_conv2d(t, *tmp, in[1], NULL, fx_conv2d_opts(c)), in[0],
                                *tmp);
    }
    if (!strcmp(op, "conv2d_weight_grad")) { /* in: x, g */
        *tmp = fx_zeros(c, "w_shape", dt);
        return first_derivative(t, ag_conv2d(t, in[0], *tmp, NULL, fx_conv2d_opts(c)), in[1],
                                *tmp);
    }
    if (!strcmp(op, "max_pool2d"))
        return ag_max_pool2d(t, in[0], fx_pool_opts(c));
    if (!strcmp(op, "avg_pool2d"))
        return ag_avg_pool2d(t, in[0], fx_pool_opts(c));
    int64_t out[2];
    bool adaptive = json_object_get(c->args, "out") != NULL;
    if (adaptive)
        fx_list(c, "out", out, 2);
    if (!strcmp(op, "adaptive_avg_pool2d"))
        return ag_adaptive_avg_pool2d(t, in[0], out[0], out[1]);
    assert_string_equal(op, "avg_pool2d_grad"); /* in: g */
    *tmp = fx_zeros(c, "x_shape", dt);
    ag_tensor *y = adaptive ? ag_adaptive_avg_pool2d(t, *tmp, out[0], out[1])
                            : ag_avg_pool2d(t, *tmp, fx_pool_opts(c));
    return first_derivative(t, y, in[0], *tmp);
}

/* ours against torch's; prints the first mismatches */
static bool close_to(const fx_case *c, const char *what, const ag_tensor *ours,
                     const ag_tensor *ref)
{
    ag_dtype dt = ag_dtype_of(ref);
    if (!ours || ag_numel(ours) != ag_numel(ref) || ag_ndim(ours) != ag_ndim(ref)) {
        print_message("  %s case %d %s: missing or misshapen\n", c->op, c->k, what);
        return false;
    }
    double atol = g_tol[dt].atol;
    for (int64_t i = 0; dt == AG_F32 && i < ag_numel(ref); i++)
        atol = fmax(atol, g_tol[dt].rtol * fabs(ag_get(ref, i)));
    int bad = 0;
    for (int64_t i = 0; i < ag_numel(ref); i++) {
        double a = ag_get(ours, i), b = ag_get(ref, i), d = fabs(a - b);
        if (fabs(b) >= 1e-3 && d / fabs(b) > g_max_rel[dt])
            g_max_rel[dt] = d / fabs(b);
        if (!(d <= atol + g_tol[dt].rtol * fabs(b)) && bad++ < 3)
            print_message("  %s.%s case %d %s[%lld]: %.17g, torch %.17g\n", c->op,
                          dt == AG_F64 ? "f64" : "f32", c->k, what, (long long)i, a, b);
    }
    return bad == 0;
}

static bool run_case(const ag_safetensors *f, const char *op, int k)
{
    char key[32];
    snprintf(key, sizeof key, "case%d.args", k);
    json_error_t jerr;
    fx_case c = {f, op, k, json_loads(ag_safetensors_meta(f, key), 0, &jerr)};
    assert_non_null(c.args);
    ag_tensor *in[4];
    int n = 0;
    for (char name[32]; n < 4; n++) {
        snprintf(name, sizeof name, "case%d.in%d", k, n);
        const ag_tensor *src = ag_safetensors_get(f, name);
        if (!src)
            break;
        in[n] = ag_tensor_clone(src);
        ag_set_requires_grad(in[n], true);
    }
    ag_tape *t = ag_tape_new();
    ag_tensor *tmp, *out = fx_run(t, &c, in, n, &tmp);
    bool ok = out && ag_backward_seeded(t, out, fx_get(&c, "seed")) == AG_OK;
    if (!ok)
        print_message("  %s case %d: %s\n", op, k, ag_tape_error(t));
    ok = ok && close_to(&c, "out", out, fx_get(&c, "out"));
    for (int i = 0; ok && i < n; i++) {
        char what[16];
        snprintf(what, sizeof what, "grad%d", i);
        ok = close_to(&c, what, ag_grad(in[i]), fx_get(&c, what));
    }
    ag_tape_free(t);
    for (int i = 0; i < n; i++)
        ag_tensor_free(in[i]);
    ag_tensor_free(tmp);
    json_decref(c.args);
    return ok;
}

static void test_conv_fixtures_match_torch(void **state)
{
    (void)state;
    static const char *ops[] = {"conv2d", "conv1d", "conv2d_input_grad",
                                "conv2d_weight_grad", "max_pool2d", "avg_pool2d",
                                "adaptive_avg_pool2d", "avg_pool2d_grad"};
    static const char *dts[] = {"f64", "f32"};
    int cases = 0;
    bool ok = true;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        for (int d = 0; d < 2; d++) {
            char rel[128];
            snprintf(rel, sizeof rel, "tests/reference/conv/%s.%s.safetensors", ops[i], dts[d]);
            ag_safetensors *f = tg_load_fixture(rel);
            assert_non_null(f);
            assert_string_equal(ag_safetensors_meta(f, "op"), ops[i]);
            assert_string_equal(ag_safetensors_meta(f, "dtype"), dts[d]);
            int nc = atoi(ag_safetensors_meta(f, "cases"));
            assert_true(nc > 0);
            for (int k = 0; k < nc; k++, cases++)
                ok &= run_case(f, ops[i], k);
            ag_safetensors_free(f);
        }
    print_message("%d cases; max relative error vs PyTorch: f64 %.3g, f32 %.3g\n", cases,
                  g_max_rel[AG_F64], g_max_rel[AG_F32]);
    assert_true(ok);
}

/* ---- values by hand, defaults ---- */

static void assert_values(const ag_tensor *t, const double *want, int64_t n)
{
    assert_non_null(t);
    assert_int_equal(ag_numel(t), n);
    double got[64];
    for (int64_t i = 0; i < n; i++)
        got[i] = ag_get(t, i);
    assert_doubles_close(got, want, n, 1e-6, 1e-6);
}

/* A literal tensor in dtype dt. */
static ag_tensor *lit(ag_dtype dt, int ndim, const int64_t *shape, const double *v)
{
    ag_tensor *x = tg_f64(ndim, shape, v), *y = tg_convert(x, dt);
    ag_tensor_free(x);
    return y;
}

/* Uniform in [-1, 1), f64, requiring grad. */
static ag_tensor *rand_tensor(ag_rng *rng, int ndim, const int64_t *shape)
{
    ag_tensor *x = ag_tensor_new(AG_F64, ndim, shape);
    for (int64_t i = 0; i < ag_numel(x); i++)
        ag_set(x, i, 2 * ag_rng_uniform(rng) - 1);
    ag_set_requires_grad(x, true);
    return x;
}

static void test_conv_hand_values(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        ag_dtype dt = (ag_dtype)d;
        ag_tensor *x = lit(dt, 4, S(1, 1, 3, 3), D(1, 2, 3, 4, 5, 6, 7, 8, 9));
        ag_tensor *diag = lit(dt, 4, S(1, 1, 2, 2), D(1, 0, 0, -1));
        ag_tensor *ones = lit(dt, 4, S(1, 1, 3, 3), D(1, 1, 1, 1, 1, 1, 1, 1, 1));
        ag_tensor *b = lit(dt, 1, S(1), D(0.5));
        ag_tape *t = ag_tape_new();
        /* y[i, j] = x[i, j] - x[i+1, j+1] + 0.5 */
        ag_tensor *y = ag_conv2d(t, x, diag, b, (ag_conv2d_opts){0});
        tg_assert_shape(y, 4, S(1, 1, 2, 2));
        assert_values(y, D(-3.5, -3.5, -3.5, -3.5), 4);
        /* stride 2, padding 1: sums of the 2x2 corners */
        y = ag_conv2d(t, x, ones, NULL, (ag_conv2d_opts){.stride = {2, 2}, .padding = {1, 1}});
        tg_assert_shape(y, 4, S(1, 1, 2, 2));
        assert_values(y, D(12, 16, 24, 28), 4);
        /* dilation 2: x[i, j] - x[i+2, j+2] */
        y = ag_conv2d(t, x, diag, NULL, (ag_conv2d_opts){.dilation = {2, 2}});
        tg_assert_shape(y, 4, S(1, 1, 1, 1));
        assert_values(y, D(-8), 1);
        ag_tape_free(t);
        ag_tensor_free(x);
        ag_tensor_free(diag);
        ag_tensor_free(ones);
        ag_tensor_free(b);
    }
}

static void test_pool_hand_values(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        ag_dtype dt = (ag_dtype)d;
        double v[16];
        for (int i = 0; i < 16; i++)
            v[i] = i;
        ag_tensor *x = lit(dt, 4, S(1, 1, 4, 4), v);
        ag_tensor *x2 = lit(dt, 4, S(1, 1, 2, 2), D(1, 2, 3, 4));
        ag_tape *t = ag_tape_new();
        ag_pool2d_opts k2 = {.kernel = {2, 2}};
        assert_values(ag_max_pool2d(t, x, k2), D(5, 7, 13, 15), 4);
        assert_values(ag_avg_pool2d(t, x, k2), D(2.5, 4.5, 10.5, 12.5), 4);
        assert_values(ag_adaptive_avg_pool2d(t, x, 1, 1), D(7.5), 1);
        /* count_include_pad: the padding counts in the divisor (4) */
        ag_tensor *y = ag_avg_pool2d(t, x2, (ag_pool2d_opts){.kernel = {2, 2},
                                                              .stride = {1, 1},
                                                              .padding = {1, 1}});
        tg_assert_shape(y, 4, S(1, 1, 3, 3));
        assert_values(y, D(0.25, 0.75, 0.5, 1, 2.5, 1.5, 0.75, 1.75, 1), 9);
        /* adaptive, 4 -> 3: windows [0, 2), [1, 3), [2, 4) */
        y = ag_adaptive_avg_pool2d(t, x, 3, 1);
        assert_values(y, D(3.5, 7.5, 11.5), 3);
        ag_tape_free(t);
        ag_tensor_free(x);
        ag_tensor_free(x2);
    }
}

/* Ties: the first maximum takes the gradient; a NaN wins its window, as
 * in PyTorch. */
static void test_max_pool_ties_and_nan(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(4, S(1, 2, 2, 2), D(1, 1, 1, 1, 1, NAN, 3, 2));
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_max_pool2d(t, x, (ag_pool2d_opts){.kernel = {2, 2}});
    assert_non_null(y);
    assert_true(ag_get(y, 0) == 1);
    assert_true(isnan(ag_get(y, 1)));
    ag_tensor *seed = tg_f64(4, S(1, 2, 1, 1), D(2, 3));
    assert_int_equal(ag_backward_seeded(t, y, seed), AG_OK);
    assert_values(ag_grad(x), D(2, 0, 0, 0, 0, 3, 0, 0), 8);
    ag_tape_free(t);
    ag_tensor_free(seed);
    ag_tensor_free(x);
}

static void test_conv_zero_opts_are_pytorch_defaults(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 11);
    ag_tensor *x = rand_tensor(&rng, 4, S(2, 3, 6, 5));
    ag_tensor *w = rand_tensor(&rng, 4, S(4, 3, 3, 2));
    ag_tensor *b = rand_tensor(&rng, 1, S(4));
    ag_tape *t = ag_tape_new();
    ag_tensor *y0 = ag_conv2d(t, x, w, b, (ag_conv2d_opts){0});
    ag_conv2d_opts o = {.stride = {1, 1}, .padding = {0, 0}, .dilation = {1, 1}, .groups = 1};
    ag_tensor *y1 = ag_conv2d(t, x, w, b, o);
    tg_assert_shape(y0, 4, S(2, 4, 4, 4));
    assert_tensor_close(y0, y1, 0, 0);
    /* pooling: stride 0 is the kernel size */
    ag_tensor *p0 = ag_max_pool2d(t, x, (ag_pool2d_opts){.kernel = {2, 2}});
    ag_tensor *p1 = ag_max_pool2d(t, x, (ag_pool2d_opts){.kernel = {2, 2}, .stride = {2, 2}});
    tg_assert_shape(p0, 4, S(2, 3, 3, 2));
    assert_tensor_close(p0, p1, 0, 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
}

/* ---- threads and allocations ---- */

/* Forward and backward of conv2d (1 -> 16 channels: the transposed
 * weight gradient) -> relu -> conv2d (16 -> 8) -> max_pool2d ->
 * avg_pool2d in f32 on nt threads: the output and every gradient, joined
 * into out. */
static int64_t conv_pool_run(int nt, ag_tensor **p, float *out)
{
    ag_set_num_threads(nt);
    ag_tape *t = ag_tape_new();
    ag_conv2d_opts pad = {.padding = {1, 1}};
    ag_tensor *y = ag_conv2d(t, p[0], p[1], p[2], pad);
    y = ag_conv2d(t, ag_relu(t, y), p[3], p[4], pad);
    ag_tensor *z = ag_max_pool2d(t, y, (ag_pool2d_opts){.kernel = {3, 3}, .stride = {2, 2},
                                                        .padding = {1, 1}});
    z = ag_avg_pool2d(t, z, (ag_pool2d_opts){.kernel = {2, 2}, .stride = {1, 1}});
    ag_tensor *l = ag_sum(t, ag_mul(t, z, z), AG_ALL, false);
    assert_int_equal(ag_backward(t, l), AG_OK);
    int64_t n = ag_numel(y);
    memcpy(out, ag_data(y), (size_t)n * sizeof(float));
    for (int i = 0; i < 5; i++) {
        memcpy(out + n, ag_data(ag_grad(p[i])), (size_t)ag_numel(p[i]) * sizeof(float));
        n += ag_numel(p[i]);
        ag_zero_grad(p[i]);
    }
    ag_tape_free(t);
    return n;
}

/* Sizes above the threshold for threads (16 chunks); with the built-in
 * GEMM (the same bits for any thread count itself) every result must be
 * identical. */
static void test_conv_same_bits_for_any_thread_count(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    const int64_t *shapes[5] = {S(20, 1, 14, 13), S(16, 1, 3, 3), S(16), S(8, 16, 3, 3), S(8)};
    int nd[5] = {4, 4, 1, 4, 1};
    ag_tensor *p[5];
    for (int i = 0; i < 5; i++) {
        ag_tensor *d = rand_tensor(&rng, nd[i], shapes[i]);
        p[i] = tg_convert(d, AG_F32);
        ag_set_requires_grad(p[i], true);
        ag_tensor_free(d);
    }
    enum { MAXN = 20 * 8 * 14 * 13 + 20 * 14 * 13 + 16 * 9 + 16 + 8 * 16 * 9 + 8 };
    static float one[MAXN], many[MAXN];
    ag_gemm_force_builtin(true);
    int64_t n = conv_pool_run(1, p, one);
    for (int nt = 2; nt <= 3; nt++) {
        assert_int_equal(conv_pool_run(nt, p, many), n);
        assert_memory_equal(one, many, (size_t)n * sizeof(float));
    }
    ag_gemm_force_builtin(false);
    ag_set_num_threads(0);
    for (int i = 0; i < 5; i++)
        ag_tensor_free(p[i]);
}

/* y, dw and db of sum(conv2d(x, w, b) * g) on nt threads, as doubles:
 * p = {x, w, b, g}, x needing no gradient (a first layer). */
static int64_t one_channel_run(int nt, ag_tensor *const *p, double *out)
{
    ag_set_num_threads(nt);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_conv2d(t, p[0], p[1], p[2], (ag_conv2d_opts){0});
    assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, y, p[3]), AG_ALL, false)), AG_OK);
    int64_t k = 0;
    const ag_tensor *r[3] = {y, ag_grad(p[1]), ag_grad(p[2])};
    for (int j = 0; j < 3; j++)
        for (int64_t i = 0; i < ag_numel(r[j]); i++)
            out[k++] = ag_get(r[j], i);
    ag_zero_grad(p[1]);
    ag_zero_grad(p[2]);
    ag_tape_free(t);
    return k;
}

/* The direct f32 kernels of a one-channel 3x3 first layer (output rows
 * of 16 and more: ragged row ends, an odd channel count for the pairs of
 * the weight gradient) agree with the generic f64 path and give the same
 * bits on 1, 2 and 3 threads. */
static void test_conv_direct_one_channel_layer(void **state)
{
    (void)state;
    const int64_t sizes[3][4] = {{3, 5, 19, 21}, {2, 7, 20, 34}, {64, 32, 28, 28}};
    enum { MAXN = 64 * 32 * 26 * 26 + 32 * 9 + 32 };
    static double ref[MAXN], one[MAXN], many[MAXN];
    for (int c = 0; c < 3; c++) {
        const int64_t *z = sizes[c];
        ag_rng rng;
        ag_rng_seed(&rng, 11 + (uint64_t)c);
        ag_tensor *d[4] = {rand_tensor(&rng, 4, S(z[0], 1, z[2], z[3])),
                           rand_tensor(&rng, 4, S(z[1], 1, 3, 3)), rand_tensor(&rng, 1, S(z[1])),
                           rand_tensor(&rng, 4, S(z[0], z[1], z[2] - 2, z[3] - 2))};
        ag_tensor *f[4];
        for (int i = 0; i < 4; i++) { /* f32 values, so both runs see the same inputs */
            f[i] = tg_convert(d[i], AG_F32);
            ag_tensor_free(d[i]);
            d[i] = tg_convert(f[i], AG_F64);
            ag_set_requires_grad(d[i], i == 1 || i == 2);
            ag_set_requires_grad(f[i], i == 1 || i == 2);
        }
        int64_t n = one_channel_run(1, d, ref);
        assert_int_equal(one_channel_run(1, f, one), n);
        double worst = 0, scale = 0;
        for (int64_t i = 0; i < n; i++) {
            worst = fmax(worst, fabs(one[i] - ref[i]));
            scale = fmax(scale, fabs(ref[i]));
        }
        print_message("direct conv %lldx1x%lldx%lld -> %lld: max |f32 - f64| %.3g of %.3g\n",
                      (long long)z[0], (long long)z[2], (long long)z[3], (long long)z[1], worst,
                      scale);
        assert_true(worst <= 1e-5 * scale);
        for (int nt = 2; nt <= 3; nt++) {
            assert_int_equal(one_channel_run(nt, f, many), n);
            assert_memory_equal(one, many, (size_t)n * sizeof *one);
        }
        for (int i = 0; i < 4; i++) {
            ag_tensor_free(d[i]);
            ag_tensor_free(f[i]);
        }
    }
    ag_set_num_threads(0);
}

/* Gradients of sum(conv2d(x, w, b) * g) for a batch, or one sample of
 * it at a time (added up), into dx, dw and db (f64). */
static void conv_grads(ag_tensor *x, ag_tensor *w, ag_tensor *b, ag_tensor *g, int64_t n,
                       double *dx, double *dw, double *db)
{
    ag_tape *t = ag_tape_new();
    const int64_t *xs = ag_shape(x), *gs = ag_shape(g);
    int64_t xn = ag_numel(x) / xs[0], gn = ag_numel(g) / gs[0];
    for (int64_t k = 0; k < xs[0]; k += n) {
        ag_tensor *xk = ag_tensor_new(AG_F64, 4, S(n, xs[1], xs[2], xs[3]));
        ag_tensor *gk = ag_tensor_new(AG_F64, 4, S(n, gs[1], gs[2], gs[3]));
        memcpy(ag_data(xk), (double *)ag_data(x) + k * xn, (size_t)(n * xn) * sizeof(double));
        memcpy(ag_data(gk), (double *)ag_data(g) + k * gn, (size_t)(n * gn) * sizeof(double));
        ag_set_requires_grad(xk, true);
        ag_tensor *y = ag_conv2d(t, xk, w, b, (ag_conv2d_opts){.padding = {1, 0}});
        assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, y, gk), AG_ALL, false)), AG_OK);
        memcpy(dx + k * xn, ag_data(ag_grad(xk)), (size_t)(n * xn) * sizeof(double));
        ag_tape_reset(t);
        ag_tensor_free(xk);
        ag_tensor_free(gk);
    }
    memcpy(dw, ag_data(ag_grad(w)), (size_t)ag_numel(w) * sizeof(double));
    memcpy(db, ag_data(ag_grad(b)), (size_t)ag_numel(b) * sizeof(double));
    ag_zero_grad(w);
    ag_zero_grad(b);
    ag_tape_free(t);
}

/* A batch large enough to be cut into chunks (weight gradient summed over
 * chunk partials, plain and transposed) agrees with one sample at a time
 * (one chunk each). */
static void test_conv_chunks_agree_with_single_samples(void **state)
{
    (void)state;
    const int64_t *cases[2][2] = {{S(8, 1, 12, 12), S(64, 1, 3, 3)},   /* dw^T */
                                  {S(8, 8, 10, 10), S(16, 8, 3, 3)}};
    for (int c = 0; c < 2; c++) {
        ag_rng rng;
        ag_rng_seed(&rng, 21 + (uint64_t)c);
        const int64_t *xs = cases[c][0], *ws = cases[c][1];
        ag_tensor *x = rand_tensor(&rng, 4, xs), *w = rand_tensor(&rng, 4, ws);
        ag_tensor *b = rand_tensor(&rng, 1, ws);
        ag_tensor *g = rand_tensor(&rng, 4, S(xs[0], ws[0], xs[2] + 2 - 2, xs[3] - 2));
        enum { MAX = 8 * 8 * 12 * 12 };
        static double dx[2][MAX], dw[2][64 * 72], db[2][64];
        conv_grads(x, w, b, g, xs[0], dx[0], dw[0], db[0]);
        conv_grads(x, w, b, g, 1, dx[1], dw[1], db[1]);
        assert_doubles_close(dx[0], dx[1], ag_numel(x), 1e-12, 1e-13);
        assert_doubles_close(dw[0], dw[1], ag_numel(w), 1e-12, 1e-13);
        assert_doubles_close(db[0], db[1], ws[0], 1e-12, 1e-13);
        ag_tensor_free(x);
        ag_tensor_free(w);
        ag_tensor_free(b);
        ag_tensor_free(g);
    }
}

/* A small CNN's training step: conv, relu, max pool, conv, relu,
 * adaptive average, linear, cross-entropy, backward, a plain SGD step. */
static void cnn_step(ag_tape *t, ag_tensor *x, const int64_t *labels, ag_tensor **p)
{
    ag_tensor *h = ag_relu(t, ag_conv2d(t, x, p[0], p[1], (ag_conv2d_opts){0}));
    h = ag_max_pool2d(t, h, (ag_pool2d_opts){.kernel = {2, 2}});
    h = ag_relu(t, ag_conv2d(t, h, p[2], p[3], (ag_conv2d_opts){0}));
    h = ag_adaptive_avg_pool2d(t, h, 1, 1);
    h = ag_reshape(t, h, 2, S(ag_shape(h)[0], ag_shape(h)[1]));
    ag_tensor *loss = ag_cross_entropy_logits(t, ag_linear(t, h, p[4], p[5]), labels,
                                              ag_shape(x)[0], NULL);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    for (int i = 0; i < 6; i++) {
        float *w = ag_data(p[i]);
        const float *g = ag_data(ag_grad(p[i]));
        for (int64_t k = 0; k < ag_numel(p[i]); k++)
            w[k] -= 0.01f * g[k];
        ag_tensor_mark_modified(p[i]);
        ag_zero_grad(p[i]);
    }
    ag_tape_reset(t);
}

static void cnn_alloc_run(void)
{
    tg_count_allocs();
    ag_set_num_threads(1);
    ag_rng rng;
    ag_rng_seed(&rng, 9);
    const int64_t *shapes[6] = {S(8, 1, 3, 3), S(8), S(16, 8, 3, 3), S(16), S(10, 16), S(10)};
    int nd[6] = {4, 1, 4, 1, 2, 1};
    ag_tensor *p[6];
    for (int i = 0; i < 6; i++) {
        ag_tensor *d = rand_tensor(&rng, nd[i], shapes[i]);
        p[i] = tg_convert(d, AG_F32);
        ag_set_requires_grad(p[i], true);
        ag_tensor_free(d);
    }
    ag_tensor *d = rand_tensor(&rng, 4, S(16, 1, 20, 20)), *x = tg_convert(d, AG_F32);
    ag_tensor_free(d);
    int64_t labels[16];
    for (int i = 0; i < 16; i++)
        labels[i] = i % 10;
    ag_tape *t = ag_tape_new();
    cnn_step(t, x, labels, p); /* warm-up: arena, gradients, pack buffers */
    cnn_step(t, x, labels, p);
    long before = tg_alloc_count;
    for (int i = 0; i < 5; i++)
        cnn_step(t, x, labels, p);
    print_message("%ld system allocations in 5 CNN steps after warm-up\n",
                  tg_alloc_count - before);
    assert_int_equal(tg_alloc_count - before, 0);
    ag_tape_free(t);
    for (int i = 0; i < 6; i++)
        ag_tensor_free(p[i]);
    ag_tensor_free(x);
    ag_set_allocator(NULL);
    ag_set_num_threads(0);
}

/* On one thread: the kernels' scratch is the tape's, so after the first
 * steps nothing is allocated.  (On more threads the GEMM's pack buffers,
 * one pair per pool thread, grow whenever a thread first happens to run a
 * larger product, which depends on which thread takes which chunk.) */
static void test_conv_cnn_step_allocates_nothing_once_warm(void **state)
{
    (void)state;
    cnn_alloc_run();
}

/* ---- errors ---- */

/* op's result is NULL and the tape keeps status st with msg in its
 * message; the tape is reset for the next check. */
#define assert_fails(t, call, st, msg)                                        \
    do {                                                                      \
        assert_null(call);                                                    \
        tg_assert_tape_error((t), (st), (msg));                               \
        ag_tape_reset(t);                                                     \
    } while (0)

static void test_conv_errors_name_function_argument_and_shapes(void **state)
{
    (void)state;
    ag_tensor *x = ag_tensor_new(AG_F64, 4, S(1, 3, 5, 5));
    ag_tensor *x3 = ag_tensor_new(AG_F64, 3, S(1, 3, 5));
    ag_tensor *w = ag_tensor_new(AG_F64, 4, S(4, 3, 3, 3));
    ag_tensor *w2 = ag_tensor_new(AG_F64, 4, S(4, 2, 3, 3));
    ag_tensor *w5 = ag_tensor_new(AG_F64, 4, S(1, 3, 7, 7));
    ag_tensor *wf = ag_tensor_new(AG_F32, 4, S(4, 3, 3, 3));
    ag_tensor *b3 = ag_tensor_new(AG_F64, 1, S(3));
    ag_tensor *w1d = ag_tensor_new(AG_F64, 3, S(4, 3, 3));
    ag_conv2d_opts none = {0};
    ag_tape *t = ag_tape_new();
    assert_fails(t, ag_conv2d(t, NULL, w, NULL, none), AG_ERR_NULL,
                 "ag_conv2d: input #1 is NULL");
    assert_fails(t, ag_conv2d(t, x3, w, NULL, none), AG_ERR_SHAPE,
                 "ag_conv2d: x is [1,3,5] but must be 4-D [N, C_in, H, W]");
    assert_fails(t, ag_conv2d(t, x, w1d, NULL, none), AG_ERR_SHAPE,
                 "ag_conv2d: w is [4,3,3] but must be 4-D [C_out, C_in/groups, kH, kW]");
    assert_fails(t, ag_conv2d(t, x, wf, NULL, none), AG_ERR_DTYPE,
                 "ag_conv2d: w is f32 but x is f64");
    assert_fails(t, ag_conv2d(t, x, w2, NULL, none), AG_ERR_SHAPE,
                 "ag_conv2d: w [4,2,3,3] takes 2 input channels a group but x [1,3,5,5] has "
                 "3 / groups 1 = 3");
    assert_fails(t, ag_conv2d(t, x, w, NULL, (ag_conv2d_opts){.groups = 2}), AG_ERR_SHAPE,
                 "ag_conv2d: groups 2 does not divide x's C_in (x [1,3,5,5], w [4,3,3,3])");
    assert_fails(t, ag_conv2d(t, x, w, b3, none), AG_ERR_SHAPE,
                 "ag_conv2d: b [3] does not match w [4,3,3,3] (b must be [4])");
    assert_fails(t, ag_conv2d(t, x, w, NULL, (ag_conv2d_opts){.stride = {1, -2}}),
                 AG_ERR_ARG, "ag_conv2d: stride[1] is -2 (must be in [1, 2147483647]; "
                 "0 means 1)");
    assert_fails(t, ag_conv2d(t, x, w, NULL, (ag_conv2d_opts){.padding = {-1, 0}}),
                 AG_ERR_ARG, "ag_conv2d: padding[0] is -1 (must be in [0, 2147483647])");
    assert_fails(t, ag_conv2d(t, x, w, NULL, (ag_conv2d_opts){.dilation = {INT64_MAX, 1}}),
                 AG_ERR_ARG, "ag_conv2d: dilation[0] is 9223372036854775807");
    assert_fails(t, ag_conv2d(t, x, w, NULL, (ag_conv2d_opts){.groups = -1}), AG_ERR_ARG,
                 "ag_conv2d: groups is -1");
    assert_fails(t, ag_conv2d(t, x, w5, NULL, none), AG_ERR_SHAPE,
                 "ag_conv2d: w [1,3,7,7]'s kernel, dilated by 1, spans 7 but x [1,3,5,5] "
                 "padded by 0 is 5 in dim 2");
    assert_fails(t, ag_conv2d(t, x, w, NULL, (ag_conv2d_opts){.dilation = {1, 3}}),
                 AG_ERR_SHAPE, "spans 7 but x [1,3,5,5] padded by 0 is 5 in dim 3");
    /* absurd padding: refused before any allocation */
    assert_fails(t, ag_conv2d(t, x, w, NULL, (ag_conv2d_opts){.padding = {INT32_MAX,
                                                                         INT32_MAX}}),
                 AG_ERR_NOMEM, "ag_conv2d: x [1,3,5,5] with w [4,3,3,3] needs too much memory");
    /* conv1d names itself and its 3-D shapes */
    assert_fails(t, ag_conv1d(t, x, w, NULL, (ag_conv1d_opts){0}), AG_ERR_SHAPE,
                 "ag_conv1d: x is [1,3,5,5] but must be 3-D [N, C_in, L]");
    assert_fails(t, ag_conv1d(t, x3, w1d, NULL, (ag_conv1d_opts){.stride = -1}), AG_ERR_ARG,
                 "ag_conv1d: stride is -1");
    assert_fails(t, ag_conv1d(t, x3, w1d, b3, (ag_conv1d_opts){0}), AG_ERR_SHAPE,
                 "ag_conv1d: b [3] does not match w [4,3,3] (b must be [4])");
    ag_tape_free(t);
    ag_tensor *all[] = {x, x3, w, w2, w5, wf, b3, w1d};
    for (int i = 0; i < 8; i++)
        ag_tensor_free(all[i]);
}

static void test_pool_errors_name_function_argument_and_shapes(void **state)
{
    (void)state;
    ag_tensor *x = ag_tensor_new(AG_F64, 4, S(1, 2, 4, 5));
    ag_tensor *x3 = ag_tensor_new(AG_F64, 3, S(2, 4, 5));
    ag_tensor *empty = ag_tensor_new(AG_F64, 4, S(1, 2, 0, 5));
    ag_tape *t = ag_tape_new();
    assert_fails(t, ag_max_pool2d(t, x3, (ag_pool2d_opts){.kernel = {2, 2}}), AG_ERR_SHAPE,
                 "ag_max_pool2d: x is [2,4,5] but must be 4-D [N, C, H, W] with H, W >= 1");
    assert_fails(t, ag_avg_pool2d(t, empty, (ag_pool2d_opts){.kernel = {2, 2}}),
                 AG_ERR_SHAPE, "ag_avg_pool2d: x is [1,2,0,5] but must be 4-D");
    assert_fails(t, ag_max_pool2d(t, x, (ag_pool2d_opts){0}), AG_ERR_ARG,
                 "ag_max_pool2d: kernel[0] is 0 (must be in [1, 2147483647])");
    assert_fails(t, ag_avg_pool2d(t, x, (ag_pool2d_opts){.kernel = {2, 2}, .stride = {1, -1}}),
                 AG_ERR_ARG, "ag_avg_pool2d: stride[1] is -1 (must be in [1, 2147483647]; "
                 "0 means the kernel size)");
    assert_fails(t, ag_avg_pool2d(t, x, (ag_pool2d_opts){.kernel = {3, 3}, .padding = {1, 2}}),
                 AG_ERR_ARG, "ag_avg_pool2d: padding[1] is 2 (must be in [0, 1]: at most half "
                 "the kernel)");
    assert_fails(t, ag_max_pool2d(t, x, (ag_pool2d_opts){.kernel = {5, 2}}), AG_ERR_SHAPE,
                 "ag_max_pool2d: kernel[0] = 5 is larger than x [1,2,4,5] padded by 0 (4 in "
                 "dim 2)");
    assert_fails(t, ag_adaptive_avg_pool2d(t, x, 0, 2), AG_ERR_ARG,
                 "ag_adaptive_avg_pool2d: out_h is 0 (must be in [1, 2147483647])");
    assert_fails(t, ag_adaptive_avg_pool2d(t, x, 2, INT64_MAX), AG_ERR_ARG,
                 "ag_adaptive_avg_pool2d: out_w is 9223372036854775807");
    assert_fails(t, ag_adaptive_avg_pool2d(t, x, INT32_MAX, INT32_MAX), AG_ERR_NOMEM,
                 "ag_adaptive_avg_pool2d: x [1,2,4,5]: the result");
    assert_fails(t, ag_adaptive_avg_pool2d(t, NULL, 1, 1), AG_ERR_NULL,
                 "ag_adaptive_avg_pool2d: input #1 is NULL");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(x3);
    ag_tensor_free(empty);
}

/* An empty batch gives an empty result and zero weight gradients. */
static void test_conv_empty_batch(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    ag_tensor *x = rand_tensor(&rng, 4, S(0, 2, 5, 5)), *w = rand_tensor(&rng, 4, S(3, 2, 3, 3));
    ag_tensor *b = rand_tensor(&rng, 1, S(3));
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_conv2d(t, x, w, b, (ag_conv2d_opts){0});
    tg_assert_shape(y, 4, S(0, 3, 3, 3));
    ag_tensor *z = ag_max_pool2d(t, y, (ag_pool2d_opts){.kernel = {2, 2}});
    tg_assert_shape(z, 4, S(0, 3, 1, 1));
    assert_int_equal(ag_backward(t, ag_sum(t, z, AG_ALL, false)), AG_OK);
    for (int64_t i = 0; i < ag_numel(w); i++)
        assert_true(ag_get(ag_grad(w), i) == 0);
    assert_true(ag_get(ag_grad(b), 0) == 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_fixtures_match_torch),
        cmocka_unit_test(test_conv_hand_values),
        cmocka_unit_test(test_pool_hand_values),
        cmocka_unit_test(test_max_pool_ties_and_nan),
        cmocka_unit_test(test_conv_zero_opts_are_pytorch_defaults),
        cmocka_unit_test(test_conv_same_bits_for_any_thread_count),
        cmocka_unit_test(test_conv_chunks_agree_with_single_samples),
        cmocka_unit_test(test_conv_direct_one_channel_layer),
        cmocka_unit_test(test_conv_cnn_step_allocates_nothing_once_warm),
        cmocka_unit_test(test_conv_errors_name_function_argument_and_shapes),
        cmocka_unit_test(test_pool_errors_name_function_argument_and_shapes),
        cmocka_unit_test(test_conv_empty_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
