/* test_tensor.c — persistent tensors, the rng, accessors. */
#include "test_util.h"

#include <math.h>
#include <string.h>

static void test_tensor_new_is_zeros(void **state)
{
    (void)state;
    int64_t shape[] = {2, 3, 4};
    for (int dt = 0; dt < 2; dt++) {
        ag_tensor *t = ag_tensor_new((ag_dtype)dt, 3, shape);
        assert_non_null(t);
        assert_int_equal(ag_numel(t), 24);
        assert_int_equal(ag_ndim(t), 3);
        assert_int_equal(ag_shape(t)[2], 4);
        assert_int_equal(ag_dtype_of(t), dt);
        for (int64_t i = 0; i < 24; i++)
            assert_true(ag_get(t, i) == 0.0);
        assert_null(ag_grad(t));
        ag_tensor_free(t);
    }
}

static void test_tensor_scalar_and_empty(void **state)
{
    (void)state;
    ag_tensor *s = ag_tensor_full(AG_F64, 0, NULL, 2.5);
    assert_non_null(s);
    assert_int_equal(ag_numel(s), 1);
    assert_true(ag_item(s) == 2.5);
    int64_t z[] = {3, 0};
    ag_tensor *e = ag_tensor_new(AG_F32, 2, z);
    assert_non_null(e);
    assert_int_equal(ag_numel(e), 0);
    assert_true(isnan(ag_item(e)));
    assert_non_null(ag_last_error());
    ag_tensor_free(s);
    ag_tensor_free(e);
}

static void test_tensor_bad_shapes_rejected(void **state)
{
    (void)state;
    int64_t neg[] = {2, -1};
    assert_null(ag_tensor_new(AG_F32, 2, neg));
    assert_non_null(strstr(ag_last_error(), "ag_tensor_new"));
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    assert_null(ag_tensor_new(AG_F32, 9, nine));
    int64_t huge[] = {INT64_MAX / 2, 4};
    assert_null(ag_tensor_new(AG_F64, 2, huge));
    assert_null(ag_tensor_new((ag_dtype)7, 1, neg));
    assert_null(ag_tensor_arange(AG_F32, 0, 1, 0));
    ag_tensor_free(NULL); /* a no-op */
}

static void test_tensor_from_data_ones_full_arange(void **state)
{
    (void)state;
    int64_t shape[] = {2, 2};
    float f[] = {1, 2, 3, 4};
    double d[] = {-1, 0.5, 3, 1e300};
    ag_tensor *a = ag_tensor_from_f32(2, shape, f);
    ag_tensor *b = ag_tensor_from_f64(2, shape, d);
    ag_tensor *o = ag_tensor_ones(AG_F32, 2, shape);
    ag_tensor *r = ag_tensor_arange(AG_F64, 1, 2, 0.25);
    ag_tensor *rd = ag_tensor_arange(AG_F32, 3, 0, -1);
    for (int i = 0; i < 4; i++) {
        assert_true(ag_get(a, i) == f[i]);
        assert_true(((double *)ag_data(b))[i] == d[i]);
        assert_true(ag_get(o, i) == 1.0);
    }
    assert_int_equal(ag_numel(r), 4);
    assert_true(ag_get(r, 3) == 1.75);
    assert_int_equal(ag_numel(rd), 3);
    assert_true(ag_get(rd, 2) == 1.0);
    ag_tensor *c = ag_tensor_clone(b);
    assert_tensor_close(c, b, 0, 0);
    ag_tensor *tensors[] = {a, b, o, r, rd, c};
    for (int i = 0; i < 6; i++)
        ag_tensor_free(tensors[i]);
}

static void test_tensor_random_is_seeded(void **state)
{
    (void)state;
    int64_t shape[] = {1000};
    ag_rng r1, r2;
    ag_rng_seed(&r1, 42);
    ag_rng_seed(&r2, 42);
    ag_tensor *u1 = ag_tensor_uniform(AG_F64, 1, shape, -1, 3, &r1);
    ag_tensor *u2 = ag_tensor_uniform(AG_F64, 1, shape, -1, 3, &r2);
    ag_tensor *n1 = ag_tensor_normal(AG_F64, 1, shape, 1, 2, &r1);
    assert_tensor_close(u1, u2, 0, 0);
    double mean = 0, var = 0, umin = 1e9, umax = -1e9;
    for (int i = 0; i < 1000; i++) {
        umin = fmin(umin, ag_get(u1, i));
        umax = fmax(umax, ag_get(u1, i));
        mean += ag_get(n1, i) / 1000;
    }
    for (int i = 0; i < 1000; i++)
        var += pow(ag_get(n1, i) - mean, 2) / 999;
    assert_true(umin >= -1 && umax < 3 && umax - umin > 3.8);
    assert_true(fabs(mean - 1) < 0.2 && fabs(sqrt(var) - 2) < 0.2);
    ag_rng_seed(&r1, 7);
    for (int i = 0; i < 1000; i++)
        assert_true(ag_rng_below(&r1, 10) < 10);
    ag_tensor_free(u1);
    ag_tensor_free(u2);
    ag_tensor_free(n1);
}

static void test_tensor_requires_grad_and_zero_grad(void **state)
{
    (void)state;
    int64_t shape[] = {3};
    ag_tensor *w = ag_tensor_full(AG_F32, 1, shape, 2.0);
    assert_false(ag_requires_grad(w));
    ag_set_requires_grad(w, true);
    assert_true(ag_requires_grad(w));
    ag_tape *t = ag_tape_new();
    ag_tensor *loss = ag_sum(t, ag_mul(t, w, w), AG_ALL, false);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    assert_true(ag_get(ag_grad(w), 1) == 4.0);
    ag_zero_grad(w);
    assert_non_null(ag_grad(w));
    assert_true(ag_get(ag_grad(w), 1) == 0.0);
    ag_tape_free(t);
    ag_tensor_free(w);
}

/* ag_item names its argument: NULL is not "0 elements" */
static void test_tensor_item_null_and_wrong_size(void **state)
{
    (void)state;
    assert_true(isnan(ag_item(NULL)));
    assert_string_equal(ag_last_error(), "ag_item: t is NULL");
    int64_t s[] = {2};
    ag_tensor *t = ag_tensor_ones(AG_F64, 1, s);
    assert_true(isnan(ag_item(t)));
    assert_string_equal(ag_last_error(), "ag_item: t has 2 elements, not 1");
    ag_tensor_free(t);
}

/* ag_tape_empty: ag_tape_tensor's shape and errors, NaN in anomaly mode,
 * and a tensor that ops take like any other. */
static void test_tape_empty(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    int64_t shape[] = {3, 5};
    for (int dt = 0; dt < 2; dt++) {
        ag_tensor *e = ag_tape_empty(t, (ag_dtype)dt, 2, shape);
        assert_non_null(e);
        assert_int_equal(ag_numel(e), 15);
        assert_int_equal(ag_dtype_of(e), dt);
        assert_false(ag_tensor_is_persistent(e));
        for (int64_t i = 0; i < 15; i++)
            ag_set(e, i, (double)i);
        ag_tensor *s = ag_sum(t, e, -1, false);
        s = ag_sum(t, s, -1, false);
        assert_true(ag_item(s) == 105.0);
    }
    ag_tape_set_anomaly(t, true);
    ag_tensor *n = ag_tape_empty(t, AG_F32, 2, shape);
    for (int64_t i = 0; i < 15; i++)
        assert_true(isnan(ag_get(n, i)));
    ag_tape_set_anomaly(t, false);
    assert_null(ag_tape_empty(NULL, AG_F32, 2, shape));
    assert_string_equal(ag_last_error(), "ag_tape_empty: tape is NULL");
    assert_null(ag_tape_empty(t, AG_F32, 2, NULL));
    assert_string_equal(ag_last_error(), "ag_tape_empty: shape is NULL (ndim 2)");
    ag_tape_free(t);
}

/* ag_tensor_set_storage: values carried over, reads and writes (a
 * backward's gradient too) in the caller's buffer, which ag_tensor_free
 * leaves alone (ASan: a double free otherwise), back into own memory. */
static void test_tensor_set_storage(void **state)
{
    (void)state;
    int64_t shape[] = {5};
    float *buf = aligned_alloc(64, 64), *gbuf = aligned_alloc(64, 64);
    ag_tensor *w = ag_tensor_arange(AG_F32, 1, 6, 1);
    ag_set_requires_grad(w, true);
    assert_int_equal(ag_tensor_set_storage(w, buf), AG_OK);
    assert_ptr_equal(ag_data(w), buf);
    assert_true(buf[4] == 5.0f);
    ag_set(w, 0, 7.0);
    assert_true(buf[0] == 7.0f);
    ag_tape *t = ag_tape_new();
    assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, w, w), -1, false)), AG_OK);
    assert_int_equal(ag_tensor_set_storage(ag_grad(w), gbuf), AG_OK);
    ag_tape_reset(t);
    assert_int_equal(ag_backward(t, ag_sum(t, w, -1, false)), AG_OK);
    assert_true(gbuf[0] == 15.0f && gbuf[1] == 5.0f); /* 2 w + 1, accumulated in gbuf */
    ag_tape_free(t);
    assert_int_equal(ag_tensor_set_storage(w, NULL), AG_OK); /* own memory again */
    assert_true(ag_data(w) != (void *)buf && ag_get(w, 0) == 7.0);
    memset(buf, 0, 64);
    assert_true(ag_get(w, 1) == 2.0);
    assert_int_equal(ag_tensor_set_storage(w, NULL), AG_OK); /* there already */
    ag_tensor_free(w); /* frees its own data, not gbuf */
    assert_int_equal(ag_tensor_set_storage(NULL, buf), AG_ERR_ARG);
    assert_string_equal(ag_last_error(), "ag_tensor_set_storage: t is NULL");
    ag_tensor *v = ag_tensor_new(AG_F64, 1, shape);
    assert_int_equal(ag_tensor_set_storage(v, (char *)buf + 8), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "not aligned to 64 bytes"));
    assert_true(ag_get(v, 0) == 0.0);
    ag_tape *t2 = ag_tape_new();
    assert_int_equal(ag_tensor_set_storage(ag_add(t2, v, v), buf), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "tape tensor"));
    ag_tape_free(t2);
    ag_tensor_free(v);
    free(buf);
    free(gbuf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tensor_new_is_zeros),
        cmocka_unit_test(test_tensor_item_null_and_wrong_size),
        cmocka_unit_test(test_tensor_scalar_and_empty),
        cmocka_unit_test(test_tensor_bad_shapes_rejected),
        cmocka_unit_test(test_tensor_from_data_ones_full_arange),
        cmocka_unit_test(test_tensor_random_is_seeded),
        cmocka_unit_test(test_tensor_requires_grad_and_zero_grad),
        cmocka_unit_test(test_tape_empty),
        cmocka_unit_test(test_tensor_set_storage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
