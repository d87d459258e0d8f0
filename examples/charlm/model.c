/* model.c — the three language models, named as bench/peers/charlm_torch.py
 * names them, so a saved model loads into the PyTorch peer:
 *   gpt:  nn_gpt with no prefix (tok_emb, pos_emb, blocks.I..., ln_f, head);
 *   lstm: emb [V, 64], rnn (nn_lstm 64 -> 256, batch_first), head [V, 256];
 *   gru:  the same with nn_gru. */
#include <stdlib.h>
#include <string.h>

#include "charlm.h"

#define GPT_LAYERS 4
#define GPT_HEADS 4
#define GPT_DIM 128
#define RNN_EMB 64
#define RNN_HIDDEN 256

cl_model *cl_model_new(cl_kind k, int64_t vocab, int64_t seq, ag_rng *rng)
{
    cl_model *m = calloc(1, sizeof *m);
    if (!m || !(m->params = nn_params_new())) {
        free(m);
        ag_set_last_error("cl_model_new: out of memory");
        return NULL;
    }
    m->kind = k;
    m->vocab = vocab;
    m->seq = seq;
    nn_params *p = m->params;
    bool ok;
    if (k == CL_GPT) {
        nn_gpt_config g = {.vocab = vocab, .block = seq, .layers = GPT_LAYERS,
                           .heads = GPT_HEADS, .dim = GPT_DIM};
        ok = (m->gpt = nn_gpt_new(p, "", &g, rng)) != NULL;
    } else {
        ok = (m->emb = nn_embedding_new(p, "emb", vocab, RNN_EMB, rng)) != NULL;
        if (ok && k == CL_LSTM)
            ok = (m->lstm = nn_lstm_new(p, "rnn", RNN_EMB, RNN_HIDDEN, 1, true, rng)) != NULL;
        else if (ok)
            ok = (m->gru = nn_gru_new(p, "rnn", RNN_EMB, RNN_HIDDEN, 1, true, rng)) != NULL;
        ok = ok && (m->head = nn_linear_new(p, "head", RNN_HIDDEN, vocab, true, rng));
    }
    if (!ok) {
        cl_model_free(m);
        return NULL;
    }
    return m;
}

void cl_model_free(cl_model *m)
{
    if (!m)
        return;
    nn_gpt_free(m->gpt);
    nn_embedding_free(m->emb);
    nn_lstm_free(m->lstm);
    nn_gru_free(m->gru);
    nn_linear_free(m->head);
    nn_params_free(m->params);
    free(m);
}

ag_tensor *cl_model_forward(ag_tape *t, cl_model *m, const int64_t *x, int64_t n, int64_t T)
{
    if (m->kind == CL_GPT)
        return nn_gpt_forward(t, m->gpt, x, n, T);                        /* (n, T, V) */
    ag_tensor *e = nn_embedding_forward(t, m->emb, x, n * T);             /* (n T, E) */
    e = ag_reshape(t, e, 3, (const int64_t[]){n, T, RNN_EMB});
    ag_tensor *h = m->kind == CL_LSTM ? nn_lstm_forward(t, m->lstm, e, NULL, NULL, NULL, NULL)
                                      : nn_gru_forward(t, m->gru, e, NULL, NULL);
    return nn_linear_forward(t, m->head, h);                              /* (n, T, V) */
}

ag_status cl_model_save(const cl_model *m, const char *path, const cl_text *text,
                        const cl_config *c, int64_t step, double val_loss)
{
    char hex[2 * 256 + 1], seq[24], st[24], vl[32], ew[24];
    for (int i = 0; i < text->vocab_size; i++)
        snprintf(hex + 2 * i, 3, "%02x", text->vocab[i]);
    hex[2 * text->vocab_size] = '\0';
    snprintf(seq, sizeof seq, "%lld", (long long)m->seq);
    snprintf(st, sizeof st, "%lld", (long long)step);
    snprintf(vl, sizeof vl, "%.17g", val_loss);
    snprintf(ew, sizeof ew, "%lld", (long long)c->eval_windows);
    const char *keys[] = {"description", "model", "vocab_hex", "seq", "step", "val_loss",
                          "eval_windows"};
    const char *vals[] = {"tapegrad charlm", cl_kind_name(m->kind), hex, seq, st, vl, ew};
    return nn_params_save_meta(m->params, path, 7, keys, vals);
}
