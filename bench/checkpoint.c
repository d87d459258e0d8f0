/* checkpoint.c — what gradient checkpointing costs and saves, on a deep
 * residual MLP: 16 blocks x <- x + linear(gelu(linear(x))) of width 512
 * (hidden width 512 unless given), f32, a batch of random inputs, loss
 * mean(x^2) at the end; or (hidden "gpt") on the charlm GPT with 16
 * layers (d 128, 4 heads, T 64, vocabulary 73, batch sequences of random
 * tokens, cross-entropy), a checkpoint per block (nn_gpt_set_checkpoint);
 * "gpt-keep" the same with each block's MLP linear outputs kept from the
 * first run (NN_GPT_KEEP_FC | NN_GPT_KEEP_PROJ, ag_checkpoint_save)
 * instead of computed again.  One training step is forward + ag_backward
 * (parameter gradients zeroed and the tape reset, untimed), run in turn
 * without and with one ag_checkpoint per block, so both see the same
 * machine state.  On one thread the times are the thread's CPU time (a
 * shared machine's other loads preempt it without counting), else wall
 * time.  Prints medians over the repetitions:
 *   ckpt_plain_ms, ckpt_ms          step time without / with checkpoints
 *   ckpt_time_ratio                 ckpt_ms / ckpt_plain_ms
 *   ckpt_time_ratio_paired          median of each repetition's ratio
 *   ckpt_plain_peak_mb, ckpt_peak_mb  ag_tape_bytes_peak of a step
 *   ckpt_peak_ratio                 ckpt_peak_mb / ckpt_plain_peak_mb
 * and checks that both give the same gradient bits.
 * "HIDDEN-keep" (as "2048-keep") keeps each residual block's second linear
 * output the same way.
 * Usage: bench_checkpoint [repeats] [threads] [batch] [hidden[-keep] | gpt | gpt-keep] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "tapegrad.h"

enum { BLOCKS = 16, WIDTH = 512, MAX_REPS = 1000 };

typedef struct block {
    ag_tensor *w1, *b1, *w2, *b2;
} block;

static block g_blocks[BLOCKS];

/* The GPT case (NULL: the residual MLP). */
enum { GPT_T = 64, GPT_VOCAB = 73 };
static nn_params *g_gpt_params;
static nn_gpt *g_gpt;
static int64_t *g_tokens; /* (batch, GPT_T + 1) */
static int64_t g_batch;
static unsigned g_gpt_keep; /* "gpt-keep": NN_GPT_KEEP_FC | NN_GPT_KEEP_PROJ */

static clockid_t g_clock = CLOCK_MONOTONIC;

static double now_ms(void) { return 1e3 * bench_seconds(g_clock); }

/* "HIDDEN-keep": each block keeps its second linear's output from the
 * first run (ag_checkpoint_save; only the block's output reads it). */
static bool g_mlp_keep;

static ag_tensor *block_ops(ag_tape *t, const block *b, ag_tensor *x)
{
    ag_tensor *h = ag_gelu(t, ag_linear(t, x, b->w1, b->b1));
    ag_tensor *y = ag_linear(t, h, b->w2, b->b2);
    if (g_mlp_keep && y)
        ag_checkpoint_save(t, y);
    return ag_add(t, x, y);
}

static ag_status block_fn(ag_tape *t, int n_in, ag_tensor *const *in, int n_out,
                          ag_tensor **out, void *ctx)
{
    (void)n_in;
    (void)n_out;
    out[0] = block_ops(t, ctx, in[0]);
    return ag_tape_status(t);
}

/* The GPT's loss: next-token cross-entropy over the batch's windows. */
static ag_tensor *gpt_loss(ag_tape *t, bool ckpt)
{
    nn_gpt_set_checkpoint(g_gpt, ckpt ? 1 : 0, g_gpt_keep);
    int64_t n = g_batch * GPT_T;
    ag_tensor *logits = nn_gpt_forward(t, g_gpt, g_tokens, g_batch, GPT_T);
    logits = ag_reshape(t, logits, 2, (const int64_t[]){n, GPT_VOCAB});
    return nn_cross_entropy(t, logits, g_tokens + n, n);
}

/* One step; returns its time in ms and leaves the peak in *peak. */
static double step(ag_tape *t, ag_tensor *x, bool ckpt, size_t *peak)
{
    double t0 = now_ms();
    if (g_gpt) {
        if (ag_backward(t, gpt_loss(t, ckpt)) != AG_OK) {
            fprintf(stderr, "bench_checkpoint: %s\n", ag_tape_error(t));
            exit(1);
        }
        double ms = now_ms() - t0;
        *peak = ag_tape_bytes_peak(t);
        return ms;
    }
    ag_tensor *h = x;
    for (int l = 0; l < BLOCKS; l++) {
        if (ckpt)
            ag_checkpoint(t, block_fn, &g_blocks[l], 1, &h, 1, &h);
        else
            h = block_ops(t, &g_blocks[l], h);
    }
    ag_tensor *loss = ag_mean(t, ag_mul(t, h, h), AG_ALL, false);
    if (ag_backward(t, loss) != AG_OK) {
        fprintf(stderr, "bench_checkpoint: %s\n", ag_tape_error(t));
        exit(1);
    }
    double ms = now_ms() - t0;
    *peak = ag_tape_bytes_peak(t);
    return ms;
}

static int n_params(void)
{
    return g_gpt ? nn_params_count(g_gpt_params) : 4 * BLOCKS;
}

/* Every parameter, block by block. */
static ag_tensor *param(int i)
{
    if (g_gpt) {
        int n;
        return nn_params_tensors(g_gpt_params, &n)[i];
    }
    block *b = &g_blocks[i / 4];
    ag_tensor *p[4] = {b->w1, b->b1, b->w2, b->b2};
    return p[i % 4];
}

static void zero_grads(void)
{
    for (int i = 0; i < n_params(); i++)
        ag_zero_grad(param(i));
}

/* The gradients of both runs agree to the bit (checked once, untimed). */
static bool same_grads(ag_tape *t, ag_tensor *x)
{
    size_t peak;
    int np = n_params();
    void **keep = malloc((size_t)np * sizeof *keep);
    bool same = true;
    for (int pass = 0; pass < 2; pass++) {
        zero_grads();
        step(t, x, pass == 1, &peak);
        for (int i = 0; i < np; i++) {
            ag_tensor *g = ag_grad(param(i));
            size_t bytes = (size_t)ag_numel(g) * sizeof(float);
            if (pass == 0) {
                keep[i] = malloc(bytes);
                memcpy(keep[i], ag_data(g), bytes);
            } else {
                same = same && memcmp(keep[i], ag_data(g), bytes) == 0;
                free(keep[i]);
            }
        }
        ag_tape_reset(t);
    }
    free(keep);
    return same;
}

/* The 16-layer GPT and random windows of tokens. */
static void gpt_setup(int64_t batch, ag_rng *rng)
{
    g_gpt_params = nn_params_new();
    nn_gpt_config c = {.vocab = GPT_VOCAB, .block = GPT_T, .layers = BLOCKS, .heads = 4,
                       .dim = 128};
    g_gpt = nn_gpt_new(g_gpt_params, "", &c, rng);
    g_batch = batch;
    g_tokens = malloc((size_t)(2 * batch * GPT_T) * sizeof *g_tokens);
    if (!g_gpt || !g_tokens) {
        fprintf(stderr, "bench_checkpoint: %s\n", g_gpt ? "out of memory" : ag_last_error());
        exit(1);
    }
    for (int64_t i = 0; i < 2 * batch * GPT_T; i++)
        g_tokens[i] = ag_rng_below(rng, GPT_VOCAB);
}

static void mlp_setup(int64_t hidden, ag_rng *rng)
{
    for (int l = 0; l < BLOCKS; l++) {
        block *b = &g_blocks[l];
        double s1 = 1.0 / 22.6, s2 = 1.0 / (double)hidden; /* keeps x of order 1 */
        b->w1 = ag_tensor_uniform(AG_F32, 2, (int64_t[]){hidden, WIDTH}, -s1, s1, rng);
        b->b1 = ag_tensor_uniform(AG_F32, 1, (int64_t[]){hidden}, -s1, s1, rng);
        b->w2 = ag_tensor_uniform(AG_F32, 2, (int64_t[]){WIDTH, hidden}, -s2, s2, rng);
        b->b2 = ag_tensor_uniform(AG_F32, 1, (int64_t[]){WIDTH}, -s2, s2, rng);
    }
    for (int i = 0; i < 4 * BLOCKS; i++)
        ag_set_requires_grad(param(i), true);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 9;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    int64_t batch = argc > 3 ? atoll(argv[3]) : 128;
    bool gpt = argc > 4 && strncmp(argv[4], "gpt", 3) == 0;
    g_gpt_keep = argc > 4 && strcmp(argv[4], "gpt-keep") == 0
                     ? NN_GPT_KEEP_FC | NN_GPT_KEEP_PROJ : 0;
    int64_t hidden = argc > 4 && !gpt ? atoll(argv[4]) : WIDTH;
    g_mlp_keep = argc > 4 && !gpt && strstr(argv[4], "-keep");
    if (reps < 1 || reps > MAX_REPS || batch < 1 || hidden < 1) {
        fprintf(stderr, "usage: bench_checkpoint [repeats 1..%d] [threads] [batch] "
                        "[hidden[-keep] | gpt | gpt-keep]\n", MAX_REPS);
        return 2;
    }
    ag_set_num_threads(threads);
    if (threads == 1)
        g_clock = CLOCK_THREAD_CPUTIME_ID;
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    if (gpt)
        gpt_setup(batch, &rng);
    else
        mlp_setup(hidden, &rng);
    ag_tensor *x = ag_tensor_uniform(AG_F32, 2, (int64_t[]){batch, WIDTH}, -1, 1, &rng);
    ag_tape *t = ag_tape_new();
    if (!same_grads(t, x)) {
        fprintf(stderr, "bench_checkpoint: gradients differ with checkpoints\n");
        return 1;
    }
    static double plain[MAX_REPS], ckpt[MAX_REPS], ratio[MAX_REPS];
    size_t peak_plain = 0, peak_ckpt = 0;
    for (int r = 0; r < reps; r++) {
        /* alternate which runs first, so neither always gets a warm cache */
        for (int k = 0; k < 2; k++) {
            bool with = (k == 1) != (r % 2 == 1);
            zero_grads();
            double ms = step(t, x, with, with ? &peak_ckpt : &peak_plain);
            (with ? ckpt : plain)[r] = ms;
            ag_tape_reset(t);
        }
        ratio[r] = ckpt[r] / plain[r];
    }
    double mp = bench_median(plain, reps), mc = bench_median(ckpt, reps);
    printf("ckpt_plain_ms %.3f\nckpt_ms %.3f\nckpt_time_ratio %.4f\n", mp, mc, mc / mp);
    printf("ckpt_time_ratio_paired %.4f\n", bench_median(ratio, reps));
    printf("ckpt_plain_peak_mb %.3f\nckpt_peak_mb %.3f\nckpt_peak_ratio %.4f\n",
           (double)peak_plain / (1 << 20), (double)peak_ckpt / (1 << 20),
           (double)peak_ckpt / (double)peak_plain);
    ag_tape_free(t);
    ag_tensor_free(x);
    if (gpt) {
        nn_gpt_free(g_gpt);
        nn_params_free(g_gpt_params);
        free(g_tokens);
    } else {
        for (int i = 0; i < 4 * BLOCKS; i++)
            ag_tensor_free(param(i));
    }
    return 0;
}
