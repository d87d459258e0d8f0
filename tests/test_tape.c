/* test_tape.c — recording, backward, pruning, the error model and the
 * allocation-free steady state. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static ag_tensor *param(ag_dtype dt, int ndim, const int64_t *shape, double v)
{
    ag_tensor *t = ag_tensor_full(dt, ndim, shape, v);
    ag_set_requires_grad(t, true);
    return t;
}

/* h = x*y; loss = sum(h*h + h): dL/dx = (2h + 1) y, dL/dy = (2h + 1) x */
static void test_tape_reused_intermediate(void **state)
{
    (void)state;
    int64_t s[] = {3};
    double xv[] = {1, -2, 0.5}, yv[] = {3, 0.25, -4};
    ag_tensor *x = tg_f64(1, s, xv), *y = tg_f64(1, s, yv);
    ag_set_requires_grad(x, true);
    ag_set_requires_grad(y, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *h = ag_mul(t, x, y);
    ag_tensor *loss = ag_sum(t, ag_add(t, ag_mul(t, h, h), h), AG_ALL, false);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    for (int i = 0; i < 3; i++) {
        double hv = xv[i] * yv[i];
        assert_true(ag_get(ag_grad(x), i) == (2 * hv + 1) * yv[i]);
        assert_true(ag_get(ag_grad(y), i) == (2 * hv + 1) * xv[i]);
    }
    /* a second backward over the same tape accumulates into parameters */
    assert_int_equal(ag_backward(t, loss), AG_OK);
    for (int i = 0; i < 3; i++)
        assert_true(ag_get(ag_grad(x), i) == 2 * (2 * xv[i] * yv[i] + 1) * yv[i]);
    /* and the intermediate's own gradient is recomputed, not doubled */
    assert_true(ag_get(ag_grad(h), 0) == 2 * xv[0] * yv[0] + 1);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(y);
}

static void test_tape_pruning_and_no_grad(void **state)
{
    (void)state;
    int64_t s[] = {4};
    ag_tensor *c = ag_tensor_full(AG_F32, 1, s, 2), *w = param(AG_F32, 1, s, 3);
    ag_tape *t = ag_tape_new();
    ag_tensor *k = ag_exp(t, ag_mul(t, c, c)); /* constants only: not recorded */
    assert_int_equal(ag_tape_entries(t), 0);
    assert_false(ag_requires_grad(k));
    ag_tensor *loss = ag_sum(t, ag_mul(t, k, w), AG_ALL, false);
    assert_int_equal(ag_tape_entries(t), 2);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    assert_null(ag_grad(c));
    assert_null(ag_grad(k));
    assert_true(fabs(ag_get(ag_grad(w), 0) - exp(4.0)) < 1e-4);

    ag_tape_reset(t);
    ag_tape_set_grad_enabled(t, false);
    ag_tensor *e = ag_sum(t, ag_mul(t, w, w), AG_ALL, false);
    assert_true(ag_item(e) == 36.0);
    assert_int_equal(ag_tape_entries(t), 0);
    assert_int_equal(ag_backward(t, e), AG_ERR_STATE);
    assert_non_null(strstr(ag_tape_error(t), "requires grad"));
    ag_tape_free(t);
    ag_tensor_free(c);
    ag_tensor_free(w);
}

static void test_tape_backward_seeded(void **state)
{
    (void)state;
    int64_t s[] = {2, 3};
    ag_tensor *x = param(AG_F64, 2, s, 1.5);
    ag_tensor *seed = ag_tensor_full(AG_F64, 2, s, 0);
    for (int i = 0; i < 6; i++)
        ag_set(seed, i, i);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_mul_scalar(t, x, 3.0);
    assert_int_equal(ag_backward_seeded(t, y, seed), AG_OK);
    for (int i = 0; i < 6; i++)
        assert_true(ag_get(ag_grad(x), i) == 3.0 * i);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(seed);
}

static void test_tape_error_shape_mismatch(void **state)
{
    (void)state;
    int64_t s1[] = {2, 3}, s2[] = {4, 5};
    ag_tensor *a = param(AG_F32, 2, s1, 1), *b = param(AG_F32, 2, s2, 1);
    ag_tape *t = ag_tape_new();
    assert_null(ag_add(t, a, b));
    assert_int_equal(ag_tape_status(t), AG_ERR_SHAPE);
    const char *msg = ag_tape_error(t);
    assert_non_null(strstr(msg, "add"));
    assert_non_null(strstr(msg, "[2,3]"));
    assert_non_null(strstr(msg, "[4,5]"));
    ag_tape_reset(t);
    assert_null(ag_tape_error(t));
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

static void test_tape_error_dtype_mismatch(void **state)
{
    (void)state;
    int64_t s[] = {2};
    ag_tensor *a = param(AG_F32, 1, s, 1), *b = param(AG_F64, 1, s, 1);
    ag_tape *t = ag_tape_new();
    assert_null(ag_mul(t, a, b));
    assert_int_equal(ag_tape_status(t), AG_ERR_DTYPE);
    assert_non_null(strstr(ag_tape_error(t), "f32"));
    assert_non_null(strstr(ag_tape_error(t), "f64"));
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

static void test_tape_error_null_propagates(void **state)
{
    (void)state;
    int64_t s1[] = {2}, s2[] = {3};
    ag_tensor *a = param(AG_F64, 1, s1, 1), *b = param(AG_F64, 1, s2, 1);
    ag_tape *t = ag_tape_new();
    ag_tensor *bad = ag_add(t, a, b);
    ag_tensor *h = ag_tanh(t, ag_mul(t, bad, a));
    ag_tensor *loss = ag_sum(t, h, AG_ALL, false);
    assert_null(loss);
    /* the first error is the one kept, and backward reports it */
    assert_int_equal(ag_backward(t, loss), AG_ERR_SHAPE);
    assert_non_null(strstr(ag_tape_error(t), "add"));
    /* NULL without an earlier error is its own error */
    ag_tape_reset(t);
    assert_null(ag_exp(t, NULL));
    assert_int_equal(ag_tape_status(t), AG_ERR_NULL);
    assert_non_null(strstr(ag_tape_error(t), "exp"));
    assert_null(ag_exp(NULL, a));
    assert_non_null(ag_last_error());
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

static void test_tape_error_nonscalar_root(void **state)
{
    (void)state;
    int64_t s[] = {2, 2};
    ag_tensor *a = param(AG_F64, 2, s, 1);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_exp(t, a);
    assert_int_equal(ag_backward(t, y), AG_ERR_SHAPE);
    assert_non_null(strstr(ag_tape_error(t), "[2,2]"));
    assert_null(ag_grad(a));
    ag_tape_free(t);
    ag_tensor_free(a);
}

static void test_tape_error_invalid_axis(void **state)
{
    (void)state;
    int64_t s[] = {2, 3};
    ag_tensor *a = param(AG_F64, 2, s, 1);
    ag_tape *t = ag_tape_new();
    assert_null(ag_sum(t, a, 2, false));
    assert_int_equal(ag_tape_status(t), AG_ERR_ARG);
    assert_non_null(strstr(ag_tape_error(t), "axis 2"));
    ag_tape_reset(t);
    assert_null(ag_mean(t, a, -3, true));
    assert_non_null(strstr(ag_tape_error(t), "axis -3"));
    ag_tape_reset(t);
    assert_non_null(ag_mean(t, a, -2, true));
    ag_tape_free(t);
    ag_tensor_free(a);
}

static void test_tape_foreign_tensor_rejected(void **state)
{
    (void)state;
    int64_t s[] = {2};
    ag_tensor *a = param(AG_F64, 1, s, 1);
    ag_tape *t1 = ag_tape_new(), *t2 = ag_tape_new();
    ag_tensor *x = ag_exp(t1, a);
    assert_null(ag_exp(t2, x));
    assert_non_null(strstr(ag_tape_error(t2), "another tape"));
    ag_tape_free(t1);
    ag_tape_free(t2);
    ag_tensor_free(a);
}

static void ident_fwd(ag_tensor *const *in, int n, ag_tensor *out, void *ctx)
{
    (void)n;
    (void)ctx;
    for (int64_t i = 0; i < ag_numel(out); i++)
        ag_set(out, i, ag_get(in[0], i));
}

static void ident_bwd(ag_tensor *const *in, int n, const ag_tensor *out,
                      const ag_tensor *gout, ag_tensor *const *gin, void *ctx)
{
    (void)in;
    (void)n;
    (void)ctx;
    for (int64_t i = 0; gin[0] && i < ag_numel(out); i++)
        ag_set(gin[0], i, ag_get(gin[0], i) + 2 * ag_get(gout, i));
}

static void test_tape_custom_op_records_and_checks(void **state)
{
    (void)state;
    static const ag_custom_op op = {.name = "twice_grad", .forward = ident_fwd,
                                    .backward = ident_bwd};
    int64_t s[] = {3};
    ag_tensor *x = param(AG_F32, 1, s, 1.5), *y = param(AG_F64, 1, s, 1);
    ag_tape *t = ag_tape_new();
    ag_tensor *z = ag_custom(t, &op, &x, 1, 1, s, NULL);
    assert_true(ag_get(z, 2) == 1.5);
    assert_int_equal(ag_backward(t, ag_sum(t, z, AG_ALL, false)), AG_OK);
    assert_true(ag_get(ag_grad(x), 0) == 2.0);
    ag_tape_reset(t);
    ag_tensor *xy[2] = {x, y};
    assert_null(ag_custom(t, &op, xy, 2, 1, s, NULL));
    assert_int_equal(ag_tape_status(t), AG_ERR_DTYPE);
    assert_non_null(strstr(ag_tape_error(t), "twice_grad"));
    ag_tape_reset(t);
    assert_null(ag_custom(t, &op, &x, 0, 1, s, NULL));
    assert_int_equal(ag_tape_status(t), AG_ERR_ARG);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(y);
}

/* ---- the allocation hook ---- */

static double train_step(ag_tape *t, ag_tensor *x, ag_tensor *w, ag_tensor *b)
{
    ag_tensor *h = ag_tanh(t, ag_add(t, ag_mul(t, x, w), b));
    ag_tensor *loss = ag_mean(t, ag_mul(t, h, h), AG_ALL, false);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    double v = ag_item(loss);
    ag_zero_grad(w);
    ag_zero_grad(b);
    ag_tape_reset(t);
    return v;
}

static void test_tape_no_allocation_after_warmup(void **state)
{
    (void)state;
    tg_count_allocs();
    int64_t sx[] = {64, 300}, sb[] = {300};
    ag_rng r;
    ag_rng_seed(&r, 1);
    ag_tensor *x = ag_tensor_normal(AG_F32, 2, sx, 0, 1, &r);
    ag_tensor *w = param(AG_F32, 2, sx, 0.1), *b = param(AG_F32, 1, sb, 0.2);
    ag_tape *t = ag_tape_new();
    train_step(t, x, w, b); /* warm-up: arena, entries, gradients */
    long before = tg_alloc_count;
    for (int i = 0; i < 20; i++)
        train_step(t, x, w, b);
    assert_int_equal(tg_alloc_count - before, 0);
    assert_true(tg_alloc_count > 0); /* the hook did see the warm-up */
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
    ag_set_allocator(NULL);
}

/* ---- higher order through the elementwise ops ---- */

/* The n-th derivative of y(x), elementwise ops only: the recorded gradient
 * of sum(previous) taken n times (a seed of ones is the sum).  The
 * recorded graph holds the seeds, so they live in ones[n] until the tape
 * is done. */
static ag_tensor *nth_gradient(ag_tape *t, ag_tensor *y, ag_tensor *x, int n,
                               ag_tensor **ones)
{
    ag_tensor *g = y;
    for (int order = 0; order < n; order++) {
        ones[order] = ag_tensor_full(AG_F64, ag_ndim(g), ag_shape(g), 1.0);
        ag_tensor *next = NULL;
        if (ag_gradients(t, g, ones[order], 1, &x, &next, true) != AG_OK)
            fail_msg("order %d: %s", order + 1, ag_tape_error(t));
        g = next;
    }
    return g;
}

static void free_all(ag_tensor **ts, int n)
{
    for (int i = 0; i < n; i++)
        ag_tensor_free(ts[i]);
}

/* t = tanh x: t' = 1 - t^2, t'' = -2t (1 - t^2), t''' = -2 (1 - t^2)(1 - 3t^2) */
static void test_tape_third_order_tanh(void **state)
{
    (void)state;
    int64_t s[] = {6};
    double xv[] = {-1.7, -0.9, -0.2, 0.0, 0.35, 1.3}, want[6], got[6];
    ag_tensor *x = tg_f64(1, s, xv);
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *ones[3];
    ag_tensor *d3 = nth_gradient(t, ag_tanh(t, x), x, 3, ones);
    tg_assert_shape(d3, 1, s);
    for (int i = 0; i < 6; i++) {
        double th = tanh(xv[i]);
        want[i] = -2 * (1 - th * th) * (1 - 3 * th * th);
        got[i] = ag_get(d3, i);
    }
    assert_doubles_close(got, want, 6, 1e-12, 0);
    ag_tape_free(t);
    free_all(ones, 3);
    ag_tensor_free(x);
}

/* gelu = x Phi(x): gelu' = Phi + x phi, gelu'' = phi (2 - x^2),
 * gelu''' = phi (x^3 - 4x), phi = e^(-x^2/2) / sqrt(2 pi); through erf's
 * recorded derivative. */
static void test_tape_third_order_gelu(void **state)
{
    (void)state;
    int64_t s[] = {5};
    double xv[] = {-2.1, -0.7, 0.3, 1.1, 2.6}, want[5], got[5];
    ag_tensor *x = tg_f64(1, s, xv);
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *ones[3];
    ag_tensor *d3 = nth_gradient(t, ag_gelu(t, x), x, 3, ones);
    for (int i = 0; i < 5; i++) {
        double v = xv[i], phi = exp(-0.5 * v * v) * 0.3989422804014327;
        want[i] = phi * (v * v * v - 4 * v);
        got[i] = ag_get(d3, i);
    }
    assert_doubles_close(got, want, 5, 1e-12, 0);
    ag_tape_free(t);
    free_all(ones, 3);
    ag_tensor_free(x);
}

/* z = a^b, b one element broadcast over a:
 * d3/da3 = b (b-1)(b-2) a^(b-3) elementwise; d3/db3 sum(z) = sum a^b log^3 a
 * (through sum_to and expand). */
static void test_tape_third_order_pow_broadcast(void **state)
{
    (void)state;
    int64_t sa[] = {4}, sb[] = {1};
    double av[] = {0.6, 1.3, 1.7, 2.2}, bv[] = {2.5}, want[4], got[4];
    ag_tensor *a = tg_f64(1, sa, av), *b = tg_f64(1, sb, bv);
    ag_set_requires_grad(a, true);
    ag_set_requires_grad(b, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *z = ag_pow(t, a, b);
    ag_tensor *ones[6];
    ag_tensor *da3 = nth_gradient(t, z, a, 3, ones), *db3 = nth_gradient(t, z, b, 3, ones + 3);
    double p = bv[0], sum = 0;
    for (int i = 0; i < 4; i++) {
        double l = log(av[i]);
        want[i] = p * (p - 1) * (p - 2) * pow(av[i], p - 3);
        got[i] = ag_get(da3, i);
        sum += pow(av[i], p) * l * l * l;
    }
    assert_doubles_close(got, want, 4, 1e-12, 0);
    tg_assert_shape(db3, 1, sb);
    double gb = ag_get(db3, 0);
    assert_doubles_close(&gb, &sum, 1, 1e-12, 0);
    ag_tape_free(t);
    free_all(ones, 6);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

/* maximum / minimum split a tie's gradient half each, in the fast and
 * the recorded sweep alike. */
static void test_tape_extremum_tie_splits(void **state)
{
    (void)state;
    int64_t s[] = {3};
    double xv[] = {1, 2, -1}, yv[] = {1, 0.5, -1};
    ag_tensor *x = tg_f64(1, s, xv), *y = tg_f64(1, s, yv);
    ag_set_requires_grad(x, true);
    ag_set_requires_grad(y, true);
    double want_max[2][3] = {{0.5, 1, 0.5}, {0.5, 0, 0.5}};
    double want_min[2][3] = {{0.5, 0, 0.5}, {0.5, 1, 0.5}};
    for (int op = 0; op < 2; op++)
        for (int rec = 0; rec < 2; rec++) {
            ag_tape *t = ag_tape_new();
            ag_tensor *z = op ? ag_minimum(t, x, y) : ag_maximum(t, x, y);
            ag_tensor *wrt[2] = {x, y}, *g[2], *ones = ag_tensor_full(AG_F64, 1, s, 1.0);
            assert_int_equal(ag_gradients(t, z, ones, 2, wrt, g, rec), AG_OK);
            for (int k = 0; k < 2; k++) {
                double got[3];
                for (int i = 0; i < 3; i++)
                    got[i] = ag_get(g[k], i);
                assert_doubles_close(got, op ? want_min[k] : want_max[k], 3, 0, 0);
            }
            ag_tensor_free(ones);
            ag_tape_free(t);
        }
    ag_tensor_free(x);
    ag_tensor_free(y);
}

/* A backward that stores its whole contribution into a new gradient
 * (ag_grad_out: relu stores, other unary ops zero their chunk and add)
 * over tape memory that held NaNs, alone and followed by a second
 * consumer that adds to it, on 1 and 2 threads and on an input large
 * enough to be cut into chunks. */
static void test_tape_fresh_gradient_stored_or_added(void **state)
{
    (void)state;
    int64_t n = 70001, s[] = {n};
    ag_tensor *x = ag_tensor_new(AG_F64, 1, s), *g = ag_tensor_new(AG_F64, 1, s);
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    for (int nt = 1; nt <= 2; nt++) {
        ag_set_num_threads(nt);
        for (int64_t i = 0; i < n; i++)
            ag_set(x, i, NAN);
        ag_tensor *h = ag_mul_scalar(t, x, 1);
        assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, h, h), AG_ALL, false)), AG_OK);
        ag_tape_reset(t);
        for (int64_t i = 0; i < n; i++) {
            ag_set(x, i, (double)(i % 7) - 3.5 + 0.25 * (double)(i % 3));
            ag_set(g, i, 1 + (double)(i % 5));
        }
        for (int both = 0; both < 2; both++) {
            ag_zero_grad(x);
            h = ag_mul_scalar(t, x, 1);
            ag_tensor *y = ag_mul(t, ag_relu(t, h), g);
            if (both)
                y = ag_add(t, y, ag_tanh(t, h));
            assert_int_equal(ag_backward(t, ag_sum(t, y, AG_ALL, false)), AG_OK);
            for (int64_t i = 0; i < n; i++) {
                double xi = ag_get(x, i), th = tanh(xi);
                double want = (xi > 0 ? ag_get(g, i) : 0) + (both ? 1 - th * th : 0);
                double got = ag_get(ag_grad(h), i);
                if (!(fabs(got - want) <= 1e-15 * (1 + fabs(want)))) {
                    print_error("threads %d, both %d, dh[%lld] = %g, want %g\n", nt, both,
                                (long long)i, got, want);
                    fail();
                }
            }
            ag_tape_reset(t);
        }
    }
    ag_set_num_threads(0);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tape_reused_intermediate),
        cmocka_unit_test(test_tape_pruning_and_no_grad),
        cmocka_unit_test(test_tape_backward_seeded),
        cmocka_unit_test(test_tape_error_shape_mismatch),
        cmocka_unit_test(test_tape_error_dtype_mismatch),
        cmocka_unit_test(test_tape_error_null_propagates),
        cmocka_unit_test(test_tape_error_nonscalar_root),
        cmocka_unit_test(test_tape_error_invalid_axis),
        cmocka_unit_test(test_tape_foreign_tensor_rejected),
        cmocka_unit_test(test_tape_custom_op_records_and_checks),
        cmocka_unit_test(test_tape_no_allocation_after_warmup),
        cmocka_unit_test(test_tape_third_order_tanh),
        cmocka_unit_test(test_tape_third_order_gelu),
        cmocka_unit_test(test_tape_third_order_pow_broadcast),
        cmocka_unit_test(test_tape_extremum_tie_splits),
        cmocka_unit_test(test_tape_fresh_gradient_stored_or_added),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
