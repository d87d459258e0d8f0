/* rnn.c — recurrent stacks: nn_rnn (tanh or relu), nn_lstm, nn_gru, as
 * torch.nn.RNN / LSTM / GRU with biases, unidirectional, compositions of
 * ag ops.
 * Dimension legend: T = time steps, N = batch, I = a layer's input width,
 * H = hidden, G = gates (rnn 1, lstm 4: i f g o, gru 3: r z n), L = layers.
 * A step keeps the time dim, of size 1 ([1, N, *], or [N, 1, *] with
 * batch_first), so a step's slice of the input projection feeds ag_linear
 * and the steps join with one concat along it, with no transpose of the
 * sequence either way.  The LSTM and GRU steps end in the fused
 * ag_lstm_cell / ag_gru_cell. */
#include "nn_internal.h"

#include <limits.h>
#include <math.h>

/* Widths beyond this are refused before G * H * in could overflow. */
#define NN_RNN_MAX_WIDTH ((int64_t)1 << 30)

typedef enum cell_kind { CELL_RNN, CELL_LSTM, CELL_GRU } cell_kind;

/* What the three layer types share, as one view for the code below. */
typedef struct stack {
    const char *fn;          /* the public forward, for messages */
    cell_kind kind;
    nn_activation act;       /* CELL_RNN: tanh or relu */
    int64_t input, hidden;
    int layers;
    bool batch_first;
    nn_rnn_weights *w;
} stack;

static int gates_of(cell_kind k) { return k == CELL_LSTM ? 4 : k == CELL_GRU ? 3 : 1; }

/* ---- construction ---- */

/* Registers layer k's four tensors in torch's order; false on failure. */
static bool layer_new(nn_params *p, const char *fn, const char *name, int k, int64_t in,
                      int64_t gh, int64_t h, nn_rnn_weights *w)
{
    char sfx[4][32];
    snprintf(sfx[0], sizeof sfx[0], "weight_ih_l%d", k);
    snprintf(sfx[1], sizeof sfx[1], "weight_hh_l%d", k);
    snprintf(sfx[2], sizeof sfx[2], "bias_ih_l%d", k);
    snprintf(sfx[3], sizeof sfx[3], "bias_hh_l%d", k);
    w->weight_ih = nn_new_param(p, fn, name, sfx[0], 2, (const int64_t[]){gh, in}, false);
    w->weight_hh = w->weight_ih ? nn_new_param(p, fn, name, sfx[1], 2,
                                               (const int64_t[]){gh, h}, false) : NULL;
    w->bias_ih = w->weight_hh ? nn_new_param(p, fn, name, sfx[2], 1, &gh, false) : NULL;
    w->bias_hh = w->bias_ih ? nn_new_param(p, fn, name, sfx[3], 1, &gh, false) : NULL;
    return w->bias_hh != NULL;
}

/* torch's RNNBase.reset_parameters: every tensor U(-1/sqrt(H), 1/sqrt(H)),
 * in parameter order. */
static void stack_init(nn_rnn_weights *w, int layers, int64_t hidden, ag_rng *rng)
{
    double b = 1.0 / sqrt((double)hidden);
    for (int k = 0; k < layers; k++) {
        nn_init_uniform(w[k].weight_ih, -b, b, rng);
        nn_init_uniform(w[k].weight_hh, -b, b, rng);
        nn_init_uniform(w[k].bias_ih, -b, b, rng);
        nn_init_uniform(w[k].bias_hh, -b, b, rng);
    }
}

/* The weights of a new stack (ag_mem_free them), or NULL with
 * ag_last_error; p is left as found on failure. */
static nn_rnn_weights *stack_new(nn_params *p, const char *fn, const char *name, int64_t input,
                                 int64_t hidden, int layers, cell_kind kind, ag_rng *rng)
{
    bool sizes_ok = input >= 1 && hidden >= 1 && input <= NN_RNN_MAX_WIDTH &&
                    hidden <= NN_RNN_MAX_WIDTH;
    if (!p || !name || !sizes_ok || layers < 1 || layers > NN_RNN_MAX_LAYERS) {
        ag_set_last_error("%s: %s", fn, !p || !name ? "params or name is NULL"
                                        : !sizes_ok ? "input and hidden must be in [1, 2^30]"
                                                    : "layers must be in [1, 64]");
        return NULL;
    }
    nn_rnn_weights *w = ag_mem_calloc((size_t)layers * sizeof *w);
    if (!w) {
        ag_set_last_error("%s: out of memory", fn);
        return NULL;
    }
    int n0 = nn_params_count(p);
    int64_t gh = gates_of(kind) * hidden;
    for (int k = 0; k < layers; k++)
        if (!layer_new(p, fn, name, k, k == 0 ? input : hidden, gh, hidden, &w[k])) {
            nn_params_truncate(p, n0);
            ag_mem_free(w);
            return NULL;
        }
    if (rng)
        stack_init(w, layers, hidden, rng);
    return w;
}

/* ---- forward ---- */

/* h0 / c0: NULL or [L, N, H] of the weights' dtype. */
static bool state_ok(ag_tape *t, const stack *s, const ag_tensor *st, const char *what,
                     int64_t n)
{
    if (!st)
        return true;
    const int64_t *sh = ag_shape(st);
    if (ag_ndim(st) != 3 || sh[0] != s->layers || sh[1] != n || sh[2] != s->hidden) {
        char b[96];
        ag_tape_fail(t, AG_ERR_SHAPE, "%s: %s is %s, expected [%d, %lld, %lld] (layers, batch, "
                     "hidden)", s->fn, what, ag_shape_str(st, b, sizeof b), s->layers,
                     (long long)n, (long long)s->hidden);
        return false;
    }
    return nn_check_dtype(t, s->fn, st, ag_dtype_of(s->w[0].weight_ih));
}

/* x [N, T, I] or [T, N, I] with I = input, 1 <= T <= INT_MAX. */
static bool input_ok(ag_tape *t, const stack *s, const ag_tensor *x)
{
    const int64_t *sh = ag_shape(x);
    int64_t T = ag_ndim(x) == 3 ? sh[s->batch_first ? 1 : 0] : 0;
    if (ag_ndim(x) != 3 || sh[2] != s->input || T < 1 || T > INT_MAX) {
        char b[96];
        ag_tape_fail(t, AG_ERR_SHAPE, "%s: x is %s, expected %s with input %lld and T >= 1",
                     s->fn, ag_shape_str(x, b, sizeof b),
                     s->batch_first ? "[N, T, input]" : "[T, N, input]", (long long)s->input);
        return false;
    }
    return nn_check_dtype(t, s->fn, x, ag_dtype_of(s->w[0].weight_ih));
}

/* Layer k's slice of a state [L, N, H] in a step's layout ([1, N, H], or
 * [N, 1, H] with batch_first), or NULL (zeros). */
static ag_tensor *state_at(ag_tape *t, const stack *s, ag_tensor *st, int k)
{
    ag_tensor *l = st ? ag_slice(t, st, 0, k, k + 1, 1) : NULL;
    return l && s->batch_first ? ag_transpose(t, l, 0, 1) : l;
}

/* A layer's final state [1, N, H] from a step's layout. */
static ag_tensor *state_out(ag_tape *t, const stack *s, ag_tensor *h)
{
    return s->batch_first ? ag_transpose(t, h, 0, 1) : h;
}

/* W_hh h + b_hh [1, N, G*H]; with h NULL (a zero state) just b_hh, which
 * broadcasts. */
static ag_tensor *hidden_proj(ag_tape *t, const nn_rnn_weights *w, ag_tensor *h)
{
    return h ? ag_linear(t, h, w->weight_hh, w->bias_hh) : w->bias_hh;
}

/* A zero state (xg's leading dims, H) for a first step without one. */
static ag_tensor *zero_state(ag_tape *t, const ag_tensor *xg, int64_t hd)
{
    const int64_t *s = ag_shape(xg);
    return ag_tape_tensor(t, ag_dtype_of(xg), 3, (const int64_t[]){s[0], s[1], hd});
}

/* One LSTM step: xg = W_ih x + b_ih [1, N, 4H] (or [N, 1, 4H]), state h,
 * *c (NULL: zeros); returns h' and sets *c to c'. */
static ag_tensor *lstm_step(ag_tape *t, const nn_rnn_weights *w, int64_t hd, ag_tensor *xg,
                            ag_tensor *h, ag_tensor **c)
{
    ag_tensor *gates = ag_add(t, xg, hidden_proj(t, w, h));               /* xg's shape */
    ag_tensor *c_in = *c ? *c : zero_state(t, xg, hd);
    return gates && c_in ? ag_lstm_cell(t, gates, c_in, c) : NULL;
}

/* One GRU step: xg = W_ih x + b_ih [1, N, 3H] (or [N, 1, 3H]), h (NULL:
 * zeros). */
static ag_tensor *gru_step(ag_tape *t, const nn_rnn_weights *w, int64_t hd, ag_tensor *xg,
                           ag_tensor *h)
{
    ag_tensor *gh = h ? ag_linear(t, h, w->weight_hh, w->bias_hh)         /* xg's shape */
                      : ag_expand(t, w->bias_hh, 3, ag_shape(xg));
    ag_tensor *h_in = h ? h : zero_state(t, xg, hd);
    return gh && h_in ? ag_gru_cell(t, xg, gh, h_in) : NULL;
}

static ag_tensor *rnn_step(ag_tape *t, const stack *s, const nn_rnn_weights *w, ag_tensor *xg,
                           ag_tensor *h)
{
    ag_tensor *pre = ag_add(t, xg, hidden_proj(t, w, h));
    return s->act == NN_ACT_RELU ? ag_relu(t, pre) : ag_tanh(t, pre);
}

/* Room for n tensor pointers that lives until the tape's reset: the data
 * of a tape tensor (arena memory), so a forward pass asks the system for
 * nothing once the arena has grown. */
static ag_tensor **tape_room(ag_tape *t, int64_t n)
{
    _Static_assert(sizeof(ag_tensor *) <= sizeof(double), "a pointer fits a double's room");
    ag_tensor *r = ag_tape_tensor(t, AG_F64, 1, &n);
    return r ? (ag_tensor **)ag_data(r) : NULL;
}

/* One layer over the whole sequence: seq [T, N, I] -> [T, N, H] (or [N, T,
 * *] with batch_first).  *h, *c hold the layer's initial state on entry
 * (NULL: zeros) and its final one on return, in a step's layout. */
static ag_tensor *layer_forward(ag_tape *t, const stack *s, const nn_rnn_weights *w,
                                ag_tensor *seq, ag_tensor **h, ag_tensor **c)
{
    int ta = s->batch_first ? 1 : 0;                                       /* time axis */
    int64_t T = ag_shape(seq)[ta], hd = s->hidden;
    ag_tensor *xp = ag_linear(t, seq, w->weight_ih, w->bias_ih);           /* (.., G*H) */
    ag_tensor **outs = xp ? tape_room(t, T) : NULL;                        /* (T) */
    if (!outs)
        return NULL;
    for (int64_t k = 0; k < T; k++) {
        ag_tensor *xg = ag_slice(t, xp, ta, k, k + 1, 1);                  /* step k */
        *h = s->kind == CELL_LSTM ? lstm_step(t, w, hd, xg, *h, c)
             : s->kind == CELL_GRU ? gru_step(t, w, hd, xg, *h)
                                   : rnn_step(t, s, w, xg, *h);
        if (!*h)
            return NULL;
        outs[k] = *h;
    }
    return ag_concat(t, outs, (int)T, ta);
}

static ag_tensor *stack_forward(ag_tape *t, const stack *s, ag_tensor *x, ag_tensor *h0,
                                ag_tensor *c0, ag_tensor **hn, ag_tensor **cn)
{
    if (hn)
        *hn = NULL;
    if (cn)
        *cn = NULL;
    if (!nn_check_input(t, s->fn, x))
        return NULL;
    if (!s->w || s->layers < 1)
        return ag_tape_fail(t, AG_ERR_ARG, "%s: the layer is not one its _new made (no weights)",
                            s->fn);
    if (!input_ok(t, s, x))
        return NULL;
    int64_t n = ag_shape(x)[s->batch_first ? 0 : 1];
    if (!state_ok(t, s, h0, "h0", n) || !state_ok(t, s, c0, "c0", n))
        return NULL;
    ag_tensor **fin = tape_room(t, 2 * (int64_t)s->layers);   /* final h, then c, by layer */
    if (!fin)
        return NULL;
    ag_tensor *seq = x;
    for (int k = 0; k < s->layers && seq; k++) {
        ag_tensor *h = state_at(t, s, h0, k), *c = state_at(t, s, c0, k);
        seq = layer_forward(t, s, &s->w[k], seq, &h, &c);
        fin[k] = h;
        fin[s->layers + k] = c;
    }
    if (!seq)
        return NULL;
    for (int k = 0; k < 2 * s->layers && (hn || cn); k++)   /* (1, N, H) each */
        fin[k] = fin[k] ? state_out(t, s, fin[k]) : NULL;
    if (hn)
        *hn = ag_concat(t, fin, s->layers, 0);                             /* (L, N, H) */
    if (cn && s->kind == CELL_LSTM)
        *cn = ag_concat(t, fin + s->layers, s->layers, 0);
    return seq;
}

/* ---- the three public types ---- */

static void *layer_alloc(size_t size, const char *fn)
{
    void *l = ag_mem_calloc(size);
    if (!l)
        ag_set_last_error("%s: out of memory", fn);
    return l;
}

#define STACK_VIEW(l, f, k, a)                                                            \
    (stack){.fn = (f), .kind = (k), .act = (a), .input = (l)->input, .hidden = (l)->hidden, \
            .layers = (l)->layers, .batch_first = (l)->batch_first, .w = (l)->w}

nn_lstm *nn_lstm_new(nn_params *p, const char *name, int64_t input, int64_t hidden, int layers,
                     bool batch_first, ag_rng *rng)
{
    nn_lstm *l = layer_alloc(sizeof *l, "nn_lstm_new");
    nn_rnn_weights *w = l ? stack_new(p, "nn_lstm_new", name, input, hidden, layers,
                                      CELL_LSTM, rng) : NULL;
    if (!w) {
        ag_mem_free(l);
        return NULL;
    }
    *l = (nn_lstm){.input = input, .hidden = hidden, .layers = layers,
                   .batch_first = batch_first, .w = w};
    return l;
}

ag_tensor *nn_lstm_forward(ag_tape *t, nn_lstm *l, ag_tensor *x, ag_tensor *h0, ag_tensor *c0,
                           ag_tensor **hn, ag_tensor **cn)
{
    if (!l) {
        if (hn)
            *hn = NULL;
        if (cn)
            *cn = NULL;
        return ag_tape_fail(t, AG_ERR_ARG, "nn_lstm_forward: layer is NULL");
    }
    const stack s = STACK_VIEW(l, "nn_lstm_forward", CELL_LSTM, NN_ACT_NONE);
    return stack_forward(t, &s, x, h0, c0, hn, cn);
}

void nn_lstm_free(nn_lstm *l)
{
    if (l)
        ag_mem_free(l->w);
    ag_mem_free(l);
}

nn_gru *nn_gru_new(nn_params *p, const char *name, int64_t input, int64_t hidden, int layers,
                   bool batch_first, ag_rng *rng)
{
    nn_gru *g = layer_alloc(sizeof *g, "nn_gru_new");
    nn_rnn_weights *w = g ? stack_new(p, "nn_gru_new", name, input, hidden, layers,
                                      CELL_GRU, rng) : NULL;
    if (!w) {
        ag_mem_free(g);
        return NULL;
    }
    *g = (nn_gru){.input = input, .hidden = hidden, .layers = layers,
                  .batch_first = batch_first, .w = w};
    return g;
}

ag_tensor *nn_gru_forward(ag_tape *t, nn_gru *g, ag_tensor *x, ag_tensor *h0, ag_tensor **hn)
{
    if (!g) {
        if (hn)
            *hn = NULL;
        return ag_tape_fail(t, AG_ERR_ARG, "nn_gru_forward: layer is NULL");
    }
    const stack s = STACK_VIEW(g, "nn_gru_forward", CELL_GRU, NN_ACT_NONE);
    return stack_forward(t, &s, x, h0, NULL, hn, NULL);
}

void nn_gru_free(nn_gru *g)
{
    if (g)
        ag_mem_free(g->w);
    ag_mem_free(g);
}

nn_rnn *nn_rnn_new(nn_params *p, const char *name, int64_t input, int64_t hidden, int layers,
                   bool batch_first, ag_rng *rng)
{
    nn_rnn *r = layer_alloc(sizeof *r, "nn_rnn_new");
    nn_rnn_weights *w = r ? stack_new(p, "nn_rnn_new", name, input, hidden, layers,
                                      CELL_RNN, rng) : NULL;
    if (!w) {
        ag_mem_free(r);
        return NULL;
    }
    *r = (nn_rnn){.input = input, .hidden = hidden, .layers = layers,
                  .batch_first = batch_first, .w = w, .act = NN_ACT_TANH};
    return r;
}

ag_status nn_rnn_set_nonlinearity(nn_rnn *r, nn_activation act)
{
    if (!r || (act != NN_ACT_TANH && act != NN_ACT_RELU)) {
        ag_set_last_error("nn_rnn_set_nonlinearity: %s", !r ? "layer is NULL"
                                                            : "act must be tanh or relu");
        return AG_ERR_ARG;
    }
    r->act = act;
    return AG_OK;
}

ag_tensor *nn_rnn_forward(ag_tape *t, nn_rnn *r, ag_tensor *x, ag_tensor *h0, ag_tensor **hn)
{
    if (!r) {
        if (hn)
            *hn = NULL;
        return ag_tape_fail(t, AG_ERR_ARG, "nn_rnn_forward: layer is NULL");
    }
    const stack s = STACK_VIEW(r, "nn_rnn_forward", CELL_RNN, r->act);
    return stack_forward(t, &s, x, h0, NULL, hn, NULL);
}

void nn_rnn_free(nn_rnn *r)
{
    if (r)
        ag_mem_free(r->w);
    ag_mem_free(r);
}
