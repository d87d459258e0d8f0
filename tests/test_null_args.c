/* test_null_args.c — the NULL and absurd-argument cases of the sweep
 * (null_sweep.c) that were crashes, hangs or silent, one by one: each
 * call returns its error value with a message naming the public function
 * and the argument. */
#include "test_util.h"

#include "tapegrad.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void assert_last_error(const char *substr)
{
    const char *m = ag_last_error();
    assert_non_null(m);
    if (!strstr(m, substr))
        fail_msg("ag_last_error \"%s\" lacks \"%s\"", m, substr);
}

/* Was: every ag_rng_* dereferenced r. */
static void test_rng_null_is_an_error(void **state)
{
    (void)state;
    ag_clear_last_error();
    ag_rng_seed(NULL, 1);
    assert_last_error("ag_rng_seed: r is NULL");
    assert_int_equal(ag_rng_next(NULL), 0);
    assert_last_error("ag_rng_next: r is NULL");
    assert_true(isnan(ag_rng_uniform(NULL)));
    assert_last_error("ag_rng_uniform: r is NULL");
    assert_true(isnan(ag_rng_normal(NULL)));
    assert_last_error("ag_rng_normal: r is NULL");
    assert_int_equal(ag_rng_below(NULL, 3), 0);
    assert_last_error("ag_rng_below: r is NULL");
    ag_rng r;
    ag_rng_seed(&r, 1);
    ag_clear_last_error();
    assert_int_equal(ag_rng_below(&r, 0), 0);
    assert_last_error("ag_rng_below: n is 0");
}

/* Was: a zero state (`ag_rng r = {0}`, never seeded) drew 0 forever, so
 * ag_rng_below(&r, 3) never left its rejection loop (nn_batcher_start hung). */
static void test_rng_unseeded_is_seed_zero(void **state)
{
    (void)state;
    ag_rng zero = {{0}}, seeded;
    ag_rng_seed(&seeded, 0);
    for (int k = 0; k < 4; k++)
        assert_true(ag_rng_next(&zero) == ag_rng_next(&seeded));
    ag_rng z2 = {{0}};
    assert_true(ag_rng_below(&z2, 3) < 3);
    ag_rng z3 = {{0}};
    double u = ag_rng_uniform(&z3);
    assert_true(u > 0 && u < 1);
}

static void copy_fwd(ag_tensor *const *in, int n, ag_tensor *out, void *ctx)
{
    (void)n, (void)ctx;
    for (int64_t i = 0; i < ag_numel(out); i++)
        ag_set(out, i, ag_get(in[0], i));
}

static void copy_bwd(ag_tensor *const *in, int n, const ag_tensor *out, const ag_tensor *gout,
                     ag_tensor *const *gin, void *ctx)
{
    (void)in, (void)n, (void)out, (void)ctx;
    for (int64_t i = 0; gin[0] && i < ag_numel(gout); i++)
        ag_set(gin[0], i, ag_get(gin[0], i) + ag_get(gout, i));
}

/* Was: ag_custom read in[0] of a NULL array. */
static void test_custom_null_inputs_is_an_error(void **state)
{
    (void)state;
    static const ag_custom_op op = {.name = "copy", .forward = copy_fwd, .backward = copy_bwd};
    ag_tape *t = ag_tape_new();
    assert_null(ag_custom(t, &op, NULL, 1, 1, (int64_t[]){2}, NULL));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_custom: copy: in is NULL");
    ag_tape_reset(t);
    assert_null(ag_custom(t, NULL, NULL, 1, 1, (int64_t[]){2}, NULL));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_custom: op is NULL");
    ag_tape_reset(t);
    assert_null(ag_custom(t, &op, NULL, 9, 1, (int64_t[]){2}, NULL));
    tg_assert_tape_error(t, AG_ERR_ARG, "n_in is 9 (must be 1..8)");
    ag_tape_free(t);
}

/* Was: nn_elu(NULL, x) said "ag_where: tape is NULL"; nn_activate(NULL,
 * NN_ACT_NONE, x) returned x, and given x NULL returned NULL with no error
 * anywhere; nn_nll_loss(NULL, ...) returned NULL with no message. */
static void test_nn_compositions_name_themselves(void **state)
{
    (void)state;
    ag_tensor *x = ag_tensor_full(AG_F32, 2, (int64_t[]){2, 3}, 0.5);
    ag_clear_last_error();
    assert_null(nn_elu(NULL, x, 1.0));
    assert_last_error("nn_elu: tape is NULL");
    assert_null(nn_relu(NULL, x));
    assert_last_error("nn_relu: tape is NULL");
    assert_null(nn_activate(NULL, NN_ACT_NONE, x));
    assert_last_error("nn_activate: tape is NULL");
    assert_null(nn_nll_loss(NULL, x, (int64_t[]){0, 1}, 2, -100, AG_REDUCE_MEAN));
    assert_last_error("nn_nll_loss: tape is NULL");
    ag_tape *t = ag_tape_new();
    assert_null(nn_activate(t, NN_ACT_NONE, NULL));
    tg_assert_tape_error(t, AG_ERR_NULL, "nn_activate");
    ag_tape_reset(t);
    assert_ptr_equal(nn_activate(t, NN_ACT_NONE, x), x);   /* identity still */
    assert_int_equal(ag_tape_status(t), AG_OK);
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* Elementwise and softmax ops name the public function, not their row. */
static void test_ops_name_the_public_function(void **state)
{
    (void)state;
    int64_t sh[] = {2};
    ag_tensor *x = ag_tensor_ones(AG_F64, 1, sh);
    ag_tape *t = ag_tape_new();
    assert_null(ag_mul(t, NULL, x));
    tg_assert_tape_error(t, AG_ERR_NULL, "ag_mul: input #1 is NULL");
    ag_tape_reset(t);
    assert_null(ag_tanh(t, NULL));
    tg_assert_tape_error(t, AG_ERR_NULL, "ag_tanh: input #1 is NULL");
    ag_tape_reset(t);
    assert_null(ag_leaky_relu(t, NULL, 0.1));
    tg_assert_tape_error(t, AG_ERR_NULL, "ag_leaky_relu: input #1 is NULL");
    ag_tape_reset(t);
    assert_null(ag_softmax(t, x, 3));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_softmax: axis 3");
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* An allocator that refuses anything over 1 GiB, so an oversized op fails
 * in the arena the same way under ASan and without it. */
static void *small_alloc(size_t size, size_t align, void *ctx)
{
    (void)ctx;
    if (size > ((size_t)1 << 30))
        return NULL;
    size_t rounded = (size + align - 1) / align * align;
    return aligned_alloc(align, rounded ? rounded : align);
}

static void small_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

/* Was: "tape arena: out of memory for 105553116266624 bytes", no op named;
 * and later calls returned the kept error without setting ag_last_error. */
static void test_out_of_memory_names_the_op_and_later_calls_say_why(void **state)
{
    (void)state;
    ag_set_allocator(&(ag_allocator){small_alloc, small_free, NULL});
    int64_t one[] = {1, 1}, huge[] = {(int64_t)1 << 16, (int64_t)1 << 16};
    ag_tensor *x = ag_tensor_ones(AG_F32, 2, one);
    ag_tape *t = ag_tape_new();
    assert_null(ag_expand(t, x, 2, huge));
    tg_assert_tape_error(t, AG_ERR_NOMEM, "ag_expand (result [65536,65536]): tape arena: "
                                          "out of memory");
    assert_null(ag_add(t, x, x));
    assert_last_error("ag_add: the tape holds an earlier error: ag_expand");
    assert_int_equal(ag_backward(t, x), AG_ERR_NOMEM);
    assert_last_error("ag_backward: the tape holds an earlier error");
    (void)ag_var_new(t, 1.0);
    assert_last_error("ag_var_new: the tape holds an earlier error");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_set_allocator(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng_null_is_an_error),
        cmocka_unit_test(test_rng_unseeded_is_seed_zero),
        cmocka_unit_test(test_custom_null_inputs_is_an_error),
        cmocka_unit_test(test_nn_compositions_name_themselves),
        cmocka_unit_test(test_ops_name_the_public_function),
        cmocka_unit_test(test_out_of_memory_names_the_op_and_later_calls_say_why),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
