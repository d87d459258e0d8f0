/* test_step_alloc.c — a whole training step (data batch, MLP forward with
 * GEMMs, fused cross-entropy, backward, Adam with a schedule, zero_grad,
 * reset) makes no system allocation once the first step has run, on one
 * thread and on two. */
#include "test_util.h"

#include "tapegrad.h"

#include <stdlib.h>

static void step(ag_tape *t, nn_linear **fc, nn_batcher *it, optim *opt, optim_sched *s)
{
    ag_tensor *x;
    const int64_t *y;
    int64_t n = nn_batcher_next(it, t, &x, &y);
    if (n == 0) {
        nn_batcher_start(it, NULL);
        n = nn_batcher_next(it, t, &x, &y);
    }
    assert_true(n > 0);
    ag_tensor *h = ag_relu(t, nn_linear_forward(t, fc[0], x));
    h = ag_relu(t, nn_linear_forward(t, fc[1], h));
    ag_tensor *loss = nn_cross_entropy(t, nn_linear_forward(t, fc[2], h), y, n);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    assert_int_equal(optim_step(opt), AG_OK);
    assert_int_equal(optim_sched_step_once(s), AG_OK);
    optim_zero_grad(opt);
    ag_tape_reset(t);
}

static void run(int threads)
{
    tg_count_allocs();
    ag_set_num_threads(threads);
    enum { N = 512, F = 784 };
    uint8_t *pixels = malloc(N * F);
    int64_t labels[N];
    for (int i = 0; i < N * F; i++)
        pixels[i] = (uint8_t)(i * 37 % 251);
    for (int i = 0; i < N; i++)
        labels[i] = i % 10;
    nn_dataset *ds;
    int64_t shape[] = {28, 28};
    assert_int_equal(nn_dataset_from_u8(N, 2, shape, pixels, labels, 10, &ds), AG_OK);
    nn_batcher *it;
    nn_batch_opts bo = {.batch = 128};
    assert_int_equal(nn_batcher_new(ds, &bo, &it), AG_OK);
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    nn_params *p = nn_params_new();
    nn_linear *fc[3] = {nn_linear_new(p, "fc1", F, 256, true, &rng),
                        nn_linear_new(p, "fc2", 256, 128, true, &rng),
                        nn_linear_new(p, "fc3", 128, 10, true, &rng)};
    int np;
    ag_tensor **params = nn_params_tensors(p, &np);
    optim *opt = optim_adam(params, np, optim_adam_defaults());
    optim_sched *s = optim_sched_cosine(opt, 1000, 0);
    ag_tape *t = ag_tape_new();
    step(t, fc, it, opt, s); /* warm-up: arena, gradients, optimizer state */
    step(t, fc, it, opt, s);
    long before = tg_alloc_count;
    for (int i = 0; i < 10; i++)
        step(t, fc, it, opt, s);
    print_message("%d thread(s): %ld system allocations in 10 steps after warm-up\n",
                  threads, tg_alloc_count - before);
    assert_int_equal(tg_alloc_count - before, 0);
    ag_tape_free(t);
    optim_sched_free(s);
    optim_free(opt);
    for (int i = 0; i < 3; i++)
        nn_linear_free(fc[i]);
    nn_params_free(p);
    nn_batcher_free(it);
    nn_dataset_free(ds);
    free(pixels);
    ag_set_allocator(NULL);
    ag_set_num_threads(0);
}

static void test_step_alloc_one_thread(void **state)
{
    (void)state;
    run(1);
}

static void test_step_alloc_two_threads(void **state)
{
    (void)state;
    run(2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_alloc_one_thread),
        cmocka_unit_test(test_step_alloc_two_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
