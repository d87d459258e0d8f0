/* test_lifetime.c — lifetimes and in-place edits: a tape tensor or ag_var
 * from another step or tape is refused (AG_ERR_STATE, naming the call and
 * the argument), never taken for whatever now lives at its place; a
 * persistent tensor written between forward and backward is refused by
 * the backward, as PyTorch's version counter does. */
#include "test_util.h"

#include "tapegrad.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A persistent f64 scalar-shaped [1] parameter holding v. */
static ag_tensor *param(double v, const char *name)
{
    ag_tensor *t = ag_tensor_full(AG_F64, 1, (int64_t[]){1}, v);
    ag_set_requires_grad(t, true);
    if (name)
        ag_tensor_set_name(t, name);
    return t;
}

static void assert_last_error(const char *substr)
{
    const char *m = ag_last_error();
    assert_non_null(m);
    if (!strstr(m, substr))
        fail_msg("ag_last_error \"%s\" lacks \"%s\"", m, substr);
}

/* ---- tape tensors ----
 * (Messages are matched from the op's own name on, "mul: ...", so they
 * hold whether a binary op calls itself "mul" or "ag_mul".) */

/* The case: x kept across a reset, then x^2 + x.  Was: the op
 * accepted x, whose header the new step's first tensor had overwritten,
 * and backward "succeeded" with a gradient of 2 instead of 3. */
static void test_lifetime_tensor_kept_across_reset_refused(void **state)
{
    (void)state;
    ag_tensor *w = param(1.0, "w");
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_mul_scalar(t, w, 1.0);
    assert_non_null(x);
    ag_tape_reset(t);
    ag_tensor *y = ag_add(t, ag_mul(t, x, x), x);
    assert_null(y);
    tg_assert_tape_error(t, AG_ERR_STATE,
                         "mul: input #1 is a tape tensor from before ag_tape_reset");
    assert_int_equal(ag_backward(t, y), AG_ERR_STATE);
    assert_null(ag_grad(w)); /* nothing computed, so not a silent 2 */
    ag_tape_free(t);
    ag_tensor_free(w);
}

/* The new step first makes tensors of its own (where the old headers
 * were), then uses the stale one: still refused. */
static void test_lifetime_tensor_kept_past_newer_tensors_refused(void **state)
{
    (void)state;
    ag_tensor *w = param(2.0, NULL);
    for (int i = 0; i < 4; i++) {
        ag_tape *t = ag_tape_new();
        ag_tensor *old[4];
        for (int k = 0; k < 4; k++)
            old[k] = ag_mul_scalar(t, w, (double)k);
        ag_tape_reset(t);
        ag_tensor *h = w;
        for (int k = 0; k < 8; k++)
            h = ag_add_scalar(t, ag_mul(t, h, w), 1.0);
        assert_non_null(h);
        assert_null(ag_add(t, h, old[i]));
        tg_assert_tape_error(t, AG_ERR_STATE, "add: input #2 is a tape tensor from "
                                              "before ag_tape_reset");
        ag_tape_free(t);
    }
    ag_tensor_free(w);
}

/* Two resets: refused as long as this step has not yet made tensors in
 * the old one's place (the rule autograd.h states). */
static void test_lifetime_tensor_kept_across_two_resets_refused(void **state)
{
    (void)state;
    ag_tensor *w = param(3.0, NULL);
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_mul_scalar(t, w, 2.0);
    ag_tape_reset(t);
    assert_non_null(ag_mul_scalar(t, w, 5.0));
    ag_tape_reset(t);
    assert_null(ag_exp(t, x));
    tg_assert_tape_error(t, AG_ERR_STATE, "exp: input #1 is a tape tensor from before "
                                          "ag_tape_reset (tape tensors live one step)");
    ag_tape_free(t);
    ag_tensor_free(w);
}

static void test_lifetime_tensor_from_another_tape_refused(void **state)
{
    (void)state;
    ag_tensor *w = param(3.0, NULL);
    ag_tape *t1 = ag_tape_new(), *t2 = ag_tape_new();
    ag_tensor *x = ag_mul_scalar(t1, w, 2.0);
    assert_null(ag_mul(t2, w, x));
    tg_assert_tape_error(t2, AG_ERR_STATE, "mul: input #2 belongs to another tape");
    ag_tensor *g = NULL;
    assert_int_equal(ag_gradients(t1, ag_sum(t1, x, AG_ALL, false), NULL, 1, &x, &g, false),
                     AG_OK);
    ag_tape_reset(t2);
    assert_int_equal(ag_backward(t2, ag_sum(t1, x, AG_ALL, false)), AG_ERR_STATE);
    tg_assert_tape_error(t2, AG_ERR_STATE, "ag_backward: root belongs to another tape");
    ag_tape_free(t1);
    ag_tape_free(t2);
    ag_tensor_free(w);
}

/* Was: AG_OK with nothing computed. */
static void test_lifetime_backward_stale_root_refused(void **state)
{
    (void)state;
    ag_tensor *w = param(1.5, NULL);
    ag_tape *t = ag_tape_new();
    ag_tensor *loss = ag_sum(t, ag_mul(t, w, w), AG_ALL, false);
    ag_tape_reset(t);
    assert_int_equal(ag_backward(t, loss), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE,
                         "ag_backward: root is a tape tensor from before ag_tape_reset");
    assert_null(ag_grad(w));

    ag_tape_reset(t);
    loss = ag_sum(t, ag_mul(t, w, w), AG_ALL, false);
    ag_tensor *stale_seed = ag_tape_tensor(t, AG_F64, 0, NULL);
    ag_tape_reset(t);
    ag_tensor *root = ag_sum(t, ag_mul(t, w, w), AG_ALL, false);
    assert_int_equal(ag_backward_seeded(t, root, stale_seed), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_backward_seeded: seed is a tape tensor from "
                                          "before ag_tape_reset");

    ag_tape_reset(t);
    ag_tensor *mid = ag_mul(t, w, w);
    loss = ag_sum(t, mid, AG_ALL, false);
    ag_tape_reset(t);
    root = ag_sum(t, ag_mul(t, w, w), AG_ALL, false);
    ag_tensor *g = NULL;
    assert_int_equal(ag_gradients(t, loss, NULL, 1, &w, &g, false), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_gradients: root is a tape tensor from before");
    ag_tape_reset(t);
    mid = ag_mul(t, w, w);
    ag_tape_reset(t);
    root = ag_sum(t, ag_mul(t, w, w), AG_ALL, false);
    assert_int_equal(ag_gradients(t, root, NULL, 1, &mid, &g, true), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_gradients: wrt[0] is a tape tensor from before");
    assert_null(g);
    ag_tape_free(t);
    ag_tensor_free(w);
}

/* ---- ag_var ---- */

/* The product: a var of another tape aliased var 0 of this one
 * (3 * 3 = 9). */
static void test_lifetime_var_from_another_tape_refused(void **state)
{
    (void)state;
    ag_tape *t1 = ag_tape_new(), *t2 = ag_tape_new();
    ag_var a = ag_var_new(t1, 2.0);
    ag_var b = ag_var_new(t2, 3.0);
    ag_var p = ag_var_mul(t2, a, b);
    assert_true(isnan(ag_var_value(t2, p)));
    tg_assert_tape_error(t2, AG_ERR_STATE, "ag_var_mul: a is an ag_var from another tape "
                                           "or from before ag_tape_reset");
    assert_int_equal(ag_var_backward(t2, p), AG_ERR_STATE);
    ag_clear_last_error();
    assert_true(isnan(ag_var_value(t2, a)));
    assert_last_error("ag_var_value: x is an ag_var from another tape");
    ag_tape_free(t1);
    ag_tape_free(t2);
}

static void test_lifetime_var_from_before_reset_refused(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_var a = ag_var_new(t, 2.0), a2 = ag_var_mul(t, a, a);
    assert_int_equal(ag_var_backward(t, a2), AG_OK);
    ag_tape_reset(t);
    ag_var b = ag_var_new(t, 3.0);
    ag_var p = ag_var_mul(t, b, a); /* was 3 * 3 */
    assert_true(isnan(ag_var_value(t, p)));
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_var_mul: b is an ag_var from another tape or "
                                          "from before ag_tape_reset");
    ag_clear_last_error();
    assert_true(isnan(ag_var_grad(t, a)));
    assert_last_error("ag_var_grad: x is an ag_var from another tape or from before");

    ag_tape_reset(t);
    b = ag_var_new(t, 3.0);
    assert_int_equal(ag_var_backward(t, a), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_var_backward: y is an ag_var from");

    ag_tape_reset(t);
    b = ag_var_new(t, 3.0);
    ag_var f = ag_var_mul(t, b, b);
    double v = 1, hv;
    assert_int_equal(ag_var_hvp(t, f, 1, &a, &v, &hv), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_var_hvp: x[0] is an ag_var from");

    ag_tape_reset(t);
    b = ag_var_new(t, 3.0);
    f = ag_var_mul(t, b, b);
    double nv = 4.0;
    assert_int_equal(ag_tape_replay(t, 1, &a, &nv), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_tape_replay: inputs[0] is an ag_var from");

    ag_tape_reset(t);
    b = ag_var_new(t, 3.0);
    ag_var two[2] = {b, a};
    assert_null(ag_tensor_from_vars(t, AG_F64, 1, (int64_t[]){2}, two));
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_tensor_from_vars: vars[1] is an ag_var from");

    /* a failed op's result stays a plain invalid var */
    ag_tape_reset(t);
    ag_var bad = ag_var_exp(NULL, b);
    assert_true(ag_var_exp(t, bad).id < 0);
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_var_exp: a is an invalid ag_var");
    ag_tape_free(t);
}

/* Was: the adjoint array's leftovers from an earlier sweep or step. */
static void test_lifetime_var_grad_before_backward(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_var x = ag_var_new(t, 3.0), y = ag_var_mul(t, x, x);
    ag_clear_last_error();
    assert_true(isnan(ag_var_grad(t, x)));
    assert_last_error("ag_var_grad: no backward has reached x");
    assert_int_equal(ag_var_backward(t, y), AG_OK);
    assert_true(ag_var_grad(t, x) == 6.0);
    ag_var z = ag_var_exp(t, y); /* recorded after the sweep */
    assert_true(isnan(ag_var_grad(t, z)));
    assert_true(ag_var_grad(t, x) == 6.0);
    /* same ids in the next step, no backward yet: not the old 6 */
    ag_tape_reset(t);
    x = ag_var_new(t, 5.0);
    y = ag_var_mul(t, x, x);
    assert_true(isnan(ag_var_grad(t, x)));
    assert_true(isnan(ag_var_grad(t, y)));
    assert_int_equal(ag_var_backward(t, y), AG_OK);
    assert_true(ag_var_grad(t, x) == 10.0);
    /* replayed at new inputs: the old gradient is gone until a backward */
    double seven = 7.0;
    assert_int_equal(ag_tape_replay(t, 1, &x, &seven), AG_OK);
    assert_true(isnan(ag_var_grad(t, x)));
    assert_int_equal(ag_var_backward(t, y), AG_OK);
    assert_true(ag_var_grad(t, x) == 14.0);
    /* many more ops (the arrays grow): the swept adjoints survive */
    ag_var acc = y;
    for (int i = 0; i < 20000; i++)
        acc = ag_var_add(t, acc, x);
    assert_true(ag_var_grad(t, x) == 14.0);
    ag_tape_free(t);
}

/* Was: a segfault (no scalar arrays yet). */
static void test_lifetime_replay_empty_tape(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    assert_int_equal(ag_tape_replay(t, 0, NULL, NULL), AG_OK);
    assert_int_equal(ag_tape_replay(t, -1, NULL, NULL), AG_ERR_ARG);
    ag_tape_reset(t);
    assert_int_equal(ag_tape_replay(t, 1, NULL, NULL), AG_ERR_ARG);
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_tape_replay: inputs is NULL");
    ag_tape_reset(t);
    assert_null(ag_tensor_from_vars(t, AG_F32, 0, NULL, NULL));
    tg_assert_tape_error(t, AG_ERR_NULL, "ag_tensor_from_vars: vars is NULL");
    ag_tape_free(t);
}

/* ---- in-place edits ---- */

static ag_tensor *record_loss(ag_tape *t, ag_tensor *w, ag_tensor *x)
{
    /* loss = sum((w x)^2): d/dw = 2 w x^2 */
    ag_tensor *h = ag_mul(t, w, x);
    return ag_sum(t, ag_mul(t, h, h), AG_ALL, false);
}

/* The case: recorded at w = 1, gradient taken at w = 10. */
static void test_lifetime_param_modified_refused_by_backward(void **state)
{
    (void)state;
    ag_tensor *w = param(1.0, "fc.weight"), *x = ag_tensor_full(AG_F64, 1, (int64_t[]){1}, 2);
    ag_tape *t = ag_tape_new();
    ag_tensor *loss = record_loss(t, w, x);
    ag_set(w, 0, 10.0);
    assert_int_equal(ag_backward(t, loss), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_backward: fc.weight (input #1 of mul) was "
                                          "modified after it was recorded");
    assert_null(ag_grad(w));

    /* written through ag_data, and said so */
    ag_tape_reset(t);
    loss = record_loss(t, w, x);
    ((double *)ag_data(w))[0] = 1.0;
    ag_tensor_mark_modified(w);
    assert_int_equal(ag_backward(t, loss), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_backward: fc.weight (input #1 of mul)");

    /* an unnamed data tensor: named by its place */
    ag_tape_reset(t);
    loss = record_loss(t, w, x);
    ag_set(x, 0, 3.0);
    ag_tensor *seed = ag_tensor_full(AG_F64, 0, NULL, 1.0);
    assert_int_equal(ag_backward_seeded(t, loss, seed), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_backward_seeded: input #2 of mul was modified");
    ag_tensor_free(seed);
    ag_tape_free(t);
    ag_tensor_free(w);
    ag_tensor_free(x);
}

static void test_lifetime_param_modified_refused_by_gradients(void **state)
{
    (void)state;
    ag_tensor *w = param(1.0, "w"), *x = ag_tensor_full(AG_F64, 1, (int64_t[]){1}, 2);
    ag_tape *t = ag_tape_new();
    for (int cg = 0; cg < 2; cg++) {
        ag_tape_reset(t);
        ag_tensor *loss = record_loss(t, w, x), *g = NULL;
        ag_set(w, 0, 10.0);
        assert_int_equal(ag_gradients(t, loss, NULL, 1, &w, &g, cg), AG_ERR_STATE);
        tg_assert_tape_error(t, AG_ERR_STATE, "ag_gradients: w (input #1 of mul) was "
                                              "modified after it was recorded");
        assert_null(g);
    }
    /* the scalar path's backward sweeps tensor entries too */
    ag_tape_reset(t);
    ag_var v = ag_var_from_tensor(t, record_loss(t, w, x));
    ag_set(w, 0, 1.0);
    assert_int_equal(ag_var_backward(t, v), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_var_backward: w (input #1 of mul)");
    ag_tape_free(t);
    ag_tensor_free(w);
    ag_tensor_free(x);
}

/* Nothing written between forward and backward, or written before the
 * recording: no error, the right numbers. */
static void test_lifetime_unchanged_params_pass(void **state)
{
    (void)state;
    ag_tensor *w = param(1.0, "w"), *x = ag_tensor_full(AG_F64, 1, (int64_t[]){1}, 2);
    ag_tape *t = ag_tape_new();
    for (int step = 0; step < 3; step++) {
        ag_set(w, 0, 1.0 + step); /* before recording: fine */
        ag_tensor *loss = record_loss(t, w, x), *g = NULL, *gg = NULL;
        assert_int_equal(ag_gradients(t, loss, NULL, 1, &w, &g, true), AG_OK);
        assert_true(ag_get(g, 0) == 8.0 * (1.0 + step));
        assert_int_equal(ag_gradients(t, ag_sum(t, g, AG_ALL, false), NULL, 1, &w, &gg, false),
                         AG_OK);
        assert_true(ag_get(gg, 0) == 8.0);
        ag_zero_grad(w);
        assert_int_equal(ag_backward(t, loss), AG_OK);
        assert_true(ag_get(ag_grad(w), 0) == 8.0 * (1.0 + step));
        ag_tape_reset(t);
    }
    ag_tape_free(t);
    ag_tensor_free(w);
    ag_tensor_free(x);
}

/* Initialisers and loaders bump the version like ag_set. */
static void test_lifetime_init_and_load_bump_version(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof path, "/tmp/tg_lifetime_%d.safetensors", (int)getpid());
    nn_params *p = nn_params_new();
    ag_tensor *w = param(1.0, NULL);
    assert_int_equal(nn_params_add(p, "w", w), AG_OK);
    assert_int_equal(nn_params_save(p, path), AG_OK);
    ag_tensor *x = ag_tensor_full(AG_F64, 1, (int64_t[]){1}, 2);
    ag_tape *t = ag_tape_new();
    ag_tensor *loss = record_loss(t, w, x);
    assert_int_equal(nn_init_constant(w, 4.0), AG_OK);
    assert_int_equal(ag_backward(t, loss), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "w (input #1 of mul) was modified");
    ag_tape_reset(t);
    loss = record_loss(t, w, x);
    assert_int_equal(nn_params_load(p, path), AG_OK);
    assert_true(ag_get(w, 0) == 1.0);
    assert_int_equal(ag_backward(t, loss), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "w (input #1 of mul) was modified");
    ag_tape_free(t);
    nn_params_free(p);
    ag_tensor_free(x);
    remove(path);
}

/* Anomaly mode also sees a raw write through ag_data that nobody marked. */
static void test_lifetime_anomaly_catches_unmarked_write(void **state)
{
    (void)state;
    ag_tensor *w = param(1.0, "w"), *x = ag_tensor_full(AG_F64, 1, (int64_t[]){1}, 2);
    ag_tape *t = ag_tape_new();
    ag_tape_set_anomaly(t, true);
    ag_tensor *loss = record_loss(t, w, x);
    ((double *)ag_data(w))[0] = 10.0;
    assert_int_equal(ag_backward(t, loss), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_backward: w (input #1 of mul) was written "
                                          "through ag_data after it was recorded");
    /* restored to the recorded values: passes again */
    ag_tape_reset(t);
    loss = record_loss(t, w, x);
    ((double *)ag_data(w))[0] = 3.0;
    ((double *)ag_data(w))[0] = 10.0;
    assert_int_equal(ag_backward(t, loss), AG_OK);
    assert_true(ag_get(ag_grad(w), 0) == 80.0);
    ag_tape_free(t);
    ag_tensor_free(w);
    ag_tensor_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifetime_tensor_kept_across_reset_refused),
        cmocka_unit_test(test_lifetime_tensor_kept_past_newer_tensors_refused),
        cmocka_unit_test(test_lifetime_tensor_kept_across_two_resets_refused),
        cmocka_unit_test(test_lifetime_tensor_from_another_tape_refused),
        cmocka_unit_test(test_lifetime_backward_stale_root_refused),
        cmocka_unit_test(test_lifetime_var_from_another_tape_refused),
        cmocka_unit_test(test_lifetime_var_from_before_reset_refused),
        cmocka_unit_test(test_lifetime_var_grad_before_backward),
        cmocka_unit_test(test_lifetime_replay_empty_tape),
        cmocka_unit_test(test_lifetime_param_modified_refused_by_backward),
        cmocka_unit_test(test_lifetime_param_modified_refused_by_gradients),
        cmocka_unit_test(test_lifetime_unchanged_params_pass),
        cmocka_unit_test(test_lifetime_init_and_load_bump_version),
        cmocka_unit_test(test_lifetime_anomaly_catches_unmarked_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
