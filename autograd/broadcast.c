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
