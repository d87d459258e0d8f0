/* ops_nn.c — neural-network primitives: softmax, log-softmax, the fused
 * cross-entropy of logits, and inverted dropout.
 * Softmax views its input as (O, K, I): O = product of the dims before the
 * axis, K = the axis, I = product of the dims after it; each of the O*I
 * lanes holds K elements at stride I.  Cross-entropy: N = rows, C =
 * classes.  Notation: x = input, z = output, p = softmax(x), g = dL/dz.
 * f32 sums accumulate in double; exponentials run in the tensor's dtype,
 * through kernels/vmath.h where the elements are contiguous.
 * Each op's recorded derivative (vjp) sits next to its fast backward and
 * says the same math with ops on the recorded z or x; labels, smoothing
 * targets and dropout masks enter it as constant tensors. */
#include "autograd_internal.h"
#include "kernels/vmath.h"

#include <math.h>

/* ---- softmax and log-softmax ------------------------------------------- */

typedef struct {
    int axis; /* normalised; 0 for a 0-d input */
} sm_attr;

/* The (O, K, I) view of the input (a 0-d input: one lane of one element). */
static ag_axis_view sm_view_of(const ag_tensor *a, int axis)
{
    return ag_axis_view_of(a, a->ndim ? axis : -1);
}

/* Stack buffers for vmath.h's exponentials: this many elements. */
#define SM_BLOCK 256

/* One lane of K elements at stride s: z = x - max - log(sum(exp(x - max)))
 * (log) or exp(x - max) / sum (softmax).  The maximum keeps exp <= 1, so
 * logits of +-1e4 stay finite; a NaN anywhere in the lane spreads to all.
 * A contiguous lane (s == 1) takes its exponentials from vmath.h: z holds
 * x - max first, then exp of it (softmax) or, a block at a time in t, the
 * terms of the sum (log). */
#define SM_LANE(T, EXP)                                                       \
    AG_INLINE double sm_sum_exp_##T(T *z, int64_t k, bool log_out)           \
    {                                                                         \
        double sum = 0;                                                       \
        if (!log_out) {                                                       \
            ag_vm_##T()->exp(z, z, k);                                        \
            for (int64_t j = 0; j < k; j++)                                   \
                sum += z[j];                                                  \
            return sum;                                                       \
        }                                                                     \
        T t[SM_BLOCK];                                                        \
        for (int64_t j0 = 0; j0 < k; j0 += SM_BLOCK) {                        \
            int64_t m = k - j0 < SM_BLOCK ? k - j0 : SM_BLOCK;                \
            ag_vm_##T()->exp(z + j0, t, m);                                   \
            for (int64_t j = 0; j < m; j++)                                   \
                sum += t[j];                                                  \
        }                                                                     \
        return sum;                                                           \
    }                                                                         \
    AG_INLINE void sm_lane_##T(const T *x, T *z, int64_t k, int64_t s,        \
                               bool log_out)                                  \
    {                                                                         \
        T m = -INFINITY;                                                      \
        for (int64_t j = 0; j < k; j++)                                       \
            m = x[j * s] > m ? x[j * s] : m;                                  \
        double sum = 0;                                                       \
        if (s == 1) {                                                         \
            for (int64_t j = 0; j < k; j++)                                   \
                z[j] = x[j] - m;                                              \
            sum = sm_sum_exp_##T(z, k, log_out);                              \
            if (log_out) {                                                    \
                double lse = log(sum);                                        \
                for (int64_t j = 0; j < k; j++)                               \
                    z[j] = (T)((double)z[j] - lse);                           \
            } else {                                                          \
                T inv = (T)(1.0 / sum);                                       \
                for (int64_t j = 0; j < k; j++)                               \
                    z[j] *= inv;                                              \
            }                                                                 \
        } else if (log_out) {                                                 \
            for (int64_t j = 0; j < k; j++)                                   \
                sum += EXP(x[j * s] - m);                                     \
            double lse = log(sum);                                            \
            for (int64_t j = 0; j < k; j++)                                   \
                z[j * s] = (T)((double)(x[j * s] - m) - lse);                 \
        } else {                                                              \
            for (int64_t j = 0; j < k; j++) {                                 \
                T ej = EXP(x[j * s] - m);                                     \
                z[j * s] = ej;                                                \
                sum += ej;                                                    \
            }                                                                 \
            T inv = (T)(1.0 / sum);                                           \
            for (int64_t j = 0; j < k; j++)                                   \
                z[j * s] *= inv;                                              \
        }                                                                     \
    }
SM_LANE(float, expf)
SM_LANE(double, exp)

/* Backward of one lane, g = dL/dz:
 *   softmax      z = p:      dx += z * (g - sum_j g_j z_j)
 *   log-softmax  z = log p:  dx += g - exp(z) * sum_j g_j
 * (exp(z) from vmath.h, a block at a time, on a contiguous lane) */
#define SM_LANE_BWD(T, EXP)                                                   \
    AG_INLINE void sm_lane_bwd_##T(const T *z, const T *g, T *dx,             \
                                   int64_t k, int64_t s, bool log_out)        \
    {                                                                         \
        double acc = 0;                                                       \
        if (log_out) {                                                        \
            for (int64_t j = 0; j < k; j++)                                   \
                acc += g[j * s];                                              \
            T sg = (T)acc;                                                    \
            if (s != 1) {                                                     \
                for (int64_t j = 0; j < k; j++)                               \
                    dx[j * s] += g[j * s] - EXP(z[j * s]) * sg;               \
                return;                                                       \
            }                                                                 \
            T t[SM_BLOCK];                                                    \
            for (int64_t j0 = 0; j0 < k; j0 += SM_BLOCK) {                    \
                int64_t m = k - j0 < SM_BLOCK ? k - j0 : SM_BLOCK;            \
                ag_vm_##T()->exp(z + j0, t, m);                               \
                for (int64_t j = 0; j < m; j++)                               \
                    dx[j0 + j] += g[j0 + j] - t[j] * sg;                      \
            }                                                                 \
        } else {                                                              \
            for (int64_t j = 0; j < k; j++)                                   \
                acc += (double)g[j * s] * z[j * s];                           \
            T dot = (T)acc;                                                   \
            for (int64_t j = 0; j < k; j++)                                   \
                dx[j * s] += z[j * s] * (g[j * s] - dot);                     \
        }                                                                     \
    }
SM_LANE_BWD(float, expf)
SM_LANE_BWD(double, exp)

/* Walks the O*I lanes; the common last-axis case (I == 1) gets a literal
 * stride so the lane loops are contiguous.  Inlined into each row's
 * functions with log_out a constant, so the choice is made at compile
 * time. */
#define SM_WALK(T)                                                            \
    AG_INLINE void sm_walk_##T(const T *x, T *z, ag_axis_view v,              \
                               bool log_out)                                  \
    {                                                                         \
        for (int64_t o = 0; o < v.outer; o++) {                               \
            int64_t base = o * v.k * v.inner;                                 \
            if (v.inner == 1)                                                 \
                sm_lane_##T(x + base, z + base, v.k, 1, log_out);             \
            else                                                              \
                for (int64_t i = 0; i < v.inner; i++)                         \
                    sm_lane_##T(x + base + i, z + base + i, v.k, v.inner,     \
                                log_out);                                     \
        }                                                                     \
    }                                                                         \
    AG_INLINE void sm_walk_bwd_##T(const T *z, const T *g, T *dx,             \
                                   ag_axis_view v, bool log_out)              \
    {                                                                         \
        for (int64_t o = 0; o < v.outer; o++) {                               \
            int64_t base = o * v.k * v.inner;                                 \
            if (v.inner == 1)                                                 \
                sm_lane_bwd_##T(z + base, g + base, dx + base, v.k, 1,        \
                                log_out);                                     \
            else                                                              \
                for (int64_t i = 0; i < v.inner; i++)                         \
                    sm_lane_bwd_##T(z + base + i, g + base + i, dx + base + i,\
                                    v.k, v.inner, log_out);                   \
        }                                                                     \
    }
SM_WALK(float)
SM_WALK(double)

/* Outer slices [lo, hi) (lanes are independent): the whole op on one
 * thread, or a chunk of it on the pool.  dx NULL: the forward. */
typedef struct {
    const ag_entry *e;
    void *dx;
    ag_axis_view v;
} sm_ctx;

AG_INLINE void sm_range(const sm_ctx *c, int64_t lo, int64_t hi, bool log_out)
{
    const ag_entry *e = c->e;
    ag_axis_view v = {hi - lo, c->v.k, c->v.inner};
    int64_t at = lo * v.k * v.inner;
    if (e->out->dtype == AG_F64) {
        const double *z = (const double *)e->out->data + at;
        if (c->dx)
            sm_walk_bwd_double(z, (const double *)e->out->grad->data + at,
                               (double *)c->dx + at, v, log_out);
        else
            sm_walk_double((const double *)e->in[0]->data + at, (double *)z, v, log_out);
    } else {
        const float *z = (const float *)e->out->data + at;
        if (c->dx)
            sm_walk_bwd_float(z, (const float *)e->out->grad->data + at,
                              (float *)c->dx + at, v, log_out);
        else
            sm_walk_float((const float *)e->in[0]->data + at, (float *)z, v, log_out);
    }
}

static void softmax_range(void *c, int64_t lo, int64_t hi) { sm_range(c, lo, hi, false); }
static void log_softmax_range(void *c, int64_t lo, int64_t hi) { sm_range(c, lo, hi, true); }

/* Chunks of about AG_PAR_CHUNK elements on the pool above AG_PAR_MIN. */
static void sm_run_op(ag_entry *e, void *dx, ag_parallel_fn range)
{
    sm_ctx c = {e, dx, sm_view_of(e->in[0], AG_ATTR(e, sm_attr)->axis)};
    int64_t slice = c.v.k * c.v.inner;
    if (e->out->numel < AG_PAR_MIN || c.v.outer < 2)
        range(&c, 0, c.v.outer);
    else
        ag_parallel_for(c.v.outer, slice >= AG_PAR_CHUNK ? 1 : AG_PAR_CHUNK / slice, range,
                        &c);
}

static void softmax_forward(ag_entry *e) { sm_run_op(e, NULL, softmax_range); }
static void log_softmax_forward(ag_entry *e) { sm_run_op(e, NULL, log_softmax_range); }

static void softmax_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (dx)
        sm_run_op(e, dx, softmax_range);
}

static void log_softmax_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (dx)
        sm_run_op(e, dx, log_softmax_range);
}

/* The lane sums of the recorded derivatives, kept as a size-1 axis (all
 * of a 0-d tensor). */
static ag_tensor *lane_sum(ag_tape *tape, ag_tensor *x, int axis)
{
    return ag_sum(tape, x, x->ndim ? axis : AG_ALL, true);
}

/* dx = z * (g - sum_j g_j z_j), z the recorded output */
static void softmax_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    ag_tensor *z = e->out;
    int axis = AG_ATTR(e, sm_attr)->axis;
    gin[0] = ag_mul(tape, z, ag_sub(tape, gout, lane_sum(tape, ag_mul(tape, gout, z), axis)));
}

/* dx = g - exp(z) * sum_j g_j, exp(z) = softmax(x) from the recorded z */
static void log_softmax_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout,
                            ag_tensor **gin)
{
    int axis = AG_ATTR(e, sm_attr)->axis;
    gin[0] = ag_sub(tape, gout,
                    ag_mul(tape, ag_exp(tape, e->out), lane_sum(tape, gout, axis)));
}

/* fn: the public function, for messages */
static ag_tensor *sm_run(ag_tape *tape, const ag_op_def *def, const char *fn, ag_tensor *a,
                         int axis)
{
    if (!ag_check_inputs(tape, fn, 1, &a))
        return NULL;
    if (a->ndim == 0) { /* a 0-d tensor is one lane of one element, as in PyTorch */
        if (axis != 0 && axis != -1)
            return ag_fail(tape, AG_ERR_ARG, "%s: axis %d out of range for 0 dims", fn,
                           axis);
        axis = 0;
    } else if (!ag_check_axis(tape, fn, a->ndim, &axis)) {
        return NULL;
    }
    sm_attr at = {axis};
    ag_op_call c = {.def = def, .in = &a, .n_in = 1, .dtype = a->dtype, .ndim = a->ndim,
                    .shape = a->shape, .attr = &at, .attr_size = sizeof at};
    return ag_op_run(tape, &c);
}

ag_tensor *ag_softmax(ag_tape *t, ag_tensor *a, int axis)
{
    return sm_run(t, &ag_op_softmax, "ag_softmax", a, axis);
}

ag_tensor *ag_log_softmax(ag_tape *t, ag_tensor *a, int axis)
{
    return sm_run(t, &ag_op_log_softmax, "ag_log_softmax", a, axis);
}

/* ---- cross-entropy of logits ------------------------------------------- */

/* Saved at record time in the arena (aux):
 *   labels  int64 [N]     copied from the caller
 *   probs   dtype [N, C]  softmax of each row, filled by forward */
typedef struct {
    int64_t *labels;
    void *probs;
} ce_saved;

typedef struct {
    ag_reduction reduction;
    int64_t valid;        /* rows not ignored: MEAN's divisor */
    int64_t ignore_index; /* AG_CE_NO_IGNORE: none */
    double eps;           /* label smoothing */
} ce_attr;

/* Row r, label y, eps, m = max, lse = m + log sum exp(x - m):
 *   loss_r = (1-eps) (lse - x_y) + eps * mean_c (lse - x_c)
 * which is PyTorch's (1-eps) nll + eps/C * sum_c -log p_c.  Ignored rows
 * give 0 and are not counted by the mean.  Rows go CE_ROWS at a time: p
 * takes x - m for the block, then one vmath.h exp over the block (the
 * classes of a row are too few to fill vectors on their own). */
#define CE_ROWS 64
/* On the thread pool (above AG_PAR_MIN logits), rows go in spans of
 * CE_ROWS (more when there would be over CE_SPANS_MAX), whose loss totals
 * are added in span order: spans depend on n alone, so the bits do not
 * depend on the thread count. */
#define CE_SPANS_MAX 1024

typedef struct {
    const void *x;
    const int64_t *y;
    void *p, *z;
    int64_t n, c, ignore;
    double eps;
    int red;
    int64_t span; /* rows, a multiple of CE_ROWS */
    double *part;
} ce_ctx;

static int64_t ce_span(int64_t n)
{
    int64_t blocks = (n + CE_ROWS - 1) / CE_ROWS;
    return CE_ROWS * ((blocks + CE_SPANS_MAX - 1) / CE_SPANS_MAX > 1
                          ? (blocks + CE_SPANS_MAX - 1) / CE_SPANS_MAX : 1);
}

#define CE_FWD(T)                                                             \
    static double ce_rows_##T(const T *x, const int64_t *y, T *p, T *z,       \
                              int64_t n, int64_t c, int64_t ignore, double eps, \
                              int red)                                        \
    {                                                                         \
        T m[CE_ROWS];                                                         \
        double xsum[CE_ROWS], total = 0;                                      \
        for (int64_t r = 0; r < n; r++) {                                     \
            const T *xr = x + r * c;                                          \
            T mr = -INFINITY;                                                 \
            xsum[r] = 0;                                                      \
            for (int64_t j = 0; j < c; j++) {                                 \
                mr = xr[j] > mr ? xr[j] : mr;                                 \
                xsum[r] += xr[j];                                             \
            }                                                                 \
            for (int64_t j = 0; j < c; j++)                                   \
                p[r * c + j] = xr[j] - mr;                                    \
            m[r] = mr;                                                        \
        }                                                                     \
        ag_vm_##T()->exp(p, p, n * c);                                        \
        for (int64_t r = 0; r < n; r++) {                                     \
            const T *xr = x + r * c;                                          \
            T *pr = p + r * c;                                                \
            double sum = 0;                                                   \
            for (int64_t j = 0; j < c; j++)                                   \
                sum += pr[j];                                                 \
            T inv = (T)(1.0 / sum);                                           \
            for (int64_t j = 0; j < c; j++)                                   \
                pr[j] *= inv;                                                 \
            double loss = 0;                                                  \
            if (y[r] != ignore) {                                             \
                /* lse - x_y = (m - x_y) + log(sum): no cancellation */       \
                double ls = log(sum);                                         \
                loss = (1 - eps) * (((double)m[r] - (double)xr[y[r]]) + ls);  \
                if (eps != 0)                                                 \
                    loss += eps * (((double)m[r] - xsum[r] / (double)c) + ls); \
            }                                                                 \
            if (red == AG_REDUCE_NONE)                                        \
                z[r] = (T)loss;                                               \
            total += loss;                                                    \
        }                                                                     \
        return total;                                                         \
    }                                                                         \
    /* spans [lo, hi) of rows: each span's loss total into k->part */       \
    static void ce_spans_##T(void *vk, int64_t lo, int64_t hi)                \
    {                                                                         \
        const ce_ctx *k = vk;                                                 \
        const T *x = k->x;                                                    \
        T *p = k->p, *z = k->z;                                               \
        for (int64_t s = lo; s < hi; s++) {                                   \
            int64_t end = (s + 1) * k->span < k->n ? (s + 1) * k->span : k->n; \
            double t = 0;                                                     \
            for (int64_t r = s * k->span; r < end; r += CE_ROWS) {            \
                int64_t b = end - r < CE_ROWS ? end - r : CE_ROWS;            \
                t += ce_rows_##T(x + r * k->c, k->y + r, p + r * k->c, z + r, b, \
                                 k->c, k->ignore, k->eps, k->red);            \
            }                                                                 \
            k->part[s] = t;                                                   \
        }                                                                     \
    }                                                                         \
    static void ce_fwd_##T(const T *x, const int64_t *y, T *p, T *z, int64_t n, \
                           int64_t c, int64_t ignore, double eps, int red,    \
                           int64_t valid)                                     \
    {                                                                         \
        double part[CE_SPANS_MAX], total = 0;                                 \
        ce_ctx k = {x, y, p, z, n, c, ignore, eps, red, ce_span(n), part};    \
        int64_t spans = n > 0 ? (n - 1) / k.span + 1 : 0;                     \
        if (n * c >= AG_PAR_MIN)                                              \
            ag_parallel_for(spans, 1, ce_spans_##T, &k);                      \
        else                                                                  \
            ce_spans_##T(&k, 0, spans);                                       \
        for (int64_t s = 0; s < spans; s++)                                   \
            total += part[s];                                                 \
        if (red == AG_REDUCE_MEAN) /* 0/0 = NaN when every row is ignored */  \
            z[0] = (T)(total / (double)valid);                                \
        else if (red == AG_REDUCE_SUM)                                        \
            z[0] = (T)total;                                                  \
    }
CE_FWD(float)
CE_FWD(double)

/* dx_rc += w_r * (p_rc - (1-eps) [c == y_r] - eps/C), with w_r = g (sum),
 * g / valid rows (mean) or g_r (none); ignored rows get nothing. */
typedef struct {
    const void *p, *g;
    const int64_t *y;
    void *dx;
    int64_t c, ignore, valid;
    double eps;
    int red;
} ce_bwd_ctx;

#define CE_BWD(T)                                                             \
    static void ce_bwd_rows_##T(void *vk, int64_t lo, int64_t hi)             \
    {                                                                         \
        const ce_bwd_ctx *k = vk;                                             \
        const T *p = k->p, *g = k->g;                                         \
        T *dx = k->dx;                                                        \
        int64_t c = k->c;                                                     \
        double w = k->red == AG_REDUCE_MEAN ? (double)g[0] / (double)k->valid \
                                            : (double)g[0];                   \
        T off = (T)(k->eps / (double)c);                                      \
        for (int64_t r = lo; r < hi; r++) {                                   \
            if (k->y[r] == k->ignore)                                         \
                continue;                                                     \
            T wr = (T)(k->red == AG_REDUCE_NONE ? (double)g[r] : w);          \
            const T *pr = p + r * c;                                          \
            T *dr = dx + r * c;                                               \
            for (int64_t j = 0; j < c; j++)                                   \
                dr[j] += wr * (pr[j] - off);                                  \
            dr[k->y[r]] -= wr * (T)(1 - k->eps);                              \
        }                                                                     \
    }                                                                         \
    /* rows are independent: chunks of rows on the pool when large */        \
    static void ce_bwd_##T(const T *p, const int64_t *y, const T *g, T *dx,   \
                           int64_t n, int64_t c, int64_t ignore, double eps,  \
                           int red, int64_t valid)                            \
    {                                                                         \
        ce_bwd_ctx k = {p, g, y, dx, c, ignore, valid, eps, red};             \
        if (n * c >= AG_PAR_MIN)                                              \
            ag_parallel_for(n, (AG_PAR_CHUNK + c - 1) / c, ce_bwd_rows_##T, &k); \
        else                                                                  \
            ce_bwd_rows_##T(&k, 0, n);                                        \
    }
CE_BWD(float)
CE_BWD(double)

/* Logits [..., C] as n rows of c: the class dim last, rows the rest. */
static void ce_rows(const ag_tensor *x, int64_t *n, int64_t *c)
{
    *c = x->shape[x->ndim - 1];
    *n = 1;
    for (int d = 0; d < x->ndim - 1; d++)
        *n *= x->shape[d];
}

static void ce_forward(ag_entry *e)
{
    const ag_tensor *x = e->in[0];
    const ce_saved *s = e->aux;
    const ce_attr *a = AG_ATTR(e, ce_attr);
    int64_t n, c;
    ce_rows(x, &n, &c);
    if (x->dtype == AG_F64)
        ce_fwd_double(x->data, s->labels, s->probs, e->out->data, n, c, a->ignore_index,
                      a->eps, (int)a->reduction, a->valid);
    else
        ce_fwd_float(x->data, s->labels, s->probs, e->out->data, n, c, a->ignore_index,
                     a->eps, (int)a->reduction, a->valid);
}

static void ce_backward(ag_tape *tape, ag_entry *e)
{
    ag_tensor *x = e->in[0];
    void *dx = ag_grad_data(tape, x);
    if (!dx)
        return;
    const ce_saved *s = e->aux;
    const ce_attr *a = AG_ATTR(e, ce_attr);
    int64_t n, c;
    ce_rows(x, &n, &c);
    if (x->dtype == AG_F64)
        ce_bwd_double(s->probs, s->labels, e->out->grad->data, dx, n, c, a->ignore_index,
                      a->eps, (int)a->reduction, a->valid);
    else
        ce_bwd_float(s->probs, s->labels, e->out->grad->data, dx, n, c, a->ignore_index,
                     a->eps, (int)a->reduction, a->valid);
}

/* The recorded derivative's constants, from the saved labels. */
typedef struct {
    const int64_t *labels;
    int64_t c;
    const ce_attr *a;
} ce_fill_ctx;

/* target distribution t_rc = (1-eps) [c == y_r] + eps/C (0 on ignored rows) */
static double ce_target_at(const void *vc, int64_t i)
{
    const ce_fill_ctx *f = vc;
    int64_t r = i / f->c, y = f->labels[r];
    if (y == f->a->ignore_index)
        return 0;
    return (i % f->c == y ? 1 - f->a->eps : 0) + f->a->eps / (double)f->c;
}

/* row weight: 0 on ignored rows, else 1/valid (mean) or 1 */
static double ce_row_weight_at(const void *vc, int64_t r)
{
    const ce_fill_ctx *f = vc;
    if (f->labels[r] == f->a->ignore_index)
        return 0;
    return f->a->reduction == AG_REDUCE_MEAN ? 1.0 / (double)f->a->valid : 1.0;
}

/* dx = (softmax(x) - t) * w * g, with t the target distribution and w
 * the row weights [N, 1] (constants); g is 0-d, or [N] for NONE (one
 * value per row).  The softmax is recorded again from x, so the
 * derivative can itself be differentiated. */
static void ce_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    ag_tensor *x = e->in[0];
    const ce_saved *s = e->aux;
    const ce_attr *a = AG_ATTR(e, ce_attr);
    ce_fill_ctx f = {s->labels, x->shape[x->ndim - 1], a};
    int64_t wshape[AG_MAX_DIMS]; /* [..., 1] */
    memcpy(wshape, x->shape, sizeof wshape);
    wshape[x->ndim - 1] = 1;
    ag_tensor *t = ag_const_fill(tape, x->dtype, x->ndim, x->shape, ce_target_at, &f);
    ag_tensor *w = ag_const_fill(tape, x->dtype, x->ndim, wshape, ce_row_weight_at, &f);
    ag_tensor *g = a->reduction == AG_REDUCE_NONE ? ag_unsqueeze(tape, gout, -1) : gout;
    if (!t || !w)
        return;
    gin[0] = ag_mul(tape, ag_sub(tape, ag_softmax(tape, x, -1), t), ag_mul(tape, w, g));
}

/* Checks the labels: returns the number of rows not ignored, or -1 (with
 * the error kept) for a label outside [0, C) that is not the ignore index. */
static int64_t ce_check_labels(ag_tape *tape, const int64_t *labels, int64_t n, int64_t c,
                               int64_t ignore)
{
    int64_t valid = 0;
    for (int64_t r = 0; r < n; r++) {
        if (labels[r] == ignore)
            continue;
        if (labels[r] < 0 || labels[r] >= c) {
            ag_fail(tape, AG_ERR_ARG,
                    "ag_cross_entropy_logits: label %lld of row %lld is outside [0, %lld)",
                    (long long)labels[r], (long long)r, (long long)c);
            return -1;
        }
        valid++;
    }
    return valid;
}

ag_tensor *ag_cross_entropy_logits(ag_tape *t, ag_tensor *logits, const int64_t *labels,
                                   int64_t n, const ag_ce_opts *opts)
{
    static const char *op = "ag_cross_entropy_logits";
    ag_ce_opts o = opts ? *opts : (ag_ce_opts){0, -100, AG_REDUCE_MEAN};
    if (!ag_check_inputs(t, op, 1, &logits))
        return NULL;
    char sh[96];
    ag_fmt_shape(sh, sizeof sh, logits->ndim, logits->shape);
    if (logits->ndim < 2)
        return ag_fail(t, AG_ERR_SHAPE, "%s: logits are %s, expected [n, C] or [..., C]", op,
                       sh);
    int64_t rows, c;
    ce_rows(logits, &rows, &c);
    if (n != rows)
        return ag_fail(t, AG_ERR_SHAPE, "%s: logits are %s but n is %lld labels (%lld rows)",
                       op, sh, (long long)n, (long long)rows);
    if (!labels && n > 0)
        return ag_fail(t, AG_ERR_ARG, "%s: labels are NULL", op);
    if (!(o.label_smoothing >= 0 && o.label_smoothing < 1))
        return ag_fail(t, AG_ERR_ARG, "%s: label_smoothing %g is outside [0, 1)", op,
                       o.label_smoothing);
    if (o.reduction != AG_REDUCE_MEAN && o.reduction != AG_REDUCE_SUM &&
        o.reduction != AG_REDUCE_NONE)
        return ag_fail(t, AG_ERR_ARG, "%s: unknown reduction %d", op, (int)o.reduction);
    int64_t valid = ce_check_labels(t, labels, n, c, o.ignore_index);
    if (valid < 0)
        return NULL;

    size_t lab_bytes = (size_t)n * sizeof(int64_t);
    size_t prob_bytes = (size_t)(n * c) * ag_dtype_size(logits->dtype);
    ce_saved *s = ag_arena_alloc(t, sizeof *s + lab_bytes + prob_bytes);
    if (!s)
        return NULL;
    s->labels = (int64_t *)(s + 1);
    s->probs = (unsigned char *)s->labels + lab_bytes;
    if (n > 0)
        memcpy(s->labels, labels, lab_bytes);

    ce_attr a = {o.reduction, valid, o.ignore_index, o.label_smoothing};
    /* NONE: one loss per row, in the leading dims' shape */
    ag_op_call call = {.def = &ag_op_cross_entropy_logits, .in = &logits, .n_in = 1,
                       .dtype = logits->dtype,
                       .ndim = o.reduction == AG_REDUCE_NONE ? logits->ndim - 1 : 0,
                       .shape = logits->shape,
                       .attr = &a, .attr_size = sizeof a, .aux = s};
    return ag_op_run(t, &call);
}

/* ---- dropout ------------------------------------------------------------ */

/* aux: uint8 keep mask [N] drawn at record time.
 *   z = x * keep / (1-p);   dx += g * keep / (1-p) */
typedef struct {
    double scale; /* 1 / (1-p) */
} drop_attr;
#define DROP_LOOPS(T)                                                         \
    static void drop_apply_##T(const T *x, const unsigned char *keep, T *z,   \
                               int64_t n, T scale, bool accumulate)           \
    {                                                                         \
        if (accumulate)                                                       \
            for (int64_t i = 0; i < n; i++)                                   \
                z[i] += keep[i] ? x[i] * scale : 0;                           \
        else                                                                  \
            for (int64_t i = 0; i < n; i++)                                   \
                z[i] = keep[i] ? x[i] * scale : 0;                            \
    }
DROP_LOOPS(float)
DROP_LOOPS(double)

static void drop_forward(ag_entry *e)
{
    int64_t n = e->out->numel;
    double scale = AG_ATTR(e, drop_attr)->scale;
    if (e->out->dtype == AG_F64)
        drop_apply_double(e->in[0]->data, e->aux, e->out->data, n, scale, false);
    else
        drop_apply_float(e->in[0]->data, e->aux, e->out->data, n, (float)scale, false);
}

static void drop_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (!dx)
        return;
    int64_t n = e->out->numel;
    double scale = AG_ATTR(e, drop_attr)->scale;
    if (e->out->dtype == AG_F64)
        drop_apply_double(e->out->grad->data, e->aux, dx, n, scale, true);
    else
        drop_apply_float(e->out->grad->data, e->aux, dx, n, (float)scale, true);
}

typedef struct {
    const unsigned char *keep;
    double scale;
} drop_fill_ctx;

static double drop_mask_at(const void *vc, int64_t i)
{
    const drop_fill_ctx *f = vc;
    return f->keep[i] ? f->scale : 0;
}

/* dx = g * m, m = keep / (1-p) a constant */
static void drop_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    drop_fill_ctx f = {e->aux, AG_ATTR(e, drop_attr)->scale};
    const ag_tensor *x = e->in[0];
    gin[0] = ag_mul(tape, gout, ag_const_fill(tape, x->dtype, x->ndim, x->shape,
                                              drop_mask_at, &f));
}

ag_tensor *ag_dropout(ag_tape *t, ag_tensor *a, double p, bool training, ag_rng *rng)
{
    static const char *op = "ag_dropout";
    if (!ag_check_inputs(t, op, 1, &a))
        return NULL;
    if (!(p >= 0 && p < 1))
        return ag_fail(t, AG_ERR_ARG, "%s: p %g is outside [0, 1)", op, p);
    if (!training || p == 0)
        return a; /* identity: a itself, nothing recorded */
    if (!rng)
        return ag_fail(t, AG_ERR_ARG, "%s: rng is NULL in training with p %g", op, p);
    unsigned char *keep = ag_arena_alloc(t, (size_t)a->numel);
    if (!keep)
        return NULL;
    /* drop when a uniform 53-bit draw u < p */
    uint64_t cut = (uint64_t)ldexp(p, 53);
    for (int64_t i = 0; i < a->numel; i++)
        keep[i] = (ag_rng_next(rng) >> 11) >= cut;
    drop_attr at = {1.0 / (1.0 - p)};
    ag_op_call c = {.def = &ag_op_dropout, .in = &a, .n_in = 1, .dtype = a->dtype,
                    .ndim = a->ndim, .shape = a->shape, .attr = &at,
                    .attr_size = sizeof at, .aux = keep};
    return ag_op_run(t, &c);
}

/* ---- gradcheck samples -------------------------------------------------- */

static const struct {
    int ndim;
    int64_t shape[3];
    int axis;
} sm_cases[] = {
    {2, {3, 5}, -1}, {2, {3, 5}, 0}, {3, {2, 3, 4}, 1}, {1, {6}, 0}, {0, {0}, -1},
};

static ag_tensor *softmax_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    return ag_softmax(t, in[0], (int)((ag_op_sample *)ctx)->iarg[0]);
}

static ag_tensor *log_softmax_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    return ag_log_softmax(t, in[0], (int)((ag_op_sample *)ctx)->iarg[0]);
}

static bool sm_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    if (which >= (int)(sizeof sm_cases / sizeof sm_cases[0]))
        return false;
    s->in[0] = ag_sample_tensor(rng, sm_cases[which].ndim, sm_cases[which].shape,
                                AG_SAMPLE_RANGE, -3, 3);
    s->n_in = 1;
    s->iarg[0] = sm_cases[which].axis;
    return true;
}

static bool softmax_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    s->fn = softmax_apply;
    return sm_sample(which, rng, s);
}

static bool log_softmax_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    s->fn = log_softmax_apply;
    return sm_sample(which, rng, s);
}

/* iarg: [0] rows, [1] classes, [2] reduction, [3] ignore index (or
 * AG_CE_NO_IGNORE); farg: [0] smoothing.  Labels: row r gets (3r + 1) % C,
 * and every third row the ignore index when there is one. */
static ag_tensor *ce_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    int64_t labels[16];
    for (int64_t r = 0; r < s->iarg[0] && r < 16; r++)
        labels[r] = s->iarg[3] != AG_CE_NO_IGNORE && r % 3 == 2 ? s->iarg[3]
                                                                  : (3 * r + 1) % s->iarg[1];
    ag_ce_opts o = {s->farg[0], s->iarg[3], (ag_reduction)s->iarg[2]};
    return ag_cross_entropy_logits(t, in[0], labels, s->iarg[0], &o);
}

static bool ce_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    static const struct {
        int64_t n, c;
        ag_reduction red;
        int64_t ignore;
        double eps;
    } cases[] = {
        {4, 5, AG_REDUCE_MEAN, AG_CE_NO_IGNORE, 0},
        {5, 3, AG_REDUCE_SUM, AG_CE_NO_IGNORE, 0.1},
        {6, 4, AG_REDUCE_NONE, -100, 0.2},
        {6, 4, AG_REDUCE_MEAN, -100, 0.15},
        {1, 7, AG_REDUCE_MEAN, 2, 0},
    };
    if (which >= (int)(sizeof cases / sizeof cases[0]))
        return false;
    int64_t shape[2] = {cases[which].n, cases[which].c};
    s->in[0] = ag_sample_tensor(rng, 2, shape, AG_SAMPLE_RANGE, -3, 3);
    s->n_in = 1;
    s->fn = ce_apply;
    s->iarg[0] = cases[which].n;
    s->iarg[1] = cases[which].c;
    s->iarg[2] = cases[which].red;
    s->iarg[3] = cases[which].ignore;
    s->farg[0] = cases[which].eps;
    return true;
}

/* The mask comes from a generator seeded by iarg[0], so every call of the
 * function draws the same mask (gradcheck evaluates it many times). */
static ag_tensor *dropout_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    ag_rng rng;
    ag_rng_seed(&rng, (uint64_t)s->iarg[0]);
    return ag_dropout(t, in[0], s->farg[0], true, &rng);
}

static bool dropout_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    static const int64_t shapes[][3] = {{2, 4, 5}, {1, 7, 0}};
    static const double ps[] = {0.3, 0.6};
    if (which >= 2)
        return false;
    s->in[0] = ag_sample_tensor(rng, (int)shapes[which][0], shapes[which] + 1,
                                AG_SAMPLE_RANGE, -2, 2);
    s->n_in = 1;
    s->fn = dropout_apply;
    s->iarg[0] = 11 + which;
    s->farg[0] = ps[which];
    return true;
}

const ag_op_def ag_op_softmax = {.name = "softmax", .forward = softmax_forward,
                                 .backward = softmax_backward, .vjp = softmax_vjp,
                                 .sample = softmax_sample};
const ag_op_def ag_op_log_softmax = {.name = "log_softmax", .forward = log_softmax_forward,
                                     .backward = log_softmax_backward,
                                     .vjp = log_softmax_vjp, .sample = log_softmax_sample};
const ag_op_def ag_op_cross_entropy_logits = {.name = "cross_entropy_logits",
                                              .forward = ce_forward, .backward = ce_backward,
                                              .vjp = ce_vjp, .sample = ce_sample};
const ag_op_def ag_op_dropout = {.name = "dropout", .forward = drop_forward,
                                 .backward = drop_backward, .vjp = drop_vjp,
                                 .sample = dropout_sample};
