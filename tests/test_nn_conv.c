/* test_nn_conv.c — nn/'s convolution layers, pooling, flatten and
 * batch_norm2d: outputs and gradients against PyTorch on the same
 * state_dict (fixtures from tests/reference/make_cnn_fixtures.py, f64 to
 * 1e-10 and the same cases in f32 to 2e-4), batch norm's running
 * statistics and modes, default init ranges, errors on bad shapes and
 * options, and a CNN training step (the trainer's) that makes no system
 * allocation after the first. */
#include "test_util.h"

#include "tapegrad.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ag_safetensors *fx;
static double max_rel[2];   /* worst relative error per dtype (AG_F32, AG_F64) */

/* got against fixture tensor NAME.WHAT, shape and values. */
static void check(const ag_tensor *got, const char *name, const char *what, ag_dtype dt)
{
    const ag_tensor *want = tg_fixture(fx, "%s.%s", name, what);
    char label[64];
    snprintf(label, sizeof label, "%s.%s (%s)", name, what, dt == AG_F64 ? "f64" : "f32");
    if (!got)
        fail_msg("%s: result is NULL", label);
    tg_assert_shape(got, ag_ndim(want), ag_shape(want));
    tg_check_rel(got, want, dt == AG_F64 ? 1e-10 : 2e-4, &max_rel[dt], label);
}

/* A requires-grad copy of fixture NAME.WHAT in dtype dt (caller frees). */
static ag_tensor *input(const char *name, const char *what, ag_dtype dt)
{
    ag_tensor *x = tg_convert(tg_fixture(fx, "%s.%s", name, what), dt);
    ag_set_requires_grad(x, true);
    return x;
}

/* Fills p from the fixture (non-strict: it holds every case). */
static void load(nn_params *p, int expect)
{
    nn_load_opts o = {.non_strict = true, .convert_dtype = true};
    nn_load_report r;
    ag_status s = nn_params_load_from(p, fx, &o, &r);
    if (s != AG_OK)
        print_message("%s\n", ag_last_error());
    assert_int_equal(s, AG_OK);
    assert_int_equal(r.loaded, expect);
    assert_int_equal(r.missing, 0);
}

/* y, then the gradients of sum(y * NAME.g) w.r.t. x, w and b (NULL: not
 * checked) against torch's. */
static void check_grads(ag_tape *t, const char *name, ag_tensor *y, ag_tensor *x,
                        ag_tensor *w, ag_tensor *b, ag_dtype dt)
{
    check(y, name, "y", dt);
    ag_tensor *g = tg_convert(tg_fixture(fx, "%s.g", name), dt);
    ag_status s = ag_backward_seeded(t, y, g);
    if (s != AG_OK)
        print_message("%s: %s\n", name, ag_tape_error(t));
    assert_int_equal(s, AG_OK);
    check(ag_grad(x), name, "dx", dt);
    if (w)
        check(ag_grad(w), name, "dweight", dt);
    if (b)
        check(ag_grad(b), name, "dbias", dt);
    ag_tensor_free(g);
}

static const ag_dtype dtypes[2] = {AG_F64, AG_F32};

/* ---- layers against torch ---- */

typedef struct conv_case {
    const char *name;
    int64_t in, out, kh, kw;   /* kw 0: conv1d with kernel kh */
    ag_conv2d_opts o2;
    ag_conv1d_opts o1;
    bool bias;
} conv_case;

static const conv_case conv_cases[] = {
    {"c2", 3, 4, 3, 2, .o2 = {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}},
     .bias = true},
    {"c2g", 4, 6, 3, 3, .o2 = {.padding = {1, 1}, .groups = 2}},
    {"c2s", 1, 5, 3, 3, .bias = true},
    {"c1", 3, 4, 3, 0, .o1 = {.stride = 2, .padding = 1, .dilation = 2}, .bias = true},
    {"c1g", 4, 2, 2, 0, .o1 = {.groups = 2}, .bias = true},
};

static void run_conv_case(const conv_case *c, ag_dtype dt)
{
    nn_params *p = nn_params_new();
    nn_params_set_dtype(p, dt);
    nn_conv2d *l2 = NULL;
    nn_conv1d *l1 = NULL;
    if (c->kw)
        l2 = nn_conv2d_new(p, c->name, c->in, c->out, c->kh, c->kw, c->o2, c->bias, NULL);
    else
        l1 = nn_conv1d_new(p, c->name, c->in, c->out, c->kh, c->o1, c->bias, NULL);
    assert_true(l1 || l2);
    load(p, c->bias ? 2 : 1);
    ag_tensor *w = l2 ? l2->weight : l1->weight, *b = l2 ? l2->bias : l1->bias;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = input(c->name, "x", dt);
    ag_tensor *y = l2 ? nn_conv2d_forward(t, l2, x) : nn_conv1d_forward(t, l1, x);
    check_grads(t, c->name, y, x, w, b, dt);
    ag_tape_free(t);
    ag_tensor_free(x);
    nn_conv2d_free(l2);
    nn_conv1d_free(l1);
    nn_params_free(p);
}

static void test_conv_matches_torch(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++)
        for (size_t i = 0; i < sizeof conv_cases / sizeof *conv_cases; i++)
            run_conv_case(&conv_cases[i], dtypes[d]);
}

static void test_pool_matches_torch(void **state)
{
    (void)state;
    const struct {
        const char *name;
        bool max;
        ag_pool2d_opts o;
    } cases[] = {
        {"mp", true, {.kernel = {2, 2}}},
        {"mp2", true, {.kernel = {3, 2}, .stride = {2, 1}, .padding = {1, 1}}},
        {"ap", false, {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}}},
        {"ap2", false, {.kernel = {2, 3}, .stride = {1, 2}}},
    };
    for (int d = 0; d < 2; d++)
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            ag_tape *t = ag_tape_new();
            ag_tensor *x = input(cases[i].name, "x", dtypes[d]);
            ag_tensor *y = cases[i].max ? nn_max_pool2d(t, x, cases[i].o)
                                        : nn_avg_pool2d(t, x, cases[i].o);
            check_grads(t, cases[i].name, y, x, NULL, NULL, dtypes[d]);
            ag_tape_free(t);
            ag_tensor_free(x);
        }
}

/* One training step (output, gradients, running statistics, counter),
 * then evaluation mode. */
static void run_batch_norm_case(const char *name, double momentum, ag_dtype dt)
{
    nn_params *p = nn_params_new();
    nn_params_set_dtype(p, dt);
    nn_batch_norm2d *b = nn_batch_norm2d_new(p, name, 3, 1e-5, momentum, true);
    assert_non_null(b);
    load(p, 5);
    ag_tape *t = ag_tape_new();
    ag_tensor *x = input(name, "x", dt);
    ag_tensor *y = nn_batch_norm2d_forward(t, b, x);
    check_grads(t, name, y, x, b->bn.weight, b->bn.bias, dt);
    check(b->bn.running_mean, name, "running_mean_after", dt);
    check(b->bn.running_var, name, "running_var_after", dt);
    check(b->num_batches_tracked, name, "num_batches_tracked_after", dt);
    ag_tape_reset(t);
    nn_params_set_training(p, false);
    ag_tensor *xe = input(name, "x_eval", dt);
    check(nn_batch_norm2d_forward(t, b, xe), name, "y_eval", dt);
    /* evaluation leaves the statistics and the counter alone */
    check(b->bn.running_mean, name, "running_mean_after", dt);
    check(b->num_batches_tracked, name, "num_batches_tracked_after", dt);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(xe);
    nn_batch_norm2d_free(b);
    nn_params_free(p);
}

static void test_batch_norm2d_matches_torch(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        run_batch_norm_case("bn", 0.1, dtypes[d]);
        run_batch_norm_case("bn_m", 0.3, dtypes[d]);
    }
}

/* The trainer's CNN composition (narrower: 4, 8 and 16 wide) and its
 * cross-entropy: loss and every parameter's gradient equal torch's. */
static void test_cnn_matches_torch(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        ag_dtype dt = dtypes[d];
        nn_params *p = nn_params_new();
        nn_params_set_dtype(p, dt);
        nn_conv2d *c1 = nn_conv2d_new(p, "cnn.conv1", 1, 4, 3, 3, (ag_conv2d_opts){0}, true, NULL);
        nn_conv2d *c2 = nn_conv2d_new(p, "cnn.conv2", 4, 8, 3, 3, (ag_conv2d_opts){0}, true, NULL);
        nn_linear *f1 = nn_linear_new(p, "cnn.fc1", 200, 16, true, NULL);
        nn_linear *f2 = nn_linear_new(p, "cnn.fc2", 16, 10, true, NULL);
        load(p, 8);
        const ag_tensor *lab = tg_fixture(fx, "cnn.labels");
        int64_t labels[3];
        for (int i = 0; i < 3; i++)
            labels[i] = (int64_t)ag_get(lab, i);
        ag_tape *t = ag_tape_new();
        ag_tensor *x = input("cnn", "x", dt);
        const ag_pool2d_opts pool = {.kernel = {2, 2}};
        /* the trainer's order, relu after the pooling, against torch's conv-relu-pool */
        ag_tensor *h = nn_relu(t, nn_max_pool2d(t, nn_conv2d_forward(t, c1, x), pool));
        h = nn_relu(t, nn_max_pool2d(t, nn_conv2d_forward(t, c2, h), pool));
        h = nn_relu(t, nn_linear_forward(t, f1, nn_flatten(t, h, 1, -1)));
        ag_tensor *loss = nn_cross_entropy(t, nn_linear_forward(t, f2, h), labels, 3);
        assert_non_null(loss);
        tg_check_rel(ag_reshape(t, loss, 1, (const int64_t[]){1}),
                     tg_fixture(fx, "cnn.loss"), dt == AG_F64 ? 1e-10 : 2e-4, &max_rel[dt],
                     "cnn.loss");
        assert_int_equal(ag_backward(t, loss), AG_OK);
        const char *names[] = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                               "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
        for (int i = 0; i < 8; i++) {
            char k[32];
            snprintf(k, sizeof k, "d%s", names[i]);
            check(ag_grad(nn_params_at(p, i)), "cnn", k, dt);
        }
        ag_tape_free(t);
        ag_tensor_free(x);
        nn_conv2d_free(c1);
        nn_conv2d_free(c2);
        nn_linear_free(f1);
        nn_linear_free(f2);
        nn_params_free(p);
    }
    print_message("worst relative error against torch: f64 %.3g, f32 %.3g\n", max_rel[AG_F64],
                  max_rel[AG_F32]);
}

/* ---- compositions against finite differences ---- */

static ag_tensor *bn_fn(ag_tape *t, ag_tensor **in, void *ctx)
{
    nn_batch_norm2d *b = ctx;
    ag_tensor *y = nn_batch_norm2d_forward(t, b, in[0]);
    return ag_mul(t, y, in[1]);   /* a weighting, so the sum is not constant */
}

static void test_batch_norm2d_gradcheck(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    nn_params *p = nn_params_new();
    nn_params_set_dtype(p, AG_F64);
    nn_batch_norm2d *b = nn_batch_norm2d_new(p, "bn", 2, 1e-5, 0.1, true);
    nn_init_uniform(b->bn.weight, 0.5, 1.5, &rng);
    nn_init_uniform(b->bn.bias, -0.5, 0.5, &rng);
    const int64_t s[4] = {2, 2, 3, 2};
    ag_tensor *in[4] = {ag_tensor_normal(AG_F64, 4, s, 1, 2, &rng),
                        ag_tensor_normal(AG_F64, 4, s, 0, 1, &rng), b->bn.weight, b->bn.bias};
    ag_set_requires_grad(in[0], true);
    assert_gradcheck(bn_fn, b, in, 4, 1e-6, 1e-7);
    nn_params_set_training(p, false);
    assert_gradcheck(bn_fn, b, in, 4, 1e-6, 1e-7);
    ag_tensor_free(in[0]);
    ag_tensor_free(in[1]);
    nn_batch_norm2d_free(b);
    nn_params_free(p);
}

/* ---- init ---- */

/* Every element in [-bound, bound], the largest near the bound, and (for
 * many elements) the mean square of U(-bound, bound): bound^2 / 3. */
static void check_uniform(const ag_tensor *w, double bound)
{
    double big = 0, sq = 0;
    int64_t n = ag_numel(w);
    for (int64_t i = 0; i < n; i++) {
        double v = ag_get(w, i);
        assert_true(fabs(v) <= bound);
        big = fabs(v) > big ? fabs(v) : big;
        sq += v * v;
    }
    assert_true(big >= (n >= 1000 ? 0.99 : 0.5) * bound);
    if (n >= 1000)
        assert_true(fabs(sq / (double)n / (bound * bound / 3) - 1) < 0.1);
}

static void test_conv_init_ranges(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 7);
    nn_params *p = nn_params_new();
    nn_conv2d *c = nn_conv2d_new(p, "c", 16, 32, 3, 3, (ag_conv2d_opts){.groups = 2}, true, &rng);
    tg_assert_shape(c->weight, 4, (const int64_t[]){32, 8, 3, 3});
    check_uniform(c->weight, 1 / sqrt(8.0 * 9));   /* fan_in = in/groups * kh * kw */
    check_uniform(c->bias, 1 / sqrt(8.0 * 9));
    nn_conv1d *c1 = nn_conv1d_new(p, "c1", 40, 30, 5, (ag_conv1d_opts){0}, true, &rng);
    tg_assert_shape(c1->weight, 3, (const int64_t[]){30, 40, 5});
    check_uniform(c1->weight, 1 / sqrt(40.0 * 5));
    check_uniform(c1->bias, 1 / sqrt(40.0 * 5));
    nn_conv2d *z = nn_conv2d_new(p, "z", 2, 3, 2, 2, (ag_conv2d_opts){0}, false, NULL);
    assert_null(z->bias);
    for (int64_t i = 0; i < ag_numel(z->weight); i++)
        assert_true(ag_get(z->weight, i) == 0);   /* no rng: zeros, to load into */
    assert_int_equal(z->opts.stride[0], 1);       /* zero options became the defaults */
    assert_int_equal(z->opts.dilation[1], 1);
    assert_int_equal(z->opts.groups, 1);
    assert_int_equal(nn_params_count(p), 5);
    assert_string_equal(nn_params_name(p, 0), "c.weight");
    assert_string_equal(nn_params_name(p, 3), "c1.bias");
    nn_conv2d_free(c);
    nn_conv1d_free(c1);
    nn_conv2d_free(z);
    nn_params_free(p);
}

/* ---- errors ---- */

static void assert_last_error(const char *substr)
{
    const char *e = ag_last_error();
    if (!e || !strstr(e, substr))
        fail_msg("last error \"%s\" lacks \"%s\"", e ? e : "(none)", substr);
}

static void test_conv_bad_arguments(void **state)
{
    (void)state;
    nn_params *p = nn_params_new();
    const ag_conv2d_opts o = {0};
    assert_null(nn_conv2d_new(p, "c", 3, 4, 3, 3, (ag_conv2d_opts){.groups = 2}, true, NULL));
    assert_last_error("nn_conv2d_new: in 3 and out 4 must be >= 1 and divisible by groups 2");
    assert_null(nn_conv2d_new(p, "c", 3, 4, 0, 3, o, true, NULL));
    assert_last_error("nn_conv2d_new: height: kernel 0");
    assert_null(nn_conv2d_new(p, "c", 3, 4, 3, 3, (ag_conv2d_opts){.padding = {0, -1}}, true,
                              NULL));
    assert_last_error("nn_conv2d_new: width: kernel 3, stride 1, padding -1");
    assert_null(nn_conv1d_new(p, "c", 2, 2, 2, (ag_conv1d_opts){.stride = -1}, true, NULL));
    assert_last_error("nn_conv1d_new: length");
    assert_null(nn_conv2d_new(NULL, "c", 3, 4, 3, 3, o, true, NULL));
    assert_last_error("nn_conv2d_new: params is NULL");
    nn_conv2d *c = nn_conv2d_new(p, "c", 4, 2, 3, 3, o, true, NULL);
    assert_null(nn_conv2d_new(p, "c", 4, 2, 3, 3, o, true, NULL));   /* name taken */
    assert_int_equal(nn_params_count(p), 2);                          /* nothing added */

    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_tensor_new(AG_F32, 4, (const int64_t[]){2, 3, 8, 8});
    assert_null(nn_conv2d_forward(t, c, x));
    tg_assert_tape_error(t, AG_ERR_SHAPE,
                         "nn_conv2d_forward: x is [2,3,8,8], the layer expects [N, 4, H, W]");
    ag_tape_reset(t);
    ag_tensor *small = ag_tensor_new(AG_F32, 4, (const int64_t[]){2, 4, 2, 5});
    assert_null(nn_conv2d_forward(t, c, small));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "spatial dim 1 (2, padded by 0 on each side) is "
                                          "smaller than the dilated kernel (3)");
    ag_tape_reset(t);
    ag_tensor *x64 = ag_tensor_new(AG_F64, 4, (const int64_t[]){1, 4, 3, 3});
    assert_null(nn_conv2d_forward(t, c, x64));
    tg_assert_tape_error(t, AG_ERR_DTYPE, "nn_conv2d_forward: input is F64");
    ag_tape_reset(t);
    assert_null(nn_conv2d_forward(t, NULL, x));
    tg_assert_tape_error(t, AG_ERR_ARG, "nn_conv2d_forward: layer is NULL");
    ag_tape_reset(t);
    nn_conv1d *c1 = nn_conv1d_new(p, "c1", 3, 2, 2, (ag_conv1d_opts){0}, true, NULL);
    assert_null(nn_conv1d_forward(t, c1, x));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "nn_conv1d_forward: x is [2,3,8,8], the layer "
                                          "expects [N, 3, L]");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(small);
    ag_tensor_free(x64);
    nn_conv2d_free(c);
    nn_conv1d_free(c1);
    nn_params_free(p);
}

static void test_pool_bad_arguments(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_tensor_new(AG_F32, 4, (const int64_t[]){1, 2, 4, 4});
    assert_null(nn_max_pool2d(t, x, (ag_pool2d_opts){0}));
    tg_assert_tape_error(t, AG_ERR_ARG, "nn_max_pool2d: height: kernel 0");
    ag_tape_reset(t);
    assert_null(nn_avg_pool2d(t, x, (ag_pool2d_opts){.kernel = {3, 3}, .padding = {1, 2}}));
    tg_assert_tape_error(t, AG_ERR_ARG, "nn_avg_pool2d: width: kernel 3, stride 0, padding 2");
    ag_tape_reset(t);
    assert_null(nn_max_pool2d(t, x, (ag_pool2d_opts){.kernel = {5, 2}}));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "nn_max_pool2d: x is [1,2,4,4]: height 4 (padded "
                                          "by 0 on each side) is smaller than the kernel (5)");
    ag_tape_reset(t);
    ag_tensor *x3 = ag_tensor_new(AG_F32, 3, (const int64_t[]){2, 4, 4});
    assert_null(nn_avg_pool2d(t, x3, (ag_pool2d_opts){.kernel = {2, 2}}));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "nn_avg_pool2d: x is [2,4,4], expected [N, C, H, W]");
    ag_tape_reset(t);
    assert_null(nn_max_pool2d(t, NULL, (ag_pool2d_opts){.kernel = {2, 2}}));
    tg_assert_tape_error(t, AG_ERR_NULL, "nn_max_pool2d: input is NULL");
    assert_null(nn_max_pool2d(NULL, x, (ag_pool2d_opts){.kernel = {2, 2}}));
    assert_last_error("nn_max_pool2d: tape is NULL");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(x3);
}

static void test_flatten(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_tensor_arange(AG_F32, 0, 120, 1);
    ag_tensor *x4 = ag_reshape(t, x, 4, (const int64_t[]){2, 3, 4, 5});
    tg_assert_shape(nn_flatten(t, x4, 1, -1), 2, (const int64_t[]){2, 60});
    tg_assert_shape(nn_flatten(t, x4, 0, 1), 3, (const int64_t[]){6, 4, 5});
    tg_assert_shape(nn_flatten(t, x4, -2, -1), 3, (const int64_t[]){2, 3, 20});
    tg_assert_shape(nn_flatten(t, x4, 2, 2), 4, (const int64_t[]){2, 3, 4, 5});
    tg_assert_shape(nn_flatten(t, x4, 0, -1), 1, (const int64_t[]){120});
    ag_tensor *f = nn_flatten(t, x4, 1, 3);
    for (int64_t i = 0; i < 120; i++)
        assert_true(ag_get(f, i) == (double)i);   /* the elements in their order */
    ag_tensor *s = ag_tensor_full(AG_F32, 0, NULL, 2.5);
    tg_assert_shape(nn_flatten(t, s, 0, -1), 1, (const int64_t[]){1});
    assert_int_equal(ag_tape_status(t), AG_OK);
    assert_null(nn_flatten(t, x4, 2, 1));
    tg_assert_tape_error(t, AG_ERR_ARG, "nn_flatten: x is [2,3,4,5]: start_dim 2 and end_dim 1");
    ag_tape_reset(t);
    x4 = ag_reshape(t, x, 4, (const int64_t[]){2, 3, 4, 5});
    assert_null(nn_flatten(t, x4, 0, 4));
    tg_assert_tape_error(t, AG_ERR_ARG, "nn_flatten:");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(s);
}

static void test_batch_norm2d_entries_and_errors(void **state)
{
    (void)state;
    nn_params *p = nn_params_new();
    nn_batch_norm2d *b = nn_batch_norm2d_new(p, "bn", 3, 1e-5, 0.1, true);
    const char *names[] = {"bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                           "bn.num_batches_tracked"};   /* torch's state_dict order */
    assert_int_equal(nn_params_count(p), 5);
    for (int i = 0; i < 5; i++) {
        assert_string_equal(nn_params_name(p, i), names[i]);
        assert_int_equal(nn_params_is_buffer(p, i), i >= 2);
    }
    assert_int_equal(ag_ndim(b->num_batches_tracked), 0);
    assert_int_equal(ag_get(b->bn.running_var, 2), 1);
    assert_int_equal(ag_get(b->bn.weight, 0), 1);
    nn_batch_norm2d *na = nn_batch_norm2d_new(p, "na", 2, 1e-5, 0.1, false);
    assert_null(na->bn.weight);
    assert_int_equal(nn_params_count(p), 8);   /* running statistics and counter only */
    assert_null(nn_batch_norm2d_new(p, "bn", 3, 1e-5, 0.1, true));   /* names taken */
    assert_int_equal(nn_params_count(p), 8);
    assert_null(nn_batch_norm2d_new(p, "x", 3, 1e-5, 1.5, true));
    assert_last_error("nn_batch_norm2d_new: eps must be >= 0, momentum in [0, 1]");

    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_tensor_ones(AG_F32, 4, (const int64_t[]){2, 2, 3, 3});
    assert_null(nn_batch_norm2d_forward(t, b, x));
    tg_assert_tape_error(t, AG_ERR_SHAPE,
                         "nn_batch_norm2d_forward: x is [2,2,3,3], expected [N, 3, H, W]");
    ag_tape_reset(t);
    ag_tensor *one = ag_tensor_ones(AG_F32, 4, (const int64_t[]){1, 3, 1, 1});
    assert_null(nn_batch_norm2d_forward(t, b, one));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "training needs more than 1 value per channel");
    assert_int_equal(ag_get(b->num_batches_tracked, 0), 0);   /* a failed call counts not */
    ag_tape_reset(t);
    nn_params_set_training(p, false);                         /* evaluation: one is enough */
    tg_assert_shape(nn_batch_norm2d_forward(t, b, one), 4, (const int64_t[]){1, 3, 1, 1});
    assert_int_equal(ag_get(b->num_batches_tracked, 0), 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(one);
    nn_batch_norm2d_free(b);
    nn_batch_norm2d_free(na);
    nn_batch_norm2d_free(NULL);
    nn_params_free(p);
}

/* ---- the trainer's CNN step allocates nothing after the first ---- */

typedef struct cnn {
    nn_conv2d *conv1, *conv2;
    nn_linear *fc1, *fc2;
    nn_batcher *it;
    optim *opt;
    optim_sched *sched;
} cnn;

static void cnn_step(ag_tape *t, cnn *m)
{
    ag_tensor *x;
    const int64_t *y;
    int64_t n = nn_batcher_next(m->it, t, &x, &y);
    if (n == 0) {
        nn_batcher_start(m->it, NULL);
        n = nn_batcher_next(m->it, t, &x, &y);
    }
    assert_true(n > 0);
    const ag_pool2d_opts pool = {.kernel = {2, 2}};
    ag_tensor *h = ag_reshape(t, x, 4, (const int64_t[]){n, 1, 28, 28});
    h = nn_relu(t, nn_max_pool2d(t, nn_conv2d_forward(t, m->conv1, h), pool));   /* as the */
    h = nn_relu(t, nn_max_pool2d(t, nn_conv2d_forward(t, m->conv2, h), pool));   /* trainer */
    h = nn_relu(t, nn_linear_forward(t, m->fc1, nn_flatten(t, h, 1, -1)));
    ag_tensor *loss = nn_cross_entropy(t, nn_linear_forward(t, m->fc2, h), y, n);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    assert_int_equal(optim_step(m->opt), AG_OK);
    assert_int_equal(optim_sched_step_once(m->sched), AG_OK);
    optim_zero_grad(m->opt);
    ag_tape_reset(t);
}

static void run_cnn_steps(int threads)
{
    tg_count_allocs();
    ag_set_num_threads(threads);
    enum { N = 256, F = 784 };
    uint8_t *pixels = malloc(N * F);
    int64_t labels[N];
    for (int i = 0; i < N * F; i++)
        pixels[i] = (uint8_t)(i * 37 % 251);
    for (int i = 0; i < N; i++)
        labels[i] = i % 10;
    nn_dataset *ds;
    assert_int_equal(nn_dataset_from_u8(N, 2, (const int64_t[]){28, 28}, pixels, labels, 10,
                                        &ds), AG_OK);
    cnn m;
    nn_batch_opts bo = {.batch = 64};
    assert_int_equal(nn_batcher_new(ds, &bo, &m.it), AG_OK);
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    nn_params *p = nn_params_new();
    m.conv1 = nn_conv2d_new(p, "conv1", 1, 32, 3, 3, (ag_conv2d_opts){0}, true, &rng);
    m.conv2 = nn_conv2d_new(p, "conv2", 32, 64, 3, 3, (ag_conv2d_opts){0}, true, &rng);
    m.fc1 = nn_linear_new(p, "fc1", 1600, 128, true, &rng);
    m.fc2 = nn_linear_new(p, "fc2", 128, 10, true, &rng);
    int np;
    ag_tensor **params = nn_params_tensors(p, &np);
    m.opt = optim_adam(params, np, optim_adam_defaults());
    m.sched = optim_sched_cosine(m.opt, 1000, 0);
    ag_tape *t = ag_tape_new();
    cnn_step(t, &m);   /* warm-up: arena, gradients, optimizer state */
    cnn_step(t, &m);
    long before = tg_alloc_count;
    for (int i = 0; i < 6; i++)
        cnn_step(t, &m);
    print_message("CNN, %d thread(s): %ld system allocations in 6 steps after warm-up\n",
                  threads, tg_alloc_count - before);
    assert_int_equal(tg_alloc_count - before, 0);
    ag_tape_free(t);
    optim_sched_free(m.sched);
    optim_free(m.opt);
    nn_conv2d_free(m.conv1);
    nn_conv2d_free(m.conv2);
    nn_linear_free(m.fc1);
    nn_linear_free(m.fc2);
    nn_params_free(p);
    nn_batcher_free(m.it);
    nn_dataset_free(ds);
    free(pixels);
    ag_set_allocator(NULL);
    ag_set_num_threads(0);
}

static void test_cnn_step_alloc_one_thread(void **state)
{
    (void)state;
    run_cnn_steps(1);
}

static void test_cnn_step_alloc_two_threads(void **state)
{
    (void)state;
    run_cnn_steps(2);
}

static int setup(void **state)
{
    (void)state;
    fx = tg_load_fixture("tests/reference/cnn/cnn_f64.safetensors");
    return fx ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    ag_safetensors_free(fx);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_matches_torch),
        cmocka_unit_test(test_pool_matches_torch),
        cmocka_unit_test(test_batch_norm2d_matches_torch),
        cmocka_unit_test(test_cnn_matches_torch),
        cmocka_unit_test(test_batch_norm2d_gradcheck),
        cmocka_unit_test(test_conv_init_ranges),
        cmocka_unit_test(test_conv_bad_arguments),
        cmocka_unit_test(test_pool_bad_arguments),
        cmocka_unit_test(test_flatten),
        cmocka_unit_test(test_batch_norm2d_entries_and_errors),
        cmocka_unit_test(test_cnn_step_alloc_one_thread),
        cmocka_unit_test(test_cnn_step_alloc_two_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
