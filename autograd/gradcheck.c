/* gradcheck.c — analytic gradients against central differences.
 * FULL compares every Jacobian entry d out_j / d x_i; FAST compares random
 * projections v^T J u (PyTorch's fast mode), one backward per projection. */
#include "autograd_internal.h"

#include <math.h>

#define MAX_INPUTS 64

typedef struct {
    ag_gradcheck_fn fn;
    void *ctx;
    ag_tensor **in;
    int n;
    ag_gradcheck_opts o;
    ag_gradcheck_report *r;
    ag_tape *eval;          /* grad-disabled tape for the differences */
    ag_tensor *stash[MAX_INPUTS]; /* callers' gradients, restored at the end */
    double worst_error;     /* pair_error at the report's worst entry */
    int n_user;             /* inputs >= n_user: gradgradcheck's output weight v */
} gc_state;

static ag_status gc_error(gc_state *s, ag_status st, const char *msg)
{
    snprintf(s->r->message, sizeof s->r->message, "ag_gradcheck: %s", msg);
    ag_set_last_error("%s", s->r->message);
    return st;
}

/* Output of fn at the current input values, copied into out (m doubles). */
static ag_status eval_at(gc_state *s, double *out, int64_t m)
{
    ag_tape_reset(s->eval);
    ag_tensor *y = s->fn(s->eval, s->in, s->ctx);
    if (!y || y->numel != m)
        return gc_error(s, y ? AG_ERR_STATE : ag_tape_status(s->eval),
                        y ? "fn changed its output size between calls"
                          : ag_tape_error(s->eval));
    for (int64_t j = 0; j < m; j++)
        out[j] = ag_get(y, j);
    return AG_OK;
}

/* The error of one compared pair, the worst entry's ranking:
 * |a - n| / max(1, |n|), the absolute error where |numeric| <= 1 (a
 * relative error means nothing near 0) and the relative error above; +inf
 * when either is NaN or they differ by an infinite amount.  Equal values
 * (equal infinities too) have error 0. */
static double pair_error(double a, double num)
{
    if (a == num)
        return 0;
    double d = fabs(a - num);
    return isnan(d) || isinf(d) ? INFINITY : d / fmax(1.0, fabs(num));
}

/* Records one comparison.  Pass or fail is PyTorch's rule, |a - n| <= atol
 * + rtol |n| (equal values pass, a NaN fails); the worst entry is the
 * failing pair with the largest error when one fails, otherwise the pair
 * with the largest error, so that a failing report names a failing pair
 * and a passing one names the least accurate, not an exact-zero pair. */
static void judge(gc_state *s, int k, int64_t i, int64_t j, double a, double num)
{
    double tol = s->o.atol + s->o.rtol * fabs(num);
    double excess = a == num ? -tol : fabs(a - num) - tol;
    if (isnan(excess))
        excess = INFINITY;
    double err = pair_error(a, num);
    bool fails = excess > 0;
    ag_gradcheck_report *r = s->r;
    bool worst_fails = r->compared > 0 && r->worst_excess > 0;
    if (r->compared == 0 || excess > r->worst_excess)
        r->worst_excess = excess;
    if (r->compared == 0 || (fails && !worst_fails) ||
        (fails == worst_fails && err > s->worst_error)) {
        s->worst_error = err;
        r->worst_input = k;
        r->worst_element = i;
        r->worst_output = j;
        r->analytic = a;
        r->numeric = num;
    }
    r->compared++;
}

/* Analytic gradient of sum_j seed_j * out_j into grads[k] (copies). */
static ag_status analytic(gc_state *s, ag_tape *tape, ag_tensor *y, ag_tensor *seed)
{
    for (int k = 0; k < s->n; k++)
        ag_zero_grad(s->in[k]);
    if (!y->requires_grad)
        return AG_OK; /* no path to an input: every gradient is 0 */
    ag_status st = ag_backward_seeded(tape, y, seed);
    return st == AG_OK ? AG_OK : gc_error(s, st, ag_tape_error(tape));
}

static double grad_at(const ag_tensor *x, int64_t i)
{
    return x->grad ? ag_get(x->grad, i) : 0.0;
}

/* Rows of the analytic Jacobian, one backward each: J[j * tot + off_k + i]. */
static ag_status jacobian_rows(gc_state *s, ag_tape *tape, ag_tensor *y, double *J,
                               int64_t tot)
{
    ag_tensor *seed = ag_tensor_new(AG_F64, y->ndim, y->shape);
    if (!seed)
        return gc_error(s, AG_ERR_NOMEM, "out of memory");
    ag_status st = AG_OK;
    for (int64_t j = 0; j < y->numel && st == AG_OK; j++) {
        ((double *)seed->data)[j] = 1.0;
        st = analytic(s, tape, y, seed);
        ((double *)seed->data)[j] = 0.0;
        int64_t off = 0;
        for (int k = 0; k < s->n; k++)
            for (int64_t i = 0; i < s->in[k]->numel; i++)
                J[j * tot + off++] = grad_at(s->in[k], i);
    }
    ag_tensor_free(seed);
    return st;
}

static ag_status check_full(gc_state *s, ag_tape *tape, ag_tensor *y)
{
    int64_t m = y->numel, tot = 0;
    for (int k = 0; k < s->n; k++)
        tot += s->in[k]->numel;
    double *J = ag_mem_alloc((size_t)(m * tot + 2 * m + 1) * sizeof(double));
    if (!J)
        return gc_error(s, AG_ERR_NOMEM, "out of memory for the Jacobian");
    double *plus = J + m * tot, *minus = plus + m;
    ag_status st = jacobian_rows(s, tape, y, J, tot);
    int64_t off = 0;
    for (int k = 0; k < s->n && st == AG_OK; k++) {
        ag_tensor *x = s->in[k];
        for (int64_t i = 0; i < x->numel && st == AG_OK; i++, off++) {
            if (!x->requires_grad)
                continue;
            double *xi = (double *)x->data + i, keep = *xi;
            *xi = keep + s->o.eps;
            st = eval_at(s, plus, m);
            *xi = keep - s->o.eps;
            if (st == AG_OK)
                st = eval_at(s, minus, m);
            *xi = keep;
            for (int64_t j = 0; j < m && st == AG_OK; j++)
                judge(s, k, i, j, J[j * tot + off], (plus[j] - minus[j]) / (2 * s->o.eps));
        }
    }
    ag_mem_free(J);
    return st;
}

static ag_status check_fast(gc_state *s, ag_tape *tape, ag_tensor *y)
{
    int64_t m = y->numel;
    ag_rng rng;
    ag_rng_seed(&rng, s->o.seed);
    ag_tensor *v = ag_tensor_normal(AG_F64, y->ndim, y->shape, 0, 1, &rng);
    double *buf = ag_mem_alloc((size_t)(2 * m + 1) * sizeof(double));
    ag_tensor *u[MAX_INPUTS] = {0};
    ag_status st = v && buf ? AG_OK : AG_ERR_NOMEM;
    for (int k = 0; k < s->n && st == AG_OK; k++)
        if (!(u[k] = ag_tensor_normal(AG_F64, s->in[k]->ndim, s->in[k]->shape, 0, 1, &rng)))
            st = AG_ERR_NOMEM;
    if (st != AG_OK)
        gc_error(s, st, "out of memory");
    if (st == AG_OK)
        st = analytic(s, tape, y, v);
    double a = 0, f[2] = {0, 0};
    for (int k = 0; k < s->n && st == AG_OK; k++)
        for (int64_t i = 0; s->in[k]->requires_grad && i < s->in[k]->numel; i++)
            a += grad_at(s->in[k], i) * ag_get(u[k], i);
    for (int side = 0; side < 2 && st == AG_OK; side++) {
        double step = side ? -s->o.eps : s->o.eps;
        for (int k = 0; k < s->n; k++)
            for (int64_t i = 0; s->in[k]->requires_grad && i < s->in[k]->numel; i++)
                ((double *)s->in[k]->data)[i] += step * ag_get(u[k], i);
        st = eval_at(s, buf, m);
        for (int k = 0; k < s->n; k++)
            for (int64_t i = 0; s->in[k]->requires_grad && i < s->in[k]->numel; i++)
                ((double *)s->in[k]->data)[i] -= step * ag_get(u[k], i);
        for (int64_t j = 0; j < m && st == AG_OK; j++)
            f[side] += ag_get(v, j) * buf[j];
    }
    if (st == AG_OK)
        judge(s, -1, -1, -1, a, (f[0] - f[1]) / (2 * s->o.eps));
    for (int k = 0; k < s->n; k++)
        ag_tensor_free(u[k]);
    ag_tensor_free(v);
    ag_mem_free(buf);
    return st;
}

static ag_status validate(gc_state *s)
{
    if (!s->fn || !s->in || s->n <= 0 || s->n > MAX_INPUTS)
        return gc_error(s, AG_ERR_ARG, "need fn and 1..64 inputs");
    int checked = 0;
    for (int k = 0; k < s->n; k++) {
        ag_tensor *x = s->in[k];
        if (!x || !x->persistent || x->dtype != AG_F64) {
            char msg[128];
            snprintf(msg, sizeof msg, "input #%d must be a persistent f64 tensor", k + 1);
            return gc_error(s, AG_ERR_ARG, msg);
        }
        checked += x->requires_grad;
    }
    if (!checked)
        return gc_error(s, AG_ERR_ARG, "no input requires grad: nothing to check");
    return AG_OK;
}

static void set_defaults(ag_gradcheck_opts *o)
{
    if (o->eps <= 0)
        o->eps = 1e-6;
    o->atol = o->atol == 0 ? 1e-5 : o->atol < 0 ? 0 : o->atol;
    if (o->rtol <= 0)
        o->rtol = 1e-3;
    if (o->full_max <= 0)
        o->full_max = 256;
}

/* The report's one line.  Inputs are numbered from 1 ("input #1"), as the
 * ops' messages number them; worst_input stays a 0-based index. */
static void summarise(gc_state *s)
{
    ag_gradcheck_report *r = s->r;
    r->passed = r->compared > 0 && r->worst_excess <= 0;
    char where[160];
    if (r->worst_input < 0)
        snprintf(where, sizeof where, "the random projection v^T J u");
    else if (r->worst_input >= s->n_user)
        snprintf(where, sizeof where, "the output weight v (input #%d) element %lld output %lld",
                 r->worst_input + 1, (long long)r->worst_element, (long long)r->worst_output);
    else
        snprintf(where, sizeof where, "input #%d element %lld output %lld", r->worst_input + 1,
                 (long long)r->worst_element, (long long)r->worst_output);
    snprintf(r->message, sizeof r->message,
             "gradcheck %s: %lld value%s compared; worst at %s: analytic %.10g numeric %.10g "
             "(error %.3g, |diff| %.3g, tol %.3g)",
             r->passed ? "passed" : "FAILED", (long long)r->compared,
             r->compared == 1 ? "" : "s", where, r->analytic, r->numeric, s->worst_error,
             fabs(r->analytic - r->numeric), s->o.atol + s->o.rtol * fabs(r->numeric));
}

/* State for a check of fn, with the report cleared (local when the
 * caller gave none) and the options defaulted. */
static gc_state gc_start(ag_gradcheck_fn fn, void *ctx, ag_tensor **inputs, int n,
                         const ag_gradcheck_opts *opts, ag_gradcheck_report *report)
{
    gc_state s = {fn, ctx, inputs, n, opts ? *opts : (ag_gradcheck_opts){0}, report, NULL,
                  {0}, 0, n};
    memset(s.r, 0, sizeof *s.r);
    s.r->worst_input = -1;
    set_defaults(&s.o);
    return s;
}

/* ag_gradcheck, with inputs n_user.. named as gradgradcheck's weight v. */
static ag_status gradcheck_run(ag_gradcheck_fn fn, void *ctx, ag_tensor **inputs, int n,
                               const ag_gradcheck_opts *opts, ag_gradcheck_report *report,
                               int n_user)
{
    ag_gradcheck_report local_r;
    gc_state s = gc_start(fn, ctx, inputs, n, opts, report ? report : &local_r);
    s.n_user = n_user;
    ag_status st = validate(&s);
    if (st != AG_OK)
        return st;
    for (int k = 0; k < n; k++) { /* keep the caller's gradients out of it */
        s.stash[k] = inputs[k]->grad;
        inputs[k]->grad = NULL;
    }
    ag_tape *tape = ag_tape_new();
    s.eval = ag_tape_new();
    ag_tensor *y = NULL;
    if (!tape || !s.eval)
        st = gc_error(&s, AG_ERR_NOMEM, "out of memory");
    else if (!(y = fn(tape, inputs, ctx)))
        st = gc_error(&s, ag_tape_status(tape) ? ag_tape_status(tape) : AG_ERR_NULL,
                      ag_tape_error(tape) ? ag_tape_error(tape) : "fn returned NULL");
    else if (y->dtype != AG_F64 && y->dtype != AG_I64) /* indices: derivative 0 */
        st = gc_error(&s, AG_ERR_DTYPE, "fn must return an f64 tensor");
    ag_tape_set_grad_enabled(s.eval, false);
    if (st == AG_OK) {
        bool full = s.o.mode == AG_GRADCHECK_FULL ||
                    (s.o.mode == AG_GRADCHECK_AUTO && y->numel <= s.o.full_max);
        st = full ? check_full(&s, tape, y) : check_fast(&s, tape, y);
    }
    if (st == AG_OK) {
        summarise(&s);
        st = s.r->passed ? AG_OK : AG_ERR_GRADIENT;
        if (st != AG_OK)
            ag_set_last_error("%s", s.r->message);
    }
    for (int k = 0; k < n; k++) {
        if (inputs[k]->grad && inputs[k]->grad != s.stash[k]) {
            ag_mem_free(inputs[k]->grad->data);
            ag_mem_free(inputs[k]->grad);
        }
        inputs[k]->grad = s.stash[k];
    }
    ag_tape_free(tape);
    ag_tape_free(s.eval);
    return st;
}

ag_status ag_gradcheck(ag_gradcheck_fn fn, void *ctx, ag_tensor **inputs, int n,
                       const ag_gradcheck_opts *opts, ag_gradcheck_report *report)
{
    return gradcheck_run(fn, ctx, inputs, n, opts, report, n);
}

/* ---- gradgradcheck: gradcheck of the recorded first derivative ---- */

typedef struct {
    ag_gradcheck_fn fn;
    void *ctx;
    int n; /* the caller's inputs; in[n] is the output weight v */
} gg_state;

/* G(x, v) = d <fn(x), v> / dx for the x that require grad, flattened and
 * joined into one vector.  The recording stays on while fn runs even on
 * gradcheck's evaluation tape, since G needs the graph of fn; G itself is
 * recorded only when the tape records. */
static ag_tensor *gg_apply(ag_tape *t, ag_tensor **in, void *vctx)
{
    const gg_state *c = vctx;
    bool record = ag_tape_grad_enabled(t);
    ag_tape_set_grad_enabled(t, true);
    ag_tensor *y = c->fn(t, in, c->ctx);
    ag_tensor *wrt[MAX_INPUTS], *g[MAX_INPUTS];
    int m = 0;
    for (int k = 0; k < c->n; k++)
        if (in[k]->requires_grad)
            wrt[m++] = in[k];
    ag_tensor *out = NULL;
    if (y && ag_gradients(t, y, in[c->n], m, wrt, g, record) == AG_OK) {
        int64_t flat = -1;
        for (int k = 0; k < m; k++)
            g[k] = ag_reshape(t, g[k], 1, &flat);
        out = ag_concat(t, g, m, 0);
    }
    ag_tape_set_grad_enabled(t, record);
    return out;
}

ag_status ag_gradgradcheck(ag_gradcheck_fn fn, void *ctx, ag_tensor **inputs, int n,
                           const ag_gradcheck_opts *opts, ag_gradcheck_report *report)
{
    ag_gradcheck_report local_r;
    gc_state s = gc_start(fn, ctx, inputs, n, opts, report ? report : &local_r);
    ag_status st = n < MAX_INPUTS ? validate(&s)
                                  : gc_error(&s, AG_ERR_ARG, "need fn and 1..63 inputs");
    if (st != AG_OK)
        return st;
    /* v: a fixed random weight of fn's output shape, itself checked */
    ag_tape *probe = ag_tape_new();
    ag_tensor *y = probe ? fn(probe, inputs, ctx) : NULL, *v = NULL;
    if (y && y->dtype == AG_F64) {
        ag_rng rng;
        ag_rng_seed(&rng, s.o.seed ^ 0x9e3779b97f4a7c15u);
        v = ag_tensor_normal(AG_F64, y->ndim, y->shape, 0, 1, &rng);
    }
    if (!v)
        st = gc_error(&s, y ? AG_ERR_NOMEM : AG_ERR_STATE,
                      y ? "fn must return an f64 tensor (or out of memory)"
                        : probe && ag_tape_error(probe) ? ag_tape_error(probe)
                                                        : "fn returned NULL");
    ag_tape_free(probe);
    if (st != AG_OK)
        return st;
    ag_set_requires_grad(v, true);
    ag_tensor *in[MAX_INPUTS];
    memcpy(in, inputs, (size_t)n * sizeof *in);
    in[n] = v;
    gg_state c = {fn, ctx, n};
    st = gradcheck_run(gg_apply, &c, in, n + 1, opts, s.r, n);
    if (st != AG_OK || !s.r->passed) {
        char *m = s.r->message;
        if (strncmp(m, "gradcheck", 9) == 0) { /* name what was checked */
            size_t len = strnlen(m, sizeof s.r->message - 5);
            memmove(m + 4, m, len);
            memcpy(m, "grad", 4);
            m[len + 4] = '\0';
        }
    }
    ag_tensor_free(v);
    return st;
}
