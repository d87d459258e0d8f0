/* ops_table.c — the op table: every primitive op, by id.  The tape
 * replays it, the graph printer names from it, the test suite walks it. */
#include "autograd_internal.h"

const ag_op_def *const ag_op_table[] = {
#define AG_OP(id, def) [AG_OP_##id] = &def,
#include "ops_list.h"
#undef AG_OP
};

/* Every id has a row: a missing line in ops_list.h cannot compile. */
_Static_assert(sizeof ag_op_table / sizeof ag_op_table[0] == AG_OP_COUNT,
               "op table length differs from the op count");

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
