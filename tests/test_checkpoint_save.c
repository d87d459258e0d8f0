/* test_checkpoint_save.c — selective checkpointing (ag_checkpoint_save):
 * a kept output is copied, not computed, when the segment is rebuilt;
 * the gradients stay the same bits; what may be kept, and the errors. */
#include "test_util.h"
#include "tapegrad.h"
#include <stdlib.h>
#include <string.h>

typedef struct {
    ag_tensor *w, *b;
    bool save;
} seg;

/* out = tanh(x W^T + b) * 2, keeping the linear's output when asked */
static ag_status seg_fn(ag_tape *t, int n_in, ag_tensor *const *in, int n_out, ag_tensor **out,
                        void *ctx)
{
    (void)n_in;
    (void)n_out;
    const seg *s = ctx;
    ag_tensor *h = ag_linear(t, in[0], s->w, s->b);
    if (s->save && ag_checkpoint_save(t, h) != AG_OK)
        return ag_tape_status(t);
    out[0] = ag_mul_scalar(t, ag_tanh(t, h), 2.0);
    return ag_tape_status(t);
}

static ag_tensor *param(ag_rng *rng, ag_dtype dt, int nd, const int64_t *shape)
{
    ag_tensor *p = ag_tensor_uniform(dt, nd, shape, -0.5, 0.5, rng);
    ag_set_requires_grad(p, true);
    return p;
}

/* A tape input x changed between forward and backward: a rebuild that
 * recomputes the linear sees it and refuses (its output differs); one
 * that copies the kept output does not recompute it and goes on. */
static void test_save_copies_instead_of_recomputing(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    seg s = {param(&rng, AG_F64, 2, (const int64_t[]){4, 3}),
             param(&rng, AG_F64, 1, (const int64_t[]){4}), false};
    ag_tensor *x0 = param(&rng, AG_F64, 2, (const int64_t[]){5, 3});
    for (int save = 0; save < 2; save++) {
        s.save = save;
        ag_tape *t = ag_tape_new();
        ag_tensor *x = ag_mul_scalar(t, x0, 1.0), *y;
        assert_int_equal(ag_checkpoint(t, seg_fn, &s, 1, &x, 1, &y), AG_OK);
        ((double *)ag_data(x))[0] += 1.0;  /* what only a recomputation reads */
        ag_status st = ag_backward(t, ag_sum(t, y, AG_ALL, false));
        assert_int_equal(st, save ? AG_OK : AG_ERR_STATE);
        if (!save)
            assert_non_null(strstr(ag_tape_error(t), "differs from the first run"));
        ag_tape_free(t);
        ag_zero_grad(s.w);
        ag_zero_grad(s.b);
        ag_zero_grad(x0);
    }
    ag_tensor_free(s.w);
    ag_tensor_free(s.b);
    ag_tensor_free(x0);
}

/* Parameter and input gradients of one step, f32 or f64, plain or
 * through a checkpoint with or without the save: the same bits, and the
 * save costs the kept bytes on the tape. */
static void save_same_bits(ag_dtype dt)
{
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    seg s = {param(&rng, dt, 2, (const int64_t[]){64, 32}),
             param(&rng, dt, 1, (const int64_t[]){64}), false};
    ag_tensor *x0 = param(&rng, dt, 2, (const int64_t[]){16, 32});
    size_t esz = ag_dtype_size(dt), peak[3];
    unsigned char *g[3];
    for (int mode = 0; mode < 3; mode++) { /* plain, checkpoint, checkpoint + save */
        s.save = mode == 2;
        ag_tape *t = ag_tape_new();
        ag_tensor *x = ag_mul_scalar(t, x0, 1.0), *y;
        if (mode == 0)
            assert_int_equal(seg_fn(t, 1, &x, 1, &y, &s), AG_OK);
        else
            assert_int_equal(ag_checkpoint(t, seg_fn, &s, 1, &x, 1, &y), AG_OK);
        assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, y, y), AG_ALL, false)), AG_OK);
        peak[mode] = ag_tape_bytes_peak(t);
        const ag_tensor *gs[3] = {ag_grad(s.w), ag_grad(s.b), ag_grad(x0)};
        size_t n = 0, at = 0;
        for (int k = 0; k < 3; k++)
            n += (size_t)ag_numel(gs[k]) * esz;
        g[mode] = malloc(n);
        for (int k = 0; k < 3; k++) {
            memcpy(g[mode] + at, ag_data_const(gs[k]), (size_t)ag_numel(gs[k]) * esz);
            at += (size_t)ag_numel(gs[k]) * esz;
        }
        if (mode > 0)
            assert_memory_equal(g[0], g[mode], n);
        ag_tape_free(t);
        ag_zero_grad(s.w);
        ag_zero_grad(s.b);
        ag_zero_grad(x0);
    }
    print_message("%s: peak tape %zu plain, %zu checkpointed, %zu with the linear kept\n",
                  dt == AG_F64 ? "f64" : "f32", peak[0], peak[1], peak[2]);
    assert_true(peak[2] >= peak[1] + 16 * 64 * esz);
    for (int mode = 0; mode < 3; mode++)
        free(g[mode]);
    ag_tensor_free(s.w);
    ag_tensor_free(s.b);
    ag_tensor_free(x0);
}

static void test_save_same_gradient_bits(void **state)
{
    (void)state;
    save_same_bits(AG_F32);
    save_same_bits(AG_F64);
}

/* A Hessian-vector product through the checkpoint (its rebuild for
 * create_graph copies the kept output too): the same bits as without. */
static void test_save_second_order_same_bits(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 9);
    seg s = {param(&rng, AG_F64, 2, (const int64_t[]){6, 4}),
             param(&rng, AG_F64, 1, (const int64_t[]){6}), true};
    ag_tensor *x0 = param(&rng, AG_F64, 2, (const int64_t[]){3, 4});
    ag_tensor *v[2] = {ag_tensor_uniform(AG_F64, 2, (const int64_t[]){6, 4}, -1, 1, &rng),
                       ag_tensor_uniform(AG_F64, 1, (const int64_t[]){6}, -1, 1, &rng)};
    double hv[2][30];
    for (int ckpt = 0; ckpt < 2; ckpt++) {
        ag_tape *t = ag_tape_new();
        ag_tensor *x = ag_mul_scalar(t, x0, 1.0), *y, *h[2];
        if (ckpt)
            assert_int_equal(ag_checkpoint(t, seg_fn, &s, 1, &x, 1, &y), AG_OK);
        else
            assert_int_equal(seg_fn(t, 1, &x, 1, &y, &s), AG_OK);
        ag_tensor *wrt[2] = {s.w, s.b};
        ag_tensor *root = ag_sum(t, ag_mul(t, y, y), AG_ALL, false);
        assert_int_equal(ag_hvp(t, root, 2, wrt, v, h, false), AG_OK);
        memcpy(hv[ckpt], ag_data(h[0]), 24 * sizeof(double));
        memcpy(hv[ckpt] + 24, ag_data(h[1]), 6 * sizeof(double));
        ag_tape_free(t);
    }
    assert_memory_equal(hv[0], hv[1], sizeof hv[0]);
    ag_tensor_free(s.w);
    ag_tensor_free(s.b);
    ag_tensor_free(x0);
    ag_tensor_free(v[0]);
    ag_tensor_free(v[1]);
}

/* An outer checkpoint around an inner one, each keeping a linear output:
 * the inner's saves stay with the inner, the outer's with the outer. */
typedef struct {
    seg inner;
    ag_tensor *w2;
} nest;

static ag_status outer_fn(ag_tape *t, int n_in, ag_tensor *const *in, int n_out,
                          ag_tensor **out, void *ctx)
{
    (void)n_in;
    (void)n_out;
    nest *c = ctx;
    ag_tensor *h;
    if (ag_checkpoint(t, seg_fn, &c->inner, 1, in, 1, &h) != AG_OK)
        return ag_tape_status(t);
    ag_tensor *z = ag_linear(t, h, c->w2, NULL);
    if (ag_checkpoint_save(t, z) != AG_OK)
        return ag_tape_status(t);
    out[0] = ag_sigmoid(t, z);
    return ag_tape_status(t);
}

static void test_save_nested_same_bits(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 13);
    nest c = {{param(&rng, AG_F32, 2, (const int64_t[]){8, 5}),
               param(&rng, AG_F32, 1, (const int64_t[]){8}), true},
              param(&rng, AG_F32, 2, (const int64_t[]){3, 8})};
    ag_tensor *x0 = param(&rng, AG_F32, 2, (const int64_t[]){4, 5});
    ag_tensor *ps[4] = {c.inner.w, c.inner.b, c.w2, x0};
    float g[2][40 + 8 + 24 + 20];
    for (int ckpt = 0; ckpt < 2; ckpt++) {
        ag_tape *t = ag_tape_new();
        ag_tensor *x = ag_mul_scalar(t, x0, 1.0), *y;
        if (ckpt)
            assert_int_equal(ag_checkpoint(t, outer_fn, &c, 1, &x, 1, &y), AG_OK);
        else
            assert_int_equal(outer_fn(t, 1, &x, 1, &y, &c), AG_OK);
        assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, y, y), AG_ALL, false)), AG_OK);
        size_t at = 0;
        for (int k = 0; k < 4; k++) {
            memcpy(g[ckpt] + at, ag_data_const(ag_grad(ps[k])),
                   (size_t)ag_numel(ps[k]) * sizeof(float));
            at += (size_t)ag_numel(ps[k]);
            ag_zero_grad(ps[k]);
        }
        ag_tape_free(t);
    }
    assert_memory_equal(g[0], g[1], sizeof g[0]);
    for (int k = 0; k < 4; k++)
        ag_tensor_free(ps[k]);
}

/* keeps tanh's output: its backward reads more than its inputs */
static ag_status bad_fn(ag_tape *t, int n_in, ag_tensor *const *in, int n_out, ag_tensor **out,
                        void *ctx)
{
    (void)n_in;
    (void)n_out;
    (void)ctx;
    out[0] = ag_tanh(t, in[0]);
    return ag_checkpoint_save(t, *(bool *)ctx ? in[0] : out[0]);
}

static void test_save_errors(void **state)
{
    (void)state;
    assert_int_equal(ag_checkpoint_save(NULL, NULL), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "ag_checkpoint_save: tape is NULL"));
    ag_rng rng;
    ag_rng_seed(&rng, 7);
    ag_tensor *x0 = param(&rng, AG_F64, 1, (const int64_t[]){3});
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_tanh(t, x0), *y;
    assert_int_equal(ag_checkpoint_save(t, x), AG_OK); /* no checkpoint: nothing to do */
    assert_int_equal(ag_tape_status(t), AG_OK);
    bool input = false;
    assert_int_equal(ag_checkpoint(t, bad_fn, &input, 1, &x, 1, &y), AG_ERR_ARG);
    assert_non_null(strstr(ag_tape_error(t), "is the output of tanh"));
    ag_tape_reset(t);
    x = ag_tanh(t, x0);
    input = true;
    assert_int_equal(ag_checkpoint(t, bad_fn, &input, 1, &x, 1, &y), AG_ERR_ARG);
    assert_non_null(strstr(ag_tape_error(t), "not the output of an op this checkpoint's fn"));
    ag_tape_reset(t);
    assert_int_equal(ag_checkpoint_save(t, NULL), AG_ERR_NULL);
    ag_tape_free(t);
    ag_tensor_free(x0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_save_copies_instead_of_recomputing),
        cmocka_unit_test(test_save_same_gradient_bits),
        cmocka_unit_test(test_save_second_order_same_bits),
        cmocka_unit_test(test_save_nested_same_bits),
        cmocka_unit_test(test_save_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
