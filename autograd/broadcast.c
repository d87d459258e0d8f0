/* broadcast.c — NumPy broadcasting: result shapes, strides that repeat a
 * smaller operand, and the reduction that brings a gradient back to it.
 * D = dims of the result, shapes are right-aligned. */
#include "autograd_internal.h"

bool ag_broadcast_shape(ag_tape *tape, const char *op, const ag_tensor *a,
                        const ag_tensor *b, int *ndim, int64_t *shape)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char s1[128], s2[128];
            ag_fail(tape, AG_ERR_SHAPE,
                    "%s: shapes %s and %s do not broadcast (dim %d: %lld vs %lld)", op,
                    ag_shape_str(a, s1, sizeof s1), ag_shape_str(b, s2, sizeof s2), i,
                    (long long)da, (long long)db);
            return false;
        }
        shape[i] = da == 1 ? db : da;
    }
    *ndim = nd;
    return true;
}

void ag_broadcast_strides(const ag_tensor *x, int ndim, const int64_t *shape,
                          int64_t *strides)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        int ix = i - (ndim - x->ndim);
        int64_t d = ix >= 0 ? x->shape[ix] : 1;
        strides[i] = (d == 1 && shape[i] != 1) ? 0 : s;
        if (ix >= 0)
            s *= d;
    }
}

void ag_bcast_walk(int ndim, const int64_t *shape, int n_ops, const int64_t *const *strides,
                   ag_bcast_row row, void *ctx)
{
    int64_t inner = ndim ? shape[ndim - 1] : 1, numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    if (numel == 0)
        return;
    int64_t idx[AG_MAX_DIMS] = {0}, off[4] = {0}, inner_s[4];
    for (int k = 0; k < n_ops; k++)
        inner_s[k] = ndim ? strides[k][ndim - 1] : 0;
    for (int64_t o = 0; o < numel / inner; o++) {
        row(ctx, o * inner, off, inner_s, inner);
        for (int d = ndim - 2; d >= 0; d--) { /* odometer over outer dims */
            idx[d]++;
            for (int k = 0; k < n_ops; k++)
                off[k] += strides[k][d];
            if (idx[d] < shape[d])
                break;
            for (int k = 0; k < n_ops; k++)
                off[k] -= strides[k][d] * shape[d];
            idx[d] = 0;
        }
    }
}

typedef struct {
    void *dst;
    const void *src;
    ag_dtype dt;
} reduce_ctx;

static void reduce_row(void *vctx, int64_t o, const int64_t *off, const int64_t *s, int64_t n)
{
    reduce_ctx *c = vctx;
    if (c->dt == AG_F64) {
        double *d = (double *)c->dst + off[0];
        const double *g = (const double *)c->src + o;
        if (s[0] == 0) {
            double acc = 0;
            for (int64_t i = 0; i < n; i++)
                acc += g[i];
            d[0] += acc;
        } else {
            for (int64_t i = 0; i < n; i++)
                d[i] += g[i];
        }
    } else {
        float *d = (float *)c->dst + off[0];
        const float *g = (const float *)c->src + o;
        if (s[0] == 0) {
            double acc = 0;
            for (int64_t i = 0; i < n; i++)
                acc += g[i];
            d[0] += (float)acc;
        } else {
            for (int64_t i = 0; i < n; i++)
                d[i] += g[i];
        }
    }
}

void ag_reduce_into(void *dst, const ag_tensor *x, const void *src, ag_dtype dt,
                    int ndim, const int64_t *shape)
{
    int64_t sx[AG_MAX_DIMS];
    ag_broadcast_strides(x, ndim, shape, sx);
    const int64_t *strides[1] = {sx};
    reduce_ctx c = {dst, src, dt};
    ag_bcast_walk(ndim, shape, 1, strides, reduce_row, &c);
}

/* ---- sum_to: the reduction that undoes a broadcast, as an op ----
 * z (shape of `like`) = x summed over the dims where like broadcast.  It
 * is the recorded derivative of every broadcasting op, and expand's
 * recorded derivative is it: each is the other's vjp. */

static void sum_to_forward(ag_entry *e)
{
    memset(e->out->data, 0, (size_t)e->out->numel * ag_dtype_size(e->out->dtype));
    ag_reduce_into(e->out->data, e->out, e->in[0]->data, e->out->dtype, e->in[0]->ndim,
                   e->in[0]->shape);
}

typedef struct {
    void *dst;
    const void *g;
    ag_dtype dt;
} expand_ctx;

/* dx[i] += g[broadcast index of i] */
static void expand_add_row(void *vc, int64_t o, const int64_t *off, const int64_t *s,
                           int64_t n)
{
    expand_ctx *c = vc;
    if (c->dt == AG_F64) {
        double *d = (double *)c->dst + o;
        const double *g = (const double *)c->g + off[0];
        for (int64_t i = 0; i < n; i++)
            d[i] += g[i * s[0]];
    } else {
        float *d = (float *)c->dst + o;
        const float *g = (const float *)c->g + off[0];
        for (int64_t i = 0; i < n; i++)
            d[i] += g[i * s[0]];
    }
}

static void sum_to_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (!dx)
        return;
    const ag_tensor *x = e->in[0];
    int64_t sg[AG_MAX_DIMS];
    ag_broadcast_strides(e->out, x->ndim, x->shape, sg);
    const int64_t *st[1] = {sg};
    expand_ctx c = {dx, e->out->grad->data, x->dtype};
    ag_bcast_walk(x->ndim, x->shape, 1, st, expand_add_row, &c);
}

/* dx = expand(g, shape of x) */
static void sum_to_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    gin[0] = ag_expand(tape, gout, e->in[0]->ndim, e->in[0]->shape);
}

static ag_tensor *sum_to_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    const ag_op_sample *s = ctx;
    ag_tensor like = {.ndim = (int)s->iarg[0], .dtype = in[0]->dtype};
    for (int i = 0; i < like.ndim; i++)
        like.shape[i] = s->iarg[1 + i];
    return ag_sum_to(t, in[0], &like);
}

static bool sum_to_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    static const int64_t cases[][2][4] = {
        /* ndim x, dims x...     ndim like, dims like... */
        {{3, 2, 3, 4}, {2, 3, 1}},
        {{3, 2, 3, 4}, {0}},
        {{2, 3, 4}, {1, 4}},
        {{3, 2, 1, 3}, {3, 1, 1, 3}},
    };
    if (which >= (int)(sizeof cases / sizeof cases[0]))
        return false;
    const int64_t *x = cases[which][0], *like = cases[which][1];
    s->in[0] = ag_sample_tensor(rng, (int)x[0], x + 1, AG_SAMPLE_RANGE, -2, 2);
    s->n_in = 1;
    s->fn = sum_to_apply;
    for (int i = 0; i <= like[0]; i++)
        s->iarg[i] = like[i];
    return true;
}

const ag_op_def ag_op_sum_to = {.name = "sum_to", .forward = sum_to_forward,
                                .backward = sum_to_backward, .vjp = sum_to_vjp,
                                .sample = sum_to_sample};

ag_tensor *ag_sum_to(ag_tape *tape, ag_tensor *g, const ag_tensor *like)
{
    if (!ag_check_inputs(tape, "sum_to", 1, &g))
        return NULL;
    if (ag_same_shape(g, like))
        return g;
    /* like must broadcast to g's shape: every dim of like is 1 or g's */
    bool ok = like->ndim <= g->ndim;
    for (int i = 0; ok && i < like->ndim; i++) {
        int64_t dl = like->shape[like->ndim - 1 - i], dg = g->shape[g->ndim - 1 - i];
        ok = dl == dg || dl == 1;
    }
    if (!ok) {
        char b1[128], b2[128];
        return ag_fail(tape, AG_ERR_SHAPE, "sum_to: %s does not broadcast to %s",
                       ag_shape_str(like, b1, sizeof b1), ag_shape_str(g, b2, sizeof b2));
    }
    ag_op_call c = {.def = &ag_op_sum_to, .in = &g, .n_in = 1, .dtype = g->dtype,
                    .ndim = like->ndim, .shape = like->shape};
    return ag_op_run(tape, &c);
}
