/* ops_reduce.c — sum and mean over one axis or all elements.
 * An axis reduction views the input as (O, K, I): O = product of the dims
 * before the axis, K = the axis, I = product of the dims after it. */
#include "autograd_internal.h"

typedef ag_axis_view red_view;

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

/* iattr: [0] axis (-1 for all), [1] keepdim, [2] 1 for mean */
static red_view view_of(const ag_entry *e)
{
    return ag_axis_view_of(e->in[0], (int)e->iattr[0]);
}

/* Typed loops: double accumulators (f32 sums too), rows of the inner dim
 * walked contiguously. */
#define SUM_LOOPS(T)                                                          \
    static void sum_fwd_##T(const T *a, T *z, red_view v, double scale)        \
    {                                                                         \
        for (int64_t o = 0; o < v.outer; o++) {                               \
            const T *ao = a + o * v.k * v.inner;                              \
            T *zo = z + o * v.inner;                                          \
            if (v.inner == 1) { /* 8 partial sums: no add-latency chain */    \
                double acc[8] = {0};                                          \
                int64_t k = 0;                                                \
                for (; k + 8 <= v.k; k += 8)                                  \
                    for (int j = 0; j < 8; j++)                               \
                        acc[j] += ao[k + j];                                  \
                for (; k < v.k; k++)                                          \
                    acc[0] += ao[k];                                          \
                double sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) +        \
                             ((acc[4] + acc[5]) + (acc[6] + acc[7]));         \
                zo[0] = (T)(sum * scale);                                     \
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
    static void sum_bwd_##T(const T *g, T *dx, red_view v, double scale)       \
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

static void sum_forward(ag_entry *e)
{
    red_view v = view_of(e);
    double scale = e->iattr[2] ? 1.0 / (double)v.k : 1.0;
    if (e->out->dtype == AG_F64)
        sum_fwd_double(e->in[0]->data, e->out->data, v, scale);
    else
        sum_fwd_float(e->in[0]->data, e->out->data, v, scale);
}

static void sum_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (!dx)
        return;
    red_view v = view_of(e);
    double scale = e->iattr[2] ? 1.0 / (double)v.k : 1.0;
    if (e->out->dtype == AG_F64)
        sum_bwd_double(e->out->grad->data, dx, v, scale);
    else
        sum_bwd_float(e->out->grad->data, dx, v, scale);
}

static ag_tensor *reduce_run(ag_tape *tape, const ag_op_def *def, ag_tensor *a, int axis,
                             bool keepdim, bool mean)
{
    if (!ag_check_inputs(tape, def->name, 1, &a))
        return NULL;
    int64_t shape[AG_MAX_DIMS];
    int nd = 0;
    if (axis == AG_ALL) {
        for (int i = 0; keepdim && i < a->ndim; i++)
            shape[nd++] = 1;
        axis = -1;
    } else {
        if (!ag_check_axis(tape, def->name, a->ndim, &axis))
            return NULL;
        for (int i = 0; i < a->ndim; i++)
            if (i != axis)
                shape[nd++] = a->shape[i];
            else if (keepdim)
                shape[nd++] = 1;
    }
    if (mean && (axis < 0 ? a->numel : a->shape[axis]) == 0)
        return ag_fail(tape, AG_ERR_SHAPE, "%s: mean over an empty axis", def->name);
    ag_op_call c = {.def = def, .in = &a, .n_in = 1, .dtype = a->dtype, .ndim = nd,
                    .shape = shape, .iattr = {axis, keepdim, mean}};
    return ag_op_run(tape, &c);
}

ag_tensor *ag_sum(ag_tape *t, ag_tensor *a, int axis, bool keepdim)
{
    return reduce_run(t, &ag_op_sum, a, axis, keepdim, false);
}

ag_tensor *ag_mean(ag_tape *t, ag_tensor *a, int axis, bool keepdim)
{
    return reduce_run(t, &ag_op_mean, a, axis, keepdim, true);
}

/* ---- samples: every axis form, keepdim on and off ---- */

static const struct {
    int ndim;
    int64_t shape[3];
    int axis;
    bool keepdim;
} red_cases[] = {
    {2, {3, 4}, 0, false},  {2, {3, 4}, 1, true},    {3, {2, 3, 4}, -1, false},
    {3, {2, 3, 4}, 1, true}, {3, {2, 1, 3}, AG_ALL, false}, {2, {2, 3}, AG_ALL, true},
    {1, {5}, 0, false},
};

static ag_tensor *sum_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    return ag_sum(t, in[0], (int)s->iarg[0], s->iarg[1]);
}

static ag_tensor *mean_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    return ag_mean(t, in[0], (int)s->iarg[0], s->iarg[1]);
}

static bool red_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    if (which >= (int)(sizeof red_cases / sizeof red_cases[0]))
        return false;
    s->in[0] = ag_sample_tensor(rng, red_cases[which].ndim, red_cases[which].shape,
                                AG_SAMPLE_RANGE, -2, 2);
    s->n_in = 1;
    s->iarg[0] = red_cases[which].axis;
    s->iarg[1] = red_cases[which].keepdim;
    return true;
}

static bool sum_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    s->fn = sum_apply;
    return red_sample(which, rng, s);
}

static bool mean_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    s->fn = mean_apply;
    return red_sample(which, rng, s);
}

const ag_op_def ag_op_sum = {"sum", 1, sum_forward, sum_backward, sum_sample};
const ag_op_def ag_op_mean = {"mean", 1, sum_forward, sum_backward, mean_sample};
