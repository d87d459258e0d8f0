/* ops_norm.c — layer normalization over the last dim, fused: the
 * composition (mean, subtract, square, mean, add, sqrt, divide, then the
 * affine product and sum) recorded nine ops whose broadcast backward
 * reductions took about 15% of a charlm GPT training step (perf, one
 * thread); here it is one op that keeps each row's mean and 1/std, and the
 * step went from 70.1 to 61.6 ms of CPU (before the loops below were
 * vectorised and cut for the pool: 2.3% of the step is left).
 * Legend: R = rows (every dim but the last), D = the last dim; xh = (x -
 * mean) * rstd, rstd = 1 / sqrt(var + eps) with the biased variance; g =
 * dL/dy.  y = xh * w + b (w, b [D], each optional). */
#include "autograd_internal.h"

#include <math.h>


typedef struct {
    double eps;
    bool has_w, has_b;   /* inputs: x, then w and b when present */
} ln_attr;

/* stat: (R, 2) doubles, each row's mean and rstd.  Sums run in T (a row
 * is short, and the loops then vectorise); a missing w or b is read as
 * ones or zeros (aux), so the loops carry no branch.  Rows [lo, hi). */
#define LN_LOOPS(T)                                                             \
    static void ln_fwd_##T(const T *x, const T *w, const T *b, T *y, double *stat, \
                           int64_t lo, int64_t hi, int64_t D, double eps)      \
    {                                                                           \
        for (int64_t r = lo; r < hi; r++) {                                     \
            const T *xr = x + r * D;                                            \
            T *yr = y + r * D, sum = 0, sq = 0;                                 \
            AG_SIMD_REDUCE(+, sum) for (int64_t j = 0; j < D; j++) sum += xr[j];      \
            T m = sum / (T)D;                                                   \
            AG_SIMD_REDUCE(+, sq) for (int64_t j = 0; j < D; j++) sq += (xr[j] - m) * (xr[j] - m); \
            T s = (T)(1.0 / sqrt((double)sq / (double)D + eps));                \
            stat[2 * r] = (double)m;                                            \
            stat[2 * r + 1] = (double)s;                                        \
            AG_SIMD for (int64_t j = 0; j < D; j++) yr[j] = (xr[j] - m) * s * w[j] + b[j]; \
        }                                                                       \
    }                                                                           \
    /* gw = g w;  dx += rstd (gw - mean(gw) - xh mean(gw xh));                  \
     * pw += sum_rows g xh;  pb += sum_rows g  (pw, pb: this chunk's partial    \
     * sums of dw, db) */                                                       \
    static void ln_bwd_##T(const T *x, const T *w, const T *g, const double *stat, T *dx, \
                           T *pw, T *pb, int64_t lo, int64_t hi, int64_t D)    \
    {                                                                           \
        for (int64_t r = lo; r < hi; r++) {                                     \
            const T *xr = x + r * D, *gr = g + r * D;                           \
            T m = (T)stat[2 * r], s = (T)stat[2 * r + 1], a = 0, c = 0;         \
            AG_SIMD_REDUCE(+, a, c) for (int64_t j = 0; j < D; j++) {                 \
                T xh = (xr[j] - m) * s, gw = gr[j] * w[j];                      \
                a += gw;                                                        \
                c += gw * xh;                                                   \
                pw[j] += gr[j] * xh;                                            \
                pb[j] += gr[j];                                                 \
            }                                                                   \
            T am = a / (T)D, cm = c / (T)D, *dr = dx + r * D;                   \
            AG_SIMD for (int64_t j = 0; j < D; j++)                             \
                dr[j] += s * (gr[j] * w[j] - am - (xr[j] - m) * s * cm);        \
        }                                                                       \
    }                                                                           \
    /* d[j] += sum over the k partials p[k][j] (2D apart), in chunk order */    \
    static void ln_add_partials_##T(T *d, const T *p, int64_t k, int64_t D)     \
    {                                                                           \
        for (int64_t c = 0; c < k; c++)                                         \
            AG_SIMD for (int64_t j = 0; j < D; j++) d[j] += p[c * 2 * D + j];   \
    }
LN_LOOPS(float)
LN_LOOPS(double)

/* One call's pointers, for the pool: rows cut in chunks of `rows`, so a
 * chunk's partial sums (backward) sit at part + (lo / rows) * 2D and are
 * added in chunk order: the same bits for any thread count. */
typedef struct {
    ag_dtype dt;
    const void *x, *w, *b, *g;
    void *y, *dx, *part;
    double *stat;
    int64_t D, rows;
    double eps;
} ln_job;

static void ln_fwd_rows(void *vj, int64_t lo, int64_t hi)
{
    const ln_job *j = vj;
    if (j->dt == AG_F64)
        ln_fwd_double(j->x, j->w, j->b, j->y, j->stat, lo, hi, j->D, j->eps);
    else
        ln_fwd_float(j->x, j->w, j->b, j->y, j->stat, lo, hi, j->D, j->eps);
}

static void ln_bwd_rows(void *vj, int64_t lo, int64_t hi)
{
    const ln_job *j = vj;
    size_t at = (size_t)(lo / j->rows * 2 * j->D);
    if (j->dt == AG_F64) {
        double *p = (double *)j->part + at;
        ln_bwd_double(j->x, j->w, j->g, j->stat, j->dx, p, p + j->D, lo, hi, j->D);
    } else {
        float *p = (float *)j->part + at;
        ln_bwd_float(j->x, j->w, j->g, j->stat, j->dx, p, p + j->D, lo, hi, j->D);
    }
}

/* Rows per chunk: about AG_PAR_CHUNK elements; one chunk (run here) below
 * AG_PAR_MIN elements in all. */
static int64_t chunk_rows(int64_t R, int64_t D)
{
    if (R * D < AG_PAR_MIN)
        return R > 0 ? R : 1;
    return AG_PAR_CHUNK / D > 0 ? AG_PAR_CHUNK / D : 1;
}

static void ln_run(ln_job *j, int64_t R, ag_parallel_fn fn)
{
    if (j->rows >= R)
        fn(j, 0, R);
    else
        ag_parallel_for(R, j->rows, fn, j);
}

/* x, w, b of an entry (w, b NULL when absent). */
static void ln_inputs(const ag_entry *e, ag_tensor **x, ag_tensor **w, ag_tensor **b)
{
    const ln_attr *a = AG_ATTR(e, ln_attr);
    *x = e->in[0];
    *w = a->has_w ? e->in[1] : NULL;
    *b = a->has_b ? e->in[1 + a->has_w] : NULL;
}

/* aux: the (R, 2) statistics, then D ones and D zeros of x's dtype, read
 * in place of a missing w or b. */
typedef struct {
    double *stat;
    void *one, *zero;
} ln_aux;

static ln_aux aux_of(const ag_entry *e, int64_t R, int64_t D)
{
    double *stat = e->aux;
    size_t es = ag_dtype_size(e->out->dtype);
    unsigned char *one = (unsigned char *)(stat + 2 * R);
    return (ln_aux){stat, one, one + (size_t)D * es};
}

static void ln_forward(ag_entry *e)
{
    ag_tensor *x, *w, *b;
    ln_inputs(e, &x, &w, &b);
    int64_t D = x->shape[x->ndim - 1], R = D ? x->numel / D : 0;
    ln_aux a = aux_of(e, R, D);
    ln_job j = {.dt = x->dtype, .x = x->data, .w = w ? w->data : a.one,
                .b = b ? b->data : a.zero, .y = e->out->data, .stat = a.stat, .D = D,
                .rows = chunk_rows(R, D), .eps = AG_ATTR(e, ln_attr)->eps};
    ln_run(&j, R, ln_fwd_rows);
}

/* Room for n elements of a gradient nobody wants (the kernel writes it). */
static void *scratch(ag_tape *t, void *grad, int64_t n, ag_dtype dt)
{
    return grad ? grad : ag_arena_alloc(t, (size_t)n * ag_dtype_size(dt));
}

static void ln_backward(ag_tape *tape, ag_entry *e)
{
    ag_tensor *x, *w, *b;
    ln_inputs(e, &x, &w, &b);
    int64_t D = x->shape[x->ndim - 1], R = D ? x->numel / D : 0;
    ln_aux a = aux_of(e, R, D);
    int64_t rows = chunk_rows(R, D), k = (R + rows - 1) / rows;
    size_t es = ag_dtype_size(x->dtype);
    void *dx = scratch(tape, ag_grad_data(tape, x), x->numel, x->dtype);
    void *dw = w ? ag_grad_data(tape, w) : NULL, *db = b ? ag_grad_data(tape, b) : NULL;
    void *part = ag_arena_calloc(tape, (size_t)(2 * k * D) * es + 1);   /* (k, 2, D) */
    if (!dx || !part)
        return;
    ln_job j = {.dt = x->dtype, .x = x->data, .w = w ? w->data : a.one, .g = e->out->grad->data,
                .dx = dx, .part = part, .stat = a.stat, .D = D, .rows = rows};
    ln_run(&j, R, ln_bwd_rows);
    for (int q = 0; q < 2; q++) {   /* dw, then db: the partials in chunk order */
        void *d = q ? db : dw;
        if (!d)
            continue;
        if (x->dtype == AG_F64)
            ln_add_partials_double(d, (const double *)part + q * D, k, D);
        else
            ln_add_partials_float(d, (const float *)part + q * D, k, D);
    }
}

/* The same math in ops, xh and rstd recomputed from x:
 * dx = rstd (gw - mean(gw) - xh mean(gw xh)), dw = sum_to(g xh), db = sum_to(g). */
static void ln_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    ag_tensor *x, *w, *b;
    ln_inputs(e, &x, &w, &b);
    ag_tensor *xc = ag_sub(tape, x, ag_mean(tape, x, -1, true));
    ag_tensor *var = ag_mean(tape, ag_mul(tape, xc, xc), -1, true);
    ag_tensor *rs = ag_pow_scalar(tape, ag_add_scalar(tape, var, AG_ATTR(e, ln_attr)->eps), -0.5);
    ag_tensor *xh = ag_mul(tape, xc, rs);
    if (ag_needs_grad(tape, x)) {
        ag_tensor *gw = w ? ag_mul(tape, gout, w) : gout;
        ag_tensor *c = ag_mean(tape, ag_mul(tape, gw, xh), -1, true);
        ag_tensor *d = ag_sub(tape, ag_sub(tape, gw, ag_mean(tape, gw, -1, true)),
                              ag_mul(tape, xh, c));
        gin[0] = ag_mul(tape, rs, d);
    }
    if (w && ag_needs_grad(tape, w))
        gin[1] = ag_sum_to(tape, ag_mul(tape, gout, xh), w);
    if (b && ag_needs_grad(tape, b))
        gin[1 + (w != NULL)] = ag_sum_to(tape, gout, b);
}

/* w or b: NULL or [D] of x's dtype. */
static bool affine_ok(ag_tape *t, const char *name, const ag_tensor *p, const ag_tensor *x)
{
    if (!p)
        return true;
    int64_t D = x->shape[x->ndim - 1];
    if (p->ndim != 1 || p->shape[0] != D) {
        char a[128], b[128];
        ag_fail(t, AG_ERR_SHAPE, "ag_layer_norm: %s is %s but x is %s (needs [%lld])", name,
                ag_shape_str(p, a, sizeof a), ag_shape_str(x, b, sizeof b), (long long)D);
        return false;
    }
    return ag_check_same_dtype(t, "ag_layer_norm", x, p);
}

ag_tensor *ag_layer_norm(ag_tape *t, ag_tensor *x, ag_tensor *w, ag_tensor *b, double eps)
{
    static const char *fn = "ag_layer_norm";
    ag_tensor *in[3] = {x, w, b};
    int n = 1;
    if (!ag_check_inputs(t, fn, 1, in))
        return NULL;
    if (x->ndim < 1)
        return ag_fail(t, AG_ERR_SHAPE, "%s: x is 0-d (it needs a last dim to normalize)", fn);
    if (!(eps >= 0 && isfinite(eps)))
        return ag_fail(t, AG_ERR_ARG, "%s: eps = %g must be finite and >= 0", fn, eps);
    if ((w && !ag_check_inputs(t, fn, 1, &w)) || (b && !ag_check_inputs(t, fn, 1, &b)) ||
        !affine_ok(t, "w", w, x) || !affine_ok(t, "b", b, x))
        return NULL;
    if (w)
        in[n++] = w;
    if (b)
        in[n++] = b;
    int64_t D = x->shape[x->ndim - 1], R = D ? x->numel / D : 0;
    size_t es = ag_dtype_size(x->dtype);
    double *stat = ag_arena_alloc(t, (size_t)(2 * R) * sizeof *stat + (size_t)(2 * D) * es + 1);
    if (!stat)
        return NULL;
    unsigned char *one = (unsigned char *)(stat + 2 * R);
    for (int64_t j = 0; j < D; j++) {   /* ones, then zeros */
        if (x->dtype == AG_F64) {
            ((double *)one)[j] = 1;
            ((double *)one)[D + j] = 0;
        } else {
            ((float *)one)[j] = 1;
            ((float *)one)[D + j] = 0;
        }
    }
    ln_attr a = {.eps = eps, .has_w = w != NULL, .has_b = b != NULL};
    ag_op_call c = {.def = &ag_op_layer_norm, .in = in, .n_in = n, .dtype = x->dtype,
                    .ndim = x->ndim, .shape = x->shape, .attr = &a, .attr_size = sizeof a,
                    .aux = stat};
    return ag_op_run(t, &c);
}

/* ---- samples: with and without the affine part ---- */

static ag_tensor *ln_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    const ag_op_sample *s = ctx;
    bool hw = s->iarg[0], hb = s->iarg[1];
    return ag_layer_norm(t, in[0], hw ? in[1] : NULL, hb ? in[1 + hw] : NULL, s->farg[0]);
}

static bool ln_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    static const int64_t shapes[][4] = {{2, 3, 5}, {3, 2, 2, 4}, {1, 6}, {2, 4, 1}};
    static const bool aff[][2] = {{true, true}, {true, true}, {false, false}, {true, false}};
    if (which >= 4)
        return false;
    int nd = (int)shapes[which][0];
    int64_t D = shapes[which][nd];
    s->in[0] = ag_sample_tensor(rng, nd, shapes[which] + 1, AG_SAMPLE_RANGE, -2, 2);
    s->n_in = 1;
    for (int k = 0; k < 2; k++)
        if (aff[which][k])
            s->in[s->n_in++] = ag_sample_tensor(rng, 1, &D, AG_SAMPLE_RANGE, 0.5, 1.5);
    s->iarg[0] = aff[which][0];
    s->iarg[1] = aff[which][1];
    s->farg[0] = which == 3 ? 0.1 : 1e-5;   /* D = 1: only eps keeps rstd finite */
    s->fn = ln_apply;
    return true;
}

const ag_op_def ag_op_layer_norm = {.name = "layer_norm", .forward = ln_forward,
                                    .backward = ln_backward, .vjp = ln_vjp,
                                    .sample = ln_sample};
