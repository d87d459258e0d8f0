/* conv.c — the convolution and pooling layers of the Fashion-MNIST CNN
 * (batch 64, f32: conv 1->32 3x3, max pool 2, conv 32->64 3x3, max pool 2),
 * each timed alone, forward + backward of sum(layer(x) * g) for a fixed
 * random g, as bench/peers/conv_torch.py times PyTorch's; then the whole model's forward + backward (with relu, the two
 * linear layers and cross-entropy).  The input image needs no gradient, the
 * later inputs do, as in training.  Milliseconds per batch, the median of
 * `repeats` runs of 10 batches each, printed as "<name>_ms <value>".  With
 * one thread the clock is the process's CPU time, so that neighbours on a
 * shared machine do not count (their cache pollution still does); with
 * more, wall time.
 * Usage: bench_conv [repeats] [threads] [layer]  (defaults 15, 2, all;
 * layer one of the names printed, to time (or profile) that one alone) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "autograd.h"

#define BATCH 64
#define INNER 10

static clockid_t g_clock = CLOCK_MONOTONIC;

static double now_s(void) { return bench_seconds(g_clock); }

/* f32 uniform in [-a, a), requiring grad when asked */
static ag_tensor *rnd(ag_rng *rng, int ndim, const int64_t *shape, double a, bool grad)
{
    ag_tensor *t = ag_tensor_new(AG_F32, ndim, shape);
    float *d = ag_data(t);
    for (int64_t i = 0; i < ag_numel(t); i++)
        d[i] = (float)(a * (2 * ag_rng_uniform(rng) - 1));
    ag_tensor_mark_modified(t);
    ag_set_requires_grad(t, grad);
    return t;
}

typedef struct {
    ag_tensor *x1, *w1, *b1, *x2, *w2, *b2, *p1, *p2, *fw1, *fb1, *fw2, *fb2;
    ag_tensor *g1, *g2, *gp1, *gp2; /* output gradients of the single layers */
    int64_t labels[BATCH];
} model;

enum { CONV1, POOL1, CONV2, POOL2, MODEL, N_LAYERS };
static const char *const names[N_LAYERS] = {"conv1", "pool1", "conv2", "pool2", "model"};

static ag_tensor *layer(ag_tape *t, model *m, int which, ag_tensor **seed)
{
    ag_pool2d_opts k2 = {.kernel = {2, 2}};
    ag_conv2d_opts o = {0};
    switch (which) {
    case CONV1:
        *seed = m->g1;
        return ag_conv2d(t, m->x1, m->w1, m->b1, o);
    case POOL1:
        *seed = m->gp1;
        return ag_max_pool2d(t, m->p1, k2);
    case CONV2:
        *seed = m->g2;
        return ag_conv2d(t, m->x2, m->w2, m->b2, o);
    case POOL2:
        *seed = m->gp2;
        return ag_max_pool2d(t, m->p2, k2);
    default: {
        *seed = NULL;
        ag_tensor *h = ag_max_pool2d(t, ag_relu(t, ag_conv2d(t, m->x1, m->w1, m->b1, o)), k2);
        h = ag_max_pool2d(t, ag_relu(t, ag_conv2d(t, h, m->w2, m->b2, o)), k2);
        h = ag_reshape(t, h, 2, (const int64_t[]){BATCH, 1600});
        h = ag_relu(t, ag_linear(t, h, m->fw1, m->fb1));
        return ag_cross_entropy_logits(t, ag_linear(t, h, m->fw2, m->fb2), m->labels, BATCH,
                                       NULL);
    }
    }
}

/* ms per batch of one layer's forward + backward, median of repeats */
static double time_layer(ag_tape *t, model *m, int which, int repeats)
{
    double *ms = malloc((size_t)repeats * sizeof *ms);
    for (int r = -1; r < repeats; r++) { /* r = -1: warm-up */
        double t0 = now_s();
        for (int i = 0; i < INNER; i++) {
            ag_tensor *seed;
            ag_tensor *y = layer(t, m, which, &seed);
            if (seed)
                y = ag_sum(t, ag_mul(t, y, seed), AG_ALL, false);
            if (ag_backward(t, y) != AG_OK) {
                fprintf(stderr, "bench_conv: %s\n", ag_tape_error(t));
                exit(1);
            }
            ag_tape_reset(t);
        }
        if (r >= 0)
            ms[r] = (now_s() - t0) * 1e3 / INNER;
    }
    qsort(ms, (size_t)repeats, sizeof *ms, bench_cmp);
    double med = ms[repeats / 2];
    free(ms);
    return med;
}

int main(int argc, char **argv)
{
    int repeats = argc > 1 ? atoi(argv[1]) : 15, threads = argc > 2 ? atoi(argv[2]) : 2;
    const char *only = argc > 3 ? argv[3] : NULL;
    if (repeats < 1)
        repeats = 1;
    ag_set_num_threads(threads);
    if (threads == 1)
        g_clock = CLOCK_PROCESS_CPUTIME_ID;
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    model m;
    m.x1 = rnd(&rng, 4, (const int64_t[]){BATCH, 1, 28, 28}, 1, false);
    m.w1 = rnd(&rng, 4, (const int64_t[]){32, 1, 3, 3}, 1.0 / 3, true);
    m.b1 = rnd(&rng, 1, (const int64_t[]){32}, 1.0 / 3, true);
    m.p1 = rnd(&rng, 4, (const int64_t[]){BATCH, 32, 26, 26}, 1, true);
    m.x2 = rnd(&rng, 4, (const int64_t[]){BATCH, 32, 13, 13}, 1, true);
    m.w2 = rnd(&rng, 4, (const int64_t[]){64, 32, 3, 3}, 1.0 / 17, true);
    m.b2 = rnd(&rng, 1, (const int64_t[]){64}, 1.0 / 17, true);
    m.p2 = rnd(&rng, 4, (const int64_t[]){BATCH, 64, 11, 11}, 1, true);
    m.fw1 = rnd(&rng, 2, (const int64_t[]){128, 1600}, 1.0 / 40, true);
    m.fb1 = rnd(&rng, 1, (const int64_t[]){128}, 1.0 / 40, true);
    m.fw2 = rnd(&rng, 2, (const int64_t[]){10, 128}, 1.0 / 11, true);
    m.fb2 = rnd(&rng, 1, (const int64_t[]){10}, 1.0 / 11, true);
    m.g1 = rnd(&rng, 4, (const int64_t[]){BATCH, 32, 26, 26}, 1, false);
    m.gp1 = rnd(&rng, 4, (const int64_t[]){BATCH, 32, 13, 13}, 1, false);
    m.g2 = rnd(&rng, 4, (const int64_t[]){BATCH, 64, 11, 11}, 1, false);
    m.gp2 = rnd(&rng, 4, (const int64_t[]){BATCH, 64, 5, 5}, 1, false);
    for (int i = 0; i < BATCH; i++)
        m.labels[i] = i % 10;
    ag_tape *t = ag_tape_new();
    printf("threads %d\n", threads);
    for (int l = 0; l < N_LAYERS; l++)
        if (!only || strcmp(only, names[l]) == 0)
            printf("%s_ms %.4f\n", names[l], time_layer(t, &m, l, repeats));
    ag_tape_free(t);
    ag_tensor *all[] = {m.x1, m.w1, m.b1, m.p1, m.x2, m.w2, m.b2, m.p2, m.fw1, m.fb1,
                        m.fw2, m.fb2, m.g1, m.gp1, m.g2, m.gp2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ag_tensor_free(all[i]);
    return 0;
}
