/* ops_shape_internal.h — what ops_shape.c and ops_slice.c share: the
 * strided mover (a "walk", described in ops_shape.c) and small checks. */
#ifndef TAPEGRAD_OPS_SHAPE_INTERNAL_H
#define TAPEGRAD_OPS_SHAPE_INTERNAL_H

#include "autograd_internal.h"

/* Room for "[d0,...,d7]" with 64-bit dims. */
#define AG_SHAPE_BUF 192

/* Dims outermost first: size n[i], element stride sx[i] on the input side,
 * sy[i] on the output side; x0, y0 are base offsets.  Start from {0}. */
typedef struct ag_walk {
    int nd;
    bool empty;  /* some dim has size 0: nothing to move */
    int64_t n[AG_MAX_DIMS], sx[AG_MAX_DIMS], sy[AG_MAX_DIMS];
    int64_t x0, y0;
} ag_walk;

/* Appends a dim (size-1 dims vanish; a dim contiguous with the previous one
 * on both sides merges into it). */
void ag_walk_dim(ag_walk *w, int64_t n, int64_t sx, int64_t sy);
/* y[...] = x[...] along the walk (x and y share y's dtype). */
void ag_walk_forward(const ag_walk *w, const ag_tensor *x, ag_tensor *y);
/* dx[...] += gy[...] along the walk (dx in gy's dtype). */
void ag_walk_backward(const ag_walk *w, void *dx, const ag_tensor *gy);
/* Row-major element strides of a contiguous shape. */
void ag_contig_strides(int nd, const int64_t *shape, int64_t *st);

/* The forward and fast backward of an op that is one walk: z = x along
 * it (after PRE(e)), dx += g along it. */
#define AG_WALK_OP(NAME, PRE)                                                    \
    static void NAME##_forward(ag_entry *e)                                   \
    {                                                                         \
        PRE(e);                                                               \
        ag_walk w;                                                            \
        NAME##_walk(e, &w);                                                   \
        ag_walk_forward(&w, e->in[0], e->out);                                \
    }                                                                         \
    static void NAME##_backward(ag_tape *tape, ag_entry *e)                   \
    {                                                                         \
        void *dx = ag_grad_data(tape, e->in[0]);                              \
        if (!dx)                                                              \
            return;                                                           \
        ag_walk w;                                                            \
        NAME##_walk(e, &w);                                                   \
        ag_walk_backward(&w, dx, e->out->grad);                               \
    }
#define AG_WALK_NO_PRE(e) ((void)(e))

/* AG_ERR_SHAPE naming op unless (nd, shape) can be a result: nd <= 8 and
 * the element count in range. */
bool ag_shape_result_ok(ag_tape *tape, const char *op, int nd, const int64_t *shape);
/* ag_check_axis, except that a 0-d tensor takes axis 0 or -1 (as torch). */
bool ag_shape_axis0(ag_tape *tape, const char *op, int ndim, int *axis);
/* A sample input: persistent f64, values in [-2, 2], requires grad. */
ag_tensor *ag_shape_sample_in(ag_rng *rng, int nd, const int64_t *shape);

#endif
