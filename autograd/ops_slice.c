/* ops_slice.c — shape ops that cut and join along axes: slice and its
 * adjoint unslice (a scatter into zeros), constant pad, concat and stack.
 * Each is a walk of the strided mover (ops_shape.c): forward copies the
 * input's elements to their place in the output, the fast backward adds
 * the output gradient at those places back into the input's.  Their
 * recorded derivatives are the same ops again: slice and unslice are each
 * other's vjp (as expand and sum_to), pad's is a slice per padded dim,
 * concat's a slice per input, stack's a slice and a squeeze per input.
 * D = ndim, K = size of the sliced / joined axis, M = elements taken. */
#include "ops_shape_internal.h"

/* ---- slice, unslice: elements start, start + step, ... along axis ----
 * slice takes M of them from x of K (big: the input); unslice puts the M
 * of x at those places in zeros of K (big: the output). */

typedef struct {
    int axis;
    int64_t start, step;  /* normalised: start in [0, K]; step 1 when M <= 1 */
} slice_attr;

/* Element strides of big seen from the index of the M-element side: its
 * own, times step on the axis; *base: the place of element 0 in big.
 * (step is 1 unless M > 1, so stride * step stays below big's numel.) */
static void slice_strides(const ag_tensor *big, const slice_attr *a, int64_t *st,
                          int64_t *base)
{
    ag_contig_strides(big->ndim, big->shape, st);
    *base = a->start * st[a->axis];
    st[a->axis] *= a->step;
}

/* x: the input (big), y: the output (M along the axis) */
static void slice_walk(const ag_entry *e, ag_walk *w)
{
    const ag_tensor *z = e->out;
    int64_t sa[AG_MAX_DIMS], sz[AG_MAX_DIMS], base;
    slice_strides(e->in[0], AG_ATTR(e, slice_attr), sa, &base);
    ag_contig_strides(z->ndim, z->shape, sz);
    *w = (ag_walk){.x0 = base};
    for (int i = 0; i < z->ndim; i++)
        ag_walk_dim(w, z->shape[i], sa[i], sz[i]);
}

/* x: the input (M along the axis), y: the output (big) */
static void unslice_walk(const ag_entry *e, ag_walk *w)
{
    const ag_tensor *a = e->in[0];
    int64_t sa[AG_MAX_DIMS], sz[AG_MAX_DIMS], base;
    ag_contig_strides(a->ndim, a->shape, sa);
    slice_strides(e->out, AG_ATTR(e, slice_attr), sz, &base);
    *w = (ag_walk){.y0 = base};
    for (int i = 0; i < a->ndim; i++)
        ag_walk_dim(w, a->shape[i], sa[i], sz[i]);
}

static void zero_fill(ag_entry *e)
{
    memset(e->out->data, 0, (size_t)e->out->numel * ag_dtype_size(e->out->dtype));
}

/* slice: dx[.., start + m*step, ..] += g[.., m, ..]; other elements get 0 */
AG_WALK_OP(slice, AG_WALK_NO_PRE)
/* unslice: z is 0 but at the M places; dx[.., m, ..] += g[.., start + m*step, ..] */
AG_WALK_OP(unslice, zero_fill)

/* dx = unslice(g, axis, K, start, step) */
static void slice_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const slice_attr *a = AG_ATTR(e, slice_attr);
    gin[0] = ag_unslice(tape, gout, a->axis, e->in[0]->shape[a->axis], a->start, a->step);
}

/* dx = slice(g, axis, start, start + (M-1)*step + 1, step) */
static void unslice_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const slice_attr *a = AG_ATTR(e, slice_attr);
    int64_t m = e->in[0]->shape[a->axis];
    int64_t stop = m > 0 ? a->start + (m - 1) * a->step + 1 : a->start;
    gin[0] = ag_slice(tape, gout, a->axis, a->start, stop, a->step);
}

/* Records def (slice or unslice, called as fn) on a, its axis resized to
 * n, taking m elements from start by step. */
static ag_tensor *slice_run(ag_tape *t, const char *fn, const ag_op_def *def, ag_tensor *a,
                            int axis, int64_t n, int64_t start, int64_t m, int64_t step)
{
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[axis] = n;
    if (!ag_shape_result_ok(t, fn, a->ndim, shape))
        return NULL;
    slice_attr at = {axis, start, m > 1 ? step : 1};
    ag_op_call c = {.def = def, .in = &a, .n_in = 1, .dtype = a->dtype, .ndim = a->ndim,
                    .shape = shape, .attr = &at, .attr_size = sizeof at};
    return ag_op_run(t, &c);
}

ag_tensor *ag_slice(ag_tape *t, ag_tensor *a, int axis, int64_t start, int64_t stop,
                    int64_t step)
{
    int ax = axis;
    if (!ag_check_inputs(t, "ag_slice", 1, &a) || !ag_check_axis(t, "ag_slice", a->ndim, &ax))
        return NULL;
    if (step < 1)
        return ag_fail(t, AG_ERR_ARG, "ag_slice: step %lld must be >= 1", (long long)step);
    int64_t k = a->shape[ax];
    int64_t s0 = start < 0 ? start + k : start, s1 = stop < 0 ? stop + k : stop;
    if (s0 < 0 || s0 > k || s1 < 0 || s1 > k) {
        char b[AG_SHAPE_BUF];
        return ag_fail(t, AG_ERR_ARG,
                       "ag_slice: start %lld, stop %lld out of range for axis %d of %s "
                       "(size %lld; allowed -%lld to %lld)", (long long)start,
                       (long long)stop, axis, ag_shape_str(a, b, sizeof b), (long long)k,
                       (long long)k, (long long)k);
    }
    int64_t m = s1 > s0 ? (s1 - s0 - 1) / step + 1 : 0;
    return slice_run(t, "ag_slice", &ag_op_slice, a, ax, m, s0, m, step);
}

ag_tensor *ag_unslice(ag_tape *t, ag_tensor *a, int axis, int64_t size, int64_t start,
                      int64_t step)
{
    int ax = axis;
    if (!ag_check_inputs(t, "ag_unslice", 1, &a) ||
        !ag_check_axis(t, "ag_unslice", a->ndim, &ax))
        return NULL;
    if (step < 1)
        return ag_fail(t, AG_ERR_ARG, "ag_unslice: step %lld must be >= 1", (long long)step);
    int64_t m = a->shape[ax], s0 = start < 0 && size >= 0 ? start + size : start;
    /* the M places s0, s0 + step, ... must lie in [0, size) */
    bool ok = size >= 0 && s0 >= 0 && s0 <= size;
    if (ok && m > 0)
        ok = s0 < size && m - 1 <= (size - 1 - s0) / step;
    if (!ok) {
        char b[AG_SHAPE_BUF];
        return ag_fail(t, AG_ERR_ARG,
                       "ag_unslice: %lld elements (axis %d of %s) from start %lld by step "
                       "%lld do not fit in size %lld", (long long)m, axis,
                       ag_shape_str(a, b, sizeof b), (long long)start, (long long)step,
                       (long long)size);
    }
    return slice_run(t, "ag_unslice", &ag_op_unslice, a, ax, size, s0, m, step);
}

/* ---- pad: constant padding before and after every dim ---- */

typedef struct {
    double value;
    const int64_t *before;  /* D counts, in the arena */
} pad_attr;

static void pad_walk(const ag_entry *e, ag_walk *w)
{
    const ag_tensor *a = e->in[0], *z = e->out;
    const int64_t *before = AG_ATTR(e, pad_attr)->before;
    int64_t sa[AG_MAX_DIMS], sz[AG_MAX_DIMS];
    ag_contig_strides(a->ndim, a->shape, sa);
    ag_contig_strides(z->ndim, z->shape, sz);
    *w = (ag_walk){0};
    for (int i = 0; i < a->ndim; i++) {
        ag_walk_dim(w, a->shape[i], sa[i], sz[i]);
        w->y0 += before[i] * sz[i];
    }
}

static void pad_fill(ag_entry *e)
{
    ag_tensor *z = e->out;
    double v = AG_ATTR(e, pad_attr)->value;
    if (z->dtype == AG_F64)
        for (int64_t i = 0; i < z->numel; i++)
            ((double *)z->data)[i] = v;
    else
        for (int64_t i = 0; i < z->numel; i++)
            ((float *)z->data)[i] = (float)v;
}

/* dx[i] += g[i + before]: the padding takes no gradient */
AG_WALK_OP(pad, pad_fill)

/* dx = g cropped: slice(g, d, before[d], before[d] + K_d) for each padded d */
static void pad_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const ag_tensor *x = e->in[0];
    const int64_t *before = AG_ATTR(e, pad_attr)->before;
    ag_tensor *g = gout;
    for (int d = 0; d < x->ndim && g; d++)
        if (x->shape[d] != e->out->shape[d])
            g = ag_slice(tape, g, d, before[d], before[d] + x->shape[d], 1);
    gin[0] = g;
}

ag_tensor *ag_pad(ag_tape *t, ag_tensor *a, const int64_t *pad, double value)
{
    if (!ag_check_inputs(t, "ag_pad", 1, &a))
        return NULL;
    if (a->ndim > 0 && !pad)
        return ag_fail(t, AG_ERR_ARG, "ag_pad: pad is NULL");
    int64_t shape[AG_MAX_DIMS], lim = INT64_MAX / 8;
    char b[AG_SHAPE_BUF];
    for (int i = 0; i < a->ndim; i++) {
        for (int j = 2 * i; j < 2 * i + 2; j++)
            if (pad[j] < 0)
                return ag_fail(t, AG_ERR_ARG,
                               "ag_pad: pad[%d] = %lld is negative (%s dim %d of %s)", j,
                               (long long)pad[j], j % 2 ? "after" : "before", i,
                               ag_shape_str(a, b, sizeof b));
        if (pad[2 * i] > lim || pad[2 * i + 1] > lim ||
            a->shape[i] + pad[2 * i] + pad[2 * i + 1] > lim)
            return ag_fail(t, AG_ERR_SHAPE, "ag_pad: padding dim %d of %s by %lld and %lld "
                           "is too large", i, ag_shape_str(a, b, sizeof b),
                           (long long)pad[2 * i], (long long)pad[2 * i + 1]);
        shape[i] = a->shape[i] + pad[2 * i] + pad[2 * i + 1];
    }
    if (!ag_shape_result_ok(t, "ag_pad", a->ndim, shape))
        return NULL;
    int64_t *before = ag_arena_alloc_align(t, AG_MAX_DIMS * sizeof *before, 16);
    if (!before)
        return NULL;
    for (int i = 0; i < a->ndim; i++)
        before[i] = pad[2 * i];
    pad_attr at = {value, before};
    ag_op_call c = {.def = &ag_op_pad, .in = &a, .n_in = 1, .dtype = a->dtype,
                    .ndim = a->ndim, .shape = shape, .attr = &at, .attr_size = sizeof at};
    return ag_op_run(t, &c);
}

/* ---- concat and stack ----
 * Input t lands at offset off along the output's axis: the sum of the
 * earlier inputs' sizes there (concat), or t itself (stack, on the new
 * axis).  STACK is a constant in each instance of the kernels. */

typedef struct {
    int axis;  /* the output's: concat's axis, or stack's new one */
} join_attr;

AG_INLINE void join_walk(const ag_entry *e, int t, int64_t off, bool STACK, ag_walk *w)
{
    const ag_tensor *x = e->in[t], *z = e->out;
    int axis = AG_ATTR(e, join_attr)->axis;
    int64_t sx[AG_MAX_DIMS], sz[AG_MAX_DIMS];
    ag_contig_strides(x->ndim, x->shape, sx);
    ag_contig_strides(z->ndim, z->shape, sz);
    *w = (ag_walk){0};
    for (int d = 0; d < x->ndim; d++)
        ag_walk_dim(w, x->shape[d], sx[d], sz[STACK && d >= axis ? d + 1 : d]);
    w->y0 = off * sz[axis];
}

AG_INLINE int64_t join_size(const ag_entry *e, int t, bool STACK)
{
    return STACK ? 1 : e->in[t]->shape[AG_ATTR(e, join_attr)->axis];
}

AG_INLINE void join_forward(ag_entry *e, bool STACK)
{
    ag_walk w;
    int64_t off = 0;
    for (int t = 0; t < e->n_in; off += join_size(e, t, STACK), t++) {
        join_walk(e, t, off, STACK, &w);
        ag_walk_forward(&w, e->in[t], e->out);
    }
}

/* dx_t += g[.., off_t : off_t + K_t, ..] */
AG_INLINE void join_backward(ag_tape *tape, ag_entry *e, bool STACK)
{
    ag_walk w;
    int64_t off = 0;
    for (int t = 0; t < e->n_in; off += join_size(e, t, STACK), t++) {
        void *dx = ag_grad_data(tape, e->in[t]);
        if (!dx)
            continue;
        join_walk(e, t, off, STACK, &w);
        ag_walk_backward(&w, dx, e->out->grad);
    }
}

static void concat_forward(ag_entry *e) { join_forward(e, false); }
static void stack_forward(ag_entry *e) { join_forward(e, true); }
static void concat_backward(ag_tape *tape, ag_entry *e) { join_backward(tape, e, false); }
static void stack_backward(ag_tape *tape, ag_entry *e) { join_backward(tape, e, true); }

/* dx_t = slice(g, axis, off_t, off_t + K_t) */
static void concat_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    int axis = AG_ATTR(e, join_attr)->axis;
    int64_t off = 0;
    for (int t = 0; t < e->n_in; off += e->in[t]->shape[axis], t++)
        if (ag_needs_grad(tape, e->in[t]))
            gin[t] = ag_slice(tape, gout, axis, off, off + e->in[t]->shape[axis], 1);
}

/* dx_t = squeeze(slice(g, axis, t, t + 1), axis) */
static void stack_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    int axis = AG_ATTR(e, join_attr)->axis;
    for (int t = 0; t < e->n_in; t++)
        if (ag_needs_grad(tape, e->in[t]))
            gin[t] = ag_squeeze(tape, ag_slice(tape, gout, axis, t, t + 1, 1), axis);
}

/* Non-empty list, no NULL, one dtype. */
static bool join_check(ag_tape *t, const char *op, ag_tensor *const *ts, int n)
{
    if (!ag_check_inputs(t, op, 0, NULL))
        return false;
    if (n < 1 || !ts) {
        ag_fail(t, AG_ERR_ARG, "%s: needs at least one tensor (n = %d)", op, n);
        return false;
    }
    if (!ag_check_inputs(t, op, n, ts))
        return false;
    for (int i = 1; i < n; i++)
        if (ts[i]->dtype != ts[0]->dtype) {
            ag_fail(t, AG_ERR_DTYPE, "%s: tensors[%d] is %s but tensors[0] is %s", op, i,
                    ts[i]->dtype == AG_F64 ? "f64" : "f32",
                    ts[0]->dtype == AG_F64 ? "f64" : "f32");
            return false;
        }
    return true;
}

ag_tensor *ag_concat(ag_tape *t, ag_tensor *const *ts, int n, int axis)
{
    if (!join_check(t, "ag_concat", ts, n))
        return NULL;
    const ag_tensor *a = ts[0];
    char b1[AG_SHAPE_BUF], b2[AG_SHAPE_BUF];
    if (a->ndim == 0)
        return ag_fail(t, AG_ERR_SHAPE, "ag_concat: tensors[0] is 0-d; concat needs >= 1 dim");
    int ax = axis;
    if (!ag_check_axis(t, "ag_concat", a->ndim, &ax))
        return NULL;
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[ax] = 0;
    for (int i = 0; i < n; i++) {
        const ag_tensor *x = ts[i];
        bool ok = x->ndim == a->ndim;
        for (int d = 0; ok && d < a->ndim; d++)
            ok = d == ax || x->shape[d] == a->shape[d];
        if (!ok)
            return ag_fail(t, AG_ERR_SHAPE,
                           "ag_concat: tensors[%d] is %s but tensors[0] is %s (all dims "
                           "but axis %d must agree)", i, ag_shape_str(x, b1, sizeof b1),
                           ag_shape_str(a, b2, sizeof b2), axis);
        if (x->shape[ax] > INT64_MAX / 8 - shape[ax])
            return ag_fail(t, AG_ERR_SHAPE, "ag_concat: result too large along axis %d",
                           axis);
        shape[ax] += x->shape[ax];
    }
    if (!ag_shape_result_ok(t, "ag_concat", a->ndim, shape))
        return NULL;
    join_attr at = {ax};
    ag_op_call c = {.def = &ag_op_concat, .in = ts, .n_in = n, .dtype = a->dtype,
                    .ndim = a->ndim, .shape = shape, .attr = &at, .attr_size = sizeof at};
    return ag_op_run(t, &c);
}

ag_tensor *ag_stack(ag_tape *t, ag_tensor *const *ts, int n, int axis)
{
    if (!join_check(t, "ag_stack", ts, n))
        return NULL;
    const ag_tensor *a = ts[0];
    char b1[AG_SHAPE_BUF], b2[AG_SHAPE_BUF];
    int nd = a->ndim, ax = axis < 0 ? axis + nd + 1 : axis;
    if (ax < 0 || ax > nd)
        return ag_fail(t, AG_ERR_ARG, "ag_stack: axis %d out of range for %d dims "
                       "(allowed: %d to %d)", axis, nd, -(nd + 1), nd);
    for (int i = 1; i < n; i++)
        if (!ag_same_shape(ts[i], a))
            return ag_fail(t, AG_ERR_SHAPE, "ag_stack: tensors[%d] is %s but tensors[0] is "
                           "%s (all must have the same shape)", i,
                           ag_shape_str(ts[i], b1, sizeof b1), ag_shape_str(a, b2, sizeof b2));
    if (nd + 1 > AG_MAX_DIMS)
        return ag_fail(t, AG_ERR_SHAPE, "ag_stack: tensors of %s already have %d dims "
                       "(at most %d)", ag_shape_str(a, b1, sizeof b1), nd, AG_MAX_DIMS);
    int64_t shape[AG_MAX_DIMS];
    for (int i = 0, j = 0; i <= nd; i++)
        shape[i] = i == ax ? n : a->shape[j++];
    if (!ag_shape_result_ok(t, "ag_stack", nd + 1, shape))
        return NULL;
    join_attr at = {ax};
    ag_op_call c = {.def = &ag_op_stack, .in = ts, .n_in = n, .dtype = a->dtype,
                    .ndim = nd + 1, .shape = shape, .attr = &at, .attr_size = sizeof at};
    return ag_op_run(t, &c);
}

/* ---- samples: size-1 dims, negative axes and starts, 2 to 4 inputs ---- */

static const struct {
    int nd;
    int64_t shape[3];
    int axis;
    int64_t start, stop, step;
} slice_cases[] = {
    {2, {5, 3}, 0, 1, 4, 1},    {2, {4, 7}, -1, -6, 7, 2}, {3, {2, 6, 3}, 1, 0, 6, 3},
    {2, {3, 4}, 1, -1, 4, 1},   {1, {6}, 0, -5, -1, 2},    {3, {3, 1, 2}, 1, 0, 1, 1},
    {3, {2, 3, 4}, 2, 1, 4, 5},
};

static ag_tensor *slice_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    int64_t k = ((ag_op_sample *)ctx)->iarg[0];
    return ag_slice(t, in[0], slice_cases[k].axis, slice_cases[k].start, slice_cases[k].stop,
                    slice_cases[k].step);
}

static bool slice_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    if (which >= (int)(sizeof slice_cases / sizeof slice_cases[0]))
        return false;
    s->fn = slice_apply;
    s->iarg[0] = which;
    s->in[0] = ag_shape_sample_in(rng, slice_cases[which].nd, slice_cases[which].shape);
    s->n_in = 1;
    return true;
}

/* unslice: the M-element input, the axis, the size it goes into */
static const struct {
    int nd;
    int64_t shape[3];
    int axis;
    int64_t size, start, step;
} unslice_cases[] = {
    {2, {3, 2}, 0, 5, 1, 1},  {2, {4, 3}, -1, 7, 0, 3}, {3, {2, 2, 3}, 1, 6, -5, 2},
    {1, {1}, 0, 4, 3, 5},     {3, {2, 3, 1}, 2, 4, 1, 2}, {2, {2, 3}, 1, 3, 0, 1},
};

static ag_tensor *unslice_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    int64_t k = ((ag_op_sample *)ctx)->iarg[0];
    return ag_unslice(t, in[0], unslice_cases[k].axis, unslice_cases[k].size,
                      unslice_cases[k].start, unslice_cases[k].step);
}

static bool unslice_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    if (which >= (int)(sizeof unslice_cases / sizeof unslice_cases[0]))
        return false;
    s->fn = unslice_apply;
    s->iarg[0] = which;
    s->in[0] = ag_shape_sample_in(rng, unslice_cases[which].nd, unslice_cases[which].shape);
    s->n_in = 1;
    return true;
}

static const struct {
    int nd;
    int64_t shape[3];
    int64_t pad[6];
    double value;
} pad_cases[] = {
    {2, {2, 3}, {1, 0, 2, 1}, 0.5},       {1, {3}, {0, 2}, -1},
    {3, {2, 1, 3}, {0, 0, 1, 1, 0, 2}, 0}, {0, {0}, {0}, 3},
    {2, {2, 2}, {0, 0, 0, 0}, 0},          {3, {1, 2, 2}, {2, 1, 0, 0, 1, 1}, 0.25},
};

static ag_tensor *pad_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    int64_t k = ((ag_op_sample *)ctx)->iarg[0];
    return ag_pad(t, in[0], pad_cases[k].pad, pad_cases[k].value);
}

static bool pad_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    if (which >= (int)(sizeof pad_cases / sizeof pad_cases[0]))
        return false;
    s->fn = pad_apply;
    s->iarg[0] = which;
    s->in[0] = ag_shape_sample_in(rng, pad_cases[which].nd, pad_cases[which].shape);
    s->n_in = 1;
    return true;
}

/* concat: n inputs with their own shapes; stack uses shapes[0] for all */
static const struct {
    int n, nd;
    int64_t shapes[4][3];
    int axis;
} concat_cases[] = {
    {2, 2, {{2, 3}, {4, 3}}, 0},
    {3, 2, {{2, 3}, {2, 1}, {2, 2}}, -1},
    {4, 3, {{2, 1, 3}, {2, 2, 3}, {2, 1, 3}, {2, 3, 3}}, 1},
    {2, 1, {{3}, {1}}, 0},
    {2, 3, {{1, 2, 2}, {1, 2, 2}}, -3},
}, stack_cases[] = {
    {2, 2, {{2, 3}}, 0}, {3, 2, {{2, 3}}, -1}, {2, 2, {{3, 1}}, 1},
    {4, 1, {{2}}, 1},    {2, 0, {{0}}, 0},     {3, 3, {{2, 1, 2}}, -2},
};

static ag_tensor *concat_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    return ag_concat(t, in, s->n_in, concat_cases[s->iarg[0]].axis);
}

static ag_tensor *stack_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    return ag_stack(t, in, s->n_in, stack_cases[s->iarg[0]].axis);
}

static bool concat_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    if (which >= (int)(sizeof concat_cases / sizeof concat_cases[0]))
        return false;
    s->fn = concat_apply;
    s->iarg[0] = which;
    s->n_in = concat_cases[which].n;
    for (int i = 0; i < s->n_in; i++)
        s->in[i] = ag_shape_sample_in(rng, concat_cases[which].nd, concat_cases[which].shapes[i]);
    return true;
}

static bool stack_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    if (which >= (int)(sizeof stack_cases / sizeof stack_cases[0]))
        return false;
    s->fn = stack_apply;
    s->iarg[0] = which;
    s->n_in = stack_cases[which].n;
    for (int i = 0; i < s->n_in; i++)
        s->in[i] = ag_shape_sample_in(rng, stack_cases[which].nd, stack_cases[which].shapes[0]);
    return true;
}

const ag_op_def ag_op_slice = {.name = "slice", .forward = slice_forward,
                               .backward = slice_backward, .vjp = slice_vjp,
                               .sample = slice_sample};
const ag_op_def ag_op_unslice = {.name = "unslice", .forward = unslice_forward,
                                 .backward = unslice_backward, .vjp = unslice_vjp,
                                 .sample = unslice_sample};
const ag_op_def ag_op_pad = {.name = "pad", .forward = pad_forward, .backward = pad_backward,
                             .vjp = pad_vjp, .sample = pad_sample};
const ag_op_def ag_op_concat = {.name = "concat", .forward = concat_forward,
                                .backward = concat_backward, .vjp = concat_vjp,
                                .sample = concat_sample};
const ag_op_def ag_op_stack = {.name = "stack", .forward = stack_forward,
                               .backward = stack_backward, .vjp = stack_vjp,
                               .sample = stack_sample};
