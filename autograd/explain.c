/* explain.c — the gradient-interpretation report: the largest |dL/dw|
 * in words, each first-order prediction checked by nudging the weight and
 * re-evaluating the loss, per-tensor gradient norms and dead fractions. */
#include "autograd_internal.h"

#include <math.h>

#define MAX_TOP 64

typedef struct {
    ag_gradcheck_fn loss;
    void *ctx;
    ag_tensor **params;
    int n;
    ag_tape *eval;
} ex_state;

static ag_status eval_loss(ex_state *s, double *out)
{
    ag_tape_reset(s->eval);
    ag_tensor *l = s->loss(s->eval, s->params, s->ctx);
    if (!l) {
        ag_set_last_error("ag_explain: %s", ag_tape_error(s->eval));
        return ag_tape_status(s->eval);
    }
    *out = ag_item(l);
    return AG_OK;
}

static void set_defaults(ag_explain_opts *o)
{
    if (o->top <= 0)
        o->top = 10;
    if (o->top > MAX_TOP)
        o->top = MAX_TOP;
    if (o->say_step <= 0)
        o->say_step = 0.01;
    if (o->n_steps <= 0 || o->n_steps > 8) {
        static const double d[] = {1e-4, 1e-3, 1e-2, 1e-1};
        o->n_steps = 4;
        memcpy(o->steps, d, sizeof d);
    }
    if (o->tolerance <= 0)
        o->tolerance = 0.1;
}

/* Keeps items[0..*m) sorted by |grad|, descending, at most top of them. */
static void consider(ag_explain_item *items, int *m, int top, int k, int64_t i, double g)
{
    if (*m == top && fabs(g) <= fabs(items[*m - 1].grad))
        return;
    int j = *m < top ? (*m)++ : top - 1;
    while (j > 0 && fabs(items[j - 1].grad) < fabs(g)) {
        items[j] = items[j - 1];
        j--;
    }
    memset(&items[j], 0, sizeof items[j]);
    items[j].param = k;
    items[j].index = i;
    items[j].grad = g;
}

static void fmt_index(const ag_tensor *t, int64_t i, char *buf, size_t n)
{
    int64_t idx[AG_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->shape[d] ? i % t->shape[d] : 0;
        i = t->shape[d] ? i / t->shape[d] : 0;
    }
    ag_fmt_shape(buf, n, t->ndim, idx);
}

/* Nudges one weight by +-p for every step; restores it exactly. */
static ag_status verify(ex_state *s, const ag_explain_opts *o, double l0, ag_explain_item *it)
{
    ag_tensor *w = s->params[it->param];
    double orig = ag_get(w, it->index);
    ag_status st = AG_OK;
    it->n_steps = o->n_steps;
    for (int k = 0; k < o->n_steps && st == AG_OK; k++) {
        double p = o->steps[k], lp = 0, lm = 0;
        ag_set(w, it->index, orig + p);
        double applied = ag_get(w, it->index) - orig; /* f32 rounds the step */
        st = eval_loss(s, &lp);
        ag_set(w, it->index, orig - p);
        if (st == AG_OK)
            st = eval_loss(s, &lm);
        ag_set(w, it->index, orig);
        it->step[k] = p;
        it->predicted[k] = it->grad * applied;
        it->actual[k] = lp - l0;
        it->actual_neg[k] = lm - l0;
        double ep = fabs(it->actual[k] - it->predicted[k]);
        double em = fabs(it->actual_neg[k] + it->predicted[k]);
        it->rel_err[k] = fmax(ep, em) / fmax(fabs(it->predicted[k]), 1e-300);
        if (it->breaks_at == 0 && it->rel_err[k] > o->tolerance)
            it->breaks_at = p;
    }
    return st;
}

static void print_item(FILE *out, ex_state *s, const ag_explain_opts *o,
                       const ag_explain_item *it, int rank)
{
    const ag_tensor *w = s->params[it->param];
    char idx[96];
    fmt_index(w, it->index, idx, sizeof idx);
    const char *name = w->name ? w->name : "param";
    fprintf(out, "%2d. %s%s  dL/dw = %+.6g: increasing it by %g should %s the loss by %.4g\n",
            rank, name, idx, it->grad, o->say_step, it->grad > 0 ? "raise" : "lower",
            fabs(it->grad * o->say_step));
    fprintf(out, "    %10s %14s %14s %14s %9s\n", "p", "predicted", "actual(+p)",
            "actual(-p)", "rel.err");
    for (int k = 0; k < it->n_steps; k++)
        fprintf(out, "    %10.0e %+14.6e %+14.6e %+14.6e %8.2f%%\n", it->step[k],
                it->predicted[k], it->actual[k], it->actual_neg[k], 100 * it->rel_err[k]);
    if (it->breaks_at > 0)
        fprintf(out, "    first-order prediction breaks at p = %g (error > %g%%)\n",
                it->breaks_at, 100 * o->tolerance);
    else
        fprintf(out, "    first-order prediction holds for every p tried (error <= %g%%)\n",
                100 * o->tolerance);
}

static void print_norms(FILE *out, ex_state *s)
{
    fprintf(out, "per-tensor gradients:\n  %-24s %12s %14s\n", "tensor", "|grad|",
            "exactly zero");
    for (int k = 0; k < s->n; k++) {
        const ag_tensor *w = s->params[k];
        double sq = 0;
        int64_t zeros = 0;
        for (int64_t i = 0; i < w->numel; i++) {
            double g = w->grad ? ag_get(w->grad, i) : 0;
            sq += g * g;
            zeros += g == 0;
        }
        fprintf(out, "  %-24s %12.6g %13.2f%%\n", w->name ? w->name : "param", sqrt(sq),
                w->numel ? 100.0 * (double)zeros / (double)w->numel : 0.0);
    }
}

static ag_status run(ex_state *s, ag_explain_opts *o, ag_explain_item *items, FILE *out)
{
    ag_tape *tape = ag_tape_new();
    if (!tape)
        return AG_ERR_NOMEM;
    ag_tensor *l = s->loss(tape, s->params, s->ctx);
    ag_status st = l ? ag_backward(tape, l) : ag_tape_status(tape);
    if (st != AG_OK)
        ag_set_last_error("ag_explain: %s", ag_tape_error(tape));
    double l0 = l && st == AG_OK ? ag_item(l) : 0;
    ag_tape_free(tape);
    int m = 0;
    for (int k = 0; k < s->n && st == AG_OK; k++)
        for (int64_t i = 0; s->params[k]->grad && i < s->params[k]->numel; i++)
            consider(items, &m, o->top, k, i, ag_get(s->params[k]->grad, i));
    if (out && st == AG_OK) {
        fprintf(out, "loss %.6g\n", l0);
        print_norms(out, s);
        fprintf(out, "the %d weights with the largest |dL/dw|:\n", m);
    }
    for (int r = 0; r < m && st == AG_OK; r++) {
        st = verify(s, o, l0, &items[r]);
        if (out && st == AG_OK)
            print_item(out, s, o, &items[r], r + 1);
    }
    o->top = m;
    return st;
}

ag_status ag_explain(ag_gradcheck_fn loss, void *ctx, ag_tensor **params, int n,
                     const ag_explain_opts *opts, ag_explain_item *items, FILE *out)
{
    if (!loss || !params || n <= 0) {
        if (!loss || !params)
            ag_set_last_error("ag_explain: %s is NULL", !loss ? "loss" : "params");
        else
            ag_set_last_error("ag_explain: n is %d (must be >= 1)", n);
        return AG_ERR_ARG;
    }
    for (int k = 0; k < n; k++)
        if (!params[k] || !params[k]->persistent) {
            ag_set_last_error("ag_explain: parameter #%d %s", k + 1, /* numbered from 1 */
                              params[k] ? "is not a persistent tensor" : "is NULL");
            return AG_ERR_ARG;
        }
    ag_explain_opts o = opts ? *opts : (ag_explain_opts){0};
    set_defaults(&o);
    ag_explain_item local[MAX_TOP];
    ag_tensor **stash = ag_mem_alloc((size_t)n * sizeof *stash);
    ex_state s = {loss, ctx, params, n, ag_tape_new()};
    if (!stash || !s.eval) {
        ag_mem_free(stash);
        ag_tape_free(s.eval);
        ag_set_last_error("ag_explain: out of memory");
        return AG_ERR_NOMEM;
    }
    ag_tape_set_grad_enabled(s.eval, false);
    for (int k = 0; k < n; k++) { /* the caller's gradients stay as they were */
        stash[k] = params[k]->grad;
        params[k]->grad = NULL;
    }
    int asked = o.top;
    ag_status st = run(&s, &o, local, out);
    if (items) { /* o.top is now the number listed; the rest are zeroed */
        memset(items, 0, (size_t)asked * sizeof *items);
        memcpy(items, local, (size_t)o.top * sizeof *items);
    }
    for (int k = 0; k < n; k++) {
        ag_tensor_free(params[k]->grad);
        params[k]->grad = stash[k];
    }
    ag_mem_free(stash);
    ag_tape_free(s.eval);
    return st;
}
