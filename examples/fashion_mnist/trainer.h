/* trainer.h — what the files of the Fashion-MNIST trainer share: the
 * configuration (args.c), the model (model.c), training and evaluation
 * (train.c, eval.c), progress output (progress.c) and reports (report.c).
 * tests/test_trainer.c drives the same functions in-process.
 *
 * Exit codes of every fm_run_* / fm_main: 0 success, 1 an error (message on
 * stderr), 2 a usage error, 77 the data set is not installed (meson's skip
 * code, so the smoke tests skip where the data is missing). */
#ifndef FM_TRAINER_H
#define FM_TRAINER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <tapegrad.h>

#define FM_EXIT_OK 0
#define FM_EXIT_ERROR 1
#define FM_EXIT_USAGE 2
#define FM_EXIT_NO_DATA 77

#define FM_MAX_HIDDEN 8
#define FM_CLASSES 10
#define FM_FEATURES 784
/* Evaluation batch: fixed, so a saved model's --eval reproduces the
 * accuracy of the run that saved it bit for bit. */
#define FM_EVAL_BATCH 1000
/* The CNN's: a CNN image keeps ~100 times the MLP's activations on the
 * tape (a batch of 1000 took 250 MB). */
#define FM_EVAL_BATCH_CNN 100

typedef enum fm_optimizer { FM_OPT_SGD, FM_OPT_ADAM, FM_OPT_ADAMW } fm_optimizer;
typedef enum fm_schedule { FM_SCHED_NONE, FM_SCHED_COSINE, FM_SCHED_STEP } fm_schedule;
typedef enum fm_arch { FM_MODEL_MLP, FM_MODEL_CNN } fm_arch;

typedef struct fm_config {
    fm_arch model;            /* --model: the MLP (default) or the CNN */
    int epochs;
    int64_t batch;
    double lr;
    fm_optimizer optimizer;
    fm_schedule schedule;
    uint64_t seed;
    int threads;              /* 0: every core (the default) */
    const char *data_dir;     /* NULL: NN_FASHION_MNIST_DIR */
    const char *save_path;    /* model; the resumable checkpoint goes to <path>.ckpt */
    const char *resume_path;
    const char *log_path;     /* CSV */
    const char *plot_path;    /* PNG */
    const char *eval_path;    /* evaluate this model instead of training */
    int n_hidden;
    int64_t hidden[FM_MAX_HIDDEN];
    int explain;              /* top-N weights for ag_explain; 0: no report */
    int64_t limit;            /* train on the first N images; 0: all */
    int64_t test_limit;       /* evaluate on the first N test images; 0: all */
    int64_t val;              /* hold out N training images for validation; 0: none */
    int stop_after;           /* stop after this epoch, as if interrupted; 0: no (tests) */
    int kill_after_write;     /* tests: in the run's last epoch, stop as if killed right
                                 after the Nth file write of the epoch (with --save:
                                 1 checkpoint, 2 model, 3 CSV row); 0: no */
    bool quiet;               /* no progress output (tests) */
    bool dist;                /* --dist: one shard per MPI rank (dist_step.c) */
    bool dist_messages;       /* --transport messages: no shared memory */
    int shards;               /* --shards R: R shards in one process; 0: off */
} fm_config;

/* ---- args.c ---- */
void fm_config_defaults(fm_config *c);
/* Parses argv into c (defaults first).  Returns -1 to go on, FM_EXIT_OK
 * after --help (usage printed to out), FM_EXIT_USAGE after a message and
 * the usage on err. */
int fm_parse_args(int argc, char **argv, fm_config *c, FILE *out, FILE *err);
void fm_usage(FILE *out, const char *prog);
const char *fm_optimizer_name(fm_optimizer o);
const char *fm_schedule_name(fm_schedule s);

/* ---- model.c ---- */
typedef struct fm_model {
    nn_params *params;                    /* owns the weights */
    int n_layers;                         /* hidden layers + 1 */
    nn_linear *layers[FM_MAX_HIDDEN + 1]; /* fc1, fc2, ... */
    struct fm_cnn *cnn;                   /* the CNN's layers (model_cnn.c), NULL: the MLP */
} fm_model;

/* MLP 784-hidden...-10 with ReLU, layers named fc1..fcN, in dtype dt;
 * initialised from rng (NULL: zeros).  NULL with ag_last_error. */
fm_model *fm_model_new(int n_hidden, const int64_t *hidden, ag_dtype dt, ag_rng *rng);
void fm_model_free(fm_model *m);
ag_tensor *fm_model_forward(ag_tape *t, fm_model *m, ag_tensor *x);   /* (N, 784) -> (N, 10) */
/* Loads a model file, taking the architecture from its fc*.weight shapes.
 * NULL (message on err) for a missing, malformed or mismatching file. */
fm_model *fm_model_load(const char *path, FILE *err);
/* Writes the model with metadata (description, epoch, hidden, ...). */
ag_status fm_model_save(const fm_model *m, const char *path, int epoch, const fm_config *c);

/* ---- model_cnn.c ---- */
/* The CNN conv1 (1->32, 3x3) relu maxpool2 conv2 (32->64, 3x3) relu maxpool2
 * flatten fc1 (1600->128) relu fc2 (128->10), torch's names, in dtype dt;
 * initialised from rng (NULL: zeros).  m->n_layers is 0.  NULL with
 * ag_last_error.  fm_model_forward / _free / _save / _load handle it. */
fm_model *fm_cnn_new(ag_dtype dt, ag_rng *rng);
ag_tensor *fm_cnn_forward(ag_tape *t, struct fm_cnn *c, ag_tensor *x); /* (N, 784) -> (N, 10) */
void fm_cnn_free(struct fm_cnn *c);

/* ---- eval.c ---- */
typedef struct fm_metrics {
    double loss;                                 /* mean cross-entropy */
    double acc;                                  /* fraction correct */
    int64_t n;
    int64_t confusion[FM_CLASSES][FM_CLASSES];   /* [true][predicted] */
} fm_metrics;

/* Loss, accuracy and confusion matrix of m on ds, FM_EVAL_BATCH (the CNN:
 * FM_EVAL_BATCH_CNN) at a time, with recording off.  AG_OK or the failing status (ag_last_error). */
ag_status fm_evaluate(fm_model *m, const nn_dataset *ds, ag_tape *tape, fm_metrics *out);
/* Index of the largest of row's n values (first on ties). */
int fm_argmax_row(const float *row, int n);
/* ag_explain on the first batch of ds, in f64 on a copy of m; report to out. */
ag_status fm_explain(const fm_model *m, const nn_dataset *ds, int64_t batch, int top,
                     FILE *out);
/* Loads the test set (limit applied); an exit code. */
int fm_load_data(const char *dir, bool train, int64_t limit, nn_dataset **out);
/* --eval PATH: accuracy, per-class accuracy, confusion matrix (and
 * --explain); an exit code. */
int fm_run_eval(const fm_config *c);

/* ---- train.c ---- */
typedef struct fm_epoch_row {
    int epoch;
    double train_loss, train_acc, test_loss, test_acc, seconds;
} fm_epoch_row;

/* Trains as c says; rows (may be NULL; room for c->epochs) receives one
 * row per epoch run, *n_rows their count.  An exit code. */
int fm_run_train(const fm_config *c, fm_epoch_row *rows, int *n_rows);

/* ---- dist_step.c: --dist (MPI ranks) and --shards R (one process) ----
 * Both cut each global batch into shards (one per rank / R in turn), each
 * shard's loss its rows' summed cross-entropy over the global batch size,
 * gradients summed in shard order: the same bytes either way. */
typedef struct fm_dist fm_dist;
/* --dist: starts MPI; ranks other than 0 go quiet (no output, files or
 * plot).  An exit code (FM_EXIT_USAGE when built without MPI). */
int fm_dist_init(fm_config *c);
/* Ends MPI after --dist; returns rc, or an error code if that fails. */
int fm_dist_finalize(const fm_config *c, int rc);
/* For m's parameters over train, stepped by opt (made over m's parameters
 * in their order; rank 0's weights broadcast under --dist).  NULL with
 * ag_last_error. */
fm_dist *fm_dist_new(const fm_config *c, fm_model *m, optim *opt, const nn_dataset *train);
void fm_dist_free(fm_dist *d);
/* Rows of the next global batch of the epoch that it's nn_batcher_start
 * began (0 at its end). */
int64_t fm_dist_next(fm_dist *d, const nn_batcher *it);
/* One optimizer step on that batch; its mean loss (NaN on error, message
 * on stderr); adds its correct predictions to *hits. */
double fm_dist_step(fm_dist *d, ag_tape *t, fm_model *m, int64_t r, int64_t *hits);
/* After an epoch's last step: --dist brings every rank's optimizer state
 * up to date (each rank stepped its part of it); false on error (message
 * on stderr). */
bool fm_dist_epoch_end(fm_dist *d);
/* One line: buckets, backward and allreduce times, the share hidden. */
void fm_dist_report(const fm_dist *d, FILE *out);

/* ---- progress.c ---- */
typedef struct fm_progress {
    bool tty, quiet;
    int epoch, epochs;
    int64_t total, done;          /* samples in the epoch, seen so far */
    double loss_sum;              /* sum of batch loss * rows */
    double t0, last_draw;         /* seconds (fm_now) */
    int next_line;                /* next quarter to print when not a tty */
} fm_progress;

double fm_now(void);              /* monotonic seconds */
void fm_progress_begin(fm_progress *p, int epoch, int epochs, int64_t total, bool quiet);
void fm_progress_update(fm_progress *p, int64_t rows, double batch_loss);
void fm_progress_end(fm_progress *p);   /* clears the bar on a terminal */

/* ---- report.c ---- */
extern const char *const fm_class_names[FM_CLASSES];

/* CSV log: opened (header written, or appended to when `append` and the
 * file is not empty), one row per epoch.  NULL with a message on err. */
FILE *fm_csv_open(const char *path, bool append, FILE *err);
/* The log of a run resumed after epoch `epoch`, opened for appending.  It
 * is first rewritten (PATH.tmp, fsync, rename) to hold the header, the
 * complete rows of the epochs before `epoch` (once each, in order) and
 * `last`, the row of `epoch` itself kept in the checkpoint (NULL: none).
 * Rows of later epochs and a torn last line, which a run killed between
 * its writes leaves, are dropped: no row twice, none missing.  NULL with a
 * message on err. */
FILE *fm_csv_resume(const char *path, int epoch, const fm_epoch_row *last, FILE *err);
void fm_csv_row(FILE *f, const fm_epoch_row *r);
/* PNG of loss and accuracy by epoch through gnuplot (popen).  data_csv is a
 * CSV with the header above (the --log file, or NULL: rows are written to a
 * temporary file).  Prints why when gnuplot is missing or fails; returns
 * false then (the caller goes on). */
bool fm_plot(const char *png, const char *data_csv, const fm_epoch_row *rows, int n, FILE *err);
void fm_print_epoch(FILE *out, const fm_epoch_row *r, int epochs);
/* Per-class accuracy and the confusion matrix with class names. */
void fm_print_confusion(FILE *out, const fm_metrics *m);

#endif
