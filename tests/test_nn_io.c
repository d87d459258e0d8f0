/* test_nn_io.c — nn_params checkpoints: save + load round trips, strict
 * and non-strict validation by name, shape and dtype (nothing loaded on
 * failure), a checkpoint written by PyTorch, and the tapegrad side of the
 * interop check (tests/reference/check_nn_interop.py sets
 * TG_NN_INTEROP_DIR and loads what this program writes there into torch).
 * The safetensors format itself (malformed corpus, atomic saves) is tested
 * in test_safetensors.c. */
#include "test_util.h"

#include "nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tg_nn_io_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    static const char *files[] = {"a.safetensors", "b.safetensors", "bad.safetensors"};
    char path[128];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, files[i]);
        unlink(path);
    }
    return rmdir(tmpdir);
}

static const char *tmp(const char *name)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

/* ---- the model of the interop tests (Net in make_nn_fixtures.py) ---- */

typedef struct net {
    nn_linear *fc1, *fc2;
    nn_batch_norm *bn1;
    nn_layer_norm *ln;
} net;

static void net_new(net *n, nn_params *p, ag_rng *rng)
{
    n->fc1 = nn_linear_new(p, "fc1", 6, 8, true, rng);
    n->bn1 = nn_batch_norm1d_new(p, "bn1", 8, 1e-5, 0.1, true);
    n->ln = nn_layer_norm_new(p, "ln", 1, (int64_t[]){8}, 1e-5, true);
    n->fc2 = nn_linear_new(p, "fc2", 8, 3, true, rng);
    assert_true(n->fc1 && n->bn1 && n->ln && n->fc2);
}

static ag_tensor *net_forward(ag_tape *t, net *n, ag_tensor *x)
{
    ag_tensor *h = nn_gelu(t, nn_batch_norm1d_forward(t, n->bn1, nn_linear_forward(t, n->fc1, x)),
                           false);
    return nn_linear_forward(t, n->fc2, nn_layer_norm_forward(t, n->ln, h));
}

static void net_free(net *n)
{
    nn_linear_free(n->fc1);
    nn_linear_free(n->fc2);
    nn_batch_norm_free(n->bn1);
    nn_layer_norm_free(n->ln);
}

/* A net of dtype dt with random weights and running statistics moved by
 * one training-mode forward pass. */
static nn_params *trained_net(net *n, ag_dtype dt, uint64_t seed)
{
    ag_rng rng;
    ag_rng_seed(&rng, seed);
    nn_params *p = nn_params_new();
    nn_params_set_dtype(p, dt);
    net_new(n, p, &rng);
    nn_init_normal(n->ln->weight, 1, 0.2, &rng);
    nn_init_normal(n->bn1->bias, 0, 0.2, &rng);
    ag_tensor *x = ag_tensor_normal(dt, 2, (int64_t[]){16, 6}, 0.5, 2, &rng);
    ag_tape *t = ag_tape_new();
    assert_non_null(net_forward(t, n, x));
    ag_tape_free(t);
    ag_tensor_free(x);
    return p;
}

static void assert_params_equal(const nn_params *a, const nn_params *b)
{
    assert_int_equal(nn_params_count(a), nn_params_count(b));
    for (int i = 0; i < nn_params_count(a); i++) {
        const ag_tensor *x = nn_params_at(a, i), *y = nn_params_get(b, nn_params_name(a, i));
        assert_non_null(y);
        assert_int_equal(ag_dtype_of(x), ag_dtype_of(y));
        assert_memory_equal(ag_data_const(x), ag_data_const(y),
                            (size_t)ag_numel(x) * ag_dtype_size(ag_dtype_of(x)));
    }
}

static bool all_zero_but_ones(const nn_params *p)
{
    /* a fresh net made without rng: zeros, except weights of the norms and
     * running_var, which start at 1 */
    for (int i = 0; i < nn_params_count(p); i++) {
        const char *name = nn_params_name(p, i);
        double want = strstr(name, "fc") ? 0.0
                      : (strstr(name, "weight") || strstr(name, "running_var")) ? 1.0
                                                                                  : 0.0;
        for (int64_t j = 0; j < ag_numel(nn_params_at(p, i)); j++)
            if (ag_get(nn_params_at(p, i), j) != want)
                return false;
    }
    return true;
}

static void test_save_load_round_trip(void **state)
{
    (void)state;
    static const ag_dtype dts[2] = {AG_F32, AG_F64};
    for (int d = 0; d < 2; d++) {
        net a, b;
        nn_params *p = trained_net(&a, dts[d], 20 + (uint64_t)d);
        const char *keys[2] = {"description", "step"}, *vals[2] = {"interop net", "1200"};
        assert_int_equal(nn_params_save_meta(p, tmp("a.safetensors"), 2, keys, vals), AG_OK);
        nn_params *q = nn_params_new();
        nn_params_set_dtype(q, dts[d]);
        net_new(&b, q, NULL);
        ag_status s = nn_params_load(q, tmp("a.safetensors"));
        if (s != AG_OK)
            print_message("%s\n", ag_last_error());
        assert_int_equal(s, AG_OK);
        assert_params_equal(p, q);
        assert_true(nn_params_is_buffer(q, 4));   /* bn1.running_mean stays a buffer */
        ag_safetensors *f = NULL;
        assert_int_equal(ag_safetensors_load(tmp("a.safetensors"), &f), AG_OK);
        assert_int_equal(ag_safetensors_count(f), 10);
        assert_string_equal(ag_safetensors_meta(f, "step"), "1200");
        assert_string_equal(ag_safetensors_meta(f, "description"), "interop net");
        ag_safetensors_free(f);
        assert_int_equal(nn_params_save(q, tmp("b.safetensors")), AG_OK);
        net_free(&a);
        net_free(&b);
        nn_params_free(p);
        nn_params_free(q);
    }
}

static void test_load_strict_lists_missing_and_unexpected(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 21);
    nn_params *p = nn_params_new(), *q = nn_params_new();
    nn_linear *a1 = nn_linear_new(p, "fc1", 3, 2, true, &rng);
    nn_linear *a2 = nn_linear_new(p, "fc2", 2, 2, true, &rng);
    nn_linear *b1 = nn_linear_new(q, "fc1", 3, 2, true, NULL);
    nn_linear *b3 = nn_linear_new(q, "fc3", 2, 2, false, NULL);
    assert_int_equal(nn_params_save(p, tmp("a.safetensors")), AG_OK);
    nn_load_report r;
    assert_int_equal(nn_params_load_opts(q, tmp("a.safetensors"), NULL, &r), AG_ERR_FORMAT);
    const char *msg = ag_last_error();
    assert_non_null(strstr(msg, "nn_params_load: "));
    assert_non_null(strstr(msg, "1 missing (fc3.weight)"));
    assert_non_null(strstr(msg, "2 unexpected (fc2.weight, fc2.bias)"));
    assert_int_equal(r.loaded, 0);
    assert_int_equal(r.missing, 1);
    assert_int_equal(r.unexpected, 2);
    assert_true(ag_get(b1->weight, 0) == 0.0);   /* nothing was loaded */
    nn_load_opts o = {.non_strict = true};
    assert_int_equal(nn_params_load_opts(q, tmp("a.safetensors"), &o, &r), AG_OK);
    assert_int_equal(r.loaded, 2);
    assert_memory_equal(ag_data(a1->weight), ag_data(b1->weight), 6 * sizeof(float));
    assert_memory_equal(ag_data(a1->bias), ag_data(b1->bias), 2 * sizeof(float));
    assert_true(ag_get(b3->weight, 0) == 0.0);
    nn_linear_free(a1);
    nn_linear_free(a2);
    nn_linear_free(b1);
    nn_linear_free(b3);
    nn_params_free(p);
    nn_params_free(q);
}

static void test_load_rejects_shape_and_dtype_mismatch(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 22);
    nn_params *p = nn_params_new(), *q = nn_params_new(), *w = nn_params_new();
    nn_params_set_dtype(p, AG_F64);
    nn_linear *a = nn_linear_new(p, "fc", 4, 3, true, &rng);
    nn_linear *b = nn_linear_new(q, "fc", 5, 3, true, NULL);   /* [3,5], and F32 */
    nn_linear *c = nn_linear_new(w, "fc", 4, 3, true, NULL);   /* F32 */
    assert_int_equal(nn_params_save(p, tmp("a.safetensors")), AG_OK);
    nn_load_opts o = {.non_strict = true};
    assert_int_equal(nn_params_load_opts(q, tmp("a.safetensors"), &o, NULL), AG_ERR_FORMAT);
    assert_non_null(strstr(ag_last_error(), "fc.weight: shape [3,4] in file, [3,5] in params"));
    assert_non_null(strstr(ag_last_error(), "fc.bias: dtype F64 in file, F32 in params"));
    assert_true(ag_get(b->bias, 0) == 0.0);
    assert_int_equal(nn_params_load(w, tmp("a.safetensors")), AG_ERR_FORMAT);
    assert_non_null(strstr(ag_last_error(), "2 mismatched (fc.weight: dtype F64"));
    assert_true(ag_get(c->weight, 0) == 0.0);
    o = (nn_load_opts){.convert_dtype = true};
    assert_int_equal(nn_params_load_opts(w, tmp("a.safetensors"), &o, NULL), AG_OK);
    for (int64_t i = 0; i < 12; i++)
        assert_true(ag_get(c->weight, i) == (double)(float)ag_get(a->weight, i));
    nn_linear_free(a);
    nn_linear_free(b);
    nn_linear_free(c);
    nn_params_free(p);
    nn_params_free(q);
    nn_params_free(w);
}

static void test_load_bad_files_leave_params_alone(void **state)
{
    (void)state;
    net n;
    nn_params *p = nn_params_new();
    net_new(&n, p, NULL);
    assert_int_equal(nn_params_load(p, tmp("does_not_exist.safetensors")), AG_ERR_IO);
    FILE *f = fopen(tmp("bad.safetensors"), "wb");
    assert_non_null(f);
    fputs("\x10\0\0\0\0\0\0\0{\"fc1.weight\": 3}", f);
    fclose(f);
    assert_int_equal(nn_params_load(p, tmp("bad.safetensors")), AG_ERR_FORMAT);
    assert_true(all_zero_but_ones(p));
    assert_int_equal(nn_params_load(NULL, tmp("bad.safetensors")), AG_ERR_ARG);
    assert_int_equal(nn_params_load_from(p, NULL, NULL, NULL), AG_ERR_ARG);
    assert_int_equal(nn_params_save(p, NULL), AG_ERR_ARG);
    assert_int_equal(nn_params_save_meta(p, tmp("a.safetensors"), 1, NULL, NULL), AG_ERR_ARG);
    assert_int_equal(nn_params_save(p, "/nonexistent-dir/x.safetensors"), AG_ERR_IO);
    net_free(&n);
    nn_params_free(p);
}

/* ---- PyTorch interop ---- */

static void test_torch_checkpoint_loads_and_matches(void **state)
{
    (void)state;
    net n;
    nn_params *p = nn_params_new();
    net_new(&n, p, NULL);
    ag_status s = nn_params_load(p, tg_path("tests/reference/nn/torch_model.safetensors"));
    if (s != AG_OK)
        print_message("%s\n", ag_last_error());
    assert_int_equal(s, AG_OK);
    ag_safetensors *io = NULL;
    assert_int_equal(ag_safetensors_load(tg_path("tests/reference/nn/torch_model_io.safetensors"),
                                         &io),
                     AG_OK);
    nn_params_set_training(p, false);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = net_forward(t, &n, ag_safetensors_get(io, "x"));
    assert_tensor_close(y, ag_safetensors_get(io, "y"), 1e-5, 1e-6);
    ag_tape_free(t);
    ag_safetensors_free(io);
    net_free(&n);
    nn_params_free(p);
}

/* Writes model_<dt>.safetensors and io_<dt>.safetensors (x, y_eval,
 * y_train) into dir for check_nn_interop.py. */
static void export_net(const char *dir, ag_dtype dt)
{
    const char *tag = dt == AG_F64 ? "f64" : "f32";
    char path[512];
    net n;
    nn_params *p = trained_net(&n, dt, dt == AG_F64 ? 31 : 30);
    snprintf(path, sizeof path, "%s/model_%s.safetensors", dir, tag);
    assert_int_equal(nn_params_save(p, path), AG_OK);
    ag_rng rng;
    ag_rng_seed(&rng, 32);
    ag_tensor *x = ag_tensor_normal(dt, 2, (int64_t[]){7, 6}, 0, 1.5, &rng);
    ag_tape *t = ag_tape_new();
    nn_params_set_training(p, false);
    ag_tensor *y_eval = net_forward(t, &n, x);
    nn_params_set_training(p, true);
    ag_tensor *y_train = net_forward(t, &n, x);
    assert_true(y_eval && y_train);
    const char *names[3] = {"x", "y_eval", "y_train"};
    const ag_tensor *ts[3] = {x, y_eval, y_train};
    snprintf(path, sizeof path, "%s/io_%s.safetensors", dir, tag);
    assert_int_equal(ag_safetensors_save(path, 3, names, ts, 0, NULL, NULL), AG_OK);
    ag_tape_free(t);
    ag_tensor_free(x);
    net_free(&n);
    nn_params_free(p);
}

static void test_interop_export(void **state)
{
    (void)state;
    const char *dir = getenv("TG_NN_INTEROP_DIR");
    if (!dir || !dir[0])
        skip();   /* run by tests/reference/check_nn_interop.py */
    export_net(dir, AG_F32);
    export_net(dir, AG_F64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_save_load_round_trip),
        cmocka_unit_test(test_load_strict_lists_missing_and_unexpected),
        cmocka_unit_test(test_load_rejects_shape_and_dtype_mismatch),
        cmocka_unit_test(test_load_bad_files_leave_params_alone),
        cmocka_unit_test(test_torch_checkpoint_loads_and_matches),
        cmocka_unit_test(test_interop_export),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
