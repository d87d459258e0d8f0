/* ops_reduce_extreme.c — the reductions that pick elements: max, min
 * (the value), argmax (the index, int64), over one axis or all elements,
 * and topk (the k first in order along one axis: values and indices).
 * The input is viewed as (O, K, I) around the axis (ops_reduce_internal.h);
 * the output is (O, I), for topk (O, k, I).  Notation: x = input, z =
 * output, g = dL/dz.  The chosen element is the first extreme one along
 * K; a NaN counts as the extreme, the first NaN wins (as in PyTorch).
 * max, min and topk save the chosen indices, int64 of the output's shape,
 * in aux, for both derivatives. */
#include "ops_reduce_internal.h"

#include <math.h>

#define EXTREME_LOOPS(T)                                                      \
    /* arg[o,i] = first k of the extreme x[o,k,i]; z = x there (argmax:      \
     * z NULL, the index alone) */                                           \
    AG_INLINE void extreme_fwd_##T(const T *x, T *z, int64_t *arg, ag_axis_view v, \
                                   bool largest)                              \
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
                arg[j] = best;                                                \
                if (z)                                                        \
                    z[j] = bv;                                                \
            }                                                                 \
    }                                                                         \
    /* dx[o, arg[o,j,i], i] += g[o,j,i] for the n chosen j of each lane      \
     * (max, min: n = 1) */                                                   \
    static void extreme_bwd_##T(const T *g, T *dx, const int64_t *arg, ag_axis_view v, \
                                int64_t n)                                    \
    {                                                                         \
        for (int64_t o = 0; o < v.outer; o++)                                 \
            for (int64_t j = 0; j < n; j++)                                   \
                for (int64_t i = 0; i < v.inner; i++) {                       \
                    int64_t at = (o * n + j) * v.inner + i;                   \
                    dx[(o * v.k + arg[at]) * v.inner + i] += g[at];           \
                }                                                             \
    }
EXTREME_LOOPS(float)
EXTREME_LOOPS(double)

/* One forward per row, the kind a constant folded into the kernel. */
#define EXTREME_FORWARD(name, largest)                                        \
    static void name##_forward(ag_entry *e)                                   \
    {                                                                         \
        AG_REDUCE_TYPED(e->out->dtype, extreme_fwd, e->in[0]->data, e->out->data, \
                        e->aux, ag_reduce_view(e), largest);                  \
    }
EXTREME_FORWARD(max, true)
EXTREME_FORWARD(min, false)

/* the index alone, into the int64 output */
static void argmax_forward(ag_entry *e)
{
    AG_REDUCE_TYPED(e->in[0]->dtype, extreme_fwd, e->in[0]->data, NULL, e->out->data,
                    ag_reduce_view(e), true);
}

/* dx = expand(g) * onehot(arg): only the chosen element */
static void extreme_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (dx)
        AG_REDUCE_TYPED(e->out->dtype, extreme_bwd, e->out->grad->data, dx, e->aux,
                        ag_reduce_view(e), 1);
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
    ag_op_call c = {.def = &ag_op_argmax, .in = &a, .n_in = 1, .dtype = AG_I64,
                    .ndim = p.ndim, .shape = p.shape, .attr = &p.attr,
                    .attr_size = sizeof p.attr};
    ag_tensor *out = ag_op_run(t, &c);
    t->grad_enabled = was;
    return out;
}

/* ---- topk ----
 * aux: the chosen indices (O, k, I), then one lane's sort buffers (2K). */

typedef struct {
    int axis; /* normalised */
    int64_t k;
    bool largest;
} topk_attr;

static ag_axis_view topk_view(const ag_entry *e)
{
    return ag_axis_view_of(e->in[0], AG_ATTR(e, topk_attr)->axis);
}

#define TOPK_LOOPS(T)                                                         \
    /* whether a goes before b: larger first (smaller first when !largest), \
     * a NaN counting as the largest */                                       \
    AG_INLINE bool topk_before_##T(T a, T b, bool largest)                    \
    {                                                                         \
        return largest ? (a != a && b == b) || a > b : (a == a && b != b) || a < b; \
    }                                                                         \
    /* ix[0..n) sorted by r[ix[j] * s], stably (ties keep the lower index    \
     * first): bottom-up merge sort through tmp */                            \
    static void topk_sort_##T(const T *r, int64_t s, int64_t *ix, int64_t *tmp, int64_t n, \
                              bool largest)                                   \
    {                                                                         \
        int64_t *src = ix, *dst = tmp;                                        \
        for (int64_t w = 1; w < n; w *= 2) {                                  \
            for (int64_t lo = 0; lo < n; lo += 2 * w) {                       \
                int64_t mid = lo + w < n ? lo + w : n;                        \
                int64_t hi = lo + 2 * w < n ? lo + 2 * w : n;                 \
                int64_t a = lo, b = mid, o = lo;                              \
                while (a < mid && b < hi)                                     \
                    dst[o++] = topk_before_##T(r[src[b] * s], r[src[a] * s], largest) \
                                   ? src[b++] : src[a++];                     \
                while (a < mid)                                               \
                    dst[o++] = src[a++];                                      \
                while (b < hi)                                                \
                    dst[o++] = src[b++];                                      \
            }                                                                 \
            int64_t *swap = src;                                              \
            src = dst;                                                        \
            dst = swap;                                                       \
        }                                                                     \
        if (src != ix)                                                        \
            memcpy(ix, src, (size_t)n * sizeof *ix);                          \
    }                                                                         \
    /* idx[o,j,i] = j-th of lane (o, i) in order; z[o,j,i] = x there */       \
    static void topk_fwd_##T(const T *x, T *z, int64_t *idx, ag_axis_view v, int64_t k, \
                             bool largest)                                    \
    {                                                                         \
        int64_t *ix = idx + v.outer * k * v.inner, *tmp = ix + v.k;           \
        for (int64_t o = 0; o < v.outer; o++)                                 \
            for (int64_t i = 0; i < v.inner; i++) {                           \
                const T *r = x + o * v.k * v.inner + i;                       \
                for (int64_t j = 0; j < v.k; j++)                             \
                    ix[j] = j;                                                \
                topk_sort_##T(r, v.inner, ix, tmp, v.k, largest);             \
                for (int64_t j = 0; j < k; j++) {                             \
                    int64_t at = (o * k + j) * v.inner + i;                   \
                    idx[at] = ix[j];                                          \
                    z[at] = r[ix[j] * v.inner];                               \
                }                                                             \
            }                                                                 \
    }
TOPK_LOOPS(float)
TOPK_LOOPS(double)

static void topk_forward(ag_entry *e)
{
    const topk_attr *a = AG_ATTR(e, topk_attr);
    AG_REDUCE_TYPED(e->out->dtype, topk_fwd, e->in[0]->data, e->out->data, e->aux,
                    topk_view(e), a->k, a->largest);
}

/* dx[o, idx[o,j,i], i] += g[o,j,i] */
static void topk_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (dx)
        AG_REDUCE_TYPED(e->out->dtype, extreme_bwd, e->out->grad->data, dx, e->aux,
                        topk_view(e), AG_ATTR(e, topk_attr)->k);
}

static double index_at(const void *idx, int64_t i) { return (double)((const int64_t *)idx)[i]; }

/* dx = scatter_add(0, axis, idx, g), idx a constant (the order does not
 * move under a small change of x); its derivative is gather */
static void topk_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    ag_tensor *x = e->in[0];
    ag_tensor *idx = ag_const_fill(tape, AG_F64, gout->ndim, gout->shape, index_at, e->aux);
    ag_tensor *zero = ag_const_like(tape, x, 0.0);
    if (idx && zero)
        gin[0] = ag_scatter_add(tape, zero, AG_ATTR(e, topk_attr)->axis, idx, gout);
}

ag_tensor *ag_topk(ag_tape *t, ag_tensor *a, int64_t k, int axis, bool largest,
                   ag_tensor **indices)
{
    if (indices)
        *indices = NULL;
    int ax = axis;
    if (!ag_check_inputs(t, "ag_topk", 1, &a))
        return NULL;
    if (a->ndim == 0)
        return ag_fail(t, AG_ERR_SHAPE, "ag_topk: a is 0-d (topk picks along an axis)");
    if (!ag_check_axis(t, "ag_topk", a->ndim, &ax))
        return NULL;
    char sb[128];
    if (k < 0 || k > a->shape[ax])
        return ag_fail(t, AG_ERR_ARG, "ag_topk: k = %lld is outside [0, %lld] (axis %d of %s)",
                       (long long)k, (long long)a->shape[ax], axis,
                       ag_shape_str(a, sb, sizeof sb));
    ag_axis_view v = ag_axis_view_of(a, ax);
    int64_t shape[AG_MAX_DIMS], n = v.outer * k * v.inner;
    memcpy(shape, a->shape, sizeof shape);
    shape[ax] = k;
    int64_t *aux = ag_arena_alloc(t, (size_t)(n + 2 * v.k) * sizeof *aux);
    if (!aux)
        return NULL;
    topk_attr at = {ax, k, largest};
    ag_op_call c = {.def = &ag_op_topk, .in = &a, .n_in = 1, .dtype = a->dtype,
                    .ndim = a->ndim, .shape = shape, .attr = &at, .attr_size = sizeof at,
                    .aux = aux};
    ag_tensor *z = ag_op_run(t, &c);
    if (!z || !indices)
        return z;
    ag_tensor *ix = ag_tensor_tape(t, AG_I64, a->ndim, shape);
    if (!ix)
        return NULL;
    memcpy(ix->data, aux, (size_t)n * sizeof *aux);
    *indices = ix;
    return z;
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

static ag_tensor *topk_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    const ag_op_sample *s = ctx;
    return ag_topk(t, in[0], s->iarg[1], (int)s->iarg[0], s->iarg[2], NULL);
}

static bool topk_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    static const struct {
        int ndim;
        int64_t shape[3];
        int axis;
        int64_t k;
        bool largest;
    } cases[] = {
        {2, {3, 5}, 1, 2, true},  {3, {2, 4, 3}, 1, 3, false}, {1, {6}, 0, 6, true},
        {3, {2, 3, 4}, -1, 1, true}, {2, {5, 2}, 0, 4, false},
    };
    if (which >= (int)(sizeof cases / sizeof cases[0]))
        return false;
    s->in[0] = ag_sample_tensor(rng, cases[which].ndim, cases[which].shape, AG_SAMPLE_RANGE,
                                -2, 2);
    if (s->in[0])
        make_distinct(s->in[0], rng);
    s->n_in = 1;
    s->fn = topk_apply;
    s->iarg[0] = cases[which].axis;
    s->iarg[1] = cases[which].k;
    s->iarg[2] = cases[which].largest;
    return true;
}

const ag_op_def ag_op_max = {.name = "max", .forward = max_forward,
                             .backward = extreme_backward, .vjp = extreme_vjp,
                             .sample = max_sample};
const ag_op_def ag_op_min = {.name = "min", .forward = min_forward,
                             .backward = extreme_backward, .vjp = extreme_vjp,
                             .sample = min_sample};
/* no backward, no vjp: see ag_argmax */
const ag_op_def ag_op_argmax = {.name = "argmax", .forward = argmax_forward,
                                .sample = argmax_sample};
const ag_op_def ag_op_topk = {.name = "topk", .forward = topk_forward,
                              .backward = topk_backward, .vjp = topk_vjp,
                              .sample = topk_sample};
