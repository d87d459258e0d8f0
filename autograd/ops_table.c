/* ops_table.c — the op table: every primitive op, by id.  Entries point
 * at their row; the graph printer and profiler name ops from it, and the
 * test suite walks it (gradcheck, gradgradcheck, recorded == fast). */
#include "autograd_internal.h"

const ag_op_def *const ag_op_table[] = {
#define AG_OP(id, def) [AG_OP_##id] = &def,
#include "ops_list.h"
#undef AG_OP
};

ag_tensor *ag_sample_tensor(ag_rng *rng, int ndim, const int64_t *shape,
                            ag_sample_mode mode, double lo, double hi)
{
    ag_tensor *t = ag_tensor_new(AG_F64, ndim, shape);
    if (!t)
        return NULL;
    double *d = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        double u = lo + (hi - lo) * ag_rng_uniform(rng);
        d[i] = mode == AG_SAMPLE_SIGNED && (ag_rng_next(rng) & 1) ? -u : u;
    }
    t->requires_grad = true;
    return t;
}
