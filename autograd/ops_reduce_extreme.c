/* ops_reduce_extreme.c — the reductions that pick one element: max, min
 * (its value) and argmax (its index), over one axis or all elements.
 * The input is viewed as (O, K, I) around the axis (ops_reduce_internal.h);
 * the output is (O, I).  Notation: x = input, z = output, g = dL/dz.
 * The chosen element is the first extreme one along K; a NaN counts as
 * the extreme, the first NaN wins (as in PyTorch).  max and min save its
 * index, (O, I) int64 in aux, for both derivatives. */
#include "ops_reduce_internal.h"

#define EXTREME_LOOPS(T)                                                      \
    /* arg[o,i] = first k of the extreme x[o,k,i]; z = x there (index: z =   \
     * k, as a value of the dtype) */                                         \
    AG_INLINE void extreme_fwd_##T(const T *x, T *z, int64_t *arg, ag_axis_view v, \
                                   bool largest, bool index)                  \
    {                                                                         \
        for (int64_t o = 0; o < v.outer; o++)                                 \
            for (int64_t i = 0; i < v.inner; i++) {                           \
                const T *r = x + o * v.k * v.inner + i;                       \
                int64_t best = 0;                                             \
                T bv = r[0];                                                  \
                for (int64_t k = 1; k < v.k && bv == bv; k++) {               \
                    T xv = r[k * v.inner];                                    \
                    if (xv != xv || (largest ? xv > bv : xv < bv)) {          \
                        bv = xv;                                              \
                        best = k;                                             \
                    }                                                         \
                }                                                             \
                int64_t j = o * v.inner + i;                                  \
                if (index) {                                                  \
                    z[j] = (T)best;                                           \
                } else {                                                      \
                    z[j] = bv;                                                \
                    arg[j] = best;                                            \
                }                                                             \
            }                                                                 \
    }                                                                         \
    /* dx[o, arg[o,i], i] += g[o,i] */                                        \
    static void extreme_bwd_##T(const T *g, T *dx, const int64_t *arg, ag_axis_view v) \
    {                                                                         \
        for (int64_t o = 0; o < v.outer; o++)                                 \
            for (int64_t i = 0; i < v.inner; i++) {                           \
                int64_t j = o * v.inner + i;                                  \
                dx[(o * v.k + arg[j]) * v.inner + i] += g[j];                 \
            }                                                                 \
    }
EXTREME_LOOPS(float)
EXTREME_LOOPS(double)

/* One forward per row, the kind a constant folded into the kernel. */
#define EXTREME_FORWARD(name, largest, index)                                 \
    static void name##_forward(ag_entry *e)                                   \
    {                                                                         \
        AG_REDUCE_TYPED(e->out->dtype, extreme_fwd, e->in[0]->data, e->out->data, \
                        e->aux, ag_reduce_view(e), largest, index);           \
    }
EXTREME_FORWARD(max, true, false)
EXTREME_FORWARD(min, false, false)
EXTREME_FORWARD(argmax, true, true)

/* dx = expand(g) * onehot(arg): only the chosen element */
static void extreme_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (dx)
        AG_REDUCE_TYPED(e->out->dtype, extreme_bwd, e->out->grad->data, dx, e->aux,
                        ag_reduce_view(e));
}

typedef struct {
    const int64_t *arg; /* (O, I) */
    ag_axis_view v;
} onehot_ctx;

/* 1 at x[o, arg[o,i], i], else 0; flat index n = (o * K + k) * I + i */
static double onehot_at(const void *vc, int64_t n)
{
    const onehot_ctx *c = vc;
    int64_t i = n % c->v.inner, k = n / c->v.inner % c->v.k, o = n / c->v.inner / c->v.k;
    return c->arg[o * c->v.inner + i] == k ? 1.0 : 0.0;
}

/* dx = expand(g) * onehot(arg), the mask a constant (the choice does not
 * move under a small change of x) */
static void extreme_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const ag_tensor *x = e->in[0];
    if (!ag_needs_grad(tape, x))
        return;
    onehot_ctx c = {e->aux, ag_reduce_view(e)};
    ag_tensor *mask = ag_const_fill(tape, x->dtype, x->ndim, x->shape, onehot_at, &c);
    gin[0] = ag_mul(tape, ag_reduce_keepdim(tape, e, gout), mask);
}

static ag_tensor *extreme_run(ag_tape *t, const ag_op_def *def, const char *fn,
                              ag_tensor *a, int axis, bool keepdim)
{
    ag_reduce_plan p;
    if (!ag_reduce_plan_of(t, fn, a, axis, keepdim, true, &p))
        return NULL;
    return ag_reduce_run(t, def, a, &p, (size_t)(p.v.outer * p.v.inner) * sizeof(int64_t));
}

ag_tensor *ag_max(ag_tape *t, ag_tensor *a, int axis, bool keepdim)
{
    return extreme_run(t, &ag_op_max, "ag_max", a, axis, keepdim);
}

ag_tensor *ag_min(ag_tape *t, ag_tensor *a, int axis, bool keepdim)
{
    return extreme_run(t, &ag_op_min, "ag_min", a, axis, keepdim);
}

/* An index carries no gradient: argmax runs with recording off, so its
 * row (no backward, no vjp) never reaches a sweep, and its output never
 * requires grad. */
ag_tensor *ag_argmax(ag_tape *t, ag_tensor *a, int axis, bool keepdim)
{
    ag_reduce_plan p;
    if (!ag_reduce_plan_of(t, "ag_argmax", a, axis, keepdim, true, &p))
        return NULL;
    bool was = t->grad_enabled;
    t->grad_enabled = false;
    ag_tensor *out = ag_reduce_run(t, &ag_op_argmax, a, &p, 0);
    t->grad_enabled = was;
    return out;
}

/* ---- samples: the shared reduction cases, with distinct values ---- */

/* A random permutation of evenly spaced levels in [-2, 2], jittered by a
 * fifth of the spacing, so no two elements tie (the kinks of max/min). */
static void make_distinct(ag_tensor *x, ag_rng *rng)
{
    double *d = x->data; /* samples are f64 */
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

static bool distinct_sample(int which, ag_rng *rng, ag_op_sample *s, ag_gradcheck_fn fn)
{
    if (!ag_reduce_sample(which, rng, s, fn, -2, 2))
        return false;
    if (s->in[0])
        make_distinct(s->in[0], rng);
    return true;
}

#define EXTREME_SAMPLE(name)                                                  \
    static ag_tensor *name##_apply(ag_tape *t, ag_tensor **in, void *ctx)     \
    {                                                                         \
        const ag_op_sample *s = ctx;                                          \
        return ag_##name(t, in[0], (int)s->iarg[0], s->iarg[1]);              \
    }                                                                         \
    static bool name##_sample(int which, ag_rng *rng, ag_op_sample *s)        \
    {                                                                         \
        return distinct_sample(which, rng, s, name##_apply);                  \
    }
EXTREME_SAMPLE(max)
EXTREME_SAMPLE(min)
EXTREME_SAMPLE(argmax)

const ag_op_def ag_op_max = {.name = "max", .forward = max_forward,
                             .backward = extreme_backward, .vjp = extreme_vjp,
                             .sample = max_sample};
const ag_op_def ag_op_min = {.name = "min", .forward = min_forward,
                             .backward = extreme_backward, .vjp = extreme_vjp,
                             .sample = min_sample};
/* no backward, no vjp: see ag_argmax */
const ag_op_def ag_op_argmax = {.name = "argmax", .forward = argmax_forward,
                                .sample = argmax_sample};
