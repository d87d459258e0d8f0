/* test_ops.c — walks the op table: every op has samples, passes gradcheck
 * in f64 at rtol 1e-6 on each, and its f32 path agrees with f64. */
#include "test_util.h"

#include "autograd_internal.h"

#include <math.h>

#define RTOL 1e-6
#define ATOL 1e-8

static int g_checked;

static void free_sample(ag_op_sample *s)
{
    for (int i = 0; i < s->n_in; i++)
        ag_tensor_free(s->in[i]);
}

static void test_ops_every_op_has_samples(void **state)
{
    (void)state;
    for (int id = 0; id < AG_OP_COUNT; id++) {
        const ag_op_def *d = ag_op_table[id];
        assert_non_null(d);
        assert_non_null(d->name);
        assert_non_null(d->forward);
        assert_non_null(d->sample);
        ag_rng rng;
        ag_rng_seed(&rng, 1);
        ag_op_sample s = {0};
        if (!d->sample(0, &rng, &s))
            fail_msg("op %s has no sample inputs", d->name);
        free_sample(&s);
    }
}

static void test_ops_gradcheck_every_op_f64(void **state)
{
    (void)state;
    g_checked = 0;
    for (int id = 0; id < AG_OP_COUNT; id++) {
        const ag_op_def *d = ag_op_table[id];
        int cases = 0;
        for (int which = 0;; which++) {
            ag_rng rng;
            ag_rng_seed(&rng, 100 + (uint64_t)which);
            ag_op_sample s = {0};
            if (!d->sample(which, &rng, &s))
                break;
            ag_gradcheck_opts o = {.rtol = RTOL, .atol = ATOL};
            ag_gradcheck_report r;
            ag_status st = ag_gradcheck(s.fn, &s, s.in, s.n_in, &o, &r);
            if (st != AG_OK)
                fail_msg("op %s sample %d: %s", d->name, which, r.message);
            free_sample(&s);
            cases++;
        }
        assert_true(cases > 0);
        g_checked++;
    }
    print_message("op table: %d ops, %d gradchecked in f64 (rtol %g)\n", AG_OP_COUNT,
                  g_checked, RTOL);
    assert_int_equal(g_checked, AG_OP_COUNT);
}

/* Output values, then input gradients (seeded by a fixed output gradient),
 * of one sample run in dtype dt, as doubles in vals; returns the count. */
static int run_in_dtype(ag_op_sample *s, ag_dtype dt, double *vals)
{
    ag_tensor *in[4];
    for (int i = 0; i < s->n_in; i++) {
        in[i] = tg_convert(s->in[i], dt);
        ag_set_requires_grad(in[i], ag_requires_grad(s->in[i]));
    }
    ag_tape *t = ag_tape_new();
    ag_tensor *y = s->fn(t, in, s);
    assert_non_null(y);
    int n = 0;
    ag_tensor *seed = ag_tensor_new(dt, ag_ndim(y), ag_shape(y));
    for (int64_t j = 0; j < ag_numel(y); j++) {
        vals[n++] = ag_get(y, j);
        ag_set(seed, j, 0.5 + 0.25 * (double)(j % 5));
    }
    if (ag_requires_grad(y)) {
        assert_int_equal(ag_backward_seeded(t, y, seed), AG_OK);
        for (int i = 0; i < s->n_in; i++)
            for (int64_t k = 0; ag_grad(in[i]) && k < ag_numel(in[i]); k++)
                vals[n++] = ag_get(ag_grad(in[i]), k);
    }
    ag_tensor_free(seed);
    ag_tape_free(t);
    for (int i = 0; i < s->n_in; i++)
        ag_tensor_free(in[i]);
    return n;
}

static void test_ops_f32_agrees_with_f64(void **state)
{
    (void)state;
    static double v64[8192], v32[8192];
    for (int id = 0; id < AG_OP_COUNT; id++) {
        const ag_op_def *d = ag_op_table[id];
        for (int which = 0;; which++) {
            ag_rng rng;
            ag_rng_seed(&rng, 7 + (uint64_t)which);
            ag_op_sample s = {0};
            if (!d->sample(which, &rng, &s))
                break;
            /* round the inputs to f32 first so both paths see equal values */
            for (int i = 0; i < s.n_in; i++)
                for (int64_t k = 0; k < ag_numel(s.in[i]); k++)
                    ag_set(s.in[i], k, (float)ag_get(s.in[i], k));
            int n64 = run_in_dtype(&s, AG_F64, v64);
            int n32 = run_in_dtype(&s, AG_F32, v32);
            assert_int_equal(n64, n32);
            tg_assert_doubles_close(v32, v64, n64, 1e-5, 1e-6, d->name, which);
            free_sample(&s);
        }
    }
}

/* A deliberately wrong backward must make gradcheck fail. */
static void wrong_backward(ag_tape *tape, ag_entry *e)
{
    double *dx = ag_grad_data(tape, e->in[0]);
    const double *g = e->out->grad->data, *x = e->in[0]->data;
    for (int64_t i = 0; dx && i < e->out->numel; i++)
        dx[i] += g[i] * 2.0 * x[i] * 1.01; /* true derivative of x^2 is 2x */
}

static void square_forward(ag_entry *e)
{
    const double *x = e->in[0]->data;
    double *z = e->out->data;
    for (int64_t i = 0; i < e->out->numel; i++)
        z[i] = x[i] * x[i];
}

static const ag_op_def broken_square = {"broken_square", 1, square_forward, wrong_backward,
                                        NULL};

static ag_tensor *broken_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    ag_op_call c = {.def = &broken_square, .in = in, .n_in = 1, .dtype = AG_F64,
                    .ndim = in[0]->ndim, .shape = in[0]->shape};
    return ag_op_run(t, &c);
}

static void test_ops_gradcheck_catches_wrong_backward(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    int64_t s[] = {4};
    ag_tensor *x = ag_sample_tensor(&rng, 1, s, AG_SAMPLE_SIGNED, 0.5, 2);
    ag_gradcheck_report r;
    ag_gradcheck_opts o = {.rtol = RTOL, .atol = ATOL};
    assert_int_equal(ag_gradcheck(broken_apply, NULL, &x, 1, &o, &r), AG_ERR_GRADIENT);
    assert_false(r.passed);
    assert_int_equal(r.worst_input, 0);
    assert_true(fabs(r.analytic / r.numeric - 1.01) < 1e-6);
    assert_non_null(strstr(r.message, "FAILED"));
    /* fast mode (random projections) catches it too */
    o.mode = AG_GRADCHECK_FAST;
    assert_int_equal(ag_gradcheck(broken_apply, NULL, &x, 1, &o, &r), AG_ERR_GRADIENT);
    ag_tensor_free(x);
}

static ag_tensor *big_fn(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    return ag_tanh(t, ag_mul(t, in[0], in[1]));
}

static void test_ops_gradcheck_fast_mode_large_output(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    int64_t s1[] = {40, 30}, s2[] = {30};
    ag_tensor *in[2] = {ag_sample_tensor(&rng, 2, s1, AG_SAMPLE_RANGE, -1, 1),
                        ag_sample_tensor(&rng, 1, s2, AG_SAMPLE_RANGE, -1, 1)};
    ag_gradcheck_report r;
    ag_gradcheck_opts o = {.rtol = RTOL, .atol = ATOL};
    assert_int_equal(ag_gradcheck(big_fn, NULL, in, 2, &o, &r), AG_OK);
    assert_int_equal(r.compared, 1); /* 1200 outputs > full_max: one projection */
    assert_null(ag_grad(in[0]));     /* the caller's gradients are left alone */
    ag_tensor_free(in[0]);
    ag_tensor_free(in[1]);
}

static void test_ops_gradcheck_rejects_bad_args(void **state)
{
    (void)state;
    int64_t s[] = {2};
    ag_tensor *f32 = ag_tensor_new(AG_F32, 1, s), *nograd = ag_tensor_new(AG_F64, 1, s);
    ag_gradcheck_report r;
    assert_int_equal(ag_gradcheck(big_fn, NULL, &f32, 1, NULL, &r), AG_ERR_ARG);
    assert_non_null(strstr(r.message, "f64"));
    assert_int_equal(ag_gradcheck(big_fn, NULL, &nograd, 1, NULL, &r), AG_ERR_ARG);
    assert_non_null(strstr(r.message, "requires grad"));
    ag_tensor_free(f32);
    ag_tensor_free(nograd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ops_every_op_has_samples),
        cmocka_unit_test(test_ops_gradcheck_every_op_f64),
        cmocka_unit_test(test_ops_f32_agrees_with_f64),
        cmocka_unit_test(test_ops_gradcheck_catches_wrong_backward),
        cmocka_unit_test(test_ops_gradcheck_fast_mode_large_output),
        cmocka_unit_test(test_ops_gradcheck_rejects_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
