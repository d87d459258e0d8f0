/* ops_reduce2.c — max, min, logsumexp, variance and argmax over one axis or
 * all elements.  As in ops_reduce.c an axis reduction views the input as
 * (O, K, I): O = product of the dims before the axis, K = the axis, I =
 * product of the dims after it; the output is (O, I).  Notation: x = input,
 * z = output, g = dL/dz.  Math runs in double (f32 accumulates in double)
 * and is rounded once to the tensor's dtype. */
#include "autograd_internal.h"

#include <math.h>

typedef enum { R_MAX, R_MIN, R_LSE, R_VAR, R_ARGMAX } red_kind;

typedef ag_axis_view red_view;

/* iattr: [0] axis (-1 for all), [1] keepdim, [2] kind, [3] correction */
static red_view view_of(const ag_tensor *a, int axis)
{
    return ag_axis_view_of(a, axis);
}

static inline double ld(const void *p, ag_dtype dt, int64_t i)
{
    return dt == AG_F64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

static inline void st(void *p, ag_dtype dt, int64_t i, double v)
{
    if (dt == AG_F64)
        ((double *)p)[i] = v;
    else
        ((float *)p)[i] = (float)v;
}

static inline void add_to(void *p, ag_dtype dt, int64_t i, double v)
{
    if (dt == AG_F64)
        ((double *)p)[i] += v;
    else
        ((float *)p)[i] += (float)v;
}

/* Index along K of the first largest (smallest) element of row (o, i); a
 * NaN counts as the extreme, the first one wins (as in PyTorch). */
static int64_t arg_extreme(const void *x, ag_dtype dt, red_view v, int64_t o, int64_t i,
                           bool largest)
{
    int64_t base = o * v.k * v.inner + i, best = 0;
    double bv = ld(x, dt, base);
    for (int64_t k = 1; k < v.k && bv == bv; k++) {
        double xv = ld(x, dt, base + k * v.inner);
        if (xv != xv || (largest ? xv > bv : xv < bv)) {
            bv = xv;
            best = k;
        }
    }
    return best;
}

static void red2_forward(ag_entry *e)
{
    const ag_tensor *a = e->in[0];
    ag_tensor *z = e->out;
    red_kind kind = (red_kind)e->iattr[2];
    red_view v = view_of(a, (int)e->iattr[0]);
    ag_dtype dt = a->dtype;
    for (int64_t o = 0; o < v.outer; o++)
        for (int64_t i = 0; i < v.inner; i++) {
            int64_t base = o * v.k * v.inner + i, j = o * v.inner + i;
            if (kind == R_MAX || kind == R_MIN || kind == R_ARGMAX) {
                int64_t best = arg_extreme(a->data, dt, v, o, i, kind != R_MIN);
                if (kind == R_ARGMAX) {
                    st(z->data, dt, j, (double)best);
                } else {
                    st(z->data, dt, j, ld(a->data, dt, base + best * v.inner));
                    ((int64_t *)e->aux)[j] = best; /* (O, I) arg index */
                }
            } else if (kind == R_LSE) {
                double m = -INFINITY, s = 0;
                for (int64_t k = 0; k < v.k; k++)
                    m = fmax(m, ld(a->data, dt, base + k * v.inner));
                if (isinf(m)) /* all -inf, or an inf: no shift (PyTorch's rule) */
                    m = 0;
                for (int64_t k = 0; k < v.k; k++)
                    s += exp(ld(a->data, dt, base + k * v.inner) - m);
                st(z->data, dt, j, m + log(s));
            } else { /* R_VAR */
                double mean = 0, ss = 0;
                for (int64_t k = 0; k < v.k; k++)
                    mean += ld(a->data, dt, base + k * v.inner);
                mean /= (double)v.k;
                for (int64_t k = 0; k < v.k; k++) {
                    double d = ld(a->data, dt, base + k * v.inner) - mean;
                    ss += d * d;
                }
                ((double *)e->aux)[j] = mean; /* (O, I) */
                st(z->data, dt, j, ss / (double)(v.k - e->iattr[3]));
            }
        }
}

static void red2_backward(ag_tape *tape, ag_entry *e)
{
    ag_tensor *a = e->in[0], *z = e->out;
    void *dx = ag_grad_data(tape, a);
    if (!dx)
        return;
    red_kind kind = (red_kind)e->iattr[2];
    red_view v = view_of(a, (int)e->iattr[0]);
    ag_dtype dt = a->dtype;
    const void *g = z->grad->data;
    for (int64_t o = 0; o < v.outer; o++)
        for (int64_t i = 0; i < v.inner; i++) {
            int64_t base = o * v.k * v.inner + i, j = o * v.inner + i;
            double gj = ld(g, dt, j);
            if (kind == R_MAX || kind == R_MIN) {
                /* dx[o, arg, i] += g[o, i]: only the first extreme element */
                add_to(dx, dt, base + ((const int64_t *)e->aux)[j] * v.inner, gj);
            } else if (kind == R_LSE) {
                /* dx += g * exp(x - z)  (the softmax of x along the axis) */
                double zj = ld(z->data, dt, j);
                for (int64_t k = 0; k < v.k; k++) {
                    int64_t xi = base + k * v.inner;
                    add_to(dx, dt, xi, gj * exp(ld(a->data, dt, xi) - zj));
                }
            } else if (kind == R_VAR) {
                /* dx += g * 2 (x - mean) / (K - correction) */
                double mean = ((const double *)e->aux)[j];
                double c = 2.0 * gj / (double)(v.k - e->iattr[3]);
                for (int64_t k = 0; k < v.k; k++) {
                    int64_t xi = base + k * v.inner;
                    add_to(dx, dt, xi, c * (ld(a->data, dt, xi) - mean));
                }
            }
        }
}

/* argmax is never recorded (its forward runs with recording off), so this
 * never runs: no gradient flows through an index. */
static void argmax_backward(ag_tape *tape, ag_entry *e)
{
    (void)tape;
    (void)e;
}

static ag_tensor *red2_run(ag_tape *tape, const ag_op_def *def, const char *fn,
                           red_kind kind, ag_tensor *a, int axis, bool keepdim,
                           int correction)
{
    if (!ag_check_inputs(tape, fn, 1, &a))
        return NULL;
    int64_t shape[AG_MAX_DIMS];
    int nd = 0, user_axis = axis;
    if (axis == AG_ALL) {
        for (int i = 0; keepdim && i < a->ndim; i++)
            shape[nd++] = 1;
        axis = -1;
    } else {
        if (!ag_check_axis(tape, fn, a->ndim, &axis))
            return NULL;
        for (int i = 0; i < a->ndim; i++)
            if (i != axis)
                shape[nd++] = a->shape[i];
            else if (keepdim)
                shape[nd++] = 1;
    }
    red_view v = view_of(a, axis);
    char sbuf[128], abuf[32] = "every axis";
    if (user_axis != AG_ALL)
        snprintf(abuf, sizeof abuf, "axis %d", user_axis);
    if (v.k == 0 && kind != R_LSE && kind != R_VAR)
        return ag_fail(tape, AG_ERR_SHAPE, "%s: reduction over an empty axis (%s of %s)", fn,
                       abuf, ag_shape_str(a, sbuf, sizeof sbuf));
    if (kind == R_VAR && v.k - correction <= 0)
        return ag_fail(tape, AG_ERR_ARG,
                       "%s: %lld elements minus correction %d leave no degrees of freedom "
                       "(%s of %s)", fn, (long long)v.k, correction, abuf,
                       ag_shape_str(a, sbuf, sizeof sbuf));
    size_t aux = 0;
    if (kind == R_MAX || kind == R_MIN)
        aux = (size_t)(v.outer * v.inner) * sizeof(int64_t);
    else if (kind == R_VAR)
        aux = (size_t)(v.outer * v.inner) * sizeof(double);
    ag_op_call c = {.def = def, .in = &a, .n_in = 1, .dtype = a->dtype, .ndim = nd,
                    .shape = shape, .iattr = {axis, keepdim, kind, correction},
                    .aux_bytes = aux};
    if (kind != R_ARGMAX)
        return ag_op_run(tape, &c);
    bool was = tape->grad_enabled; /* an index has no gradient: record nothing */
    tape->grad_enabled = false;
    ag_tensor *out = ag_op_run(tape, &c);
    tape->grad_enabled = was;
    return out;
}

ag_tensor *ag_max(ag_tape *t, ag_tensor *a, int axis, bool keepdim)
{
    return red2_run(t, &ag_op_max, "ag_max", R_MAX, a, axis, keepdim, 0);
}

ag_tensor *ag_min(ag_tape *t, ag_tensor *a, int axis, bool keepdim)
{
    return red2_run(t, &ag_op_min, "ag_min", R_MIN, a, axis, keepdim, 0);
}

ag_tensor *ag_logsumexp(ag_tape *t, ag_tensor *a, int axis, bool keepdim)
{
    return red2_run(t, &ag_op_logsumexp, "ag_logsumexp", R_LSE, a, axis, keepdim, 0);
}

ag_tensor *ag_variance(ag_tape *t, ag_tensor *a, int axis, bool keepdim, int correction)
{
    return red2_run(t, &ag_op_variance, "ag_variance", R_VAR, a, axis, keepdim, correction);
}

ag_tensor *ag_argmax(ag_tape *t, ag_tensor *a, int axis, bool keepdim)
{
    return red2_run(t, &ag_op_argmax, "ag_argmax", R_ARGMAX, a, axis, keepdim, 0);
}

/* ---- samples: every axis form, keepdim on and off, size-1 dims ---- */

static const struct {
    int ndim;
    int64_t shape[3];
    int axis;
    bool keepdim;
    int correction; /* variance only */
} red2_cases[] = {
    {2, {3, 4}, 0, false, 1},      {2, {3, 4}, 1, true, 0},
    {3, {2, 3, 4}, -1, false, 1},  {3, {2, 3, 4}, -2, true, 2},
    {3, {2, 1, 3}, AG_ALL, false, 1}, {2, {2, 3}, AG_ALL, true, 0},
    {1, {5}, 0, false, 1},         {3, {2, 1, 3}, 1, false, 0},
    {1, {1}, -1, true, 0},
};
#define RED2_CASES ((int)(sizeof red2_cases / sizeof red2_cases[0]))

static ag_tensor *red2_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    int axis = (int)s->iarg[1];
    bool keepdim = s->iarg[2];
    switch ((red_kind)s->iarg[0]) {
    case R_MAX: return ag_max(t, in[0], axis, keepdim);
    case R_MIN: return ag_min(t, in[0], axis, keepdim);
    case R_LSE: return ag_logsumexp(t, in[0], axis, keepdim);
    case R_VAR: return ag_variance(t, in[0], axis, keepdim, (int)s->iarg[3]);
    case R_ARGMAX: return ag_argmax(t, in[0], axis, keepdim);
    }
    return NULL;
}

/* Distinct values: a random permutation of evenly spaced levels, jittered
 * by a fifth of the spacing, so no two elements tie (max/min kinks). */
static void make_distinct(ag_tensor *x, ag_rng *rng)
{
    double *d = x->data;
    int64_t n = x->numel;
    for (int64_t i = 0; i < n; i++)
        d[i] = (double)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)ag_rng_below(rng, (uint64_t)i + 1);
        double tmp = d[i];
        d[i] = d[j];
        d[j] = tmp;
    }
    for (int64_t i = 0; i < n; i++)
        d[i] = -2.0 + 4.0 * (d[i] + 0.5 + 0.2 * (ag_rng_uniform(rng) - 0.5)) / (double)n;
}

static bool red2_sample(red_kind kind, int which, ag_rng *rng, ag_op_sample *s)
{
    /* logsumexp gets one more case with large values (the shift matters) */
    if (which > RED2_CASES || (which == RED2_CASES && kind != R_LSE))
        return false;
    int c = which == RED2_CASES ? 2 : which;
    double lo = which == RED2_CASES ? 30 : -2, hi = which == RED2_CASES ? 40 : 2;
    s->in[0] = ag_sample_tensor(rng, red2_cases[c].ndim, red2_cases[c].shape,
                                AG_SAMPLE_RANGE, lo, hi);
    if (s->in[0] && (kind == R_MAX || kind == R_MIN || kind == R_ARGMAX))
        make_distinct(s->in[0], rng);
    s->n_in = 1;
    s->fn = red2_apply;
    s->iarg[0] = kind;
    s->iarg[1] = red2_cases[c].axis;
    s->iarg[2] = red2_cases[c].keepdim;
    s->iarg[3] = red2_cases[c].correction;
    return true;
}

#define RED2_SAMPLE(NAME, KIND)                                               \
    static bool NAME##_sample(int which, ag_rng *rng, ag_op_sample *s)        \
    {                                                                         \
        return red2_sample(KIND, which, rng, s);                              \
    }
RED2_SAMPLE(max, R_MAX)
RED2_SAMPLE(min, R_MIN)
RED2_SAMPLE(logsumexp, R_LSE)
RED2_SAMPLE(variance, R_VAR)
RED2_SAMPLE(argmax, R_ARGMAX)

const ag_op_def ag_op_max = {"max", 1, red2_forward, red2_backward, max_sample};
const ag_op_def ag_op_min = {"min", 1, red2_forward, red2_backward, min_sample};
const ag_op_def ag_op_logsumexp = {"logsumexp", 1, red2_forward, red2_backward,
                                   logsumexp_sample};
const ag_op_def ag_op_variance = {"variance", 1, red2_forward, red2_backward,
                                  variance_sample};
const ag_op_def ag_op_argmax = {"argmax", 1, red2_forward, argmax_backward, argmax_sample};
