/* test_checkpoint.c — gradient checkpointing (ag_checkpoint) and the tape
 * memory report (ag_tape_bytes_peak, the profiler's per-op bytes).
 * The same model is run with and without checkpoints and everything that
 * comes out is compared byte for byte: the loss, the parameters' and the
 * input's gradients (ag_backward), ag_gradients with and without a graph,
 * Hessian-vector products and a gradient penalty; with dropout drawing
 * from a registered generator, in f32 and f64, nested, with several
 * outputs and tensors reached through ctx.  Then gradcheck and
 * gradgradcheck through a checkpoint, the memory it saves, no allocation
 * per step, and each misuse with its message. */
#include "test_util.h"

#include "tapegrad.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define S(...) ((const int64_t[]){__VA_ARGS__})

/* ---- the model: x <- x + linear(dropout(gelu(linear(x)))) per block ---- */

enum { MAX_BLOCKS = 8, BATCH = 6, WIDTH = 5 };

typedef struct model {
    int n_blocks;
    ag_tensor *w1[MAX_BLOCKS], *b1[MAX_BLOCKS], *w2[MAX_BLOCKS], *b2[MAX_BLOCKS];
    ag_tensor *x;       /* [BATCH, WIDTH], requires grad */
    ag_rng *rng;        /* dropout's */
    double p;           /* dropout probability (0: none) */
} model;

typedef struct blk {
    const model *m;
    int l;
} blk;

static ag_tensor *block_ops(ag_tape *t, const model *m, int l, ag_tensor *x)
{
    ag_tensor *h = ag_gelu(t, ag_linear(t, x, m->w1[l], m->b1[l]));
    if (m->p > 0)
        h = ag_dropout(t, h, m->p, true, m->rng);
    return ag_add(t, x, ag_linear(t, h, m->w2[l], m->b2[l]));
}

static ag_status block_fn(ag_tape *t, int n_in, ag_tensor *const *in, int n_out,
                          ag_tensor **out, void *ctx)
{
    assert_int_equal(n_in, 1);
    assert_int_equal(n_out, 1);
    const blk *b = ctx;
    out[0] = block_ops(t, b->m, b->l, in[0]);
    return AG_OK;
}

/* Two blocks, each its own checkpoint, inside one more; ctx: the two
 * blocks' ctx, which must outlive the backward like the outer one. */
static ag_status pair_fn(ag_tape *t, int n_in, ag_tensor *const *in, int n_out,
                         ag_tensor **out, void *ctx)
{
    (void)n_in;
    (void)n_out;
    blk *b = ctx;
    ag_tensor *x = in[0];
    for (int k = 0; k < 2; k++)
        if (ag_checkpoint(t, block_fn, &b[k], 1, &x, 1, &x) != AG_OK)
            return ag_tape_status(t);
    out[0] = x;
    return AG_OK;
}

typedef enum { PLAIN, PER_BLOCK, NESTED } ckpt_mode;

/* The network's output; blocks holds the ctx of each checkpoint (it must
 * outlive the backward). */
static ag_tensor *forward(ag_tape *t, const model *m, ckpt_mode mode, blk *blocks)
{
    ag_tensor *x = m->x;
    for (int l = 0; l < m->n_blocks; l++)
        blocks[l] = (blk){m, l};
    for (int l = 0; l < m->n_blocks; l++) {
        if (mode == PLAIN)
            x = block_ops(t, m, l, x);
        else if (mode == PER_BLOCK || l + 1 == m->n_blocks)
            assert_int_equal(ag_checkpoint(t, block_fn, &blocks[l], 1, &x, 1, &x), AG_OK);
        else
            assert_int_equal(ag_checkpoint(t, pair_fn, &blocks[l++], 1, &x, 1, &x), AG_OK);
    }
    return x;
}

static ag_tensor *loss_of(ag_tape *t, ag_tensor *y)
{
    return ag_mean(t, ag_mul(t, ag_tanh(t, y), y), AG_ALL, false);
}

static ag_tensor *new_param(ag_dtype dt, int ndim, const int64_t *shape, ag_rng *rng)
{
    ag_tensor *p = ag_tensor_uniform(dt, ndim, shape, -0.6, 0.6, rng);
    ag_set_requires_grad(p, true);
    return p;
}

static model model_sized(ag_dtype dt, int n_blocks, int64_t width, int64_t batch, double p,
                         ag_rng *drop)
{
    ag_rng rng;
    ag_rng_seed(&rng, 42);
    model m = {.n_blocks = n_blocks, .rng = drop, .p = p};
    for (int l = 0; l < n_blocks; l++) {
        m.w1[l] = new_param(dt, 2, S(width, width), &rng);
        m.b1[l] = new_param(dt, 1, S(width), &rng);
        m.w2[l] = new_param(dt, 2, S(width, width), &rng);
        m.b2[l] = new_param(dt, 1, S(width), &rng);
    }
    m.x = new_param(dt, 2, S(batch, width), &rng);
    return m;
}

static model model_new(ag_dtype dt, int n_blocks, double p, ag_rng *drop)
{
    return model_sized(dt, n_blocks, WIDTH, BATCH, p, drop);
}

/* Every parameter, then the input. */
static int params_of(const model *m, ag_tensor **p)
{
    int n = 0;
    for (int l = 0; l < m->n_blocks; l++) {
        p[n++] = m->w1[l];
        p[n++] = m->b1[l];
        p[n++] = m->w2[l];
        p[n++] = m->b2[l];
    }
    p[n++] = m->x;
    return n;
}

static void model_free(model *m)
{
    ag_tensor *p[4 * MAX_BLOCKS + 1];
    for (int i = 0, n = params_of(m, p); i < n; i++)
        ag_tensor_free(p[i]);
}

/* ---- byte-for-byte records ---- */

typedef struct record {
    unsigned char bytes[1 << 16];
    size_t n;
} record;

static void put(record *r, const ag_tensor *x)
{
    assert_non_null(x);
    size_t b = (size_t)ag_numel(x) * ag_dtype_size(ag_dtype_of(x));
    assert_true(r->n + b <= sizeof r->bytes);
    memcpy(r->bytes + r->n, ag_data_const(x), b);
    r->n += b;
}

static void assert_same_bytes(const record *a, const record *b, const char *what)
{
    assert_int_equal(a->n, b->n);
    if (memcmp(a->bytes, b->bytes, a->n) != 0) {
        size_t i = 0;
        while (a->bytes[i] == b->bytes[i])
            i++;
        fail_msg("%s: checkpointed and plain runs differ at byte %zu of %zu", what, i, a->n);
    }
}

static bool g_debug; /* anomaly mode and the profiler on in step_record */

/* One training step's results: the loss, every gradient (ag_backward),
 * and the dropout generator's state after it. */
static void step_record(ag_dtype dt, int n_blocks, double p, ckpt_mode mode, record *r)
{
    ag_rng drop;
    ag_rng_seed(&drop, 7);
    model m = model_new(dt, n_blocks, p, &drop);
    ag_tape *t = ag_tape_new();
    assert_int_equal(ag_tape_set_checkpoint_rng(t, &drop), AG_OK);
    ag_tape_set_anomaly(t, g_debug);
    ag_tape_set_profile(t, g_debug);
    blk blocks[MAX_BLOCKS];
    ag_tensor *loss = loss_of(t, forward(t, &m, mode, blocks));
    assert_int_equal(ag_backward(t, loss), AG_OK);
    r->n = 0;
    put(r, loss);
    ag_tensor *ps[4 * MAX_BLOCKS + 1];
    int n = params_of(&m, ps);
    for (int i = 0; i < n; i++)
        put(r, ag_grad(ps[i]));
    memcpy(r->bytes + r->n, &drop, sizeof drop);
    r->n += sizeof drop;
    ag_tape_free(t);
    model_free(&m);
}

static void check_step(ag_dtype dt, int n_blocks, double p, ckpt_mode mode, const char *what)
{
    static record plain, ckpt;
    step_record(dt, n_blocks, p, PLAIN, &plain);
    step_record(dt, n_blocks, p, mode, &ckpt);
    assert_same_bytes(&ckpt, &plain, what);
}

static void test_checkpoint_backward_bitwise_f32(void **state)
{
    (void)state;
    check_step(AG_F32, 4, 0.25, PER_BLOCK, "f32, dropout, a checkpoint per block");
    check_step(AG_F32, 4, 0.0, PER_BLOCK, "f32, no dropout");
}

static void test_checkpoint_backward_bitwise_f64(void **state)
{
    (void)state;
    check_step(AG_F64, 4, 0.25, PER_BLOCK, "f64, dropout, a checkpoint per block");
}

static void test_checkpoint_nested_bitwise(void **state)
{
    (void)state;
    check_step(AG_F32, 5, 0.25, NESTED, "f32, nested checkpoints");
    check_step(AG_F64, 5, 0.25, NESTED, "f64, nested checkpoints");
}

/* Anomaly mode and the profiler watch every op of a segment, the rebuilt
 * ones too, and change nothing; an anomaly inside is named by its op. */
static ag_status log_fn(ag_tape *t, int n_in, ag_tensor *const *in, int n_out,
                        ag_tensor **out, void *ctx)
{
    (void)n_in, (void)n_out, (void)ctx;
    out[0] = ag_log(t, ag_sub(t, in[0], in[0])); /* -Inf from finite values */
    return ag_tape_status(t);
}

static void test_checkpoint_debug_modes(void **state)
{
    (void)state;
    g_debug = true;
    check_step(AG_F32, 4, 0.25, NESTED, "anomaly mode and profiler on");
    g_debug = false;
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    ag_tensor *x = new_param(AG_F64, 1, S(3), &rng), *y;
    ag_tape *t = ag_tape_new();
    ag_tape_set_anomaly(t, true);
    assert_int_equal(ag_checkpoint(t, log_fn, NULL, 1, &x, 1, &y), AG_ERR_NUMERIC);
    tg_assert_tape_error(t, AG_ERR_NUMERIC, "anomaly: ag_log");
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* ---- ag_gradients, second order ---- */

typedef enum { GRADS, GRADS_GRAPH, HVP, PENALTY } grad_kind;

/* What one kind of derivative call gives, on a fresh model. */
static void grad_record(ag_dtype dt, ckpt_mode mode, grad_kind kind, record *r)
{
    ag_rng drop;
    ag_rng_seed(&drop, 11);
    model m = model_new(dt, 4, 0.25, &drop);
    ag_tape *t = ag_tape_new();
    ag_tape_set_checkpoint_rng(t, &drop);
    blk blocks[MAX_BLOCKS];
    ag_tensor *loss = loss_of(t, forward(t, &m, mode, blocks));
    ag_tensor *ps[4 * MAX_BLOCKS + 1], *g[4 * MAX_BLOCKS + 1], *v[4 * MAX_BLOCKS + 1];
    int n = params_of(&m, ps);
    r->n = 0;
    if (kind == GRADS || kind == GRADS_GRAPH) {
        /* a subset: the second block's weights and the input */
        ag_tensor *wrt[3] = {m.w1[1], m.w2[1], m.x};
        assert_int_equal(ag_gradients(t, loss, NULL, 3, wrt, g, kind == GRADS_GRAPH), AG_OK);
        n = 3;
    } else if (kind == HVP) {
        ag_rng vr;
        ag_rng_seed(&vr, 5);
        for (int i = 0; i < n; i++)
            v[i] = ag_tensor_uniform(dt, ag_ndim(ps[i]), ag_shape(ps[i]), -1, 1, &vr);
        assert_int_equal(ag_hvp(t, loss, n, ps, v, g, false), AG_OK);
        for (int i = 0; i < n; i++)
            ag_tensor_free(v[i]);
    } else {
        /* d/dparams of loss + ||d loss / d x||^2 */
        ag_tensor *gx;
        assert_int_equal(ag_gradients(t, loss, NULL, 1, &m.x, &gx, true), AG_OK);
        ag_tensor *pen = ag_add(t, loss, ag_sum(t, ag_mul(t, gx, gx), AG_ALL, false));
        assert_int_equal(ag_gradients(t, pen, NULL, n, ps, g, false), AG_OK);
    }
    for (int i = 0; i < n; i++)
        put(r, g[i]);
    ag_tape_free(t);
    model_free(&m);
}

static void check_grads(ag_dtype dt, ckpt_mode mode, grad_kind kind, const char *what)
{
    static record plain, ckpt;
    grad_record(dt, PLAIN, kind, &plain);
    grad_record(dt, mode, kind, &ckpt);
    assert_same_bytes(&ckpt, &plain, what);
}

static void test_checkpoint_gradients_bitwise(void **state)
{
    (void)state;
    check_grads(AG_F32, PER_BLOCK, GRADS, "ag_gradients, f32");
    check_grads(AG_F64, PER_BLOCK, GRADS_GRAPH, "ag_gradients create_graph, f64");
    check_grads(AG_F32, NESTED, GRADS_GRAPH, "ag_gradients create_graph, nested");
}

static void test_checkpoint_second_order_bitwise(void **state)
{
    (void)state;
    check_grads(AG_F64, PER_BLOCK, HVP, "ag_hvp, f64");
    check_grads(AG_F32, PER_BLOCK, HVP, "ag_hvp, f32");
    check_grads(AG_F64, NESTED, HVP, "ag_hvp, nested");
    check_grads(AG_F32, PER_BLOCK, PENALTY, "gradient penalty, f32");
    check_grads(AG_F64, NESTED, PENALTY, "gradient penalty, nested");
}

/* The recorded derivative through a checkpoint equals its fast one. */
static void test_checkpoint_recorded_equals_fast(void **state)
{
    (void)state;
    static record fast, rec;
    grad_record(AG_F64, PER_BLOCK, GRADS, &fast);
    grad_record(AG_F64, PER_BLOCK, GRADS_GRAPH, &rec);
    assert_int_equal(fast.n, rec.n);
    tg_assert_doubles_close((const double *)rec.bytes, (const double *)fast.bytes,
                            (int64_t)(fast.n / sizeof(double)), 1e-12, 1e-14, __FILE__,
                            __LINE__);
}

/* ---- gradcheck through a checkpoint ---- */

static ag_tensor *ckpt_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    model m = {.n_blocks = 2, .w1 = {in[0], in[1]}, .b1 = {in[2], in[3]},
               .w2 = {in[0], in[1]}, .b2 = {in[3], in[2]}};
    static blk blocks[2];
    static model keep;
    keep = m;
    ag_tensor *x = in[4];
    for (int l = 0; l < 2; l++) {
        blocks[l] = (blk){&keep, l};
        if (ag_checkpoint(t, block_fn, &blocks[l], 1, &x, 1, &x) != AG_OK)
            return NULL;
    }
    return ag_tanh(t, x);
}

static void test_checkpoint_gradcheck_f64(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    ag_tensor *in[5] = {new_param(AG_F64, 2, S(3, 3), &rng), new_param(AG_F64, 2, S(3, 3), &rng),
                        new_param(AG_F64, 1, S(3), &rng), new_param(AG_F64, 1, S(3), &rng),
                        new_param(AG_F64, 2, S(2, 3), &rng)};
    assert_gradcheck(ckpt_apply, NULL, in, 5, 1e-6, 1e-8);
    ag_gradcheck_opts o = {.rtol = 1e-5, .atol = 1e-7};
    ag_gradcheck_report r;
    if (ag_gradgradcheck(ckpt_apply, NULL, in, 5, &o, &r) != AG_OK)
        fail_msg("gradgradcheck: %s", r.message);
    for (int i = 0; i < 5; i++)
        ag_tensor_free(in[i]);
}

/* ---- several outputs, inputs passed through, tensors through ctx ---- */

typedef struct multi_ctx {
    ag_tensor *w, *c; /* a parameter and a tape tensor of this step */
} multi_ctx;

/* out = {h, tanh(h) * c, in[1] (passed through), h again}, h = x w^T */
static ag_status multi_fn(ag_tape *t, int n_in, ag_tensor *const *in, int n_out,
                          ag_tensor **out, void *ctx)
{
    assert_int_equal(n_in, 2);
    assert_int_equal(n_out, 4);
    const multi_ctx *m = ctx;
    ag_tensor *h = ag_matmul(t, in[0], m->w);
    out[0] = h;
    out[1] = ag_mul(t, ag_tanh(t, ag_mul(t, h, h)), m->c);
    out[2] = in[1];
    out[3] = h;
    return AG_OK;
}

static void multi_record(bool ckpt, record *r)
{
    ag_rng rng;
    ag_rng_seed(&rng, 9);
    ag_tensor *x = new_param(AG_F64, 2, S(3, 4), &rng), *w = new_param(AG_F64, 2, S(4, 2), &rng);
    ag_tensor *z = new_param(AG_F64, 2, S(3, 2), &rng), *u = new_param(AG_F64, 2, S(3, 2), &rng);
    ag_tape *t = ag_tape_new();
    multi_ctx m = {w, ag_exp(t, u)};
    ag_tensor *in[2] = {ag_mul_scalar(t, x, 1.5), z}, *out[4];
    if (ckpt) {
        assert_int_equal(ag_checkpoint(t, multi_fn, &m, 2, in, 4, out), AG_OK);
        assert_ptr_equal(out[2], z);
        assert_ptr_equal(out[3], out[0]);
    } else {
        assert_int_equal(multi_fn(t, 2, in, 4, out, &m), AG_OK);
    }
    /* out[3] (== out[0]) feeds the loss; out[0] also feeds out[1] inside */
    ag_tensor *loss = ag_sum(t, ag_add(t, ag_mul(t, out[1], out[2]), ag_sin(t, out[3])),
                             AG_ALL, false);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    r->n = 0;
    put(r, loss);
    put(r, ag_grad(x));
    put(r, ag_grad(w));
    put(r, ag_grad(z));
    put(r, ag_grad(u)); /* through the tape tensor c that fn read through ctx */
    put(r, ag_grad(out[0]));
    ag_tape_free(t);
    ag_tensor *own[4] = {x, w, z, u};
    for (int i = 0; i < 4; i++)
        ag_tensor_free(own[i]);
}

/* No inputs at all: fn reads a parameter through ctx. */
static ag_status param_fn(ag_tape *t, int n_in, ag_tensor *const *in, int n_out,
                          ag_tensor **out, void *ctx)
{
    assert_int_equal(n_in, 0);
    (void)in;
    (void)n_out;
    out[0] = ag_tanh(t, ctx);
    return AG_OK;
}

static void test_checkpoint_outputs_and_ctx_tensors(void **state)
{
    (void)state;
    static record plain, ckpt;
    multi_record(false, &plain);
    multi_record(true, &ckpt);
    assert_same_bytes(&ckpt, &plain, "four outputs, a tape tensor through ctx");
    ag_rng rng;
    ag_rng_seed(&rng, 2);
    ag_tensor *w = new_param(AG_F64, 1, S(4), &rng), *y;
    ag_tape *t = ag_tape_new();
    assert_int_equal(ag_checkpoint(t, param_fn, w, 0, NULL, 1, &y), AG_OK);
    assert_int_equal(ag_backward(t, ag_sum(t, y, AG_ALL, false)), AG_OK);
    for (int i = 0; i < 4; i++) /* d tanh = 1 - tanh^2 */
        assert_true(fabs(ag_get(ag_grad(w), i) - (1.0 - ag_get(y, i) * ag_get(y, i))) < 1e-15);
    ag_tape_free(t);
    ag_tensor_free(w);
}

/* ---- memory ---- */

static size_t step_peak(ckpt_mode mode, size_t *used_after)
{
    ag_rng drop;
    ag_rng_seed(&drop, 1);
    model m = model_sized(AG_F32, 8, 64, 32, 0.1, &drop);
    ag_tape *t = ag_tape_new();
    ag_tape_set_checkpoint_rng(t, &drop);
    blk blocks[MAX_BLOCKS];
    ag_tensor *loss = loss_of(t, forward(t, &m, mode, blocks));
    assert_int_equal(ag_backward(t, loss), AG_OK);
    size_t peak = ag_tape_bytes_peak(t);
    *used_after = ag_tape_bytes_used(t);
    assert_true(peak >= *used_after);
    ag_tape_reset(t);
    assert_int_equal(ag_tape_bytes_peak(t), 0);
    ag_tape_free(t);
    model_free(&m);
    return peak;
}

static void test_checkpoint_lowers_peak(void **state)
{
    (void)state;
    size_t used_plain, used_ckpt;
    size_t plain = step_peak(PLAIN, &used_plain), ckpt = step_peak(PER_BLOCK, &used_ckpt);
    print_message("peak tape bytes, 8 blocks of 64: plain %zu, a checkpoint per block %zu\n",
                  plain, ckpt);
    /* without checkpoints nothing is given back: the peak is the end */
    assert_int_equal(plain, used_plain);
    assert_true(ckpt < plain / 2);
    /* a rebuild is given back: the peak lies above what stays */
    assert_true(ckpt > used_ckpt);
}

static void test_checkpoint_peak_tracks_high_water(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    assert_int_equal(ag_tape_bytes_peak(t), 0);
    ag_tensor *a = ag_tape_tensor(t, AG_F64, 1, S(1000));
    size_t one = ag_tape_bytes_used(t);
    assert_int_equal(ag_tape_bytes_peak(t), one);
    /* bigger than a block: the slow path */
    assert_non_null(ag_tape_tensor(t, AG_F64, 1, S(1 << 18)));
    assert_true(ag_tape_bytes_peak(t) >= one + (1 << 21));
    assert_int_equal(ag_tape_bytes_peak(t), ag_tape_bytes_used(t));
    (void)a;
    ag_tape_reset(t);
    assert_int_equal(ag_tape_bytes_peak(t), 0);
    assert_int_equal(ag_tape_bytes_peak(NULL), 0);
    assert_non_null(ag_last_error());
    ag_tape_free(t);
}

/* Checkpointed steps (nested, dropout, ag_backward) allocate nothing once
 * the first has run. */
static void test_checkpoint_step_allocates_nothing(void **state)
{
    (void)state;
    tg_count_allocs();
    ag_rng drop;
    ag_rng_seed(&drop, 1);
    model m = model_new(AG_F32, 5, 0.2, &drop);
    ag_tape *t = ag_tape_new();
    ag_tape_set_checkpoint_rng(t, &drop);
    blk blocks[MAX_BLOCKS];
    long after_first = 0;
    for (int s = 0; s < 4; s++) {
        ag_tensor *loss = loss_of(t, forward(t, &m, NESTED, blocks));
        assert_int_equal(ag_backward(t, loss), AG_OK);
        for (int l = 0; l < m.n_blocks; l++)
            ag_zero_grad(m.w1[l]);
        ag_tape_reset(t);
        if (s == 0)
            after_first = tg_alloc_count;
    }
    assert_int_equal(tg_alloc_count, after_first);
    ag_tape_free(t);
    model_free(&m);
    ag_set_allocator(NULL);
}

/* With grad disabled the segment is dropped too: only the output stays. */
static void test_checkpoint_grad_disabled_keeps_outputs(void **state)
{
    (void)state;
    ag_rng drop;
    ag_rng_seed(&drop, 1);
    model m = model_new(AG_F64, 1, 0.0, &drop);
    ag_tape *t = ag_tape_new();
    ag_tape_set_grad_enabled(t, false);
    ag_tensor *want = block_ops(t, &m, 0, m.x);
    size_t before = ag_tape_bytes_used(t);
    blk b = {&m, 0};
    ag_tensor *y;
    assert_int_equal(ag_checkpoint(t, block_fn, &b, 1, &m.x, 1, &y), AG_OK);
    assert_memory_equal(ag_data(y), ag_data(want), BATCH * WIDTH * sizeof(double));
    assert_false(ag_requires_grad(y));
    assert_int_equal(ag_tape_entries(t), 0);
    /* the output's header and data, rounded to the arena's alignment */
    assert_true(ag_tape_bytes_used(t) - before <= 2 * 320);
    ag_tape_free(t);
    model_free(&m);
}

/* ---- random draws ---- */

/* Dropout from a generator that is not registered: the rebuild draws
 * other masks, and backward says so instead of giving wrong gradients. */
static void test_checkpoint_unregistered_rng_is_caught(void **state)
{
    (void)state;
    ag_rng drop;
    ag_rng_seed(&drop, 1);
    model m = model_new(AG_F32, 2, 0.5, &drop);
    ag_tape *t = ag_tape_new();
    blk blocks[MAX_BLOCKS];
    ag_tensor *loss = loss_of(t, forward(t, &m, PER_BLOCK, blocks));
    assert_int_equal(ag_backward(t, loss), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_checkpoint (fn re-run in backward): output #1 "
                         "differs from the first run");
    assert_non_null(strstr(ag_tape_error(t), "ag_tape_set_checkpoint_rng"));
    ag_tape_free(t);
    model_free(&m);
}

/* The registered generator is replayed, and the caller's stream goes on
 * after the step exactly as without checkpoints (checked in check_step
 * too): the next draws agree. */
static void test_checkpoint_rng_stream_untouched(void **state)
{
    (void)state;
    uint64_t next[2];
    for (int c = 0; c < 2; c++) {
        ag_rng drop;
        ag_rng_seed(&drop, 3);
        model m = model_new(AG_F64, 3, 0.3, &drop);
        ag_tape *t = ag_tape_new();
        ag_tape_set_checkpoint_rng(t, &drop);
        blk blocks[MAX_BLOCKS];
        ag_tensor *loss = loss_of(t, forward(t, &m, c ? PER_BLOCK : PLAIN, blocks));
        assert_int_equal(ag_backward(t, loss), AG_OK);
        assert_int_equal(ag_backward(t, loss), AG_OK); /* a second sweep rebuilds again */
        next[c] = ag_rng_next(&drop);
        ag_tape_free(t);
        model_free(&m);
    }
    assert_true(next[0] == next[1]);
    assert_int_equal(ag_tape_set_checkpoint_rng(NULL, NULL), AG_ERR_ARG);
}

/* ---- misuse ---- */

/* fn gone wrong, in the way ctx (a misuse) says. */
typedef enum { FAILS, NULL_OUT, OTHER_TAPE, RESETS, SCALAR_OP, SHAPE_ERROR } misuse;
static ag_tape *g_other;

static ag_status misuse_fn(ag_tape *t, int n_in, ag_tensor *const *in, int n_out,
                           ag_tensor **out, void *ctx)
{
    (void)n_in;
    (void)n_out;
    out[0] = ag_exp(t, in[0]);
    switch (*(const misuse *)ctx) {
    case FAILS: return AG_ERR_NUMERIC;
    case NULL_OUT: out[1] = NULL; break;                        /* forgot one */
    case OTHER_TAPE: out[0] = ag_exp(g_other, in[0]); break;
    case RESETS: ag_tape_reset(t); break;
    case SCALAR_OP: ag_var_new(t, 1.0); break;
    case SHAPE_ERROR: out[0] = ag_matmul(t, in[0], in[0]); break; /* [2,3] x [2,3] */
    }
    return ag_tape_status(t);
}

static void expect_error(ag_checkpoint_fn fn, misuse how, int n_in, ag_tensor **in, int n_out,
                         ag_status st, const char *msg)
{
    ag_tape *t = ag_tape_new();
    void *ctx = &how;
    ag_tensor *out[2] = {in ? in[0] : NULL, in ? in[0] : NULL};
    assert_int_equal(ag_checkpoint(t, fn, ctx, n_in, in, n_out, out), st);
    tg_assert_tape_error(t, st, msg);
    if (n_out >= 1 && n_out <= 2) /* outputs NULL on failure */
        for (int j = 0; j < n_out; j++)
            assert_null(out[j]);
    assert_int_equal(ag_tape_entries(t), 0);
    ag_tape_free(t);
}

static void test_checkpoint_errors(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    ag_tensor *x = new_param(AG_F64, 2, S(2, 3), &rng), *in[2] = {x, NULL};
    g_other = ag_tape_new();
    expect_error(NULL, FAILS, 1, in, 1, AG_ERR_ARG, "ag_checkpoint: fn is NULL");
    expect_error(misuse_fn, FAILS, -1, in, 1, AG_ERR_ARG, "ag_checkpoint: n_in is -1");
    expect_error(misuse_fn, FAILS, 1 << 20, NULL, 1, AG_ERR_ARG, "n_in is 1048576 (must be");
    expect_error(misuse_fn, FAILS, 1, in, 0, AG_ERR_ARG, "ag_checkpoint: n_out is 0 (must be 1");
    expect_error(misuse_fn, FAILS, 1, NULL, 1, AG_ERR_NULL, "ag_checkpoint: in is NULL");
    expect_error(misuse_fn, FAILS, 2, in, 1, AG_ERR_NULL, "ag_checkpoint: input #2 is NULL");
    expect_error(misuse_fn, FAILS, 1, in, 1, AG_ERR_NUMERIC,
                 "ag_checkpoint: fn returned NaN or Inf");
    expect_error(misuse_fn, NULL_OUT, 1, in, 2, AG_ERR_NULL,
                 "ag_checkpoint: output #2 of fn is NULL");
    expect_error(misuse_fn, OTHER_TAPE, 1, in, 1, AG_ERR_STATE,
                 "ag_checkpoint: output #1 of fn belongs to another tape");
    expect_error(misuse_fn, RESETS, 1, in, 1, AG_ERR_STATE, "ag_checkpoint: fn reset the tape");
    expect_error(misuse_fn, SCALAR_OP, 1, in, 1, AG_ERR_STATE,
                 "ag_checkpoint: fn recorded scalar (ag_var) ops");
    expect_error(misuse_fn, SHAPE_ERROR, 1, in, 1, AG_ERR_SHAPE, "ag_matmul:");
    ag_tensor *y = ag_exp(g_other, x);
    expect_error(misuse_fn, FAILS, 1, &y, 1, AG_ERR_STATE,
                 "ag_checkpoint: input #1 belongs to another tape");
    ag_tensor *out;
    misuse how = FAILS;
    assert_int_equal(ag_checkpoint(NULL, misuse_fn, &how, 1, in, 1, &out), AG_ERR_ARG);
    assert_string_equal(ag_last_error(), "ag_checkpoint: tape is NULL");
    ag_tape *t = ag_tape_new();
    assert_int_equal(ag_checkpoint(t, misuse_fn, &how, 1, in, 1, NULL), AG_ERR_NULL);
    tg_assert_tape_error(t, AG_ERR_NULL, "ag_checkpoint: out is NULL");
    /* a kept error: fn is not called, the error stays */
    assert_int_equal(ag_checkpoint(t, misuse_fn, &how, 1, in, 1, &out), AG_ERR_NULL);
    ag_tape_free(t);
    ag_tape_free(g_other);
    ag_tensor_free(x);
}

/* A parameter read inside fn, changed between forward and backward: the
 * version check names it, as for any op. */
static void test_checkpoint_parameter_changed(void **state)
{
    (void)state;
    ag_rng drop;
    ag_rng_seed(&drop, 1);
    model m = model_new(AG_F64, 2, 0.0, &drop);
    ag_tensor_set_name(m.w2[1], "blocks.1.w2");
    ag_tape *t = ag_tape_new();
    blk blocks[MAX_BLOCKS];
    ag_tensor *loss = loss_of(t, forward(t, &m, PER_BLOCK, blocks));
    ag_set(m.w2[1], 0, 0.5);
    assert_int_equal(ag_backward(t, loss), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "ag_backward: blocks.1.w2 (input #");
    assert_non_null(strstr(ag_tape_error(t), "of checkpoint) was modified"));
    ag_tape_free(t);
    model_free(&m);
}

/* fn reads, in backward, a parameter it did not read in forward. */
static int g_branch;
static ag_tensor *g_extra;

static ag_status branch_fn(ag_tape *t, int n_in, ag_tensor *const *in, int n_out,
                           ag_tensor **out, void *ctx)
{
    (void)n_in, (void)n_out, (void)ctx;
    ag_tensor *x = g_branch ? ag_add(t, in[0], ag_mul_scalar(t, g_extra, 0.0)) : in[0];
    out[0] = ag_add(t, in[0], x); /* the same bits either way */
    return AG_OK;
}

static void test_checkpoint_other_path_is_caught(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    ag_tensor *x = new_param(AG_F64, 1, S(3), &rng);
    g_extra = new_param(AG_F64, 1, S(3), &rng);
    ag_tape *t = ag_tape_new();
    g_branch = 0;
    ag_tensor *y;
    assert_int_equal(ag_checkpoint(t, branch_fn, NULL, 1, &x, 1, &y), AG_OK);
    g_branch = 1;
    assert_int_equal(ag_backward(t, ag_sum(t, y, AG_ALL, false)), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "fn read a tensor it did not read in the first run");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(g_extra);
}

/* ---- the profiler's bytes ---- */

/* Each op is charged with all it put on the tape, what it allocated
 * before its entry was made included (dropout's mask): after a forward
 * the rows add up to the bytes in use.  A checkpoint's ops hold nothing
 * once it dropped them; what it keeps is charged to its own rows. */
static int64_t profile_bytes(ag_tape *t, const char *op, int64_t *total)
{
    char buf[8192] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    assert_int_equal(ag_tape_profile(t, f), AG_OK);
    fclose(f);
    int64_t found = -1;
    *total = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64];
        long long calls, bytes;
        double fw, bw;
        if (sscanf(line, "%63s %lld %lf %lf %lld", name, &calls, &fw, &bw, &bytes) != 5)
            continue;
        *total += bytes;
        if (!strcmp(name, op))
            found = bytes;
    }
    return found;
}

static void test_checkpoint_profile_bytes(void **state)
{
    (void)state;
    ag_rng drop;
    ag_rng_seed(&drop, 1);
    for (int c = 0; c < 2; c++) {
        model m = model_new(AG_F32, 3, 0.5, &drop);
        ag_tape *t = ag_tape_new();
        ag_tape_set_checkpoint_rng(t, &drop);
        ag_tape_set_profile(t, true);
        blk blocks[MAX_BLOCKS];
        ag_tensor *loss = loss_of(t, forward(t, &m, c ? PER_BLOCK : PLAIN, blocks));
        int64_t total, drop_bytes = profile_bytes(t, "dropout", &total);
        assert_int_equal(total, (int64_t)ag_tape_bytes_used(t));
        if (c) {
            assert_int_equal(drop_bytes, 0);
            assert_true(profile_bytes(t, "checkpoint_out", &total) > 0);
        } else { /* three masks of a byte per element, at least */
            assert_true(drop_bytes >= 3 * BATCH * WIDTH * (4 + 1));
        }
        assert_int_equal(ag_backward(t, loss), AG_OK);
        ag_tape_free(t);
        model_free(&m);
    }
}

/* ---- nn_mlp's checkpoint option ---- */

static void mlp_record(int every, record *r)
{
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    nn_params *p = nn_params_new();
    nn_mlp *mlp = nn_mlp_new(p, "mlp", 5, S(4, 6, 6, 6, 3), true, NN_ACT_GELU, &rng);
    assert_non_null(mlp);
    assert_int_equal(nn_mlp_set_checkpoint(mlp, every), AG_OK);
    ag_tensor *x = ag_tensor_uniform(AG_F32, 2, S(5, 4), -1, 1, &rng);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = nn_mlp_forward(t, mlp, x);
    assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, y, y), AG_ALL, false)), AG_OK);
    r->n = 0;
    put(r, y);
    int n;
    ag_tensor **ps = nn_params_tensors(p, &n);
    for (int i = 0; i < n; i++)
        put(r, ag_grad(ps[i]));
    ag_tape_free(t);
    ag_tensor_free(x);
    nn_mlp_free(mlp);
    nn_params_free(p);
}

static void test_checkpoint_nn_mlp_option(void **state)
{
    (void)state;
    static record plain, ckpt;
    mlp_record(0, &plain);
    for (int every = 1; every <= 4; every++) {
        mlp_record(every, &ckpt);
        assert_same_bytes(&ckpt, &plain, "nn_mlp with checkpoints");
    }
    assert_int_equal(nn_mlp_set_checkpoint(NULL, 1), AG_ERR_ARG);
    assert_non_null(ag_last_error());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checkpoint_backward_bitwise_f32),
        cmocka_unit_test(test_checkpoint_backward_bitwise_f64),
        cmocka_unit_test(test_checkpoint_nested_bitwise),
        cmocka_unit_test(test_checkpoint_debug_modes),
        cmocka_unit_test(test_checkpoint_gradients_bitwise),
        cmocka_unit_test(test_checkpoint_second_order_bitwise),
        cmocka_unit_test(test_checkpoint_recorded_equals_fast),
        cmocka_unit_test(test_checkpoint_gradcheck_f64),
        cmocka_unit_test(test_checkpoint_outputs_and_ctx_tensors),
        cmocka_unit_test(test_checkpoint_lowers_peak),
        cmocka_unit_test(test_checkpoint_peak_tracks_high_water),
        cmocka_unit_test(test_checkpoint_step_allocates_nothing),
        cmocka_unit_test(test_checkpoint_grad_disabled_keeps_outputs),
        cmocka_unit_test(test_checkpoint_unregistered_rng_is_caught),
        cmocka_unit_test(test_checkpoint_rng_stream_untouched),
        cmocka_unit_test(test_checkpoint_errors),
        cmocka_unit_test(test_checkpoint_parameter_changed),
        cmocka_unit_test(test_checkpoint_other_path_is_caught),
        cmocka_unit_test(test_checkpoint_profile_bytes),
        cmocka_unit_test(test_checkpoint_nn_mlp_option),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
