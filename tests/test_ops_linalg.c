/* test_ops_linalg.c — matmul, linear and the issue-3 reductions (max, min,
 * logsumexp, variance, argmax): forward against hand-computed values,
 * gradients on small cases, the recorded derivatives of matmul and linear
 * to third order, and the errors bad input must give. */
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

/* ---- recorded derivatives of matmul and linear, to third order ---- */

/* A 1 -> 8 -> 8 -> 1 tanh MLP built from ag_linear. */
typedef struct {
    ag_tensor *w[3], *b[3];
} mlp3;

static mlp3 mlp3_new(uint64_t seed)
{
    static const int64_t dims[4] = {1, 8, 8, 1};
    ag_rng rng;
    ag_rng_seed(&rng, seed);
    mlp3 m;
    for (int l = 0; l < 3; l++) {
        m.w[l] = ag_tensor_normal(AG_F64, 2, S(dims[l + 1], dims[l]), 0, l ? 0.6 : 1.2, &rng);
        m.b[l] = ag_tensor_normal(AG_F64, 1, S(dims[l + 1]), 0, 0.3, &rng);
        ag_set_requires_grad(m.w[l], true); /* parameters, though only d/dx is taken */
        ag_set_requires_grad(m.b[l], true);
    }
    return m;
}

static void mlp3_free(mlp3 *m)
{
    for (int l = 0; l < 3; l++) {
        ag_tensor_free(m->w[l]);
        ag_tensor_free(m->b[l]);
    }
}

static ag_tensor *mlp3_forward(ag_tape *t, const mlp3 *m, ag_tensor *x)
{
    ag_tensor *h = ag_tanh(t, ag_linear(t, x, m->w[0], m->b[0]));
    h = ag_tanh(t, ag_linear(t, h, m->w[1], m->b[1]));
    return ag_linear(t, h, m->w[2], m->b[2]);
}

enum { MLP_P = 4 }; /* points, one per row of x [P, 1] */

/* f and its derivatives f^(k) at each point, k = 1..order, by `order`
 * recorded sweeps: the rows are independent, so d/dx of the sum over
 * points of f^(k-1) is f^(k) at each point.  out: [order + 1][P]. */
static void mlp3_derivs(const mlp3 *m, const double *xs, int order, double *out)
{
    ag_tensor *x = tg_f64(2, S(MLP_P, 1), xs);
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = mlp3_forward(t, m, x);
    tg_assert_shape(y, 2, S(MLP_P, 1));
    for (int i = 0; i < MLP_P; i++)
        out[i] = ag_get(y, i);
    for (int k = 1; k <= order; k++) {
        ag_tensor *g;
        assert_int_equal(ag_gradients(t, ag_sum(t, y, AG_ALL, false), NULL, 1, &x, &g, true),
                         AG_OK);
        tg_assert_shape(g, 2, S(MLP_P, 1));
        for (int i = 0; i < MLP_P; i++)
            out[k * MLP_P + i] = ag_get(g, i);
        y = g;
    }
    assert_null(ag_grad(m->w[0])); /* ag_gradients leaves parameter buffers alone */
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* d/dx, d2/dx2, d3/dx3 of the MLP by three create_graph sweeps, each
 * against the central difference of the derivative one order below. */
static void test_linear_mlp_third_derivative(void **state)
{
    (void)state;
    mlp3 m = mlp3_new(21);
    const double xs[MLP_P] = {-1.1, -0.2, 0.35, 0.9}, h = 1e-4;
    double d[4 * MLP_P], dp[4 * MLP_P], dm[4 * MLP_P], x_p[MLP_P], x_m[MLP_P];
    for (int i = 0; i < MLP_P; i++) {
        x_p[i] = xs[i] + h;
        x_m[i] = xs[i] - h;
    }
    mlp3_derivs(&m, xs, 3, d);
    mlp3_derivs(&m, x_p, 2, dp);
    mlp3_derivs(&m, x_m, 2, dm);
    for (int k = 1; k <= 3; k++) {
        double fd[MLP_P];
        for (int i = 0; i < MLP_P; i++)
            fd[i] = (dp[(k - 1) * MLP_P + i] - dm[(k - 1) * MLP_P + i]) / (2 * h);
        assert_doubles_close(d + k * MLP_P, fd, MLP_P, 1e-6, 1e-8);
    }
    double mag = 0; /* the third derivative is not trivially small */
    for (int i = 0; i < MLP_P; i++)
        mag = fmax(mag, fabs(d[3 * MLP_P + i]));
    assert_true(mag > 0.05);
    mlp3_free(&m);
}

/* sum of the gradient of sum of the gradient of sum(tanh(A B)): its own
 * gradient (checked by finite differences) is a third derivative of the
 * product through every batch-broadcast branch of matmul's vjp.  The
 * recording stays on while it runs, even on gradcheck's evaluation tape
 * (the sweeps need the graph); the last sweep is recorded only when the
 * tape records. */
static ag_tensor *matmul_second_sum(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    bool record = ag_tape_grad_enabled(t);
    ag_tape_set_grad_enabled(t, true);
    ag_tensor *y = ag_sum(t, ag_tanh(t, ag_matmul(t, in[0], in[1])), AG_ALL, false);
    for (int k = 0; k < 2 && y; k++) {
        ag_tensor *g[2];
        if (ag_gradients(t, y, NULL, 2, in, g, k == 0 || record) != AG_OK)
            y = NULL;
        else
            y = ag_add(t, ag_sum(t, g[0], AG_ALL, false), ag_sum(t, g[1], AG_ALL, false));
    }
    ag_tape_set_grad_enabled(t, record);
    return y;
}

static void test_matmul_third_derivative_broadcast_shapes(void **state)
{
    (void)state;
    static const int64_t shapes[][2][5] = {
        {{4, 2, 1, 2, 3}, {3, 3, 3, 2}}, /* both batches broadcast */
        {{3, 2, 2, 3}, {2, 3, 2}},       /* B a matrix: folded */
        {{1, 3}, {3, 2, 3, 2}},          /* vector A, batched B */
        {{3, 2, 2, 3}, {1, 3}},          /* batched A, vector B */
        {{1, 3}, {1, 3}},                /* dot product */
    };
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        ag_rng rng;
        ag_rng_seed(&rng, 40 + c);
        ag_tensor *in[2];
        for (int k = 0; k < 2; k++) {
            const int64_t *d = shapes[c][k];
            in[k] = ag_tensor_uniform(AG_F64, (int)d[0], d + 1, -0.8, 0.8, &rng);
            ag_set_requires_grad(in[k], true);
        }
        assert_gradcheck(matmul_second_sum, NULL, in, 2, 1e-6, 1e-8);
        ag_tensor_free(in[0]);
        ag_tensor_free(in[1]);
    }
}

/* The recorded dW of linear is g^T x, of W's shape, for an x with two
 * leading dims and for a vector x (no bias). */
static void test_linear_recorded_grads_shapes(void **state)
{
    (void)state;
    ag_tensor *x = tg_f64(3, S(2, 1, 2), D(1, 2, 3, 4));
    ag_tensor *w = tg_f64(2, S(3, 2), D(1, 0, 0, 1, 1, 1));
    ag_tensor *b = tg_f64(1, S(3), D(0, 0, 0));
    ag_tensor *in[3] = {x, w, b};
    for (int i = 0; i < 3; i++)
        ag_set_requires_grad(in[i], true);
    ag_tape *t = ag_tape_new();
    ag_tensor *g[3];
    ag_tensor *y = ag_sum(t, ag_linear(t, x, w, b), AG_ALL, false);
    assert_int_equal(ag_gradients(t, y, NULL, 3, in, g, true), AG_OK);
    assert_values(g[0], D(2, 2, 2, 2), 4, 0);       /* dx = 1 W: column sums of W */
    assert_values(g[1], D(4, 6, 4, 6, 4, 6), 6, 0); /* dW = 1^T x: sums of x's rows */
    assert_values(g[2], D(2, 2, 2), 3, 0);          /* db: one per row of x */
    ag_tape_reset(t);
    ag_tensor *v = tg_f64(1, S(2), D(5, 7));
    ag_set_requires_grad(v, true);
    ag_tensor *in2[2] = {v, w};
    y = ag_sum(t, ag_linear(t, v, w, NULL), AG_ALL, false);
    assert_int_equal(ag_gradients(t, y, NULL, 2, in2, g, true), AG_OK);
    tg_assert_shape(g[0], 1, S(2));
    assert_values(g[1], D(5, 7, 5, 7, 5, 7), 6, 0);
    ag_tape_free(t);
    for (int i = 0; i < 3; i++)
        ag_tensor_free(in[i]);
    ag_tensor_free(v);
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

/* Third derivative of logsumexp along an axis, by the recorded gradient
 * taken three times.  Per column (the axis is 0), with p = softmax(x),
 * <u> = sum_k u_k p_k and weights a, b:
 *   d lse / dx_k = p_k;  d <a, p> / dx_k = p_k (a_k - <a>);
 *   d <b, H a> / dx_k = p_k (a_k b_k - <ab> - (a_k - <a>) <b> - <a> (b_k - <b>)). */
static void test_logsumexp_third_derivative(void **state)
{
    (void)state;
    const double xv[6] = {0.3, -1.2, 0.8, 0.1, -0.4, 1.5};
    const double av[6] = {1.0, -0.5, 2.0, 0.7, -1.3, 0.4};
    const double bv[6] = {0.6, 1.1, -0.9, -0.2, 0.8, 1.7};
    ag_tensor *x = tg_f64(2, S(3, 2), xv), *a = tg_f64(2, S(3, 2), av);
    ag_tensor *b = tg_f64(2, S(3, 2), bv);
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_sum(t, ag_logsumexp(t, x, 0, false), AG_ALL, false), *g1, *g2, *g3, *f3;
    assert_int_equal(ag_gradients(t, y, NULL, 1, &x, &g1, true), AG_OK);
    ag_tensor *s1 = ag_sum(t, ag_mul(t, g1, a), AG_ALL, false);
    assert_int_equal(ag_gradients(t, s1, NULL, 1, &x, &g2, true), AG_OK);
    ag_tensor *s2 = ag_sum(t, ag_mul(t, g2, b), AG_ALL, false);
    assert_int_equal(ag_gradients(t, s2, NULL, 1, &x, &g3, true), AG_OK);
    assert_true(ag_requires_grad(g3)); /* recorded: could go on */
    assert_int_equal(ag_gradients(t, s2, NULL, 1, &x, &f3, false), AG_OK);
    double w1[6], w2[6], w3[6];
    for (int c = 0; c < 2; c++) {
        double p[3], sum = 0, ea = 0, eb = 0, eab = 0;
        for (int k = 0; k < 3; k++)
            sum += (p[k] = exp(xv[2 * k + c]));
        for (int k = 0; k < 3; k++) {
            int i = 2 * k + c;
            p[k] /= sum;
            ea += av[i] * p[k];
            eb += bv[i] * p[k];
            eab += av[i] * bv[i] * p[k];
        }
        for (int k = 0; k < 3; k++) {
            int i = 2 * k + c;
            w1[i] = p[k];
            w2[i] = p[k] * (av[i] - ea);
            w3[i] = p[k] * (av[i] * bv[i] - eab - (av[i] - ea) * eb - ea * (bv[i] - eb));
        }
    }
    assert_values(g1, w1, 6, 1e-14);
    assert_values(g2, w2, 6, 1e-14);
    assert_values(g3, w3, 6, 1e-13);
    assert_values(f3, w3, 6, 1e-13); /* the fast sweep through the recorded graph */
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(a);
    ag_tensor_free(b);
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
        assert_int_equal(ag_dtype_of(i), AG_I64);
        assert_int_equal(((const int64_t *)ag_data(i))[0], 1);
        assert_values(i, D(1, 0), 2, 0); /* tie: the first index */
        assert_false(ag_requires_grad(i));
        assert_values(ag_argmax(t, x, 0, true), D(1, 0, 0), 3, 0);
        assert_values(ag_argmax(t, x, AG_ALL, false), D(3), 1, 0);
        assert_int_equal(ag_tape_entries(t), 0); /* records nothing */
        /* nothing to differentiate through: ops refuse the int64 indices */
        assert_null(ag_sum(t, i, AG_ALL, false));
        tg_assert_tape_error(t, AG_ERR_DTYPE, "ag_sum: input #1 is an int64 tensor");
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
        cmocka_unit_test(test_linear_mlp_third_derivative),
        cmocka_unit_test(test_matmul_third_derivative_broadcast_shapes),
        cmocka_unit_test(test_linear_recorded_grads_shapes),
        cmocka_unit_test(test_max_min_values_and_first_tie_gradient),
        cmocka_unit_test(test_max_propagates_nan),
        cmocka_unit_test(test_logsumexp_is_stable),
        cmocka_unit_test(test_logsumexp_gradient_is_softmax),
        cmocka_unit_test(test_logsumexp_third_derivative),
        cmocka_unit_test(test_variance_values_and_gradient),
        cmocka_unit_test(test_variance_no_degrees_of_freedom),
        cmocka_unit_test(test_argmax_values_and_no_gradient),
        cmocka_unit_test(test_reductions_reject_bad_axis),
        cmocka_unit_test(test_max_of_empty_axis_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
