/* test_ops_nn.c — softmax, log-softmax, fused cross-entropy, dropout:
 * values against PyTorch (printed by torch 1.13, float64), extreme logits,
 * ignore_index, label smoothing, reductions, dropout statistics, the
 * error of each bad argument, third derivatives against the two-class
 * closed forms and a cross-entropy Hessian-vector product.  Gradcheck of
 * every op runs in test_ops. */
#include "test_util.h"

#include <math.h>
#include <string.h>

#define S(...) ((const int64_t[]){__VA_ARGS__})
#define D(...) ((const double[]){__VA_ARGS__})
#define NELEM(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))

static ag_tensor *make(ag_dtype dt, int ndim, const int64_t *shape, const double *v)
{
    ag_tensor *x = tg_f64(ndim, shape, v), *y = tg_convert(x, dt);
    ag_tensor_free(x);
    return y;
}

static double tol(ag_dtype dt) { return dt == AG_F64 ? 1e-14 : 1e-6; }

/* t's elements against want (a literal array) within the dtype's tolerance */
#define check_values(t, want) check_values_n((t), (want), NELEM(want))
static void check_values_n(const ag_tensor *t, const double *want, int64_t n)
{
    assert_non_null(t);
    assert_int_equal(ag_numel(t), n);
    double got[64];
    for (int64_t i = 0; i < n; i++)
        got[i] = ag_get(t, i);
    double r = tol(ag_dtype_of(t));
    assert_doubles_close(got, want, n, r, r);
}

/* The PyTorch example: logits [4,3], labels {0, 2, ignored, 1}. */
static const double ce_x[] = {1, 2, 3, 1, -1, 0.5, 0.5, 0, 0, 2, 1, -1};
static const int64_t ce_y[] = {0, 2, -100, 1};

/* ---- softmax / log-softmax ---- */

static void test_softmax_known_values(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tape *t = ag_tape_new();
        ag_tensor *a = make((ag_dtype)dt, 2, S(2, 3), D(1, 2, 3, 3, 2, 1));
        /* torch.softmax([1, 2, 3]) */
        check_values(ag_softmax(t, a, -1),
                     D(0.09003057317038045, 0.24472847105479761, 0.66524095577482178,
                       0.66524095577482178, 0.24472847105479761, 0.09003057317038045));
        /* along axis 0 each column is softmax([x, y]) */
        double e = 1 / (1 + exp(2.0)), m = 0.5;
        check_values(ag_softmax(t, a, 0), D(e, m, 1 - e, 1 - e, m, e));
        assert_int_equal(ag_tape_status(t), AG_OK);
        ag_tensor_free(a);
        ag_tape_free(t);
    }
}

static void test_log_softmax_known_values(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tape *t = ag_tape_new();
        ag_tensor *a = make((ag_dtype)dt, 3, S(1, 3, 1), D(1, 2, 3));
        ag_tensor *z = ag_log_softmax(t, a, 1);
        assert_int_equal(ag_ndim(z), 3);
        check_values(z, D(-2.40760596444438058, -1.40760596444438035, -0.40760596444438041));
        ag_tensor_free(a);
        ag_tape_free(t);
    }
}

/* A 0-d input is one lane of one element: softmax 1, log-softmax 0. */
static void test_softmax_scalar_input(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = ag_tensor_full(AG_F64, 0, NULL, 3.5);
    check_values(ag_softmax(t, a, 0), D(1));
    check_values(ag_log_softmax(t, a, -1), D(0));
    ag_tensor_free(a);
    ag_tape_free(t);
}

static void test_log_softmax_extreme_logits_stay_finite(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tape *t = ag_tape_new();
        ag_tensor *a = make((ag_dtype)dt, 2, S(2, 3), D(1e4, -1e4, 0, -1e4, -1e4, -1e4));
        ag_set_requires_grad(a, true);
        ag_tensor *ls = ag_log_softmax(t, a, 1);
        check_values(ls, D(0, -2e4, -1e4, -log(3.0), -log(3.0), -log(3.0)));
        ag_tensor *sm = ag_softmax(t, a, 1);
        check_values(sm, D(1, 0, 0, 1.0 / 3, 1.0 / 3, 1.0 / 3));
        ag_tensor *loss = ag_add(t, ag_sum(t, ls, AG_ALL, false),
                                 ag_sum(t, ag_mul(t, sm, sm), AG_ALL, false));
        assert_int_equal(ag_backward(t, loss), AG_OK);
        for (int64_t i = 0; i < 6; i++)
            assert_true(isfinite(ag_get(ag_grad(a), i)));
        /* cross-entropy on the same logits */
        ag_ce_opts o = {0.1, AG_CE_NO_IGNORE, AG_REDUCE_NONE};
        ag_tensor *ce = ag_cross_entropy_logits(t, a, (const int64_t[]){1, 0}, 2, &o);
        /* row 0: 0.9 * 2e4 + 0.1 * mean(0, 2e4, 1e4);  row 1: log 3 */
        check_values(ce, D(0.9 * 2e4 + 0.1 * 1e4, log(3.0)));
        ag_tensor_free(a);
        ag_tape_free(t);
    }
}

/* d/dx sum(w * log_softmax(x)) = w - softmax(x) * sum(w), checked by hand */
static void test_log_softmax_gradient_by_hand(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = make(AG_F64, 1, S(3), D(1, 2, 3));
    ag_tensor *w = make(AG_F64, 1, S(3), D(0.5, -1, 2));
    ag_set_requires_grad(a, true);
    ag_tensor *l = ag_sum(t, ag_mul(t, ag_log_softmax(t, a, 0), w), AG_ALL, false);
    assert_int_equal(ag_backward(t, l), AG_OK);
    const double p[] = {0.09003057317038045, 0.24472847105479761, 0.66524095577482178};
    check_values(ag_grad(a), D(0.5 - 1.5 * p[0], -1 - 1.5 * p[1], 2 - 1.5 * p[2]));
    ag_tensor_free(a);
    ag_tensor_free(w);
    ag_tape_free(t);
}

static void test_softmax_bad_axis(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = ag_tensor_new(AG_F32, 2, S(2, 3));
    assert_null(ag_softmax(t, a, 2));
    tg_assert_tape_error(t, AG_ERR_ARG, "axis 2 out of range for 2 dims");
    ag_tape_reset(t);
    assert_null(ag_log_softmax(t, a, -3));
    tg_assert_tape_error(t, AG_ERR_ARG, "log_softmax");
    ag_tape_reset(t);
    ag_tensor *s = ag_tensor_new(AG_F32, 0, NULL);
    assert_null(ag_softmax(t, s, 1));
    tg_assert_tape_error(t, AG_ERR_ARG, "axis 1 out of range for 0 dims");
    ag_tape_reset(t);
    assert_null(ag_softmax(t, NULL, 0));
    tg_assert_tape_error(t, AG_ERR_NULL, "softmax");
    ag_tensor_free(a);
    ag_tensor_free(s);
    ag_tape_free(t);
}

/* ---- cross-entropy ---- */

static void test_cross_entropy_known_value(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tape *t = ag_tape_new();
        ag_tensor *a = make((ag_dtype)dt, 2, S(1, 3), D(1, 2, 3));
        ag_set_requires_grad(a, true);
        ag_tensor *l = ag_cross_entropy_logits(t, a, (const int64_t[]){0}, 1, NULL);
        assert_int_equal(ag_ndim(l), 0);
        check_values(l, D(2.4076059644443806));
        assert_int_equal(ag_backward(t, l), AG_OK);
        /* d/dx = softmax - onehot */
        check_values(ag_grad(a), D(0.09003057317038045 - 1, 0.24472847105479761,
                                   0.66524095577482178));
        ag_tensor_free(a);
        ag_tape_free(t);
    }
}

/* Default options: mean over rows whose label is not -100. */
static void test_cross_entropy_ignore_index(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tape *t = ag_tape_new();
        ag_tensor *a = make((ag_dtype)dt, 2, S(4, 3), ce_x);
        ag_set_requires_grad(a, true);
        ag_tensor *l = ag_cross_entropy_logits(t, a, ce_y, 4, NULL);
        check_values(l, D(1.6038583669515194)); /* (sum of 3 rows) / 3 */
        assert_int_equal(ag_backward(t, l), AG_OK);
        for (int c = 0; c < 3; c++)
            assert_true(ag_get(ag_grad(a), 6 + c) == 0); /* the ignored row */
        /* an ignore index inside [0, C) skips that class's rows */
        ag_tape_reset(t);
        ag_ce_opts o = {0, 2, AG_REDUCE_SUM};
        l = ag_cross_entropy_logits(t, a, (const int64_t[]){0, 2, 2, 1}, 4, &o);
        check_values(l, D(2.4076059644443806 + 1.3490122167681864));
        ag_tensor_free(a);
        ag_tape_free(t);
    }
}

static void test_cross_entropy_smoothing(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tape *t = ag_tape_new();
        ag_tensor *a = make((ag_dtype)dt, 2, S(4, 3), ce_x);
        ag_set_requires_grad(a, true);
        ag_ce_opts o = {0.1, -100, AG_REDUCE_MEAN};
        ag_tensor *l = ag_cross_entropy_logits(t, a, ce_y, 4, &o);
        check_values(l, D(1.5927472558404083));
        assert_int_equal(ag_backward(t, l), AG_OK);
        check_values(ag_grad(a),
                     D(-0.28110092005431764, 0.07046504590715477, 0.21063587414716284,
                       0.18025455321145373, 0.014787415271745746, -0.19504196848319952, 0,
                       0, 0, 0.22401705978830266, -0.2246122909969714,
                       0.0005952312086687999));
        ag_tensor_free(a);
        ag_tape_free(t);
    }
}

static void test_cross_entropy_reductions(void **state)
{
    (void)state;
    for (int dt = 0; dt < 2; dt++) {
        ag_tape *t = ag_tape_new();
        ag_tensor *a = make((ag_dtype)dt, 2, S(4, 3), ce_x);
        ag_set_requires_grad(a, true);
        ag_ce_opts o = {0.1, -100, AG_REDUCE_NONE};
        ag_tensor *l = ag_cross_entropy_logits(t, a, ce_y, 4, &o);
        assert_int_equal(ag_ndim(l), 1);
        assert_int_equal(ag_shape(l)[0], 4);
        check_values(l, D(2.3076059644443805, 1.0882902529753242, 0, 1.3823455501015198));
        /* per-row seed: row r's gradient is seed_r times the row's */
        ag_tensor *seed = make((ag_dtype)dt, 1, S(4), D(1, 0, 5, -2));
        assert_int_equal(ag_backward_seeded(t, l, seed), AG_OK);
        double g[12];
        for (int i = 0; i < 12; i++)
            g[i] = ag_get(ag_grad(a), i);
        for (int c = 0; c < 3; c++) {
            assert_true(g[3 + c] == 0 && g[6 + c] == 0);
        }
        ag_tape_reset(t);
        ag_zero_grad(a);
        o.reduction = AG_REDUCE_SUM;
        l = ag_cross_entropy_logits(t, a, ce_y, 4, &o);
        check_values(l, D(4.778241767521225));
        assert_int_equal(ag_backward(t, l), AG_OK);
        /* sum's gradient is 3x mean's (3 rows count) */
        const double mean_g[] = {-0.28110092005431764, 0.07046504590715477,
                                 0.21063587414716284};
        const double sum_g[] = {3 * mean_g[0], 3 * mean_g[1], 3 * mean_g[2],
                                3 * 0.18025455321145373, 3 * 0.014787415271745746,
                                3 * -0.19504196848319952, 0, 0, 0,
                                3 * 0.22401705978830266, 3 * -0.2246122909969714,
                                3 * 0.0005952312086687999};
        check_values(ag_grad(a), sum_g);
        for (int c = 0; c < 3; c++) /* row 0 of NONE with seed 1 equals row 0 of SUM */
            assert_true(fabs(g[c] - 3 * mean_g[c]) <= 10 * tol((ag_dtype)dt));
        ag_tensor_free(seed);
        ag_tensor_free(a);
        ag_tape_free(t);
    }
}

/* Every row ignored: the mean is 0/0 = NaN, as in PyTorch, and no
 * gradient reaches the logits. */
static void test_cross_entropy_all_ignored_mean_is_nan(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = make(AG_F64, 2, S(2, 3), ce_x);
    ag_set_requires_grad(a, true);
    ag_tensor *l = ag_cross_entropy_logits(t, a, (const int64_t[]){-100, -100}, 2, NULL);
    assert_true(isnan(ag_item(l)));
    assert_int_equal(ag_backward(t, l), AG_OK);
    for (int i = 0; i < 6; i++)
        assert_true(ag_get(ag_grad(a), i) == 0);
    ag_tensor_free(a);
    ag_tape_free(t);
}

/* The trainer's shape: [128, 10], fused against log_softmax + pick. */
static void test_cross_entropy_matches_log_softmax(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 42);
    int64_t y[128];
    for (int r = 0; r < 128; r++)
        y[r] = (int64_t)ag_rng_below(&rng, 10);
    for (int dt = 0; dt < 2; dt++) {
        ag_tensor *a = ag_tensor_normal((ag_dtype)dt, 2, S(128, 10), 0, 3, &rng);
        ag_tape *t = ag_tape_new();
        ag_tensor *l = ag_cross_entropy_logits(t, a, y, 128, NULL);
        ag_tensor *ls = ag_log_softmax(t, a, 1);
        double want = 0;
        for (int r = 0; r < 128; r++)
            want -= ag_get(ls, r * 10 + y[r]) / 128;
        assert_true(fabs(ag_item(l) - want) <= 10 * tol((ag_dtype)dt) * fabs(want));
        ag_tensor_free(a);
        ag_tape_free(t);
    }
}

static void test_cross_entropy_label_out_of_range(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = ag_tensor_new(AG_F32, 2, S(4, 10));
    assert_null(ag_cross_entropy_logits(t, a, (const int64_t[]){1, 2, 3, 12}, 4, NULL));
    tg_assert_tape_error(t, AG_ERR_ARG, "label 12 of row 3 is outside [0, 10)");
    ag_tape_reset(t);
    ag_ce_opts o = {0, AG_CE_NO_IGNORE, AG_REDUCE_MEAN};
    assert_null(ag_cross_entropy_logits(t, a, (const int64_t[]){1, -100, 3, 4}, 4, &o));
    tg_assert_tape_error(t, AG_ERR_ARG, "label -100 of row 1");
    ag_tensor_free(a);
    ag_tape_free(t);
}

static void test_cross_entropy_bad_args(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = ag_tensor_new(AG_F64, 2, S(2, 3)), *v = ag_tensor_new(AG_F64, 1, S(3));
    const int64_t y[] = {0, 1};
    assert_null(ag_cross_entropy_logits(t, v, y, 3, NULL));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "logits are [3], expected [n, C]");
    ag_tape_reset(t);
    assert_null(ag_cross_entropy_logits(t, a, y, 5, NULL));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "logits are [2,3] but n is 5");
    ag_tape_reset(t);
    assert_null(ag_cross_entropy_logits(t, a, NULL, 2, NULL));
    tg_assert_tape_error(t, AG_ERR_ARG, "labels are NULL");
    ag_tape_reset(t);
    ag_ce_opts o = {1.0, -100, AG_REDUCE_MEAN};
    assert_null(ag_cross_entropy_logits(t, a, y, 2, &o));
    tg_assert_tape_error(t, AG_ERR_ARG, "label_smoothing 1 is outside [0, 1)");
    ag_tape_reset(t);
    o = (ag_ce_opts){NAN, -100, AG_REDUCE_MEAN};
    assert_null(ag_cross_entropy_logits(t, a, y, 2, &o));
    tg_assert_tape_error(t, AG_ERR_ARG, "label_smoothing");
    ag_tape_reset(t);
    o = (ag_ce_opts){0, -100, (ag_reduction)7};
    assert_null(ag_cross_entropy_logits(t, a, y, 2, &o));
    tg_assert_tape_error(t, AG_ERR_ARG, "unknown reduction 7");
    ag_tape_reset(t);
    assert_null(ag_cross_entropy_logits(t, NULL, y, 2, NULL));
    tg_assert_tape_error(t, AG_ERR_NULL, "ag_cross_entropy_logits");
    ag_tensor_free(a);
    ag_tensor_free(v);
    ag_tape_free(t);
}

/* ---- dropout ---- */

static void test_dropout_statistics(void **state)
{
    (void)state;
    const int64_t n = 100000;
    const double p = 0.3;
    for (int dt = 0; dt < 2; dt++) {
        ag_tensor *a = ag_tensor_full((ag_dtype)dt, 1, S(n), 2.0);
        ag_set_requires_grad(a, true);
        ag_rng rng;
        ag_rng_seed(&rng, 9);
        ag_tape *t = ag_tape_new();
        ag_tensor *z = ag_dropout(t, a, p, true, &rng);
        assert_non_null(z);
        assert_int_equal(ag_backward(t, ag_sum(t, z, AG_ALL, false)), AG_OK);
        int64_t dropped = 0;
        for (int64_t i = 0; i < n; i++) {
            double zi = ag_get(z, i), gi = ag_get(ag_grad(a), i);
            if (zi == 0) {
                dropped++;
                assert_true(gi == 0);
            } else { /* kept: scaled by 1/(1-p), and so is the gradient */
                assert_true(fabs(zi - 2.0 / (1 - p)) <= 1e-6 * zi);
                assert_true(fabs(gi - 1.0 / (1 - p)) <= 1e-6 * gi);
            }
        }
        /* binomial sd is sqrt(p(1-p)/n) ~ 0.00145; allow 4 sd */
        assert_true(fabs((double)dropped / (double)n - p) < 0.006);
        ag_tensor_free(a);
        ag_tape_free(t);
    }
}

static void test_dropout_same_seed_same_mask(void **state)
{
    (void)state;
    ag_rng r1, r2, r3;
    ag_rng_seed(&r1, 5);
    ag_rng_seed(&r2, 5);
    ag_rng_seed(&r3, 6);
    ag_tensor *a = ag_tensor_ones(AG_F32, 2, S(16, 16));
    ag_tape *t = ag_tape_new();
    ag_tensor *z1 = ag_dropout(t, a, 0.5, true, &r1), *z2 = ag_dropout(t, a, 0.5, true, &r2);
    ag_tensor *z3 = ag_dropout(t, a, 0.5, true, &r3);
    assert_memory_equal(ag_data(z1), ag_data(z2), 256 * sizeof(float));
    assert_memory_not_equal(ag_data(z1), ag_data(z3), 256 * sizeof(float));
    /* the generator advanced: the next mask differs */
    ag_tensor *z4 = ag_dropout(t, a, 0.5, true, &r1);
    assert_memory_not_equal(ag_data(z1), ag_data(z4), 256 * sizeof(float));
    ag_tensor_free(a);
    ag_tape_free(t);
}

/* Evaluation or p == 0: a itself comes back, nothing is recorded and the
 * generator is not touched (rng may be NULL). */
static void test_dropout_identity_when_eval_or_p0(void **state)
{
    (void)state;
    ag_tensor *a = ag_tensor_ones(AG_F64, 1, S(8));
    ag_set_requires_grad(a, true);
    ag_rng rng, before;
    ag_rng_seed(&rng, 1);
    before = rng;
    ag_tape *t = ag_tape_new();
    assert_ptr_equal(ag_dropout(t, a, 0.5, false, &rng), a);
    assert_ptr_equal(ag_dropout(t, a, 0.0, true, &rng), a);
    assert_ptr_equal(ag_dropout(t, a, 0.5, false, NULL), a);
    assert_memory_equal(&rng, &before, sizeof rng);
    assert_int_equal(ag_tape_entries(t), 0);
    ag_tensor_free(a);
    ag_tape_free(t);
}

static void test_dropout_bad_args(void **state)
{
    (void)state;
    ag_tensor *a = ag_tensor_ones(AG_F64, 1, S(8));
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    ag_tape *t = ag_tape_new();
    const double bad[] = {-0.1, 1.0, 1.5, NAN};
    for (int i = 0; i < NELEM(bad); i++) {
        assert_null(ag_dropout(t, a, bad[i], true, &rng));
        tg_assert_tape_error(t, AG_ERR_ARG, "is outside [0, 1)");
        ag_tape_reset(t);
        assert_null(ag_dropout(t, a, bad[i], false, &rng)); /* checked in eval too */
        ag_tape_reset(t);
    }
    assert_null(ag_dropout(t, a, 0.5, true, NULL));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_dropout: rng is NULL");
    ag_tape_reset(t);
    assert_null(ag_dropout(t, NULL, 0.5, true, &rng));
    tg_assert_tape_error(t, AG_ERR_NULL, "ag_dropout");
    ag_tensor_free(a);
    ag_tape_free(t);
}

/* ---- recorded derivatives: third order and Hessian-vector products ---- */

/* s = sigmoid(x) and its derivatives: the two-class softmax of [x, 0] */
static double sig_d(double x, int k)
{
    double s = 1 / (1 + exp(-x)), d1 = s * (1 - s);
    return k == 0 ? s : k == 1 ? d1 : k == 2 ? d1 * (1 - 2 * s) : d1 * (1 - 6 * s + 6 * s * s);
}

enum { NN_P = 3 }; /* points: rows of x [P, 1] */

typedef struct {
    const char *name;
    /* a scalar of logits [P, 2] = [x_i, 0], summed over the rows */
    ag_tensor *(*build)(ag_tape *t, ag_tensor *logits);
    /* its k-th derivative in x_i, k = 1..3 */
    double (*deriv)(const double *xs, int i, int k);
} nn_case;

static ag_tensor *first_class(ag_tape *t, ag_tensor *z)
{
    ag_tensor *c = ag_tape_tensor(t, AG_F64, 2, S(1, 2));
    ag_set(c, 0, 1.0);
    return ag_sum(t, ag_mul(t, z, c), AG_ALL, false);
}

/* sum_i softmax([x_i, 0])_0 = sum_i s_i */
static ag_tensor *softmax_case(ag_tape *t, ag_tensor *l)
{
    return first_class(t, ag_softmax(t, l, -1));
}
static double softmax_deriv(const double *xs, int i, int k) { return sig_d(xs[i], k); }

/* sum_i log s_i: d = 1 - s, -s', -s'' */
static ag_tensor *log_softmax_case(ag_tape *t, ag_tensor *l)
{
    return first_class(t, ag_log_softmax(t, l, -1));
}
static double log_softmax_deriv(const double *xs, int i, int k)
{
    return k == 1 ? 1 - sig_d(xs[i], 0) : -sig_d(xs[i], k - 1);
}

/* label 0, summed: sum_i -log s_i, d = s - 1, s', s'' */
static ag_tensor *ce_sum_case(ag_tape *t, ag_tensor *l)
{
    int64_t y[NN_P] = {0};
    ag_ce_opts o = {0, AG_CE_NO_IGNORE, AG_REDUCE_SUM};
    return ag_cross_entropy_logits(t, l, y, NN_P, &o);
}
static double ce_sum_deriv(const double *xs, int i, int k)
{
    return k == 1 ? sig_d(xs[i], 0) - 1 : sig_d(xs[i], k - 1);
}

/* smoothing eps = 0.2, row 1 ignored, mean over the 2 others: per row
 * (1 - eps/2)(-log s) + eps/2 (-log(1 - s)), d = s - (1 - eps/2), s', s'' */
static ag_tensor *ce_mean_case(ag_tape *t, ag_tensor *l)
{
    int64_t y[NN_P] = {0, -100, 0};
    ag_ce_opts o = {0.2, -100, AG_REDUCE_MEAN};
    return ag_cross_entropy_logits(t, l, y, NN_P, &o);
}
static double ce_mean_deriv(const double *xs, int i, int k)
{
    if (i == 1)
        return 0;
    return (k == 1 ? sig_d(xs[i], 0) - 0.9 : sig_d(xs[i], k - 1)) / 2;
}

static void test_nn_ops_third_derivative_two_classes(void **state)
{
    (void)state;
    static const nn_case cases[] = {
        {"softmax", softmax_case, softmax_deriv},
        {"log_softmax", log_softmax_case, log_softmax_deriv},
        {"cross_entropy sum", ce_sum_case, ce_sum_deriv},
        {"cross_entropy mean, smoothing, ignore", ce_mean_case, ce_mean_deriv},
    };
    const double xs[NN_P] = {-1.3, 0.4, 2.1};
    for (int c = 0; c < NELEM(cases); c++) {
        ag_tensor *x = tg_f64(2, S(NN_P, 1), xs);
        ag_set_requires_grad(x, true);
        ag_tape *t = ag_tape_new();
        ag_tensor *e0 = ag_tape_tensor(t, AG_F64, 2, S(1, 2)); /* logits [x_i, 0] */
        ag_set(e0, 0, 1.0);
        ag_tensor *y = cases[c].build(t, ag_mul(t, x, e0));
        for (int k = 1; k <= 3; k++) {
            ag_tensor *g;
            assert_int_equal(ag_gradients(t, y, NULL, 1, &x, &g, true), AG_OK);
            double want[NN_P], got[NN_P];
            for (int i = 0; i < NN_P; i++) {
                want[i] = cases[c].deriv(xs, i, k);
                got[i] = ag_get(g, i);
            }
            print_message("%s, order %d\n", cases[c].name, k);
            assert_doubles_close(got, want, NN_P, 1e-12, 1e-14);
            y = ag_sum(t, g, AG_ALL, false);
        }
        ag_tape_free(t);
        ag_tensor_free(x);
    }
}

/* dropout's derivative is the mask times the scale at any order: the
 * second derivative of sum(dropout(x)^2) is 2 m^2 (x-independent). */
static void test_dropout_second_derivative_is_mask_squared(void **state)
{
    (void)state;
    ag_tensor *x = ag_tensor_full(AG_F64, 1, S(16), 0.7);
    ag_set_requires_grad(x, true);
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    ag_tape *t = ag_tape_new();
    ag_tensor *z = ag_dropout(t, x, 0.5, true, &rng), *g, *gg;
    assert_int_equal(ag_gradients(t, ag_sum(t, ag_mul(t, z, z), AG_ALL, false), NULL, 1,
                                  &x, &g, true), AG_OK);
    assert_int_equal(ag_gradients(t, ag_sum(t, g, AG_ALL, false), NULL, 1, &x, &gg, true),
                     AG_OK);
    int kept = 0;
    for (int64_t i = 0; i < 16; i++) {
        bool keep = ag_get(z, i) != 0;
        kept += keep;
        assert_true(fabs(ag_get(g, i) - (keep ? 2 * 0.7 * 4 : 0)) < 1e-14);
        assert_true(fabs(ag_get(gg, i) - (keep ? 8 : 0)) < 1e-14);
    }
    assert_true(kept > 0 && kept < 16);
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* Softmax cross-entropy of a linear model, H v by ag_hvp (reverse over
 * reverse) against central differences of the fast gradient along v. */
typedef struct {
    ag_tensor *p[3]; /* X [6, 4], W [3, 4], b [3]: all differentiated */
    int64_t labels[6];
} ce_model;

static ag_tensor *ce_model_loss(ag_tape *t, const ce_model *m)
{
    ag_ce_opts o = {0.1, -100, AG_REDUCE_MEAN};
    return ag_cross_entropy_logits(t, ag_linear(t, m->p[0], m->p[1], m->p[2]), m->labels, 6,
                                   &o);
}

/* g (joined over the three tensors) at p + s v */
static void ce_model_grad(ce_model *m, ag_tensor *const *v, double s, double *g)
{
    ag_tensor *saved[3];
    for (int k = 0; k < 3; k++) {
        saved[k] = ag_tensor_clone(m->p[k]);
        for (int64_t i = 0; i < ag_numel(m->p[k]); i++)
            ag_set(m->p[k], i, ag_get(saved[k], i) + s * ag_get(v[k], i));
    }
    ag_tape *t = ag_tape_new();
    ag_tensor *gr[3];
    assert_int_equal(ag_gradients(t, ce_model_loss(t, m), NULL, 3, m->p, gr, false), AG_OK);
    for (int k = 0, n = 0; k < 3; k++)
        for (int64_t i = 0; i < ag_numel(m->p[k]); i++)
            g[n++] = ag_get(gr[k], i);
    ag_tape_free(t);
    for (int k = 0; k < 3; k++) {
        for (int64_t i = 0; i < ag_numel(m->p[k]); i++)
            ag_set(m->p[k], i, ag_get(saved[k], i));
        ag_tensor_free(saved[k]);
    }
}

static void test_cross_entropy_linear_hvp_matches_fd(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 17);
    ce_model m = {.labels = {0, 2, 1, -100, 2, 0}};
    static const int64_t shapes[3][2] = {{6, 4}, {3, 4}, {3, 0}};
    ag_tensor *v[3];
    for (int k = 0; k < 3; k++) {
        int nd = k < 2 ? 2 : 1;
        m.p[k] = ag_tensor_normal(AG_F64, nd, shapes[k], 0, 1, &rng);
        v[k] = ag_tensor_normal(AG_F64, nd, shapes[k], 0, 1, &rng);
        ag_set_requires_grad(m.p[k], true);
    }
    ag_tape *t = ag_tape_new();
    ag_tensor *hv[3];
    assert_int_equal(ag_hvp(t, ce_model_loss(t, &m), 3, m.p, v, hv, false), AG_OK);
    double got[39], gp[39], gm[39], fd[39];
    int n = 0;
    for (int k = 0; k < 3; k++) {
        tg_assert_shape(hv[k], ag_ndim(m.p[k]), ag_shape(m.p[k]));
        for (int64_t i = 0; i < ag_numel(hv[k]); i++)
            got[n++] = ag_get(hv[k], i);
    }
    assert_int_equal(n, 39);
    const double h = 1e-5;
    ce_model_grad(&m, v, h, gp);
    ce_model_grad(&m, v, -h, gm);
    for (int i = 0; i < n; i++)
        fd[i] = (gp[i] - gm[i]) / (2 * h);
    assert_doubles_close(got, fd, n, 1e-6, 1e-8);
    for (int k = 0; k < 3; k++) {
        assert_null(ag_grad(m.p[k])); /* persistent gradient buffers untouched */
        ag_tensor_free(m.p[k]);
        ag_tensor_free(v[k]);
    }
    ag_tape_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_known_values),
        cmocka_unit_test(test_log_softmax_known_values),
        cmocka_unit_test(test_softmax_scalar_input),
        cmocka_unit_test(test_log_softmax_extreme_logits_stay_finite),
        cmocka_unit_test(test_log_softmax_gradient_by_hand),
        cmocka_unit_test(test_softmax_bad_axis),
        cmocka_unit_test(test_cross_entropy_known_value),
        cmocka_unit_test(test_cross_entropy_ignore_index),
        cmocka_unit_test(test_cross_entropy_smoothing),
        cmocka_unit_test(test_cross_entropy_reductions),
        cmocka_unit_test(test_cross_entropy_all_ignored_mean_is_nan),
        cmocka_unit_test(test_cross_entropy_matches_log_softmax),
        cmocka_unit_test(test_cross_entropy_label_out_of_range),
        cmocka_unit_test(test_cross_entropy_bad_args),
        cmocka_unit_test(test_dropout_statistics),
        cmocka_unit_test(test_dropout_same_seed_same_mask),
        cmocka_unit_test(test_dropout_identity_when_eval_or_p0),
        cmocka_unit_test(test_dropout_bad_args),
        cmocka_unit_test(test_nn_ops_third_derivative_two_classes),
        cmocka_unit_test(test_dropout_second_derivative_is_mask_squared),
        cmocka_unit_test(test_cross_entropy_linear_hvp_matches_fd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
