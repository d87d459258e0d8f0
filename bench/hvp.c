/* hvp.c — the price of a Hessian-vector product against one gradient, on
 * the main job's network: 784-256-128-10 MLP with tanh (a smooth
 * activation, so the HVP is not trivially zero), f32 as in training, mean
 * cross-entropy on a batch of 128 random inputs and labels.  Times, per
 * repetition, from recording the forward to having the result:
 *   gradient: forward + ag_backward (persistent gradients, zeroed untimed);
 *   gradients: forward + ag_gradients(create_graph = false), the same
 *     sweep into tape buffers;
 *   HVP: forward + ag_hvp (one recorded gradient, then the fast gradient
 *     of <grad, v>: reverse-over-reverse).
 * Prints medians in the format of bench/peers/hvp_torch.py:
 *   hvp_forward_ms, hvp_grad_ms, hvp_gradients_ms, hvp_hvp_ms,
 *   hvp_over_grad (HVP / gradient, of the medians), hvp_over_grad_paired
 *   (the median of each repetition's ratio) and hvp_tape_mb (tape bytes
 *   in use after an HVP).
 * Usage: bench_hvp [repeats] [threads] [batch] [profile]
 * (profile: then prints the per-op table of `repeats` HVPs to stderr) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "tapegrad.h"

enum { NP = 6, MAX_REPS = 1000 };
static const int64_t sizes[4] = {784, 256, 128, 10};

static double now_ms(void) { return 1e3 * bench_seconds(CLOCK_MONOTONIC); }

typedef struct net {
    ag_tensor *p[NP], *v[NP], *x;
    int64_t *labels, batch;
} net;

static ag_tensor *loss_of(ag_tape *t, const net *m)
{
    ag_tensor *h = m->x;
    for (int l = 0; l < 3; l++) {
        h = ag_linear(t, h, m->p[2 * l], m->p[2 * l + 1]);
        if (l < 2)
            h = ag_tanh(t, h);
    }
    return ag_cross_entropy_logits(t, h, m->labels, m->batch, NULL);
}

static int fail(ag_tape *t, const char *what)
{
    fprintf(stderr, "bench_hvp: %s: %s\n", what, ag_tape_error(t));
    return 1;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 50, threads = argc > 2 ? atoi(argv[2]) : 1;
    int64_t batch = argc > 3 ? atoll(argv[3]) : 128;
    if (reps < 1 || reps > MAX_REPS)
        reps = 50;
    if (batch < 1)
        batch = 128;
    ag_set_num_threads(threads);
    ag_rng rng;
    ag_rng_seed(&rng, 0);
    net m = {.batch = batch};
    for (int l = 0; l < 3; l++) {
        double r = 1.0 / sqrt((double)sizes[l]); /* PyTorch's nn.Linear init */
        m.p[2 * l] = ag_tensor_uniform(AG_F32, 2, (int64_t[]){sizes[l + 1], sizes[l]}, -r, r,
                                       &rng);
        m.p[2 * l + 1] = ag_tensor_uniform(AG_F32, 1, &sizes[l + 1], -r, r, &rng);
    }
    for (int k = 0; k < NP; k++) {
        ag_set_requires_grad(m.p[k], true);
        m.v[k] = ag_tensor_normal(AG_F32, ag_ndim(m.p[k]), ag_shape(m.p[k]), 0, 1, &rng);
    }
    m.x = ag_tensor_uniform(AG_F32, 2, (int64_t[]){batch, sizes[0]}, 0, 1, &rng);
    m.labels = malloc((size_t)batch * sizeof *m.labels);
    for (int64_t i = 0; i < batch; i++)
        m.labels[i] = (int64_t)ag_rng_below(&rng, 10);

    ag_tape *t = ag_tape_new();
    static double fwd[MAX_REPS], grad[MAX_REPS], grads[MAX_REPS], hvp[MAX_REPS];
    double tape_mb = 0;
    ag_tensor *g[NP], *hv[NP];
    for (int r = -3; r < reps; r++) { /* 3 warm-up rounds */
        int i = r < 0 ? 0 : r;
        double t0 = now_ms();
        ag_tensor *loss = loss_of(t, &m);
        if (!loss)
            return fail(t, "forward");
        fwd[i] = now_ms() - t0;
        ag_tape_reset(t);

        t0 = now_ms();
        if (ag_backward(t, loss_of(t, &m)) != AG_OK)
            return fail(t, "ag_backward");
        grad[i] = now_ms() - t0;
        for (int k = 0; k < NP; k++)
            ag_zero_grad(m.p[k]);
        ag_tape_reset(t);

        t0 = now_ms();
        if (ag_gradients(t, loss_of(t, &m), NULL, NP, m.p, g, false) != AG_OK)
            return fail(t, "ag_gradients");
        grads[i] = now_ms() - t0;
        ag_tape_reset(t);

        t0 = now_ms();
        if (ag_hvp(t, loss_of(t, &m), NP, m.p, m.v, hv, false) != AG_OK)
            return fail(t, "ag_hvp");
        hvp[i] = now_ms() - t0;
        tape_mb = (double)ag_tape_bytes_used(t) / (1024.0 * 1024.0);
        ag_tape_reset(t);
    }
    static double paired[MAX_REPS]; /* per-repetition ratios: steadier on a busy machine */
    for (int i = 0; i < reps; i++)
        paired[i] = hvp[i] / grad[i];
    double f = bench_median(fwd, reps), gr = bench_median(grad, reps);
    double gs = bench_median(grads, reps), h = bench_median(hvp, reps);
    double pr = bench_median(paired, reps);
    printf("hvp_forward_ms %.4f\nhvp_grad_ms %.4f\nhvp_gradients_ms %.4f\nhvp_hvp_ms %.4f\n"
           "hvp_over_grad %.3f\nhvp_over_grad_paired %.3f\nhvp_tape_mb %.2f\n",
           f, gr, gs, h, h / gr, pr, tape_mb);
    if (argc > 4 && !strcmp(argv[4], "profile")) { /* where an HVP's time goes, per op */
        ag_tape_set_profile(t, true);
        for (int r = 0; r < reps; r++) {
            if (ag_hvp(t, loss_of(t, &m), NP, m.p, m.v, hv, false) != AG_OK)
                return fail(t, "ag_hvp");
            ag_tape_reset(t);
        }
        ag_tape_profile(t, stderr);
    }
    ag_tape_free(t);
    for (int k = 0; k < NP; k++) {
        ag_tensor_free(m.p[k]);
        ag_tensor_free(m.v[k]);
    }
    ag_tensor_free(m.x);
    free(m.labels);
    return 0;
}
