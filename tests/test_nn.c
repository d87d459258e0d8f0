/* test_nn.c — nn/: named parameters, initializers, and every layer,
 * activation and loss against PyTorch's values (fixtures from
 * tests/reference/make_nn_fixtures.py; f64 to 1e-10, f32 to 1e-5). */
#include "test_util.h"

#include "nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- fixture helpers ---- */

static double max_rel[2], max_abs[2];   /* worst fixture error per dtype */
static char worst_rel[2][64];             /* and the fixture that has it */

static ag_safetensors *fixture(ag_dtype dt)
{
    ag_safetensors *f = tg_load_fixture(dt == AG_F64 ? "tests/reference/nn/layers_f64.safetensors"
                                                     : "tests/reference/nn/layers_f32.safetensors");
    assert_non_null(f);
    return f;
}

/* Values of got equal the fixture's (0-d results are stored as [1]). */
static void check_fx(const ag_tensor *got, const ag_safetensors *f, const char *name)
{
    const ag_tensor *want = tg_fixture(f, "%s", name);
    if (!got)
        print_message("%s: result is NULL\n", name);
    assert_non_null(got);
    assert_int_equal(ag_numel(got), ag_numel(want));
    if (ag_ndim(got) > 0)
        assert_memory_equal(ag_shape(got), ag_shape(want), (size_t)ag_ndim(got) * 8);
    int k = ag_dtype_of(got) == AG_F64;
    double rtol = k ? 1e-10 : 1e-5, atol = k ? 1e-12 : 1e-6;
    int64_t n = ag_numel(got);
    double *a = malloc((size_t)(2 * n + 1) * sizeof *a);
    for (int64_t i = 0; i < n; i++) {
        a[i] = ag_get(got, i);
        a[n + i] = ag_get(want, i);
        double d = fabs(a[i] - a[n + i]);
        if (d > max_abs[k])
            max_abs[k] = d;
        if (fabs(a[n + i]) > 1e-3 && d / fabs(a[n + i]) > max_rel[k]) {
            max_rel[k] = d / fabs(a[n + i]);
            snprintf(worst_rel[k], sizeof worst_rel[k], "%s", name);
        }
    }
    assert_doubles_close(a, a + n, n, rtol, atol);
    free(a);
}

/* Integer values of an F64 fixture tensor (labels, indices). */
static int64_t *ints(const ag_safetensors *f, const char *name, int64_t *n)
{
    const ag_tensor *t = tg_fixture(f, "%s", name);
    *n = ag_numel(t);
    int64_t *v = malloc((size_t)(*n + 1) * sizeof *v);
    for (int64_t i = 0; i < *n; i++)
        v[i] = (int64_t)ag_get(t, i);
    return v;
}

/* Fills p's entries from the fixture (non-strict: the file holds more). */
static void load_fx(nn_params *p, const ag_safetensors *f, int expect_loaded)
{
    nn_load_report r;
    nn_load_opts o = {.non_strict = true};
    ag_status s = nn_params_load_from(p, f, &o, &r);
    if (s != AG_OK)
        print_message("%s\n", ag_last_error());
    assert_int_equal(s, AG_OK);
    assert_int_equal(r.loaded, expect_loaded);
    assert_int_equal(r.missing, 0);
}

static const ag_dtype dtypes[2] = {AG_F64, AG_F32};

/* ---- nn_params ---- */

static void test_params_add_get_order(void **state)
{
    (void)state;
    nn_params *p = nn_params_new();
    const char *names[3] = {"zeta.weight", "alpha.bias", "mid"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(nn_params_add(p, names[i], ag_tensor_new(AG_F32, 1,
                                                                  (int64_t[]){i + 2})),
                         AG_OK);
    assert_int_equal(nn_params_add_buffer(p, "stats", ag_tensor_new(AG_F32, 1, (int64_t[]){7})),
                     AG_OK);
    assert_int_equal(nn_params_count(p), 4);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(nn_params_name(p, i), names[i]);
        assert_ptr_equal(nn_params_get(p, names[i]), nn_params_at(p, i));
        assert_true(ag_requires_grad(nn_params_at(p, i)));
        assert_string_equal(ag_tensor_name(nn_params_at(p, i)), names[i]);
    }
    assert_true(nn_params_is_buffer(p, 3));
    assert_false(ag_requires_grad(nn_params_get(p, "stats")));
    assert_null(nn_params_get(p, "nope"));
    assert_null(nn_params_name(p, 4));
    assert_int_equal(nn_params_numel(p, false), 2 + 3 + 4);
    int n;
    ag_tensor **ts = nn_params_tensors(p, &n);
    const char *const *tn = nn_params_names(p, &n);
    assert_int_equal(n, 3);   /* the buffer is left out */
    ts = nn_params_tensors(p, &n);
    for (int i = 0; i < n; i++) {
        assert_ptr_equal(ts[i], nn_params_at(p, i));
        assert_string_equal(tn[i], names[i]);
    }
    nn_params_free(p);
    nn_params_free(NULL);
}

static void test_params_add_rejects_bad_names(void **state)
{
    (void)state;
    nn_params *p = nn_params_new();
    const int64_t s1[1] = {1};
    assert_int_equal(nn_params_add(p, "w", ag_tensor_new(AG_F32, 1, s1)), AG_OK);
    /* each failing add frees the tensor it was given (ASan checks) */
    assert_int_equal(nn_params_add(p, "w", ag_tensor_new(AG_F32, 1, s1)), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "already taken"));
    assert_int_equal(nn_params_add(p, "", ag_tensor_new(AG_F32, 1, s1)), AG_ERR_ARG);
    assert_int_equal(nn_params_add(p, "__metadata__", ag_tensor_new(AG_F32, 1, s1)),
                     AG_ERR_ARG);
    assert_int_equal(nn_params_add(p, NULL, ag_tensor_new(AG_F32, 1, s1)), AG_ERR_ARG);
    assert_int_equal(nn_params_add(p, "x", NULL), AG_ERR_ARG);
    ag_tape *tape = ag_tape_new();
    assert_int_equal(nn_params_add(p, "tape", ag_tape_tensor(tape, AG_F32, 1, s1)), AG_ERR_ARG);
    assert_int_equal(nn_params_count(p), 1);
    ag_tape_free(tape);
    nn_params_free(p);
}

static void test_params_freeze_by_prefix(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    nn_params *p = nn_params_new();
    nn_linear *a = nn_linear_new(p, "fc1", 3, 2, true, &rng);
    nn_linear *b = nn_linear_new(p, "fc10", 2, 2, true, &rng);
    nn_batch_norm *bn = nn_batch_norm1d_new(p, "bn", 2, 1e-5, 0.1, true);
    assert_int_equal(nn_params_numel(p, false), 8 + 6 + 4);
    assert_int_equal(nn_params_freeze(p, "fc1"), 2);   /* not fc10 */
    assert_false(ag_requires_grad(a->weight));
    assert_true(ag_requires_grad(b->weight));
    int n;
    ag_tensor **ts = nn_params_tensors(p, &n);
    assert_int_equal(n, 4);   /* fc10.weight, fc10.bias, bn.weight, bn.bias */
    assert_ptr_equal(ts[0], b->weight);
    assert_int_equal(nn_params_numel(p, true), 6 + 4);
    assert_int_equal(nn_params_freeze(p, "fc1."), 2);
    assert_int_equal(nn_params_freeze(p, NULL), 6);   /* buffers untouched */
    assert_false(ag_requires_grad(bn->running_mean));
    assert_int_equal(nn_params_unfreeze(p, ""), 6);
    assert_false(ag_requires_grad(bn->running_var));
    assert_int_equal(nn_params_unfreeze(p, "nope"), 0);
    nn_params_tensors(p, &n);
    assert_int_equal(n, 6);
    nn_linear_free(a);
    nn_linear_free(b);
    nn_batch_norm_free(bn);
    nn_params_free(p);
}

static void test_params_zero_grad_clears_every_param(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 2);
    nn_params *p = nn_params_new();
    nn_linear *l = nn_linear_new(p, "l", 3, 2, true, &rng);
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_ones(AG_F32, 2, (int64_t[]){4, 3});
    ag_tensor *y = ag_sum(tape, nn_linear_forward(tape, l, x), AG_ALL, false);
    assert_int_equal(ag_backward(tape, y), AG_OK);
    assert_float_equal(ag_get(ag_grad(l->bias), 0), 4.0, 1e-6);
    nn_params_zero_grad(p);
    for (int i = 0; i < nn_params_count(p); i++)
        for (int64_t j = 0; j < ag_numel(nn_params_at(p, i)); j++)
            assert_true(ag_get(ag_grad(nn_params_at(p, i)), j) == 0.0);
    ag_tensor_free(x);
    ag_tape_free(tape);
    nn_linear_free(l);
    nn_params_free(p);
}

static void test_params_failed_constructor_adds_nothing(void **state)
{
    (void)state;
    nn_params *p = nn_params_new();
    assert_int_equal(nn_params_add(p, "fc.bias", ag_tensor_new(AG_F32, 1, (int64_t[]){2})),
                     AG_OK);
    assert_null(nn_linear_new(p, "fc", 3, 2, true, NULL));   /* fc.weight fits, fc.bias not */
    assert_non_null(strstr(ag_last_error(), "fc.bias"));
    assert_int_equal(nn_params_count(p), 1);
    int64_t widths[3] = {3, 4, 2};
    assert_int_equal(nn_params_add(p, "m.2.weight", ag_tensor_new(AG_F32, 1, widths)), AG_OK);
    assert_null(nn_mlp_new(p, "m", 3, widths, true, NN_ACT_RELU, NULL));
    assert_int_equal(nn_params_count(p), 2);
    assert_null(nn_batch_norm1d_new(p, "fc", 2, 1e-5, 0.1, true));   /* fc.bias taken */
    assert_null(nn_layer_norm_new(p, "fc", 1, widths, 1e-5, true));
    assert_null(nn_linear_new(p, "ok", -1, 2, true, NULL));
    assert_null(nn_dropout_new(p, 1.0));
    assert_int_equal(nn_params_count(p), 2);
    nn_linear_free(NULL);
    nn_mlp_free(NULL);
    nn_embedding_free(NULL);
    nn_layer_norm_free(NULL);
    nn_batch_norm_free(NULL);
    nn_dropout_free(NULL);
    nn_params_free(p);
}

/* ---- init ---- */

static void test_init_gain_and_fans(void **state)
{
    (void)state;
    assert_float_equal(nn_init_gain("linear", 0), 1.0, 0);
    assert_float_equal(nn_init_gain("sigmoid", 0), 1.0, 0);
    assert_float_equal(nn_init_gain("tanh", 0), 5.0 / 3.0, 1e-15);
    assert_float_equal(nn_init_gain("relu", 0), sqrt(2.0), 1e-15);
    assert_float_equal(nn_init_gain("leaky_relu", 0.2), sqrt(2.0 / 1.04), 1e-15);
    assert_float_equal(nn_init_gain("selu", 0), 0.75, 0);
    assert_true(isnan(nn_init_gain("swish", 0)));
    ag_tensor *t = ag_tensor_new(AG_F32, 4, (int64_t[]){5, 3, 2, 4});
    int64_t fi, fo;
    assert_int_equal(nn_init_fans(t, &fi, &fo), AG_OK);
    assert_int_equal(fi, 3 * 8);
    assert_int_equal(fo, 5 * 8);
    ag_tensor *v = ag_tensor_new(AG_F32, 1, (int64_t[]){5});
    assert_int_equal(nn_init_fans(v, &fi, &fo), AG_ERR_ARG);
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    assert_int_equal(nn_init_xavier_uniform(v, 1.0, &rng), AG_ERR_ARG);
    assert_int_equal(nn_init_kaiming_normal(t, 0, NN_FAN_IN, "bogus", &rng), AG_ERR_ARG);
    assert_int_equal(nn_init_uniform(t, 0, 1, NULL), AG_ERR_ARG);
    assert_int_equal(nn_init_normal(NULL, 0, 1, &rng), AG_ERR_ARG);
    ag_tensor_free(t);
    ag_tensor_free(v);
}

/* Sample std of t's elements and their largest magnitude. */
static double sample_std(const ag_tensor *t, double *maxabs)
{
    double s = 0, s2 = 0;
    int64_t n = ag_numel(t);
    *maxabs = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = ag_get(t, i);
        s += v;
        s2 += v * v;
        *maxabs = fmax(*maxabs, fabs(v));
    }
    return sqrt(s2 / n - (s / n) * (s / n));
}

static void test_init_distributions_have_torch_scales(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 4);
    ag_tensor *t = ag_tensor_new(AG_F64, 2, (int64_t[]){300, 200});   /* fan_in 200, out 300 */
    double m, want;
    assert_int_equal(nn_init_kaiming_uniform(t, 0, NN_FAN_IN, "relu", &rng), AG_OK);
    want = sqrt(2.0) / sqrt(200.0);
    assert_float_equal(sample_std(t, &m), want, 0.02 * want);
    assert_true(m <= sqrt(3.0) * want);
    assert_int_equal(nn_init_kaiming_normal(t, 0, NN_FAN_OUT, "relu", &rng), AG_OK);
    want = sqrt(2.0) / sqrt(300.0);
    assert_float_equal(sample_std(t, &m), want, 0.02 * want);
    assert_int_equal(nn_init_xavier_uniform(t, 2.0, &rng), AG_OK);
    want = 2.0 * sqrt(2.0 / 500.0);
    assert_float_equal(sample_std(t, &m), want, 0.02 * want);
    assert_true(m <= sqrt(3.0) * want);
    assert_int_equal(nn_init_xavier_normal(t, 1.0, &rng), AG_OK);
    want = sqrt(2.0 / 500.0);
    assert_float_equal(sample_std(t, &m), want, 0.02 * want);
    assert_int_equal(nn_init_normal(t, 0, 0.5, &rng), AG_OK);
    assert_float_equal(sample_std(t, &m), 0.5, 0.01);
    assert_int_equal(nn_init_uniform(t, -2, 2, &rng), AG_OK);
    assert_float_equal(sample_std(t, &m), 4.0 / sqrt(12.0), 0.02);
    assert_true(m < 2.0);
    assert_int_equal(nn_init_ones(t), AG_OK);
    assert_true(ag_get(t, 599) == 1.0);
    assert_int_equal(nn_init_zeros(t), AG_OK);
    assert_true(ag_get(t, 599) == 0.0);
    ag_tensor_free(t);
}

static void test_init_linear_default_is_torch_rule(void **state)
{
    (void)state;
    ag_rng r1, r2;
    ag_rng_seed(&r1, 5);
    r2 = r1;
    nn_params *p = nn_params_new(), *q = nn_params_new();
    nn_linear *l = nn_linear_new(p, "fc", 400, 300, true, &r1);
    nn_linear *k = nn_linear_new(q, "fc", 400, 300, true, &r2);
    double bound = 1.0 / sqrt(400.0), m;
    /* U(-1/sqrt(in), 1/sqrt(in)): std bound / sqrt(3), never past bound */
    assert_float_equal(sample_std(l->weight, &m), bound / sqrt(3.0), 0.01 * bound);
    assert_true(m <= bound);
    sample_std(l->bias, &m);
    assert_true(m <= bound && m > 0.9 * bound);
    /* same seed, same weights */
    assert_memory_equal(ag_data(l->weight), ag_data(k->weight), 400 * 300 * sizeof(float));
    nn_embedding *e = nn_embedding_new(p, "emb", 200, 100, &r1);
    assert_float_equal(sample_std(e->weight, &m), 1.0, 0.02);
    nn_linear_free(l);
    nn_linear_free(k);
    nn_embedding_free(e);
    nn_params_free(p);
    nn_params_free(q);
}

/* ---- layers against torch ---- */

static void test_linear_matches_torch(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        ag_safetensors *f = fixture(dtypes[d]);
        nn_params *p = nn_params_new();
        nn_params_set_dtype(p, dtypes[d]);
        nn_linear *l = nn_linear_new(p, "lin", 5, 3, true, NULL);
        nn_linear *nb = nn_linear_new(p, "lin_nb", 5, 3, false, NULL);
        assert_null(nb->bias);
        load_fx(p, f, 3);
        ag_tape *t = ag_tape_new();
        check_fx(nn_linear_forward(t, l, tg_fixture(f, "lin.x")), f, "lin.y");
        check_fx(nn_linear_forward(t, l, tg_fixture(f, "lin.x3")), f, "lin.y3");
        check_fx(nn_linear_forward(t, nb, tg_fixture(f, "lin.x")), f, "lin_nb.y");
        ag_tensor *row = ag_reshape(t, ag_slice(t, tg_fixture(f, "lin.x"), 0, 0, 1, 1), 1,
                                    (int64_t[]){5});   /* a 1-D x gives a 1-D y */
        ag_tensor *y1 = nn_linear_forward(t, l, row);
        assert_int_equal(ag_ndim(y1), 1);
        for (int j = 0; j < 3; j++)
            assert_float_equal(ag_get(y1, j), ag_get(tg_fixture(f, "lin.y"), j), 1e-6);
        ag_tape_free(t);
        nn_linear_free(l);
        nn_linear_free(nb);
        nn_params_free(p);
        ag_safetensors_free(f);
    }
}

static void test_mlp_matches_torch(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        ag_safetensors *f = fixture(dtypes[d]);
        nn_params *p = nn_params_new();
        nn_params_set_dtype(p, dtypes[d]);
        nn_mlp *m = nn_mlp_new(p, "mlp", 4, (int64_t[]){5, 8, 6, 3}, true, NN_ACT_TANH, NULL);
        assert_int_equal(m->n_layers, 3);
        assert_non_null(nn_params_get(p, "mlp.4.bias"));
        load_fx(p, f, 6);
        ag_tape *t = ag_tape_new();
        check_fx(nn_mlp_forward(t, m, tg_fixture(f, "lin.x")), f, "mlp.y");
        ag_tape_free(t);
        nn_mlp_free(m);
        nn_params_free(p);
        ag_safetensors_free(f);
    }
}

static void test_embedding_matches_torch(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        ag_safetensors *f = fixture(dtypes[d]);
        nn_params *p = nn_params_new();
        nn_params_set_dtype(p, dtypes[d]);
        nn_embedding *e = nn_embedding_new(p, "emb", 10, 4, NULL);
        load_fx(p, f, 1);
        int64_t n, *idx = ints(f, "emb.idx", &n);
        ag_tape *t = ag_tape_new();
        check_fx(nn_embedding_forward(t, e, idx, n), f, "emb.y");
        idx[2] = 10;
        assert_null(nn_embedding_forward(t, e, idx, n));
        assert_int_equal(ag_tape_status(t), AG_ERR_ARG);
        assert_non_null(strstr(ag_tape_error(t), "nn_embedding_forward: idx[2] = 10"));
        free(idx);
        ag_tape_free(t);
        nn_embedding_free(e);
        nn_params_free(p);
        ag_safetensors_free(f);
    }
}

static void test_layer_norm_matches_torch(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        ag_safetensors *f = fixture(dtypes[d]);
        nn_params *p = nn_params_new();
        nn_params_set_dtype(p, dtypes[d]);
        nn_layer_norm *a = nn_layer_norm_new(p, "ln", 1, (int64_t[]){6}, 1e-5, true);
        nn_layer_norm *b = nn_layer_norm_new(p, "ln2", 2, (int64_t[]){2, 3}, 1e-5, true);
        load_fx(p, f, 4);
        ag_tape *t = ag_tape_new();
        check_fx(nn_layer_norm_forward(t, a, tg_fixture(f, "ln.x")), f, "ln.y");
        check_fx(nn_layer_norm_forward(t, b, tg_fixture(f, "ln2.x")), f, "ln2.y");
        assert_null(nn_layer_norm_forward(t, b, tg_fixture(f, "ln.x")));
        assert_int_equal(ag_tape_status(t), AG_ERR_SHAPE);
        assert_non_null(strstr(ag_tape_error(t), "nn_layer_norm_forward: x is [3,6]"));
        ag_tape_free(t);
        nn_layer_norm_free(a);
        nn_layer_norm_free(b);
        nn_params_free(p);
        ag_safetensors_free(f);
    }
}

static void check_batch_norm(const ag_safetensors *f, ag_dtype dt, const char *name, int64_t c)
{
    char k[64];
    nn_params *p = nn_params_new();
    nn_params_set_dtype(p, dt);
    nn_batch_norm *b = nn_batch_norm1d_new(p, name, c, 1e-5, 0.1, true);
    load_fx(p, f, 4);
    ag_tape *t = ag_tape_new();
    snprintf(k, sizeof k, "%s.x", name);
    ag_tensor *x = tg_fixture(f, "%s", k);
    snprintf(k, sizeof k, "%s.y_train", name);
    check_fx(nn_batch_norm1d_forward(t, b, x), f, k);
    snprintf(k, sizeof k, "%s.running_mean_after", name);
    check_fx(b->running_mean, f, k);
    snprintf(k, sizeof k, "%s.running_var_after", name);
    check_fx(b->running_var, f, k);
    nn_params_set_training(p, false);
    snprintf(k, sizeof k, "%s.x_eval", name);
    x = tg_fixture(f, "%s", k);
    snprintf(k, sizeof k, "%s.y_eval", name);
    check_fx(nn_batch_norm1d_forward(t, b, x), f, k);
    ag_tape_free(t);
    nn_batch_norm_free(b);
    nn_params_free(p);
}

static void test_batch_norm_matches_torch(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        ag_safetensors *f = fixture(dtypes[d]);
        check_batch_norm(f, dtypes[d], "bn", 4);
        check_batch_norm(f, dtypes[d], "bn3", 3);
        ag_safetensors_free(f);
    }
}

static void test_batch_norm_needs_two_values_per_channel(void **state)
{
    (void)state;
    nn_params *p = nn_params_new();
    nn_batch_norm *b = nn_batch_norm1d_new(p, "bn", 3, 1e-5, 0.1, false);
    assert_null(b->weight);
    assert_int_equal(nn_params_count(p), 2);   /* the running statistics */
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_tensor_ones(AG_F32, 2, (int64_t[]){1, 3});
    assert_null(nn_batch_norm1d_forward(t, b, x));
    assert_int_equal(ag_tape_status(t), AG_ERR_SHAPE);
    ag_tape_reset(t);
    nn_params_set_training(p, false);   /* eval: one row is fine */
    ag_tensor *y = nn_batch_norm1d_forward(t, b, x);
    assert_non_null(y);
    assert_float_equal(ag_get(y, 0), 1.0 / sqrt(1.0 + 1e-5), 1e-6);
    ag_tape_reset(t);
    ag_tensor *bad = ag_tensor_ones(AG_F32, 2, (int64_t[]){4, 2});
    assert_null(nn_batch_norm1d_forward(t, b, bad));
    assert_non_null(strstr(ag_tape_error(t), "expected [N, 3] or [N, 3, L]"));
    ag_tensor_free(x);
    ag_tensor_free(bad);
    ag_tape_free(t);
    nn_batch_norm_free(b);
    nn_params_free(p);
}

static void test_dropout_follows_mode(void **state)
{
    (void)state;
    nn_params *p = nn_params_new();
    nn_dropout *d = nn_dropout_new(p, 0.25);
    ag_rng rng;
    ag_rng_seed(&rng, 6);
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_tensor_ones(AG_F64, 1, (int64_t[]){4000});
    ag_tensor *y = nn_dropout_forward(t, d, x, &rng);
    int64_t zeros = 0;
    for (int64_t i = 0; i < 4000; i++) {
        double v = ag_get(y, i);
        assert_true(v == 0.0 || fabs(v - 1.0 / 0.75) < 1e-12);
        zeros += v == 0.0;
    }
    assert_in_range(zeros, 900, 1100);
    nn_params_set_training(p, false);
    y = nn_dropout_forward(t, d, x, &rng);
    for (int64_t i = 0; i < 4000; i++)
        assert_true(ag_get(y, i) == 1.0);
    ag_tensor_free(x);
    ag_tape_free(t);
    nn_dropout_free(d);
    nn_params_free(p);
}

/* ---- activations and losses against torch ---- */

static void test_activations_match_torch(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        ag_safetensors *f = fixture(dtypes[d]);
        ag_tape *t = ag_tape_new();
        ag_tensor *x = tg_fixture(f, "act.x");
        check_fx(nn_relu(t, x), f, "act.relu");
        check_fx(nn_leaky_relu(t, x, 0.1), f, "act.leaky_relu");
        check_fx(nn_elu(t, x, 1.3), f, "act.elu");
        check_fx(nn_gelu(t, x, false), f, "act.gelu");
        check_fx(nn_gelu(t, x, true), f, "act.gelu_tanh");
        check_fx(nn_silu(t, x), f, "act.silu");
        check_fx(nn_tanh(t, x), f, "act.tanh");
        check_fx(nn_sigmoid(t, x), f, "act.sigmoid");
        check_fx(nn_softplus(t, x, 1.0), f, "act.softplus");
        check_fx(nn_softplus(t, x, 2.0), f, "act.softplus_b2");
        check_fx(nn_softmax(t, x, 1), f, "act.softmax");
        check_fx(nn_log_softmax(t, x, 0), f, "act.log_softmax");
        check_fx(nn_activate(t, NN_ACT_SILU, x), f, "act.silu");
        assert_ptr_equal(nn_activate(t, NN_ACT_NONE, x), x);
        assert_null(nn_softplus(t, x, 0.0));
        assert_non_null(strstr(ag_tape_error(t), "nn_softplus: beta"));
        ag_tape_free(t);
        ag_safetensors_free(f);
    }
}

static void test_regression_losses_match_torch(void **state)
{
    (void)state;
    static const char *red_names[3] = {"mean", "sum", "none"};
    for (int d = 0; d < 2; d++) {
        ag_safetensors *f = fixture(dtypes[d]);
        ag_tape *t = ag_tape_new();
        ag_tensor *in = tg_fixture(f, "loss.input"), *tg = tg_fixture(f, "loss.target");
        ag_tensor *logits = ag_mul_scalar(t, in, 3.0), *prob = tg_fixture(f, "loss.prob");
        for (int r = 0; r < 3; r++) {
            char k[64];
            ag_reduction red = (ag_reduction)r;
            snprintf(k, sizeof k, "loss.mse.%s", red_names[r]);
            check_fx(nn_mse_loss(t, in, tg, red), f, k);
            snprintf(k, sizeof k, "loss.l1.%s", red_names[r]);
            check_fx(nn_l1_loss(t, in, tg, red), f, k);
            snprintf(k, sizeof k, "loss.smooth_l1.%s", red_names[r]);
            check_fx(nn_smooth_l1_loss(t, in, tg, 0.5, red), f, k);
            snprintf(k, sizeof k, "loss.huber.%s", red_names[r]);
            check_fx(nn_huber_loss(t, in, tg, 1.5, red), f, k);
            snprintf(k, sizeof k, "loss.bce.%s", red_names[r]);
            check_fx(nn_bce_with_logits(t, logits, prob, red), f, k);
        }
        assert_int_equal(ag_ndim(nn_mse_loss(t, in, tg, AG_REDUCE_MEAN)), 0);
        ag_tape_free(t);
        ag_safetensors_free(f);
    }
}

static void test_classification_losses_match_torch(void **state)
{
    (void)state;
    static const char *red_names[3] = {"mean", "sum", "none"};
    for (int d = 0; d < 2; d++) {
        ag_safetensors *f = fixture(dtypes[d]);
        ag_tape *t = ag_tape_new();
        int64_t n, *y = ints(f, "ce.labels", &n);
        ag_tensor *logits = tg_fixture(f, "ce.logits"), *logp = tg_fixture(f, "nll.logp");
        check_fx(nn_cross_entropy(t, logits, y, n), f, "ce.mean");
        ag_ce_opts o = {.label_smoothing = 0.1, .ignore_index = AG_CE_NO_IGNORE,
                        .reduction = AG_REDUCE_SUM};
        check_fx(nn_cross_entropy_opts(t, logits, y, n, &o), f, "ce.smooth_sum");
        o = (ag_ce_opts){.ignore_index = 2, .reduction = AG_REDUCE_NONE};
        check_fx(nn_cross_entropy_opts(t, logits, y, n, &o), f, "ce.ignore2_none");
        o.reduction = AG_REDUCE_MEAN;
        check_fx(nn_cross_entropy_opts(t, logits, y, n, &o), f, "ce.ignore2_mean");
        for (int r = 0; r < 3; r++) {
            char k[64];
            snprintf(k, sizeof k, "nll.%s", red_names[r]);
            check_fx(nn_nll_loss(t, logp, y, n, -100, (ag_reduction)r), f, k);
            snprintf(k, sizeof k, "nll.ignore2_%s", red_names[r]);
            check_fx(nn_nll_loss(t, logp, y, n, 2, (ag_reduction)r), f, k);
        }
        free(y);
        ag_tape_free(t);
        ag_safetensors_free(f);
    }
}

/* ---- errors ---- */

static void test_forward_errors_name_the_function(void **state)
{
    (void)state;
    nn_params *p = nn_params_new();
    nn_linear *l = nn_linear_new(p, "fc", 4, 2, true, NULL);
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_tensor_ones(AG_F32, 2, (int64_t[]){3, 5});
    assert_null(nn_linear_forward(t, l, x));
    assert_int_equal(ag_tape_status(t), AG_ERR_SHAPE);
    assert_string_equal(ag_tape_error(t),
                        "nn_linear_forward: x is [3,5], the layer expects [..., 4]");
    /* NULL flows through without hiding the first error */
    assert_null(nn_relu(t, nn_linear_forward(t, l, NULL)));
    assert_int_equal(ag_tape_status(t), AG_ERR_SHAPE);
    ag_tape_reset(t);
    ag_tensor *y = ag_tensor_ones(AG_F32, 2, (int64_t[]){3, 4});
    assert_null(nn_mse_loss(t, x, y, AG_REDUCE_MEAN));
    assert_non_null(strstr(ag_tape_error(t), "nn_mse_loss: input is [3,5], target is [3,4]"));
    ag_tape_reset(t);
    assert_null(nn_nll_loss(t, y, (int64_t[]){0, 4, 1}, 3, -100, AG_REDUCE_MEAN));
    assert_string_equal(ag_tape_error(t), "nn_nll_loss: labels[1] = 4 is outside [0, 4)");
    ag_tape_reset(t);
    assert_null(nn_nll_loss(t, y, (int64_t[]){0, 1}, 2, -100, AG_REDUCE_MEAN));
    assert_int_equal(ag_tape_status(t), AG_ERR_SHAPE);
    ag_tape_reset(t);
    ag_tensor *x64 = ag_tensor_ones(AG_F64, 2, (int64_t[]){3, 4});
    assert_null(nn_linear_forward(t, l, x64));
    assert_int_equal(ag_tape_status(t), AG_ERR_DTYPE);
    ag_tape_reset(t);
    assert_null(nn_huber_loss(t, y, y, 0.0, AG_REDUCE_SUM));
    assert_int_equal(ag_tape_status(t), AG_ERR_ARG);
    ag_tensor_free(x);
    ag_tensor_free(y);
    ag_tensor_free(x64);
    ag_tape_free(t);
    nn_linear_free(l);
    nn_params_free(p);
}

static void test_nll_all_ignored_mean_is_nan(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *lp = ag_tensor_full(AG_F64, 2, (int64_t[]){2, 3}, -1.0);
    ag_tensor *l = nn_nll_loss(t, lp, (int64_t[]){-100, -100}, 2, -100, AG_REDUCE_MEAN);
    assert_non_null(l);
    assert_true(isnan(ag_item(l)));
    l = nn_nll_loss(t, lp, (int64_t[]){-100, 1}, 2, -100, AG_REDUCE_NONE);
    assert_true(ag_get(l, 0) == 0.0 && ag_get(l, 1) == 1.0);
    ag_tensor_free(lp);
    ag_tape_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_add_get_order),
        cmocka_unit_test(test_params_add_rejects_bad_names),
        cmocka_unit_test(test_params_freeze_by_prefix),
        cmocka_unit_test(test_params_zero_grad_clears_every_param),
        cmocka_unit_test(test_params_failed_constructor_adds_nothing),
        cmocka_unit_test(test_init_gain_and_fans),
        cmocka_unit_test(test_init_distributions_have_torch_scales),
        cmocka_unit_test(test_init_linear_default_is_torch_rule),
        cmocka_unit_test(test_linear_matches_torch),
        cmocka_unit_test(test_mlp_matches_torch),
        cmocka_unit_test(test_embedding_matches_torch),
        cmocka_unit_test(test_layer_norm_matches_torch),
        cmocka_unit_test(test_batch_norm_matches_torch),
        cmocka_unit_test(test_batch_norm_needs_two_values_per_channel),
        cmocka_unit_test(test_dropout_follows_mode),
        cmocka_unit_test(test_activations_match_torch),
        cmocka_unit_test(test_regression_losses_match_torch),
        cmocka_unit_test(test_classification_losses_match_torch),
        cmocka_unit_test(test_forward_errors_name_the_function),
        cmocka_unit_test(test_nll_all_ignored_mean_is_nan),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    print_message("fixture max error vs PyTorch (rel where |torch| > 1e-3): f64 abs %.3g, "
                  "rel %.3g (%s); f32 abs %.3g, rel %.3g (%s)\n",
                  max_abs[1], max_rel[1], worst_rel[1], max_abs[0], max_rel[0], worst_rel[0]);
    return rc;
}
