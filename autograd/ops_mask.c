/* ops_mask.c — where and clamp: ops whose derivative passes g through a
 * mask (where's condition, clamp's inside-the-bounds), so their second
 * derivative is zero almost everywhere.  Notation: x = input, z = output,
 * g = dL/dz.  where broadcasts its three operands with the shared helpers
 * of broadcast.c; its condition may be of either dtype. */
#include "autograd_internal.h"

#include <math.h>

/* ---- where ---- */

typedef struct {
    const void *cond, *a, *b;
    void *z;       /* forward: out; backward: the input's gradient */
    const void *g; /* backward: dL/dz */
    bool take;     /* backward: a (cond != 0) or b (cond == 0) */
} where_ctx;

/* Rows of ag_bcast_walk for values of type T and a condition of type C. */
#define WHERE_ROWS(T, C)                                                      \
    /* z = cond != 0 ? a : b; operands 0 cond, 1 a, 2 b */                    \
    static void where_fwd_##T##_##C(void *vc, int64_t oo, const int64_t *off, \
                                    const int64_t *s, int64_t n)              \
    {                                                                         \
        where_ctx *c = vc;                                                    \
        const C *k = (const C *)c->cond + off[0];                             \
        const T *a = (const T *)c->a + off[1], *b = (const T *)c->b + off[2]; \
        T *z = (T *)c->z + oo;                                                \
        for (int64_t i = 0; i < n; i++)                                       \
            z[i] = k[i * s[0]] != 0 ? a[i * s[1]] : b[i * s[2]];              \
    }                                                                         \
    /* da += g where cond != 0;  db += g where cond == 0 (summed over the     \
     * dims the input broadcast); operands 0 cond, 1 the input */            \
    static void where_bwd_##T##_##C(void *vc, int64_t oo, const int64_t *off, \
                                    const int64_t *s, int64_t n)              \
    {                                                                         \
        where_ctx *c = vc;                                                    \
        const C *k = (const C *)c->cond + off[0];                             \
        const T *g = (const T *)c->g + oo;                                    \
        T *d = (T *)c->z + off[1];                                            \
        for (int64_t i = 0; i < n; i++)                                       \
            if ((k[i * s[0]] != 0) == c->take)                                \
                d[i * s[1]] += g[i];                                          \
    }
WHERE_ROWS(float, float)
WHERE_ROWS(float, double)
WHERE_ROWS(double, float)
WHERE_ROWS(double, double)

/* by [value dtype][condition dtype] (AG_F32 = 0, AG_F64 = 1) */
static const ag_bcast_row where_fwd_rows[2][2] = {
    {where_fwd_float_float, where_fwd_float_double},
    {where_fwd_double_float, where_fwd_double_double},
};
static const ag_bcast_row where_bwd_rows[2][2] = {
    {where_bwd_float_float, where_bwd_float_double},
    {where_bwd_double_float, where_bwd_double_double},
};

static void where_forward(ag_entry *e)
{
    ag_tensor *z = e->out;
    int64_t st[3][AG_MAX_DIMS];
    for (int k = 0; k < 3; k++)
        ag_broadcast_strides(e->in[k], z->ndim, z->shape, st[k]);
    const int64_t *sp[3] = {st[0], st[1], st[2]};
    where_ctx c = {e->in[0]->data, e->in[1]->data, e->in[2]->data, z->data, NULL, false};
    ag_bcast_walk(z->ndim, z->shape, 3, sp, where_fwd_rows[z->dtype][e->in[0]->dtype], &c);
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
        where_ctx c = {e->in[0]->data, NULL, NULL, dst, z->grad->data, k == 1};
        ag_bcast_walk(z->ndim, z->shape, 2, sp, where_bwd_rows[z->dtype][e->in[0]->dtype],
                      &c);
    }
}

static double zero_fill(const void *ctx, int64_t i)
{
    (void)ctx, (void)i;
    return 0.0;
}

/* da = sum_to(where(cond, g, 0), a);  db = sum_to(where(cond, 0, g), b) */
static void where_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    static const int64_t no_dims[1] = {0};
    ag_tensor *zero = ag_const_fill(tape, gout->dtype, 0, no_dims, zero_fill, NULL); /* 0-d */
    if (!zero)
        return;
    ag_tensor *cond = e->in[0];
    if (ag_needs_grad(tape, e->in[1]))
        gin[1] = ag_sum_to(tape, ag_where(tape, cond, gout, zero), e->in[1]);
    if (ag_needs_grad(tape, e->in[2]))
        gin[2] = ag_sum_to(tape, ag_where(tape, cond, zero, gout), e->in[2]);
}

ag_tensor *ag_where(ag_tape *t, ag_tensor *cond, ag_tensor *a, ag_tensor *b)
{
    ag_tensor *in[3] = {cond, a, b};
    if (!ag_check_inputs(t, "ag_where", 3, in) || !ag_check_same_dtype(t, "ag_where", a, b))
        return NULL;
    /* a with b, then cond with that; asked without the tape (NULL) so that
     * the message kept names all three shapes */
    ag_tensor ab = {.dtype = a->dtype};
    int nd;
    int64_t shape[AG_MAX_DIMS];
    if (!ag_broadcast_shape(NULL, "ag_where", a, b, &ab.ndim, ab.shape) ||
        !ag_broadcast_shape(NULL, "ag_where", cond, &ab, &nd, shape)) {
        char s0[128], s1[128], s2[128];
        return ag_fail(t, AG_ERR_SHAPE, "ag_where: shapes %s, %s and %s do not broadcast",
                       ag_shape_str(cond, s0, sizeof s0), ag_shape_str(a, s1, sizeof s1),
                       ag_shape_str(b, s2, sizeof s2));
    }
    ag_op_call c = {.def = &ag_op_where, .in = in, .n_in = 3, .dtype = a->dtype,
                    .ndim = nd, .shape = shape};
    return ag_op_run(t, &c);
}

/* ---- clamp ---- */

typedef struct {
    double lo, hi; /* rounded to the dtype where used, as PyTorch does */
} clamp_attr;

#define CLAMP_LOOPS(T)                                                        \
    static void clamp_fwd_##T(const T *restrict x, T *restrict z, int64_t n,  \
                              const clamp_attr *a)                            \
    {                                                                         \
        T lo = (T)a->lo, hi = (T)a->hi;                                       \
        for (int64_t i = 0; i < n; i++) {                                     \
            T v = x[i] < lo ? lo : x[i]; /* a NaN stays NaN */                \
            z[i] = v > hi ? hi : v;                                           \
        }                                                                     \
    }                                                                         \
    /* dx += g where lo <= x <= hi (PyTorch's rule: bounds included) */      \
    static void clamp_bwd_##T(const T *restrict x, const T *restrict g, T *restrict d, \
                              int64_t n, const clamp_attr *a)                 \
    {                                                                         \
        T lo = (T)a->lo, hi = (T)a->hi;                                       \
        for (int64_t i = 0; i < n; i++)                                       \
            if (x[i] >= lo && x[i] <= hi)                                     \
                d[i] += g[i];                                                 \
    }
CLAMP_LOOPS(float)
CLAMP_LOOPS(double)

static void clamp_forward(ag_entry *e)
{
    const clamp_attr *a = AG_ATTR(e, clamp_attr);
    if (e->out->dtype == AG_F64)
        clamp_fwd_double(e->in[0]->data, e->out->data, e->out->numel, a);
    else
        clamp_fwd_float(e->in[0]->data, e->out->data, e->out->numel, a);
}

static void clamp_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (!dx)
        return;
    const clamp_attr *a = AG_ATTR(e, clamp_attr);
    if (e->out->dtype == AG_F64)
        clamp_bwd_double(e->in[0]->data, e->out->grad->data, dx, e->out->numel, a);
    else
        clamp_bwd_float(e->in[0]->data, e->out->grad->data, dx, e->out->numel, a);
}

typedef struct {
    const ag_tensor *x;
    double lo, hi; /* rounded to x's dtype */
} inside_ctx;

/* 1 where lo <= x <= hi, else 0 */
static double inside_bounds(const void *vc, int64_t i)
{
    const inside_ctx *c = vc;
    double v = ag_get(c->x, i);
    return v >= c->lo && v <= c->hi ? 1.0 : 0.0;
}

/* dx = g * [lo <= x <= hi] */
static void clamp_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const clamp_attr *a = AG_ATTR(e, clamp_attr);
    const ag_tensor *x = e->in[0];
    bool f32 = x->dtype == AG_F32;
    inside_ctx c = {x, f32 ? (float)a->lo : a->lo, f32 ? (float)a->hi : a->hi};
    ag_tensor *mask = ag_const_fill(tape, x->dtype, x->ndim, x->shape, inside_bounds, &c);
    if (mask)
        gin[0] = ag_mul(tape, gout, mask);
}

ag_tensor *ag_clamp(ag_tape *t, ag_tensor *a, double lo, double hi)
{
    if (!ag_check_inputs(t, "ag_clamp", 1, &a))
        return NULL;
    if (isnan(lo) || isnan(hi))
        return ag_fail(t, AG_ERR_ARG, "ag_clamp: bounds must not be NaN (lo %g, hi %g)", lo,
                       hi);
    clamp_attr at = {lo, hi};
    ag_op_call c = {.def = &ag_op_clamp, .in = &a, .n_in = 1, .dtype = a->dtype,
                    .ndim = a->ndim, .shape = a->shape, .attr = &at, .attr_size = sizeof at};
    return ag_op_run(t, &c);
}

/* ---- samples ----
 * Condition inputs are f64 tensors that need no gradient. */

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

const ag_op_def ag_op_where = {.name = "where", .forward = where_forward,
                               .backward = where_backward, .vjp = where_vjp,
                               .sample = where_sample};
const ag_op_def ag_op_clamp = {.name = "clamp", .forward = clamp_forward,
                               .backward = clamp_backward, .vjp = clamp_vjp,
                               .sample = clamp_sample};
