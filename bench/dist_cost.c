/* dist_cost.c — docs/scaling.md's numbers: the ring-allreduce cost model
 * T(S) = 2 (R-1)/R * S / bandwidth + 2 (R-1) * latency for the Fashion-MNIST
 * MLP and the nanoGPT "baby" GPT (4 layers, 4 heads, d 128, block 64,
 * vocab 73), against their measured backward time per step and the
 * moments backward makes each gradient final (the gradient-ready hook).
 * Buckets are dist/'s (reverse parameter order, 128 KiB); a bucket's
 * allreduce starts when its last gradient is final and the previous
 * bucket's is done (one link), so
 *   exposed = max(0, end of the last bucket's allreduce - end of backward)
 * is what a step waits for after backward, and 1 - exposed / sum T the share
 * overlap hides.  Needs no MPI: the network is the model, the compute is
 * measured.  Usage: bench_dist_cost [steps] [threads] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "tapegrad.h"

#define BUCKET_BYTES ((size_t)128 << 10) /* DIST_BUCKET_BYTES */
#define MAX_P 128

static double now_s(void) { return bench_seconds(CLOCK_MONOTONIC); }

/* One model's step: its parameters in forward order and a loss builder. */
typedef struct model {
    const char *name;
    int64_t batch;
    nn_params *p;
    nn_mlp *mlp;
    nn_gpt *gpt;
    ag_tensor *x;             /* MLP input */
    int64_t *labels, *idx;    /* MLP labels / GPT tokens and targets */
} model;

static ag_tensor *loss_of(ag_tape *t, model *m)
{
    ag_tensor *logits;
    int64_t rows;
    if (m->mlp) {
        logits = nn_mlp_forward(t, m->mlp, m->x);
        rows = m->batch;
    } else {
        int64_t T = m->gpt->cfg.block, V = m->gpt->cfg.vocab;
        rows = m->batch * T;
        logits = ag_reshape(t, nn_gpt_forward(t, m->gpt, m->idx, m->batch, T), 2,
                            (int64_t[]){rows, V});
    }
    return nn_cross_entropy(t, logits, m->labels, rows);
}

/* When each parameter became final in the sweep under way. */
typedef struct ready_log {
    int n;
    ag_tensor **params;
    double t0, *at;           /* seconds after backward began */
} ready_log;

static void on_ready(ag_tensor *const *leaves, int n, void *ctx)
{
    ready_log *r = ctx;
    double t = now_s() - r->t0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < r->n; k++)
            if (r->params[k] == leaves[i])
                r->at[k] = t;
}

/* Median backward seconds over steps, and each parameter's median ready
 * time into ready[]. */
static double measure(model *m, int steps, double *ready)
{
    int n;
    ag_tensor **w = nn_params_tensors(m->p, &n);
    double *bwd = calloc((size_t)steps, sizeof *bwd);
    double *at = calloc((size_t)steps * (size_t)n, sizeof *at);
    ag_tape *t = ag_tape_new();
    ready_log r = {.n = n, .params = w};
    ag_tape_set_grad_ready(t, on_ready, &r);
    for (int s = -3; s < steps; s++) { /* 3 warm-up steps */
        nn_params_zero_grad(m->p);
        ag_tensor *loss = loss_of(t, m);
        r.at = at + (size_t)(s < 0 ? 0 : s) * (size_t)n;
        r.t0 = now_s();
        if (ag_backward(t, loss) != AG_OK) {
            fprintf(stderr, "%s: %s\n", m->name, ag_tape_error(t));
            exit(1);
        }
        if (s >= 0)
            bwd[s] = now_s() - r.t0;
        ag_tape_reset(t);
    }
    double *col = calloc((size_t)steps, sizeof *col);
    for (int k = 0; k < n; k++) {
        for (int s = 0; s < steps; s++)
            col[s] = at[(size_t)s * (size_t)n + (size_t)k];
        qsort(col, (size_t)steps, sizeof *col, bench_cmp);
        ready[k] = col[steps / 2];
    }
    qsort(bwd, (size_t)steps, sizeof *bwd, bench_cmp);
    double med = bwd[steps / 2];
    ag_tape_free(t);
    free(bwd);
    free(at);
    free(col);
    return med;
}

/* dist/'s buckets: from the last parameter, closed before one that would
 * pass the cap; each with its bytes and the time its last gradient is final. */
static int buckets_of(model *m, const double *ready, double *bytes, double *when)
{
    int n, nb = 0;
    ag_tensor **w = nn_params_tensors(m->p, &n);
    for (int k = n - 1; k >= 0; k--) {
        double b = (double)(ag_numel(w[k]) * 4);
        if (nb == 0 || bytes[nb - 1] + b > (double)BUCKET_BYTES) {
            bytes[nb] = 0;
            when[nb++] = 0;
        }
        bytes[nb - 1] += b;
        if (ready[k] > when[nb - 1])
            when[nb - 1] = ready[k];
    }
    return nb;
}

static double ring(double bytes, int R, double bw, double lat)
{
    return 2.0 * (R - 1) / R * bytes / bw + 2.0 * (R - 1) * lat;
}

static void report(model *m, int steps)
{
    double ready[MAX_P], bytes[MAX_P], when[MAX_P];
    int64_t np = nn_params_numel(m->p, false);
    double bwd = measure(m, steps, ready);
    int nb = buckets_of(m, ready, bytes, when);
    printf("\n%s, batch %lld per rank: %lld parameters (%.2f MB f32), backward %.3f ms per "
           "step (median of %d), %d buckets of <= 128 KiB\n", m->name, (long long)m->batch,
           (long long)np, np * 4 / 1e6, 1e3 * bwd, steps, nb);
    printf("  %-9s %5s %14s %16s %13s %8s\n", "link", "ranks", "1 bucket, ms", "buckets sum, ms",
           "exposed, ms", "hidden");
    static const struct { const char *name; double bw, lat; } links[] = {
        {"25 Gb/s", 25e9 / 8, 10e-6}, {"200 Gb/s", 200e9 / 8, 2e-6}};
    static const int ranks[] = {8, 64, 512};
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < 3; i++) {
            int R = ranks[i];
            double end = 0, sum = 0;
            for (int b = 0; b < nb; b++) {
                double tb = ring(bytes[b], R, links[l].bw, links[l].lat);
                end = (when[b] > end ? when[b] : end) + tb;
                sum += tb;
            }
            double exposed = end > bwd ? end - bwd : 0;
            printf("  %-9s %5d %14.3f %16.3f %13.3f %7.0f%%\n", links[l].name, R,
                   1e3 * ring((double)np * 4, R, links[l].bw, links[l].lat), 1e3 * sum,
                   1e3 * exposed, 100 * (1 - exposed / sum));
        }
}

static model mlp(int64_t batch, ag_rng *rng)
{
    model m = {.name = "MLP 784-256-128-10", .batch = batch, .p = nn_params_new()};
    m.mlp = nn_mlp_new(m.p, "fc", 4, (int64_t[]){784, 256, 128, 10}, true, NN_ACT_RELU, rng);
    m.x = ag_tensor_normal(AG_F32, 2, (int64_t[]){batch, 784}, 0, 1, rng);
    m.labels = malloc((size_t)batch * sizeof *m.labels);
    for (int64_t i = 0; i < batch; i++)
        m.labels[i] = (int64_t)ag_rng_below(rng, 10);
    return m;
}

static model gpt(int64_t batch, ag_rng *rng)
{
    nn_gpt_config cfg = {.vocab = 73, .block = 64, .layers = 4, .heads = 4, .dim = 128};
    model m = {.name = "GPT 4 layers, 4 heads, d 128, block 64, vocab 73", .batch = batch,
               .p = nn_params_new()};
    m.gpt = nn_gpt_new(m.p, "", &cfg, rng);
    int64_t n = batch * cfg.block;
    m.idx = malloc((size_t)n * sizeof *m.idx);
    m.labels = malloc((size_t)n * sizeof *m.labels);
    for (int64_t i = 0; i < n; i++) {
        m.idx[i] = (int64_t)ag_rng_below(rng, (uint64_t)cfg.vocab);
        m.labels[i] = (int64_t)ag_rng_below(rng, (uint64_t)cfg.vocab);
    }
    return m;
}

static void model_free(model *m)
{
    nn_mlp_free(m->mlp);
    nn_gpt_free(m->gpt);
    nn_params_free(m->p);
    ag_tensor_free(m->x);
    free(m->labels);
    free(m->idx);
}

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 30;
    ag_set_num_threads(argc > 2 ? atoi(argv[2]) : 1);
    if (steps < 1) {
        fprintf(stderr, "usage: %s [steps >= 1] [threads]\n", argv[0]);
        return 2;
    }
    printf("ring allreduce: 2 (R-1)/R S / bandwidth + 2 (R-1) latency; 25 Gb/s with 10 us, "
           "200 Gb/s with 2 us per message; %d thread(s)\n", ag_get_num_threads());
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    model ms[] = {mlp(128, &rng), mlp(32, &rng), gpt(12, &rng)};
    for (size_t i = 0; i < sizeof ms / sizeof *ms; i++) {
        if (!ms[i].p || (!ms[i].mlp && !ms[i].gpt)) {
            fprintf(stderr, "model: %s\n", ag_last_error());
            return 1;
        }
        report(&ms[i], steps);
        model_free(&ms[i]);
    }
    return 0;
}
