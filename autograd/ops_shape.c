/* ops_shape.c — shape ops whose result holds the input's elements in the
 * same order: reshape, squeeze, unsqueeze (views: the result shares the
 * input's data, so forward moves nothing; backward: dx += g elementwise;
 * recorded: g reshaped back); the reordering ops transpose and permute
 * (recorded: the inverse reordering of g); expand (broadcast_to;
 * recorded: sum_to, whose recorded derivative is expand).  slice,
 * unslice, pad, concat and stack live in ops_slice.c.  Every result but a
 * view's is a new contiguous tensor.
 *
 * The strided mover.  A reordering op is described by a walk: dims of
 * size n, with an element stride sx on the input side x and sy on the
 * output side y, plus base offsets x0 and y0.  Forward copies y = x at
 * every position of the walk; backward adds dx += dy along the same walk,
 * so an op's forward and backward share one description.  Size-1 dims
 * drop out and dims that are contiguous on both sides merge, so a 3-D
 * permute that only swaps the last two dims is a batch of 2-D transposes
 * and an identity permute is a single row.  Rows contiguous on both sides
 * are vectorised loops; when the output is contiguous but the input is
 * not, a dim where the input is contiguous is paired with the last one and
 * moved in cache blocks of 8 x 8 squares (the blocked 2-D transpose);
 * anything else is a batch of strided rows.  The outer dims are counted by
 * the one strided iterator, ag_bcast_walk (broadcast.c); each of its visits
 * moves a whole block of rows (or a tile), so short rows stay cheap.
 * D = ndim, N = numel. */
#include "ops_shape_internal.h"

/* Tiles: TILE x TILE blocks for the caches, moved as MICRO x MICRO
 * squares whose fixed bounds the compiler unrolls. */
#define TILE 64
#define MICRO 8

void ag_walk_dim(ag_walk *w, int64_t n, int64_t sx, int64_t sy)
{
    if (n == 0)
        w->empty = true;
    if (n <= 1)
        return;
    int p = w->nd - 1;
    if (p >= 0 && w->sx[p] == sx * n && w->sy[p] == sy * n) {
        w->n[p] *= n; /* the outer dim continues this one on both sides */
        w->sx[p] = sx;
        w->sy[p] = sy;
        return;
    }
    AG_ASSERT(w->nd < AG_MAX_DIMS);
    w->n[w->nd] = n;
    w->sx[w->nd] = sx;
    w->sy[w->nd] = sy;
    w->nd++;
}

void ag_contig_strides(int nd, const int64_t *shape, int64_t *st)
{
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        st[i] = s;
        s *= shape[i];
    }
}

/* What a mover's visit needs besides the offsets ag_bcast_walk passes: the
 * buffers at the walk's base offsets; for rows, the block of `rows` rows
 * (strides rsx, rsy) one visit moves, so that short rows do not each cost
 * an iterator step; for a tile, the size and y stride of its other dim,
 * along which x is contiguous. */
typedef struct {
    void *x, *y;
    int64_t rows, rsx, rsy;
    int64_t tile_n, tile_sy;
} walk_ctx;

/* A mover applies ELEM(x[.], y[.]) along rows (n elements, strides s[0]
 * on x and s[1] on y) or a tile (i: x stride 1, y stride tile_sy; j: x
 * stride s[0], y stride 1): two ag_bcast_row visits.  x and y are always
 * different tensors, so a contiguous row is safe to vectorise. */
typedef struct {
    ag_bcast_row row, tile;
    size_t size; /* element bytes */
} mover;

#define MOVER(NAME, T, ELEM)                                                  \
    static void NAME##_row(void *vc, int64_t o, const int64_t *off,           \
                           const int64_t *s, int64_t n)                       \
    {                                                                         \
        (void)o; /* the walk's own offsets are off[0] (x) and off[1] (y) */  \
        const walk_ctx *c = vc;                                               \
        T *x = (T *)c->x + off[0], *y = (T *)c->y + off[1];                   \
        int64_t sx = s[0], sy = s[1];                                         \
        for (int64_t r = 0; r < c->rows; r++, x += c->rsx, y += c->rsy)      \
            if (sx == 1 && sy == 1) {                                         \
                AG_SIMD for (int64_t i = 0; i < n; i++)                       \
                    ELEM(x[i], y[i]);                                         \
            } else                                                            \
                for (int64_t i = 0; i < n; i++)                               \
                    ELEM(x[i * sx], y[i * sy]);                               \
    }                                                                         \
    static void NAME##_block(T *x, T *y, int64_t ie, int64_t je, int64_t sx,  \
                             int64_t sy)                                      \
    {                                                                         \
        for (int64_t i = 0; i < ie; i++)                                      \
            for (int64_t j = 0; j < je; j++)                                  \
                ELEM(x[i + j * sx], y[i * sy + j]);                           \
    }                                                                         \
    static void NAME##_tile(void *vc, int64_t o, const int64_t *off,          \
                            const int64_t *s, int64_t nj)                     \
    {                                                                         \
        (void)o;                                                              \
        const walk_ctx *c = vc;                                               \
        T *x = (T *)c->x + off[0], *y = (T *)c->y + off[1];                   \
        int64_t ni = c->tile_n, sx = s[0], sy = c->tile_sy;                   \
        for (int64_t i0 = 0; i0 < ni; i0 += TILE)                             \
            for (int64_t j0 = 0; j0 < nj; j0 += TILE)                         \
                for (int64_t i = i0; i < i0 + TILE && i < ni; i += MICRO)     \
                    for (int64_t j = j0; j < j0 + TILE && j < nj; j += MICRO) \
                        if (i + MICRO <= ni && j + MICRO <= nj) {             \
                            T *xs = x + i + j * sx, *ys = y + i * sy + j;     \
                            for (int a = 0; a < MICRO; a++)                   \
                                for (int b = 0; b < MICRO; b++)               \
                                    ELEM(xs[a + b * sx], ys[a * sy + b]);     \
                        } else                                                \
                            NAME##_block(x + i + j * sx, y + i * sy + j,      \
                                         ni - i < MICRO ? ni - i : MICRO,     \
                                         nj - j < MICRO ? nj - j : MICRO, sx, sy); \
    }                                                                         \
    static const mover NAME = {NAME##_row, NAME##_tile, sizeof(T)};

#define ELEM_COPY(xe, ye) ((ye) = (xe))  /* forward: y = x */
#define ELEM_ADD(xe, ye) ((xe) += (ye))  /* backward: dx += dy */
MOVER(copy_f32, float, ELEM_COPY)
MOVER(copy_f64, double, ELEM_COPY)
MOVER(add_f32, float, ELEM_ADD)
MOVER(add_f64, double, ELEM_ADD)

/* One walk_run call: the iterator's dims (the walk's less the one each
 * visit takes whole) and the mover's context. */
typedef struct {
    int nd;
    int64_t n[AG_MAX_DIMS], sx[AG_MAX_DIMS], sy[AG_MAX_DIMS];
    const mover *m;
    walk_ctx c;
} walk_job;

/* Outermost indices [lo, hi) of the job's iterator: the walks of permute
 * and slice move disjoint elements, so the pieces can run on any thread. */
static void walk_part(void *vj, int64_t lo, int64_t hi)
{
    const walk_job *j = vj;
    walk_ctx c = j->c;
    int64_t n[AG_MAX_DIMS];
    memcpy(n, j->n, sizeof n);
    int64_t size = (int64_t)j->m->size;
    if (j->nd > 0) {
        n[0] = hi - lo;
        c.x = (char *)c.x + lo * j->sx[0] * size;
        c.y = (char *)c.y + lo * j->sy[0] * size;
    }
    const int64_t *strides[2] = {j->sx, j->sy};
    ag_bcast_walk(j->nd, n, 2, strides, c.tile_n ? j->m->tile : j->m->row, &c);
}

/* Runs the mover over the walk with the one strided iterator
 * (ag_bcast_walk): its dims are the walk's, the last innermost, less the
 * one each visit takes whole: the tile's other dim when there is a tile,
 * else the next-to-last (a block of rows).  Large walks are cut along the
 * outermost dim for the pool: the head permutes and slices of a GPT
 * layer ran on one thread, 8% of a step at two. */
static void walk_run(const ag_walk *w, const mover *m, void *x, void *y)
{
    if (w->empty)
        return;
    int last = w->nd - 1, k = -1;
    if (last > 0 && w->sy[last] == 1 && w->sx[last] != 1)
        for (int d = 0; d < last; d++)
            if (w->sx[d] == 1)
                k = d; /* tile dims k and last: a blocked 2-D transpose */
    int inner = k >= 0 ? k : last - 1; /* -1: one row per visit */
    int64_t size = (int64_t)m->size;
    walk_job j = {.m = m, .c = {(char *)x + w->x0 * size, (char *)y + w->y0 * size, 1, 0, 0,
                                0, 0}};
    if (k >= 0) {
        j.c.tile_n = w->n[k];
        j.c.tile_sy = w->sy[k];
    } else if (inner >= 0) {
        j.c.rows = w->n[inner];
        j.c.rsx = w->sx[inner];
        j.c.rsy = w->sy[inner];
    }
    int64_t total = 1;
    for (int d = 0; d <= last; d++) {
        total *= w->n[d];
        if (d != inner) {
            j.n[j.nd] = w->n[d];
            j.sx[j.nd] = w->sx[d];
            j.sy[j.nd++] = w->sy[d];
        }
    }
    if (j.nd < 1 || total < AG_PAR_MIN) {
        walk_part(&j, 0, j.nd ? j.n[0] : 1);
        return;
    }
    int64_t per = total / j.n[0]; /* elements an outermost index moves */
    ag_parallel_for(j.n[0], per >= AG_PAR_CHUNK ? 1 : AG_PAR_CHUNK / per, walk_part, &j);
}

void ag_walk_forward(const ag_walk *w, const ag_tensor *x, ag_tensor *y)
{
    walk_run(w, y->dtype == AG_F64 ? &copy_f64 : &copy_f32, x->data, y->data);
}

void ag_walk_backward(const ag_walk *w, void *dx, const ag_tensor *gy)
{
    walk_run(w, gy->dtype == AG_F64 ? &add_f64 : &add_f32, dx, gy->data);
}

bool ag_shape_result_ok(ag_tape *tape, const char *op, int nd, const int64_t *shape)
{
    int64_t numel;
    if (nd > AG_MAX_DIMS) {
        ag_fail(tape, AG_ERR_SHAPE, "%s: result would have %d dims (at most %d)", op, nd,
                AG_MAX_DIMS);
        return false;
    }
    if (!ag_shape_valid(nd, shape, &numel)) {
        char b[AG_SHAPE_BUF];
        ag_fail(tape, AG_ERR_SHAPE, "%s: result shape %s is too large", op,
                ag_fmt_shape(b, sizeof b, nd, shape));
        return false;
    }
    return true;
}

bool ag_shape_axis0(ag_tape *tape, const char *op, int ndim, int *axis)
{
    if (ndim == 0 && (*axis == 0 || *axis == -1)) {
        *axis = 0;
        return true;
    }
    return ag_check_axis(tape, op, ndim, axis);
}

/* ---- reshape, squeeze, unsqueeze: the same elements in the same order ---- */

/* Nothing to move: the output is a view of the input's data (same_run).
 * Its gradient is a buffer of its own, as any tensor's. */
static void same_forward(ag_entry *e) { (void)e; }

/* dx[i] += g[i]: the flat element order is unchanged */
static void same_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (!dx)
        return;
    ag_walk w = {0};
    ag_walk_dim(&w, e->out->numel, 1, 1);
    ag_walk_backward(&w, dx, e->out->grad);
}

/* dx = reshape(g, shape of x) */
static void same_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    gin[0] = ag_reshape(tape, gout, e->in[0]->ndim, e->in[0]->shape);
}

static ag_tensor *same_run(ag_tape *t, const ag_op_def *def, ag_tensor *a, int nd,
                           const int64_t *shape)
{
    ag_op_call c = {.def = def, .in = &a, .n_in = 1, .dtype = a->dtype, .ndim = nd,
                    .shape = shape, .view = a};
    return ag_op_run(t, &c);
}

ag_tensor *ag_reshape(ag_tape *t, ag_tensor *a, int ndim, const int64_t *shape)
{
    if (!ag_check_inputs(t, "ag_reshape", 1, &a))
        return NULL;
    if (ndim < 0 || ndim > AG_MAX_DIMS)
        return ag_fail(t, AG_ERR_SHAPE, "ag_reshape: ndim %d outside [0, %d]", ndim,
                       AG_MAX_DIMS);
    if (ndim > 0 && !shape)
        return ag_fail(t, AG_ERR_ARG, "ag_reshape: shape is NULL");
    int64_t out[AG_MAX_DIMS], known = 1;
    int infer = -1;
    bool zero = false, overflow = false;
    char b1[AG_SHAPE_BUF], b2[AG_SHAPE_BUF];
    for (int i = 0; i < ndim; i++) {
        out[i] = shape[i];
        if (shape[i] == -1 && infer < 0) {
            infer = i;
        } else if (shape[i] < 0) {
            return ag_fail(t, AG_ERR_ARG,
                           "ag_reshape: bad shape %s for %s (dim %d is %lld; one dim may "
                           "be -1, the others must be >= 0)",
                           ag_fmt_shape(b1, sizeof b1, ndim, shape),
                           ag_shape_str(a, b2, sizeof b2), i, (long long)shape[i]);
        } else if (shape[i] == 0) {
            zero = true;
        } else if (known > INT64_MAX / shape[i]) {
            overflow = true;
        } else {
            known *= shape[i];
        }
    }
    if (zero)
        known = 0, overflow = false;
    if (infer >= 0 && !overflow && known > 0 && a->numel % known == 0)
        out[infer] = a->numel / known;
    else if (infer >= 0 || overflow || known != a->numel)
        return ag_fail(t, AG_ERR_SHAPE,
                       "ag_reshape: cannot reshape %s (%lld elements) into %s", 
                       ag_shape_str(a, b1, sizeof b1), (long long)a->numel,
                       ag_fmt_shape(b2, sizeof b2, ndim, shape));
    return same_run(t, &ag_op_reshape, a, ndim, out);
}

ag_tensor *ag_squeeze(ag_tape *t, ag_tensor *a, int axis)
{
    if (!ag_check_inputs(t, "ag_squeeze", 1, &a))
        return NULL;
    int64_t shape[AG_MAX_DIMS];
    int nd = 0, ax = axis;
    if (axis != AG_ALL) {
        if (!ag_shape_axis0(t, "ag_squeeze", a->ndim, &ax))
            return NULL;
        if (a->ndim > 0 && a->shape[ax] != 1) {
            char b[AG_SHAPE_BUF];
            return ag_fail(t, AG_ERR_SHAPE, "ag_squeeze: dim %d of %s has size %lld, not 1",
                           axis, ag_shape_str(a, b, sizeof b), (long long)a->shape[ax]);
        }
    }
    for (int i = 0; i < a->ndim; i++)
        if (axis == AG_ALL ? a->shape[i] != 1 : i != ax)
            shape[nd++] = a->shape[i];
    return same_run(t, &ag_op_squeeze, a, nd, shape);
}

ag_tensor *ag_unsqueeze(ag_tape *t, ag_tensor *a, int axis)
{
    if (!ag_check_inputs(t, "ag_unsqueeze", 1, &a))
        return NULL;
    int nd = a->ndim, ax = axis < 0 ? axis + nd + 1 : axis;
    if (ax < 0 || ax > nd)
        return ag_fail(t, AG_ERR_ARG, "ag_unsqueeze: axis %d out of range for %d dims "
                       "(allowed: %d to %d)", axis, nd, -(nd + 1), nd);
    if (nd + 1 > AG_MAX_DIMS) {
        char b[AG_SHAPE_BUF];
        return ag_fail(t, AG_ERR_SHAPE, "ag_unsqueeze: %s already has %d dims (at most %d)",
                       ag_shape_str(a, b, sizeof b), nd, AG_MAX_DIMS);
    }
    int64_t shape[AG_MAX_DIMS];
    for (int i = 0, j = 0; i <= nd; i++)
        shape[i] = i == ax ? 1 : a->shape[j++];
    return same_run(t, &ag_op_unsqueeze, a, nd + 1, shape);
}

/* ---- transpose, permute: output dim i is input dim perm[i] ---- */

typedef struct {
    int perm[AG_MAX_DIMS];   /* normalised: each in [0, ndim) */
} permute_attr;

typedef struct {
    int d0, d1;              /* normalised; equal for an identity */
} transpose_attr;

static void perm_walk(const ag_entry *e, const int *perm, ag_walk *w)
{
    const ag_tensor *a = e->in[0], *z = e->out;
    int64_t sa[AG_MAX_DIMS], sz[AG_MAX_DIMS];
    ag_contig_strides(a->ndim, a->shape, sa);
    ag_contig_strides(z->ndim, z->shape, sz);
    *w = (ag_walk){0};
    for (int i = 0; i < z->ndim; i++)
        ag_walk_dim(w, z->shape[i], sa[perm[i]], sz[i]);
}

static void transpose_walk(const ag_entry *e, ag_walk *w)
{
    const transpose_attr *a = AG_ATTR(e, transpose_attr);
    int perm[AG_MAX_DIMS];
    for (int i = 0; i < e->in[0]->ndim; i++)
        perm[i] = i == a->d0 ? a->d1 : i == a->d1 ? a->d0 : i;
    perm_walk(e, perm, w);
}

static void permute_walk(const ag_entry *e, ag_walk *w)
{
    perm_walk(e, AG_ATTR(e, permute_attr)->perm, w);
}

/* forward: z = x along the walk; fast backward: dx[.., j_perm[i], ..] +=
 * g[.., j_i, ..], the inverse permutation of g, along the same walk */
AG_WALK_OP(transpose, AG_WALK_NO_PRE)
AG_WALK_OP(permute, AG_WALK_NO_PRE)

/* dx = transpose(g, d0, d1): a swap is its own inverse */
static void transpose_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const transpose_attr *a = AG_ATTR(e, transpose_attr);
    gin[0] = ag_transpose(tape, gout, a->d0, a->d1);
}

/* dx = permute(g, inv) with inv[perm[i]] = i */
static void permute_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const permute_attr *a = AG_ATTR(e, permute_attr);
    int inv[AG_MAX_DIMS];
    for (int i = 0; i < e->in[0]->ndim; i++)
        inv[a->perm[i]] = i;
    gin[0] = ag_permute(tape, gout, inv);
}

/* Normalises perm into p (AG_ERR_ARG naming it unless a permutation) and
 * sets the result shape. */
static bool perm_check(ag_tape *t, const ag_tensor *a, const int *perm, int *p,
                       int64_t *shape)
{
    int nd = a->ndim;
    bool seen[AG_MAX_DIMS] = {false};
    for (int i = 0; i < nd; i++) {
        p[i] = perm[i] < 0 ? perm[i] + nd : perm[i];
        if (p[i] < 0 || p[i] >= nd || seen[p[i]]) {
            char b[AG_SHAPE_BUF], pb[AG_SHAPE_BUF];
            int64_t p64[AG_MAX_DIMS];
            for (int j = 0; j < nd; j++)
                p64[j] = perm[j];
            ag_fail(t, AG_ERR_ARG,
                    "ag_permute: perm %s is not a permutation of the %d dims of %s "
                    "(entry %d)", ag_fmt_shape(pb, sizeof pb, nd, p64), nd,
                    ag_shape_str(a, b, sizeof b), i);
            return false;
        }
        seen[p[i]] = true;
        shape[i] = a->shape[p[i]];
    }
    return true;
}

ag_tensor *ag_permute(ag_tape *t, ag_tensor *a, const int *perm)
{
    if (!ag_check_inputs(t, "ag_permute", 1, &a))
        return NULL;
    if (a->ndim > 0 && !perm)
        return ag_fail(t, AG_ERR_ARG, "ag_permute: perm is NULL");
    permute_attr at = {{0}};
    int64_t shape[AG_MAX_DIMS];
    if (!perm_check(t, a, perm, at.perm, shape))
        return NULL;
    ag_op_call c = {.def = &ag_op_permute, .in = &a, .n_in = 1, .dtype = a->dtype,
                    .ndim = a->ndim, .shape = shape, .attr = &at, .attr_size = sizeof at};
    return ag_op_run(t, &c);
}

ag_tensor *ag_transpose(ag_tape *t, ag_tensor *a, int d0, int d1)
{
    if (!ag_check_inputs(t, "ag_transpose", 1, &a) ||
        !ag_shape_axis0(t, "ag_transpose", a->ndim, &d0) ||
        !ag_shape_axis0(t, "ag_transpose", a->ndim, &d1))
        return NULL;
    transpose_attr at = {d0, d1};
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    if (a->ndim > 0) {
        shape[d0] = a->shape[d1];
        shape[d1] = a->shape[d0];
    }
    ag_op_call c = {.def = &ag_op_transpose, .in = &a, .n_in = 1, .dtype = a->dtype,
                    .ndim = a->ndim, .shape = shape, .attr = &at, .attr_size = sizeof at};
    return ag_op_run(t, &c);
}

/* ---- expand: broadcast a (right-aligned) to the output shape ---- */

static void expand_forward(ag_entry *e)
{
    const ag_tensor *a = e->in[0], *z = e->out;
    int64_t sa[AG_MAX_DIMS], sz[AG_MAX_DIMS];
    ag_broadcast_strides(a, z->ndim, z->shape, sa); /* 0 on broadcast dims */
    ag_contig_strides(z->ndim, z->shape, sz);
    ag_walk w = {0};
    for (int i = 0; i < z->ndim; i++)
        ag_walk_dim(&w, z->shape[i], sa[i], sz[i]);
    ag_walk_forward(&w, a, e->out);
}

/* dx += g summed over the broadcast dims (f32 sums of a row run in double) */
static void expand_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (dx)
        ag_reduce_into(dx, e->in[0], e->out->grad->data, e->out->dtype, e->out->ndim,
                       e->out->shape);
}

/* dx = sum_to(g, x): the sum over the broadcast dims */
static void expand_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    gin[0] = ag_sum_to(tape, gout, e->in[0]);
}

ag_tensor *ag_expand(ag_tape *t, ag_tensor *a, int ndim, const int64_t *shape)
{
    if (!ag_check_inputs(t, "ag_expand", 1, &a))
        return NULL;
    if (ndim < 0 || ndim > AG_MAX_DIMS)
        return ag_fail(t, AG_ERR_SHAPE, "ag_expand: ndim %d outside [0, %d]", ndim,
                       AG_MAX_DIMS);
    if (ndim > 0 && !shape)
        return ag_fail(t, AG_ERR_ARG, "ag_expand: shape is NULL");
    char b1[AG_SHAPE_BUF], b2[AG_SHAPE_BUF];
    if (ndim < a->ndim)
        return ag_fail(t, AG_ERR_SHAPE, "ag_expand: cannot broadcast %s to %s (fewer dims)",
                       ag_shape_str(a, b1, sizeof b1), ag_fmt_shape(b2, sizeof b2, ndim, shape));
    int64_t out[AG_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        int ia = i - (ndim - a->ndim);
        int64_t da = ia >= 0 ? a->shape[ia] : 1;
        out[i] = shape[i] == -1 && ia >= 0 ? da : shape[i]; /* -1 keeps a's size */
        if (out[i] < 0 || (da != out[i] && da != 1))
            return ag_fail(t, AG_ERR_SHAPE, "ag_expand: cannot broadcast %s to %s "
                           "(dim %d: %lld vs %lld)", ag_shape_str(a, b1, sizeof b1),
                           ag_fmt_shape(b2, sizeof b2, ndim, shape), i, (long long)da,
                           (long long)shape[i]);
    }
    if (!ag_shape_result_ok(t, "ag_expand", ndim, out))
        return NULL;
    ag_op_call c = {.def = &ag_op_expand, .in = &a, .n_in = 1, .dtype = a->dtype,
                    .ndim = ndim, .shape = out};
    return ag_op_run(t, &c);
}

/* ---- samples: size-1 dims, 0-d tensors, negative axes ---- */

ag_tensor *ag_shape_sample_in(ag_rng *rng, int nd, const int64_t *shape)
{
    return ag_sample_tensor(rng, nd, shape, AG_SAMPLE_RANGE, -2, 2);
}

/* one input and a shape argument: reshape, expand */
typedef struct {
    int nd;
    int64_t shape[4];
    int arg_nd;
    int64_t arg[4];
} shape_case;

static const shape_case reshape_cases[] = {
    {3, {2, 3, 4}, 2, {6, 4}},   {3, {2, 3, 4}, 2, {4, -1}}, {3, {3, 1, 2}, 1, {-1}},
    {0, {0}, 2, {1, 1}},         {1, {5}, 2, {5, 1}},        {2, {1, 6}, 3, {3, -1, 1}},
};
static const shape_case expand_cases[] = {
    {2, {3, 1}, 3, {2, 3, 4}}, {1, {1}, 1, {5}},        {0, {0}, 2, {2, 2}},
    {3, {2, 1, 3}, 3, {2, 4, 3}}, {2, {1, 3}, 2, {4, -1}}, {2, {2, 3}, 2, {2, 3}},
};

/* Sample `which` of a table of one-input cases (fields nd, shape): the
 * input, and the case index for NAME##_apply to read its arguments. */
#define CASE_SAMPLE(NAME, CASES)                                              \
    static bool NAME##_sample(int which, ag_rng *rng, ag_op_sample *s)        \
    {                                                                         \
        if (which >= (int)(sizeof CASES / sizeof CASES[0]))                   \
            return false;                                                     \
        s->fn = NAME##_apply;                                                 \
        s->iarg[0] = which;                                                   \
        s->in[0] = ag_shape_sample_in(rng, CASES[which].nd, CASES[which].shape); \
        s->n_in = 1;                                                          \
        return true;                                                          \
    }

#define SHAPE_CASE_OP(NAME, CASES)                                            \
    static ag_tensor *NAME##_apply(ag_tape *t, ag_tensor **in, void *ctx)     \
    {                                                                         \
        const shape_case *k = &CASES[((ag_op_sample *)ctx)->iarg[0]];         \
        return ag_##NAME(t, in[0], k->arg_nd, k->arg);                        \
    }                                                                         \
    CASE_SAMPLE(NAME, CASES)
SHAPE_CASE_OP(reshape, reshape_cases)
SHAPE_CASE_OP(expand, expand_cases)

/* one input and up to two int arguments: squeeze, unsqueeze, transpose */
typedef struct {
    int nd;
    int64_t shape[4];
    int arg[2];
} axis_case;

static const axis_case squeeze_cases[] = {
    {3, {2, 1, 3}, {1}}, {3, {2, 1, 3}, {-2}}, {3, {1, 3, 1}, {AG_ALL}},
    {1, {1}, {0}},       {2, {3, 1}, {-1}},    {0, {0}, {0}},
};
static const axis_case unsqueeze_cases[] = {
    {2, {2, 3}, {0}}, {2, {2, 3}, {-1}}, {2, {2, 3}, {1}}, {0, {0}, {0}}, {1, {4}, {-2}},
};
static const axis_case transpose_cases[] = {
    {2, {2, 3}, {0, 1}},       {3, {2, 3, 4}, {-1, 0}}, {3, {2, 1, 3}, {1, 2}},
    {4, {4, 3, 2, 2}, {1, -1}}, {1, {3}, {0, 0}},       {2, {37, 35}, {1, 0}},
    {3, {2, 3, 33}, {-2, -1}},
};

#define AXIS_CASE_OP(NAME, CASES, CALL)                                       \
    static ag_tensor *NAME##_apply(ag_tape *t, ag_tensor **in, void *ctx)     \
    {                                                                         \
        const axis_case *k = &CASES[((ag_op_sample *)ctx)->iarg[0]];         \
        return CALL;                                                          \
    }                                                                         \
    CASE_SAMPLE(NAME, CASES)
AXIS_CASE_OP(squeeze, squeeze_cases, ag_squeeze(t, in[0], k->arg[0]))
AXIS_CASE_OP(unsqueeze, unsqueeze_cases, ag_unsqueeze(t, in[0], k->arg[0]))
AXIS_CASE_OP(transpose, transpose_cases, ag_transpose(t, in[0], k->arg[0], k->arg[1]))

static const struct {
    int nd;
    int64_t shape[4];
    int perm[4];
} permute_cases[] = {
    {3, {2, 3, 4}, {2, 0, 1}},       {3, {2, 3, 4}, {1, 2, 0}}, {3, {2, 3, 4}, {0, 2, 1}},
    {4, {2, 1, 3, 2}, {3, -4, 2, 1}}, {2, {1, 5}, {1, 0}},      {3, {2, 3, 4}, {0, 1, 2}},
    {0, {0}, {0}},
};

static ag_tensor *permute_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    return ag_permute(t, in[0], permute_cases[((ag_op_sample *)ctx)->iarg[0]].perm);
}

static bool permute_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    if (which >= (int)(sizeof permute_cases / sizeof permute_cases[0]))
        return false;
    s->fn = permute_apply;
    s->iarg[0] = which;
    s->in[0] = ag_shape_sample_in(rng, permute_cases[which].nd, permute_cases[which].shape);
    s->n_in = 1;
    return true;
}

const ag_op_def ag_op_reshape = {.name = "reshape", .forward = same_forward,
                                 .backward = same_backward, .vjp = same_vjp,
                                 .sample = reshape_sample};
const ag_op_def ag_op_squeeze = {.name = "squeeze", .forward = same_forward,
                                 .backward = same_backward, .vjp = same_vjp,
                                 .sample = squeeze_sample};
const ag_op_def ag_op_unsqueeze = {.name = "unsqueeze", .forward = same_forward,
                                   .backward = same_backward, .vjp = same_vjp,
                                   .sample = unsqueeze_sample};
const ag_op_def ag_op_transpose = {.name = "transpose", .forward = transpose_forward,
                                   .backward = transpose_backward, .vjp = transpose_vjp,
                                   .sample = transpose_sample};
const ag_op_def ag_op_permute = {.name = "permute", .forward = permute_forward,
                                 .backward = permute_backward, .vjp = permute_vjp,
                                 .sample = permute_sample};
const ag_op_def ag_op_expand = {.name = "expand", .forward = expand_forward,
                                .backward = expand_backward, .vjp = expand_vjp,
                                .sample = expand_sample};
