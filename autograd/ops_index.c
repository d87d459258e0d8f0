/* ops_index.c — gather, index_select, where, clamp.  Notation: x = input,
 * z = output, g = dL/dz.  Index arguments are validated once, when the op
 * is recorded, and kept in the arena as int64 offsets (gather) or rows
 * (index_select), so the kernels never see an index out of range.
 * index_select views a as (O, K, I): O = dims before the axis, K = the
 * axis, I = dims after it; its output is (O, n, I). */
#include "autograd_internal.h"

#include <math.h>

static inline double ld(const void *p, ag_dtype dt, int64_t i)
{
    return dt == AG_F64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

/* ---- gather ---- */

/* aux: (numel of out) int64 flat offsets into a */
static void gather_forward(ag_entry *e)
{
    const int64_t *off = e->aux;
    int64_t n = e->out->numel;
    if (e->out->dtype == AG_F64) {
        const double *x = e->in[0]->data;
        double *z = e->out->data;
        for (int64_t j = 0; j < n; j++)
            z[j] = x[off[j]];
    } else {
        const float *x = e->in[0]->data;
        float *z = e->out->data;
        for (int64_t j = 0; j < n; j++)
            z[j] = x[off[j]];
    }
}

/* dx[off[j]] += g[j]  (repeated offsets add up) */
static void gather_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (!dx)
        return;
    const int64_t *off = e->aux;
    int64_t n = e->out->numel;
    if (e->out->dtype == AG_F64) {
        const double *g = e->out->grad->data;
        for (int64_t j = 0; j < n; j++)
            ((double *)dx)[off[j]] += g[j];
    } else {
        const float *g = e->out->grad->data;
        for (int64_t j = 0; j < n; j++)
            ((float *)dx)[off[j]] += g[j];
    }
}

/* Offsets into a of every element of index (validated); NULL on error. */
static int64_t *gather_offsets(ag_tape *tape, const ag_tensor *a, int axis,
                               const ag_tensor *index)
{
    int64_t *off = ag_arena_alloc(tape, (size_t)(index->numel ? index->numel : 1) *
                                            sizeof *off);
    if (!off)
        return NULL;
    int64_t astride[AG_MAX_DIMS], idx[AG_MAX_DIMS] = {0}, base = 0, s = 1;
    for (int d = a->ndim - 1; d >= 0; d--) {
        astride[d] = s;
        s *= a->shape[d];
    }
    char s1[128], s2[128];
    for (int64_t j = 0; j < index->numel; j++) {
        double v = ag_get(index, j);
        if (!(v >= 0 && v < (double)a->shape[axis]) || v != floor(v)) {
            ag_fail(tape, AG_ERR_ARG, "ag_gather: index %g at element %lld of %s is out "
                    "of range [0, %lld) for axis %d of %s", v, (long long)j,
                    ag_shape_str(index, s1, sizeof s1), (long long)a->shape[axis], axis,
                    ag_shape_str(a, s2, sizeof s2));
            return NULL;
        }
        off[j] = base + (int64_t)v * astride[axis];
        for (int d = index->ndim - 1; d >= 0; d--) { /* odometer over index dims */
            int64_t step = d == axis ? 0 : astride[d];
            base += step;
            if (++idx[d] < index->shape[d])
                break;
            base -= step * index->shape[d];
            idx[d] = 0;
        }
    }
    return off;
}

ag_tensor *ag_gather(ag_tape *t, ag_tensor *a, int axis, const ag_tensor *index)
{
    ag_tensor *in[2] = {a, (ag_tensor *)index}; /* index is only read */
    if (!ag_check_inputs(t, "ag_gather", 2, in) ||
        !ag_check_axis(t, "ag_gather", a->ndim, &axis))
        return NULL;
    char s1[128], s2[128];
    if (index->ndim != a->ndim)
        return ag_fail(t, AG_ERR_SHAPE, "ag_gather: index %s has %d dims, input %s has %d",
                       ag_shape_str(index, s1, sizeof s1), index->ndim,
                       ag_shape_str(a, s2, sizeof s2), a->ndim);
    for (int d = 0; d < a->ndim; d++)
        if (d != axis && index->shape[d] > a->shape[d])
            return ag_fail(t, AG_ERR_SHAPE, "ag_gather: index %s is larger than input %s "
                           "in dim %d (%lld > %lld)", ag_shape_str(index, s1, sizeof s1),
                           ag_shape_str(a, s2, sizeof s2), d, (long long)index->shape[d],
                           (long long)a->shape[d]);
    int64_t *off = gather_offsets(t, a, axis, index);
    if (!off)
        return NULL;
    ag_op_call c = {.def = &ag_op_gather, .in = &a, .n_in = 1, .dtype = a->dtype,
                    .ndim = index->ndim, .shape = index->shape, .iattr = {axis}, .aux = off};
    return ag_op_run(t, &c);
}

/* ---- index_select ---- */

typedef struct {
    int64_t outer, k, inner;
} idx_view;

static idx_view view_of(const ag_tensor *a, int axis)
{
    idx_view v = {1, a->shape[axis], 1};
    for (int i = 0; i < axis; i++)
        v.outer *= a->shape[i];
    for (int i = axis + 1; i < a->ndim; i++)
        v.inner *= a->shape[i];
    return v;
}

/* iattr: [0] axis, [1] n; aux: n int64 rows */
static void index_select_forward(ag_entry *e)
{
    idx_view v = view_of(e->in[0], (int)e->iattr[0]);
    int64_t n = e->iattr[1];
    const int64_t *rows = e->aux;
    size_t esz = ag_dtype_size(e->out->dtype), row = (size_t)v.inner * esz;
    const char *x = e->in[0]->data;
    char *z = e->out->data;
    for (int64_t o = 0; o < v.outer; o++)
        for (int64_t j = 0; j < n; j++)
            memcpy(z + (size_t)(o * n + j) * row, x + (size_t)(o * v.k + rows[j]) * row, row);
}

/* dx[o, rows[j], i] += g[o, j, i]  (repeated rows add up) */
static void index_select_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (!dx)
        return;
    idx_view v = view_of(e->in[0], (int)e->iattr[0]);
    int64_t n = e->iattr[1], I = v.inner;
    const int64_t *rows = e->aux;
    for (int64_t o = 0; o < v.outer; o++)
        for (int64_t j = 0; j < n; j++) {
            int64_t src = (o * n + j) * I, dst = (o * v.k + rows[j]) * I;
            if (e->out->dtype == AG_F64) {
                const double *g = (const double *)e->out->grad->data + src;
                double *d = (double *)dx + dst;
                for (int64_t i = 0; i < I; i++)
                    d[i] += g[i];
            } else {
                const float *g = (const float *)e->out->grad->data + src;
                float *d = (float *)dx + dst;
                for (int64_t i = 0; i < I; i++)
                    d[i] += g[i];
            }
        }
}

ag_tensor *ag_index_select(ag_tape *t, ag_tensor *a, int axis, const int64_t *idx, int64_t n)
{
    if (!ag_check_inputs(t, "ag_index_select", 1, &a) ||
        !ag_check_axis(t, "ag_index_select", a->ndim, &axis))
        return NULL;
    if (n < 0 || (n > 0 && !idx))
        return ag_fail(t, AG_ERR_ARG, "ag_index_select: %s (n = %lld)",
                       n < 0 ? "negative index count" : "idx is NULL", (long long)n);
    char s1[128];
    for (int64_t j = 0; j < n; j++)
        if (idx[j] < 0 || idx[j] >= a->shape[axis])
            return ag_fail(t, AG_ERR_ARG, "ag_index_select: index %lld (position %lld) is "
                           "out of range [0, %lld) for axis %d of %s", (long long)idx[j],
                           (long long)j, (long long)a->shape[axis], axis,
                           ag_shape_str(a, s1, sizeof s1));
    int64_t *rows = ag_arena_alloc(t, (size_t)(n ? n : 1) * sizeof *rows);
    if (!rows)
        return NULL;
    if (n)
        memcpy(rows, idx, (size_t)n * sizeof *rows);
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, a->shape, (size_t)a->ndim * sizeof *shape);
    shape[axis] = n;
    ag_op_call c = {.def = &ag_op_index_select, .in = &a, .n_in = 1, .dtype = a->dtype,
                    .ndim = a->ndim, .shape = shape, .iattr = {axis, n}, .aux = rows};
    return ag_op_run(t, &c);
}

/* ---- where ---- */

typedef struct {
    const void *cond;
    ag_dtype cdt;
    const void *a, *b;
    void *z;          /* forward: out; backward: dst gradient */
    const void *g;
    int which;        /* backward: 1 for a, 2 for b */
} where_ctx;

/* z = cond != 0 ? x_a : x_b; operands 0 cond, 1 a, 2 b */
#define WHERE_FWD_ROW(T)                                                      \
    static void where_fwd_##T(void *vc, int64_t oo, const int64_t *off,       \
                              const int64_t *s, int64_t n)                    \
    {                                                                         \
        where_ctx *c = vc;                                                    \
        const T *a = (const T *)c->a + off[1], *b = (const T *)c->b + off[2]; \
        T *z = (T *)c->z + oo;                                                \
        for (int64_t i = 0; i < n; i++)                                       \
            z[i] = ld(c->cond, c->cdt, off[0] + i * s[0]) != 0 ? a[i * s[1]] : b[i * s[2]]; \
    }
WHERE_FWD_ROW(float)
WHERE_FWD_ROW(double)

/* operands 0 cond, 1 the input whose gradient d is:
 *   da += g where cond != 0;  db += g where cond == 0 */
#define WHERE_BWD_ROW(T)                                                      \
    static void where_bwd_##T(void *vc, int64_t oo, const int64_t *off,       \
                              const int64_t *s, int64_t n)                    \
    {                                                                         \
        where_ctx *c = vc;                                                    \
        const T *g = (const T *)c->g + oo;                                    \
        T *d = (T *)c->z + off[1];                                            \
        bool take = c->which == 1;                                            \
        for (int64_t i = 0; i < n; i++)                                       \
            if ((ld(c->cond, c->cdt, off[0] + i * s[0]) != 0) == take)        \
                d[i * s[1]] += g[i];                                          \
    }
WHERE_BWD_ROW(float)
WHERE_BWD_ROW(double)

static void where_forward(ag_entry *e)
{
    ag_tensor *z = e->out;
    int64_t st[3][AG_MAX_DIMS];
    for (int k = 0; k < 3; k++)
        ag_broadcast_strides(e->in[k], z->ndim, z->shape, st[k]);
    const int64_t *sp[3] = {st[0], st[1], st[2]};
    where_ctx c = {e->in[0]->data, e->in[0]->dtype, e->in[1]->data, e->in[2]->data,
                   z->data, NULL, 0};
    ag_bcast_walk(z->ndim, z->shape, 3, sp,
                  z->dtype == AG_F64 ? where_fwd_double : where_fwd_float, &c);
}

static void where_backward(ag_tape *tape, ag_entry *e)
{
    ag_tensor *z = e->out;
    int64_t sc[AG_MAX_DIMS], sx[AG_MAX_DIMS];
    ag_broadcast_strides(e->in[0], z->ndim, z->shape, sc);
    for (int k = 1; k <= 2; k++) { /* no gradient to cond */
        void *dst = ag_grad_data(tape, e->in[k]);
        if (!dst)
            continue;
        ag_broadcast_strides(e->in[k], z->ndim, z->shape, sx);
        const int64_t *sp[2] = {sc, sx};
        where_ctx c = {e->in[0]->data, e->in[0]->dtype, NULL, NULL, dst, z->grad->data, k};
        ag_bcast_walk(z->ndim, z->shape, 2, sp,
                      z->dtype == AG_F64 ? where_bwd_double : where_bwd_float, &c);
    }
}

ag_tensor *ag_where(ag_tape *t, ag_tensor *cond, ag_tensor *a, ag_tensor *b)
{
    ag_tensor *in[3] = {cond, a, b};
    if (!ag_check_inputs(t, "ag_where", 3, in) || !ag_check_same_dtype(t, "ag_where", a, b))
        return NULL;
    int nd = 0;
    for (int k = 0; k < 3; k++)
        nd = in[k]->ndim > nd ? in[k]->ndim : nd;
    int64_t shape[AG_MAX_DIMS];
    for (int i = 0; i < nd; i++) {
        shape[i] = 1;
        for (int k = 0; k < 3; k++) {
            int ix = i - (nd - in[k]->ndim);
            int64_t d = ix >= 0 ? in[k]->shape[ix] : 1;
            if (d != 1 && shape[i] != 1 && d != shape[i]) {
                char s0[128], s1[128], s2[128];
                return ag_fail(t, AG_ERR_SHAPE, "ag_where: shapes %s, %s and %s do not "
                               "broadcast (dim %d: %lld vs %lld)",
                               ag_shape_str(cond, s0, sizeof s0), ag_shape_str(a, s1, sizeof s1),
                               ag_shape_str(b, s2, sizeof s2), i, (long long)shape[i],
                               (long long)d);
            }
            if (d != 1)
                shape[i] = d;
        }
    }
    ag_op_call c = {.def = &ag_op_where, .in = in, .n_in = 3, .dtype = a->dtype,
                    .ndim = nd, .shape = shape};
    return ag_op_run(t, &c);
}

/* ---- clamp ---- */

/* fattr: [0] lo, [1] hi, rounded to the dtype as PyTorch does */
#define CLAMP_LOOPS(T)                                                        \
    static void clamp_fwd_##T(ag_entry *e)                                    \
    {                                                                         \
        const T *x = e->in[0]->data, lo = (T)e->fattr[0], hi = (T)e->fattr[1]; \
        T *z = e->out->data;                                                  \
        for (int64_t i = 0; i < e->out->numel; i++) {                         \
            T v = x[i] < lo ? lo : x[i]; /* a NaN stays NaN */                \
            z[i] = v > hi ? hi : v;                                           \
        }                                                                     \
    }                                                                         \
    /* dx += g where lo <= x <= hi (PyTorch's rule: bounds included) */      \
    static void clamp_bwd_##T(const ag_entry *e, T *d)                        \
    {                                                                         \
        const T *x = e->in[0]->data, *g = e->out->grad->data;                \
        T lo = (T)e->fattr[0], hi = (T)e->fattr[1];                           \
        for (int64_t i = 0; i < e->out->numel; i++)                           \
            if (x[i] >= lo && x[i] <= hi)                                     \
                d[i] += g[i];                                                 \
    }
CLAMP_LOOPS(float)
CLAMP_LOOPS(double)

static void clamp_forward(ag_entry *e)
{
    if (e->out->dtype == AG_F64)
        clamp_fwd_double(e);
    else
        clamp_fwd_float(e);
}

static void clamp_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (!dx)
        return;
    if (e->out->dtype == AG_F64)
        clamp_bwd_double(e, dx);
    else
        clamp_bwd_float(e, dx);
}

ag_tensor *ag_clamp(ag_tape *t, ag_tensor *a, double lo, double hi)
{
    if (!ag_check_inputs(t, "ag_clamp", 1, &a))
        return NULL;
    if (isnan(lo) || isnan(hi))
        return ag_fail(t, AG_ERR_ARG, "ag_clamp: bounds must not be NaN (lo %g, hi %g)", lo,
                       hi);
    ag_op_call c = {.def = &ag_op_clamp, .in = &a, .n_in = 1, .dtype = a->dtype,
                    .ndim = a->ndim, .shape = a->shape, .fattr = {lo, hi}};
    return ag_op_run(t, &c);
}

/* ---- samples ----
 * Index and condition inputs are f64 tensors that need no gradient. */

static ag_tensor *fixed_input(int ndim, const int64_t *shape, const double *v)
{
    ag_tensor *x = ag_tensor_from_f64(ndim, shape, v);
    ag_set_requires_grad(x, false);
    return x;
}

static ag_tensor *gather_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    return ag_gather(t, in[0], (int)s->iarg[0], in[1]);
}

static bool gather_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    static const struct {
        int ndim, axis;
        int64_t a[3], index[3];
    } cases[] = {
        {2, 0, {3, 4}, {2, 4}},       {2, 1, {3, 4}, {3, 2}},
        {2, -1, {3, 4}, {2, 3}},      /* index smaller on the other axis */
        {3, -1, {2, 3, 4}, {2, 2, 6}}, /* longer than the axis: repeats */
        {3, 1, {2, 1, 3}, {1, 3, 2}}, {1, 0, {5}, {7}},
    };
    if (which >= (int)(sizeof cases / sizeof cases[0]))
        return false;
    int nd = cases[which].ndim, axis = cases[which].axis < 0 ? cases[which].axis + nd
                                                             : cases[which].axis;
    s->in[0] = ag_sample_tensor(rng, nd, cases[which].a, AG_SAMPLE_RANGE, -2, 2);
    s->in[1] = ag_tensor_new(AG_F64, nd, cases[which].index);
    ag_set_requires_grad(s->in[1], false);
    for (int64_t j = 0; s->in[1] && j < ag_numel(s->in[1]); j++)
        ag_set(s->in[1], j, (double)ag_rng_below(rng, (uint64_t)cases[which].a[axis]));
    s->n_in = 2;
    s->fn = gather_apply;
    s->iarg[0] = cases[which].axis;
    return true;
}

static ag_tensor *index_select_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    int64_t idx[8], n = ag_numel(in[1]);
    for (int64_t j = 0; j < n && j < 8; j++)
        idx[j] = (int64_t)ag_get(in[1], j);
    return ag_index_select(t, in[0], (int)s->iarg[0], idx, n);
}

static bool index_select_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    static const struct {
        int ndim, axis;
        int64_t a[3];
        int64_t n;
        double idx[4];
    } cases[] = {
        {2, 0, {5, 3}, 4, {4, 0, 4, 2}}, /* embedding rows, one repeated */
        {3, 1, {2, 3, 4}, 2, {2, 2}},    {3, -1, {2, 3, 4}, 3, {3, 0, 1}},
        {1, 0, {4}, 1, {1}},             {3, 1, {2, 1, 3}, 3, {0, 0, 0}},
    };
    if (which >= (int)(sizeof cases / sizeof cases[0]))
        return false;
    s->in[0] = ag_sample_tensor(rng, cases[which].ndim, cases[which].a, AG_SAMPLE_RANGE,
                                -2, 2);
    s->in[1] = fixed_input(1, &cases[which].n, cases[which].idx);
    s->n_in = 2;
    s->fn = index_select_apply;
    s->iarg[0] = cases[which].axis;
    return true;
}

static ag_tensor *where_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    return ag_where(t, in[0], in[1], in[2]);
}

static bool where_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    static const int64_t shapes[][3][4] = {
        /* ndim, dims... for cond, a, b */
        {{2, 2, 3}, {2, 2, 3}, {2, 2, 3}},
        {{2, 3, 1}, {2, 1, 4}, {2, 3, 4}},
        {{1, 4}, {3, 2, 1, 4}, {0}},
        {{0}, {2, 2, 3}, {1, 3}},
        {{3, 2, 1, 3}, {1, 1}, {2, 2, 1}},
    };
    if (which >= (int)(sizeof shapes / sizeof shapes[0]))
        return false;
    for (int k = 0; k < 3; k++)
        s->in[k] = ag_sample_tensor(rng, (int)shapes[which][k][0], shapes[which][k] + 1,
                                    AG_SAMPLE_RANGE, -2, 2);
    ag_set_requires_grad(s->in[0], false);
    for (int64_t j = 0; s->in[0] && j < ag_numel(s->in[0]); j++) /* 0 or not, mixed */
        ag_set(s->in[0], j, j % 3 == 1 ? 0.0 : (double)(ag_rng_below(rng, 2)));
    s->n_in = 3;
    s->fn = where_apply;
    return true;
}

static ag_tensor *clamp_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    return ag_clamp(t, in[0], s->farg[0], s->farg[1]);
}

static bool clamp_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    static const struct {
        int ndim;
        int64_t shape[3];
        double lo, hi;
    } cases[] = {
        {2, {3, 4}, -0.8, 1.1},        {1, {6}, -INFINITY, 0.5},
        {3, {2, 1, 3}, -0.5, INFINITY}, {0, {0}, -1.0, 1.0},
    };
    if (which >= (int)(sizeof cases / sizeof cases[0]))
        return false;
    double lo = cases[which].lo, hi = cases[which].hi;
    ag_tensor *x = ag_sample_tensor(rng, cases[which].ndim, cases[which].shape,
                                    AG_SAMPLE_RANGE, -2, 2);
    for (int64_t j = 0; x && j < ag_numel(x); j++) { /* keep clear of the bounds */
        double v = ag_get(x, j);
        if (fabs(v - lo) < 0.01 || fabs(v - hi) < 0.01)
            ag_set(x, j, v + 0.05);
    }
    s->in[0] = x;
    s->n_in = 1;
    s->fn = clamp_apply;
    s->farg[0] = lo;
    s->farg[1] = hi;
    return true;
}

const ag_op_def ag_op_gather = {"gather", 1, gather_forward, gather_backward, gather_sample};
const ag_op_def ag_op_index_select = {"index_select", 1, index_select_forward,
                                      index_select_backward, index_select_sample};
const ag_op_def ag_op_where = {"where", 3, where_forward, where_backward, where_sample};
const ag_op_def ag_op_clamp = {"clamp", 1, clamp_forward, clamp_backward, clamp_sample};
