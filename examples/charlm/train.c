/* train.c — the training run: random windows of the training text, one
 * optimizer step each (cross-entropy, gradient norm clipped, Adam or
 * AdamW), an evaluation every --eval-every steps and after the last, the
 * CSV log, saving and resuming, the plot and the sample. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "charlm.h"

#define LN2 0.69314718055994530942
/* trainer.state: steps done, training seconds, and that step's CSV row */
#define STATE_LEN 4

typedef struct trainer {
    const cl_config *c;
    cl_text text;
    cl_model *m;
    optim *opt;
    ag_rng rng;                 /* initialisation, then batches */
    ag_tensor *state;           /* [STATE_LEN] f64, saved in the checkpoint */
    ag_tape *tape;
    FILE *csv;
    int64_t *x, *y;             /* (batch * seq) */
    int64_t first;              /* first step to run (1, or after a resume) */
    double seconds;             /* training time so far, evaluation excluded */
    double bits;                /* loss (bits) summed since the last evaluation */
    int64_t n_bits;
    size_t tape_peak;           /* the largest ag_tape_bytes_peak of a step */
    cl_row *rows;
    int max_rows, n_rows;
} trainer;

static optim *make_optimizer(const cl_config *c, nn_params *p)
{
    int n;
    ag_tensor **w = nn_params_tensors(p, &n);
    optim_adam_opts o = c->kind == CL_GPT ? optim_adamw_defaults() : optim_adam_defaults();
    o.lr = c->lr;
    return c->kind == CL_GPT ? optim_adamw(w, n, o) : optim_adam(w, n, o);
}

/* The checkpoint: the parameters plus trainer.state. */
static ag_status checkpoint(trainer *t, const char *path, bool load)
{
    int n;
    ag_tensor **w = nn_params_tensors(t->m->params, &n);
    const char *const *names = nn_params_names(t->m->params, &n);
    const char **all_names = malloc((size_t)(n + 1) * sizeof *all_names);
    ag_tensor **all = malloc((size_t)(n + 1) * sizeof *all);
    if (!all_names || !all) {
        free(all_names);
        free(all);
        ag_set_last_error("checkpoint: out of memory");
        return AG_ERR_NOMEM;
    }
    memcpy(all_names, names, (size_t)n * sizeof *names);
    memcpy(all, w, (size_t)n * sizeof *w);
    all_names[n] = "trainer.state";
    all[n] = t->state;
    ag_status s = load ? optim_checkpoint_load(path, all_names, all, n + 1, t->opt, NULL, &t->rng)
                       : optim_checkpoint_save(path, all_names, all, n + 1, t->opt, NULL, &t->rng);
    free(all_names);
    free(all);
    return s;
}

/* A resumed state in range before any use; its CSV row into *row. */
static bool resumed_ok(const trainer *t, cl_row *row)
{
    const double s = ag_get(t->state, 0), sec = ag_get(t->state, 1);
    if (!(s >= 1 && s <= (double)t->c->steps && s == floor(s) && sec >= 0 && isfinite(sec))) {
        fprintf(stderr, "resume failed: %s: trainer.state (step %.17g, seconds %.17g) is not a "
                        "step in [1, %lld] (--steps)\n", t->c->resume_path, s, sec,
                (long long)t->c->steps);
        return false;
    }
    *row = (cl_row){.step = (int64_t)s, .seconds = sec, .train_bpc = ag_get(t->state, 2),
                    .val_bpc = ag_get(t->state, 3)};
    return true;
}

static int resume(trainer *t)
{
    cl_row last;
    if (checkpoint(t, t->c->resume_path, true) != AG_OK) {
        fprintf(stderr, "resume failed: %s\n(resume a PATH.ckpt of --save with the flags of "
                        "the saved run: --model --batch --seq --data)\n", ag_last_error());
        return CL_EXIT_ERROR;
    }
    if (!resumed_ok(t, &last))
        return CL_EXIT_ERROR;
    t->first = last.step + 1;
    t->seconds = last.seconds;
    printf("resumed from %s after step %lld\n", t->c->resume_path, (long long)last.step);
    if (t->c->log_path) {
        t->csv = cl_csv_open(t->c->log_path, last.step, stderr);
        if (!t->csv)
            return CL_EXIT_ERROR;
        cl_csv_row(t->csv, &last);
    }
    return CL_EXIT_OK;
}

static int setup(trainer *t)
{
    const cl_config *c = t->c;
    int rc = cl_text_load(c->data_path, strcmp(c->data_path, CL_DEFAULT_DATA) == 0, &t->text);
    if (rc != CL_EXIT_OK)
        return rc;
    if (t->text.n - t->text.n_train < c->seq + 1 || t->text.n_train < c->seq + 2) {
        fprintf(stderr, "charlm: %s is too short for --seq %lld (%lld characters)\n",
                c->data_path, (long long)c->seq, (long long)t->text.n);
        return CL_EXIT_USAGE;
    }
    if (c->sample > 0 && !cl_prompt_ok(&t->text, c->prompt, stderr))
        return CL_EXIT_USAGE;
    ag_rng_seed(&t->rng, c->seed);
    t->m = cl_model_new(c->kind, t->text.vocab_size, c->seq, &t->rng);
    if (t->m && c->checkpoint && nn_gpt_set_checkpoint(t->m->gpt, c->checkpoint, 0) != AG_OK) {
        fprintf(stderr, "setup failed: %s\n", ag_last_error());
        return CL_EXIT_ERROR;
    }
    t->opt = t->m ? make_optimizer(c, t->m->params) : NULL;
    t->tape = ag_tape_new();
    t->state = ag_tensor_new(AG_F64, 1, (const int64_t[]){STATE_LEN});
    t->x = malloc((size_t)(2 * c->batch * c->seq) * sizeof *t->x);
    if (!t->opt || !t->tape || !t->state || !t->x) {
        fprintf(stderr, "setup failed: %s\n", ag_last_error() ? ag_last_error() : "no memory");
        return CL_EXIT_ERROR;
    }
    t->y = t->x + c->batch * c->seq;
    t->first = 1;
    printf("charlm %s: %lld parameters, vocabulary %d, %lld training / %lld held-out "
           "characters\n", cl_kind_name(c->kind), (long long)nn_params_numel(t->m->params, false),
           t->text.vocab_size, (long long)t->text.n_train,
           (long long)(t->text.n - t->text.n_train));
    if (c->resume_path)
        return resume(t);
    if (c->log_path && !(t->csv = cl_csv_open(c->log_path, 0, stderr)))
        return CL_EXIT_ERROR;
    return CL_EXIT_OK;
}

static void teardown(trainer *t)
{
    if (t->csv)
        fclose(t->csv);
    optim_free(t->opt);
    ag_tape_free(t->tape);
    ag_tensor_free(t->state);
    cl_model_free(t->m);
    cl_text_free(&t->text);
    free(t->x);
}

/* One optimizer step; the batch loss in nats (NaN on error). */
static double train_step(trainer *t)
{
    const cl_config *c = t->c;
    int64_t n = c->batch * c->seq;
    cl_batch_train(&t->text, c->batch, c->seq, &t->rng, t->x, t->y);
    optim_zero_grad(t->opt);
    ag_tensor *logits = cl_model_forward(t->tape, t->m, t->x, c->batch, c->seq);  /* (B, T, V) */
    logits = ag_reshape(t->tape, logits, 2, (const int64_t[]){n, t->m->vocab});
    ag_tensor *loss = nn_cross_entropy(t->tape, logits, t->y, n);
    int np;
    ag_tensor **w = nn_params_tensors(t->m->params, &np);
    if (ag_backward(t->tape, loss) != AG_OK ||
        optim_clip_grad_norm(w, np, c->clip, 2.0, NULL) != AG_OK || optim_step(t->opt) != AG_OK) {
        fprintf(stderr, "training step failed: %s\n",
                ag_tape_error(t->tape) ? ag_tape_error(t->tape) : ag_last_error());
        return NAN;
    }
    double l = ag_item(loss);
    size_t peak = ag_tape_bytes_peak(t->tape);
    t->tape_peak = peak > t->tape_peak ? peak : t->tape_peak;
    ag_tape_reset(t->tape);
    return l;
}

/* The files of an evaluation, in this order, so a kill at any point
 * resumes with no CSV row twice or missing and never leaves the model
 * newer than its checkpoint: the checkpoint (which holds the row), the
 * model, the CSV row.  Each save is atomic. */
static bool write_files(trainer *t, const cl_row *r, double val_loss)
{
    const char *path = t->c->save_path;
    if (path) {
        char ckpt[4096];
        snprintf(ckpt, sizeof ckpt, "%s.ckpt", path);
        const double s[STATE_LEN] = {(double)r->step, r->seconds, r->train_bpc, r->val_bpc};
        for (int i = 0; i < STATE_LEN; i++)
            ag_set(t->state, i, s[i]);
        if (checkpoint(t, ckpt, false) != AG_OK ||
            cl_model_save(t->m, path, &t->text, t->c, r->step, val_loss) != AG_OK) {
            fprintf(stderr, "saving failed: %s\n", ag_last_error());
            return false;
        }
    }
    if (t->csv)
        cl_csv_row(t->csv, r);
    return true;
}

static bool evaluate(trainer *t, int64_t step)
{
    double val = cl_evaluate(t->m, &t->text, t->c, t->tape);
    if (isnan(val))
        return false;
    cl_row r = {.step = step, .seconds = t->seconds, .val_bpc = val / LN2,
                .train_bpc = t->n_bits ? t->bits / (double)t->n_bits : NAN};
    t->bits = 0;
    t->n_bits = 0;
    cl_print_row(stdout, &r, t->c->steps);
    if (t->rows && t->n_rows < t->max_rows)
        t->rows[t->n_rows++] = r;
    return write_files(t, &r, val);
}

static bool train(trainer *t)
{
    const cl_config *c = t->c;
    cl_progress pr;
    cl_progress_begin(&pr, t->first - 1, c->steps, c->quiet);
    double seconds0 = t->seconds;
    for (int64_t step = t->first; step <= c->steps; step++) {
        double t0 = cl_now(), l = train_step(t);
        t->seconds += cl_now() - t0;
        if (isnan(l))
            return false;
        t->bits += l / LN2;
        t->n_bits++;
        cl_progress_update(&pr, step, l / LN2, t->seconds - seconds0);
        if (step % c->eval_every == 0 || step == c->steps) {
            cl_progress_end(&pr);
            if (!evaluate(t, step))
                return false;
        }
    }
    cl_progress_end(&pr);
    printf("tape: %.2f MB at most per step%s\n", (double)t->tape_peak / 1e6,
           c->checkpoint ? " (checkpointed)" : "");
    return true;
}

/* --plot without --log draws from a temporary CSV of this run's rows. */
static void plot(const trainer *t)
{
    const cl_config *c = t->c;
    char tmp[4096] = "";
    const char *csv = c->log_path;
    if (!csv) {
        const char *dir = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/charlm_plot_XXXXXX", dir && *dir ? dir : "/tmp");
        int fd = mkstemp(tmp);
        FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (!f) {
            fprintf(stderr, "--plot: cannot write a temporary data file\n");
            return;
        }
        fputs("step,train_bpc,val_bpc,seconds\n", f);
        for (int i = 0; i < t->n_rows; i++)
            cl_csv_row(f, &t->rows[i]);
        fclose(f);
        csv = tmp;
    }
    if (cl_plot(c->plot_path, csv, c, stderr))
        printf("plot written to %s\n", c->plot_path);
    if (tmp[0])
        remove(tmp);
}

int cl_run_train(const cl_config *c, cl_row *rows, int max_rows, int *n_rows)
{
    ag_set_num_threads(c->threads);
    trainer t = {.c = c, .rows = rows, .max_rows = max_rows};
    cl_row *own = NULL;
    if (!rows && c->plot_path && !c->log_path) {   /* rows kept for the plot */
        t.max_rows = (int)(c->steps / c->eval_every + 2);
        t.rows = own = malloc((size_t)t.max_rows * sizeof *own);
    }
    int rc = setup(&t);
    if (rc == CL_EXIT_OK && !train(&t))
        rc = CL_EXIT_ERROR;
    if (rc == CL_EXIT_OK && c->save_path)
        printf("model saved to %s (checkpoint %s.ckpt)\n", c->save_path, c->save_path);
    if (rc == CL_EXIT_OK && c->plot_path)
        plot(&t);
    if (rc == CL_EXIT_OK && c->sample > 0) {
        ag_rng r;
        ag_rng_seed(&r, c->seed ^ 0x73616d706c65ull);   /* its own draws: "sample" */
        printf("--- %lld sampled characters (temperature %g) ---\n", (long long)c->sample,
               c->temperature);
        if (!cl_sample(t.m, &t.text, c->prompt, c->sample, c->temperature, &r, stdout))
            rc = CL_EXIT_ERROR;
    }
    if (n_rows)
        *n_rows = t.n_rows;
    free(own);
    teardown(&t);
    return rc;
}
