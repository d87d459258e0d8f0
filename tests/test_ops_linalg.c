/* test_ops_linalg.c — matmul and the issue-3 reductions (max, min,
 * logsumexp, variance, argmax): forward against hand-computed values,
 * gradients on small cases, and the errors bad input must give. */
#include "test_util.h"

#include <math.h>
#include <string.h>

#define S(...) ((const int64_t[]){__VA_ARGS__})
#define D(...) ((const double[]){__VA_ARGS__})

/* A persistent tensor of dtype dt from f64 literals. */
static ag_tensor *make(ag_dtype dt, int ndim, const int64_t *shape, const double *v)
{
    ag_tensor *x = tg_f64(ndim, shape, v), *y = tg_convert(x, dt);
    ag_tensor_free(x);
    return y;
}

static void assert_values(const ag_tensor *t, const double *want, int64_t n, double tol)
{
    assert_non_null(t);
    assert_int_equal(ag_numel(t), n);
    double got[64];
    for (int64_t i = 0; i < n; i++)
        got[i] = ag_get(t, i);
    assert_doubles_close(got, want, n, tol, tol);
}

/* ---- matmul ---- */

static void test_matmul_2d_values(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = tg_f64(2, S(2, 3), D(1, 2, 3, 4, 5, 6));
    ag_tensor *b = tg_f64(2, S(3, 2), D(7, 8, 9, 10, 11, 12));
    ag_tensor *c = ag_matmul(t, a, b);
    tg_assert_shape(c, 2, S(2, 2));
    assert_values(c, D(58, 64, 139, 154), 4, 0);
    assert_int_equal(ag_tape_entries(t), 0); /* no input requires grad */
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

static void test_matmul_1d_operands(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *v = tg_f64(1, S(3), D(1, 2, 3));
    ag_tensor *w = tg_f64(1, S(3), D(4, 5, 6));
    ag_tensor *m = tg_f64(2, S(3, 2), D(1, 2, 3, 4, 5, 6));
    ag_tensor *mt = tg_f64(2, S(2, 3), D(1, 3, 5, 2, 4, 6));
    ag_tensor *dot = ag_matmul(t, v, w);
    tg_assert_shape(dot, 0, NULL);
    assert_values(dot, D(32), 1, 0);
    ag_tensor *vm = ag_matmul(t, v, m); /* [3] x [3,2] -> [2] */
    tg_assert_shape(vm, 1, S(2));
    assert_values(vm, D(22, 28), 2, 0);
    ag_tensor *mv = ag_matmul(t, mt, w); /* [2,3] x [3] -> [2] */
    tg_assert_shape(mv, 1, S(2));
    assert_values(mv, D(49, 64), 2, 0);
    ag_tensor *bv = ag_matmul(t, ag_tape_tensor(t, AG_F64, 3, S(4, 2, 3)), v);
    tg_assert_shape(bv, 2, S(4, 2)); /* [4,2,3] x [3] -> [4,2] */
    ag_tensor *vb = ag_matmul(t, v, ag_tape_tensor(t, AG_F64, 3, S(4, 3, 5)));
    tg_assert_shape(vb, 2, S(4, 5)); /* [3] x [4,3,5] -> [4,5] */
    assert_int_equal(ag_tape_status(t), AG_OK);
    ag_tape_free(t);
    ag_tensor_free(v);
    ag_tensor_free(w);
    ag_tensor_free(m);
    ag_tensor_free(mt);
}

/* C[i] = A[i] B[i] by hand, for [2,1,2,2] x [3,2,2] -> [2,3,2,2] */
static void test_matmul_batched_broadcast_values(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 11);
    ag_tensor *a = ag_tensor_uniform(AG_F64, 4, S(2, 1, 2, 2), -1, 1, &rng);
    ag_tensor *b = ag_tensor_uniform(AG_F64, 3, S(3, 2, 2), -1, 1, &rng);
    ag_tape *t = ag_tape_new();
    ag_tensor *c = ag_matmul(t, a, b);
    tg_assert_shape(c, 4, S(2, 3, 2, 2));
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int r = 0; r < 2; r++)
                for (int q = 0; q < 2; q++) {
                    double want = 0;
                    for (int k = 0; k < 2; k++)
                        want += ag_get(a, i * 4 + r * 2 + k) * ag_get(b, j * 4 + k * 2 + q);
                    double got = ag_get(c, ((i * 3 + j) * 2 + r) * 2 + q);
                    assert_true(fabs(got - want) < 1e-12);
                }
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

/* L = sum(A B): dA = 1 B^T (row sums of B), dB = A^T 1 (column sums of A) */
static void test_matmul_backward_values(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tensor *a = make((ag_dtype)dt, 2, S(2, 3), D(1, 2, 3, 4, 5, 6));
        ag_tensor *b = make((ag_dtype)dt, 2, S(3, 2), D(7, 8, 9, 10, 11, 12));
        ag_set_requires_grad(a, true);
        ag_set_requires_grad(b, true);
        ag_tape *t = ag_tape_new();
        assert_int_equal(ag_backward(t, ag_sum(t, ag_matmul(t, a, b), AG_ALL, false)), AG_OK);
        assert_values(ag_grad(a), D(15, 19, 23, 15, 19, 23), 6, 0);
        assert_values(ag_grad(b), D(5, 5, 7, 7, 9, 9), 6, 0);
        ag_tape_free(t);
        ag_tensor_free(a);
        ag_tensor_free(b);
    }
}

/* B shared by 3 batches of A: dB sums the three per-batch gradients, and
 * an A broadcast over B's batches sums likewise. */
static void test_matmul_broadcast_grad_sums(void **state)
{
    (void)state;
    ag_tensor *a = tg_f64(3, S(3, 1, 2), D(1, 2, 3, 4, 5, 6));
    ag_tensor *b = tg_f64(2, S(2, 1), D(1, 1));
    ag_set_requires_grad(a, true);
    ag_set_requires_grad(b, true);
    ag_tape *t = ag_tape_new();
    assert_int_equal(ag_backward(t, ag_sum(t, ag_matmul(t, a, b), AG_ALL, false)), AG_OK);
    assert_values(ag_grad(b), D(9, 12), 2, 0); /* 1+3+5, 2+4+6 */
    assert_values(ag_grad(a), D(1, 1, 1, 1, 1, 1), 6, 0);
    ag_tape_reset(t);
    ag_zero_grad(a);
    ag_zero_grad(b);
    /* now b [2,1] is the batched one: [4,2,1]; a [1,2] shared by 4 batches */
    ag_tensor *a2 = tg_f64(2, S(1, 2), D(1, 2));
    ag_tensor *b2 = tg_f64(3, S(4, 2, 1), D(1, 2, 3, 4, 5, 6, 7, 8));
    ag_set_requires_grad(a2, true);
    assert_int_equal(ag_backward(t, ag_sum(t, ag_matmul(t, a2, b2), AG_ALL, false)), AG_OK);
    assert_values(ag_grad(a2), D(16, 20), 2, 0); /* 1+3+5+7, 2+4+6+8 */
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(a2);
    ag_tensor_free(b2);
}

/* A product large enough for the blocked GEMM paths, f32 against f64. */
static void test_matmul_f32_large_matches_f64(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    ag_tensor *a = ag_tensor_uniform(AG_F64, 2, S(67, 130), -1, 1, &rng);
    ag_tensor *b = ag_tensor_uniform(AG_F64, 2, S(130, 45), -1, 1, &rng);
    ag_tensor *a32 = tg_convert(a, AG_F32), *b32 = tg_convert(b, AG_F32);
    ag_tape *t = ag_tape_new();
    ag_tensor *c = ag_matmul(t, a, b), *c32 = ag_matmul(t, a32, b32);
    assert_tensor_close(c32, c, 1e-4, 1e-4);
    double want = 0;
    for (int k = 0; k < 130; k++)
        want += ag_get(a, 66 * 130 + k) * ag_get(b, k * 45 + 44);
    assert_true(fabs(ag_get(c, 66 * 45 + 44) - want) < 1e-12);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(a32);
    ag_tensor_free(b32);
}

static void test_matmul_shape_mismatch_names_both_shapes(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = ag_tensor_new(AG_F32, 2, S(2, 3)), *b = ag_tensor_new(AG_F32, 2, S(4, 5));
    assert_null(ag_matmul(t, a, b));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_matmul: shapes [2,3] and [4,5] do not align (3 != 4)");
    assert_null(ag_relu(t, NULL)); /* later ops return NULL at once */
    assert_int_equal(ag_tape_status(t), AG_ERR_SHAPE);
    ag_tensor_free(a);
    ag_tensor_free(b);

    ag_tape_reset(t);
    a = ag_tensor_new(AG_F64, 3, S(2, 2, 3));
    b = ag_tensor_new(AG_F64, 3, S(3, 3, 4));
    assert_null(ag_matmul(t, a, b));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "[2,2,3] and [3,3,4]: batch dims do not broadcast");
    ag_tensor_free(a);
    ag_tensor_free(b);

    ag_tape_reset(t);
    a = ag_tensor_new(AG_F64, 0, NULL);
    b = ag_tensor_new(AG_F64, 1, S(3));
    assert_null(ag_matmul(t, a, b));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "at least 1 dim");
    ag_tensor_free(a);

    ag_tape_reset(t);
    a = ag_tensor_new(AG_F32, 1, S(3));
    assert_null(ag_matmul(t, a, b));
    tg_assert_tape_error(t, AG_ERR_DTYPE, "ag_matmul");
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tape_free(t);
}

static void test_matmul_empty_inner_dim_is_zero(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = ag_tensor_new(AG_F64, 2, S(2, 0)), *b = ag_tensor_new(AG_F64, 2, S(0, 3));
    ag_tensor *c = ag_matmul(t, a, b);
    tg_assert_shape(c, 2, S(2, 3));
    assert_values(c, D(0, 0, 0, 0, 0, 0), 6, 0);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

/* ---- reductions ---- */

static void test_max_min_values_and_first_tie_gradient(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(2, S(2, 3), D(1, 5, 5, -2, -7, -7));
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *m = ag_max(t, x, 1, true);
    tg_assert_shape(m, 2, S(2, 1));
    assert_values(m, D(5, -2), 2, 0);
    assert_int_equal(ag_backward(t, ag_sum(t, m, AG_ALL, false)), AG_OK);
    assert_values(ag_grad(x), D(0, 1, 0, 1, 0, 0), 6, 0); /* tie: first wins */
    ag_zero_grad(x);
    ag_tape_reset(t);
    ag_tensor *n = ag_min(t, x, -1, false);
    tg_assert_shape(n, 1, S(2));
    assert_values(n, D(1, -7), 2, 0);
    assert_int_equal(ag_backward(t, ag_sum(t, n, AG_ALL, false)), AG_OK);
    assert_values(ag_grad(x), D(1, 0, 0, 0, 1, 0), 6, 0);
    ag_tape_reset(t);
    assert_values(ag_max(t, x, AG_ALL, false), D(5), 1, 0);
    assert_values(ag_min(t, x, 0, false), D(-2, -7, -7), 3, 0);
    tg_assert_shape(ag_max(t, x, AG_ALL, true), 2, S(1, 1));
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_max_propagates_nan(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(1, S(4), D(1, NAN, 3, NAN));
    ag_tape *t = ag_tape_new();
    assert_true(isnan(ag_item(ag_max(t, x, 0, false))));
    assert_true(isnan(ag_item(ag_min(t, x, 0, false))));
    assert_int_equal((int)ag_item(ag_argmax(t, x, 0, false)), 1);
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_logsumexp_is_stable(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(2, S(2, 2), D(1000, 1000, -INFINITY, -INFINITY));
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_logsumexp(t, x, 1, false);
    assert_non_null(y);
    assert_true(fabs(ag_get(y, 0) - (1000 + log(2.0))) < 1e-9);
    assert_true(isinf(ag_get(y, 1)) && ag_get(y, 1) < 0);
    ag_tensor *x32 = ag_tensor_from_f32(1, S(3), (const float[]){100, 101, 102});
    double want = 102 + log(exp(-2.0) + exp(-1.0) + 1.0);
    assert_true(fabs(ag_item(ag_logsumexp(t, x32, 0, false)) - want) < 1e-4);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(x32);
}

/* d/dx logsumexp = softmax(x) */
static void test_logsumexp_gradient_is_softmax(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(1, S(3), D(0, log(2.0), log(5.0)));
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_logsumexp(t, x, AG_ALL, false);
    assert_true(fabs(ag_item(y) - log(8.0)) < 1e-14);
    assert_int_equal(ag_backward(t, y), AG_OK);
    assert_values(ag_grad(x), D(1 / 8.0, 2 / 8.0, 5 / 8.0), 3, 1e-14);
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_variance_values_and_gradient(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(2, S(2, 4), D(1, 2, 3, 4, 2, 2, 2, 10));
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    /* row 0: mean 2.5, sum sq 5; row 1: mean 4, sum sq 48 */
    assert_values(ag_variance(t, x, 1, false, 1), D(5 / 3.0, 16), 2, 1e-14);
    assert_values(ag_variance(t, x, -1, true, 0), D(1.25, 12), 2, 1e-14);
    ag_tensor *v = ag_variance(t, x, 0, false, 1); /* columns: pairs */
    assert_values(v, D(0.5, 0, 0.5, 18), 4, 1e-14);
    /* d var / dx = 2 (x - mean) / (n - c); here n = 2, c = 1 */
    assert_int_equal(ag_backward(t, ag_sum(t, v, AG_ALL, false)), AG_OK);
    assert_values(ag_grad(x), D(-1, 0, 1, -6, 1, 0, -1, 6), 8, 1e-14);
    ag_tape_reset(t);
    assert_values(ag_variance(t, x, AG_ALL, false, 1), D(57.5 / 7.0), 1, 1e-14);
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_variance_no_degrees_of_freedom(void **state)
{
    (void)state;
    ag_tensor *x = ag_tensor_new(AG_F64, 2, S(3, 1));
    ag_tape *t = ag_tape_new();
    assert_null(ag_variance(t, x, 1, false, 1));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_variance: 1 elements minus correction 1");
    ag_tape_reset(t);
    assert_non_null(ag_variance(t, x, 1, false, 0));
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_argmax_values_and_no_gradient(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tensor *x = make((ag_dtype)dt, 2, S(2, 3), D(1, 7, 7, 9, -1, 3));
        ag_set_requires_grad(x, true);
        ag_tape *t = ag_tape_new();
        ag_tensor *i = ag_argmax(t, x, 1, false);
        tg_assert_shape(i, 1, S(2));
        assert_int_equal(ag_dtype_of(i), (ag_dtype)dt);
        assert_values(i, D(1, 0), 2, 0); /* tie: the first index */
        assert_false(ag_requires_grad(i));
        assert_values(ag_argmax(t, x, 0, true), D(1, 0, 0), 3, 0);
        assert_values(ag_argmax(t, x, AG_ALL, false), D(3), 1, 0);
        assert_int_equal(ag_tape_entries(t), 0); /* records nothing */
        /* nothing to differentiate through: backward says so */
        assert_int_equal(ag_backward(t, ag_sum(t, i, AG_ALL, false)), AG_ERR_STATE);
        ag_tape_free(t);
        ag_tensor_free(x);
    }
}

static void test_reductions_reject_bad_axis(void **state)
{
    (void)state;
    ag_tensor *x = ag_tensor_new(AG_F32, 2, S(2, 3));
    ag_tensor *(*fns[])(ag_tape *, ag_tensor *, int, bool) = {ag_max, ag_min, ag_logsumexp,
                                                              ag_argmax};
    const char *names[] = {"ag_max", "ag_min", "ag_logsumexp", "ag_argmax"};
    ag_tape *t = ag_tape_new();
    for (int k = 0; k < 4; k++) {
        assert_null(fns[k](t, x, 2, false));
        tg_assert_tape_error(t, AG_ERR_ARG, names[k]);
        tg_assert_tape_error(t, AG_ERR_ARG, "axis 2 out of range");
        ag_tape_reset(t);
        assert_null(fns[k](t, x, -3, true));
        tg_assert_tape_error(t, AG_ERR_ARG, "axis -3 out of range");
        ag_tape_reset(t);
    }
    assert_null(ag_variance(t, x, 5, false, 1));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_variance: axis 5 out of range");
    ag_tape_reset(t);
    assert_null(ag_max(t, NULL, 0, false));
    assert_int_equal(ag_tape_status(t), AG_ERR_NULL);
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_max_of_empty_axis_is_an_error(void **state)
{
    (void)state;
    ag_tensor *x = ag_tensor_new(AG_F64, 2, S(0, 3));
    ag_tape *t = ag_tape_new();
    assert_null(ag_max(t, x, 0, false));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_max: reduction over an empty axis (axis 0 of [0,3])");
    ag_tape_reset(t);
    assert_null(ag_argmax(t, x, AG_ALL, false));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "every axis");
    ag_tape_reset(t);
    tg_assert_shape(ag_max(t, x, 1, false), 1, S(0)); /* nothing reduced over 0 rows */
    ag_tensor *l = ag_logsumexp(t, x, 0, false);    /* log(0) as in PyTorch */
    assert_true(isinf(ag_get(l, 0)) && ag_get(l, 0) < 0);
    ag_tape_free(t);
    ag_tensor_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_2d_values),
        cmocka_unit_test(test_matmul_1d_operands),
        cmocka_unit_test(test_matmul_batched_broadcast_values),
        cmocka_unit_test(test_matmul_backward_values),
        cmocka_unit_test(test_matmul_broadcast_grad_sums),
        cmocka_unit_test(test_matmul_f32_large_matches_f64),
        cmocka_unit_test(test_matmul_shape_mismatch_names_both_shapes),
        cmocka_unit_test(test_matmul_empty_inner_dim_is_zero),
        cmocka_unit_test(test_max_min_values_and_first_tie_gradient),
        cmocka_unit_test(test_max_propagates_nan),
        cmocka_unit_test(test_logsumexp_is_stable),
        cmocka_unit_test(test_logsumexp_gradient_is_softmax),
        cmocka_unit_test(test_variance_values_and_gradient),
        cmocka_unit_test(test_variance_no_degrees_of_freedom),
        cmocka_unit_test(test_argmax_values_and_no_gradient),
        cmocka_unit_test(test_reductions_reject_bad_axis),
        cmocka_unit_test(test_max_of_empty_axis_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
