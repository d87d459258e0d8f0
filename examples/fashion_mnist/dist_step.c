/* dist_step.c — data-parallel training steps: --dist (one shard of each
 * global batch per MPI rank, gradients summed by dist/'s reducer) and
 * --shards R (the same R shards one after the other in one process,
 * gradients added in shard order), which give byte-identical models.
 *
 * A global batch of B rows (positions pos..pos+B of the epoch's shuffled
 * order, the same on every rank: data order depends on the sample's
 * global index only) is cut into R shards, shard s = rows [s B / R,
 * (s+1) B / R).  Each shard's loss is the SUM of its rows' cross-entropy
 * divided by B, so the shards' gradients add up to the gradient of the
 * global batch's mean, whatever the shard sizes; every shard's gradient
 * starts from zero; the sum runs in shard order, ((g0 + g1) + g2) + ...,
 * in the parameters' dtype — the order dist_reducer_wait uses.  Nothing in
 * the models draws random numbers during training (no dropout); a model
 * that did would key its draws by global sample index, not by shard.
 *
 * --dist shards the optimizer step (ZeRO stage 1, dist_reducer_opts.update):
 * each rank updates the part of every parameter whose sum it received and
 * the ranks exchange parameters, not gradients; the optimizer updates each
 * element on its own, so the model is the one a whole step gives, which
 * --shards takes.  At the end of every epoch the optimizer's state is
 * gathered, so that every rank holds all of it (rank 0 checkpoints it). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"
#ifdef TG_HAVE_DIST
#include "dist.h"
#endif

/* Every eighth step of --dist reduces without the hook, to measure what
 * the reduction costs when backward hides none of it. */
#define PROBE_EVERY 8

struct fm_dist {
    bool mpi;                 /* --dist; else --shards */
    int rank, ranks;          /* --dist: this rank, the ranks; --shards: 0, R */
    const nn_dataset *ds;
    const int64_t *order;     /* the epoch's sample order (the batcher's) */
    int64_t pos, batch;       /* next global batch starts at order[pos] */
    float lut[256];           /* pixel -> input, as nn_batcher computes it */
    int64_t *labels;          /* one shard's labels (room for batch) */
    int n;
    ag_tensor **params;       /* the optimizer's, in forward order */
    optim *opt;
    ag_tensor **acc;          /* --shards: the shard-order sum of the gradients */
    double backward_s;        /* this rank's time in backward, all steps */
    int64_t steps;
#ifdef TG_HAVE_DIST
    dist_reducer *red;
#endif
};

int fm_dist_init(fm_config *c)
{
    if (!c->dist)
        return FM_EXIT_OK;
#ifdef TG_HAVE_DIST
    if (dist_init(NULL, NULL) != AG_OK) {
        fprintf(stderr, "--dist: %s\n", ag_last_error());
        return FM_EXIT_ERROR;
    }
    if (dist_rank() != 0) { /* rank 0 prints, logs and saves */
        c->quiet = true;
        c->save_path = c->log_path = c->plot_path = NULL;
        c->explain = 0;
        if (!freopen("/dev/null", "w", stdout)) {
            fprintf(stderr, "--dist: rank %d cannot silence its output\n", dist_rank());
            return FM_EXIT_ERROR;
        }
    }
    printf("data-parallel: %d ranks over MPI, each 1/%d of every batch\n", dist_size(),
           dist_size());
    return FM_EXIT_OK;
#else
    fprintf(stderr, "--dist: this fashion_mnist was built without MPI (install "
                    "libopenmpi-dev and rebuild; meson -Dmpi=enabled insists)\n");
    return FM_EXIT_USAGE;
#endif
}

int fm_dist_finalize(const fm_config *c, int rc)
{
#ifdef TG_HAVE_DIST
    if (c->dist && dist_finalize() != AG_OK) {
        fprintf(stderr, "--dist: %s\n", ag_last_error());
        return rc == FM_EXIT_OK ? FM_EXIT_ERROR : rc;
    }
#else
    (void)c;
#endif
    return rc;
}

void fm_dist_free(fm_dist *d)
{
    if (!d)
        return;
    for (int k = 0; d->acc && k < d->n; k++)
        ag_tensor_free(d->acc[k]);
#ifdef TG_HAVE_DIST
    dist_reducer_free(d->red);
#endif
    free(d->acc);
    free(d->params);
    free(d->labels);
    free(d);
}

#ifdef TG_HAVE_DIST
/* The reducer's update: this rank's part of the optimizer step. */
static ag_status step_part(void *ctx, const int64_t *lo, const int64_t *hi)
{
    return optim_step_parts(((fm_dist *)ctx)->opt, lo, hi);
}
#endif

/* --dist: the same weights on every rank (rank 0's), and the reducer. */
static bool dist_setup(fm_dist *d, const fm_config *c)
{
#ifdef TG_HAVE_DIST
    d->rank = dist_rank();
    d->ranks = dist_size();
    dist_reducer_opts o = {.probe_every = PROBE_EVERY, .update = step_part, .update_ctx = d,
                           .no_shared_memory = c->dist_messages};
    d->red = dist_broadcast(d->params, d->n, 0) == AG_OK
                 ? dist_reducer_new(d->params, d->n, &o) : NULL;
    return d->red != NULL;
#else
    (void)d, (void)c;
    return false;
#endif
}

/* --shards: a gradient-sized sum buffer per parameter. */
static bool shards_setup(fm_dist *d)
{
    if (!(d->acc = calloc((size_t)d->n, sizeof *d->acc)))
        return false;
    for (int k = 0; k < d->n; k++) {
        const ag_tensor *p = d->params[k];
        if (!(d->acc[k] = ag_tensor_new(ag_dtype_of(p), ag_ndim(p), ag_shape(p))))
            return false;
    }
    return true;
}

fm_dist *fm_dist_new(const fm_config *c, fm_model *m, optim *opt, const nn_dataset *train)
{
    fm_dist *d = calloc(1, sizeof *d);
    int n = 0;
    ag_tensor **p = nn_params_tensors(m->params, &n);
    if (!d || !p || !(d->params = malloc((size_t)n * sizeof *p)) ||
        !(d->labels = malloc((size_t)c->batch * sizeof *d->labels))) {
        fm_dist_free(d);
        ag_set_last_error("out of memory");
        return NULL;
    }
    memcpy(d->params, p, (size_t)n * sizeof *p);
    d->n = n;
    d->opt = opt;
    d->mpi = c->dist;
    d->ranks = c->shards;
    d->ds = train;
    d->batch = c->batch;
    for (int v = 0; v < 256; v++)
        d->lut[v] = (float)((v / 255.0 - NN_FASHION_MNIST_MEAN) / NN_FASHION_MNIST_STD);
    if (!(d->mpi ? dist_setup(d, c) : shards_setup(d))) {
        fm_dist_free(d);
        return NULL;
    }
    return d;
}

int64_t fm_dist_next(fm_dist *d, const nn_batcher *it)
{
    int64_t left = nn_dataset_count(d->ds) - d->pos;
    int64_t r = left < d->batch ? left : d->batch;
    d->order = nn_batcher_order(it);
    d->pos += r;
    if (r == 0)
        d->pos = 0; /* the next epoch starts from its first sample */
    return r;
}

/* x[i] = lut[image idx[i]], row by row, two rows' images prefetched ahead
 * (the order is random: the hardware prefetcher cannot guess it). */
static void fill_rows(const float *restrict lut, const uint8_t *restrict img,
                      const int64_t *restrict idx, int64_t rows, int64_t F, float *restrict x)
{
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t j = 0; i + 2 < rows && j < F; j += 64)
            __builtin_prefetch(img + idx[i + 2] * F + j);
        const uint8_t *src = img + idx[i] * F;
        for (int64_t j = 0; j < F; j++)
            x[i * F + j] = lut[src[j]];
    }
}

/* Shard s of the r rows of the global batch that ends at d->pos: its
 * forward and backward (gradients from zero); returns its loss, adds its
 * correct predictions to hits.  NaN on error (message on stderr). */
static double shard_pass(fm_dist *d, ag_tape *t, fm_model *m, int64_t r, int s,
                         int64_t *hits)
{
    const int64_t lo = r * s / d->ranks, rows = r * (s + 1) / d->ranks - lo;
    const int64_t *idx = d->order + d->pos - r + lo;
    const int64_t F = nn_dataset_features(d->ds);
    ag_tensor *x = ag_tape_empty(t, AG_F32, 2, (int64_t[]){rows, F});    /* (rows, 784) */
    if (x)
        fill_rows(d->lut, nn_dataset_images(d->ds), idx, rows, F, ag_data(x));
    for (int64_t i = 0; x && i < rows; i++)
        d->labels[i] = nn_dataset_labels(d->ds)[idx[i]];
    for (int k = 0; k < d->n; k++)
        ag_zero_grad(d->params[k]);
    ag_tensor *logits = fm_model_forward(t, m, x);                        /* (rows, 10) */
    ag_ce_opts sum = {.ignore_index = AG_CE_NO_IGNORE, .reduction = AG_REDUCE_SUM};
    ag_tensor *loss = ag_mul_scalar(t, nn_cross_entropy_opts(t, logits, d->labels, rows, &sum),
                                    1.0 / (double)r);
#ifdef TG_HAVE_DIST
    if (d->mpi && loss && dist_reducer_begin(d->red, t) != AG_OK)
        loss = NULL;
#endif
    double t0 = fm_now();
    if (!loss || ag_backward(t, loss) != AG_OK) {
        fprintf(stderr, "training step failed: %s\n",
                ag_tape_error(t) ? ag_tape_error(t) : ag_last_error());
        return NAN;
    }
    d->backward_s += fm_now() - t0;
    const float *lg = ag_data(logits);
    for (int64_t i = 0; i < rows; i++)
        *hits += fm_argmax_row(lg + i * FM_CLASSES, FM_CLASSES) == d->labels[i];
    double l = ag_item(loss);
    ag_tape_reset(t);
    return l;
}

/* acc[k] (+)= grad[k], in the parameter's dtype; false (message on
 * stderr) for a parameter backward did not reach. */
static bool add_grads(fm_dist *d, bool first)
{
    for (int k = 0; k < d->n; k++) {
        const ag_tensor *g = ag_grad(d->params[k]);
        if (!g) {
            fprintf(stderr, "--shards: parameter %s got no gradient\n",
                    ag_tensor_name(d->params[k]));
            return false;
        }
        int64_t n = ag_numel(g);
        if (ag_dtype_of(g) == AG_F32) {
            float *a = ag_data(d->acc[k]);
            const float *v = ag_data_const(g);
            for (int64_t i = 0; i < n; i++)
                a[i] = first ? v[i] : a[i] + v[i];
        } else {
            double *a = ag_data(d->acc[k]);
            const double *v = ag_data_const(g);
            for (int64_t i = 0; i < n; i++)
                a[i] = first ? v[i] : a[i] + v[i];
        }
    }
    return true;
}

/* --shards: every shard in turn, the gradients summed in shard order. */
static double shards_step(fm_dist *d, ag_tape *t, fm_model *m, int64_t r, int64_t *hits)
{
    double loss = 0;
    for (int s = 0; s < d->ranks; s++) {
        double l = shard_pass(d, t, m, r, s, hits);
        if (isnan(l) || !add_grads(d, s == 0))
            return NAN;
        loss = s == 0 ? l : loss + l;
    }
    for (int k = 0; k < d->n; k++) {
        ag_tensor *g = ag_grad(d->params[k]);
        memcpy(ag_data(g), ag_data_const(d->acc[k]),
               (size_t)ag_numel(g) * ag_dtype_size(ag_dtype_of(g)));
    }
    return loss;
}

/* --dist: this rank's shard, the reduction, the loss and hits summed. */
static double dist_step(fm_dist *d, ag_tape *t, fm_model *m, int64_t r, int64_t *hits)
{
#ifdef TG_HAVE_DIST
    int64_t mine = 0;
    double v[2] = {shard_pass(d, t, m, r, d->rank, &mine), 0};
    v[1] = (double)mine;
    /* a rank that failed still takes part, so the others are not left
     * waiting: its NaN loss reaches every rank through the sum */
    if (dist_reducer_wait(d->red) != AG_OK) {
        fprintf(stderr, "rank %d: the gradient exchange or its optimizer step failed: %s\n",
                d->rank, ag_last_error());
        v[0] = NAN;
    }
    if (dist_sum_f64(v, 2) != AG_OK) {
        fprintf(stderr, "summing the loss failed: %s\n", ag_last_error());
        return NAN;
    }
    if (isnan(v[0]))
        fprintf(stderr, "rank %d: a rank's step failed (see its message)\n", d->rank);
    *hits += (int64_t)v[1];
    return v[0];
#else
    (void)d, (void)t, (void)m, (void)r, (void)hits;
    return NAN;
#endif
}

double fm_dist_step(fm_dist *d, ag_tape *t, fm_model *m, int64_t r, int64_t *hits)
{
    double l = d->mpi ? dist_step(d, t, m, r, hits) : shards_step(d, t, m, r, hits);
    /* --dist: the reducer's wait took the step */
    if (!isnan(l) && !d->mpi && optim_step(d->opt) != AG_OK) {
        fprintf(stderr, "training step failed: %s\n", ag_last_error());
        return NAN;
    }
    d->steps++;
    return l;
}

bool fm_dist_epoch_end(fm_dist *d)
{
#ifdef TG_HAVE_DIST
    if (!d->mpi)
        return true;
    ag_tensor **buf = malloc((size_t)d->n * sizeof *buf);
    if (!buf) {
        fprintf(stderr, "--dist: out of memory\n");
        return false;
    }
    bool ok = true;
    const char *name;
    for (int s = 0; ok && (name = optim_state_name(d->opt, s)); s++) {
        int have = 0;
        for (int k = 0; k < d->n; k++)
            have += (buf[k] = optim_state_buffer(d->opt, d->params[k], name)) != NULL;
        /* the same on every rank: every parameter takes every step */
        if (have == d->n && dist_reducer_gather(d->red, buf) != AG_OK) {
            fprintf(stderr, "--dist: gathering the optimizer's %s: %s\n", name,
                    ag_last_error());
            ok = false;
        }
    }
    free(buf);
    return ok;
#else
    (void)d;
    return true;
#endif
}

void fm_dist_report(const fm_dist *d, FILE *out)
{
    double bwd = d->steps ? 1e3 * d->backward_s / (double)d->steps : 0;
    if (!d->mpi) {
        fprintf(out, "shards: %d per batch in one process, backward %.3f ms per shard\n",
                d->ranks, d->steps ? bwd / d->ranks : 0);
        return;
    }
#ifdef TG_HAVE_DIST
    dist_reducer_stats s = dist_reducer_stats_get(d->red);
    double hid = s.steps ? 1e3 * s.wait_s / (double)s.steps : 0;
    double bare = s.probe_steps ? 1e3 * s.probe_wait_s / (double)s.probe_steps : 0;
    fprintf(out, "dist: %d ranks (%s), %d buckets of %.1f KiB in all per step; backward %.3f ms "
                 "per step; allreduce wait %.3f ms per step with overlap, %.3f ms on the "
                 "%lld probe steps without: %.0f%% of the allreduce hidden behind backward\n",
            d->ranks, s.shared_memory ? "through shared memory" : "MPI messages", s.buckets,
            (double)s.bytes / 1024, bwd, hid, bare,
            (long long)s.probe_steps, bare > 0 ? 100 * (1 - hid / bare) : 0.0);
#endif
}
