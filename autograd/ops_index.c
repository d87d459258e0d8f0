/* ops_index.c — indexing along one axis, in pairs whose derivatives are
 * each other:
 *   gather       <-> scatter_add  (a tensor of indices, torch.gather)
 *   index_select <-> index_add    (a list of rows, embedding lookup)
 * Notation: x = input, z = output, g = dL/dz.  "Wide" is the tensor indexed
 * into (gather's x, scatter_add's a and z), "narrow" the index-shaped one
 * (gather's z, scatter_add's src).  Index arguments are validated once,
 * when the op is recorded, and kept in the arena: flat offsets into the
 * wide tensor, one per narrow element (gather pair), or the rows (select
 * pair).  A pair's recorded derivatives pass the same array on, so the
 * kernels never see an index out of range and the derivatives copy no
 * indices.
 * The row ops view the wide tensor as (O, K, I) around the axis
 * (ag_axis_view_of): O = dims before it, K = the axis, I = dims after; the
 * narrow one is (O, n, I). */
#include "autograd_internal.h"

#include <math.h>

/* fn_float or fn_double by dtype (the data pointers are void *). */
#define BY_DTYPE(dt, fn, ...)                                                 \
    ((dt) == AG_F64 ? fn##_double(__VA_ARGS__) : fn##_float(__VA_ARGS__))

static size_t bytes_of(const ag_tensor *x)
{
    return (size_t)x->numel * ag_dtype_size(x->dtype);
}

#define INDEX_LOOPS(T)                                                        \
    /* d[i] += g[i] */                                                        \
    static void acc_##T(T *restrict d, const T *restrict g, int64_t n)        \
    {                                                                         \
        for (int64_t i = 0; i < n; i++)                                       \
            d[i] += g[i];                                                     \
    }                                                                         \
    /* z[j] = x[off[j]] */                                                    \
    static void take_##T(T *restrict z, const T *restrict x, const int64_t *off, \
                         int64_t n)                                           \
    {                                                                         \
        for (int64_t j = 0; j < n; j++)                                       \
            z[j] = x[off[j]];                                                 \
    }                                                                         \
    /* z[j] += x[off[j]] */                                                   \
    static void take_add_##T(T *restrict z, const T *restrict x,              \
                             const int64_t *off, int64_t n)                   \
    {                                                                         \
        for (int64_t j = 0; j < n; j++)                                       \
            z[j] += x[off[j]];                                                \
    }                                                                         \
    /* z[off[j]] += x[j]  (repeated offsets add up) */                        \
    static void put_add_##T(T *restrict z, const T *restrict x, const int64_t *off, \
                            int64_t n)                                        \
    {                                                                         \
        for (int64_t j = 0; j < n; j++)                                       \
            z[off[j]] += x[j];                                                \
    }                                                                         \
    /* z[o, j, :] += x[o, rows[j], :]; z narrow, x wide (view v) */           \
    static void rows_take_add_##T(T *restrict z, const T *restrict x, ag_axis_view v, \
                                  const int64_t *rows, int64_t n)             \
    {                                                                         \
        for (int64_t o = 0; o < v.outer; o++)                                 \
            for (int64_t j = 0; j < n; j++)                                   \
                acc_##T(z + (o * n + j) * v.inner, x + (o * v.k + rows[j]) * v.inner, \
                        v.inner);                                             \
    }                                                                         \
    /* z[o, rows[j], :] += x[o, j, :]; z wide (view v), x narrow; repeated    \
     * rows add up */                                                         \
    static void rows_put_add_##T(T *restrict z, const T *restrict x, ag_axis_view v, \
                                 const int64_t *rows, int64_t n)              \
    {                                                                         \
        for (int64_t o = 0; o < v.outer; o++)                                 \
            for (int64_t j = 0; j < n; j++)                                   \
                acc_##T(z + (o * v.k + rows[j]) * v.inner, x + (o * n + j) * v.inner, \
                        v.inner);                                             \
    }
INDEX_LOOPS(float)
INDEX_LOOPS(double)

/* ---- gather and scatter_add ----
 * gather:      z (narrow) = x[off];          in: x (wide)
 * scatter_add: z (wide)   = a; z[off] += src; in: a (wide), src (narrow)
 * aux: the offsets, one per narrow element. */

typedef struct {
    int axis; /* for readers of the entry: the kernels use the offsets */
} gather_attr;

static void gather_forward(ag_entry *e)
{
    BY_DTYPE(e->out->dtype, take, e->out->data, e->in[0]->data, e->aux, e->out->numel);
}

/* dx[off[j]] += g[j] */
static void gather_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (dx)
        BY_DTYPE(e->out->dtype, put_add, dx, e->out->grad->data, e->aux, e->out->numel);
}

static void scatter_add_forward(ag_entry *e)
{
    memcpy(e->out->data, e->in[0]->data, bytes_of(e->out));
    BY_DTYPE(e->out->dtype, put_add, e->out->data, e->in[1]->data, e->aux, e->in[1]->numel);
}

/* da += g;  dsrc[j] += g[off[j]] */
static void scatter_add_backward(ag_tape *tape, ag_entry *e)
{
    const void *g = e->out->grad->data;
    void *da = ag_grad_data(tape, e->in[0]);
    if (da)
        BY_DTYPE(e->out->dtype, acc, da, g, e->out->numel);
    void *ds = ag_grad_data(tape, e->in[1]);
    if (ds)
        BY_DTYPE(e->out->dtype, take_add, ds, g, e->aux, e->in[1]->numel);
}

/* Record the op on validated offsets (shared, not copied): for the public
 * functions after their checks, and for each other's derivatives. */
static ag_tensor *gather_run(ag_tape *t, ag_tensor *x, int axis, const int64_t *off,
                             int ndim, const int64_t *shape)
{
    gather_attr a = {axis};
    ag_op_call c = {.def = &ag_op_gather, .in = &x, .n_in = 1, .dtype = x->dtype,
                    .ndim = ndim, .shape = shape, .attr = &a, .attr_size = sizeof a,
                    .aux = (void *)off};
    return ag_op_run(t, &c);
}

static ag_tensor *scatter_add_run(ag_tape *t, ag_tensor *a, int axis, const int64_t *off,
                                  ag_tensor *src)
{
    gather_attr at = {axis};
    ag_tensor *in[2] = {a, src};
    ag_op_call c = {.def = &ag_op_scatter_add, .in = in, .n_in = 2, .dtype = a->dtype,
                    .ndim = a->ndim, .shape = a->shape, .attr = &at, .attr_size = sizeof at,
                    .aux = (void *)off};
    return ag_op_run(t, &c);
}

/* dx = scatter_add(0, off, g) */
static void gather_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    if (!ag_needs_grad(tape, e->in[0]))
        return;
    ag_tensor *zero = ag_const_like(tape, e->in[0], 0.0);
    if (zero)
        gin[0] = scatter_add_run(tape, zero, AG_ATTR(e, gather_attr)->axis, e->aux, gout);
}

/* da = g;  dsrc = gather(g, off) */
static void scatter_add_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout,
                            ag_tensor **gin)
{
    if (ag_needs_grad(tape, e->in[0]))
        gin[0] = gout;
    const ag_tensor *src = e->in[1];
    if (ag_needs_grad(tape, src))
        gin[1] = gather_run(tape, gout, AG_ATTR(e, gather_attr)->axis, e->aux, src->ndim,
                            src->shape);
}

typedef struct {
    const ag_tensor *index;
    int64_t *off;
    int64_t k, kstride; /* the axis's size and stride in the wide tensor */
    int64_t bad;        /* first element out of range, or -1 */
} offsets_ctx;

/* off[j] = offset in the wide tensor of narrow element j's position, its
 * axis coordinate replaced by index[j] (base: that position with axis
 * coordinate 0, its stride there 0) */
static void offsets_row(void *vc, int64_t o, const int64_t *base, const int64_t *s,
                        int64_t n)
{
    offsets_ctx *c = vc;
    for (int64_t i = 0; i < n; i++) {
        double v = ag_get(c->index, o + i);
        if (!(v >= 0 && v < (double)c->k) || v != floor(v)) { /* NaN too */
            if (c->bad < 0)
                c->bad = o + i;
            continue;
        }
        c->off[o + i] = base[0] + i * s[0] + (int64_t)v * c->kstride;
    }
}

/* Checks index against the wide tensor w (same ndim, dims <= w's off the
 * axis, integral values in range) and returns its offsets into w; NULL
 * with the error kept (naming fn) otherwise. */
static int64_t *gather_offsets(ag_tape *t, const char *fn, const ag_tensor *w, int axis,
                               const ag_tensor *index)
{
    char s1[128], s2[128];
    if (index->ndim != w->ndim)
        return ag_fail(t, AG_ERR_SHAPE, "%s: index %s has %d dims, input %s has %d", fn,
                       ag_shape_str(index, s1, sizeof s1), index->ndim,
                       ag_shape_str(w, s2, sizeof s2), w->ndim);
    for (int d = 0; d < w->ndim; d++)
        if (d != axis && index->shape[d] > w->shape[d])
            return ag_fail(t, AG_ERR_SHAPE, "%s: index %s is larger than input %s in dim %d "
                           "(%lld > %lld)", fn, ag_shape_str(index, s1, sizeof s1),
                           ag_shape_str(w, s2, sizeof s2), d, (long long)index->shape[d],
                           (long long)w->shape[d]);
    offsets_ctx c = {index, NULL, w->shape[axis], 0, -1};
    c.off = ag_arena_alloc(t, (size_t)(index->numel ? index->numel : 1) * sizeof *c.off);
    if (!c.off)
        return NULL;
    int64_t stride[AG_MAX_DIMS], s = 1;
    for (int d = w->ndim - 1; d >= 0; d--) {
        stride[d] = d == axis ? 0 : s;
        if (d == axis)
            c.kstride = s;
        s *= w->shape[d];
    }
    const int64_t *st[1] = {stride};
    ag_bcast_walk(index->ndim, index->shape, 1, st, offsets_row, &c);
    if (c.bad >= 0)
        return ag_fail(t, AG_ERR_ARG, "%s: index %g at element %lld of %s is out of range "
                       "[0, %lld) for axis %d of %s", fn, ag_get(index, c.bad),
                       (long long)c.bad, ag_shape_str(index, s1, sizeof s1),
                       (long long)c.k, axis, ag_shape_str(w, s2, sizeof s2));
    return c.off;
}

ag_tensor *ag_gather(ag_tape *t, ag_tensor *a, int axis, const ag_tensor *index)
{
    ag_tensor *in[2] = {a, (ag_tensor *)index}; /* index is only read */
    if (!ag_check_inputs(t, "ag_gather", 2, in) ||
        !ag_check_axis(t, "ag_gather", a->ndim, &axis))
        return NULL;
    int64_t *off = gather_offsets(t, "ag_gather", a, axis, index);
    return off ? gather_run(t, a, axis, off, index->ndim, index->shape) : NULL;
}

ag_tensor *ag_scatter_add(ag_tape *t, ag_tensor *a, int axis, const ag_tensor *index,
                          ag_tensor *src)
{
    ag_tensor *in[3] = {a, (ag_tensor *)index, src}; /* index is only read */
    if (!ag_check_inputs(t, "ag_scatter_add", 3, in) ||
        !ag_check_same_dtype(t, "ag_scatter_add", a, src) ||
        !ag_check_axis(t, "ag_scatter_add", a->ndim, &axis))
        return NULL;
    if (!ag_same_shape(src, index)) {
        char s1[128], s2[128];
        return ag_fail(t, AG_ERR_SHAPE, "ag_scatter_add: src %s and index %s differ in shape",
                       ag_shape_str(src, s1, sizeof s1), ag_shape_str(index, s2, sizeof s2));
    }
    int64_t *off = gather_offsets(t, "ag_scatter_add", a, axis, index);
    return off ? scatter_add_run(t, a, axis, off, src) : NULL;
}

/* ---- index_select and index_add ----
 * index_select: z (narrow) = x[:, rows, :];        in: x (wide)
 * index_add:    z (wide) = a; z[:, rows, :] += src; in: a (wide), src (narrow)
 * aux: the n rows. */

typedef struct {
    int axis;
    int64_t n; /* rows */
} select_attr;

static void index_select_forward(ag_entry *e)
{
    const select_attr *a = AG_ATTR(e, select_attr);
    ag_axis_view v = ag_axis_view_of(e->in[0], a->axis);
    const int64_t *rows = e->aux;
    size_t row = (size_t)v.inner * ag_dtype_size(e->out->dtype);
    const char *x = e->in[0]->data;
    char *z = e->out->data;
    for (int64_t o = 0; o < v.outer; o++)
        for (int64_t j = 0; j < a->n; j++)
            memcpy(z + (size_t)(o * a->n + j) * row, x + (size_t)(o * v.k + rows[j]) * row,
                   row);
}

/* dx[o, rows[j], i] += g[o, j, i] */
static void index_select_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (!dx)
        return;
    const select_attr *a = AG_ATTR(e, select_attr);
    BY_DTYPE(e->out->dtype, rows_put_add, dx, e->out->grad->data,
             ag_axis_view_of(e->in[0], a->axis), e->aux, a->n);
}

static void index_add_forward(ag_entry *e)
{
    const select_attr *a = AG_ATTR(e, select_attr);
    memcpy(e->out->data, e->in[0]->data, bytes_of(e->out));
    BY_DTYPE(e->out->dtype, rows_put_add, e->out->data, e->in[1]->data,
             ag_axis_view_of(e->out, a->axis), e->aux, a->n);
}

/* da += g;  dsrc[o, j, i] += g[o, rows[j], i] */
static void index_add_backward(ag_tape *tape, ag_entry *e)
{
    const select_attr *a = AG_ATTR(e, select_attr);
    const void *g = e->out->grad->data;
    void *da = ag_grad_data(tape, e->in[0]);
    if (da)
        BY_DTYPE(e->out->dtype, acc, da, g, e->out->numel);
    void *ds = ag_grad_data(tape, e->in[1]);
    if (ds)
        BY_DTYPE(e->out->dtype, rows_take_add, ds, g, ag_axis_view_of(e->out, a->axis),
                 e->aux, a->n);
}

/* Record the op on validated rows (shared, not copied), as above. */
static ag_tensor *index_select_run(ag_tape *t, ag_tensor *x, int axis, const int64_t *rows,
                                   int64_t n)
{
    select_attr a = {axis, n};
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, x->shape, (size_t)x->ndim * sizeof *shape);
    shape[axis] = n;
    ag_op_call c = {.def = &ag_op_index_select, .in = &x, .n_in = 1, .dtype = x->dtype,
                    .ndim = x->ndim, .shape = shape, .attr = &a, .attr_size = sizeof a,
                    .aux = (void *)rows};
    return ag_op_run(t, &c);
}

static ag_tensor *index_add_run(ag_tape *t, ag_tensor *a, int axis, const int64_t *rows,
                                int64_t n, ag_tensor *src)
{
    select_attr at = {axis, n};
    ag_tensor *in[2] = {a, src};
    ag_op_call c = {.def = &ag_op_index_add, .in = in, .n_in = 2, .dtype = a->dtype,
                    .ndim = a->ndim, .shape = a->shape, .attr = &at, .attr_size = sizeof at,
                    .aux = (void *)rows};
    return ag_op_run(t, &c);
}

/* dx = index_add(0, rows, g) */
static void index_select_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout,
                             ag_tensor **gin)
{
    if (!ag_needs_grad(tape, e->in[0]))
        return;
    const select_attr *a = AG_ATTR(e, select_attr);
    ag_tensor *zero = ag_const_like(tape, e->in[0], 0.0);
    if (zero)
        gin[0] = index_add_run(tape, zero, a->axis, e->aux, a->n, gout);
}

/* da = g;  dsrc = index_select(g, rows) */
static void index_add_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const select_attr *a = AG_ATTR(e, select_attr);
    if (ag_needs_grad(tape, e->in[0]))
        gin[0] = gout;
    if (ag_needs_grad(tape, e->in[1]))
        gin[1] = index_select_run(tape, gout, a->axis, e->aux, a->n);
}

/* idx[0..n) checked against axis of a and copied to the arena; NULL with
 * the error kept (naming fn) otherwise. */
static int64_t *rows_copy(ag_tape *t, const char *fn, const ag_tensor *a, int axis,
                          const int64_t *idx, int64_t n)
{
    if (n < 0 || (n > 0 && !idx))
        return ag_fail(t, AG_ERR_ARG, "%s: %s (n = %lld)", fn,
                       n < 0 ? "negative index count" : "idx is NULL", (long long)n);
    char s1[128];
    for (int64_t j = 0; j < n; j++)
        if (idx[j] < 0 || idx[j] >= a->shape[axis])
            return ag_fail(t, AG_ERR_ARG, "%s: index %lld (position %lld) is out of range "
                           "[0, %lld) for axis %d of %s", fn, (long long)idx[j],
                           (long long)j, (long long)a->shape[axis], axis,
                           ag_shape_str(a, s1, sizeof s1));
    int64_t *rows = ag_arena_alloc(t, (size_t)(n ? n : 1) * sizeof *rows);
    if (rows && n)
        memcpy(rows, idx, (size_t)n * sizeof *rows);
    return rows;
}

ag_tensor *ag_index_select(ag_tape *t, ag_tensor *a, int axis, const int64_t *idx, int64_t n)
{
    if (!ag_check_inputs(t, "ag_index_select", 1, &a) ||
        !ag_check_axis(t, "ag_index_select", a->ndim, &axis))
        return NULL;
    int64_t *rows = rows_copy(t, "ag_index_select", a, axis, idx, n);
    return rows ? index_select_run(t, a, axis, rows, n) : NULL;
}

ag_tensor *ag_index_add(ag_tape *t, ag_tensor *a, int axis, const int64_t *idx, int64_t n,
                        ag_tensor *src)
{
    ag_tensor *in[2] = {a, src};
    if (!ag_check_inputs(t, "ag_index_add", 2, in) ||
        !ag_check_same_dtype(t, "ag_index_add", a, src) ||
        !ag_check_axis(t, "ag_index_add", a->ndim, &axis))
        return NULL;
    bool ok = src->ndim == a->ndim;
    for (int d = 0; ok && d < a->ndim; d++)
        ok = src->shape[d] == (d == axis ? n : a->shape[d]);
    if (!ok) {
        char s1[128], s2[128];
        return ag_fail(t, AG_ERR_SHAPE, "ag_index_add: src %s does not match a %s with "
                       "%lld rows on axis %d", ag_shape_str(src, s1, sizeof s1),
                       ag_shape_str(a, s2, sizeof s2), (long long)n, axis);
    }
    int64_t *rows = rows_copy(t, "ag_index_add", a, axis, idx, n);
    return rows ? index_add_run(t, a, axis, rows, n, src) : NULL;
}

/* ---- samples ----
 * Index inputs are f64 tensors that need no gradient; indices repeat. */

static const struct {
    int ndim, axis;
    int64_t a[3], index[3];
} gather_cases[] = {
    {2, 0, {3, 4}, {2, 4}},        {2, 1, {3, 4}, {3, 2}},
    {2, -1, {3, 4}, {2, 3}},       /* index smaller on the other axis */
    {3, -1, {2, 3, 4}, {2, 2, 6}}, /* longer than the axis: repeats */
    {3, 1, {2, 1, 3}, {1, 3, 2}},  {1, 0, {5}, {7}},
};

/* in[0] the wide input, in[1] a random index into it */
static bool gather_case(int which, ag_rng *rng, ag_op_sample *s)
{
    if (which >= (int)(sizeof gather_cases / sizeof gather_cases[0]))
        return false;
    int nd = gather_cases[which].ndim, axis = gather_cases[which].axis;
    const int64_t *index = gather_cases[which].index;
    s->in[0] = ag_sample_tensor(rng, nd, gather_cases[which].a, AG_SAMPLE_RANGE, -2, 2);
    s->in[1] = ag_tensor_new(AG_F64, nd, index);
    ag_set_requires_grad(s->in[1], false);
    uint64_t k = (uint64_t)gather_cases[which].a[axis < 0 ? axis + nd : axis];
    for (int64_t j = 0; s->in[1] && j < ag_numel(s->in[1]); j++)
        ag_set(s->in[1], j, (double)ag_rng_below(rng, k));
    s->n_in = 2;
    s->iarg[0] = axis;
    return true;
}

static ag_tensor *gather_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    return ag_gather(t, in[0], (int)s->iarg[0], in[1]);
}

static bool gather_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    s->fn = gather_apply;
    return gather_case(which, rng, s);
}

static ag_tensor *scatter_add_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    return ag_scatter_add(t, in[0], (int)s->iarg[0], in[1], in[2]);
}

static bool scatter_add_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    if (!gather_case(which, rng, s))
        return false;
    s->in[2] = ag_sample_tensor(rng, gather_cases[which].ndim, gather_cases[which].index,
                                AG_SAMPLE_RANGE, -2, 2);
    s->n_in = 3;
    s->fn = scatter_add_apply;
    return true;
}

static const struct {
    int ndim, axis;
    int64_t a[3];
    int64_t n;
    double idx[4];
} select_cases[] = {
    {2, 0, {5, 3}, 4, {4, 0, 4, 2}}, /* embedding rows, one repeated */
    {3, 1, {2, 3, 4}, 2, {2, 2}},    {3, -1, {2, 3, 4}, 3, {3, 0, 1}},
    {1, 0, {4}, 1, {1}},             {3, 1, {2, 1, 3}, 3, {0, 0, 0}},
};

/* in[0] the wide input, in[1] the rows as an f64 tensor */
static bool select_case(int which, ag_rng *rng, ag_op_sample *s)
{
    if (which >= (int)(sizeof select_cases / sizeof select_cases[0]))
        return false;
    s->in[0] = ag_sample_tensor(rng, select_cases[which].ndim, select_cases[which].a,
                                AG_SAMPLE_RANGE, -2, 2);
    s->in[1] = ag_tensor_from_f64(1, &select_cases[which].n, select_cases[which].idx);
    ag_set_requires_grad(s->in[1], false);
    s->n_in = 2;
    s->iarg[0] = select_cases[which].axis;
    return true;
}

/* The rows of sample input in[1] (at most 8). */
static int64_t sample_rows(const ag_tensor *r, int64_t *idx)
{
    int64_t n = ag_numel(r);
    for (int64_t j = 0; j < n && j < 8; j++)
        idx[j] = (int64_t)ag_get(r, j);
    return n;
}

static ag_tensor *index_select_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    int64_t idx[8], n = sample_rows(in[1], idx);
    return ag_index_select(t, in[0], (int)s->iarg[0], idx, n);
}

static bool index_select_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    s->fn = index_select_apply;
    return select_case(which, rng, s);
}

static ag_tensor *index_add_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    int64_t idx[8], n = sample_rows(in[1], idx);
    return ag_index_add(t, in[0], (int)s->iarg[0], idx, n, in[2]);
}

static bool index_add_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    if (!select_case(which, rng, s))
        return false;
    int nd = select_cases[which].ndim, axis = select_cases[which].axis;
    int64_t shape[3];
    memcpy(shape, select_cases[which].a, sizeof shape);
    shape[axis < 0 ? axis + nd : axis] = select_cases[which].n;
    s->in[2] = ag_sample_tensor(rng, nd, shape, AG_SAMPLE_RANGE, -2, 2);
    s->n_in = 3;
    s->fn = index_add_apply;
    return true;
}

const ag_op_def ag_op_gather = {.name = "gather", .forward = gather_forward,
                                .backward = gather_backward, .vjp = gather_vjp,
                                .sample = gather_sample};
const ag_op_def ag_op_scatter_add = {.name = "scatter_add", .forward = scatter_add_forward,
                                     .backward = scatter_add_backward,
                                     .vjp = scatter_add_vjp, .sample = scatter_add_sample};
const ag_op_def ag_op_index_select = {.name = "index_select",
                                      .forward = index_select_forward,
                                      .backward = index_select_backward,
                                      .vjp = index_select_vjp,
                                      .sample = index_select_sample};
const ag_op_def ag_op_index_add = {.name = "index_add", .forward = index_add_forward,
                                   .backward = index_add_backward, .vjp = index_add_vjp,
                                   .sample = index_add_sample};
