/* test_ops_attention.c — ag_attention beyond the op table (gradcheck,
 * gradgradcheck and the PyTorch fixtures live in test_ops and
 * test_fixtures): rows that see no key, agreement with the composed
 * softmax(q k^T) v on blocks, threads and f32, the tape memory of the
 * fused backward against the composed one at T = 1024, no system
 * allocation per step, anomaly mode, and the errors. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define S(...) ((const int64_t[]){__VA_ARGS__})

static ag_tensor *param(ag_dtype dt, int ndim, const int64_t *shape, ag_rng *rng)
{
    ag_tensor *x = ag_tensor_uniform(dt, ndim, shape, -1.5, 1.5, rng);
    ag_set_requires_grad(x, true);
    return x;
}

/* softmax(q k^T * scale + mask + causal) v in plain ops, for comparison */
static ag_tensor *composed(ag_tape *t, ag_tensor *q, ag_tensor *k, ag_tensor *v,
                           ag_tensor *mask, bool causal, double scale)
{
    int nd = ag_ndim(q);
    int64_t tq = ag_shape(q)[nd - 2], tk = ag_shape(k)[nd - 2];
    ag_tensor *s = ag_mul_scalar(t, ag_matmul(t, q, ag_transpose(t, k, -2, -1)), scale);
    if (mask)
        s = ag_add(t, s, mask);
    if (causal) {
        ag_tensor *upper = ag_tape_tensor(t, ag_dtype_of(q), 2, S(tq, tk));
        for (int64_t i = 0; i < tq; i++)
            for (int64_t j = i + 1; j < tk; j++)
                ag_set(upper, i * tk + j, 1);
        s = ag_masked_fill(t, s, upper, -INFINITY);
    }
    return ag_matmul(t, ag_softmax(t, s, -1), v);
}

/* Output and the three input gradients (seeded by w) of the fused or the
 * composed attention, copied into persistent tensors out[0..3]. */
static void run_both(bool fused, ag_tensor *q, ag_tensor *k, ag_tensor *v, ag_tensor *mask,
                     bool causal, double scale, ag_tensor *w, ag_tensor **out)
{
    ag_tensor *in[3] = {q, k, v};
    for (int i = 0; i < 3; i++)
        ag_zero_grad(in[i]);
    ag_tape *t = ag_tape_new();
    ag_tensor *o = fused ? ag_attention(t, q, k, v, mask, causal, scale)
                         : composed(t, q, k, v, mask, causal, scale);
    assert_non_null(o);
    assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, o, w), AG_ALL, false)), AG_OK);
    out[0] = ag_tensor_clone(o);
    for (int i = 0; i < 3; i++)
        out[i + 1] = ag_tensor_clone(ag_grad(in[i]));
    ag_tape_free(t);
}

/* Fused against composed on shapes that cross the 64-row blocks, causal
 * with Tq != Tk and a broadcast mask, in both dtypes and with 1 and 2
 * threads (bit-identical results). */
static void test_attention_matches_composed(void **state)
{
    (void)state;
    static const struct {
        int64_t b, h, tq, tk, d;
        bool causal, mask;
    } cases[] = {{2, 3, 100, 70, 16, true, true}, {1, 4, 130, 130, 8, true, false},
                 {3, 2, 65, 129, 12, false, true}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int dt = 0; dt < 2; dt++) {
            ag_rng rng;
            ag_rng_seed(&rng, 40 + c);
            int64_t b = cases[c].b, h = cases[c].h, tq = cases[c].tq, tk = cases[c].tk;
            int64_t d = cases[c].d;
            ag_tensor *q = param((ag_dtype)dt, 4, S(b, h, tq, d), &rng);
            ag_tensor *k = param((ag_dtype)dt, 4, S(b, h, tk, d), &rng);
            ag_tensor *v = param((ag_dtype)dt, 4, S(b, h, tk, d + 3), &rng);
            ag_tensor *w = ag_tensor_normal((ag_dtype)dt, 4, S(b, h, tq, d + 3), 0, 1, &rng);
            ag_tensor *m = NULL;
            if (cases[c].mask) { /* (B, 1, 1, Tk): padding of the last keys */
                m = ag_tensor_normal((ag_dtype)dt, 4, S(b, 1, 1, tk), 0, 1, &rng);
                for (int64_t i = 0; i < b; i++)
                    for (int64_t j = tk - 1 - 3 * i; j < tk; j++)
                        ag_set(m, i * tk + j, -INFINITY);
            }
            ag_tensor *want[4], *one[4], *two[4];
            run_both(false, q, k, v, m, cases[c].causal, 0.3, w, want);
            ag_set_num_threads(1);
            run_both(true, q, k, v, m, cases[c].causal, 0.3, w, one);
            ag_set_num_threads(2);
            run_both(true, q, k, v, m, cases[c].causal, 0.3, w, two);
            ag_set_num_threads(0);
            double tol = dt == AG_F64 ? 1e-12 : 2e-5;
            for (int i = 0; i < 4; i++) {
                assert_tensor_close(one[i], want[i], tol, tol);
                assert_memory_equal(ag_data(one[i]), ag_data(two[i]),
                                    (size_t)ag_numel(one[i]) * ag_dtype_size(dt));
                ag_tensor_free(want[i]);
                ag_tensor_free(one[i]);
                ag_tensor_free(two[i]);
            }
            ag_tensor *all[] = {q, k, v, w, m};
            for (int i = 0; i < 5; i++)
                ag_tensor_free(all[i]);
        }
}

/* A row whose keys are all masked gives 0 and no gradient, in the fast
 * and the recorded derivative; the other rows are unaffected. */
static void test_attention_row_without_keys_is_zero(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_rng rng;
        ag_rng_seed(&rng, 5);
        ag_tensor *q = param((ag_dtype)dt, 3, S(2, 3, 4), &rng);
        ag_tensor *k = param((ag_dtype)dt, 3, S(2, 5, 4), &rng);
        ag_tensor *v = param((ag_dtype)dt, 3, S(2, 5, 2), &rng);
        ag_tensor *m = ag_tensor_new((ag_dtype)dt, 2, S(3, 5));
        for (int j = 0; j < 5; j++) /* query row 1 sees no key */
            ag_set(m, 5 + j, -INFINITY);
        ag_tape *t = ag_tape_new();
        ag_tensor *o = ag_attention(t, q, k, v, m, false, 0);
        for (int b = 0; b < 2; b++)
            for (int d = 0; d < 2; d++) {
                assert_true(ag_get(o, b * 6 + 2 + d) == 0);
                assert_true(isfinite(ag_get(o, b * 6 + d)) && ag_get(o, b * 6 + d) != 0);
            }
        ag_tensor *loss = ag_sum(t, ag_mul(t, o, o), AG_ALL, false);
        ag_tensor *wrt[3] = {q, k, v}, *fast[3], *rec[3];
        assert_int_equal(ag_gradients(t, loss, NULL, 3, wrt, fast, false), AG_OK);
        assert_int_equal(ag_gradients(t, loss, NULL, 3, wrt, rec, true), AG_OK);
        for (int i = 0; i < 3; i++)
            assert_tensor_close(rec[i], fast[i], 1e-5, 1e-6);
        for (int b = 0; b < 2; b++)
            for (int d = 0; d < 4; d++)
                assert_true(ag_get(fast[0], b * 12 + 4 + d) == 0);
        for (int64_t i = 0; i < ag_numel(fast[1]); i++)
            assert_true(isfinite(ag_get(fast[1], i)) && isfinite(ag_get(rec[1], i)));
        /* a NaN is no masked key: its row (here every row) stays NaN */
        ag_tape_reset(t);
        ag_set(q, 0, NAN);
        o = ag_attention(t, q, k, v, m, false, 0);
        assert_true(isnan(ag_get(o, 0)) && isnan(ag_get(o, 1)));
        assert_true(isfinite(ag_get(o, 4)) && ag_get(o, 2) == 0);
        /* also where the NaN is the only score above -inf in its row */
        ag_tape_reset(t);
        for (int j = 1; j < 5; j++)
            ag_set(m, j, -INFINITY);
        o = ag_attention(t, q, k, v, m, false, 0);
        assert_true(isnan(ag_get(o, 0)) && isnan(ag_get(o, 1)));
        assert_true(isfinite(ag_get(o, 4)) && ag_get(o, 2) == 0);
        ag_tape_free(t);
        ag_tensor *all[] = {q, k, v, m};
        for (int i = 0; i < 4; i++)
            ag_tensor_free(all[i]);
    }
}

/* Tape bytes after forward and backward of one attention at T = 1024
 * (batch 1, 4 heads, D 32, f32, causal; q, k, v tape tensors so their
 * gradients count too): the fused op against the composed one. */
static size_t attention_tape_bytes(bool fused, ag_tensor *const *p)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x[3];
    for (int i = 0; i < 3; i++)
        x[i] = ag_mul_scalar(t, p[i], 1.0);
    size_t base = ag_tape_bytes_used(t);
    ag_tensor *o = fused ? ag_attention(t, x[0], x[1], x[2], NULL, true, 0)
                         : composed(t, x[0], x[1], x[2], NULL, true, 1 / sqrt(32.0));
    assert_int_equal(ag_backward(t, ag_sum(t, o, AG_ALL, false)), AG_OK);
    size_t used = ag_tape_bytes_used(t) - base;
    ag_tape_free(t);
    return used;
}

static void test_attention_backward_memory_is_linear(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 7);
    ag_tensor *p[3];
    for (int i = 0; i < 3; i++)
        p[i] = param(AG_F32, 4, S(1, 4, 1024, 32), &rng);
    size_t fused = attention_tape_bytes(true, p), comp = attention_tape_bytes(false, p);
    print_message("attention T=1024, 4 heads, D 32, f32: tape bytes after forward+backward: "
                  "fused %zu, composed %zu (ratio %.4f)\n", fused, comp,
                  (double)fused / (double)comp);
    assert_true(fused * 4 <= comp);
    for (int i = 0; i < 3; i++)
        ag_tensor_free(p[i]);
}

static void attention_step(ag_tape *t, ag_tensor *q, ag_tensor *k, ag_tensor *v)
{
    ag_tensor *o = ag_attention(t, q, k, v, NULL, true, 0);
    assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, o, o), AG_ALL, false)), AG_OK);
    ag_tape_reset(t);
}

/* After the first step, a step allocates nothing from the system, on one
 * thread and on two (scratch is arena memory). */
static void test_attention_step_allocates_nothing(void **state)
{
    (void)state;
    tg_count_allocs();
    for (int threads = 1; threads <= 2; threads++) {
        ag_set_num_threads(threads);
        ag_rng rng;
        ag_rng_seed(&rng, 8);
        ag_tensor *q = param(AG_F32, 4, S(4, 4, 64, 32), &rng);
        ag_tensor *k = param(AG_F32, 4, S(4, 4, 64, 32), &rng);
        ag_tensor *v = param(AG_F32, 4, S(4, 4, 64, 32), &rng);
        ag_tape *t = ag_tape_new();
        attention_step(t, q, k, v);
        attention_step(t, q, k, v);
        long before = tg_alloc_count;
        for (int i = 0; i < 5; i++)
            attention_step(t, q, k, v);
        print_message("%d thread(s): %ld system allocations in 5 attention steps\n", threads,
                      tg_alloc_count - before);
        assert_int_equal(tg_alloc_count - before, 0);
        ag_tape_free(t);
        ag_tensor_free(q);
        ag_tensor_free(k);
        ag_tensor_free(v);
    }
    ag_set_num_threads(0);
    ag_set_allocator(NULL);
}

/* -inf in the mask is intended: no anomaly, forward or backward. */
static void test_attention_anomaly_mode_takes_masks(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 9);
    ag_tensor *q = param(AG_F32, 3, S(2, 6, 4), &rng), *k = param(AG_F32, 3, S(2, 6, 4), &rng);
    ag_tensor *v = param(AG_F32, 3, S(2, 6, 4), &rng);
    ag_tensor *m = ag_tensor_new(AG_F32, 1, S(6));
    ag_set(m, 5, -INFINITY);
    ag_tape *t = ag_tape_new();
    ag_tape_set_anomaly(t, true);
    ag_tensor *o = ag_attention(t, q, k, v, m, true, 0);
    assert_non_null(o);
    assert_int_equal(ag_backward(t, ag_sum(t, o, AG_ALL, false)), AG_OK);
    ag_tape_free(t);
    ag_tensor *all[] = {q, k, v, m};
    for (int i = 0; i < 4; i++)
        ag_tensor_free(all[i]);
}

static void test_attention_rejects_bad_arguments(void **state)
{
    (void)state;
    ag_tensor *q = ag_tensor_new(AG_F32, 3, S(2, 3, 4));
    ag_tensor *k = ag_tensor_new(AG_F32, 3, S(2, 5, 4));
    ag_tensor *v = ag_tensor_new(AG_F32, 3, S(2, 5, 2));
    ag_tensor *k6 = ag_tensor_new(AG_F32, 3, S(2, 5, 6)); /* D 6 != 4 */
    ag_tensor *kb = ag_tensor_new(AG_F32, 3, S(3, 5, 4)); /* batch 3 != 2 */
    ag_tensor *v64 = ag_tensor_new(AG_F64, 3, S(2, 5, 2));
    ag_tensor *m = ag_tensor_new(AG_F32, 2, S(3, 4)), *mg = ag_tensor_new(AG_F32, 1, S(5));
    ag_set_requires_grad(mg, true);
    ag_tape *t = ag_tape_new();
    assert_null(ag_attention(t, q, k6, v, NULL, false, 0));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_attention: q [2,3,4], k [2,5,6] and v [2,5,2] "
                         "do not fit");
    ag_tape_reset(t);
    assert_null(ag_attention(t, q, kb, v, NULL, false, 0));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "same leading dims");
    ag_tape_reset(t);
    assert_null(ag_attention(t, q, k, v64, NULL, false, 0));
    tg_assert_tape_error(t, AG_ERR_DTYPE, "ag_attention: dtypes differ");
    ag_tape_reset(t);
    assert_null(ag_attention(t, q, k, v, m, false, 0));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_attention: mask [3,4] does not broadcast to the "
                         "scores [2,3,5]");
    ag_tape_reset(t);
    assert_null(ag_attention(t, q, k, v, mg, false, 0));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_attention: mask requires grad");
    ag_tape_reset(t);
    assert_null(ag_attention(t, q, k, v, NULL, false, INFINITY));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_attention: scale inf is not finite");
    ag_tape_reset(t);
    assert_null(ag_attention(t, q, NULL, v, NULL, false, 0));
    tg_assert_tape_error(t, AG_ERR_NULL, "ag_attention: input #2 is NULL");
    ag_tape_free(t);
    ag_tensor *all[] = {q, k, v, k6, v64, kb, m, mg};
    for (int i = 0; i < 8; i++)
        ag_tensor_free(all[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_matches_composed),
        cmocka_unit_test(test_attention_row_without_keys_is_zero),
        cmocka_unit_test(test_attention_backward_memory_is_linear),
        cmocka_unit_test(test_attention_step_allocates_nothing),
        cmocka_unit_test(test_attention_anomaly_mode_takes_masks),
        cmocka_unit_test(test_attention_rejects_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
