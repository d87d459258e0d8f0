/* test_nn_grad.c — every nn/ layer, activation and loss is a composition
 * of ag ops; these gradchecks (f64, central differences) show that the
 * compositions' gradients are right, inputs and parameters alike. */
#include "test_util.h"

#include "nn.h"

#include <math.h>
#include <string.h>

#define RTOL 1e-6
#define ATOL 1e-8

/* A persistent f64 tensor, uniform in [lo, hi), that requires grad;
 * elements within 0.05 of 0 (where relu and friends have a kink) are moved
 * 0.1 up. */
static ag_tensor *input(ag_rng *r, int nd, const int64_t *shape, double lo, double hi)
{
    ag_tensor *x = ag_tensor_uniform(AG_F64, nd, shape, lo, hi, r);
    for (int64_t i = 0; i < ag_numel(x); i++)
        if (fabs(ag_get(x, i)) < 0.05)
            ag_set(x, i, ag_get(x, i) + 0.1);
    ag_set_requires_grad(x, true);
    return x;
}

static nn_params *params64(void)
{
    nn_params *p = nn_params_new();
    nn_params_set_dtype(p, AG_F64);
    return p;
}

/* ---- layers ---- */

static ag_tensor *fn_linear(ag_tape *t, ag_tensor **in, void *ctx)
{
    return nn_linear_forward(t, ctx, in[0]);
}

static void test_linear_gradcheck(void **state)
{
    (void)state;
    ag_rng r;
    ag_rng_seed(&r, 10);
    nn_params *p = params64();
    nn_linear *l = nn_linear_new(p, "fc", 4, 3, true, &r);
    ag_tensor *x = input(&r, 3, (int64_t[]){2, 5, 4}, -2, 2);
    ag_tensor *in[3] = {x, l->weight, l->bias};
    assert_gradcheck(fn_linear, l, in, 3, RTOL, ATOL);
    ag_tensor_free(x);
    nn_linear_free(l);
    nn_params_free(p);
}

static ag_tensor *fn_mlp(ag_tape *t, ag_tensor **in, void *ctx)
{
    return nn_mlp_forward(t, ctx, in[0]);
}

static void test_mlp_gradcheck_every_activation(void **state)
{
    (void)state;
    ag_rng r;
    ag_rng_seed(&r, 11);
    for (int act = NN_ACT_NONE; act <= NN_ACT_SOFTPLUS; act++) {
        nn_params *p = params64();
        nn_mlp *m = nn_mlp_new(p, "mlp", 3, (int64_t[]){3, 4, 2}, true, (nn_activation)act, &r);
        ag_tensor *x = input(&r, 2, (int64_t[]){5, 3}, -2, 2);
        ag_tensor *in[5] = {x, m->layers[0]->weight, m->layers[0]->bias, m->layers[1]->weight,
                            m->layers[1]->bias};
        assert_gradcheck(fn_mlp, m, in, 5, RTOL, ATOL);
        ag_tensor_free(x);
        nn_mlp_free(m);
        nn_params_free(p);
    }
}

static ag_tensor *fn_embedding(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)in;
    static const int64_t idx[5] = {2, 0, 2, 4, 1};   /* a repeat: rows add up */
    return ag_mul(t, nn_embedding_forward(t, ctx, idx, 5), nn_embedding_forward(t, ctx, idx, 5));
}

static void test_embedding_gradcheck(void **state)
{
    (void)state;
    ag_rng r;
    ag_rng_seed(&r, 12);
    nn_params *p = params64();
    nn_embedding *e = nn_embedding_new(p, "emb", 5, 3, &r);
    assert_gradcheck(fn_embedding, e, &e->weight, 1, RTOL, ATOL);
    nn_embedding_free(e);
    nn_params_free(p);
}

static ag_tensor *fn_layer_norm(ag_tape *t, ag_tensor **in, void *ctx)
{
    return nn_layer_norm_forward(t, ctx, in[0]);
}

static void test_layer_norm_gradcheck(void **state)
{
    (void)state;
    ag_rng r;
    ag_rng_seed(&r, 13);
    nn_params *p = params64();
    nn_layer_norm *l = nn_layer_norm_new(p, "ln", 2, (int64_t[]){2, 3}, 1e-5, true);
    nn_init_normal(l->weight, 1, 0.3, &r);
    nn_init_normal(l->bias, 0, 0.3, &r);
    ag_tensor *x = input(&r, 3, (int64_t[]){3, 2, 3}, -2, 2);
    ag_tensor *in[3] = {x, l->weight, l->bias};
    assert_gradcheck(fn_layer_norm, l, in, 3, RTOL, ATOL);
    ag_tensor_free(x);
    nn_layer_norm_free(l);
    nn_params_free(p);
}

static ag_tensor *fn_batch_norm(ag_tape *t, ag_tensor **in, void *ctx)
{
    return nn_batch_norm1d_forward(t, ctx, in[0]);
}

static void test_batch_norm_gradcheck_train_and_eval(void **state)
{
    (void)state;
    ag_rng r;
    ag_rng_seed(&r, 14);
    for (int nd = 2; nd <= 3; nd++) {
        nn_params *p = params64();
        nn_batch_norm *b = nn_batch_norm1d_new(p, "bn", 3, 1e-5, 0.1, true);
        nn_init_normal(b->weight, 1, 0.3, &r);
        nn_init_normal(b->bias, 0, 0.3, &r);
        nn_init_uniform(b->running_mean, -1, 1, &r);
        nn_init_uniform(b->running_var, 0.5, 2, &r);
        ag_tensor *x = input(&r, nd, (int64_t[]){4, 3, 2}, -2, 2);
        ag_tensor *in[3] = {x, b->weight, b->bias};
        assert_gradcheck(fn_batch_norm, b, in, 3, RTOL, ATOL);
        nn_params_set_training(p, false);
        assert_gradcheck(fn_batch_norm, b, in, 3, RTOL, ATOL);
        ag_tensor_free(x);
        nn_batch_norm_free(b);
        nn_params_free(p);
    }
}

typedef struct dropout_ctx {
    nn_dropout *d;
    ag_rng rng;   /* copied per call: every evaluation draws the same mask */
} dropout_ctx;

static ag_tensor *fn_dropout(ag_tape *t, ag_tensor **in, void *ctx)
{
    dropout_ctx *c = ctx;
    ag_rng r = c->rng;
    return nn_dropout_forward(t, c->d, in[0], &r);
}

static void test_dropout_gradcheck(void **state)
{
    (void)state;
    nn_params *p = params64();
    dropout_ctx c = {nn_dropout_new(p, 0.4), {{0}}};
    ag_rng_seed(&c.rng, 15);
    ag_tensor *x = input(&c.rng, 2, (int64_t[]){4, 5}, -2, 2);
    assert_gradcheck(fn_dropout, &c, &x, 1, RTOL, ATOL);
    ag_tensor_free(x);
    nn_dropout_free(c.d);
    nn_params_free(p);
}

/* ---- activations ---- */

enum { A_RELU, A_LEAKY, A_ELU, A_GELU, A_GELU_TANH, A_SILU, A_TANH, A_SIGMOID, A_SOFTPLUS,
       A_SOFTPLUS_B, A_SOFTMAX, A_LOG_SOFTMAX, A_COUNT };

static ag_tensor *fn_activation(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_tensor *x = in[0];
    switch (*(int *)ctx) {
    case A_RELU: return nn_relu(t, x);
    case A_LEAKY: return nn_leaky_relu(t, x, 0.1);
    case A_ELU: return nn_elu(t, x, 1.3);
    case A_GELU: return nn_gelu(t, x, false);
    case A_GELU_TANH: return nn_gelu(t, x, true);
    case A_SILU: return nn_silu(t, x);
    case A_TANH: return nn_tanh(t, x);
    case A_SIGMOID: return nn_sigmoid(t, x);
    case A_SOFTPLUS: return nn_softplus(t, x, 1.0);
    case A_SOFTPLUS_B: return nn_softplus(t, x, 2.5);
    case A_SOFTMAX: return nn_softmax(t, x, 1);
    default: return nn_log_softmax(t, x, 0);
    }
}

static void test_activations_gradcheck(void **state)
{
    (void)state;
    ag_rng r;
    ag_rng_seed(&r, 16);
    ag_tensor *x = input(&r, 2, (int64_t[]){3, 6}, -3, 3);
    for (int a = 0; a < A_COUNT; a++)
        assert_gradcheck(fn_activation, &a, &x, 1, RTOL, ATOL);
    ag_tensor_free(x);
}

static ag_tensor *fn_elu_large(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    return nn_elu(t, in[0], 1.0);
}

static void test_elu_gradient_finite_for_huge_inputs(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = tg_f64(1, (int64_t[]){3}, (double[]){1000.0, -1000.0, 0.0});
    ag_set_requires_grad(x, true);
    ag_tensor *y = ag_sum(t, fn_elu_large(t, &x, NULL), AG_ALL, false);
    assert_int_equal(ag_backward(t, y), AG_OK);
    assert_true(ag_get(ag_grad(x), 0) == 1.0);
    assert_true(ag_get(ag_grad(x), 1) == 0.0);
    assert_true(ag_get(ag_grad(x), 2) == 1.0);   /* alpha at 0, as torch */
    ag_tensor_free(x);
    ag_tape_free(t);
}

/* ---- losses ---- */

enum { L_MSE, L_L1, L_SMOOTH, L_SMOOTH0, L_HUBER, L_BCE, L_COUNT };

typedef struct loss_ctx {
    int which;
    ag_reduction red;
} loss_ctx;

static ag_tensor *fn_loss(ag_tape *t, ag_tensor **in, void *ctx)
{
    const loss_ctx *c = ctx;
    switch (c->which) {
    case L_MSE: return nn_mse_loss(t, in[0], in[1], c->red);
    case L_L1: return nn_l1_loss(t, in[0], in[1], c->red);
    case L_SMOOTH: return nn_smooth_l1_loss(t, in[0], in[1], 0.7, c->red);
    case L_SMOOTH0: return nn_smooth_l1_loss(t, in[0], in[1], 0.0, c->red);
    case L_HUBER: return nn_huber_loss(t, in[0], in[1], 1.2, c->red);
    default: return nn_bce_with_logits(t, in[0], in[2], c->red);
    }
}

static void test_regression_losses_gradcheck(void **state)
{
    (void)state;
    ag_rng r;
    ag_rng_seed(&r, 17);
    ag_tensor *in[3] = {input(&r, 2, (int64_t[]){3, 4}, -2, 2),
                        input(&r, 2, (int64_t[]){3, 4}, -2, 2),
                        input(&r, 2, (int64_t[]){3, 4}, 0.06, 1)};
    /* keep |input - target| away from 0 and from the beta/delta kinks */
    for (int64_t i = 0; i < 12; i++) {
        double d = ag_get(in[0], i) - ag_get(in[1], i);
        if (fabs(d) < 0.05 || fabs(fabs(d) - 0.7) < 0.05 || fabs(fabs(d) - 1.2) < 0.05)
            ag_set(in[1], i, ag_get(in[1], i) + 0.15);
    }
    for (int w = 0; w < L_COUNT; w++)
        for (int red = 0; red <= AG_REDUCE_NONE; red++) {
            loss_ctx c = {w, (ag_reduction)red};
            assert_gradcheck(fn_loss, &c, in, 3, RTOL, ATOL);
        }
    for (int i = 0; i < 3; i++)
        ag_tensor_free(in[i]);
}

static void test_bce_gradient_at_zero_logit(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = tg_f64(1, (int64_t[]){2}, (double[]){0.0, 0.0});
    ag_tensor *y = tg_f64(1, (int64_t[]){2}, (double[]){1.0, 0.25});
    ag_set_requires_grad(x, true);
    ag_tensor *l = nn_bce_with_logits(t, x, y, AG_REDUCE_SUM);
    assert_float_equal(ag_item(l), 2 * log(2.0), 1e-15);
    assert_int_equal(ag_backward(t, l), AG_OK);
    /* d/dx = sigmoid(x) - y */
    assert_float_equal(ag_get(ag_grad(x), 0), -0.5, 1e-15);
    assert_float_equal(ag_get(ag_grad(x), 1), 0.25, 1e-15);
    ag_tensor_free(x);
    ag_tensor_free(y);
    ag_tape_free(t);
}

typedef struct class_ctx {
    const int64_t *labels;
    int64_t n;
    ag_ce_opts ce;
    bool nll;
} class_ctx;

static ag_tensor *fn_class(ag_tape *t, ag_tensor **in, void *ctx)
{
    const class_ctx *c = ctx;
    if (c->nll)
        return nn_nll_loss(t, nn_log_softmax(t, in[0], 1), c->labels, c->n, c->ce.ignore_index,
                           c->ce.reduction);
    return nn_cross_entropy_opts(t, in[0], c->labels, c->n, &c->ce);
}

static void test_classification_losses_gradcheck(void **state)
{
    (void)state;
    ag_rng r;
    ag_rng_seed(&r, 18);
    ag_tensor *x = input(&r, 2, (int64_t[]){5, 4}, -2, 2);
    static const int64_t labels[5] = {3, 1, 1, 0, 2};
    for (int nll = 0; nll < 2; nll++)
        for (int red = 0; red <= AG_REDUCE_NONE; red++) {
            class_ctx c = {labels, 5, {0.0, AG_CE_NO_IGNORE, (ag_reduction)red}, nll};
            assert_gradcheck(fn_class, &c, &x, 1, RTOL, ATOL);
            c.ce.ignore_index = 1;
            c.ce.label_smoothing = nll ? 0.0 : 0.2;
            assert_gradcheck(fn_class, &c, &x, 1, RTOL, ATOL);
        }
    ag_tensor_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_gradcheck),
        cmocka_unit_test(test_mlp_gradcheck_every_activation),
        cmocka_unit_test(test_embedding_gradcheck),
        cmocka_unit_test(test_layer_norm_gradcheck),
        cmocka_unit_test(test_batch_norm_gradcheck_train_and_eval),
        cmocka_unit_test(test_dropout_gradcheck),
        cmocka_unit_test(test_activations_gradcheck),
        cmocka_unit_test(test_elu_gradient_finite_for_huge_inputs),
        cmocka_unit_test(test_regression_losses_gradcheck),
        cmocka_unit_test(test_bce_gradient_at_zero_logit),
        cmocka_unit_test(test_classification_losses_gradcheck),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
