/* charlm.h — what the files of the character-level language-model trainer
 * share: the configuration (args.c), the text and its batches (data.c),
 * the three models (model.c), training (train.c), evaluation and sampling
 * (eval.c), progress output, the CSV log and the plot (report.c).
 *
 * Exit codes: 0 success, 1 an error (message on stderr), 2 a usage error,
 * 77 the default text is not there (meson's skip code: the smoke test
 * skips where scripts/charlm_data.sh never ran). */
#ifndef CHARLM_H
#define CHARLM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <tapegrad.h>

#define CL_EXIT_OK 0
#define CL_EXIT_ERROR 1
#define CL_EXIT_USAGE 2
#define CL_EXIT_NO_DATA 77

/* Written by scripts/charlm_data.sh (Debian's bible-kjv, decoded). */
#define CL_DEFAULT_DATA "/var/cache/tapegrad/kjv.txt"
/* Windows per evaluation forward pass (bench/peers/charlm_torch.py: the same). */
#define CL_EVAL_BATCH 32

typedef enum cl_kind { CL_GPT, CL_LSTM, CL_GRU } cl_kind;

typedef struct cl_config {
    cl_kind kind;
    int64_t steps;
    int64_t batch, seq;        /* sequences per step, characters per sequence */
    double lr;
    double clip;               /* max gradient norm */
    uint64_t seed;
    int threads;               /* 0: every core; -1: chosen by cl_parse_args */
    int checkpoint;            /* GPT blocks per gradient checkpoint (0: none) */
    const char *data_path;
    const char *save_path;     /* model; the resumable checkpoint goes to <path>.ckpt */
    const char *resume_path;
    const char *log_path;      /* CSV */
    const char *plot_path;     /* PNG */
    int64_t eval_every;        /* steps between evaluations */
    int64_t eval_windows;      /* evaluation windows (0: every one of the held-out text) */
    int64_t sample;            /* characters to sample after training */
    double temperature;
    const char *prompt;
    bool quiet;                /* no progress output (tests) */
} cl_config;

/* ---- args.c ---- */
/* Defaults of kind k (GPT: nanoGPT's CPU baby config; LSTM and GRU:
 * embedding 64, hidden 256). */
void cl_config_defaults(cl_config *c, cl_kind k);
/* Parses argv into c.  Returns -1 to go on, CL_EXIT_OK after --help,
 * CL_EXIT_USAGE after a message and the usage on err. */
int cl_parse_args(int argc, char **argv, cl_config *c, FILE *out, FILE *err);
const char *cl_kind_name(cl_kind k);

/* ---- data.c ---- */
typedef struct cl_text {
    uint8_t *ids;              /* (n) each character's index into vocab */
    int64_t n, n_train;        /* the last n - n_train (10%) are held out */
    int vocab_size;
    uint8_t vocab[256];        /* the distinct bytes of the text, sorted */
    int16_t lookup[256];       /* byte -> id, -1 when absent */
} cl_text;

/* Reads a text file (the whole of it); an exit code (77 for a missing
 * default file, with a hint). */
int cl_text_load(const char *path, bool is_default, cl_text *out);
void cl_text_free(cl_text *t);
/* batch random windows of the training part: x[b*seq + i] the input
 * characters, y the next ones. */
void cl_batch_train(const cl_text *t, int64_t batch, int64_t seq, ag_rng *rng, int64_t *x,
                    int64_t *y);
/* The start offsets (into the held-out part) of the evaluation windows:
 * the non-overlapping windows of seq + 1 characters stepping seq, or
 * `cap` of them evenly spaced (cap 0: all).  Returns their count and,
 * unless starts is NULL, writes them there. */
int64_t cl_eval_windows(const cl_text *t, int64_t seq, int64_t cap, int64_t *starts);

/* ---- model.c ---- */
typedef struct cl_model {
    cl_kind kind;
    nn_params *params;
    nn_gpt *gpt;                                   /* CL_GPT */
    nn_embedding *emb;                             /* CL_LSTM, CL_GRU */
    nn_lstm *lstm;
    nn_gru *gru;
    nn_linear *head;
    int64_t vocab, seq;
} cl_model;

/* The model of kind k for vocab tokens and sequences of seq, drawn from
 * rng; NULL with ag_last_error. */
cl_model *cl_model_new(cl_kind k, int64_t vocab, int64_t seq, ag_rng *rng);
void cl_model_free(cl_model *m);
/* x: n sequences of T tokens -> logits [n, T, vocab]. */
ag_tensor *cl_model_forward(ag_tape *t, cl_model *m, const int64_t *x, int64_t n, int64_t T);
/* The model with metadata (model kind, vocab as hex bytes, seq, step,
 * val_loss in nats, eval_windows) for examples/charlm/check_torch_load.py. */
ag_status cl_model_save(const cl_model *m, const char *path, const cl_text *text,
                        const cl_config *c, int64_t step, double val_loss);

/* ---- eval.c ---- */
/* Mean cross-entropy (nats) over every predicted character of the
 * evaluation windows, recording off, CL_EVAL_BATCH windows at a time;
 * NaN on error (message on stderr). */
double cl_evaluate(cl_model *m, const cl_text *text, const cl_config *c, ag_tape *tape);
/* Whether every character of prompt is in the text (else says which on err). */
bool cl_prompt_ok(const cl_text *text, const char *prompt, FILE *err);
/* Prints the prompt and n sampled characters to out (softmax(logits / T),
 * draws from rng); false on error. */
bool cl_sample(cl_model *m, const cl_text *text, const char *prompt, int64_t n,
               double temperature, ag_rng *rng, FILE *out);

/* ---- train.c ---- */
typedef struct cl_row {
    int64_t step;
    double train_bpc, val_bpc, seconds;
} cl_row;

/* Trains as c says; rows (may be NULL; room for max_rows) receives the
 * CSV rows written, *n_rows their count.  An exit code. */
int cl_run_train(const cl_config *c, cl_row *rows, int max_rows, int *n_rows);

/* ---- report.c ---- */
double cl_now(void);   /* monotonic seconds */

typedef struct cl_progress {
    bool tty, quiet;
    int64_t first, total;  /* steps */
    double t0, last_draw;
} cl_progress;

void cl_progress_begin(cl_progress *p, int64_t first, int64_t total, bool quiet);
/* After step `step` with its loss (bits per character) and the training
 * seconds so far. */
void cl_progress_update(cl_progress *p, int64_t step, double bpc, double seconds);
void cl_progress_end(cl_progress *p);
void cl_print_row(FILE *out, const cl_row *r, int64_t steps);

/* The CSV log `step,train_bpc,val_bpc,seconds`: a new file, or (resume)
 * the rows before `step` kept, rewritten atomically, then appended to. */
FILE *cl_csv_open(const char *path, int64_t resume_step, FILE *err);
void cl_csv_row(FILE *f, const cl_row *r);
/* PNG of train and validation bits per character by step (gnuplot); false
 * (after saying why on err) when gnuplot is missing or fails. */
bool cl_plot(const char *png, const char *csv, const cl_config *c, FILE *err);

#endif
