/* test_ops.c — walks the op table: every op has samples, passes gradcheck
 * and gradgradcheck in f64 on each, its recorded derivative equals its
 * fast backward, and its f32 path agrees with f64.  TG_OPS=name,name
 * limits the walks to those ops (while writing one). */
#include "test_util.h"

#include "autograd_internal.h"

#include <math.h>

#define RTOL 1e-6
#define ATOL 1e-8

static int g_checked;

/* Whether the walks include op `name` (TG_OPS unset: every op). */
static bool op_selected(const char *name)
{
    const char *sel = getenv("TG_OPS");
    if (!sel || !*sel)
        return true;
    size_t n = strlen(name);
    for (const char *p = sel; (p = strstr(p, name)); p += n)
        if ((p == sel || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

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
    int selected = 0;
    for (int id = 0; id < AG_OP_COUNT; id++) {
        const ag_op_def *d = ag_op_table[id];
        if (!op_selected(d->name))
            continue;
        selected++;
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
    assert_int_equal(g_checked, selected);
}

/* Second order: gradgradcheck of every op that carries a gradient (argmax
 * does not), including those whose second derivative is zero almost
 * everywhere (relu, abs, max, clamp, where): their first derivative is
 * then a constant mask times the seed, which is checked too. */
#define GG_RTOL 1e-5
#define GG_ATOL 1e-7
static void test_ops_gradgradcheck_every_op_f64(void **state)
{
    (void)state;
    int checked = 0, selected = 0;
    for (int id = 0; id < AG_OP_COUNT; id++) {
        const ag_op_def *d = ag_op_table[id];
        if (!op_selected(d->name))
            continue;
        selected++;
        if (!d->vjp) {
            assert_null(d->backward); /* no gradient at all, e.g. argmax */
            checked++;
            continue;
        }
        for (int which = 0;; which++) {
            ag_rng rng;
            ag_rng_seed(&rng, 200 + (uint64_t)which);
            ag_op_sample s = {0};
            if (!d->sample(which, &rng, &s))
                break;
            ag_gradcheck_opts o = {.rtol = GG_RTOL, .atol = GG_ATOL};
            ag_gradcheck_report r;
            ag_status st = ag_gradgradcheck(s.fn, &s, s.in, s.n_in, &o, &r);
            if (st != AG_OK)
                fail_msg("op %s sample %d: %s", d->name, which, r.message);
            free_sample(&s);
        }
        checked++;
    }
    print_message("op table: %d ops gradgradchecked in f64 (rtol %g)\n", checked, GG_RTOL);
    assert_int_equal(checked, selected);
}

/* Input gradients of one sample for a fixed output gradient, by the fast
 * sweep or the recorded one, joined into vals; returns the count. */
static int sample_grads(ag_op_sample *s, bool recorded, double *vals)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *y = s->fn(t, s->in, s);
    assert_non_null(y);
    ag_tensor *seed = ag_tensor_new(AG_F64, ag_ndim(y), ag_shape(y));
    for (int64_t j = 0; j < ag_numel(y); j++)
        ag_set(seed, j, 0.5 + 0.25 * (double)(j % 5) - 0.1 * (double)(j % 3));
    ag_tensor *g[4];
    int n = 0;
    assert_int_equal(ag_gradients(t, y, seed, s->n_in, s->in, g, recorded), AG_OK);
    for (int i = 0; i < s->n_in; i++) {
        tg_assert_shape(g[i], ag_ndim(s->in[i]), ag_shape(s->in[i]));
        assert_int_equal(ag_dtype_of(g[i]), AG_F64);
        for (int64_t k = 0; k < ag_numel(g[i]); k++)
            vals[n++] = ag_get(g[i], k);
    }
    ag_tensor_free(seed);
    ag_tape_free(t);
    return n;
}

static void test_ops_recorded_equals_fast_every_op(void **state)
{
    (void)state;
    static double fast[8192], rec[8192];
    for (int id = 0; id < AG_OP_COUNT; id++) {
        const ag_op_def *d = ag_op_table[id];
        if (!op_selected(d->name) || !d->vjp)
            continue;
        for (int which = 0;; which++) {
            ag_rng rng;
            ag_rng_seed(&rng, 300 + (uint64_t)which);
            ag_op_sample s = {0};
            if (!d->sample(which, &rng, &s))
                break;
            int nf = sample_grads(&s, false, fast);
            int nr = sample_grads(&s, true, rec);
            assert_int_equal(nf, nr);
            tg_assert_doubles_close(rec, fast, nf, 1e-12, 1e-14, d->name, which);
            free_sample(&s);
        }
    }
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
        if (!op_selected(d->name))
            continue;
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

static const ag_op_def broken_square = {.name = "broken_square", .forward = square_forward,
                                        .backward = wrong_backward};

/* dx = g * 2x with x taken as a constant: the first derivative is right,
 * the second (2g) comes out 0. */
static double copy_of(const void *ctx, int64_t i) { return ag_get(ctx, i); }
static void square_vjp_const_x(ag_tape *t, const ag_entry *e, ag_tensor *g, ag_tensor **gin)
{
    const ag_tensor *x = e->in[0];
    ag_tensor *xc = ag_const_fill(t, x->dtype, x->ndim, x->shape, copy_of, x);
    gin[0] = ag_mul_scalar(t, ag_mul(t, g, xc), 2.0);
}
static void square_backward(ag_tape *tape, ag_entry *e)
{
    double *dx = ag_grad_data(tape, e->in[0]);
    const double *g = e->out->grad->data, *x = e->in[0]->data;
    for (int64_t i = 0; dx && i < e->out->numel; i++)
        dx[i] += g[i] * 2.0 * x[i]; /* dx += g * 2x */
}
static const ag_op_def wrong_second = {.name = "wrong_second", .forward = square_forward,
                                       .backward = square_backward,
                                       .vjp = square_vjp_const_x};

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

static ag_tensor *wrong_second_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    ag_op_call c = {.def = &wrong_second, .in = in, .n_in = 1, .dtype = AG_F64,
                    .ndim = in[0]->ndim, .shape = in[0]->shape};
    return ag_op_run(t, &c);
}

/* A wrong second derivative must make gradgradcheck fail, though the first
 * derivative passes gradcheck and the recorded and fast sweeps agree. */
static void test_ops_gradgradcheck_catches_wrong_second_derivative(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 4);
    int64_t s[] = {5};
    ag_tensor *x = ag_sample_tensor(&rng, 1, s, AG_SAMPLE_SIGNED, 0.5, 2);
    ag_gradcheck_opts o = {.rtol = RTOL, .atol = ATOL};
    ag_gradcheck_report r;
    assert_int_equal(ag_gradcheck(wrong_second_apply, NULL, &x, 1, &o, &r), AG_OK);
    assert_int_equal(ag_gradgradcheck(wrong_second_apply, NULL, &x, 1, &o, &r),
                     AG_ERR_GRADIENT);
    assert_false(r.passed);
    assert_int_equal(r.worst_input, 0);
    assert_non_null(strstr(r.message, "gradgradcheck FAILED"));
    o.mode = AG_GRADCHECK_FAST;
    assert_int_equal(ag_gradgradcheck(wrong_second_apply, NULL, &x, 1, &o, &r),
                     AG_ERR_GRADIENT);
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
        cmocka_unit_test(test_ops_gradgradcheck_every_op_f64),
        cmocka_unit_test(test_ops_recorded_equals_fast_every_op),
        cmocka_unit_test(test_ops_gradgradcheck_catches_wrong_second_derivative),
        cmocka_unit_test(test_ops_f32_agrees_with_f64),
        cmocka_unit_test(test_ops_gradcheck_catches_wrong_backward),
        cmocka_unit_test(test_ops_gradcheck_fast_mode_large_output),
        cmocka_unit_test(test_ops_gradcheck_rejects_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
