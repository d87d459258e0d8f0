/* attention.c — ag_attention against the same attention composed of ops
 * (softmax(q k^T * scale + causal mask) v with matmul, masked_fill and
 * softmax), causal, f32:
 *   time: the GPT's shape (batch 12, 4 heads, T 64, head width 32), per
 *     repetition forward + backward into persistent q, k, v gradients,
 *     medians;
 *   memory: T = 1024, batch 1, 4 heads, D 32: tape bytes in use after
 *     forward + backward (q, k, v tape tensors, so their gradients count).
 * Prints name value lines (bench/run's format):
 *   attn_fused_ms, attn_composed_ms, attn_fused_over_composed,
 *   attn_fused_tape_bytes, attn_composed_tape_bytes, attn_tape_ratio.
 * The PyTorch peer is bench/peers/attention_torch.py (its written-out
 * attention; 1.13 has no fused one).
 * Usage: bench_attention [repeats] [threads] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench_util.h"
#include "tapegrad.h"

enum { MAX_REPS = 1000 };

static double now_ms(void) { return 1e3 * bench_seconds(CLOCK_MONOTONIC); }

static ag_tensor *composed(ag_tape *t, ag_tensor *q, ag_tensor *k, ag_tensor *v,
                           ag_tensor *upper)
{
    const int64_t *s = ag_shape(q);
    ag_tensor *sc = ag_mul_scalar(t, ag_matmul(t, q, ag_transpose(t, k, -2, -1)),
                                  1 / sqrt((double)s[3]));
    return ag_matmul(t, ag_softmax(t, ag_masked_fill(t, sc, upper, -INFINITY), -1), v);
}

/* j > i of (T, T): the causal mask for the composed form */
static ag_tensor *upper_of(int64_t T)
{
    ag_tensor *u = ag_tensor_new(AG_F32, 2, (int64_t[]){T, T});
    float *d = u ? ag_data(u) : NULL;
    for (int64_t i = 0; d && i < T; i++)
        for (int64_t j = i + 1; j < T; j++)
            d[i * T + j] = 1;
    return u;
}

static ag_tensor *attend(ag_tape *t, bool fused, ag_tensor **x, ag_tensor *upper)
{
    return fused ? ag_attention(t, x[0], x[1], x[2], NULL, true, 0)
                 : composed(t, x[0], x[1], x[2], upper);
}

static double median_ms(bool fused, ag_tensor **x, ag_tensor *upper, int reps)
{
    double v[MAX_REPS];
    ag_tape *t = ag_tape_new();
    for (int r = -3; r < reps; r++) { /* 3 warm-up rounds */
        double t0 = now_ms();
        ag_tensor *o = attend(t, fused, x, upper);
        if (ag_backward(t, ag_sum(t, o, AG_ALL, false)) != AG_OK) {
            fprintf(stderr, "bench_attention: %s\n", ag_tape_error(t));
            exit(1);
        }
        if (r >= 0)
            v[r] = now_ms() - t0;
        ag_tape_reset(t);
        for (int i = 0; i < 3; i++)
            ag_zero_grad(x[i]);
    }
    ag_tape_free(t);
    qsort(v, (size_t)reps, sizeof v[0], bench_cmp);
    return v[reps / 2];
}

static size_t tape_bytes(bool fused, ag_tensor **p, ag_tensor *upper)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x[3];
    for (int i = 0; i < 3; i++)
        x[i] = ag_mul_scalar(t, p[i], 1.0);
    size_t base = ag_tape_bytes_used(t);
    if (ag_backward(t, ag_sum(t, attend(t, fused, x, upper), AG_ALL, false)) != AG_OK) {
        fprintf(stderr, "bench_attention: %s\n", ag_tape_error(t));
        exit(1);
    }
    size_t used = ag_tape_bytes_used(t) - base;
    ag_tape_free(t);
    return used;
}

/* q, k, v [b, h, T, d] requiring grad (NULL entries on no memory) */
static void make(ag_tensor **x, int64_t b, int64_t h, int64_t T, int64_t d, ag_rng *rng)
{
    for (int i = 0; i < 3; i++) {
        x[i] = ag_tensor_normal(AG_F32, 4, (int64_t[]){b, h, T, d}, 0, 1, rng);
        ag_set_requires_grad(x[i], true);
    }
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 50, threads = argc > 2 ? atoi(argv[2]) : 1;
    if (reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "usage: bench_attention [repeats 1..%d] [threads]\n", MAX_REPS);
        return 2;
    }
    ag_set_num_threads(threads);
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    ag_tensor *x[3], *big[3], *up64 = upper_of(64), *up1k = upper_of(1024);
    make(x, 12, 4, 64, 32, &rng);
    make(big, 1, 4, 1024, 32, &rng);
    if (!x[0] || !x[1] || !x[2] || !big[0] || !big[1] || !big[2] || !up64 || !up1k) {
        fprintf(stderr, "bench_attention: out of memory\n");
        return 1;
    }
    double f = median_ms(true, x, up64, reps), c = median_ms(false, x, up64, reps);
    size_t fb = tape_bytes(true, big, up1k), cb = tape_bytes(false, big, up1k);
    printf("attn_fused_ms %.4f\nattn_composed_ms %.4f\nattn_fused_over_composed %.3f\n", f, c,
           f / c);
    printf("attn_fused_tape_bytes %zu\nattn_composed_tape_bytes %zu\nattn_tape_ratio %.4f\n",
           fb, cb, (double)fb / (double)cb);
    for (int i = 0; i < 3; i++) {
        ag_tensor_free(x[i]);
        ag_tensor_free(big[i]);
    }
    ag_tensor_free(up64);
    ag_tensor_free(up1k);
    return 0;
}
