/* eval.c — data loading, evaluation (loss, accuracy, confusion matrix),
 * the --explain report and the --eval command. */
#include <stdlib.h>
#include <sys/stat.h>

#include "trainer.h"

int fm_load_data(const char *dir, bool train, int64_t limit, nn_dataset **out)
{
    const char *d = dir ? dir : NN_FASHION_MNIST_DIR;
    struct stat sb;
    nn_dataset *ds = NULL;
    *out = NULL;
    if (nn_mnist_load(d, train, &ds) != AG_OK) {
        fprintf(stderr, "%s\n", ag_last_error());
        return !dir && stat(d, &sb) != 0 ? FM_EXIT_NO_DATA : FM_EXIT_ERROR;   /* not installed */
    }
    if (limit > 0 && limit < nn_dataset_count(ds)) {
        nn_dataset *sub = NULL;
        ag_status s = nn_dataset_subset(ds, 0, limit, &sub);
        nn_dataset_free(ds);
        if (s != AG_OK) {
            fprintf(stderr, "%s\n", ag_last_error());
            return FM_EXIT_ERROR;
        }
        ds = sub;
    }
    if (nn_dataset_features(ds) != FM_FEATURES || nn_dataset_classes(ds) != FM_CLASSES) {
        fprintf(stderr, "%s: expected 28x28 images in 10 classes\n", d);
        nn_dataset_free(ds);
        return FM_EXIT_ERROR;
    }
    *out = ds;
    return FM_EXIT_OK;
}

int fm_argmax_row(const float *row, int n)
{
    int best = 0;
    for (int j = 1; j < n; j++)
        if (row[j] > row[best])
            best = j;
    return best;
}

/* Adds one batch's summed loss, hits and confusion counts to out. */
static ag_status eval_batch(ag_tape *tape, fm_model *m, ag_tensor *x, const int64_t *y,
                            int64_t r, fm_metrics *out)
{
    ag_ce_opts ce = {.ignore_index = AG_CE_NO_IGNORE, .reduction = AG_REDUCE_SUM};
    ag_tensor *logits = fm_model_forward(tape, m, x);             /* (r, 10) */
    ag_tensor *loss = nn_cross_entropy_opts(tape, logits, y, r, &ce);
    if (!loss) {
        ag_set_last_error("evaluation: %s", ag_tape_error(tape));
        return ag_tape_status(tape);
    }
    const float *lg = ag_data(logits);
    out->loss += ag_item(loss);
    for (int64_t i = 0; i < r; i++)
        out->confusion[y[i]][fm_argmax_row(lg + i * FM_CLASSES, FM_CLASSES)]++;
    out->n += r;
    return AG_OK;
}

ag_status fm_evaluate(fm_model *m, const nn_dataset *ds, ag_tape *tape, fm_metrics *out)
{
    *out = (fm_metrics){0};
    nn_batch_opts bo = {.batch = m->cnn ? FM_EVAL_BATCH_CNN : FM_EVAL_BATCH,
                        .mean = NN_FASHION_MNIST_MEAN, .std = NN_FASHION_MNIST_STD};
    nn_batcher *it = NULL;
    ag_status st = nn_batcher_new(ds, &bo, &it);
    bool was = ag_tape_grad_enabled(tape);
    ag_tape_set_grad_enabled(tape, false);
    ag_tensor *x;
    const int64_t *y;
    int64_t r = 0;
    while (st == AG_OK && (r = nn_batcher_next(it, tape, &x, &y)) > 0) {
        st = eval_batch(tape, m, x, y, r, out);
        ag_tape_reset(tape);
    }
    if (st == AG_OK && r < 0)
        st = AG_ERR_STATE;
    ag_tape_set_grad_enabled(tape, was);
    nn_batcher_free(it);
    int64_t hits = 0;
    for (int c = 0; c < FM_CLASSES; c++)
        hits += out->confusion[c][c];
    out->loss = out->n ? out->loss / (double)out->n : 0;
    out->acc = out->n ? (double)hits / (double)out->n : 0;
    return st;
}

/* ---- --explain ---- */

typedef struct explain_ctx {
    fm_model *m;
    ag_tensor *x;           /* (B, 784) f64, persistent */
    const int64_t *y;       /* (B) */
    int64_t n;
} explain_ctx;

static ag_tensor *explain_loss(ag_tape *t, ag_tensor **params, void *ctx)
{
    (void)params;                 /* the model's own tensors, nudged in place */
    explain_ctx *e = ctx;
    return nn_cross_entropy(t, fm_model_forward(t, e->m, e->x), e->y, e->n);
}

/* An f64 copy of m, so that nudges of 1e-4 are not lost in f32 rounding. */
static fm_model *model_f64(const fm_model *m)
{
    int64_t hidden[FM_MAX_HIDDEN];
    for (int i = 0; i + 1 < m->n_layers; i++)
        hidden[i] = m->layers[i]->out;
    fm_model *d = m->cnn ? fm_cnn_new(AG_F64, NULL)
                         : fm_model_new(m->n_layers - 1, hidden, AG_F64, NULL);
    for (int k = 0; d && k < nn_params_count(m->params); k++) {
        const ag_tensor *src = nn_params_at(m->params, k);
        ag_tensor *dst = nn_params_at(d->params, k);
        for (int64_t i = 0; i < ag_numel(src); i++)
            ag_set(dst, i, ag_get(src, i));
    }
    return d;
}

ag_status fm_explain(const fm_model *m, const nn_dataset *ds, int64_t batch, int top,
                     FILE *out)
{
    int64_t rows = batch < nn_dataset_count(ds) ? batch : nn_dataset_count(ds);
    nn_batch_opts bo = {.batch = rows, .dtype = AG_F64, .mean = NN_FASHION_MNIST_MEAN,
                        .std = NN_FASHION_MNIST_STD};
    fm_model *d = model_f64(m);
    ag_tensor *x = ag_tensor_new(AG_F64, 2, (const int64_t[]){rows, FM_FEATURES});
    int64_t *y = malloc((size_t)(rows > 0 ? rows : 1) * sizeof *y);
    nn_batcher *it = NULL;
    ag_status st = d && x && y && rows > 0 ? nn_batcher_new(ds, &bo, &it) : AG_ERR_NOMEM;
    if (st == AG_OK && nn_batcher_next_into(it, x, y) != rows)
        st = AG_ERR_STATE;
    if (st == AG_OK) {
        fprintf(out, "explain: cross-entropy of the first %lld test images, in f64\n",
                (long long)rows);
        explain_ctx e = {d, x, y, rows};
        int n;
        ag_tensor **params = nn_params_tensors(d->params, &n);
        ag_explain_opts eo = {.top = top};
        st = ag_explain(explain_loss, &e, params, n, &eo, NULL, out);
    }
    if (st != AG_OK)
        fprintf(stderr, "explain failed: %s\n", ag_last_error() ? ag_last_error() : "no memory");
    nn_batcher_free(it);
    free(y);
    ag_tensor_free(x);
    fm_model_free(d);
    return st;
}

/* ---- --eval ---- */

int fm_run_eval(const fm_config *c)
{
    ag_set_num_threads(c->threads);
    fm_model *m = fm_model_load(c->eval_path, stderr);
    if (!m)
        return FM_EXIT_ERROR;
    nn_dataset *test = NULL;
    int rc = fm_load_data(c->data_dir, false, c->test_limit, &test);
    ag_tape *tape = rc == FM_EXIT_OK ? ag_tape_new() : NULL;
    fm_metrics mt;
    if (rc == FM_EXIT_OK && (!tape || fm_evaluate(m, test, tape, &mt) != AG_OK)) {
        fprintf(stderr, "evaluation failed: %s\n", ag_last_error());
        rc = FM_EXIT_ERROR;
    }
    if (rc == FM_EXIT_OK) {
        int64_t hits = 0;
        for (int k = 0; k < FM_CLASSES; k++)
            hits += mt.confusion[k][k];
        printf("test loss %.4f, test accuracy %.2f%% (%lld/%lld)\n", mt.loss, 100 * mt.acc,
               (long long)hits, (long long)mt.n);
        fm_print_confusion(stdout, &mt);
        if (c->explain > 0 && fm_explain(m, test, c->batch, c->explain, stdout) != AG_OK)
            rc = FM_EXIT_ERROR;
    }
    ag_tape_free(tape);
    nn_dataset_free(test);
    fm_model_free(m);
    return rc;
}
