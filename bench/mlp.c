/* mlp.c — the main job's model as a benchmark: 784-256-128-10 ReLU MLP on
 * Fashion-MNIST, batch 128, Adam(lr 1e-3), seconds per training epoch
 * (median; evaluation excluded), final test accuracy and peak RSS, in the
 * same format as bench/peers/mlp_torch.py, plus where the last epoch's time
 * went (batch fill, forward, backward, optimizer step + zero_grad).
 * Usage: bench_mlp [epochs] [threads] */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_util.h"
#include "tapegrad.h"

static double now_s(void) { return bench_seconds(CLOCK_MONOTONIC); }

static ag_tensor *forward(ag_tape *t, nn_linear **fc, ag_tensor *x)
{
    ag_tensor *h = ag_relu(t, nn_linear_forward(t, fc[0], x));
    h = ag_relu(t, nn_linear_forward(t, fc[1], h));
    return nn_linear_forward(t, fc[2], h);
}

static double accuracy(ag_tape *t, nn_linear **fc, const nn_dataset *test)
{
    nn_batch_opts bo = {.batch = 1000};
    nn_batcher *it;
    if (nn_batcher_new(test, &bo, &it) != AG_OK)
        return -1;
    ag_tape_set_grad_enabled(t, false);
    nn_batcher_start(it, NULL);
    ag_tensor *x;
    const int64_t *y;
    int64_t n, correct = 0, total = 0;
    while ((n = nn_batcher_next(it, t, &x, &y)) > 0) {
        ag_tensor *pred = ag_argmax(t, forward(t, fc, x), 1, false);
        for (int64_t i = 0; i < n; i++)
            correct += (int64_t)ag_get(pred, i) == y[i];
        total += n;
        ag_tape_reset(t);
    }
    ag_tape_set_grad_enabled(t, true);
    nn_batcher_free(it);
    return total ? (double)correct / (double)total : -1;
}

int main(int argc, char **argv)
{
    int epochs = argc > 1 ? atoi(argv[1]) : 3, threads = argc > 2 ? atoi(argv[2]) : 1;
    if (epochs < 1 || epochs > 100)
        epochs = 3;
    ag_set_num_threads(threads);
    nn_dataset *train, *test;
    if (nn_mnist_load(NULL, true, &train) != AG_OK || nn_mnist_load(NULL, false, &test) != AG_OK) {
        fprintf(stderr, "bench_mlp: %s\n", ag_last_error());
        return 1;
    }
    ag_rng rng;
    ag_rng_seed(&rng, 0);
    nn_params *p = nn_params_new();
    nn_linear *fc[3] = {nn_linear_new(p, "fc1", 784, 256, true, &rng),
                        nn_linear_new(p, "fc2", 256, 128, true, &rng),
                        nn_linear_new(p, "fc3", 128, 10, true, &rng)};
    int np;
    ag_tensor **params = nn_params_tensors(p, &np);
    optim *opt = optim_adam(params, np, optim_adam_defaults());
    nn_batch_opts bo = {.batch = 128};
    nn_batcher *it;
    nn_batcher_new(train, &bo, &it);
    ag_tape *t = ag_tape_new();
    double times[100], acc = 0, phase[4];
    for (int e = 0; e < epochs; e++) {
        nn_batcher_start(it, &rng);
        double t0 = now_s(), q0 = t0;
        ag_tensor *x;
        const int64_t *y;
        int64_t n;
        phase[0] = phase[1] = phase[2] = phase[3] = 0;
        while ((n = nn_batcher_next(it, t, &x, &y)) > 0) {
            double q1 = now_s();
            ag_tensor *loss = nn_cross_entropy(t, forward(t, fc, x), y, n);
            double q2 = now_s();
            if (ag_backward(t, loss) != AG_OK) {
                fprintf(stderr, "bench_mlp: %s\n", ag_tape_error(t));
                return 1;
            }
            double q3 = now_s();
            optim_step(opt);
            optim_zero_grad(opt);
            ag_tape_reset(t);
            double q4 = now_s();
            phase[0] += q1 - q0;
            phase[1] += q2 - q1;
            phase[2] += q3 - q2;
            phase[3] += q4 - q3;
            q0 = q4;
        }
        times[e] = now_s() - t0;
        acc = accuracy(t, fc, test);
    }
    qsort(times, (size_t)epochs, sizeof times[0], bench_cmp);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("mlp_epoch_s %.4f\ntest_acc %.4f\npeak_rss_mb %.1f\n", times[epochs / 2], acc,
           (double)ru.ru_maxrss / 1024.0);
    printf("last epoch, s: fill %.3f forward %.3f backward %.3f step+zero_grad %.3f\n",
           phase[0], phase[1], phase[2], phase[3]);
    ag_tape_free(t);
    nn_batcher_free(it);
    optim_free(opt);
    for (int i = 0; i < 3; i++)
        nn_linear_free(fc[i]);
    nn_params_free(p);
    nn_dataset_free(train);
    nn_dataset_free(test);
    return 0;
}
