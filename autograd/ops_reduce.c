/* ops_reduce.c — the smooth reductions over one axis or all elements: sum,
 * mean, logsumexp, variance; and what every reduction shares (the axis
 * view, the call checks, the keepdim form, the sample cases).
 * An axis reduction views the input as (O, K, I): O = product of the dims
 * before the axis, K = the axis, I = product of the dims after it; the
 * output is (O, I).  Notation: x = input, z = output, g = dL/dz.  Math
 * runs in double (f32 accumulates in double), rounded once to the dtype,
 * except logsumexp's exponentials along a contiguous row: vmath.h's, in
 * the dtype. */
#include "ops_reduce_internal.h"
#include "kernels/vmath.h"

#include <math.h>

ag_axis_view ag_axis_view_of(const ag_tensor *x, int axis)
{
    if (axis < 0)
        return (ag_axis_view){1, x->numel, 1};
    ag_axis_view v = {1, x->shape[axis], 1};
    for (int i = 0; i < axis; i++)
        v.outer *= x->shape[i];
    for (int i = axis + 1; i < x->ndim; i++)
        v.inner *= x->shape[i];
    return v;
}

/* ---- what every reduction shares ---- */

/* "axis 1 of [3,4]" or "every axis of [3,4]", for messages. */
static const char *reduce_where(const ag_reduce_plan *p, const ag_tensor *a, char *buf,
                                size_t n)
{
    char sb[128];
    if (p->user_axis == AG_ALL)
        snprintf(buf, n, "every axis of %s", ag_shape_str(a, sb, sizeof sb));
    else
        snprintf(buf, n, "axis %d of %s", p->user_axis, ag_shape_str(a, sb, sizeof sb));
    return buf;
}

bool ag_reduce_plan_of(ag_tape *tape, const char *fn, ag_tensor *a, int axis, bool keepdim,
                       bool nonempty, ag_reduce_plan *p)
{
    if (!ag_check_inputs(tape, fn, 1, &a))
        return false;
    *p = (ag_reduce_plan){.attr = {.axis = -1, .keepdim = keepdim}, .user_axis = axis};
    if (axis == AG_ALL) {
        for (int i = 0; keepdim && i < a->ndim; i++)
            p->shape[p->ndim++] = 1;
    } else {
        if (!ag_check_axis(tape, fn, a->ndim, &axis))
            return false;
        p->attr.axis = axis;
        for (int i = 0; i < a->ndim; i++)
            if (i != axis)
                p->shape[p->ndim++] = a->shape[i];
            else if (keepdim)
                p->shape[p->ndim++] = 1;
    }
    p->v = ag_axis_view_of(a, p->attr.axis);
    if (nonempty && p->v.k == 0) {
        char wb[192];
        ag_fail(tape, AG_ERR_SHAPE, "%s: reduction over an empty axis (%s)", fn,
                reduce_where(p, a, wb, sizeof wb));
        return false;
    }
    return true;
}

ag_tensor *ag_reduce_run(ag_tape *tape, const ag_op_def *def, ag_tensor *a,
                         const ag_reduce_plan *p, size_t aux_bytes)
{
    ag_op_call c = {.def = def, .in = &a, .n_in = 1, .dtype = a->dtype, .ndim = p->ndim,
                    .shape = p->shape, .attr = &p->attr, .attr_size = sizeof p->attr,
                    .aux_bytes = aux_bytes};
    return ag_op_run(tape, &c);
}

ag_tensor *ag_reduce_keepdim(ag_tape *tape, const ag_entry *e, ag_tensor *t)
{
    const ag_tensor *x = e->in[0];
    if (!t || t->ndim == x->ndim) /* keepdim already, or a 0-d x */
        return t;
    int axis = ag_reduce_attr_of(e)->axis;
    int64_t shape[AG_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        shape[i] = axis < 0 || i == axis ? 1 : x->shape[i];
    return ag_reshape(tape, t, x->ndim, shape);
}

/* ---- sum and mean: z[o,i] = scale * sum_k x[o,k,i] (scale 1 or 1/K) ---- */

/* Double accumulators (f32 sums too), rows of the inner dim walked
 * contiguously. */
#define SUM_LOOPS(T)                                                          \
    /* sum of k contiguous elements: 8 partial sums, no add-latency chain */ \
    static double sum_run_##T(const T *a, int64_t k)                          \
    {                                                                         \
        double acc[8] = {0};                                                  \
        int64_t j = 0;                                                        \
        for (; j + 8 <= k; j += 8)                                            \
            for (int l = 0; l < 8; l++)                                       \
                acc[l] += a[j + l];                                           \
        for (; j < k; j++)                                                    \
            acc[0] += a[j];                                                   \
        return ((acc[0] + acc[1]) + (acc[2] + acc[3])) +                      \
               ((acc[4] + acc[5]) + (acc[6] + acc[7]));                       \
    }                                                                         \
    static void sum_fwd_##T(const T *a, T *z, ag_axis_view v, double scale)   \
    {                                                                         \
        for (int64_t o = 0; o < v.outer; o++) {                               \
            const T *ao = a + o * v.k * v.inner;                              \
            T *zo = z + o * v.inner;                                          \
            if (v.inner == 1) {                                               \
                zo[0] = (T)(sum_run_##T(ao, v.k) * scale);                    \
                continue;                                                     \
            }                                                                 \
            for (int64_t i = 0; i < v.inner; i++) {                           \
                double acc = 0;                                               \
                for (int64_t k = 0; k < v.k; k++)                             \
                    acc += ao[k * v.inner + i];                               \
                zo[i] = (T)(acc * scale);                                     \
            }                                                                 \
        }                                                                     \
    }                                                                         \
    /* dx[o,k,i] += g[o,i] * scale */                                         \
    static void sum_bwd_##T(const T *g, T *dx, ag_axis_view v, double scale)  \
    {                                                                         \
        if (v.inner == 1) {                                                   \
            for (int64_t o = 0; o < v.outer; o++) {                           \
                T go = (T)(g[o] * scale), *d = dx + o * v.k;                  \
                for (int64_t k = 0; k < v.k; k++)                             \
                    d[k] += go;                                               \
            }                                                                 \
            return;                                                           \
        }                                                                     \
        for (int64_t o = 0; o < v.outer; o++)                                 \
            for (int64_t k = 0; k < v.k; k++) {                               \
                T *d = dx + (o * v.k + k) * v.inner;                          \
                const T *go = g + o * v.inner;                                \
                for (int64_t i = 0; i < v.inner; i++)                         \
                    d[i] += (T)(go[i] * scale);                               \
            }                                                                 \
    }
SUM_LOOPS(float)
SUM_LOOPS(double)

/* ---- sum and mean on the thread pool, above AG_PAR_MIN elements ----
 * Rows (the outer dim) are independent: each pool chunk takes whole rows
 * and sums each as one thread would.  One long row (outer = inner = 1)
 * is cut into spans of SUM_SPAN elements (more when there would be over
 * SUM_SPANS_MAX), whose partial sums are added in span order; the spans
 * depend on k alone, so the bits do not depend on the thread count (and
 * a row of at most one span is summed exactly as before). */
#define SUM_SPAN ((int64_t)1 << 15)
#define SUM_SPANS_MAX 4096

typedef struct {
    const void *a;
    void *z;
    ag_axis_view v;
    double scale;
    int64_t span;
    double *part; /* one partial sum per span */
} sum_ctx;

/* rows [lo, hi) of the forward (ctx->z: the output) or the backward
 * (ctx->a: the output gradient, ctx->z: the input gradient); elements
 * [lo, hi) of a whole reduction's backward; spans [lo, hi) of one row */
#define SUM_RANGES(T)                                                         \
    static void sum_rows_fwd_##T(void *vc, int64_t lo, int64_t hi)            \
    {                                                                         \
        const sum_ctx *c = vc;                                                \
        ag_axis_view v = {hi - lo, c->v.k, c->v.inner};                       \
        sum_fwd_##T((const T *)c->a + lo * v.k * v.inner, (T *)c->z + lo * v.inner, \
                    v, c->scale);                                             \
    }                                                                         \
    static void sum_rows_bwd_##T(void *vc, int64_t lo, int64_t hi)            \
    {                                                                         \
        const sum_ctx *c = vc;                                                \
        ag_axis_view v = {hi - lo, c->v.k, c->v.inner};                       \
        sum_bwd_##T((const T *)c->a + lo * v.inner, (T *)c->z + lo * v.k * v.inner, \
                    v, c->scale);                                             \
    }                                                                         \
    static void sum_flat_bwd_##T(void *vc, int64_t lo, int64_t hi)            \
    {                                                                         \
        const sum_ctx *c = vc;                                                \
        T go = (T)(*(const T *)c->a * c->scale), *d = (T *)c->z;              \
        for (int64_t j = lo; j < hi; j++)                                     \
            d[j] += go;                                                       \
    }                                                                         \
    static void sum_spans_##T(void *vc, int64_t lo, int64_t hi)               \
    {                                                                         \
        const sum_ctx *c = vc;                                                \
        for (int64_t s = lo; s < hi; s++) {                                   \
            int64_t at = s * c->span, k = c->v.k - at;                        \
            c->part[s] = sum_run_##T((const T *)c->a + at, k < c->span ? k : c->span); \
        }                                                                     \
    }
SUM_RANGES(float)
SUM_RANGES(double)

/* Rows per pool chunk: about AG_PAR_CHUNK elements. */
static int64_t rows_per_chunk(ag_axis_view v)
{
    int64_t row = v.k * v.inner;
    return row >= AG_PAR_CHUNK ? 1 : AG_PAR_CHUNK / (row > 0 ? row : 1);
}

static void sum_one_row(const ag_entry *e, ag_axis_view v, double scale)
{
    int64_t span = SUM_SPAN;
    if (v.k > span * SUM_SPANS_MAX)
        span = (v.k + SUM_SPANS_MAX - 1) / SUM_SPANS_MAX;
    int64_t spans = (v.k + span - 1) / span;
    double part[SUM_SPANS_MAX], total = 0;
    bool f64 = e->out->dtype == AG_F64;
    sum_ctx c = {.a = e->in[0]->data, .v = v, .span = span, .part = part};
    ag_parallel_for(spans, 1, f64 ? sum_spans_double : sum_spans_float, &c);
    for (int64_t s = 0; s < spans; s++)
        total += part[s];
    if (f64)
        *(double *)e->out->data = total * scale;
    else
        *(float *)e->out->data = (float)(total * scale);
}

AG_INLINE void sum_scaled_forward(ag_entry *e, ag_axis_view v, double scale)
{
    bool f64 = e->out->dtype == AG_F64;
    if (v.outer == 1 && v.inner == 1 && v.k > SUM_SPAN) {
        sum_one_row(e, v, scale);
    } else if (v.outer > 1 && v.outer * v.k * v.inner >= AG_PAR_MIN) {
        sum_ctx c = {.a = e->in[0]->data, .z = e->out->data, .v = v, .scale = scale};
        ag_parallel_for(v.outer, rows_per_chunk(v), f64 ? sum_rows_fwd_double
                                                        : sum_rows_fwd_float, &c);
    } else {
        AG_REDUCE_TYPED(e->out->dtype, sum_fwd, e->in[0]->data, e->out->data, v, scale);
    }
}

AG_INLINE void sum_scaled_backward(ag_tape *tape, ag_entry *e, ag_axis_view v, double scale)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (!dx)
        return;
    bool f64 = e->out->dtype == AG_F64;
    sum_ctx c = {.a = e->out->grad->data, .z = dx, .v = v, .scale = scale};
    if (v.outer == 1 && v.inner == 1) { /* every element gets g */
        ag_par_elems(v.k, f64 ? sum_flat_bwd_double : sum_flat_bwd_float, &c);
    } else if (v.outer > 1 && v.outer * v.k * v.inner >= AG_PAR_MIN) {
        ag_parallel_for(v.outer, rows_per_chunk(v), f64 ? sum_rows_bwd_double
                                                        : sum_rows_bwd_float, &c);
    } else {
        AG_REDUCE_TYPED(e->out->dtype, sum_bwd, e->out->grad->data, dx, v, scale);
    }
}

static void sum_forward(ag_entry *e) { sum_scaled_forward(e, ag_reduce_view(e), 1.0); }

static void mean_forward(ag_entry *e)
{
    ag_axis_view v = ag_reduce_view(e);
    sum_scaled_forward(e, v, 1.0 / (double)v.k);
}

/* dx = expand(g) */
static void sum_backward(ag_tape *tape, ag_entry *e)
{
    sum_scaled_backward(tape, e, ag_reduce_view(e), 1.0);
}

/* dx = expand(g) / K */
static void mean_backward(ag_tape *tape, ag_entry *e)
{
    ag_axis_view v = ag_reduce_view(e);
    sum_scaled_backward(tape, e, v, 1.0 / (double)v.k);
}

/* dx = expand(g) */
static void sum_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const ag_tensor *x = e->in[0];
    if (ag_needs_grad(tape, x))
        gin[0] = ag_expand(tape, ag_reduce_keepdim(tape, e, gout), x->ndim, x->shape);
}

/* dx = expand(g / K) */
static void mean_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const ag_tensor *x = e->in[0];
    if (!ag_needs_grad(tape, x))
        return;
    double scale = 1.0 / (double)ag_reduce_view(e).k;
    ag_tensor *g = ag_mul_scalar(tape, ag_reduce_keepdim(tape, e, gout), scale);
    gin[0] = ag_expand(tape, g, x->ndim, x->shape);
}

ag_tensor *ag_sum(ag_tape *t, ag_tensor *a, int axis, bool keepdim)
{
    ag_reduce_plan p;
    if (!ag_reduce_plan_of(t, "ag_sum", a, axis, keepdim, false, &p))
        return NULL;
    return ag_reduce_run(t, &ag_op_sum, a, &p, 0);
}

ag_tensor *ag_mean(ag_tape *t, ag_tensor *a, int axis, bool keepdim)
{
    ag_reduce_plan p;
    if (!ag_reduce_plan_of(t, "ag_mean", a, axis, keepdim, true, &p))
        return NULL;
    return ag_reduce_run(t, &ag_op_mean, a, &p, 0);
}

/* ---- logsumexp: z = m + log(sum_k exp(x - m)), m = max_k x ---- */

/* A contiguous row (inner == 1) takes its exponentials from vmath.h, in
 * the dtype, LSE_BLOCK at a time through a stack buffer. */
#define LSE_BLOCK 256
#define LSE_LOOPS(T)                                                          \
    /* sum_k exp(r[k] - m) over a contiguous row */                           \
    static double lse_row_sum_##T(const T *r, int64_t k, double m)            \
    {                                                                         \
        T t[LSE_BLOCK];                                                       \
        double s = 0;                                                         \
        for (int64_t k0 = 0; k0 < k; k0 += LSE_BLOCK) {                       \
            int64_t b = k - k0 < LSE_BLOCK ? k - k0 : LSE_BLOCK;              \
            for (int64_t j = 0; j < b; j++)                                   \
                t[j] = (T)(r[k0 + j] - m);                                    \
            ag_vm_##T()->exp(t, t, b);                                        \
            for (int64_t j = 0; j < b; j++)                                   \
                s += t[j];                                                    \
        }                                                                     \
        return s;                                                             \
    }                                                                         \
    static void lse_fwd_##T(const T *x, T *z, ag_axis_view v)                 \
    {                                                                         \
        for (int64_t o = 0; o < v.outer; o++)                                 \
            for (int64_t i = 0; i < v.inner; i++) {                           \
                const T *r = x + o * v.k * v.inner + i;                       \
                double m = -INFINITY, s = 0;                                  \
                for (int64_t k = 0; k < v.k; k++)                             \
                    m = fmax(m, r[k * v.inner]);                              \
                if (isinf(m)) /* all -inf, or an inf: no shift (PyTorch) */   \
                    m = 0;                                                    \
                if (v.inner == 1)                                             \
                    s = lse_row_sum_##T(r, v.k, m);                           \
                else                                                          \
                    for (int64_t k = 0; k < v.k; k++)                         \
                        s += exp(r[k * v.inner] - m);                         \
                z[o * v.inner + i] = (T)(m + log(s));                         \
            }                                                                 \
    }                                                                         \
    /* dx += g * exp(x - z)  (the softmax of x along the axis) */             \
    static void lse_bwd_row_##T(const T *x, double zj, double gj, T *dx,      \
                                int64_t k)                                    \
    {                                                                         \
        T t[LSE_BLOCK];                                                       \
        for (int64_t k0 = 0; k0 < k; k0 += LSE_BLOCK) {                       \
            int64_t b = k - k0 < LSE_BLOCK ? k - k0 : LSE_BLOCK;              \
            for (int64_t j = 0; j < b; j++)                                   \
                t[j] = (T)(x[k0 + j] - zj);                                   \
            ag_vm_##T()->exp(t, t, b);                                        \
            for (int64_t j = 0; j < b; j++)                                   \
                dx[k0 + j] += (T)(gj * t[j]);                                 \
        }                                                                     \
    }                                                                         \
    static void lse_bwd_##T(const T *x, const T *z, const T *g, T *dx,        \
                            ag_axis_view v)                                   \
    {                                                                         \
        for (int64_t o = 0; o < v.outer; o++)                                 \
            for (int64_t i = 0; i < v.inner; i++) {                           \
                int64_t base = o * v.k * v.inner + i, j = o * v.inner + i;    \
                double gj = g[j], zj = z[j];                                  \
                if (v.inner == 1) {                                           \
                    lse_bwd_row_##T(x + base, zj, gj, dx + base, v.k);        \
                    continue;                                                 \
                }                                                             \
                for (int64_t k = 0; k < v.k; k++) {                           \
                    int64_t xi = base + k * v.inner;                          \
                    dx[xi] += (T)(gj * exp(x[xi] - zj));                      \
                }                                                             \
            }                                                                 \
    }
LSE_LOOPS(float)
LSE_LOOPS(double)

/* ---- logsumexp and variance on the pool: chunks of outer rows, each
 * row as one thread does it (rows are independent: the same bits) ---- */

typedef struct {
    const ag_entry *e;
    void *dx;
    ag_axis_view v;
} rows_ctx;

/* The first element of outer row lo, in x's layout (IN_AT) or z's
 * (OUT_AT); the view of rows [lo, hi) (SUB_VIEW). */
#define IN_AT(T, p, lo, c) ((T *)(p) + (lo) * (c)->v.k * (c)->v.inner)
#define OUT_AT(T, p, lo, c) ((T *)(p) + (lo) * (c)->v.inner)
#define SUB_VIEW(c, lo, hi) ((ag_axis_view){(hi) - (lo), (c)->v.k, (c)->v.inner})

/* Runs range over every outer row: in chunks on the pool when large. */
static void rows_run(const ag_entry *e, void *dx, ag_parallel_fn range)
{
    rows_ctx c = {e, dx, ag_reduce_view(e)};
    if (c.v.outer > 1 && e->in[0]->numel >= AG_PAR_MIN)
        ag_parallel_for(c.v.outer, rows_per_chunk(c.v), range, &c);
    else
        range(&c, 0, c.v.outer);
}

#define LSE_RANGES(T)                                                         \
    static void lse_fwd_rows_##T(void *vc, int64_t lo, int64_t hi)            \
    {                                                                         \
        const rows_ctx *c = vc;                                               \
        lse_fwd_##T(IN_AT(const T, c->e->in[0]->data, lo, c),                 \
                    OUT_AT(T, c->e->out->data, lo, c), SUB_VIEW(c, lo, hi));  \
    }                                                                         \
    static void lse_bwd_rows_##T(void *vc, int64_t lo, int64_t hi)            \
    {                                                                         \
        const rows_ctx *c = vc;                                               \
        lse_bwd_##T(IN_AT(const T, c->e->in[0]->data, lo, c),                 \
                    OUT_AT(const T, c->e->out->data, lo, c),                  \
                    OUT_AT(const T, c->e->out->grad->data, lo, c),            \
                    IN_AT(T, c->dx, lo, c), SUB_VIEW(c, lo, hi));             \
    }
LSE_RANGES(float)
LSE_RANGES(double)

static void logsumexp_forward(ag_entry *e)
{
    rows_run(e, NULL, e->out->dtype == AG_F64 ? lse_fwd_rows_double : lse_fwd_rows_float);
}

static void logsumexp_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (dx)
        rows_run(e, dx, e->out->dtype == AG_F64 ? lse_bwd_rows_double : lse_bwd_rows_float);
}

/* dx = g * exp(x - z), z the recorded output (so it differentiates on) */
static void logsumexp_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    ag_tensor *x = e->in[0];
    if (!ag_needs_grad(tape, x))
        return;
    ag_tensor *z = ag_reduce_keepdim(tape, e, e->out), *g = ag_reduce_keepdim(tape, e, gout);
    gin[0] = ag_mul(tape, g, ag_exp(tape, ag_sub(tape, x, z)));
}

ag_tensor *ag_logsumexp(ag_tape *t, ag_tensor *a, int axis, bool keepdim)
{
    ag_reduce_plan p;
    if (!ag_reduce_plan_of(t, "ag_logsumexp", a, axis, keepdim, false, &p))
        return NULL;
    return ag_reduce_run(t, &ag_op_logsumexp, a, &p, 0);
}

/* ---- variance: z = sum_k (x - mean)^2 / (K - correction) ----
 * aux: the mean of each row, (O, I) doubles, for the fast backward. */

#define VAR_LOOPS(T)                                                          \
    static void var_fwd_##T(const T *x, T *z, double *mean, ag_axis_view v,   \
                            double denom)                                     \
    {                                                                         \
        for (int64_t o = 0; o < v.outer; o++)                                 \
            for (int64_t i = 0; i < v.inner; i++) {                           \
                const T *r = x + o * v.k * v.inner + i;                       \
                double mu = 0, ss = 0;                                        \
                for (int64_t k = 0; k < v.k; k++)                             \
                    mu += r[k * v.inner];                                     \
                mu /= (double)v.k;                                            \
                for (int64_t k = 0; k < v.k; k++) {                           \
                    double d = r[k * v.inner] - mu;                           \
                    ss += d * d;                                              \
                }                                                             \
                mean[o * v.inner + i] = mu;                                   \
                z[o * v.inner + i] = (T)(ss / denom);                         \
            }                                                                 \
    }                                                                         \
    /* dx += g * 2 (x - mean) / (K - correction) */                           \
    static void var_bwd_##T(const T *x, const double *mean, const T *g, T *dx, \
                            ag_axis_view v, double denom)                     \
    {                                                                         \
        for (int64_t o = 0; o < v.outer; o++)                                 \
            for (int64_t i = 0; i < v.inner; i++) {                           \
                int64_t base = o * v.k * v.inner + i, j = o * v.inner + i;    \
                double c = g[j] * (2.0 / denom), mu = mean[j];                \
                for (int64_t k = 0; k < v.k; k++) {                           \
                    int64_t xi = base + k * v.inner;                          \
                    dx[xi] += (T)(c * (x[xi] - mu));                          \
                }                                                             \
            }                                                                 \
    }
VAR_LOOPS(float)
VAR_LOOPS(double)

static double var_denom(const ag_entry *e)
{
    return (double)(ag_reduce_view(e).k - ag_reduce_attr_of(e)->correction);
}

#define VAR_RANGES(T)                                                         \
    static void var_fwd_rows_##T(void *vc, int64_t lo, int64_t hi)            \
    {                                                                         \
        const rows_ctx *c = vc;                                               \
        var_fwd_##T(IN_AT(const T, c->e->in[0]->data, lo, c),                 \
                    OUT_AT(T, c->e->out->data, lo, c), OUT_AT(double, c->e->aux, lo, c), \
                    SUB_VIEW(c, lo, hi), var_denom(c->e));                    \
    }                                                                         \
    static void var_bwd_rows_##T(void *vc, int64_t lo, int64_t hi)            \
    {                                                                         \
        const rows_ctx *c = vc;                                               \
        var_bwd_##T(IN_AT(const T, c->e->in[0]->data, lo, c),                 \
                    OUT_AT(const double, c->e->aux, lo, c),                   \
                    OUT_AT(const T, c->e->out->grad->data, lo, c),            \
                    IN_AT(T, c->dx, lo, c), SUB_VIEW(c, lo, hi), var_denom(c->e)); \
    }
VAR_RANGES(float)
VAR_RANGES(double)

static void variance_forward(ag_entry *e)
{
    rows_run(e, NULL, e->out->dtype == AG_F64 ? var_fwd_rows_double : var_fwd_rows_float);
}

static void variance_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (dx)
        rows_run(e, dx, e->out->dtype == AG_F64 ? var_bwd_rows_double : var_bwd_rows_float);
}

/* dx = g * 2 (x - mean(x)) / (K - correction), the mean recorded from x */
static void variance_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    ag_tensor *x = e->in[0];
    if (!ag_needs_grad(tape, x))
        return;
    int axis = ag_reduce_attr_of(e)->axis;
    ag_tensor *mean = ag_mean(tape, x, axis < 0 ? AG_ALL : axis, true);
    ag_tensor *g = ag_mul_scalar(tape, ag_reduce_keepdim(tape, e, gout), 2.0 / var_denom(e));
    gin[0] = ag_mul(tape, g, ag_sub(tape, x, mean));
}

ag_tensor *ag_variance(ag_tape *t, ag_tensor *a, int axis, bool keepdim, int correction)
{
    ag_reduce_plan p;
    if (!ag_reduce_plan_of(t, "ag_variance", a, axis, keepdim, false, &p))
        return NULL;
    if (p.v.k - correction <= 0) {
        char wb[192];
        return ag_fail(t, AG_ERR_ARG,
                       "ag_variance: %lld elements minus correction %d leave no degrees of "
                       "freedom (%s)", (long long)p.v.k, correction,
                       reduce_where(&p, a, wb, sizeof wb));
    }
    p.attr.correction = correction;
    return ag_reduce_run(t, &ag_op_variance, a, &p,
                         (size_t)(p.v.outer * p.v.inner) * sizeof(double));
}

/* ---- samples: every axis form, keepdim on and off, size-1 dims ---- */

static const struct {
    int ndim;
    int64_t shape[3];
    int axis;
    bool keepdim;
    int correction; /* variance only */
} red_cases[] = {
    {2, {3, 4}, 0, false, 1},         {2, {3, 4}, 1, true, 0},
    {3, {2, 3, 4}, -1, false, 1},     {3, {2, 3, 4}, -2, true, 2},
    {3, {2, 1, 3}, AG_ALL, false, 1}, {2, {2, 3}, AG_ALL, true, 0},
    {1, {5}, 0, false, 1},            {3, {2, 1, 3}, 1, false, 0},
    {1, {1}, -1, true, 0},
};
#define RED_CASES ((int)(sizeof red_cases / sizeof red_cases[0]))

bool ag_reduce_sample(int which, ag_rng *rng, ag_op_sample *s, ag_gradcheck_fn fn,
                      double lo, double hi)
{
    if (which < 0 || which >= RED_CASES)
        return false;
    s->in[0] = ag_sample_tensor(rng, red_cases[which].ndim, red_cases[which].shape,
                                AG_SAMPLE_RANGE, lo, hi);
    s->n_in = 1;
    s->fn = fn;
    s->iarg[0] = red_cases[which].axis;
    s->iarg[1] = red_cases[which].keepdim;
    s->iarg[2] = red_cases[which].correction;
    return true;
}

static ag_tensor *sum_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    const ag_op_sample *s = ctx;
    return ag_sum(t, in[0], (int)s->iarg[0], s->iarg[1]);
}

static ag_tensor *mean_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    const ag_op_sample *s = ctx;
    return ag_mean(t, in[0], (int)s->iarg[0], s->iarg[1]);
}

static ag_tensor *logsumexp_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    const ag_op_sample *s = ctx;
    return ag_logsumexp(t, in[0], (int)s->iarg[0], s->iarg[1]);
}

static ag_tensor *variance_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    const ag_op_sample *s = ctx;
    return ag_variance(t, in[0], (int)s->iarg[0], s->iarg[1], (int)s->iarg[2]);
}

static bool sum_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    return ag_reduce_sample(which, rng, s, sum_apply, -2, 2);
}

static bool mean_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    return ag_reduce_sample(which, rng, s, mean_apply, -2, 2);
}

/* one case more, with large values: the shift by the maximum matters */
static bool logsumexp_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    if (which == RED_CASES)
        return ag_reduce_sample(2, rng, s, logsumexp_apply, 30, 40);
    return ag_reduce_sample(which, rng, s, logsumexp_apply, -2, 2);
}

static bool variance_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    return ag_reduce_sample(which, rng, s, variance_apply, -2, 2);
}

const ag_op_def ag_op_sum = {.name = "sum", .forward = sum_forward,
                             .backward = sum_backward, .vjp = sum_vjp,
                             .sample = sum_sample};
const ag_op_def ag_op_mean = {.name = "mean", .forward = mean_forward,
                              .backward = mean_backward, .vjp = mean_vjp,
                              .sample = mean_sample};
const ag_op_def ag_op_logsumexp = {.name = "logsumexp", .forward = logsumexp_forward,
                                   .backward = logsumexp_backward, .vjp = logsumexp_vjp,
                                   .sample = logsumexp_sample};
const ag_op_def ag_op_variance = {.name = "variance", .forward = variance_forward,
                                  .backward = variance_backward, .vjp = variance_vjp,
                                  .sample = variance_sample};
