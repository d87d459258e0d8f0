/* test_ops_index.c — gather, scatter_add, index_select, index_add, where,
 * clamp: forward against hand-computed values, scatter-add gradients, the
 * errors bad indices and shapes must give (never a read out of bounds: run
 * under ASan), and third derivatives through the recorded gradients (each
 * pair's derivatives are each other). */
#include "test_util.h"

#include <math.h>
#include <string.h>

#define S(...) ((const int64_t[]){__VA_ARGS__})
#define D(...) ((const double[]){__VA_ARGS__})

static ag_tensor *make(ag_dtype dt, int ndim, const int64_t *shape, const double *v)
{
    ag_tensor *x = tg_f64(ndim, shape, v), *y = tg_convert(x, dt);
    ag_tensor_free(x);
    return y;
}

/* Exact values; want is a D(...) literal, its length is the count. */
#define assert_values(t, want) check_values((t), (want), (int64_t)(sizeof(want) / sizeof(double)))
static void check_values(const ag_tensor *t, const double *want, int64_t n)
{
    assert_non_null(t);
    assert_int_equal(ag_numel(t), n);
    double got[64];
    for (int64_t i = 0; i < n; i++)
        got[i] = ag_get(t, i);
    assert_doubles_close(got, want, n, 0, 0);
}

/* ---- gather ---- */

static void test_gather_values_and_scatter_gradient(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tensor *a = make((ag_dtype)dt, 2, S(2, 3), D(1, 2, 3, 4, 5, 6));
        ag_set_requires_grad(a, true);
        ag_tensor *i1 = make((ag_dtype)dt, 2, S(2, 4), D(2, 0, 2, 2, 1, 1, 0, 2));
        ag_tensor *i0 = make(AG_F64, 2, S(1, 2), D(1, 0)); /* other dtype: fine */
        ag_tape *t = ag_tape_new();
        ag_tensor *g1 = ag_gather(t, a, -1, i1); /* out[i][j] = a[i][idx[i][j]] */
        tg_assert_shape(g1, 2, S(2, 4));
        assert_values(g1, D(3, 1, 3, 3, 5, 5, 4, 6));
        ag_tensor *g0 = ag_gather(t, a, 0, i0); /* out[0][j] = a[idx[0][j]][j] */
        tg_assert_shape(g0, 2, S(1, 2));
        assert_values(g0, D(4, 2));
        ag_tensor *l = ag_add(t, ag_sum(t, g1, AG_ALL, false), ag_sum(t, g0, AG_ALL, false));
        assert_int_equal(ag_backward(t, l), AG_OK);
        /* repeated indices add up: a[0][2] three times, a[1][1] twice */
        assert_values(ag_grad(a), D(1, 1, 3, 2, 2, 1));
        ag_tape_free(t);
        ag_tensor_free(a);
        ag_tensor_free(i1);
        ag_tensor_free(i0);
    }
}

static void test_gather_rejects_bad_index(void **state)
{
    (void)state;
    ag_tensor *a = ag_tensor_new(AG_F64, 2, S(2, 3));
    ag_tensor *big = tg_f64(2, S(1, 2), D(0, 3));
    ag_tensor *neg = tg_f64(2, S(1, 1), D(-1));
    ag_tensor *frac = tg_f64(2, S(1, 1), D(0.5));
    ag_tensor *nan = tg_f64(2, S(1, 1), D(NAN));
    ag_tensor *flat = tg_f64(1, S(2), D(0, 1));
    ag_tensor *wide = ag_tensor_new(AG_F64, 2, S(3, 1));
    ag_tape *t = ag_tape_new();
    assert_null(ag_gather(t, a, 1, big));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_gather: index 3 at element 1 of [1,2] is out of range "
                                "[0, 3) for axis 1 of [2,3]");
    ag_tensor *bad[] = {neg, frac, nan};
    for (int k = 0; k < 3; k++) {
        ag_tape_reset(t);
        assert_null(ag_gather(t, a, 1, bad[k]));
        tg_assert_tape_error(t, AG_ERR_ARG, "out of range");
    }
    ag_tape_reset(t);
    assert_null(ag_gather(t, a, 0, flat));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_gather: index [2] has 1 dims, input [2,3] has 2");
    ag_tape_reset(t);
    assert_null(ag_gather(t, a, 1, wide)); /* dim 0: 3 > 2 */
    tg_assert_tape_error(t, AG_ERR_SHAPE, "larger than input [2,3] in dim 0 (3 > 2)");
    ag_tape_reset(t);
    assert_null(ag_gather(t, a, 2, big));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_gather: axis 2 out of range");
    ag_tape_reset(t);
    assert_null(ag_gather(t, a, 0, NULL));
    assert_int_equal(ag_tape_status(t), AG_ERR_NULL);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(big);
    ag_tensor_free(neg);
    ag_tensor_free(frac);
    ag_tensor_free(nan);
    ag_tensor_free(flat);
    ag_tensor_free(wide);
}

/* ---- scatter_add ---- */

static void test_scatter_add_values_and_gradient(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tensor *a = make((ag_dtype)dt, 2, S(2, 3), D(1, 2, 3, 4, 5, 6));
        ag_tensor *src = make((ag_dtype)dt, 2, S(2, 2), D(10, 20, 30, 40));
        ag_tensor *i1 = make(AG_F64, 2, S(2, 2), D(2, 2, 0, 1));
        ag_tensor *i0 = make((ag_dtype)dt, 2, S(1, 3), D(1, 0, 1));
        ag_tensor *s0 = make((ag_dtype)dt, 2, S(1, 3), D(7, 8, 9));
        ag_tensor *w = make((ag_dtype)dt, 2, S(2, 3), D(1, 2, 3, 4, 5, 6));
        ag_set_requires_grad(a, true);
        ag_set_requires_grad(src, true);
        ag_tape *t = ag_tape_new();
        /* out[i][idx[i][j]] += src[i][j]: a[0][2] gets 10 and 20 */
        ag_tensor *z = ag_scatter_add(t, a, -1, i1, src);
        tg_assert_shape(z, 2, S(2, 3));
        assert_values(z, D(1, 2, 33, 34, 45, 6));
        /* out[idx[0][j]][j] += src[0][j] */
        assert_values(ag_scatter_add(t, a, 0, i0, s0), D(1, 10, 3, 11, 5, 15));
        assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, z, w), AG_ALL, false)), AG_OK);
        assert_values(ag_grad(a), D(1, 2, 3, 4, 5, 6)); /* da = w */
        assert_values(ag_grad(src), D(3, 3, 4, 5));     /* dsrc = w[idx] */
        ag_tape_free(t);
        ag_tensor *all[] = {a, src, i1, i0, s0, w};
        for (int k = 0; k < 6; k++)
            ag_tensor_free(all[k]);
    }
}

static void test_scatter_add_rejects_bad_args(void **state)
{
    (void)state;
    ag_tensor *a = ag_tensor_new(AG_F64, 2, S(2, 3));
    ag_tensor *idx = tg_f64(2, S(1, 2), D(0, 3));
    ag_tensor *src = ag_tensor_new(AG_F64, 2, S(1, 2));
    ag_tensor *wide = ag_tensor_new(AG_F64, 2, S(2, 3));
    ag_tensor *s32 = ag_tensor_new(AG_F32, 2, S(1, 2));
    ag_tape *t = ag_tape_new();
    assert_null(ag_scatter_add(t, a, 1, idx, src));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_scatter_add: index 3 at element 1 of [1,2] is out "
                                "of range [0, 3) for axis 1 of [2,3]");
    ag_tape_reset(t);
    assert_null(ag_scatter_add(t, a, 1, idx, wide));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_scatter_add: src [2,3] and index [1,2] differ "
                                  "in shape");
    ag_tape_reset(t);
    assert_null(ag_scatter_add(t, a, 1, idx, s32));
    tg_assert_tape_error(t, AG_ERR_DTYPE, "ag_scatter_add");
    ag_tape_reset(t);
    assert_null(ag_scatter_add(t, a, 1, idx, NULL));
    assert_int_equal(ag_tape_status(t), AG_ERR_NULL);
    ag_tape_free(t);
    ag_tensor *all[] = {a, idx, src, wide, s32};
    for (int k = 0; k < 5; k++)
        ag_tensor_free(all[k]);
}

/* ---- index_select ---- */

static void test_index_select_rows_and_repeated_gradient(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        /* an embedding table of 4 rows of width 2 */
        ag_tensor *e = make((ag_dtype)dt, 2, S(4, 2), D(0, 1, 10, 11, 20, 21, 30, 31));
        ag_set_requires_grad(e, true);
        ag_tape *t = ag_tape_new();
        ag_tensor *r = ag_index_select(t, e, 0, S(3, 1, 3), 3);
        tg_assert_shape(r, 2, S(3, 2));
        assert_values(r, D(30, 31, 10, 11, 30, 31));
        ag_tensor *c = ag_index_select(t, e, -1, S(1), 1); /* column 1 */
        tg_assert_shape(c, 2, S(4, 1));
        assert_values(c, D(1, 11, 21, 31));
        ag_tensor *l = ag_add(t, ag_sum(t, r, AG_ALL, false), ag_sum(t, c, AG_ALL, false));
        assert_int_equal(ag_backward(t, l), AG_OK);
        /* row 3 selected twice: its gradient is 2; column 1 adds 1 to every row */
        assert_values(ag_grad(e), D(0, 1, 1, 2, 0, 1, 2, 3));
        ag_tape_free(t);
        ag_tensor_free(e);
    }
}

static void test_index_select_middle_axis(void **state)
{
    (void)state;
    ag_tensor *a = tg_f64(3, S(2, 3, 2), D(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11));
    ag_tape *t = ag_tape_new();
    ag_tensor *r = ag_index_select(t, a, 1, S(2, 0), 2);
    tg_assert_shape(r, 3, S(2, 2, 2));
    assert_values(r, D(4, 5, 0, 1, 10, 11, 6, 7));
    ag_tensor *z = ag_index_select(t, a, 1, NULL, 0); /* no rows: empty */
    tg_assert_shape(z, 3, S(2, 0, 2));
    ag_tape_free(t);
    ag_tensor_free(a);
}

static void test_index_select_rejects_bad_index(void **state)
{
    (void)state;
    ag_tensor *a = ag_tensor_new(AG_F32, 2, S(4, 2));
    ag_tape *t = ag_tape_new();
    assert_null(ag_index_select(t, a, 0, S(0, 4), 2));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_index_select: index 4 (position 1) is out of range "
                                "[0, 4) for axis 0 of [4,2]");
    ag_tape_reset(t);
    assert_null(ag_index_select(t, a, 1, S(-1), 1));
    tg_assert_tape_error(t, AG_ERR_ARG, "index -1 (position 0) is out of range [0, 2)");
    ag_tape_reset(t);
    assert_null(ag_index_select(t, a, 2, S(0), 1));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_index_select: axis 2 out of range");
    ag_tape_reset(t);
    assert_null(ag_index_select(t, a, 0, NULL, 2));
    tg_assert_tape_error(t, AG_ERR_ARG, "idx is NULL");
    ag_tape_reset(t);
    assert_null(ag_index_select(t, a, 0, S(0), -1));
    tg_assert_tape_error(t, AG_ERR_ARG, "negative index count");
    ag_tape_free(t);
    ag_tensor_free(a);
}

/* ---- index_add ---- */

static void test_index_add_values_and_gradient(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tensor *a = make((ag_dtype)dt, 2, S(4, 2), D(0, 1, 10, 11, 20, 21, 30, 31));
        ag_tensor *src = make((ag_dtype)dt, 2, S(3, 2), D(1, 2, 3, 4, 5, 6));
        ag_tensor *w = make((ag_dtype)dt, 2, S(4, 2), D(1, 2, 3, 4, 5, 6, 7, 8));
        ag_set_requires_grad(a, true);
        ag_set_requires_grad(src, true);
        ag_tape *t = ag_tape_new();
        /* row 3 gets src rows 0 and 2, row 1 gets src row 1 */
        ag_tensor *z = ag_index_add(t, a, 0, S(3, 1, 3), 3, src);
        tg_assert_shape(z, 2, S(4, 2));
        assert_values(z, D(0, 1, 13, 15, 20, 21, 36, 39));
        assert_values(ag_index_add(t, a, -1, S(0), 1, ag_index_select(t, a, 1, S(1), 1)),
                      D(1, 1, 21, 11, 41, 21, 61, 31)); /* column 0 += column 1 */
        assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, z, w), AG_ALL, false)), AG_OK);
        assert_values(ag_grad(a), D(1, 2, 3, 4, 5, 6, 7, 8)); /* da = w */
        assert_values(ag_grad(src), D(7, 8, 3, 4, 7, 8));     /* dsrc = w[rows] */
        ag_tape_free(t);
        ag_tensor_free(a);
        ag_tensor_free(src);
        ag_tensor_free(w);
    }
}

static void test_index_add_rejects_bad_args(void **state)
{
    (void)state;
    ag_tensor *a = ag_tensor_new(AG_F64, 2, S(4, 2));
    ag_tensor *src = ag_tensor_new(AG_F64, 2, S(2, 2));
    ag_tensor *s32 = ag_tensor_new(AG_F32, 2, S(2, 2));
    ag_tape *t = ag_tape_new();
    assert_null(ag_index_add(t, a, 0, S(0, 1, 2), 3, src));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_index_add: src [2,2] does not match a [4,2] "
                                  "with 3 rows on axis 0");
    ag_tape_reset(t);
    assert_null(ag_index_add(t, a, 0, S(0, 4), 2, src));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_index_add: index 4 (position 1) is out of range "
                                "[0, 4) for axis 0 of [4,2]");
    ag_tape_reset(t);
    assert_null(ag_index_add(t, a, 0, S(0, 1), 2, s32));
    tg_assert_tape_error(t, AG_ERR_DTYPE, "ag_index_add");
    ag_tape_reset(t);
    assert_null(ag_index_add(t, a, 0, NULL, 2, src));
    tg_assert_tape_error(t, AG_ERR_ARG, "idx is NULL");
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(src);
    ag_tensor_free(s32);
}

/* ---- third order through the recorded gradients ---- */

/* g[k] = d sum(g[k-1]) / dx (g[-1] = l), each recorded: the derivatives of
 * orders 1, 2 and 3 of l when l is a sum of functions of single elements. */
static void three_gradients(ag_tape *t, ag_tensor *l, ag_tensor *x, ag_tensor **g)
{
    ag_tensor *root = l;
    for (int k = 0; k < 3; k++) {
        assert_int_equal(ag_gradients(t, root, NULL, 1, &x, &g[k], true), AG_OK);
        tg_assert_shape(g[k], ag_ndim(x), ag_shape(x));
        root = ag_sum(t, g[k], AG_ALL, false);
    }
}

/* l = sum(y^4) with y the selected elements, element i of x taken c[i]
 * times: dl/dx = 4 c x^3, then 12 c x^2, then 24 c x. */
static void check_fourth_power_derivatives(ag_tape *t, ag_tensor *y, ag_tensor *x,
                                           const double *c)
{
    ag_tensor *y2 = ag_mul(t, y, y);
    ag_tensor *g[3];
    three_gradients(t, ag_sum(t, ag_mul(t, y2, y2), AG_ALL, false), x, g);
    double got[3][16], want[3][16];
    int64_t n = ag_numel(x);
    for (int64_t i = 0; i < n; i++) {
        double v = ag_get(x, i);
        want[0][i] = 4 * c[i] * v * v * v;
        want[1][i] = 12 * c[i] * v * v;
        want[2][i] = 24 * c[i] * v;
        for (int k = 0; k < 3; k++)
            got[k][i] = ag_get(g[k], i);
    }
    for (int k = 0; k < 3; k++)
        assert_doubles_close(got[k], want[k], n, 1e-12, 1e-14);
}

static void test_gather_third_derivative(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(2, S(2, 3), D(0.5, -1.25, 2, 1.5, -0.75, 3));
    ag_set_requires_grad(x, true);
    /* along axis 1: row 0 takes 2, 0, 2, 2; row 1 takes 1, 1, 0, 2 */
    ag_tensor *idx = tg_f64(2, S(2, 4), D(2, 0, 2, 2, 1, 1, 0, 2));
    ag_tape *t = ag_tape_new();
    check_fourth_power_derivatives(t, ag_gather(t, x, 1, idx), x, D(1, 0, 3, 1, 2, 1));
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(idx);
}

static void test_index_select_third_derivative(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(2, S(3, 2), D(0.5, -1.25, 2, 1.5, -0.75, 3));
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    /* rows 2, 0, 2, 2: row 0 once, row 1 never, row 2 three times */
    check_fourth_power_derivatives(t, ag_index_select(t, x, 0, S(2, 0, 2, 2), 4), x,
                                   D(1, 1, 0, 0, 3, 3));
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* ---- where ---- */

static void test_where_broadcasts_all_three(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tensor *cond = make(AG_F64, 2, S(2, 1), D(1, 0));
        ag_tensor *a = make((ag_dtype)dt, 1, S(3), D(1, 2, 3));
        ag_tensor *b = make((ag_dtype)dt, 0, NULL, D(-5));
        ag_set_requires_grad(a, true);
        ag_set_requires_grad(b, true);
        ag_tape *t = ag_tape_new();
        ag_tensor *w = ag_where(t, cond, a, b);
        tg_assert_shape(w, 2, S(2, 3));
        assert_values(w, D(1, 2, 3, -5, -5, -5));
        assert_int_equal(ag_backward(t, ag_sum(t, w, AG_ALL, false)), AG_OK);
        assert_values(ag_grad(a), D(1, 1, 1)); /* row 0 only */
        assert_values(ag_grad(b), D(3));       /* the three of row 1 */
        assert_null(ag_grad(cond));
        ag_tape_free(t);
        ag_tensor_free(cond);
        ag_tensor_free(a);
        ag_tensor_free(b);
    }
}

static void test_where_rejects_bad_shapes(void **state)
{
    (void)state;
    ag_tensor *c = ag_tensor_new(AG_F64, 1, S(2));
    ag_tensor *a = ag_tensor_new(AG_F64, 2, S(3, 1));
    ag_tensor *b = ag_tensor_new(AG_F64, 1, S(3));
    ag_tensor *b32 = ag_tensor_new(AG_F32, 1, S(2));
    ag_tape *t = ag_tape_new();
    assert_null(ag_where(t, c, a, b));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_where: shapes [2], [3,1] and [3] do not broadcast");
    ag_tape_reset(t);
    assert_null(ag_where(t, c, a, b32));
    tg_assert_tape_error(t, AG_ERR_DTYPE, "ag_where");
    ag_tape_free(t);
    ag_tensor_free(c);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(b32);
}

/* ---- clamp ---- */

static void test_clamp_values_and_gradient(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tensor *x = make((ag_dtype)dt, 1, S(6), D(-3, -1, 0, 0.5, 1, 4));
        ag_set_requires_grad(x, true);
        ag_tape *t = ag_tape_new();
        ag_tensor *y = ag_clamp(t, x, -1, 1);
        assert_values(y, D(-1, -1, 0, 0.5, 1, 1));
        assert_int_equal(ag_backward(t, ag_sum(t, y, AG_ALL, false)), AG_OK);
        /* PyTorch's rule: 1 on [lo, hi], bounds included */
        assert_values(ag_grad(x), D(0, 1, 1, 1, 1, 0));
        ag_tape_reset(t);
        assert_values(ag_clamp(t, x, -INFINITY, 0.25), D(-3, -1, 0, 0.25, 0.25, 0.25));
        assert_values(ag_clamp(t, x, 2, 1), D(1, 1, 1, 1, 1, 1)); /* lo > hi: hi */
        ag_tape_free(t);
        ag_tensor_free(x);
    }
}

static void test_clamp_keeps_nan_and_rejects_nan_bounds(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(1, S(2), D(NAN, 5));
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_clamp(t, x, 0, 1);
    assert_true(isnan(ag_get(y, 0)));
    assert_true(ag_get(y, 1) == 1);
    assert_null(ag_clamp(t, x, NAN, 1));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_clamp: bounds must not be NaN");
    ag_tape_free(t);
    ag_tensor_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gather_values_and_scatter_gradient),
        cmocka_unit_test(test_gather_rejects_bad_index),
        cmocka_unit_test(test_scatter_add_values_and_gradient),
        cmocka_unit_test(test_scatter_add_rejects_bad_args),
        cmocka_unit_test(test_index_select_rows_and_repeated_gradient),
        cmocka_unit_test(test_index_select_middle_axis),
        cmocka_unit_test(test_index_select_rejects_bad_index),
        cmocka_unit_test(test_index_add_values_and_gradient),
        cmocka_unit_test(test_index_add_rejects_bad_args),
        cmocka_unit_test(test_gather_third_derivative),
        cmocka_unit_test(test_index_select_third_derivative),
        cmocka_unit_test(test_where_broadcasts_all_three),
        cmocka_unit_test(test_where_rejects_bad_shapes),
        cmocka_unit_test(test_clamp_values_and_gradient),
        cmocka_unit_test(test_clamp_keeps_nan_and_rejects_nan_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
