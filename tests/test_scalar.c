/* test_scalar.c — the scalar path: hand-derived gradients, finite
 * differences for every op, agreement with the tensor path, replay,
 * scalars mixed with tensors, and second order (HVP, Hessian) against
 * analytic second derivatives and finite differences of gradients. */
#include "test_util.h"

#include <math.h>
#include <string.h>

typedef ag_var (*bin_fn)(ag_tape *, ag_var, ag_var);
typedef ag_var (*un_fn)(ag_tape *, ag_var);

static const struct { const char *name; bin_fn f; double x, y; } binaries[] = {
    {"add", ag_var_add, 0.7, -1.3}, {"sub", ag_var_sub, 0.7, -1.3},
    {"mul", ag_var_mul, 0.7, -1.3}, {"div", ag_var_div, 0.7, -1.3},
    {"pow", ag_var_pow, 1.7, -1.3}, {"min", ag_var_min, 0.7, -1.3},
    {"max", ag_var_max, 0.7, -1.3},
};
static const struct { const char *name; un_fn f; double x; } unaries[] = {
    {"neg", ag_var_neg, 0.3}, {"exp", ag_var_exp, 0.3}, {"log", ag_var_log, 0.3},
    {"sqrt", ag_var_sqrt, 0.3}, {"sin", ag_var_sin, 0.3}, {"cos", ag_var_cos, 0.3},
    {"tanh", ag_var_tanh, 0.3}, {"sigmoid", ag_var_sigmoid, -0.8},
    {"relu", ag_var_relu, 0.3}, {"relu", ag_var_relu, -0.3}, {"abs", ag_var_abs, -0.3},
};

static double eval_bin(bin_fn f, double x, double y, double *gx, double *gy)
{
    ag_tape *t = ag_tape_new();
    ag_var a = ag_var_new(t, x), b = ag_var_new(t, y);
    ag_var z = f(t, a, b);
    assert_int_equal(ag_var_backward(t, z), AG_OK);
    double v = ag_var_value(t, z);
    if (gx) *gx = ag_var_grad(t, a);
    if (gy) *gy = ag_var_grad(t, b);
    ag_tape_free(t);
    return v;
}

static double eval_un(un_fn f, double x, double *gx)
{
    ag_tape *t = ag_tape_new();
    ag_var a = ag_var_new(t, x);
    ag_var z = f(t, a);
    assert_int_equal(ag_var_backward(t, z), AG_OK);
    double v = ag_var_value(t, z);
    if (gx) *gx = ag_var_grad(t, a);
    ag_tape_free(t);
    return v;
}

static void check_close(const char *what, double a, double n)
{
    if (fabs(a - n) > 1e-8 + 1e-6 * fabs(n))
        fail_msg("%s: analytic %.12g vs numeric %.12g", what, a, n);
}

static void test_scalar_every_op_finite_differences(void **state)
{
    (void)state;
    const double h = 1e-6;
    for (size_t k = 0; k < sizeof binaries / sizeof binaries[0]; k++) {
        double gx, gy, x = binaries[k].x, y = binaries[k].y;
        eval_bin(binaries[k].f, x, y, &gx, &gy);
        check_close(binaries[k].name, gx,
                    (eval_bin(binaries[k].f, x + h, y, 0, 0) -
                     eval_bin(binaries[k].f, x - h, y, 0, 0)) / (2 * h));
        check_close(binaries[k].name, gy,
                    (eval_bin(binaries[k].f, x, y + h, 0, 0) -
                     eval_bin(binaries[k].f, x, y - h, 0, 0)) / (2 * h));
    }
    for (size_t k = 0; k < sizeof unaries / sizeof unaries[0]; k++) {
        double gx, x = unaries[k].x;
        eval_un(unaries[k].f, x, &gx);
        check_close(unaries[k].name, gx,
                    (eval_un(unaries[k].f, x + h, 0) - eval_un(unaries[k].f, x - h, 0)) /
                        (2 * h));
    }
}

/* f(x, y) = sin(x) * y + exp(x * y) / y: hand-derived partials */
static void test_scalar_hand_derived(void **state)
{
    (void)state;
    double x = 0.4, y = 1.7;
    ag_tape *t = ag_tape_new();
    ag_var a = ag_var_new(t, x), b = ag_var_new(t, y);
    ag_var f = ag_var_add(t, ag_var_mul(t, ag_var_sin(t, a), b),
                          ag_var_div(t, ag_var_exp(t, ag_var_mul(t, a, b)), b));
    assert_int_equal(ag_var_backward(t, f), AG_OK);
    double e = exp(x * y);
    check_close("df/dx", ag_var_grad(t, a), cos(x) * y + e);
    check_close("df/dy", ag_var_grad(t, b), sin(x) + (x * y * e - e) / (y * y));
    assert_true(ag_var_value(t, f) == sin(x) * y + e / y);
    ag_tape_free(t);
}

/* The same function through the tensor path gives the same gradients. */
static void test_scalar_equals_tensor_path(void **state)
{
    (void)state;
    double xs[] = {0.3, -1.2, 0.8};
    ag_tape *t = ag_tape_new();
    ag_var v[3], acc = ag_var_const(t, 0);
    for (int i = 0; i < 3; i++) {
        v[i] = ag_var_new(t, xs[i]);
        acc = ag_var_add(t, acc, ag_var_mul(t, ag_var_tanh(t, v[i]), v[i]));
    }
    assert_int_equal(ag_var_backward(t, acc), AG_OK);
    int64_t s[] = {3};
    ag_tensor *x = tg_f64(1, s, xs);
    ag_set_requires_grad(x, true);
    ag_tape *t2 = ag_tape_new();
    ag_tensor *y = ag_sum(t2, ag_mul(t2, ag_tanh(t2, x), x), AG_ALL, false);
    assert_int_equal(ag_backward(t2, y), AG_OK);
    for (int i = 0; i < 3; i++)
        assert_true(fabs(ag_var_grad(t, v[i]) - ag_get(ag_grad(x), i)) < 1e-15);
    assert_true(fabs(ag_var_value(t, acc) - ag_item(y)) < 1e-15);
    ag_tape_free(t);
    ag_tape_free(t2);
    ag_tensor_free(x);
}

/* Rosenbrock-like program with a max: record once, replay at new points. */
static ag_var program(ag_tape *t, ag_var *x, int n)
{
    ag_var hundred = ag_var_const(t, 100), one = ag_var_const(t, 1);
    ag_var f = ag_var_const(t, 0);
    for (int i = 0; i + 1 < n; i++) {
        ag_var d = ag_var_sub(t, x[i + 1], ag_var_mul(t, x[i], x[i]));
        ag_var e = ag_var_sub(t, one, x[i]);
        f = ag_var_add(t, f, ag_var_add(t, ag_var_mul(t, hundred, ag_var_mul(t, d, d)),
                                       ag_var_mul(t, e, e)));
    }
    return ag_var_add(t, f, ag_var_max(t, x[0], ag_var_const(t, -10)));
}

static void test_scalar_replay_matches_rerecording(void **state)
{
    (void)state;
    enum { N = 6 };
    ag_rng rng;
    ag_rng_seed(&rng, 11);
    ag_tape *rec = ag_tape_new(), *fresh = ag_tape_new();
    ag_var x[N];
    for (int i = 0; i < N; i++)
        x[i] = ag_var_new(rec, 0.5);
    ag_var f = program(rec, x, N);
    for (int trial = 0; trial < 100; trial++) {
        double vals[N];
        for (int i = 0; i < N; i++)
            vals[i] = 4 * ag_rng_uniform(&rng) - 2;
        assert_int_equal(ag_tape_replay(rec, N, x, vals), AG_OK);
        assert_int_equal(ag_var_backward(rec, f), AG_OK);
        ag_tape_reset(fresh);
        ag_var y[N];
        for (int i = 0; i < N; i++)
            y[i] = ag_var_new(fresh, vals[i]);
        ag_var g = program(fresh, y, N);
        assert_int_equal(ag_var_backward(fresh, g), AG_OK);
        assert_true(ag_var_value(rec, f) == ag_var_value(fresh, g));
        for (int i = 0; i < N; i++)
            assert_true(ag_var_grad(rec, x[i]) == ag_var_grad(fresh, y[i]));
    }
    /* x0 = -20 makes max pick the constant: the recorded branch changes */
    double bad[N] = {-20, 0, 0, 0, 0, 0};
    assert_int_equal(ag_tape_replay(rec, N, x, bad), AG_ERR_RETAPE);
    assert_non_null(strstr(ag_tape_error(rec), "record"));
    ag_tape_free(rec);
    ag_tape_free(fresh);
}

static void test_scalar_less_is_a_recorded_branch(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_var a = ag_var_new(t, 1), b = ag_var_const(t, 2);
    assert_true(ag_var_less(t, a, b));
    ag_var f = ag_var_mul(t, a, a);
    double ok = 1.5, flip = 3;
    assert_int_equal(ag_tape_replay(t, 1, &a, &ok), AG_OK);
    assert_int_equal(ag_var_backward(t, f), AG_OK);
    assert_true(ag_var_grad(t, a) == 3.0);
    assert_int_equal(ag_tape_replay(t, 1, &a, &flip), AG_ERR_RETAPE);
    ag_tape_free(t);
}

/* tensor -> var -> scalar ops -> tensor -> tensor ops -> loss, both ways */
static void test_scalar_mixes_with_tensors(void **state)
{
    (void)state;
    ag_tensor *w = ag_tensor_full(AG_F64, 0, NULL, 0.5);
    ag_set_requires_grad(w, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *w2 = ag_mul_scalar(t, w, 3.0);           /* 1.5 */
    ag_var s = ag_var_from_tensor(t, w2);
    ag_var u = ag_var_new(t, 2.0);
    ag_var prod[2] = {ag_var_mul(t, s, u), ag_var_sin(t, s)};
    int64_t shape[] = {2};
    ag_tensor *v = ag_tensor_from_vars(t, AG_F64, 1, shape, prod);
    ag_tensor *loss = ag_sum(t, ag_mul(t, v, v), AG_ALL, false);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    /* loss = (3w u)^2 + sin(3w)^2 */
    double a = 1.5;
    check_close("dL/dw", ag_get(ag_grad(w), 0), 3 * (2 * a * 4 + 2 * sin(a) * cos(a)));
    check_close("dL/du", ag_var_grad(t, u), 2 * a * a * 2);
    ag_tape_free(t);
    ag_tensor_free(w);
}

static void test_scalar_errors(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_var a = ag_var_new(t, 1);
    ag_tape_reset(t);
    ag_var b = ag_var_exp(t, a); /* a died with the reset */
    assert_true(b.id < 0);
    assert_int_equal(ag_tape_status(t), AG_ERR_STATE);
    assert_non_null(strstr(ag_tape_error(t), "ag_var_exp"));
    assert_true(ag_var_mul(t, b, b).id < 0);
    assert_int_equal(ag_var_backward(t, b), AG_ERR_STATE);
    assert_true(isnan(ag_var_value(t, b)));
    ag_tape_free(t);
    assert_true(ag_scalar_bytes_per_op() <= 32);
}

/* ---- second order ---- */

/* |got - want| <= 1e-12 |want| (+ 1e-15 for zeros) */
static void check_tight(const char *what, int k, double got, double want)
{
    if (!(fabs(got - want) <= 1e-12 * fabs(want) + 1e-15))
        fail_msg("%s [%d]: got %.17g, want %.17g", what, k, got, want);
}

/* One op with its analytic partials and second partials at (x, y). */
typedef struct {
    const char *name;
    double x, y;
    double z, zx, zy, zxx, zxy, zyy;
} op_second;

static int op_seconds(op_second *o)
{
    int n = 0;
    double x = 0.7, y = -1.3, px = 1.7, py = -1.3, q = pow(px, py - 1), lp = log(px);
    o[n++] = (op_second){"add", x, y, x + y, 1, 1, 0, 0, 0};
    o[n++] = (op_second){"sub", x, y, x - y, 1, -1, 0, 0, 0};
    o[n++] = (op_second){"mul", x, y, x * y, y, x, 0, 1, 0};
    o[n++] = (op_second){"div", x, y, x / y, 1 / y, -x / (y * y), 0, -1 / (y * y),
                         2 * x / (y * y * y)};
    o[n++] = (op_second){"pow", px, py, pow(px, py), py * q, pow(px, py) * lp,
                         py * (py - 1) * pow(px, py - 2), q * (1 + py * lp),
                         pow(px, py) * lp * lp};
    o[n++] = (op_second){"min", x, y, y, 0, 1, 0, 0, 0};
    o[n++] = (op_second){"max", x, y, x, 1, 0, 0, 0, 0};
    o[n++] = (op_second){"min", 0.5, 0.5, 0.5, 0.5, 0.5, 0, 0, 0}; /* a tie */
    return n;
}

static int un_seconds(op_second *o)
{
    int n = 0;
    double x = 0.3, s = 1 / (1 + exp(0.8)), th = tanh(x);
    o[n++] = (op_second){"neg", x, 0, -x, -1, 0, 0, 0, 0};
    o[n++] = (op_second){"exp", x, 0, exp(x), exp(x), 0, exp(x), 0, 0};
    o[n++] = (op_second){"log", x, 0, log(x), 1 / x, 0, -1 / (x * x), 0, 0};
    o[n++] = (op_second){"sqrt", x, 0, sqrt(x), 0.5 / sqrt(x), 0, -0.25 / (x * sqrt(x)), 0, 0};
    o[n++] = (op_second){"sin", x, 0, sin(x), cos(x), 0, -sin(x), 0, 0};
    o[n++] = (op_second){"cos", x, 0, cos(x), -sin(x), 0, -cos(x), 0, 0};
    o[n++] = (op_second){"tanh", x, 0, th, 1 - th * th, 0, -2 * th * (1 - th * th), 0, 0};
    o[n++] = (op_second){"sigmoid", -0.8, 0, s, s * (1 - s), 0, s * (1 - s) * (1 - 2 * s), 0,
                         0};
    o[n++] = (op_second){"relu", x, 0, x, 1, 0, 0, 0, 0};
    o[n++] = (op_second){"relu", -x, 0, 0, 0, 0, 0, 0, 0};
    o[n++] = (op_second){"abs", -x, 0, x, -1, 0, 0, 0, 0};
    return n;
}

static ag_var apply_named(ag_tape *t, const char *name, ag_var a, ag_var b)
{
    for (size_t k = 0; k < sizeof binaries / sizeof binaries[0]; k++)
        if (!strcmp(binaries[k].name, name))
            return binaries[k].f(t, a, b);
    for (size_t k = 0; k < sizeof unaries / sizeof unaries[0]; k++)
        if (!strcmp(unaries[k].name, name))
            return unaries[k].f(t, a);
    fail_msg("no op %s", name);
    return a;
}

/* Hessian and HVP of z = op(x, y) and of z^2 = mul(z, z), whose Hessian
 * 2 (dz dz^T + z Hz) also exercises a non-unit adjoint and its tangent. */
static void check_op_second(const op_second *o, int n)
{
    double hz[4] = {o->zxx, o->zxy, o->zxy, o->zyy}, dz[2] = {o->zx, o->zy};
    const double v[2] = {0.37, -1.21};
    for (int squared = 0; squared < 2; squared++) {
        ag_tape *t = ag_tape_new();
        ag_var x[2] = {ag_var_new(t, o->x), ag_var_new(t, o->y)};
        ag_var z = apply_named(t, o->name, x[0], x[1]);
        ag_var f = squared ? ag_var_mul(t, z, z) : z;
        double h[4], hv[2], want[4];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                want[i * n + j] = squared ? 2 * (dz[i] * dz[j] + o->z * hz[i * 2 + j])
                                          : hz[i * 2 + j];
        assert_int_equal(ag_var_hessian(t, f, n, x, h), AG_OK);
        for (int k = 0; k < n * n; k++)
            check_tight(o->name, k, h[k], want[k]);
        for (int i = 0; i < n; i++)
            check_tight(o->name, 10 + i, ag_var_grad(t, x[i]),
                        squared ? 2 * o->z * dz[i] : dz[i]);
        assert_int_equal(ag_var_hvp(t, f, n, x, v, hv), AG_OK);
        for (int i = 0; i < n; i++)
            check_tight(o->name, 20 + i, hv[i],
                        want[i * n] * v[0] + (n > 1 ? want[i * n + 1] * v[1] : 0));
        ag_tape_free(t);
    }
}

static void test_var_hvp_every_op_analytic(void **state)
{
    (void)state;
    op_second o[16];
    for (int k = 0, n = op_seconds(o); k < n; k++)
        check_op_second(&o[k], 2);
    for (int k = 0, n = un_seconds(o); k < n; k++)
        check_op_second(&o[k], 1);
}

/* Constants carry no tangent: f = c x^3 (pow by a constant) + c / x + (x < c) */
static void test_var_hvp_constants(void **state)
{
    (void)state;
    double x0 = 1.3, c0 = 2.5;
    ag_tape *t = ag_tape_new();
    ag_var x = ag_var_new(t, x0), c = ag_var_const(t, c0), w = ag_var_new(t, 9);
    assert_true(ag_var_less(t, x, c));
    ag_var f = ag_var_add(t, ag_var_mul(t, c, ag_var_pow(t, x, ag_var_const(t, 3))),
                          ag_var_add(t, ag_var_div(t, c, x), w));
    double h, v = 2, hv;
    assert_int_equal(ag_var_hessian(t, f, 1, &x, &h), AG_OK);
    check_tight("f''", 0, h, 6 * c0 * x0 + 2 * c0 / (x0 * x0 * x0));
    check_tight("f'", 0, ag_var_grad(t, x), 3 * c0 * x0 * x0 - c0 / (x0 * x0));
    check_tight("df/dw", 0, ag_var_grad(t, w), 1); /* an input outside x: held fixed */
    assert_int_equal(ag_var_hvp(t, f, 1, &x, &v, &hv), AG_OK);
    check_tight("f'' v", 0, hv, 2 * h);
    ag_tape_free(t);
}

/* Every op kind, chained: the finite differences check the composition. */
static ag_var composite(ag_tape *t, const ag_var *x)
{
    ag_var c = ag_var_const(t, 0.5);
    ag_var u = ag_var_add(t, ag_var_mul(t, ag_var_sin(t, x[0]), ag_var_exp(t, x[1])),
                          ag_var_div(t, ag_var_cos(t, x[2]), ag_var_add(t, x[3], c)));
    ag_var w = ag_var_pow(t, ag_var_sqrt(t, ag_var_mul(t, x[3], x[3])), x[1]);
    ag_var r = ag_var_sub(t, ag_var_tanh(t, ag_var_mul(t, x[0], x[2])),
                          ag_var_log(t, ag_var_sigmoid(t, ag_var_neg(t, x[1]))));
    ag_var m = ag_var_max(t, ag_var_relu(t, u), ag_var_abs(t, ag_var_min(t, x[0], x[2])));
    return ag_var_add(t, ag_var_mul(t, u, w), ag_var_mul(t, r, ag_var_add(t, m, w)));
}

static void composite_grad(const double *xs, double *g)
{
    ag_tape *t = ag_tape_new();
    ag_var x[4];
    for (int i = 0; i < 4; i++)
        x[i] = ag_var_new(t, xs[i]);
    assert_int_equal(ag_var_backward(t, composite(t, x)), AG_OK);
    for (int i = 0; i < 4; i++)
        g[i] = ag_var_grad(t, x[i]);
    ag_tape_free(t);
}

static void test_var_hvp_matches_finite_differences(void **state)
{
    (void)state;
    const double xs[4] = {0.6, 0.4, -0.9, 1.2}, v[4] = {0.3, -0.7, 0.5, 1.1}, eps = 1e-5;
    ag_tape *t = ag_tape_new();
    ag_var x[4];
    for (int i = 0; i < 4; i++)
        x[i] = ag_var_new(t, xs[i]);
    ag_var f = composite(t, x);
    double hv[4], h[16], g[4], gp[4], gm[4], xp[4], xm[4], fd[4];
    assert_int_equal(ag_var_hvp(t, f, 4, x, v, hv), AG_OK);
    composite_grad(xs, g);
    for (int i = 0; i < 4; i++)
        assert_true(ag_var_grad(t, x[i]) == g[i]); /* as after ag_var_backward */
    for (int i = 0; i < 4; i++) {
        xp[i] = xs[i] + eps * v[i];
        xm[i] = xs[i] - eps * v[i];
    }
    composite_grad(xp, gp);
    composite_grad(xm, gm);
    for (int i = 0; i < 4; i++)
        fd[i] = (gp[i] - gm[i]) / (2 * eps);
    assert_doubles_close(hv, fd, 4, 1e-7, 1e-8);
    /* the Hessian: symmetric, and H v is the same product */
    assert_int_equal(ag_var_hessian(t, f, 4, x, h), AG_OK);
    for (int i = 0; i < 4; i++) {
        double hvi = 0;
        for (int j = 0; j < 4; j++) {
            hvi += h[i * 4 + j] * v[j];
            check_tight("symmetric", i * 4 + j, h[i * 4 + j], h[j * 4 + i]);
        }
        check_tight("H v", i, hvi, hv[i]);
    }
    ag_tape_free(t);
}

/* f = sum_i 100 (x[2i+1] - x[2i]^2)^2 + (1 - x[2i])^2, as bench/scalar:
 * block diagonal with blocks [[1200 a^2 - 400 b + 2, -400 a], [-400 a, 200]] */
static ag_var rosenbrock(ag_tape *t, const ag_var *x, int n)
{
    ag_var hundred = ag_var_const(t, 100), one = ag_var_const(t, 1), f = ag_var_const(t, 0);
    for (int i = 0; i + 1 < n; i += 2) {
        ag_var d = ag_var_sub(t, x[i + 1], ag_var_mul(t, x[i], x[i]));
        ag_var e = ag_var_sub(t, one, x[i]);
        f = ag_var_add(t, f, ag_var_add(t, ag_var_mul(t, hundred, ag_var_mul(t, d, d)),
                                        ag_var_mul(t, e, e)));
    }
    return f;
}

static double rosen_h(const double *xs, int n, int i, int j)
{
    if (i / 2 != j / 2)
        return 0;
    double a = xs[i & ~1], b = xs[i | 1];
    if (i % 2 == 0 && j % 2 == 0)
        return 1200 * a * a - 400 * b + 2;
    return i % 2 && j % 2 ? 200 : -400 * a;
    (void)n;
}

static void test_var_hessian_rosenbrock_closed_form(void **state)
{
    (void)state;
    enum { N = 8, BIG = 2000 };
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    ag_tape *t = ag_tape_new();
    static double xs[BIG], v[BIG], hv[BIG], h[N * N];
    static ag_var x[BIG];
    for (int i = 0; i < BIG; i++) {
        xs[i] = 3 * ag_rng_uniform(&rng) - 1.5;
        v[i] = 2 * ag_rng_uniform(&rng) - 1;
    }
    for (int i = 0; i < N; i++)
        x[i] = ag_var_new(t, xs[i]);
    ag_var f = rosenbrock(t, x, N);
    assert_int_equal(ag_var_hessian(t, f, N, x, h), AG_OK);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            check_tight("H", i * N + j, h[i * N + j], rosen_h(xs, N, i, j));
    for (int i = 0; i < N; i += 2) {
        double a = xs[i], b = xs[i + 1];
        check_tight("df/da", i, ag_var_grad(t, x[i]), -400 * a * (b - a * a) - 2 * (1 - a));
        check_tight("df/db", i, ag_var_grad(t, x[i + 1]), 200 * (b - a * a));
    }
    /* a longer program after a reset: the tangent arrays grow and are reused */
    for (int rep = 0; rep < 2; rep++) {
        ag_tape_reset(t);
        for (int i = 0; i < BIG; i++)
            x[i] = ag_var_new(t, xs[i]);
        f = rosenbrock(t, x, BIG);
        assert_true(ag_tape_scalar_ops(t) > 4096);
        assert_int_equal(ag_var_hvp(t, f, BIG, x, v, hv), AG_OK);
        for (int i = 0; i < BIG; i++) {
            int j = i ^ 1;
            check_tight("H v", i, hv[i], rosen_h(xs, BIG, i, i) * v[i] +
                                             rosen_h(xs, BIG, i, j) * v[j]);
        }
    }
    /* at a replayed point */
    for (int i = 0; i < BIG; i++)
        xs[i] = 0.5 * xs[i] + 0.25;
    assert_int_equal(ag_tape_replay(t, BIG, x, xs), AG_OK);
    assert_int_equal(ag_var_hvp(t, f, BIG, x, v, hv), AG_OK);
    for (int i = 0; i < BIG; i++)
        check_tight("replayed H v", i, hv[i], rosen_h(xs, BIG, i, i) * v[i] +
                                                  rosen_h(xs, BIG, i, i ^ 1) * v[i ^ 1]);
    ag_tape_free(t);
}

/* Each error on a fresh tape: errors are kept until a reset. */
static void test_var_hvp_errors(void **state)
{
    (void)state;
    double v[1] = {1}, hv[1], h[1];
    ag_tape *t;
    ag_var x = {-1, 0}, f = {-1, 0};
#define FRESH() (t = ag_tape_new(), x = ag_var_new(t, 2), f = ag_var_exp(t, x))
    assert_int_equal(ag_var_hvp(NULL, f, 1, &x, v, hv), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "ag_var_hvp: tape is NULL"));
    assert_int_equal(ag_var_hessian(NULL, f, 1, &x, h), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "ag_var_hessian"));

    FRESH();
    ag_tensor *a = ag_tensor_full(AG_F64, 0, NULL, 1.5);
    ag_set_requires_grad(a, true);
    ag_mul_scalar(t, a, 2.0); /* a tensor entry */
    assert_int_equal(ag_var_hvp(t, f, 1, &x, v, hv), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_var_hvp: the tape holds tensor ops");
    ag_tape_free(t);
    FRESH();
    ag_var s = ag_var_from_tensor(t, a); /* bridged without an entry */
    assert_int_equal(ag_var_hessian(t, ag_var_mul(t, s, f), 1, &x, h), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_var_hessian");
    ag_tape_free(t);
    ag_tensor_free(a);

    FRESH();
    assert_int_equal(ag_var_hvp(t, f, -1, &x, v, hv), AG_ERR_ARG);
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_var_hvp: n is -1");
    ag_tape_free(t);
    const char *nulls[] = {"x is NULL", "v is NULL", "hv is NULL"};
    for (int k = 0; k < 3; k++) {
        FRESH();
        assert_int_equal(ag_var_hvp(t, f, 1, k == 0 ? NULL : &x, k == 1 ? NULL : v,
                                    k == 2 ? NULL : hv), AG_ERR_ARG);
        tg_assert_tape_error(t, AG_ERR_ARG, nulls[k]);
        ag_tape_free(t);
    }
    FRESH();
    assert_int_equal(ag_var_hessian(t, f, 1, &x, NULL), AG_ERR_ARG);
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_var_hessian: h is NULL");
    ag_tape_free(t);
    FRESH(); /* n = 0 needs no arrays and still gives the gradient */
    assert_int_equal(ag_var_hvp(t, f, 0, NULL, NULL, NULL), AG_OK);
    assert_int_equal(ag_var_hessian(t, f, 0, NULL, NULL), AG_OK);
    check_tight("grad", 0, ag_var_grad(t, x), exp(2.0));
    ag_tape_free(t);

    FRESH(); /* stale: recorded before a reset */
    ag_tape_reset(t);
    ag_var y = ag_var_new(t, 1);
    assert_int_equal(ag_var_hvp(t, f, 1, &y, v, hv), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_var_hvp: y is an ag_var from another tape or "
                                          "from before ag_tape_reset");
    ag_tape_reset(t);
    y = ag_var_new(t, 1);
    assert_int_equal(ag_var_hessian(t, y, 1, &f, h), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_var_hessian: x[0] is an ag_var from another");
    ag_tape_free(t);
    FRESH(); /* from another, longer tape */
    ag_tape *t2 = ag_tape_new();
    ag_var other = ag_var_new(t2, 0);
    for (int i = 0; i < 5; i++)
        other = ag_var_exp(t2, other);
    assert_int_equal(ag_var_hvp(t, f, 1, &other, v, hv), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_var_hvp: x[0] is an ag_var from another tape");
    ag_tape_free(t2);
    ag_tape_free(t);
    FRESH(); /* x must be inputs */
    assert_int_equal(ag_var_hvp(t, f, 1, &f, v, hv), AG_ERR_ARG);
    tg_assert_tape_error(t, AG_ERR_ARG, "x[0]");
    ag_tape_free(t);
    FRESH(); /* a kept error is returned as it is */
    ag_var_exp(t, (ag_var){-1, 0});
    assert_int_equal(ag_var_hvp(t, f, 1, &x, v, hv), AG_ERR_ARG);
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_var_exp");
    ag_tape_free(t);
#undef FRESH
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalar_every_op_finite_differences),
        cmocka_unit_test(test_scalar_hand_derived),
        cmocka_unit_test(test_scalar_equals_tensor_path),
        cmocka_unit_test(test_scalar_replay_matches_rerecording),
        cmocka_unit_test(test_scalar_less_is_a_recorded_branch),
        cmocka_unit_test(test_scalar_mixes_with_tensors),
        cmocka_unit_test(test_scalar_errors),
        cmocka_unit_test(test_var_hvp_every_op_analytic),
        cmocka_unit_test(test_var_hvp_constants),
        cmocka_unit_test(test_var_hvp_matches_finite_differences),
        cmocka_unit_test(test_var_hessian_rosenbrock_closed_form),
        cmocka_unit_test(test_var_hvp_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
