/* test_ops_attention_qkv.c — ag_attention_qkv beyond the op table
 * (gradcheck, gradgradcheck and the PyTorch fixtures live in test_ops and
 * test_fixtures): the same bits as ag_attention on the heads split out by
 * reshape, permute and slice, forward and gradient, on block-crossing and
 * GPT shapes, both dtypes, 1 and 2 threads; nn_multihead_attention's
 * self-attention through it equal to its general path; the errors. */
#include "test_util.h"
#include "tapegrad.h"

#include <math.h>
#include <string.h>

#define S(...) ((const int64_t[]){__VA_ARGS__})

/* The heads of qkv [N, T, 3HD] split out as ag_attention takes them,
 * attention, and the heads merged back: [N, T, HD]. */
static ag_tensor *by_heads(ag_tape *t, ag_tensor *qkv, int64_t H, ag_tensor *mask, bool causal,
                           double scale)
{
    const int64_t *s = ag_shape(qkv);
    int64_t N = s[0], T = s[1], D = s[2] / 3 / H;
    ag_tensor *h = ag_permute(t, ag_reshape(t, qkv, 5, S(N, T, 3, H, D)),
                              (const int[]){2, 0, 3, 1, 4});        /* [3, N, H, T, D] */
    ag_tensor *p[3];
    assert_int_equal(ag_split(t, h, 3, S(1, 1, 1), 0, p), AG_OK);
    for (int i = 0; i < 3; i++)
        p[i] = ag_squeeze(t, p[i], 0);
    ag_tensor *o = ag_attention(t, p[0], p[1], p[2], mask, causal, scale); /* [N, H, T, D] */
    return ag_reshape(t, ag_permute(t, o, (const int[]){0, 2, 1, 3}), 3, S(N, T, H * D));
}

/* Output and qkv's gradient (seeded by w), copied out. */
static void run(bool packed, ag_tensor *qkv, int64_t H, ag_tensor *mask, bool causal,
                ag_tensor *w, ag_tensor **out)
{
    ag_zero_grad(qkv);
    ag_tape *t = ag_tape_new();
    ag_tensor *o = packed ? ag_attention_qkv(t, qkv, H, mask, causal, 0.4)
                          : by_heads(t, qkv, H, mask, causal, 0.4);
    assert_non_null(o);
    assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, o, w), AG_ALL, false)), AG_OK);
    out[0] = ag_tensor_clone(o);
    out[1] = ag_tensor_clone(ag_grad(qkv));
    ag_tape_free(t);
}

static void test_qkv_equals_attention_on_heads(void **state)
{
    (void)state;
    static const struct {
        int64_t n, t, h, d;
        bool causal, mask;
    } cases[] = {{12, 64, 4, 32, true, false},   /* the GPT's */
                 {2, 70, 3, 8, true, true},      /* query blocks of 32 and 6 */
                 {3, 65, 2, 5, false, true},     /* blocks of 64 and 1 */
                 {1, 9, 1, 4, false, false}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int dt = 0; dt < 2; dt++) {
            ag_rng rng;
            ag_rng_seed(&rng, 70 + c);
            int64_t n = cases[c].n, T = cases[c].t, h = cases[c].h, C = h * cases[c].d;
            ag_tensor *qkv = ag_tensor_uniform((ag_dtype)dt, 3, S(n, T, 3 * C), -1.5, 1.5, &rng);
            ag_set_requires_grad(qkv, true);
            ag_tensor *w = ag_tensor_normal((ag_dtype)dt, 3, S(n, T, C), 0, 1, &rng);
            ag_tensor *m = NULL;
            if (cases[c].mask) { /* (N, 1, 1, T): padding of the last keys */
                m = ag_tensor_normal((ag_dtype)dt, 4, S(n, 1, 1, T), 0, 1, &rng);
                for (int64_t i = 0; i < n; i++)
                    for (int64_t j = T - 1 - 2 * i; j < T; j++)
                        ag_set(m, i * T + j, -INFINITY);
            }
            ag_tensor *want[2], *one[2], *two[2];
            run(false, qkv, h, m, cases[c].causal, w, want);
            ag_set_num_threads(1);
            run(true, qkv, h, m, cases[c].causal, w, one);
            ag_set_num_threads(2);
            run(true, qkv, h, m, cases[c].causal, w, two);
            ag_set_num_threads(0);
            for (int i = 0; i < 2; i++) {
                tg_assert_same_bits(one[i], want[i]);
                tg_assert_same_bits(two[i], want[i]);
                ag_tensor_free(want[i]);
                ag_tensor_free(one[i]);
                ag_tensor_free(two[i]);
            }
            ag_tensor_free(qkv);
            ag_tensor_free(w);
            ag_tensor_free(m);
        }
}

/* Self-attention (query = key = value, batch_first) takes ag_attention_qkv;
 * the same layer given a copy of the input as key and value takes the
 * general path: the same output and input gradient, to f32 rounding. */
static void test_mha_self_attention_path_agrees(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    nn_params *p = nn_params_new();
    nn_multihead_attention *m = nn_multihead_attention_new(p, "attn", 12, 3, true, &rng);
    assert_non_null(m);
    ag_tensor *x = ag_tensor_uniform(AG_F32, 3, S(2, 7, 12), -1, 1, &rng);
    ag_set_requires_grad(x, true);
    ag_tensor *out[2], *gx[2];
    for (int path = 0; path < 2; path++) {
        ag_zero_grad(x);
        ag_tape *t = ag_tape_new();
        ag_tensor *kv = path ? ag_mul_scalar(t, x, 1.0) : x;
        ag_tensor *o = nn_multihead_attention_forward(t, m, x, kv, kv, NULL, true);
        assert_non_null(o);
        assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, o, o), AG_ALL, false)), AG_OK);
        out[path] = ag_tensor_clone(o);
        gx[path] = ag_tensor_clone(ag_grad(x));
        ag_tape_free(t);
    }
    assert_tensor_close(out[0], out[1], 1e-6, 1e-6);
    assert_tensor_close(gx[0], gx[1], 1e-5, 1e-5);
    for (int i = 0; i < 2; i++) {
        ag_tensor_free(out[i]);
        ag_tensor_free(gx[i]);
    }
    ag_tensor_free(x);
    nn_multihead_attention_free(m);
    nn_params_free(p);
}

static void test_qkv_rejects_bad_arguments(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    ag_tensor *qkv = ag_tensor_uniform(AG_F32, 3, S(2, 5, 12), -1, 1, &rng);
    ag_tensor *flat = ag_tensor_uniform(AG_F32, 1, S(12), -1, 1, &rng);
    ag_tensor *m = ag_tensor_new(AG_F32, 2, S(4, 5));
    ag_tensor *m64 = ag_tensor_new(AG_F64, 2, S(5, 5));
    ag_tensor *mg = ag_tensor_new(AG_F32, 2, S(5, 5));
    ag_set_requires_grad(mg, true);
    ag_tape *t = ag_tape_new();
    assert_null(ag_attention_qkv(t, qkv, 0, NULL, false, 0));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_attention_qkv: num_heads = 0 (at least 1)");
    ag_tape_reset(t);
    assert_null(ag_attention_qkv(t, qkv, 3, NULL, false, 0));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_attention_qkv: qkv [2,5,12] is not [..., T, "
                         "3 * num_heads * D] with num_heads = 3");
    ag_tape_reset(t);
    assert_null(ag_attention_qkv(t, flat, 1, NULL, false, 0));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_attention_qkv: qkv [12] is not");
    ag_tape_reset(t);
    ag_tensor *none = ag_tensor_new(AG_F32, 3, S(2, 5, 0));
    assert_null(ag_attention_qkv(t, none, 2, NULL, false, 0));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_attention_qkv: qkv [2,5,0] is not");
    ag_tape_reset(t);
    ag_tensor *o = ag_attention_qkv(t, none, 1, NULL, false, 0);
    assert_non_null(o);
    assert_int_equal(ag_numel(o), 0);
    ag_tape_reset(t);
    ag_tensor_free(none);
    assert_null(ag_attention_qkv(t, qkv, 2, m, false, 0));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_attention_qkv: mask [4,5] does not broadcast to "
                         "the scores [2,2,5,5]");
    ag_tape_reset(t);
    assert_null(ag_attention_qkv(t, qkv, 2, m64, false, 0));
    tg_assert_tape_error(t, AG_ERR_DTYPE, "ag_attention_qkv: dtypes differ");
    ag_tape_reset(t);
    assert_null(ag_attention_qkv(t, qkv, 2, mg, false, 0));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_attention_qkv: mask requires grad");
    ag_tape_reset(t);
    assert_null(ag_attention_qkv(t, qkv, 2, NULL, false, NAN));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_attention_qkv: scale nan is not finite");
    ag_tape_free(t);
    ag_tensor *all[] = {qkv, flat, m, m64, mg};
    for (int i = 0; i < 5; i++)
        ag_tensor_free(all[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qkv_equals_attention_on_heads),
        cmocka_unit_test(test_mha_self_attention_path_agrees),
        cmocka_unit_test(test_qkv_rejects_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
