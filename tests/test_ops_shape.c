/* test_ops_shape.c — shape ops: forward values worked out by hand, a few
 * backward values, every bad-input error (status and message), recorded
 * derivatives to third order and through many joined inputs.  The
 * gradchecks of every op run from the op table in test_ops.c. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* a persistent f64 tensor 0, 1, 2, ... of the given shape */
static ag_tensor *iota(int nd, const int64_t *shape)
{
    ag_tensor *x = ag_tensor_new(AG_F64, nd, shape);
    for (int64_t i = 0; i < ag_numel(x); i++)
        ag_set(x, i, (double)i);
    return x;
}

static void check_values(const ag_tensor *y, int nd, const int64_t *shape, const double *want,
                         int line)
{
    if (!y)
        fail_msg("line %d: result is NULL", line);
    assert_int_equal(ag_ndim(y), nd);
    for (int i = 0; i < nd; i++)
        if (ag_shape(y)[i] != shape[i])
            fail_msg("line %d: dim %d is %lld, want %lld", line, i, (long long)ag_shape(y)[i],
                     (long long)shape[i]);
    for (int64_t i = 0; i < ag_numel(y); i++)
        if (ag_get(y, i) != want[i])
            fail_msg("line %d: element %lld is %g, want %g", line, (long long)i,
                     ag_get(y, i), want[i]);
}
#define assert_values(y, nd, shape, ...)                                      \
    check_values((y), (nd), (const int64_t[])shape, (const double[])__VA_ARGS__, __LINE__)
#define S(...) {__VA_ARGS__}

/* The op failed with status st and a message containing sub; resets t. */
static void check_error(ag_tape *t, const ag_tensor *y, ag_status st, const char *sub, int line)
{
    if (y)
        fail_msg("line %d: expected an error, got a result", line);
    const char *msg = ag_tape_error(t);
    if (!msg)
        fail_msg("line %d: no error kept on the tape", line);
    if (ag_tape_status(t) != st)
        fail_msg("line %d: status %s, want %s (%s)", line, ag_status_str(ag_tape_status(t)),
                 ag_status_str(st), msg);
    if (!strstr(msg, sub))
        fail_msg("line %d: message \"%s\" lacks \"%s\"", line, msg, sub);
    ag_tape_reset(t);
}
#define assert_error(t, y, st, sub) check_error((t), (y), (st), (sub), __LINE__)

/* ---- reshape, squeeze, unsqueeze ---- */

static void test_reshape_forward_values(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(2, (int64_t[]){2, 3});
    assert_values(ag_reshape(t, x, 2, (int64_t[]){3, 2}), 2, S(3, 2), S(0, 1, 2, 3, 4, 5));
    assert_values(ag_reshape(t, x, 3, (int64_t[]){-1, 1, 2}), 3, S(3, 1, 2),
                  S(0, 1, 2, 3, 4, 5));
    assert_values(ag_reshape(t, x, 1, (int64_t[]){-1}), 1, S(6), S(0, 1, 2, 3, 4, 5));
    ag_tensor *one = iota(2, (int64_t[]){1, 1});
    ag_tensor *s = ag_reshape(t, one, 0, NULL);
    assert_int_equal(ag_ndim(s), 0);
    assert_true(ag_item(s) == 0);
    ag_tensor *e = ag_tensor_new(AG_F64, 2, (int64_t[]){0, 3});
    assert_values(ag_reshape(t, e, 3, (int64_t[]){3, 0, 5}), 3, S(3, 0, 5), S(0));
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(one);
    ag_tensor_free(e);
}

static void test_reshape_bad_inputs(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(2, (int64_t[]){2, 3});
    assert_error(t, ag_reshape(t, x, 2, (int64_t[]){4, 2}), AG_ERR_SHAPE,
                 "ag_reshape: cannot reshape [2,3] (6 elements) into [4,2]");
    assert_error(t, ag_reshape(t, x, 2, (int64_t[]){4, -1}), AG_ERR_SHAPE, "into [4,-1]");
    assert_error(t, ag_reshape(t, x, 2, (int64_t[]){-1, -1}), AG_ERR_ARG, "one dim may be -1");
    assert_error(t, ag_reshape(t, x, 2, (int64_t[]){-2, -3}), AG_ERR_ARG, "dim 0 is -2");
    assert_error(t, ag_reshape(t, x, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 2, 3}),
                 AG_ERR_SHAPE, "ndim 9");
    assert_error(t, ag_reshape(t, x, -1, NULL), AG_ERR_SHAPE, "ndim -1");
    assert_error(t, ag_reshape(t, x, 2, NULL), AG_ERR_ARG, "shape is NULL");
    assert_error(t, ag_reshape(t, x, 3, (int64_t[]){INT64_MAX, INT64_MAX, 2}), AG_ERR_SHAPE,
                 "cannot reshape");
    ag_tensor *e = ag_tensor_new(AG_F64, 1, (int64_t[]){0});
    assert_error(t, ag_reshape(t, e, 2, (int64_t[]){0, -1}), AG_ERR_SHAPE, "cannot reshape");
    assert_error(t, ag_reshape(t, NULL, 1, (int64_t[]){6}), AG_ERR_NULL, "ag_reshape");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(e);
}

static void test_reshape_backward_adds(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(2, (int64_t[]){2, 3});
    ag_set_requires_grad(x, true);
    ag_tensor *w = iota(1, (int64_t[]){6});
    ag_tensor *y = ag_sum(t, ag_mul(t, ag_reshape(t, x, 1, (int64_t[]){6}), w), AG_ALL, false);
    assert_int_equal(ag_backward(t, y), AG_OK);
    assert_values(ag_grad(x), 2, S(2, 3), S(0, 1, 2, 3, 4, 5));
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
}

static void test_squeeze_forward_values(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(4, (int64_t[]){1, 3, 1, 2});
    assert_values(ag_squeeze(t, x, AG_ALL), 2, S(3, 2), S(0, 1, 2, 3, 4, 5));
    assert_values(ag_squeeze(t, x, 0), 3, S(3, 1, 2), S(0, 1, 2, 3, 4, 5));
    assert_values(ag_squeeze(t, x, -2), 3, S(1, 3, 2), S(0, 1, 2, 3, 4, 5));
    ag_tensor *one = iota(2, (int64_t[]){1, 1});
    ag_tensor *s = ag_squeeze(t, one, AG_ALL);
    assert_int_equal(ag_ndim(s), 0);
    assert_int_equal(ag_ndim(ag_squeeze(t, s, 0)), 0); /* 0-d takes axis 0, as torch */
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(one);
}

static void test_squeeze_bad_inputs(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(3, (int64_t[]){2, 1, 3});
    assert_error(t, ag_squeeze(t, x, 2), AG_ERR_SHAPE,
                 "ag_squeeze: dim 2 of [2,1,3] has size 3, not 1");
    assert_error(t, ag_squeeze(t, x, 3), AG_ERR_ARG, "axis 3 out of range for 3 dims");
    assert_error(t, ag_squeeze(t, x, -4), AG_ERR_ARG, "axis -4 out of range");
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_unsqueeze_forward_values(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(2, (int64_t[]){2, 3});
    assert_values(ag_unsqueeze(t, x, 0), 3, S(1, 2, 3), S(0, 1, 2, 3, 4, 5));
    assert_values(ag_unsqueeze(t, x, 1), 3, S(2, 1, 3), S(0, 1, 2, 3, 4, 5));
    assert_values(ag_unsqueeze(t, x, 2), 3, S(2, 3, 1), S(0, 1, 2, 3, 4, 5));
    assert_values(ag_unsqueeze(t, x, -1), 3, S(2, 3, 1), S(0, 1, 2, 3, 4, 5));
    assert_values(ag_unsqueeze(t, x, -3), 3, S(1, 2, 3), S(0, 1, 2, 3, 4, 5));
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_unsqueeze_bad_inputs(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(2, (int64_t[]){2, 3});
    assert_error(t, ag_unsqueeze(t, x, 3), AG_ERR_ARG,
                 "ag_unsqueeze: axis 3 out of range for 2 dims (allowed: -3 to 2)");
    assert_error(t, ag_unsqueeze(t, x, -4), AG_ERR_ARG, "axis -4 out of range");
    ag_tensor *x8 = iota(8, (int64_t[]){1, 1, 1, 1, 1, 1, 2, 1});
    assert_error(t, ag_unsqueeze(t, x8, 0), AG_ERR_SHAPE, "already has 8 dims (at most 8)");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(x8);
}

/* ---- transpose, permute ---- */

static void test_transpose_forward_values(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(2, (int64_t[]){2, 3});
    assert_values(ag_transpose(t, x, 0, 1), 2, S(3, 2), S(0, 3, 1, 4, 2, 5));
    assert_values(ag_transpose(t, x, -1, -2), 2, S(3, 2), S(0, 3, 1, 4, 2, 5));
    assert_values(ag_transpose(t, x, 1, 1), 2, S(2, 3), S(0, 1, 2, 3, 4, 5));
    ag_tensor *y = iota(3, (int64_t[]){2, 2, 3});
    /* y[i][j][k] = 6i + 3j + k; out[k][j][i] */
    assert_values(ag_transpose(t, y, 0, 2), 3, S(3, 2, 2),
                  S(0, 6, 3, 9, 1, 7, 4, 10, 2, 8, 5, 11));
    /* batched 2-D: out[i][k][j] */
    assert_values(ag_transpose(t, y, 1, 2), 3, S(2, 3, 2),
                  S(0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11));
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(y);
}

/* Sizes that are not multiples of the tile, in both dtypes, forward and
 * backward, against the obvious loop. */
static void test_transpose_large_blocked_path(void **state)
{
    (void)state;
    const int64_t B = 3, R = 67, C = 45;
    for (int dt = 0; dt < 2; dt++) {
        ag_tape *t = ag_tape_new();
        ag_tensor *x = ag_tensor_new((ag_dtype)dt, 3, (int64_t[]){B, R, C});
        ag_tensor *g = ag_tensor_new((ag_dtype)dt, 3, (int64_t[]){B, C, R});
        for (int64_t i = 0; i < B * R * C; i++) {
            ag_set(x, i, (double)i);
            ag_set(g, i, (double)(i % 97));
        }
        ag_set_requires_grad(x, true);
        ag_tensor *y = ag_transpose(t, x, 1, 2);
        assert_non_null(y);
        for (int64_t b = 0; b < B; b++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++)
                    assert_true(ag_get(y, (b * C + c) * R + r) == ag_get(x, (b * R + r) * C + c));
        assert_int_equal(ag_backward_seeded(t, y, g), AG_OK);
        const ag_tensor *dx = ag_grad(x);
        for (int64_t b = 0; b < B; b++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++)
                    assert_true(ag_get(dx, (b * R + r) * C + c) == ag_get(g, (b * C + c) * R + r));
        ag_tape_free(t);
        ag_tensor_free(x);
        ag_tensor_free(g);
    }
}

static void test_transpose_bad_axis(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(2, (int64_t[]){2, 3});
    assert_error(t, ag_transpose(t, x, 0, 2), AG_ERR_ARG,
                 "ag_transpose: axis 2 out of range for 2 dims");
    assert_error(t, ag_transpose(t, x, -3, 0), AG_ERR_ARG, "axis -3 out of range");
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_permute_forward_values(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(3, (int64_t[]){2, 3, 2}); /* x[i][j][k] = 6i + 2j + k */
    /* out[j][k][i] */
    assert_values(ag_permute(t, x, (int[]){1, 2, 0}), 3, S(3, 2, 2),
                  S(0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11));
    /* out[k][i][j], negative entries count from the end */
    assert_values(ag_permute(t, x, (int[]){-1, 0, 1}), 3, S(2, 2, 3),
                  S(0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11));
    assert_values(ag_permute(t, x, (int[]){0, 1, 2}), 3, S(2, 3, 2),
                  S(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11));
    ag_tensor *f = tg_convert(x, AG_F32);
    assert_values(ag_permute(t, f, (int[]){2, 1, 0}), 3, S(2, 3, 2),
                  S(0, 6, 2, 8, 4, 10, 1, 7, 3, 9, 5, 11));
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(f);
}

/* Random shapes (size-1 dims included) and permutations against the index
 * arithmetic: every merge, row, tile and odometer path of the mover. */
static void test_permute_random_against_naive(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 42);
    for (int trial = 0; trial < 300; trial++) {
        int nd = (int)ag_rng_below(&rng, 6), perm[AG_MAX_DIMS];
        int64_t shape[AG_MAX_DIMS], out[AG_MAX_DIMS], st[AG_MAX_DIMS];
        for (int i = 0; i < nd; i++) {
            shape[i] = 1 + (int64_t)ag_rng_below(&rng, trial % 3 || nd > 3 ? 4 : 40);
            perm[i] = i;
        }
        for (int i = nd - 1; i > 0; i--) {
            int j = (int)ag_rng_below(&rng, (uint64_t)i + 1), tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
        }
        for (int i = nd - 1, s = 1; i >= 0; i--) {
            st[i] = s;
            s *= (int)shape[i];
        }
        for (int i = 0; i < nd; i++)
            out[i] = shape[perm[i]];
        ag_dtype dt = trial % 2 ? AG_F32 : AG_F64;
        ag_tensor *x0 = iota(nd, shape), *x = tg_convert(x0, dt);
        ag_tensor *g = ag_tensor_new(dt, nd, out);
        ag_tensor_free(x0);
        for (int64_t i = 0; i < ag_numel(g); i++)
            ag_set(g, i, (double)(3 * i + 1));
        ag_set_requires_grad(x, true);
        ag_tape *t = ag_tape_new();
        ag_tensor *y = ag_permute(t, x, perm);
        assert_int_equal(ag_backward_seeded(t, y, g), AG_OK);
        int64_t idx[AG_MAX_DIMS] = {0};
        for (int64_t o = 0; o < ag_numel(y); o++) {
            int64_t in = 0; /* input offset of output index idx */
            for (int i = 0; i < nd; i++)
                in += idx[i] * st[perm[i]];
            if (ag_get(y, o) != ag_get(x, in) || ag_get(ag_grad(x), in) != ag_get(g, o))
                fail_msg("trial %d: mismatch at output %lld", trial, (long long)o);
            for (int i = nd - 1; i >= 0 && ++idx[i] == out[i]; i--)
                idx[i] = 0;
        }
        ag_tape_free(t);
        ag_tensor_free(x);
        ag_tensor_free(g);
    }
}

static void test_permute_bad_perm(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(3, (int64_t[]){2, 3, 4});
    assert_error(t, ag_permute(t, x, (int[]){0, 0, 1}), AG_ERR_ARG,
                 "ag_permute: perm [0,0,1] is not a permutation of the 3 dims of [2,3,4]");
    assert_error(t, ag_permute(t, x, (int[]){0, 1, 3}), AG_ERR_ARG, "perm [0,1,3]");
    assert_error(t, ag_permute(t, x, (int[]){-4, 1, 2}), AG_ERR_ARG, "perm [-4,1,2]");
    assert_error(t, ag_permute(t, x, (int[]){2, 1, -1}), AG_ERR_ARG, "not a permutation");
    assert_error(t, ag_permute(t, x, NULL), AG_ERR_ARG, "perm is NULL");
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* ---- expand ---- */

static void test_expand_forward_values(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *c = iota(2, (int64_t[]){2, 1});
    assert_values(ag_expand(t, c, 3, (int64_t[]){2, 2, 3}), 3, S(2, 2, 3),
                  S(0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1));
    ag_tensor *r = iota(1, (int64_t[]){3});
    assert_values(ag_expand(t, r, 2, (int64_t[]){2, -1}), 2, S(2, 3), S(0, 1, 2, 0, 1, 2));
    ag_tensor *s = ag_tensor_full(AG_F64, 0, NULL, 7);
    assert_values(ag_expand(t, s, 2, (int64_t[]){1, 2}), 2, S(1, 2), S(7, 7));
    assert_values(ag_expand(t, c, 2, (int64_t[]){2, 0}), 2, S(2, 0), S(0));
    ag_tape_free(t);
    ag_tensor_free(c);
    ag_tensor_free(r);
    ag_tensor_free(s);
}

static void test_expand_backward_sums(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *c = iota(2, (int64_t[]){2, 1});
    ag_set_requires_grad(c, true);
    ag_tensor *y = ag_expand(t, c, 3, (int64_t[]){3, 2, 4});
    ag_tensor *g = iota(3, (int64_t[]){3, 2, 4});
    assert_int_equal(ag_backward_seeded(t, y, g), AG_OK);
    /* dc[i] = sum over b, k of g[b][i][k] = sum of (8b + 4i + k) = 114 + 48i */
    assert_values(ag_grad(c), 2, S(2, 1), S(114, 162));
    ag_tape_free(t);
    ag_tensor_free(c);
    ag_tensor_free(g);
}

static void test_expand_bad_shape(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(2, (int64_t[]){2, 3});
    assert_error(t, ag_expand(t, x, 2, (int64_t[]){4, 3}), AG_ERR_SHAPE,
                 "ag_expand: cannot broadcast [2,3] to [4,3] (dim 0: 2 vs 4)");
    assert_error(t, ag_expand(t, x, 1, (int64_t[]){3}), AG_ERR_SHAPE, "fewer dims");
    assert_error(t, ag_expand(t, x, 3, (int64_t[]){-1, 2, 3}), AG_ERR_SHAPE,
                 "cannot broadcast [2,3] to [-1,2,3]");
    assert_error(t, ag_expand(t, x, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 2, 3}), AG_ERR_SHAPE,
                 "ndim 9");
    assert_error(t, ag_expand(t, x, 3, (int64_t[]){INT64_MAX / 4, 2, 3}), AG_ERR_SHAPE,
                 "too large");
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* ---- slice ---- */

static void test_slice_forward_values(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *v = iota(1, (int64_t[]){7});
    assert_values(ag_slice(t, v, 0, 1, 6, 2), 1, S(3), S(1, 3, 5));
    assert_values(ag_slice(t, v, 0, -3, 7, 1), 1, S(3), S(4, 5, 6));
    assert_values(ag_slice(t, v, -1, 0, -1, 3), 1, S(2), S(0, 3));
    assert_values(ag_slice(t, v, 0, 2, 3, 10), 1, S(1), S(2));
    assert_values(ag_slice(t, v, 0, 5, 2, 1), 1, S(0), S(0)); /* empty, as v[5:2] */
    assert_values(ag_slice(t, v, 0, 7, 7, 1), 1, S(0), S(0));
    ag_tensor *m = iota(2, (int64_t[]){3, 4});
    assert_values(ag_slice(t, m, 1, 1, 4, 2), 2, S(3, 2), S(1, 3, 5, 7, 9, 11));
    assert_values(ag_slice(t, m, 0, -2, 3, 1), 2, S(2, 4), S(4, 5, 6, 7, 8, 9, 10, 11));
    ag_tape_free(t);
    ag_tensor_free(v);
    ag_tensor_free(m);
}

static void test_slice_backward_scatters(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *m = iota(2, (int64_t[]){2, 5});
    ag_set_requires_grad(m, true);
    ag_tensor *y = ag_slice(t, m, 1, 0, 5, 2);
    ag_tensor *g = ag_tensor_from_f64(2, (int64_t[]){2, 3}, (double[]){1, 2, 3, 4, 5, 6});
    assert_int_equal(ag_backward_seeded(t, y, g), AG_OK);
    assert_values(ag_grad(m), 2, S(2, 5), S(1, 0, 2, 0, 3, 4, 0, 5, 0, 6));
    ag_tape_free(t);
    ag_tensor_free(m);
    ag_tensor_free(g);
}

static void test_slice_bad_inputs(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *m = iota(2, (int64_t[]){3, 4});
    assert_error(t, ag_slice(t, m, 1, 0, 5, 1), AG_ERR_ARG,
                 "ag_slice: start 0, stop 5 out of range for axis 1 of [3,4] (size 4");
    assert_error(t, ag_slice(t, m, 0, 4, 4, 1), AG_ERR_ARG, "start 4, stop 4 out of range");
    assert_error(t, ag_slice(t, m, 0, -4, 2, 1), AG_ERR_ARG, "start -4, stop 2");
    assert_error(t, ag_slice(t, m, 0, 0, -5, 1), AG_ERR_ARG, "stop -5");
    assert_error(t, ag_slice(t, m, 0, INT64_MIN, INT64_MAX, 1), AG_ERR_ARG, "out of range");
    assert_error(t, ag_slice(t, m, 0, 0, 2, 0), AG_ERR_ARG, "ag_slice: step 0 must be >= 1");
    assert_error(t, ag_slice(t, m, 2, 0, 1, 1), AG_ERR_ARG,
                 "ag_slice: axis 2 out of range for 2 dims");
    ag_tensor *s = ag_tensor_new(AG_F64, 0, NULL);
    assert_error(t, ag_slice(t, s, 0, 0, 1, 1), AG_ERR_ARG, "out of range for 0 dims");
    ag_tape_free(t);
    ag_tensor_free(m);
    ag_tensor_free(s);
}

static void test_unslice_values(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *v = ag_tensor_from_f64(1, (int64_t[]){3}, (double[]){1, 2, 3});
    assert_values(ag_unslice(t, v, 0, 7, 1, 2), 1, S(7), S(0, 1, 0, 2, 0, 3, 0));
    assert_values(ag_unslice(t, v, -1, 5, -3, 1), 1, S(5), S(0, 0, 1, 2, 3));
    assert_values(ag_unslice(t, v, 0, 3, 0, 1), 1, S(3), S(1, 2, 3));
    ag_tensor *m = iota(2, (int64_t[]){2, 2});
    assert_values(ag_unslice(t, m, 1, 5, 0, 4), 2, S(2, 5), S(0, 0, 0, 0, 1, 2, 0, 0, 0, 3));
    assert_values(ag_unslice(t, m, 0, 3, 1, 1), 2, S(3, 2), S(0, 0, 0, 1, 2, 3));
    ag_tensor *one = ag_tensor_from_f64(1, (int64_t[]){1}, (double[]){4});
    assert_values(ag_unslice(t, one, 0, 3, 2, 100), 1, S(3), S(0, 0, 4));
    ag_tensor *e = ag_tensor_new(AG_F64, 1, (int64_t[]){0});
    assert_values(ag_unslice(t, e, 0, 2, 2, 1), 1, S(2), S(0, 0));
    /* slice undoes it */
    assert_values(ag_slice(t, ag_unslice(t, v, 0, 8, 1, 3), 0, 1, 8, 3), 1, S(3), S(1, 2, 3));
    /* backward gathers g at the places */
    ag_set_requires_grad(m, true);
    ag_tensor *g = iota(2, (int64_t[]){2, 5});
    assert_int_equal(ag_backward_seeded(t, ag_unslice(t, m, 1, 5, 1, 3), g), AG_OK);
    assert_values(ag_grad(m), 2, S(2, 2), S(1, 4, 6, 9));
    ag_tape_free(t);
    ag_tensor_free(v);
    ag_tensor_free(m);
    ag_tensor_free(one);
    ag_tensor_free(e);
    ag_tensor_free(g);
}

static void test_unslice_bad_inputs(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *m = iota(2, (int64_t[]){2, 3});
    assert_error(t, ag_unslice(t, m, 1, 6, 1, 3), AG_ERR_ARG,
                 "ag_unslice: 3 elements (axis 1 of [2,3]) from start 1 by step 3 do not "
                 "fit in size 6");
    assert_error(t, ag_unslice(t, m, 1, 2, 0, 1), AG_ERR_ARG, "do not fit in size 2");
    assert_error(t, ag_unslice(t, m, 0, 4, -5, 1), AG_ERR_ARG, "from start -5");
    assert_error(t, ag_unslice(t, m, 0, -1, 0, 1), AG_ERR_ARG, "size -1");
    assert_error(t, ag_unslice(t, m, 0, 4, 0, 0), AG_ERR_ARG, "ag_unslice: step 0 must be >= 1");
    assert_error(t, ag_unslice(t, m, 0, INT64_MAX, 0, 1), AG_ERR_SHAPE, "too large");
    assert_error(t, ag_unslice(t, m, 2, 4, 0, 1), AG_ERR_ARG,
                 "ag_unslice: axis 2 out of range for 2 dims");
    assert_error(t, ag_unslice(t, NULL, 0, 4, 0, 1), AG_ERR_NULL, "ag_unslice");
    ag_tape_free(t);
    ag_tensor_free(m);
}

/* ---- concat, stack ---- */

static void test_concat_forward_values(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = iota(2, (int64_t[]){2, 2});
    ag_tensor *b = ag_tensor_from_f64(2, (int64_t[]){2, 1}, (double[]){8, 9});
    ag_tensor *c = ag_tensor_from_f64(2, (int64_t[]){1, 2}, (double[]){5, 6});
    assert_values(ag_concat(t, (ag_tensor *[]){a, b, a}, 3, 1), 2, S(2, 5),
                  S(0, 1, 8, 0, 1, 2, 3, 9, 2, 3));
    assert_values(ag_concat(t, (ag_tensor *[]){c, a}, 2, -2), 2, S(3, 2), S(5, 6, 0, 1, 2, 3));
    assert_values(ag_concat(t, (ag_tensor *[]){a}, 1, 0), 2, S(2, 2), S(0, 1, 2, 3));
    ag_tensor *e = ag_tensor_new(AG_F64, 2, (int64_t[]){0, 2});
    assert_values(ag_concat(t, (ag_tensor *[]){e, c, e}, 3, 0), 2, S(1, 2), S(5, 6));
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(c);
    ag_tensor_free(e);
}

static void test_concat_backward_splits(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = iota(2, (int64_t[]){2, 1}), *b = iota(2, (int64_t[]){2, 2});
    ag_set_requires_grad(a, true);
    ag_set_requires_grad(b, true);
    /* a appears twice: its gradient adds both places */
    ag_tensor *y = ag_concat(t, (ag_tensor *[]){a, b, a}, 3, 1);
    ag_tensor *g = iota(2, (int64_t[]){2, 4});
    assert_int_equal(ag_backward_seeded(t, y, g), AG_OK);
    assert_values(ag_grad(a), 2, S(2, 1), S(0 + 3, 4 + 7));
    assert_values(ag_grad(b), 2, S(2, 2), S(1, 2, 5, 6));
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(g);
}

static void test_concat_bad_inputs(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = iota(2, (int64_t[]){2, 3}), *b = iota(2, (int64_t[]){3, 2});
    ag_tensor *c = iota(3, (int64_t[]){2, 3, 1}), *s = ag_tensor_new(AG_F64, 0, NULL);
    ag_tensor *f = ag_tensor_new(AG_F32, 2, (int64_t[]){2, 3});
    assert_error(t, ag_concat(t, (ag_tensor *[]){a, a, b}, 3, 0), AG_ERR_SHAPE,
                 "ag_concat: tensors[2] is [3,2] but tensors[0] is [2,3] (all dims but "
                 "axis 0 must agree)");
    assert_error(t, ag_concat(t, (ag_tensor *[]){a, c}, 2, 1), AG_ERR_SHAPE,
                 "tensors[1] is [2,3,1] but tensors[0] is [2,3]");
    assert_error(t, ag_concat(t, (ag_tensor *[]){a, f}, 2, 0), AG_ERR_DTYPE,
                 "ag_concat: tensors[1] is f32 but tensors[0] is f64");
    assert_error(t, ag_concat(t, (ag_tensor *[]){a, a}, 2, 2), AG_ERR_ARG,
                 "ag_concat: axis 2 out of range for 2 dims");
    assert_error(t, ag_concat(t, (ag_tensor *[]){s, s}, 2, 0), AG_ERR_SHAPE, "0-d");
    assert_error(t, ag_concat(t, (ag_tensor *[]){a}, 0, 0), AG_ERR_ARG,
                 "needs at least one tensor");
    assert_error(t, ag_concat(t, NULL, 2, 0), AG_ERR_ARG, "needs at least one tensor");
    assert_error(t, ag_concat(t, (ag_tensor *[]){a, NULL}, 2, 0), AG_ERR_NULL, "ag_concat");
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(c);
    ag_tensor_free(s);
    ag_tensor_free(f);
}

static void test_stack_forward_values(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = iota(2, (int64_t[]){2, 2});
    ag_tensor *b = ag_tensor_from_f64(2, (int64_t[]){2, 2}, (double[]){5, 6, 7, 8});
    assert_values(ag_stack(t, (ag_tensor *[]){a, b}, 2, 0), 3, S(2, 2, 2),
                  S(0, 1, 2, 3, 5, 6, 7, 8));
    assert_values(ag_stack(t, (ag_tensor *[]){a, b}, 2, 1), 3, S(2, 2, 2),
                  S(0, 1, 5, 6, 2, 3, 7, 8));
    assert_values(ag_stack(t, (ag_tensor *[]){a, b, a}, 3, -1), 3, S(2, 2, 3),
                  S(0, 5, 0, 1, 6, 1, 2, 7, 2, 3, 8, 3));
    ag_tensor *s = ag_tensor_full(AG_F64, 0, NULL, 4);
    assert_values(ag_stack(t, (ag_tensor *[]){s, s}, 2, 0), 1, S(2), S(4, 4));
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(s);
}

static void test_stack_bad_inputs(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *a = iota(2, (int64_t[]){2, 3}), *b = iota(2, (int64_t[]){3, 2});
    ag_tensor *x8 = iota(8, (int64_t[]){1, 1, 1, 1, 1, 1, 2, 1});
    assert_error(t, ag_stack(t, (ag_tensor *[]){a, b}, 2, 0), AG_ERR_SHAPE,
                 "ag_stack: tensors[1] is [3,2] but tensors[0] is [2,3]");
    assert_error(t, ag_stack(t, (ag_tensor *[]){a, a}, 2, 3), AG_ERR_ARG,
                 "ag_stack: axis 3 out of range for 2 dims (allowed: -3 to 2)");
    assert_error(t, ag_stack(t, (ag_tensor *[]){a, a}, 2, -4), AG_ERR_ARG, "axis -4");
    assert_error(t, ag_stack(t, (ag_tensor *[]){x8, x8}, 2, 0), AG_ERR_SHAPE,
                 "already have 8 dims");
    assert_error(t, ag_stack(t, NULL, 0, 0), AG_ERR_ARG, "needs at least one tensor");
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(x8);
}

/* ---- pad ---- */

static void test_pad_forward_values(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *m = iota(2, (int64_t[]){2, 2});
    assert_values(ag_pad(t, m, (int64_t[]){1, 0, 0, 2}, -1), 2, S(3, 4),
                  S(-1, -1, -1, -1, 0, 1, -1, -1, 2, 3, -1, -1));
    assert_values(ag_pad(t, m, (int64_t[]){0, 0, 0, 0}, 9), 2, S(2, 2), S(0, 1, 2, 3));
    ag_tensor *f = ag_tensor_from_f32(1, (int64_t[]){2}, (float[]){1.5f, 2.5f});
    assert_values(ag_pad(t, f, (int64_t[]){2, 1}, 0.25), 1, S(5), S(0.25, 0.25, 1.5, 2.5, 0.25));
    ag_tensor *e = ag_tensor_new(AG_F64, 1, (int64_t[]){0});
    assert_values(ag_pad(t, e, (int64_t[]){1, 1}, 3), 1, S(2), S(3, 3));
    ag_tensor *s = ag_tensor_full(AG_F64, 0, NULL, 4);
    assert_values(ag_pad(t, s, NULL, 0), 0, S(0), S(4));
    ag_tape_free(t);
    ag_tensor_free(m);
    ag_tensor_free(f);
    ag_tensor_free(e);
    ag_tensor_free(s);
}

static void test_pad_backward_crops(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *m = iota(2, (int64_t[]){2, 2});
    ag_set_requires_grad(m, true);
    ag_tensor *y = ag_pad(t, m, (int64_t[]){1, 0, 1, 1}, 5);
    ag_tensor *g = iota(2, (int64_t[]){3, 4});
    assert_int_equal(ag_backward_seeded(t, y, g), AG_OK);
    assert_values(ag_grad(m), 2, S(2, 2), S(5, 6, 9, 10));
    ag_tape_free(t);
    ag_tensor_free(m);
    ag_tensor_free(g);
}

static void test_pad_bad_inputs(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *m = iota(2, (int64_t[]){2, 2});
    assert_error(t, ag_pad(t, m, (int64_t[]){0, 0, 0, -1}, 0), AG_ERR_ARG,
                 "ag_pad: pad[3] = -1 is negative (after dim 1 of [2,2])");
    assert_error(t, ag_pad(t, m, (int64_t[]){-2, 0, 0, 0}, 0), AG_ERR_ARG,
                 "pad[0] = -2 is negative (before dim 0");
    assert_error(t, ag_pad(t, m, NULL, 0), AG_ERR_ARG, "ag_pad: pad is NULL");
    assert_error(t, ag_pad(t, m, (int64_t[]){INT64_MAX, 0, 0, 0}, 0), AG_ERR_SHAPE,
                 "too large");
    assert_error(t, ag_pad(t, m, (int64_t[]){INT64_MAX / 16, 0, INT64_MAX / 16, 0}, 0),
                 AG_ERR_SHAPE, "too large");
    ag_tape_free(t);
    ag_tensor_free(m);
}

/* ---- all ops ---- */

static void test_shape_ops_propagate_null(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(2, (int64_t[]){2, 3});
    ag_tensor *bad = ag_reshape(t, x, 1, (int64_t[]){7});
    assert_null(bad);
    /* later ops given NULL return NULL and keep the first error */
    assert_null(ag_transpose(t, bad, 0, 1));
    assert_null(ag_pad(t, ag_unsqueeze(t, bad, 0), (int64_t[]){1, 1}, 0));
    assert_null(ag_concat(t, (ag_tensor *[]){x, bad}, 2, 0));
    assert_int_equal(ag_tape_status(t), AG_ERR_SHAPE);
    assert_non_null(strstr(ag_tape_error(t), "ag_reshape"));
    assert_null(ag_squeeze(NULL, x, 0));
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* Without a tensor that requires grad nothing is recorded; a chain of
 * shape ops passes the gradient through every one of them. */
static void test_shape_ops_chain_gradient(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = iota(2, (int64_t[]){2, 3});
    ag_tensor *y = ag_stack(t, (ag_tensor *[]){x, x}, 2, 0);
    assert_non_null(y);
    assert_int_equal(ag_tape_entries(t), 0);
    ag_set_requires_grad(x, true);
    y = ag_transpose(t, ag_unsqueeze(t, x, 0), 0, 2);                 /* [3,2,1] */
    y = ag_squeeze(t, ag_pad(t, y, (int64_t[]){0, 1, 1, 0, 0, 0}, 0), -1); /* [4,3] */
    y = ag_slice(t, ag_expand(t, y, 3, (int64_t[]){2, 4, 3}), 1, 1, 4, 1); /* [2,3,3] */
    y = ag_reshape(t, ag_permute(t, y, (int[]){2, 0, 1}), 1, (int64_t[]){-1});
    y = ag_sum(t, ag_concat(t, (ag_tensor *[]){y, y}, 2, 0), AG_ALL, false);
    assert_int_equal(ag_backward(t, y), AG_OK);
    /* each x element shows up in 2 (expand) x 2 (concat) places, except
     * x[*][0] (row 0 of the transposed [3,2]) that the slice drops */
    assert_values(ag_grad(x), 2, S(2, 3), S(0, 4, 4, 0, 4, 4));
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* ---- recorded derivatives ---- */

/* Every shape op on x [2,3], joined into one vector h [38] in which each
 * element is an element of x, a pad value (0.5) or an unslice zero. */
static ag_tensor *compose_all(ag_tape *t, ag_tensor *x)
{
    ag_tensor *a = ag_transpose(t, x, 0, 1);                               /* [3,2] */
    ag_tensor *b = ag_pad(t, a, (int64_t[]){1, 0, 0, 1}, 0.5);             /* [4,3] */
    ag_tensor *c = ag_slice(t, b, 0, 1, 4, 2);                /* rows 1, 3: [2,3] */
    ag_tensor *d = ag_permute(t, ag_stack(t, (ag_tensor *[]){x, c}, 2, 0),
                              (int[]){2, 0, 1});                           /* [3,2,2] */
    ag_tensor *e = ag_expand(t, ag_unsqueeze(t, x, 0), 3, (int64_t[]){2, 2, 3});
    ag_tensor *f = ag_squeeze(t, ag_reshape(t, x, 3, (int64_t[]){1, 2, 3}), 0);
    ag_tensor *g = ag_unslice(t, f, 1, 7, 0, 3);                           /* [2,7] */
    int64_t flat = -1;
    ag_tensor *parts[] = {ag_reshape(t, d, 1, &flat), ag_reshape(t, e, 1, &flat),
                          ag_reshape(t, g, 1, &flat)};
    return ag_concat(t, parts, 3, 0);
}

/* L = sum_j w_j h_j^3, so with W_i = sum of w_j over the places j of x_i
 * in h: dL/dx_i = 3 W_i x_i^2, its gradient summed 6 W_i x_i, and that
 * summed 6 W_i, each by a recorded gradient of the one before. */
static void test_shape_ops_third_order(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_tensor_from_f64(2, (int64_t[]){2, 3},
                                      (double[]){0.7, -1.3, 0.4, 1.1, -0.6, 1.9});
    ag_tensor *mark = ag_tensor_new(AG_F64, 2, (int64_t[]){2, 3});
    for (int i = 0; i < 6; i++)
        ag_set(mark, i, 10 + i); /* finds where each x_i lands */
    ag_tensor *hm = compose_all(t, mark);
    assert_int_equal(ag_numel(hm), 38);
    ag_tensor *w = ag_tensor_new(AG_F64, 1, (int64_t[]){38});
    double W[6] = {0};
    for (int j = 0; j < 38; j++) {
        ag_set(w, j, 1 + 0.125 * (j % 7) - 0.25 * (j % 3));
        double v = ag_get(hm, j);
        if (v >= 10)
            W[(int)(v - 10 + 0.5)] += ag_get(w, j);
    }
    ag_set_requires_grad(x, true);
    ag_tensor *h = compose_all(t, x);
    ag_tensor *g = ag_sum(t, ag_mul(t, w, ag_mul(t, h, ag_mul(t, h, h))), AG_ALL, false);
    double want[3][6];
    for (int i = 0; i < 6; i++) {
        double xi = ag_get(x, i);
        want[0][i] = 3 * W[i] * xi * xi;
        want[1][i] = 6 * W[i] * xi;
        want[2][i] = 6 * W[i];
    }
    for (int order = 0; order < 3; order++) {
        if (order > 0)
            g = ag_sum(t, g, AG_ALL, false);
        assert_int_equal(ag_gradients(t, g, NULL, 1, &x, &g, true), AG_OK);
        double got[6];
        for (int i = 0; i < 6; i++)
            got[i] = ag_get(g, i);
        assert_doubles_close(got, want[order], 6, 1e-12, 1e-12);
    }
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(mark);
    ag_tensor_free(w);
}

/* concat and stack of more inputs than the sweeps keep on the stack (16):
 * L = sum(concat^3) + sum(stack^3) = 2 sum x^3 per input, so dL/dx = 6x^2
 * (fast and recorded alike) and the gradient of its sum is 12x. */
static void test_join_many_inputs_second_order(void **state)
{
    (void)state;
    enum { N = 40 };
    ag_tape *t = ag_tape_new();
    ag_tensor *xs[N], *g[N], *fast[N], *sum = NULL;
    for (int i = 0; i < N; i++) {
        xs[i] = ag_tensor_new(AG_F64, 2, (int64_t[]){2, 3});
        for (int k = 0; k < 6; k++)
            ag_set(xs[i], k, 0.05 * (i + 1) - 0.3 * k);
        ag_set_requires_grad(xs[i], true);
    }
    ag_tensor *c = ag_concat(t, xs, N, 1), *s = ag_stack(t, xs, N, -2);
    ag_tensor *l = ag_add(t, ag_sum(t, ag_mul(t, c, ag_mul(t, c, c)), AG_ALL, false),
                          ag_sum(t, ag_mul(t, s, ag_mul(t, s, s)), AG_ALL, false));
    assert_int_equal(ag_gradients(t, l, NULL, N, xs, fast, false), AG_OK);
    assert_int_equal(ag_gradients(t, l, NULL, N, xs, g, true), AG_OK);
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 6; k++) {
            double x = ag_get(xs[i], k);
            assert_true(fabs(ag_get(g[i], k) - 6 * x * x) <= 1e-12);
            assert_true(ag_get(fast[i], k) == ag_get(g[i], k));
        }
        ag_tensor *si = ag_sum(t, g[i], AG_ALL, false);
        sum = sum ? ag_add(t, sum, si) : si;
    }
    assert_int_equal(ag_gradients(t, sum, NULL, N, xs, g, false), AG_OK);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 6; k++)
            assert_true(fabs(ag_get(g[i], k) - 12 * ag_get(xs[i], k)) <= 1e-12);
    ag_tape_free(t);
    for (int i = 0; i < N; i++)
        ag_tensor_free(xs[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reshape_forward_values),
        cmocka_unit_test(test_reshape_bad_inputs),
        cmocka_unit_test(test_reshape_backward_adds),
        cmocka_unit_test(test_squeeze_forward_values),
        cmocka_unit_test(test_squeeze_bad_inputs),
        cmocka_unit_test(test_unsqueeze_forward_values),
        cmocka_unit_test(test_unsqueeze_bad_inputs),
        cmocka_unit_test(test_transpose_forward_values),
        cmocka_unit_test(test_transpose_large_blocked_path),
        cmocka_unit_test(test_transpose_bad_axis),
        cmocka_unit_test(test_permute_forward_values),
        cmocka_unit_test(test_permute_random_against_naive),
        cmocka_unit_test(test_permute_bad_perm),
        cmocka_unit_test(test_expand_forward_values),
        cmocka_unit_test(test_expand_backward_sums),
        cmocka_unit_test(test_expand_bad_shape),
        cmocka_unit_test(test_slice_forward_values),
        cmocka_unit_test(test_slice_backward_scatters),
        cmocka_unit_test(test_slice_bad_inputs),
        cmocka_unit_test(test_unslice_values),
        cmocka_unit_test(test_unslice_bad_inputs),
        cmocka_unit_test(test_concat_forward_values),
        cmocka_unit_test(test_concat_backward_splits),
        cmocka_unit_test(test_concat_bad_inputs),
        cmocka_unit_test(test_stack_forward_values),
        cmocka_unit_test(test_stack_bad_inputs),
        cmocka_unit_test(test_pad_forward_values),
        cmocka_unit_test(test_pad_backward_crops),
        cmocka_unit_test(test_pad_bad_inputs),
        cmocka_unit_test(test_shape_ops_propagate_null),
        cmocka_unit_test(test_shape_ops_chain_gradient),
        cmocka_unit_test(test_shape_ops_third_order),
        cmocka_unit_test(test_join_many_inputs_second_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
