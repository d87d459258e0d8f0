/* test_ops_util.c — the utilities sequence models need: detach, split and
 * chunk, masked_fill (with -inf under anomaly mode), the no-grad scope,
 * int64 indices (argmax, topk), sampling from logits, cross-entropy over
 * [..., C] logits, and reshape / squeeze / unsqueeze as views. */
#include "test_util.h"

#include "autograd_internal.h"

#include <math.h>
#include <string.h>

#define S(...) ((const int64_t[]){__VA_ARGS__})
#define D(...) ((const double[]){__VA_ARGS__})

static void assert_values(const ag_tensor *t, const double *want, int64_t n)
{
    assert_non_null(t);
    assert_int_equal(ag_numel(t), n);
    double got[64];
    for (int64_t i = 0; i < n; i++)
        got[i] = ag_get(t, i);
    assert_doubles_close(got, want, n, 1e-12, 1e-12);
}

/* ---- detach ---- */

static void test_detach_copies_values_and_cuts_the_graph(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(1, S(3), D(1, -2, 3));
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_mul_scalar(t, x, 2.0), *d = ag_detach(t, y);
    assert_values(d, D(2, -4, 6), 3);
    assert_false(ag_requires_grad(d));
    assert_true(ag_data(d) != ag_data(y));
    int64_t entries = ag_tape_entries(t);
    /* loss = sum(x * detach(2x)): the detached factor is a constant */
    ag_tensor *loss = ag_sum(t, ag_mul(t, x, d), AG_ALL, false);
    assert_int_equal(ag_tape_entries(t), entries + 2); /* mul, sum: detach recorded nothing */
    assert_int_equal(ag_backward(t, loss), AG_OK);
    assert_values(ag_grad(x), D(2, -4, 6), 3);
    ag_tape_reset(t);
    assert_int_equal(ag_backward(t, ag_sum(t, ag_detach(t, x), AG_ALL, false)), AG_ERR_STATE);
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* ---- split and chunk ---- */

static void test_split_pieces_values_and_gradients(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(2, S(2, 6), D(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11));
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *p[3];
    assert_int_equal(ag_split(t, x, 3, S(1, 3, 2), -1, p), AG_OK);
    tg_assert_shape(p[0], 2, S(2, 1));
    tg_assert_shape(p[1], 2, S(2, 3));
    tg_assert_shape(p[2], 2, S(2, 2));
    assert_values(p[1], D(1, 2, 3, 7, 8, 9), 6);
    assert_values(p[2], D(4, 5, 10, 11), 4);
    /* loss = sum(p0) + 2 sum(p1) + 3 sum(p2): each piece's weight lands
     * on its columns */
    ag_tensor *loss = ag_add(t, ag_sum(t, p[0], AG_ALL, false),
                             ag_add(t, ag_mul_scalar(t, ag_sum(t, p[1], AG_ALL, false), 2),
                                    ag_mul_scalar(t, ag_sum(t, p[2], AG_ALL, false), 3)));
    assert_int_equal(ag_backward(t, loss), AG_OK);
    assert_values(ag_grad(x), D(1, 2, 2, 2, 3, 3, 1, 2, 2, 2, 3, 3), 12);
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_split_rejects_bad_sizes(void **state)
{
    (void)state;
    ag_tensor *x = ag_tensor_new(AG_F32, 2, S(2, 6));
    ag_tape *t = ag_tape_new();
    ag_tensor *p[3] = {x, x, x};
    assert_int_equal(ag_split(t, x, 2, S(2, 3), 1, p), AG_ERR_ARG);
    tg_assert_tape_error(t, AG_ERR_ARG,
                         "ag_split: sizes add up to 5, but axis 1 of [2,6] has 6");
    assert_null(p[0]);
    assert_null(p[1]);
    ag_tape_reset(t);
    assert_int_equal(ag_split(t, x, 2, S(-1, 7), 1, p), AG_ERR_ARG);
    tg_assert_tape_error(t, AG_ERR_ARG, "sizes[0] = -1 is negative");
    ag_tape_reset(t);
    assert_int_equal(ag_split(t, x, 3, S(1, 9, 0), 1, p), AG_ERR_ARG);
    tg_assert_tape_error(t, AG_ERR_ARG, "sizes[1] = 9 runs past the end");
    ag_tape_reset(t);
    assert_int_equal(ag_split(t, x, 1, S(2), 2, p), AG_ERR_ARG);
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_split: axis 2 out of range");
    ag_tape_reset(t);
    assert_int_equal(ag_split(t, x, 0, S(2), 0, p), AG_ERR_ARG);
    tg_assert_tape_error(t, AG_ERR_ARG, "n must be >= 1");
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* PyTorch's chunk: pieces of ceil(size / chunks), possibly fewer of them */
static void test_chunk_follows_torch(void **state)
{
    (void)state;
    static const struct {
        int64_t size;
        int chunks, want;
        int64_t sizes[4];
    } cases[] = {
        {8, 4, 4, {2, 2, 2, 2}}, {10, 4, 4, {3, 3, 3, 1}}, {6, 4, 3, {2, 2, 2}},
        {3, 4, 3, {1, 1, 1}},    {0, 3, 3, {0, 0, 0}},     {5, 1, 1, {5}},
    };
    ag_tape *t = ag_tape_new();
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ag_tensor *x = ag_tensor_new(AG_F64, 2, S(cases[c].size, 2)), *out[4];
        assert_int_equal(ag_chunk(t, x, cases[c].chunks, 0, out), cases[c].want);
        for (int i = 0; i < cases[c].want; i++)
            tg_assert_shape(out[i], 2, S(cases[c].sizes[i], 2));
        ag_tensor_free(x);
    }
    ag_tensor *x = ag_tensor_new(AG_F64, 1, S(4)), *out[1];
    assert_int_equal(ag_chunk(t, x, 0, 0, out), -1);
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_chunk: chunks = 0 must be >= 1");
    ag_tape_free(t);
    ag_tensor_free(x);
}

typedef struct {
    int chunks, axis;
} chunk_ctx;

/* sum_i (i + 1) * piece_i^2: a different weight per piece */
static ag_tensor *chunk_fn(ag_tape *t, ag_tensor **in, void *vc)
{
    const chunk_ctx *c = vc;
    ag_tensor *out[8], *acc = NULL;
    int n = ag_chunk(t, in[0], c->chunks, c->axis, out);
    for (int i = 0; i < n; i++) {
        ag_tensor *s = ag_mul_scalar(t, ag_sum(t, ag_mul(t, out[i], out[i]), AG_ALL, false),
                                     i + 1.0);
        acc = acc ? ag_add(t, acc, s) : s;
    }
    return acc;
}

static void test_chunk_gradcheck(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    ag_tensor *x = ag_tensor_uniform(AG_F64, 3, S(2, 7, 3), -1, 1, &rng);
    ag_set_requires_grad(x, true);
    chunk_ctx c = {3, 1};
    assert_gradcheck(chunk_fn, &c, &x, 1, 1e-6, 1e-8);
    assert_int_equal(ag_gradgradcheck(chunk_fn, &c, &x, 1, NULL, NULL), AG_OK);
    ag_tensor_free(x);
}

/* ---- masked_fill ---- */

static void test_masked_fill_values_gradient_and_broadcast(void **state)
{
    (void)state;
    ag_tensor *a = tg_f64(2, S(2, 3), D(1, 2, 3, 4, 5, 6));
    ag_tensor *m = tg_f64(1, S(3), D(0, 1, 0)); /* broadcast over rows */
    ag_set_requires_grad(a, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *z = ag_masked_fill(t, a, m, -INFINITY);
    tg_assert_shape(z, 2, S(2, 3));
    assert_true(isinf(ag_get(z, 1)) && ag_get(z, 1) < 0);
    assert_true(isinf(ag_get(z, 4)));
    assert_int_equal(ag_get(z, 0), 1);
    assert_int_equal(ag_get(z, 5), 6);
    ag_tensor *y = ag_masked_fill(t, a, m, 7.5);
    assert_values(y, D(1, 7.5, 3, 4, 7.5, 6), 6);
    assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, y, y), AG_ALL, false)), AG_OK);
    assert_values(ag_grad(a), D(2, 0, 6, 8, 0, 12), 6);
    /* the result keeps a's shape: a mask that would grow it is refused */
    ag_tape_reset(t);
    assert_null(ag_masked_fill(t, m, a, 0));
    tg_assert_tape_error(t, AG_ERR_SHAPE,
                         "ag_masked_fill: mask [2,3] does not broadcast to a [3]");
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(m);
}

/* The causal mask of attention written with masked_fill: anomaly mode
 * takes its -inf as intended, forward (softmax of -inf) and backward. */
static void test_masked_fill_minus_inf_is_no_anomaly(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 9);
    ag_tensor *s = ag_tensor_normal(AG_F32, 2, S(4, 4), 0, 1, &rng);
    ag_tensor *upper = ag_tensor_new(AG_F32, 2, S(4, 4));
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            ag_set(upper, i * 4 + j, 1);
    ag_set_requires_grad(s, true);
    ag_tape *t = ag_tape_new();
    ag_tape_set_anomaly(t, true);
    ag_tensor *p = ag_softmax(t, ag_masked_fill(t, s, upper, -INFINITY), -1);
    assert_non_null(p);
    assert_int_equal(ag_get(p, 0), 1); /* row 0 sees key 0 only */
    ag_tensor *w = ag_tensor_normal(AG_F32, 2, S(4, 4), 0, 1, &rng);
    assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, p, w), AG_ALL, false)), AG_OK);
    assert_int_equal(ag_get(ag_grad(s), 1), 0); /* masked: no gradient */
    ag_tape_reset(t);
    /* a made Inf is still caught: exp overflow after the fill */
    assert_null(ag_exp(t, ag_masked_fill(t, ag_mul_scalar(t, s, 1e3), upper, 0)));
    tg_assert_tape_error(t, AG_ERR_NUMERIC, "anomaly: ag_exp");
    ag_tape_free(t);
    ag_tensor_free(s);
    ag_tensor_free(upper);
    ag_tensor_free(w);
}

/* ---- the no-grad scope ---- */

static void test_no_grad_scope_nests_and_restores(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(1, S(2), D(1, 2));
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    bool outer = ag_no_grad_begin(t);
    assert_true(outer);
    bool inner = ag_no_grad_begin(t);
    assert_false(inner);
    ag_tensor *y = ag_mul(t, x, x);
    assert_false(ag_requires_grad(y));
    ag_no_grad_end(t, inner);
    assert_false(ag_tape_grad_enabled(t)); /* still inside the outer scope */
    ag_no_grad_end(t, outer);
    assert_true(ag_tape_grad_enabled(t));
    assert_true(ag_requires_grad(ag_mul(t, x, x)));
    assert_int_equal(ag_tape_entries(t), 1);
    assert_false(ag_no_grad_begin(NULL));
    assert_non_null(ag_last_error());
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* ---- int64 indices: argmax, topk ---- */

static void test_topk_values_indices_and_order(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(2, S(2, 5), D(3, 1, 4, 1, 5, 9, 2, 6, 5, 3));
    ag_tape *t = ag_tape_new();
    ag_tensor *ix, *v = ag_topk(t, x, 3, 1, true, &ix);
    tg_assert_shape(v, 2, S(2, 3));
    assert_values(v, D(5, 4, 3, 9, 6, 5), 6);
    assert_int_equal(ag_dtype_of(ix), AG_I64);
    tg_assert_shape(ix, 2, S(2, 3));
    const int64_t *id = ag_data(ix);
    const int64_t want[] = {4, 2, 0, 0, 2, 3};
    for (int i = 0; i < 6; i++)
        assert_int_equal(id[i], want[i]);
    /* smallest first; the tie (1 at 1 and 3) keeps the lower index first */
    v = ag_topk(t, x, 2, -1, false, &ix);
    assert_values(v, D(1, 1, 2, 3), 4);
    assert_values(ix, D(1, 3, 1, 4), 4);
    /* along axis 0, and k = 0 */
    assert_values(ag_topk(t, x, 1, 0, true, NULL), D(9, 2, 6, 5, 5), 5);
    tg_assert_shape(ag_topk(t, x, 0, 1, true, &ix), 2, S(2, 0));
    tg_assert_shape(ix, 2, S(2, 0));
    /* a NaN counts as the largest, as in PyTorch */
    ag_tensor *n = tg_f64(1, S(4), D(1, NAN, 3, 2));
    v = ag_topk(t, n, 2, 0, true, &ix);
    assert_true(isnan(ag_get(v, 0)));
    assert_values(ix, D(1, 2), 2);
    assert_values(ag_topk(t, n, 2, 0, false, &ix), D(1, 2), 2);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(n);
}

static void test_topk_gradient_goes_to_the_chosen(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(1, S(5), D(3, 1, 4, 1, 5));
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *v = ag_topk(t, x, 2, 0, true, NULL);
    ag_tensor *w = tg_f64(1, S(2), D(10, 20));
    assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, v, w), AG_ALL, false)), AG_OK);
    assert_values(ag_grad(x), D(0, 0, 20, 0, 10), 5);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
}

static void test_indices_are_int64_and_refused_by_ops(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(2, S(2, 3), D(1, 7, 2, 9, -1, 3));
    ag_tape *t = ag_tape_new();
    ag_tape_set_anomaly(t, true); /* indices are not checked as floats */
    ag_tensor *ix, *am = ag_argmax(t, x, 1, false);
    assert_int_equal(ag_dtype_of(am), AG_I64);
    assert_int_equal(((const int64_t *)ag_data(am))[1], 0);
    assert_non_null(ag_topk(t, x, 1, 1, true, &ix));
    assert_null(ag_add(t, x, ix));
    tg_assert_tape_error(t, AG_ERR_DTYPE, "ag_add: input #2 is an int64 tensor");
    ag_tape_reset(t);
    assert_null(ag_topk(t, x, 4, 1, true, &ix));
    assert_null(ix);
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_topk: k = 4 is outside [0, 3] (axis 1 of [2,3])");
    ag_tape_reset(t);
    assert_null(ag_topk(t, x, 1, 2, true, NULL));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_topk: axis 2 out of range");
    /* persistent tensors are f32 or f64 */
    assert_null(ag_tensor_new(AG_I64, 1, S(2)));
    assert_int_equal(ag_dtype_size(AG_I64), 8);
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* ---- sampling ---- */

static void test_sample_logits_greedy_and_masked(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(2, S(2, 4), D(0.5, 2, 2, -1, -INFINITY, 0, -INFINITY, -3));
    int64_t out[2];
    assert_int_equal(ag_sample_logits(x, 0, NULL, out), AG_OK);
    assert_int_equal(out[0], 1); /* first on ties */
    assert_int_equal(out[1], 1);
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    for (int i = 0; i < 200; i++) { /* a -inf logit is never drawn */
        assert_int_equal(ag_sample_logits(x, 1.5, &rng, out), AG_OK);
        assert_true(out[1] == 1 || out[1] == 3);
    }
    ag_tensor_free(x);
}

/* Frequencies of 40000 seeded draws against softmax(x / T): within 0.01
 * (the binomial standard deviation is at most 0.0025). */
static void test_sample_logits_follows_softmax(void **state)
{
    (void)state;
    const double logits[4] = {1.0, 0.0, -1.0, 0.5}, temps[2] = {1.0, 0.5};
    ag_tensor *x = tg_f64(1, S(4), logits);
    ag_tensor *x32 = tg_convert(x, AG_F32);
    for (int k = 0; k < 2; k++) {
        double p[4], z = 0;
        for (int j = 0; j < 4; j++)
            z += p[j] = exp(logits[j] / temps[k]);
        int64_t count[4] = {0};
        ag_rng rng;
        ag_rng_seed(&rng, 11);
        for (int i = 0; i < 40000; i++) {
            int64_t c;
            assert_int_equal(ag_sample_logits(i % 2 ? x : x32, temps[k], &rng, &c), AG_OK);
            count[c]++;
        }
        for (int j = 0; j < 4; j++)
            assert_true(fabs((double)count[j] / 40000 - p[j] / z) < 0.01);
    }
    /* the same seed draws the same classes */
    ag_tensor *rows = ag_tensor_normal(AG_F64, 2, S(16, 5), 0, 2, &(ag_rng){{1, 2, 3, 4}});
    int64_t a[16], b[16];
    ag_rng r1, r2;
    ag_rng_seed(&r1, 8);
    ag_rng_seed(&r2, 8);
    assert_int_equal(ag_sample_logits(rows, 0.8, &r1, a), AG_OK);
    assert_int_equal(ag_sample_logits(rows, 0.8, &r2, b), AG_OK);
    assert_memory_equal(a, b, sizeof a);
    ag_tensor_free(rows);
    ag_tensor_free(x);
    ag_tensor_free(x32);
}

static void test_sample_logits_errors(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(2, S(2, 2), D(0, 1, NAN, 1));
    ag_tensor *ok = tg_f64(1, S(2), D(0, 1)), *none = ag_tensor_new(AG_F64, 1, S(0));
    ag_tensor *inf = tg_f64(1, S(2), D(-INFINITY, -INFINITY));
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    int64_t out[2] = {-7, -7};
    assert_int_equal(ag_sample_logits(x, 1, &rng, out), AG_ERR_NUMERIC);
    assert_non_null(strstr(ag_last_error(), "row 1"));
    assert_int_equal(out[0], -7); /* nothing written */
    assert_int_equal(ag_sample_logits(inf, 0, NULL, out), AG_ERR_NUMERIC);
    assert_int_equal(ag_sample_logits(ok, -1, &rng, out), AG_ERR_ARG);
    assert_int_equal(ag_sample_logits(ok, NAN, &rng, out), AG_ERR_ARG);
    assert_int_equal(ag_sample_logits(ok, 1, NULL, out), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "rng is NULL"));
    assert_int_equal(ag_sample_logits(none, 1, &rng, out), AG_ERR_ARG);
    assert_int_equal(ag_sample_logits(NULL, 1, &rng, out), AG_ERR_ARG);
    assert_int_equal(ag_sample_logits(ok, 1, &rng, NULL), AG_ERR_ARG);
    ag_tensor_free(x);
    ag_tensor_free(ok);
    ag_tensor_free(none);
    ag_tensor_free(inf);
}

/* ---- cross-entropy over [..., C] ---- */

static void test_cross_entropy_over_leading_dims(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 21);
    ag_tensor *x3 = ag_tensor_normal(AG_F64, 3, S(2, 3, 4), 0, 1, &rng);
    ag_tensor *x2 = ag_tensor_clone(x3);
    ag_set_requires_grad(x3, true);
    ag_set_requires_grad(x2, true);
    const int64_t labels[6] = {0, 3, 1, 2, -100, 1};
    ag_tape *t = ag_tape_new();
    ag_tensor *flat = ag_reshape(t, x2, 2, S(6, 4));
    ag_ce_opts o = {0.1, -100, AG_REDUCE_MEAN};
    ag_tensor *l3 = ag_cross_entropy_logits(t, x3, labels, 6, &o);
    ag_tensor *l2 = ag_cross_entropy_logits(t, flat, labels, 6, &o);
    assert_true(fabs(ag_item(l3) - ag_item(l2)) <= 1e-15);
    assert_int_equal(ag_backward(t, l3), AG_OK);
    assert_int_equal(ag_backward(t, l2), AG_OK);
    assert_tensor_close(ag_grad(x3), ag_grad(x2), 1e-15, 1e-15);
    o.reduction = AG_REDUCE_NONE;
    tg_assert_shape(ag_cross_entropy_logits(t, x3, labels, 6, &o), 2, S(2, 3));
    assert_null(ag_cross_entropy_logits(t, x3, labels, 5, &o));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "logits are [2,3,4] but n is 5 labels (6 rows)");
    ag_tape_free(t);
    ag_tensor_free(x3);
    ag_tensor_free(x2);
}

static ag_tensor *ce3_fn(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    static const int64_t labels[6] = {0, 3, 1, 2, 2, 1};
    ag_ce_opts o = {0.2, AG_CE_NO_IGNORE, AG_REDUCE_NONE};
    return ag_cross_entropy_logits(t, in[0], labels, 6, &o);
}

static void test_cross_entropy_3d_gradcheck(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 22);
    ag_tensor *x = ag_tensor_normal(AG_F64, 3, S(3, 2, 4), 0, 1, &rng);
    ag_set_requires_grad(x, true);
    assert_gradcheck(ce3_fn, NULL, &x, 1, 1e-6, 1e-8);
    assert_int_equal(ag_gradgradcheck(ce3_fn, NULL, &x, 1, NULL, NULL), AG_OK);
    ag_tensor_free(x);
}

/* ---- views: reshape, squeeze, unsqueeze ---- */

static void test_views_share_data_and_take_no_tape_memory(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 30);
    ag_tensor *x = ag_tensor_normal(AG_F32, 2, S(300, 400), 0, 1, &rng);
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_mul_scalar(t, x, 2.0); /* a tape tensor */
    size_t before = ag_tape_bytes_used(t);
    ag_tensor *r = ag_reshape(t, y, 3, S(3, 100, -1));
    ag_tensor *u = ag_unsqueeze(t, r, 0), *q = ag_squeeze(t, u, 0);
    ag_tensor *p = ag_reshape(t, x, 1, S(-1)); /* of a persistent tensor */
    assert_true(ag_tape_bytes_used(t) - before <= 4 * AG_HEADER_BYTES + 4 * 64);
    assert_ptr_equal(ag_data(r), ag_data(y));
    assert_ptr_equal(ag_data(q), ag_data(y));
    assert_ptr_equal(ag_data(p), ag_data(x));
    tg_assert_shape(q, 3, S(3, 100, 400));
    /* gradients: each tensor has its own buffer; x gets 2 (through y) + 3 */
    ag_tensor *loss = ag_add(t, ag_sum(t, q, AG_ALL, false),
                             ag_mul_scalar(t, ag_sum(t, p, AG_ALL, false), 3.0));
    assert_int_equal(ag_backward(t, loss), AG_OK);
    assert_true(ag_grad(q) != ag_grad(y));
    for (int64_t i = 0; i < ag_numel(x); i += 997)
        assert_true(ag_get(ag_grad(x), i) == 5.0f);
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* x (data, no gradient) viewed, then used with a parameter w: the
 * product's entry reads x's data through the view in backward, so a write
 * of x between forward and backward must be refused, as for x itself. */
static ag_status view_then_backward(bool via_view, bool anomaly, int how)
{
    ag_tensor *x = tg_f64(2, S(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    ag_tensor *w = tg_f64(2, S(3, 2), (const double[]){1, 0, 0, 1, 1, 1});
    ag_tensor_set_name(x, "data.x");
    ag_set_requires_grad(w, true);
    ag_tape *t = ag_tape_new();
    ag_tape_set_anomaly(t, anomaly);
    ag_tensor *xv = ag_unsqueeze(t, ag_reshape(t, x, 2, S(2, 3)), 0); /* view of a view */
    ag_tensor *loss = ag_sum(t, ag_matmul(t, xv, w), AG_ALL, false);
    ag_tensor *target = via_view ? xv : x;
    if (how == 0)
        ag_set(target, 1, 7.0); /* a marked write */
    else if (how == 1) {
        ((double *)ag_data(target))[1] = 7.0;
        ag_tensor_mark_modified(target);
    } else {
        ((double *)ag_data(target))[1] = 7.0; /* unmarked: anomaly mode only */
    }
    ag_status st = ag_backward(t, loss);
    if (st != AG_OK)
        tg_assert_tape_error(t, AG_ERR_STATE, "data.x (viewed by input #1 of matmul)");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
    return st;
}

static void test_views_keep_the_in_place_check(void **state)
{
    (void)state;
    for (int via = 0; via < 2; via++) {
        assert_int_equal(view_then_backward(via, false, 0), AG_ERR_STATE);
        assert_int_equal(view_then_backward(via, false, 1), AG_ERR_STATE);
        assert_int_equal(view_then_backward(via, true, 2), AG_ERR_STATE);
        assert_int_equal(view_then_backward(via, false, 2), AG_OK); /* not seen: documented */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detach_copies_values_and_cuts_the_graph),
        cmocka_unit_test(test_split_pieces_values_and_gradients),
        cmocka_unit_test(test_split_rejects_bad_sizes),
        cmocka_unit_test(test_chunk_follows_torch),
        cmocka_unit_test(test_chunk_gradcheck),
        cmocka_unit_test(test_masked_fill_values_gradient_and_broadcast),
        cmocka_unit_test(test_masked_fill_minus_inf_is_no_anomaly),
        cmocka_unit_test(test_no_grad_scope_nests_and_restores),
        cmocka_unit_test(test_topk_values_indices_and_order),
        cmocka_unit_test(test_topk_gradient_goes_to_the_chosen),
        cmocka_unit_test(test_indices_are_int64_and_refused_by_ops),
        cmocka_unit_test(test_sample_logits_greedy_and_masked),
        cmocka_unit_test(test_sample_logits_follows_softmax),
        cmocka_unit_test(test_sample_logits_errors),
        cmocka_unit_test(test_cross_entropy_over_leading_dims),
        cmocka_unit_test(test_cross_entropy_3d_gradcheck),
        cmocka_unit_test(test_views_share_data_and_take_no_tape_memory),
        cmocka_unit_test(test_views_keep_the_in_place_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
