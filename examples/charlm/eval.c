/* eval.c — held-out bits per character and sampling, both with recording
 * off.  Evaluation windows start from an empty context (the GPT from
 * position 0, the LSTM / GRU from a zero state), as in training. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "charlm.h"

/* Sum of the cross-entropies (nats) of n windows starting at starts[] in
 * the held-out part; NaN on error. */
static double eval_batch(cl_model *m, const cl_text *text, int64_t seq, const int64_t *starts,
                         int64_t n, int64_t *x, int64_t *y, ag_tape *tape)
{
    const uint8_t *val = text->ids + text->n_train;
    for (int64_t b = 0; b < n; b++)
        for (int64_t i = 0; i < seq; i++) {
            x[b * seq + i] = val[starts[b] + i];
            y[b * seq + i] = val[starts[b] + i + 1];
        }
    ag_tensor *logits = cl_model_forward(tape, m, x, n, seq);            /* (n, T, V) */
    logits = ag_reshape(tape, logits, 2, (const int64_t[]){n * seq, m->vocab});
    const ag_ce_opts sum = {.ignore_index = AG_CE_NO_IGNORE, .reduction = AG_REDUCE_SUM};
    ag_tensor *loss = nn_cross_entropy_opts(tape, logits, y, n * seq, &sum);
    if (!loss) {
        fprintf(stderr, "evaluation failed: %s\n", ag_tape_error(tape));
        return NAN;
    }
    return ag_item(loss);
}

double cl_evaluate(cl_model *m, const cl_text *text, const cl_config *c, ag_tape *tape)
{
    int64_t seq = c->seq, k = cl_eval_windows(text, seq, c->eval_windows, NULL);
    int64_t *starts = malloc((size_t)(k + 1) * sizeof *starts);
    int64_t *x = malloc((size_t)(2 * CL_EVAL_BATCH * seq) * sizeof *x);
    double total = k > 0 ? 0 : NAN;
    if (!starts || !x) {
        fprintf(stderr, "evaluation: out of memory\n");
        total = NAN;
        k = 0;
    } else {
        cl_eval_windows(text, seq, c->eval_windows, starts);
    }
    bool grad = ag_no_grad_begin(tape);
    for (int64_t i = 0; i < k && !isnan(total); i += CL_EVAL_BATCH) {
        int64_t n = k - i < CL_EVAL_BATCH ? k - i : CL_EVAL_BATCH;
        total += eval_batch(m, text, seq, starts + i, n, x, x + CL_EVAL_BATCH * seq, tape);
        ag_tape_reset(tape);
    }
    ag_no_grad_end(tape, grad);
    free(starts);
    free(x);
    return total / (double)(k * seq);
}

/* ---- sampling ---- */

/* The RNN's logits for the last of T tokens x, from state h, c (NULL:
 * zeros); the new state replaces *h, *c (persistent copies, freed here). */
static ag_tensor *rnn_next(ag_tape *t, cl_model *m, const int64_t *x, int64_t T, ag_tensor **h,
                           ag_tensor **c)
{
    ag_tensor *e = ag_reshape(t, nn_embedding_forward(t, m->emb, x, T), 3,
                              (const int64_t[]){1, T, m->emb->dim});
    ag_tensor *hn, *cn = NULL;
    ag_tensor *y = m->kind == CL_LSTM ? nn_lstm_forward(t, m->lstm, e, *h, *c, &hn, &cn)
                                      : nn_gru_forward(t, m->gru, e, *h, &hn);
    ag_tensor_free(*h);
    ag_tensor_free(*c);
    *h = hn ? ag_tensor_clone(hn) : NULL;
    *c = cn ? ag_tensor_clone(cn) : NULL;
    return nn_linear_forward(t, m->head, ag_slice(t, y, 1, T - 1, T, 1));   /* (1, 1, V) */
}

bool cl_prompt_ok(const cl_text *text, const char *prompt, FILE *err)
{
    for (const unsigned char *s = (const unsigned char *)prompt; *s; s++)
        if (text->lookup[*s] < 0) {
            fprintf(err, "--prompt: the character '%c' (byte %d) is not in the text\n", *s, *s);
            return false;
        }
    return true;
}

/* The prompt as ids into ctx (room for its length); an empty prompt
 * starts after a newline (or the first character).  -1 when a character
 * is not in the text. */
static int64_t prompt_ids(const cl_text *text, const char *prompt, int64_t *ctx)
{
    if (!cl_prompt_ok(text, prompt, stderr))
        return -1;
    int64_t n = 0;
    for (const unsigned char *s = (const unsigned char *)prompt; *s; s++)
        ctx[n++] = text->lookup[*s];
    if (n == 0)
        ctx[n++] = text->lookup['\n'] >= 0 ? text->lookup['\n'] : 0;
    return n;
}

bool cl_sample(cl_model *m, const cl_text *text, const char *prompt, int64_t n,
               double temperature, ag_rng *rng, FILE *out)
{
    int64_t len0 = (int64_t)strlen(prompt);
    int64_t *ctx = malloc((size_t)(len0 + n + 1) * sizeof *ctx);
    ag_tape *t = ag_tape_new();
    int64_t len = ctx && t ? prompt_ids(text, prompt, ctx) : -1;
    ag_tensor *h = NULL, *c = NULL;
    bool ok = len > 0;
    if (ok)
        fputs(prompt, out);
    ag_tape_set_grad_enabled(t, false);
    for (int64_t i = 0, fed = 0; ok && i < n; i++) {
        ag_tensor *logits;
        if (m->kind == CL_GPT) {   /* the last block of the context, whole */
            int64_t T = len < m->seq ? len : m->seq;
            logits = ag_slice(t, cl_model_forward(t, m, ctx + len - T, 1, T), 1, T - 1, T, 1);
        } else {                   /* what the state has not seen yet */
            logits = rnn_next(t, m, ctx + fed, len - fed, &h, &c);
            fed = len;
        }
        int64_t next;
        ok = logits && ag_sample_logits(logits, temperature, rng, &next) == AG_OK;
        if (!ok) {
            fprintf(stderr, "sampling failed: %s\n",
                    ag_tape_error(t) ? ag_tape_error(t) : ag_last_error());
            break;
        }
        ctx[len++] = next;
        fputc(text->vocab[next], out);
        ag_tape_reset(t);
    }
    fputc('\n', out);
    ag_tensor_free(h);
    ag_tensor_free(c);
    ag_tape_free(t);
    free(ctx);
    return ok;
}
