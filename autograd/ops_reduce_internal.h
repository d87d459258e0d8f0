/* ops_reduce_internal.h — what the two reduction files share:
 * ops_reduce.c (sum, mean, logsumexp, variance) and ops_reduce_extreme.c
 * (max, min, argmax).  Their typed attributes, the checks that plan a
 * reduction, the keepdim form a recorded derivative broadcasts from, and
 * the sample cases.  Every reduction views its input as (O, K, I) around
 * the axis (ag_axis_view_of): O = dims before, K = the axis, I = dims
 * after; the output is (O, I). */
#ifndef TAPEGRAD_OPS_REDUCE_INTERNAL_H
#define TAPEGRAD_OPS_REDUCE_INTERNAL_H

#include "autograd_internal.h"

/* The attributes of every reduction row. */
typedef struct ag_reduce_attr {
    int axis;        /* normalised into [0, ndim); -1: every element */
    bool keepdim;
    int correction;  /* variance only: divide by K - correction */
} ag_reduce_attr;

static inline const ag_reduce_attr *ag_reduce_attr_of(const ag_entry *e)
{
    return AG_ATTR(e, ag_reduce_attr);
}

static inline ag_axis_view ag_reduce_view(const ag_entry *e)
{
    return ag_axis_view_of(e->in[0], ag_reduce_attr_of(e)->axis);
}

/* Calls fn_double or fn_float by dtype dt (the kernels come in both, from
 * one macro); void * data arguments convert to either. */
#define AG_REDUCE_TYPED(dt, fn, ...)                                          \
    do {                                                                      \
        if ((dt) == AG_F64)                                                   \
            fn##_double(__VA_ARGS__);                                         \
        else                                                                  \
            fn##_float(__VA_ARGS__);                                          \
    } while (0)

/* A checked reduction call: attributes, view, output shape. */
typedef struct ag_reduce_plan {
    ag_reduce_attr attr;
    ag_axis_view v;
    int user_axis;   /* as the caller gave it, for messages */
    int ndim;
    int64_t shape[AG_MAX_DIMS];
} ag_reduce_plan;

/* Checks input a and axis (AG_ALL: every element) of the public function
 * fn and fills p.  nonempty: reducing zero elements is AG_ERR_SHAPE (max,
 * mean, ...).  false with the error kept on the tape. */
bool ag_reduce_plan_of(ag_tape *tape, const char *fn, ag_tensor *a, int axis, bool keepdim,
                       bool nonempty, ag_reduce_plan *p);
/* Runs row def on a as planned, with aux_bytes of zeroed saved memory. */
ag_tensor *ag_reduce_run(ag_tape *tape, const ag_op_def *def, ag_tensor *a,
                         const ag_reduce_plan *p, size_t aux_bytes);
/* t, shaped like e->out, reshaped to keepdim form (the reduced axis kept
 * with size 1, every dim for all elements) so that it broadcasts against
 * e->in[0].  Recorded. */
ag_tensor *ag_reduce_keepdim(ag_tape *tape, const ag_entry *e, ag_tensor *t);

/* Sample case `which` of every reduction: in[0] uniform in [lo, hi], iarg
 * = {axis, keepdim, correction}, applied by fn.  false past the last. */
bool ag_reduce_sample(int which, ag_rng *rng, ag_op_sample *s, ag_gradcheck_fn fn,
                      double lo, double hi);

#endif
