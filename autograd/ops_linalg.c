/* ops_linalg.c — matmul with torch.matmul semantics.
 *
 * Dimension legend: A is M x K, B is K x N, C = A B is M x N; batch dims
 * are the dims before the last two, broadcast between A and B.  A 1-D A is
 * a 1 x K matrix (M = 1) and a 1-D B a K x 1 matrix (N = 1); the added dim
 * is simply absent from C's shape, so memory is laid out the same.
 *
 * Every product goes to the GEMM kernels, transposes are read in place:
 *   forward   C_t  = A_a B_b
 *   backward dA_a += dC_t B_b^T    (beta 1: straight into the gradient)
 *            dB_b += A_a^T dC_t
 * where batch t of C reads batch a of A and batch b of B (a broadcast batch
 * dim repeats the same matrix, so its gradient sums over the repeats by
 * accumulation).  When B has no batch dims, A's batches fold into M and
 * each of the three products is one GEMM call.
 *
 * The recorded derivative says the same with ops (dA = g B^T as
 * ag_linear(g, B), dB = A^T g, ag_sum_to over broadcast batches), so it
 * can be differentiated again; linear's is dx = g W, dW = g^T x. */
#include "autograd_internal.h"
#include "kernels/kernels_internal.h"

#include <string.h>

typedef struct {
    int64_t M, K, N;
    int nbd;                     /* batch dims of C */
    int64_t bshape[AG_MAX_DIMS]; /* (nbd) batch shape of C */
    int64_t sa[AG_MAX_DIMS];     /* (nbd) A's batch strides in matrices, 0: broadcast */
    int64_t sb[AG_MAX_DIMS];
    int64_t nbatch;              /* product of bshape */
    bool fold;                   /* B has no batch dims: A's batches fold into M */
} mm_plan;

/* Batch strides (in matrices) of an operand with nd batch dims of shape
 * `dims`, right-aligned in the batch shape of C. */
static void batch_strides(int nd, const int64_t *dims, const mm_plan *p, int64_t *s)
{
    int64_t step = 1;
    for (int i = p->nbd - 1; i >= 0; i--) {
        int ix = i - (p->nbd - nd);
        int64_t d = ix >= 0 ? dims[ix] : 1;
        s[i] = (d == 1 && p->bshape[i] != 1) ? 0 : step;
        step *= d;
    }
}

/* Fills p from the shapes of a and b; false (error kept on the tape, when
 * one is given) if they do not fit.  Both must have at least one dim. */
static bool mm_make_plan(ag_tape *tape, const ag_tensor *a, const ag_tensor *b, mm_plan *p)
{
    int na = a->ndim, nb = b->ndim;
    int64_t ka = a->shape[na - 1], kb = nb >= 2 ? b->shape[nb - 2] : b->shape[0];
    char s1[128], s2[128];
    if (ka != kb) {
        ag_fail(tape, AG_ERR_SHAPE, "ag_matmul: shapes %s and %s do not align (%lld != %lld)",
                ag_shape_str(a, s1, sizeof s1), ag_shape_str(b, s2, sizeof s2),
                (long long)ka, (long long)kb);
        return false;
    }
    int bda = na > 2 ? na - 2 : 0, bdb = nb > 2 ? nb - 2 : 0;
    p->M = na >= 2 ? a->shape[na - 2] : 1;
    p->K = ka;
    p->N = nb >= 2 ? b->shape[nb - 1] : 1;
    p->nbd = bda > bdb ? bda : bdb;
    p->nbatch = 1;
    for (int i = 0; i < p->nbd; i++) {
        int ia = i - (p->nbd - bda), ib = i - (p->nbd - bdb);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            ag_fail(tape, AG_ERR_SHAPE,
                    "ag_matmul: shapes %s and %s: batch dims do not broadcast "
                    "(%lld vs %lld)", ag_shape_str(a, s1, sizeof s1),
                    ag_shape_str(b, s2, sizeof s2), (long long)da, (long long)db);
            return false;
        }
        p->bshape[i] = da == 1 ? db : da;
        p->nbatch *= p->bshape[i];
    }
    batch_strides(bda, a->shape, p, p->sa);
    batch_strides(bdb, b->shape, p, p->sb);
    p->fold = bdb == 0;
    return true;
}

/* Batch t of C: the matrix indices of A and B it reads. */
static void mm_batch(const mm_plan *p, int64_t t, int64_t *ia, int64_t *ib)
{
    *ia = *ib = 0;
    for (int i = p->nbd - 1; i >= 0; i--) {
        int64_t c = t % p->bshape[i];
        t /= p->bshape[i];
        *ia += c * p->sa[i];
        *ib += c * p->sb[i];
    }
}

#define ELEM(p, i, esz) ((void *)((char *)(p) + (size_t)(i) * (esz)))

static void matmul_forward(ag_entry *e)
{
    const ag_tensor *a = e->in[0], *b = e->in[1];
    ag_tensor *c = e->out;
    size_t esz = ag_dtype_size(c->dtype);
    mm_plan p;
    bool ok = mm_make_plan(NULL, a, b, &p); /* checked when recorded */
    AG_ASSERT(ok);
    int64_t M = p.M, K = p.K, N = p.N;
    if (p.fold) { /* (batch*M x K) (K x N) */
        ag_gemm_dt(c->dtype, false, false, p.nbatch * M, N, K, a->data, K, b->data, N, 0.0,
                   c->data, N);
        return;
    }
    for (int64_t t = 0; t < p.nbatch; t++) {
        int64_t ia, ib;
        mm_batch(&p, t, &ia, &ib);
        ag_gemm_dt(c->dtype, false, false, M, N, K, ELEM(a->data, ia * M * K, esz), K,
                   ELEM(b->data, ib * K * N, esz), N, 0.0, ELEM(c->data, t * M * N, esz), N);
    }
}

static void matmul_backward(ag_tape *tape, ag_entry *e)
{
    ag_tensor *a = e->in[0], *b = e->in[1], *c = e->out;
    void *da = ag_grad_data(tape, a);
    void *db = ag_grad_data(tape, b);
    const void *g = c->grad->data;
    ag_dtype dt = c->dtype;
    size_t esz = ag_dtype_size(dt);
    mm_plan p;
    bool ok = mm_make_plan(NULL, a, b, &p); /* checked when recorded */
    AG_ASSERT(ok);
    int64_t M = p.M, K = p.K, N = p.N;
    if (p.fold) {
        /* dA (batch*M x K) += dC (batch*M x N) B^T */
        if (da)
            ag_gemm_dt(dt, false, true, p.nbatch * M, K, N, g, N, b->data, N, 1.0, da, K);
        /* dB (K x N) += A^T (K x batch*M) dC (batch*M x N): the sum over batches */
        if (db)
            ag_gemm_dt(dt, true, false, K, N, p.nbatch * M, a->data, K, g, N, 1.0, db, N);
        return;
    }
    for (int64_t t = 0; t < p.nbatch; t++) {
        int64_t ia, ib;
        mm_batch(&p, t, &ia, &ib);
        const void *gt = ELEM(g, t * M * N, esz);
        /* dA_a += dC_t B_b^T  (M x N)(N x K) */
        if (da)
            ag_gemm_dt(dt, false, true, M, K, N, gt, N, ELEM(b->data, ib * K * N, esz), N, 1.0,
                       ELEM(da, ia * M * K, esz), K);
        /* dB_b += A_a^T dC_t  (K x M)(M x N) */
        if (db)
            ag_gemm_dt(dt, true, false, K, N, M, ELEM(a->data, ia * M * K, esz), K, gt, N, 1.0,
                       ELEM(db, ib * K * N, esz), N);
    }
}

/* ---- recorded derivative ----
 * Written with the 1-D promotions undone by broadcasting instead of
 * reshapes where it can be, and with B read transposed in place by
 * ag_linear when B is a matrix (the common case), so only A^T is copied. */

/* x as a matrix of rows: [product of the leading dims, last dim]; a 1-D x
 * is one row, a 2-D x itself (no copy). */
static ag_tensor *rows_of(ag_tape *t, ag_tensor *x)
{
    if (x->ndim == 2)
        return x;
    int64_t shape[2] = {1, x->shape[x->ndim - 1]};
    for (int i = 0; i < x->ndim - 1; i++)
        shape[0] *= x->shape[i];
    return ag_reshape(t, x, 2, shape);
}

/* B a vector [K]: C = A b has A's shape less its last dim (0-d for a
 * vector A); g1 = g with that dim back as size 1 (g itself for 0-d). */
static void matmul_vjp_vec(ag_tape *t, ag_tensor *a, ag_tensor *b, ag_tensor *g, bool need_a,
                           bool need_b, ag_tensor **gin)
{
    ag_tensor *g1 = a->ndim >= 2 ? ag_unsqueeze(t, g, -1) : g;
    if (need_a) /* dA = g b^T: [.., M, 1] * [K] */
        gin[0] = ag_mul(t, g1, b);
    if (need_b) /* db = A^T g: the sum over rows of g_m A_m */
        gin[1] = ag_sum_to(t, ag_mul(t, g1, a), b);
}

/* B a matrix [K, N]: A's batches fold into its rows. */
static void matmul_vjp_mat(ag_tape *t, ag_tensor *a, ag_tensor *b, ag_tensor *g, bool need_a,
                           bool need_b, ag_tensor **gin)
{
    if (need_a) /* dA = g B^T, B read transposed in place ([N] g: a vector dA) */
        gin[0] = ag_linear(t, g, b, NULL);
    if (need_b) /* dB = A^T g over the folded rows ([1, K] for a vector A) */
        gin[1] = ag_matmul(t, ag_transpose(t, rows_of(t, a), 0, 1), rows_of(t, g));
}

/* B batched: batch products, summed back over the batch dims an operand
 * broadcast along (ag_sum_to); a vector A is the matrix [1, K]. */
static void matmul_vjp_batched(ag_tape *t, ag_tensor *a, ag_tensor *b, ag_tensor *g,
                               bool need_a, bool need_b, ag_tensor **gin)
{
    ag_tensor *a2 = a->ndim >= 2 ? a : ag_unsqueeze(t, a, 0);
    ag_tensor *g2 = a->ndim >= 2 ? g : ag_unsqueeze(t, g, -2);
    if (need_a) /* dA = sum over broadcast batches of g B^T ([.., 1, K] -> [K] too) */
        gin[0] = ag_sum_to(t, ag_matmul(t, g2, ag_transpose(t, b, -1, -2)), a);
    if (need_b) /* dB = sum over broadcast batches of A^T g */
        gin[1] = ag_sum_to(t, ag_matmul(t, ag_transpose(t, a2, -1, -2), g2), b);
}

static void matmul_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    ag_tensor *a = e->in[0], *b = e->in[1];
    bool need_a = ag_needs_grad(tape, a), need_b = ag_needs_grad(tape, b);
    if (b->ndim == 1)
        matmul_vjp_vec(tape, a, b, gout, need_a, need_b, gin);
    else if (b->ndim == 2)
        matmul_vjp_mat(tape, a, b, gout, need_a, need_b, gin);
    else
        matmul_vjp_batched(tape, a, b, gout, need_a, need_b, gin);
}

ag_tensor *ag_matmul(ag_tape *t, ag_tensor *a, ag_tensor *b)
{
    ag_tensor *in[2] = {a, b};
    if (!ag_check_inputs(t, "ag_matmul", 2, in) ||
        !ag_check_same_dtype(t, "ag_matmul", a, b))
        return NULL;
    if (a->ndim == 0 || b->ndim == 0) {
        char s1[128], s2[128];
        return ag_fail(t, AG_ERR_SHAPE, "ag_matmul: shapes %s and %s: both need at least "
                       "1 dim", ag_shape_str(a, s1, sizeof s1), ag_shape_str(b, s2, sizeof s2));
    }
    mm_plan p;
    if (!mm_make_plan(t, a, b, &p))
        return NULL;
    int64_t shape[AG_MAX_DIMS];
    int nd = p.nbd;
    memcpy(shape, p.bshape, (size_t)nd * sizeof *shape);
    if (a->ndim >= 2)
        shape[nd++] = p.M;
    if (b->ndim >= 2)
        shape[nd++] = p.N;
    ag_op_call c = {.def = &ag_op_matmul, .in = in, .n_in = 2, .dtype = a->dtype,
                    .ndim = nd, .shape = shape};
    return ag_op_run(t, &c);
}

/* ---- samples: 1-D and 2-D operands, folded and broadcast batches ---- */

static ag_tensor *matmul_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    return ag_matmul(t, in[0], in[1]);
}

static bool matmul_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    static const int64_t shapes[][2][5] = {
        /* ndim a, dims a...   ndim b, dims b... */
        {{2, 3, 4}, {2, 4, 2}},         /* matrix product */
        {{1, 4}, {1, 4}},               /* dot product: 0-d result */
        {{1, 4}, {2, 4, 3}},            /* vector x matrix */
        {{2, 2, 4}, {1, 4}},            /* matrix x vector */
        {{3, 2, 3, 4}, {2, 4, 2}},      /* batched A, B shared: folded */
        {{2, 3, 4}, {3, 2, 4, 2}},      /* A shared by batched B */
        {{4, 2, 1, 2, 3}, {3, 3, 3, 2}}, /* batch [2,1] x [3]: both broadcast */
        {{2, 1, 3}, {2, 3, 1}},         /* size-1 M and N */
        {{3, 2, 1, 3}, {1, 3}},         /* N-D x 1-D */
        {{1, 3}, {3, 2, 3, 2}},         /* 1-D x N-D */
    };
    if (which >= (int)(sizeof shapes / sizeof shapes[0]))
        return false;
    for (int k = 0; k < 2; k++) {
        const int64_t *d = shapes[which][k];
        s->in[k] = ag_sample_tensor(rng, (int)d[0], d + 1, AG_SAMPLE_RANGE, -2, 2);
    }
    s->n_in = 2;
    s->fn = matmul_apply;
    return true;
}

const ag_op_def ag_op_matmul = {.name = "matmul", .saveable = true, .forward = matmul_forward,
                                .backward = matmul_backward, .vjp = matmul_vjp,
                                .sample = matmul_sample};

/* ---- linear: y = x W^T + b, fused ----
 * x (M, I) with M = product of x's leading dims, W (O, I) as PyTorch
 * stores it, b (O) optional.  Reading W transposed inside the GEMM saves
 * the transpose copy a matmul composition would make, both ways. */

/* The bias rows of y (M, O) += b, and the bias gradient db += the column
 * sums of g, on the pool (one thread ran both, 1.4% of a GPT step).  The
 * sums go by chunks of BIAS_ROWS rows: each chunk's partial sums, then
 * those added into db in chunk order, so the bits depend on M only, not
 * on the threads. */
#define BIAS_ROWS 64

typedef struct {
    ag_dtype dt;
    void *y;           /* y (add) or the partial sums, (chunks, O) (sums) */
    const void *src;   /* b (add) or g (sums) */
    int64_t M, O;
} bias_job;

/* The pool's functions (a bias_job each), per dtype. */
#define BIAS_LOOPS(T)                                                             \
    static void bias_add_##T(void *vj, int64_t lo, int64_t hi)                    \
    {                                                                             \
        const bias_job *j = vj;                                                   \
        const T *b = j->src;                                                      \
        for (int64_t m = lo; m < hi; m++) {                                       \
            T *y = (T *)j->y + m * j->O;                                          \
            AG_SIMD for (int64_t o = 0; o < j->O; o++) y[o] += b[o];              \
        }                                                                         \
    }                                                                             \
    /* part[c] = sum of the rows of chunk c, for c in [lo, hi) */                \
    static void bias_part_##T(void *vj, int64_t lo, int64_t hi)                   \
    {                                                                             \
        const bias_job *j = vj;                                                   \
        for (int64_t c = lo; c < hi; c++) {                                       \
            T *p = (T *)j->y + c * j->O;                                          \
            int64_t end = (c + 1) * BIAS_ROWS < j->M ? (c + 1) * BIAS_ROWS : j->M; \
            memcpy(p, (const T *)j->src + c * BIAS_ROWS * j->O, (size_t)j->O * sizeof(T)); \
            for (int64_t m = c * BIAS_ROWS + 1; m < end; m++) {                    \
                const T *g = (const T *)j->src + m * j->O;                        \
                AG_SIMD for (int64_t o = 0; o < j->O; o++) p[o] += g[o];          \
            }                                                                     \
        }                                                                         \
    }                                                                             \
    static void bias_sum_##T(T *db, const T *part, int64_t k, int64_t O)          \
    {                                                                             \
        for (int64_t c = 0; c < k; c++)                                           \
            AG_SIMD for (int64_t o = 0; o < O; o++) db[o] += part[c * O + o];     \
    }
BIAS_LOOPS(float)
BIAS_LOOPS(double)

/* n units of fn, each touching `per` elements: on the pool when large */
static void bias_run(bias_job *j, int64_t n, int64_t per, ag_parallel_fn fn)
{
    if (n * per < AG_PAR_MIN || n < 2)
        fn(j, 0, n);
    else
        ag_parallel_for(n, per >= AG_PAR_CHUNK ? 1 : (AG_PAR_CHUNK + per - 1) / per, fn, j);
}

/* db += the column sums of g (M, O); false on no memory (kept on the tape) */
static bool bias_grad(ag_tape *tape, ag_dtype dt, void *db, const void *g, int64_t M,
                      int64_t O)
{
    int64_t k = (M + BIAS_ROWS - 1) / BIAS_ROWS;
    size_t es = ag_dtype_size(dt);
    void *part = ag_arena_alloc(tape, (size_t)(k * O) * es + 1);
    if (!part)
        return false;
    bias_job j = {dt, part, g, M, O};
    bias_run(&j, k, BIAS_ROWS * O, dt == AG_F64 ? bias_part_double : bias_part_float);
    if (dt == AG_F64)
        bias_sum_double(db, part, k, O);
    else
        bias_sum_float(db, part, k, O);
    return true;
}

static void linear_forward(ag_entry *e)
{
    const ag_tensor *x = e->in[0], *w = e->in[1];
    ag_tensor *y = e->out;
    int64_t O = w->shape[0], I = w->shape[1], M = x->numel / (I ? I : 1);
    ag_gemm_dt(y->dtype, false, true, M, O, I, x->data, I, w->data, I, 0.0, y->data, O);
    if (e->n_in < 3)
        return;
    bias_job j = {y->dtype, y->data, e->in[2]->data, M, O};
    bias_run(&j, M, O, y->dtype == AG_F64 ? bias_add_double : bias_add_float);
}

static void linear_backward(ag_tape *tape, ag_entry *e)
{
    ag_tensor *x = e->in[0], *w = e->in[1], *y = e->out;
    int64_t O = w->shape[0], I = w->shape[1], M = x->numel / (I ? I : 1);
    void *dx = ag_grad_data(tape, x), *dw = ag_grad_data(tape, w);
    void *db = e->n_in > 2 ? ag_grad_data(tape, e->in[2]) : NULL;
    if (dx) /* dx += g W */
        ag_gemm_dt(y->dtype, false, false, M, I, O, y->grad->data, O, w->data, I, 1.0, dx, I);
    if (dw) /* dW += g^T x */
        ag_gemm_dt(y->dtype, true, false, O, I, M, y->grad->data, O, x->data, I, 1.0, dw, I);
    if (db)
        bias_grad(tape, y->dtype, db, y->grad->data, M, O);
}

/* The same products recorded: g W reads W as stored (no copy), g^T x
 * copies g transposed once. */
static void linear_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    ag_tensor *x = e->in[0], *w = e->in[1];
    if (ag_needs_grad(tape, x)) /* dx = g W */
        gin[0] = ag_matmul(tape, gout, w);
    if (ag_needs_grad(tape, w)) /* dW = g^T x over the flattened leading dims */
        gin[1] = ag_matmul(tape, ag_transpose(tape, rows_of(tape, gout), 0, 1),
                           rows_of(tape, x));
    if (e->n_in > 2 && ag_needs_grad(tape, e->in[2])) /* db = sum_m g[m, :] */
        gin[2] = ag_sum_to(tape, gout, e->in[2]);
}

ag_tensor *ag_linear(ag_tape *t, ag_tensor *x, ag_tensor *w, ag_tensor *b)
{
    ag_tensor *in[3] = {x, w, b};
    int n = b ? 3 : 2;
    if (!ag_check_inputs(t, "ag_linear", n, in) || !ag_check_same_dtype(t, "ag_linear", x, w) ||
        (b && !ag_check_same_dtype(t, "ag_linear", x, b)))
        return NULL;
    char s1[128], s2[128], s3[128];
    if (w->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1])
        return ag_fail(t, AG_ERR_SHAPE, "ag_linear: x %s and weight %s do not fit (x's last "
                       "dim must equal the weight's second)", ag_shape_str(x, s1, sizeof s1),
                       ag_shape_str(w, s2, sizeof s2));
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return ag_fail(t, AG_ERR_SHAPE, "ag_linear: bias %s does not match weight %s",
                       ag_shape_str(b, s3, sizeof s3), ag_shape_str(w, s2, sizeof s2));
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = w->shape[0];
    ag_op_call c = {.def = &ag_op_linear, .in = in, .n_in = n, .dtype = x->dtype,
                    .ndim = x->ndim, .shape = shape};
    return ag_op_run(t, &c);
}

static ag_tensor *linear_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    return ag_linear(t, in[0], in[1], s->n_in > 2 ? in[2] : NULL);
}

static bool linear_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    static const int64_t xs[][4] = {{2, 3, 4}, {1, 4}, {3, 2, 2, 4}};
    static const int64_t ws[] = {5, 4}, bs[] = {5};
    if (which >= 3)
        return false;
    s->fn = linear_apply;
    s->in[0] = ag_sample_tensor(rng, (int)xs[which][0], xs[which] + 1, AG_SAMPLE_RANGE, -1, 1);
    s->in[1] = ag_sample_tensor(rng, 2, ws, AG_SAMPLE_RANGE, -1, 1);
    s->n_in = 2;
    if (which != 1) /* case 1 has no bias */
        s->in[s->n_in++] = ag_sample_tensor(rng, 1, bs, AG_SAMPLE_RANGE, -1, 1);
    return true;
}

const ag_op_def ag_op_linear = {.name = "linear", .saveable = true, .forward = linear_forward,
                                .backward = linear_backward, .vjp = linear_vjp,
                                .sample = linear_sample};
