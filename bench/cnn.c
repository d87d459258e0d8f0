/* cnn.c — the CNN of `fashion_mnist --model cnn` (its model_cnn.c) as a
 * benchmark: batch 64, Adam(lr 1e-3), inputs normalized as the trainer
 * does, optionally the trainer's per-batch cosine schedule over all the
 * epochs; seconds per training epoch (median; evaluation excluded), test
 * accuracy after the last epoch and peak RSS, in the format of
 * bench/peers/cnn_torch.py, plus where the last epoch's time went (batch
 * fill, forward, backward, optimizer step + zero_grad); with `profile`, the
 * tape profiler's per-op table of the training steps (on stderr).
 * Usage: bench_cnn [epochs] [threads] [none|cosine] [profile] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_util.h"
#include "trainer.h"

#define BATCH 64

static double now_s(void) { return bench_seconds(CLOCK_MONOTONIC); }

/* One epoch; phase[4] receives fill, forward, backward, step seconds. */
static int epoch(ag_tape *t, fm_model *m, nn_batcher *it, optim *opt, optim_sched *s,
                 ag_rng *rng, double *phase)
{
    nn_batcher_start(it, rng);
    ag_tensor *x;
    const int64_t *y;
    int64_t n;
    double q0 = now_s();
    memset(phase, 0, 4 * sizeof *phase);
    while ((n = nn_batcher_next(it, t, &x, &y)) > 0) {
        double q1 = now_s();
        ag_tensor *loss = nn_cross_entropy(t, fm_model_forward(t, m, x), y, n);
        double q2 = now_s();
        if (ag_backward(t, loss) != AG_OK) {
            fprintf(stderr, "bench_cnn: %s\n", ag_tape_error(t));
            return 1;
        }
        double q3 = now_s();
        optim_step(opt);
        if (s)
            optim_sched_step_once(s);
        optim_zero_grad(opt);
        ag_tape_reset(t);
        double q4 = now_s();
        phase[0] += q1 - q0;
        phase[1] += q2 - q1;
        phase[2] += q3 - q2;
        phase[3] += q4 - q3;
        q0 = q4;
    }
    return n < 0;
}

int main(int argc, char **argv)
{
    int epochs = argc > 1 ? atoi(argv[1]) : 2, threads = argc > 2 ? atoi(argv[2]) : 2;
    bool cosine = argc > 3 && strcmp(argv[3], "cosine") == 0;
    bool profile = argc > 4 && strcmp(argv[4], "profile") == 0;
    if (epochs < 1 || epochs > 100)
        epochs = 2;
    ag_set_num_threads(threads);
    nn_dataset *train, *test;
    if (nn_mnist_load(NULL, true, &train) != AG_OK || nn_mnist_load(NULL, false, &test) != AG_OK) {
        fprintf(stderr, "bench_cnn: %s\n", ag_last_error());
        return 1;
    }
    ag_rng rng;
    ag_rng_seed(&rng, 0);
    fm_model *m = fm_cnn_new(AG_F32, &rng);
    int np;
    ag_tensor **params = m ? nn_params_tensors(m->params, &np) : NULL;
    optim_adam_opts ao = optim_adam_defaults();
    ao.lr = 1e-3;
    optim *opt = params ? optim_adam(params, np, ao) : NULL;
    nn_batch_opts bo = {.batch = BATCH, .mean = NN_FASHION_MNIST_MEAN,
                        .std = NN_FASHION_MNIST_STD};
    nn_batcher *it = NULL;
    ag_tape *t = ag_tape_new(), *te = ag_tape_new();
    if (!opt || !t || !te || nn_batcher_new(train, &bo, &it) != AG_OK) {
        fprintf(stderr, "bench_cnn: %s\n", ag_last_error());
        return 1;
    }
    ag_tape_set_profile(t, profile);
    optim_sched *s = cosine ? optim_sched_cosine(opt, epochs * nn_batcher_count(it), 0) : NULL;
    double times[100], phase[4];
    fm_metrics mt = {0};
    for (int e = 0; e < epochs; e++) {
        double t0 = now_s();
        if (epoch(t, m, it, opt, s, &rng, phase))
            return 1;
        times[e] = now_s() - t0;
        if (fm_evaluate(m, test, te, &mt) != AG_OK) {   /* not profiled: its own tape */
            fprintf(stderr, "bench_cnn: %s\n", ag_last_error());
            return 1;
        }
        fprintf(stderr, "epoch %d: %.2f s, test accuracy %.4f\n", e + 1, times[e], mt.acc);
    }
    if (profile)
        ag_tape_profile(t, stderr);
    qsort(times, (size_t)epochs, sizeof times[0], bench_cmp);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double median = (times[(epochs - 1) / 2] + times[epochs / 2]) / 2;   /* as Python's */
    printf("cnn_epoch_s %.4f\ntest_acc %.4f\npeak_rss_mb %.1f\n", median, mt.acc,
           (double)ru.ru_maxrss / 1024.0);
    printf("last epoch, s: fill %.3f forward %.3f backward %.3f step+zero_grad %.3f\n",
           phase[0], phase[1], phase[2], phase[3]);
    ag_tape_free(t);
    ag_tape_free(te);
    nn_batcher_free(it);
    optim_sched_free(s);
    optim_free(opt);
    fm_model_free(m);
    nn_dataset_free(train);
    nn_dataset_free(test);
    return 0;
}
