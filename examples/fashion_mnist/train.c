/* train.c — the training run: model, optimizer and schedule from the
 * configuration, epochs of shuffled minibatches, evaluation after each
 * epoch, the CSV log, saving and resuming, the plot and --explain. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

#define SGD_MOMENTUM 0.9
#define STEP_GAMMA 0.2

typedef struct trainer {
    const fm_config *c;
    fm_model *m;
    optim *opt;
    optim_sched *sched;
    ag_rng rng;                 /* initialisation, then shuffling */
    /* saved in the checkpoint: */
    ag_tensor *state;           /* [1] f64: epochs done */
    ag_tensor *last_row;        /* [5] f64: that epoch's CSV row (train loss, train
                                   acc, test loss, test acc, seconds) */
    nn_dataset *train, *test, *val; /* val: held out of train, or NULL */
    nn_batcher *it;
    ag_tape *tape;
    FILE *csv;
    int first_epoch;            /* 1, or the one after a resumed checkpoint */
    bool killed;                /* c->kill_after_write struck (tests) */
    fm_dist *dist;              /* --dist / --shards (dist_step.c), else NULL */
} trainer;

static optim *make_optimizer(const fm_config *c, nn_params *p)
{
    int n;
    ag_tensor **w = nn_params_tensors(p, &n);
    if (c->optimizer == FM_OPT_SGD) {
        optim_sgd_opts o = optim_sgd_defaults();
        o.lr = c->lr;
        o.momentum = SGD_MOMENTUM;
        return optim_sgd(w, n, o);
    }
    optim_adam_opts o = c->optimizer == FM_OPT_ADAM ? optim_adam_defaults()
                                                    : optim_adamw_defaults();
    o.lr = c->lr;
    return c->optimizer == FM_OPT_ADAM ? optim_adam(w, n, o) : optim_adamw(w, n, o);
}

/* Schedules step once per batch; NULL for "none" (not an error). */
static optim_sched *make_schedule(const fm_config *c, optim *o, int64_t batches)
{
    if (c->schedule == FM_SCHED_COSINE)
        return optim_sched_cosine(o, (int64_t)c->epochs * batches, 0.0);
    if (c->schedule == FM_SCHED_STEP) {
        int64_t every = c->epochs >= 3 ? c->epochs / 3 : 1;
        return optim_sched_step(o, every * batches, STEP_GAMMA);
    }
    return NULL;
}

/* Names and tensors of the checkpoint: the parameters plus trainer.epoch
 * and trainer.last_row. */
static ag_status checkpoint(trainer *t, const char *path, bool load)
{
    int n;
    ag_tensor **w = nn_params_tensors(t->m->params, &n);
    const char *const *names = nn_params_names(t->m->params, &n);
    const char *all_names[2 * FM_MAX_HIDDEN + 4];
    ag_tensor *all[2 * FM_MAX_HIDDEN + 4];
    memcpy(all_names, names, (size_t)n * sizeof *names);
    memcpy(all, w, (size_t)n * sizeof *w);
    all_names[n] = "trainer.epoch";
    all[n] = t->state;
    all_names[n + 1] = "trainer.last_row";
    all[n + 1] = t->last_row;
    return load ? optim_checkpoint_load(path, all_names, all, n + 2, t->opt, t->sched, &t->rng)
                : optim_checkpoint_save(path, all_names, all, n + 2, t->opt, t->sched, &t->rng);
}

/* After a resume: the checkpoint's trainer state in range before any use
 * (a crafted epoch of -5 wrote past the history array; NaN or 1e10 made
 * the cast to int undefined).  The epoch's CSV row into *row. */
static bool resumed_state_ok(const trainer *t, fm_epoch_row *row)
{
    const double e = ag_get(t->state, 0);
    if (!(e >= 0 && e <= t->c->epochs && e == floor(e))) {
        fprintf(stderr, "resume failed: %s: trainer.epoch = %.17g is not a whole number in "
                        "[0, %d] (--epochs)\n", t->c->resume_path, e, t->c->epochs);
        return false;
    }
    *row = (fm_epoch_row){
        .epoch = (int)e,
        .train_loss = ag_get(t->last_row, 0),
        .train_acc = ag_get(t->last_row, 1),
        .test_loss = ag_get(t->last_row, 2),
        .test_acc = ag_get(t->last_row, 3),
        .seconds = ag_get(t->last_row, 4),
    };
    return true;
}

/* Replaces the training set by all but c->val images, drawn with an rng
 * of its own so the training run's draws stay as they were. */
static ag_status hold_out(trainer *t)
{
    ag_rng r;
    ag_rng_seed(&r, t->c->seed ^ 0x76616cull);
    nn_dataset *rest = NULL;
    ag_status st = nn_dataset_split(t->train, t->c->val, &r, &rest, &t->val);
    if (st == AG_OK && nn_dataset_count(rest) == 0) {
        ag_set_last_error("no training images left");
        st = AG_ERR_ARG;
    }
    if (st == AG_OK) {
        nn_dataset_free(t->train);
        t->train = rest;
    } else {
        nn_dataset_free(rest);
    }
    return st;
}

static int setup(trainer *t)
{
    const fm_config *c = t->c;
    int rc = fm_load_data(c->data_dir, true, c->limit, &t->train);
    if (rc == FM_EXIT_OK)
        rc = fm_load_data(c->data_dir, false, c->test_limit, &t->test);
    if (rc != FM_EXIT_OK)
        return rc;
    if (c->val > 0 && hold_out(t) != AG_OK) {
        fprintf(stderr, "--val %lld: %s\n", (long long)c->val, ag_last_error());
        return FM_EXIT_USAGE;
    }
    ag_rng_seed(&t->rng, c->seed);
    nn_batch_opts bo = {.batch = c->batch, .mean = NN_FASHION_MNIST_MEAN,
                        .std = NN_FASHION_MNIST_STD};
    t->m = c->model == FM_MODEL_CNN ? fm_cnn_new(AG_F32, &t->rng)
                                    : fm_model_new(c->n_hidden, c->hidden, AG_F32, &t->rng);
    t->opt = t->m ? make_optimizer(c, t->m->params) : NULL;
    t->tape = ag_tape_new();
    t->state = ag_tensor_new(AG_F64, 1, (const int64_t[]){1});
    t->last_row = ag_tensor_new(AG_F64, 1, (const int64_t[]){5});
    if (!t->opt || !t->tape || !t->state || !t->last_row ||
        nn_batcher_new(t->train, &bo, &t->it) != AG_OK)
        goto fail;
    t->sched = make_schedule(c, t->opt, nn_batcher_count(t->it));
    if (c->schedule != FM_SCHED_NONE && !t->sched)
        goto fail;
    t->first_epoch = 1;
    fm_epoch_row last = {0};
    if (c->resume_path) {
        if (checkpoint(t, c->resume_path, true) != AG_OK) {
            fprintf(stderr, "resume failed: %s\n(resume a PATH.ckpt of --save with the flags "
                            "of the saved run: --model --epochs --batch --optimizer "
                            "--schedule --hidden --limit)\n", ag_last_error());
            return FM_EXIT_ERROR;
        }
        if (!resumed_state_ok(t, &last))
            return FM_EXIT_ERROR;
        t->first_epoch = last.epoch + 1;
        printf("resumed from %s after epoch %d\n", c->resume_path, last.epoch);
    }
    if (c->log_path) {
        t->csv = c->resume_path
                     ? fm_csv_resume(c->log_path, last.epoch, last.epoch ? &last : NULL, stderr)
                     : fm_csv_open(c->log_path, false, stderr);
        if (!t->csv)
            return FM_EXIT_ERROR;
    }
    if ((c->dist || c->shards) && !(t->dist = fm_dist_new(c, t->m, t->opt, t->train))) {
        fprintf(stderr, "%s: %s\n", c->dist ? "--dist" : "--shards", ag_last_error());
        return FM_EXIT_ERROR;
    }
    return FM_EXIT_OK;
fail:
    fprintf(stderr, "setup failed: %s\n", ag_last_error() ? ag_last_error() : "no memory");
    return FM_EXIT_ERROR;
}

static void teardown(trainer *t)
{
    if (t->csv)
        fclose(t->csv);
    fm_dist_free(t->dist);
    optim_sched_free(t->sched);
    optim_free(t->opt);
    nn_batcher_free(t->it);
    ag_tape_free(t->tape);
    ag_tensor_free(t->state);
    ag_tensor_free(t->last_row);
    fm_model_free(t->m);
    nn_dataset_free(t->train);
    nn_dataset_free(t->test);
    nn_dataset_free(t->val);
}

/* One optimisation step; returns the batch loss (NaN on error) and adds
 * the correct predictions to *hits. */
static double train_step(trainer *t, ag_tensor *x, const int64_t *y, int64_t r, int64_t *hits)
{
    if (t->dist) {
        double l = fm_dist_step(t->dist, t->tape, t->m, r, hits);
        if (!isnan(l) && t->sched)
            optim_sched_step_once(t->sched);
        return l;
    }
    optim_zero_grad(t->opt);
    ag_tensor *logits = fm_model_forward(t->tape, t->m, x);       /* (r, 10) */
    ag_tensor *loss = nn_cross_entropy(t->tape, logits, y, r);
    if (ag_backward(t->tape, loss) != AG_OK || optim_step(t->opt) != AG_OK) {
        fprintf(stderr, "training step failed: %s\n",
                ag_tape_error(t->tape) ? ag_tape_error(t->tape) : ag_last_error());
        return NAN;
    }
    if (t->sched)
        optim_sched_step_once(t->sched);
    const float *lg = ag_data(logits);
    for (int64_t i = 0; i < r; i++)
        *hits += fm_argmax_row(lg + i * FM_CLASSES, FM_CLASSES) == y[i];
    return ag_item(loss);
}

/* Trains one epoch into row (train loss, train acc, seconds); false on error. */
static bool train_epoch(trainer *t, int epoch, fm_epoch_row *row)
{
    fm_progress pr;
    fm_progress_begin(&pr, epoch, t->c->epochs, nn_dataset_count(t->train), t->c->quiet);
    nn_batcher_start(t->it, &t->rng);
    ag_tensor *x = NULL;
    const int64_t *y = NULL;
    int64_t r, hits = 0;
    /* --dist / --shards fill their shards themselves */
    while ((r = t->dist ? fm_dist_next(t->dist, t->it)
                        : nn_batcher_next(t->it, t->tape, &x, &y)) > 0) {
        double l = train_step(t, x, y, r, &hits);
        ag_tape_reset(t->tape);
        if (isnan(l))
            return false;
        fm_progress_update(&pr, r, l);
    }
    fm_progress_end(&pr);
    if (r < 0) {
        fprintf(stderr, "batching failed: %s\n", ag_last_error());
        return false;
    }
    if (t->dist && !fm_dist_epoch_end(t->dist))
        return false;
    *row = (fm_epoch_row){
        .epoch = epoch,
        .train_loss = pr.done ? pr.loss_sum / (double)pr.done : 0,
        .train_acc = pr.done ? (double)hits / (double)pr.done : 0,
        .seconds = fm_now() - pr.t0,
    };
    return true;
}

/* True (the epoch's files stop here) when the test hook kill_after_write
 * strikes at this, the k-th write of epoch `epoch`. */
static bool killed_after(trainer *t, int epoch, int k)
{
    const fm_config *c = t->c;
    const int last = c->stop_after > 0 && c->stop_after < c->epochs ? c->stop_after : c->epochs;
    t->killed = c->kill_after_write == k && epoch == last;
    return t->killed;
}

/* The files of an epoch, in this order, so that a kill at any point
 * resumes with no CSV row twice or missing and never leaves the model newer
 * than its checkpoint (each save is atomic: temporary, fsync, rename; the
 * CSV row is one flushed append):
 *   1. the checkpoint PATH.ckpt, which also holds this epoch's CSV row;
 *   2. the model PATH;
 *   3. the CSV row.
 * Killed before 1, the run resumes from the previous epoch and redoes this
 * one.  Killed after 1, it resumes from this epoch: the model may still be
 * one epoch older (never newer) until the next save, and fm_csv_resume
 * rewrites the log from the checkpoint (earlier rows kept, this epoch's row
 * taken from the checkpoint, anything later or torn dropped). */
static bool write_epoch(trainer *t, const fm_epoch_row *row)
{
    const char *path = t->c->save_path;
    int k = 0;
    if (path) {
        char ckpt[4096];
        snprintf(ckpt, sizeof ckpt, "%s.ckpt", path);
        ag_set(t->state, 0, row->epoch);
        const double r[5] = {row->train_loss, row->train_acc, row->test_loss, row->test_acc,
                             row->seconds};
        for (int i = 0; i < 5; i++)
            ag_set(t->last_row, i, r[i]);
        if (checkpoint(t, ckpt, false) != AG_OK) {
            fprintf(stderr, "saving the checkpoint failed: %s\n", ag_last_error());
            return false;
        }
        if (killed_after(t, row->epoch, ++k))
            return false;
        if (fm_model_save(t->m, path, row->epoch, t->c) != AG_OK) {
            fprintf(stderr, "saving the model failed: %s\n", ag_last_error());
            return false;
        }
        if (killed_after(t, row->epoch, ++k))
            return false;
    }
    if (t->csv) {
        fm_csv_row(t->csv, row);
        if (killed_after(t, row->epoch, ++k))
            return false;
    }
    return true;
}

/* Evaluation, summary line, then the epoch's files (write_epoch). */
static bool finish_epoch(trainer *t, fm_epoch_row *row, fm_metrics *mt)
{
    if (fm_evaluate(t->m, t->test, t->tape, mt) != AG_OK) {
        fprintf(stderr, "evaluation failed: %s\n", ag_last_error());
        return false;
    }
    row->test_loss = mt->loss;
    row->test_acc = mt->acc;
    fm_print_epoch(stdout, row, t->c->epochs);
    if (t->val) {
        fm_metrics vm;
        if (fm_evaluate(t->m, t->val, t->tape, &vm) != AG_OK) {
            fprintf(stderr, "validation failed: %s\n", ag_last_error());
            return false;
        }
        printf("epoch %2d/%d  val loss %.4f  val acc %.2f%% (%lld held-out images)\n",
               row->epoch, t->c->epochs, vm.loss, 100 * vm.acc,
               (long long)nn_dataset_count(t->val));
    }
    return write_epoch(t, row);
}

static void after_training(trainer *t, const fm_metrics *mt, const fm_epoch_row *rows, int n)
{
    int64_t hits = 0;
    for (int k = 0; k < FM_CLASSES; k++)
        hits += mt->confusion[k][k];
    printf("final test accuracy: %.2f%% (%lld/%lld)\n", 100 * mt->acc, (long long)hits,
           (long long)mt->n);
    if (t->c->save_path)
        printf("model saved to %s (checkpoint %s.ckpt)\n", t->c->save_path, t->c->save_path);
    if (t->c->plot_path && fm_plot(t->c->plot_path, t->c->log_path, rows, n, stderr))
        printf("plot written to %s\n", t->c->plot_path);
    if (t->dist)
        fm_dist_report(t->dist, stdout);
}

int fm_run_train(const fm_config *c, fm_epoch_row *rows, int *n_rows)
{
    ag_set_num_threads(c->threads);
    trainer t = {.c = c};
    int rc = setup(&t), n = 0;
    fm_epoch_row *hist = rc == FM_EXIT_OK ? calloc((size_t)c->epochs, sizeof *hist) : NULL;
    if (rc == FM_EXIT_OK && !hist)
        rc = FM_EXIT_ERROR;
    fm_metrics mt = {0};
    int last = c->stop_after > 0 && c->stop_after < c->epochs ? c->stop_after : c->epochs;
    for (int e = t.first_epoch; rc == FM_EXIT_OK && e <= last; e++) {
        if (!train_epoch(&t, e, &hist[n]) || !finish_epoch(&t, &hist[n], &mt))
            rc = FM_EXIT_ERROR;
        else
            n++;
    }
    if (rc == FM_EXIT_OK && n == 0 && fm_evaluate(t.m, t.test, t.tape, &mt) != AG_OK)
        rc = FM_EXIT_ERROR;
    if (rc == FM_EXIT_OK)
        after_training(&t, &mt, hist, n);
    if (rc == FM_EXIT_OK && c->explain > 0 &&
        fm_explain(t.m, t.test, c->batch, c->explain, stdout) != AG_OK)
        rc = FM_EXIT_ERROR;
    if (rows && n > 0)                /* hist is NULL when setup failed */
        memcpy(rows, hist, (size_t)n * sizeof *hist);
    if (n_rows)
        *n_rows = n;
    free(hist);
    teardown(&t);
    return rc;
}
