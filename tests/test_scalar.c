/* test_scalar.c — the scalar path: hand-derived gradients, finite
 * differences for every op, agreement with the tensor path, replay, and
 * scalars mixed with tensors. */
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
    assert_int_equal(ag_tape_status(t), AG_ERR_ARG);
    assert_non_null(strstr(ag_tape_error(t), "ag_var_exp"));
    assert_true(ag_var_mul(t, b, b).id < 0);
    assert_int_equal(ag_var_backward(t, b), AG_ERR_ARG);
    assert_true(isnan(ag_var_value(t, b)));
    ag_tape_free(t);
    assert_true(ag_scalar_bytes_per_op() <= 32);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
