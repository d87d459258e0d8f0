/* ops_binary.c — broadcasting elementwise binary ops: add sub mul div pow
 * maximum minimum.  Notation: x = a, y = b, z = out, g = dL/dz.  The fast
 * backward accumulates straight into an input's gradient through its
 * broadcast strides, so a broadcast input's gradient is summed without a
 * temporary; the recorded derivative reduces with ag_sum_to instead.
 *
 * Each op is one row: its own row kernels, instantiated from shared inline
 * loops with the op's kind (and, backward, the input) as compile-time
 * constants, so nothing is dispatched inside a row. */
#include "autograd_internal.h"
#include "kernels/vmath.h"

#include <math.h>

/* A compile-time tag for the shared loops, never stored. */
typedef enum { B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_MAX, B_MIN } bin_kind;

typedef struct {
    void *out;
    const void *a, *b, *g;
    void *dst;
} bin_ctx;

/* z = f(x, y) in T (pow in double); a NaN x wins maximum/minimum. */
#define BIN_F(T)                                                              \
    AG_INLINE T bin_f_##T(bin_kind K, T x, T y)                               \
    {                                                                         \
        switch (K) {                                                          \
        case B_ADD: return x + y;                                             \
        case B_SUB: return x - y;                                             \
        case B_MUL: return x * y;                                             \
        case B_DIV: return x / y;                                             \
        case B_POW: return (T)pow(x, y);                                      \
        case B_MAX: return (x > y || x != x) ? x : y;                         \
        case B_MIN: return (x < y || x != x) ? x : y;                         \
        }                                                                     \
        return 0;                                                             \
    }
BIN_F(float)
BIN_F(double)

/* dz/d(input W) times g, in double; the recorded derivatives below say
 * the same math in ops. */
AG_INLINE double bin_d(bin_kind K, int W, double x, double y, double z, double g)
{
    switch (K) {
    case B_ADD: return g;                       /* dx = g;  dy = g */
    case B_SUB: return W == 0 ? g : -g;         /* dx = g;  dy = -g */
    case B_MUL: return W == 0 ? g * y : g * x;  /* dx = g y;  dy = g x */
    case B_DIV: /* dx = g / y;  dy = -g x / y^2 */
        return W == 0 ? g / y : -g * x / (y * y);
    case B_POW: /* dx = g y x^(y-1);  dy = g z log x */
        return W == 0 ? g * y * pow(x, y - 1) : g * z * log(x);
    case B_MAX: /* the larger input takes g; a tie splits it, as PyTorch does */
        if (W == 1)
            return g * (y > x ? 1 : x == y ? 0.5 : 0);
        return g * (x > y ? 1 : x == y ? 0.5 : 0);
    case B_MIN: /* the smaller input takes g; a tie splits it */
        if (W == 1)
            return g * (y < x ? 1 : x == y ? 0.5 : 0);
        return g * (x < y ? 1 : x == y ? 0.5 : 0);
    }
    return 0;
}

/* pow's vmath.h blocks: stack buffers of this many elements (2 KiB f64) */
#define BIN_BLOCK 256

/* One innermost row of the result (ag_bcast_walk's callback body):
 * forward z = f(x, y); backward dst[W] += dz/d(input W) * g at W's
 * broadcast offset. */
#define BIN_ROWS(T)                                                           \
    AG_INLINE void fwd_row_##T(bin_kind K, const bin_ctx *c, int64_t oo,      \
                               const int64_t *off, const int64_t *s, int64_t n) \
    {                                                                         \
        T *restrict o = (T *)c->out + oo;                                     \
        const T *a = (const T *)c->a + off[0], *b = (const T *)c->b + off[1]; \
        if (K == B_POW && s[0] == 1 && s[1] <= 1) { /* vmath.h's pow */      \
            if (s[1] == 1)                                                    \
                ag_vm_##T()->pow(a, b, o, n);                                 \
            else                                                              \
                ag_vm_##T()->powc(a, b[0], o, n);                             \
            return;                                                           \
        }                                                                     \
        if (s[0] == 1 && s[1] == 1) { /* no broadcast in the row */          \
            for (int64_t i = 0; i < n; i++)                                   \
                o[i] = bin_f_##T(K, a[i], b[i]);                              \
            return;                                                           \
        }                                                                     \
        for (int64_t i = 0; i < n; i++)                                       \
            o[i] = bin_f_##T(K, a[i * s[0]], b[i * s[1]]);                    \
    }                                                                         \
    /* pow's backward over a row without broadcast, m <= BIN_BLOCK at a     \
     * time through vmath.h: dx += g y x^(y-1) (W 0), dy += g z log x (W 1) */ \
    AG_INLINE void pow_bwd_row_##T(int W, const T *a, const T *b, const T *z, \
                                   const T *g, T *d, int64_t n)               \
    {                                                                         \
        T t[BIN_BLOCK];                                                       \
        for (int64_t i0 = 0; i0 < n; i0 += BIN_BLOCK) {                       \
            int64_t m = n - i0 < BIN_BLOCK ? n - i0 : BIN_BLOCK;              \
            const T *x = a + i0, *y = b + i0;                                 \
            if (W == 0) {                                                     \
                for (int64_t i = 0; i < m; i++)                               \
                    t[i] = y[i] - 1;                                          \
                ag_vm_##T()->pow(x, t, t, m);                                 \
                for (int64_t i = 0; i < m; i++)                               \
                    d[i0 + i] += g[i0 + i] * y[i] * t[i];                     \
            } else {                                                          \
                ag_vm_##T()->log(x, t, m);                                    \
                for (int64_t i = 0; i < m; i++)                               \
                    d[i0 + i] += g[i0 + i] * z[i0 + i] * t[i];                \
            }                                                                 \
        }                                                                     \
    }                                                                         \
    AG_INLINE void bwd_row_##T(bin_kind K, int W, const bin_ctx *c, int64_t oo, \
                               const int64_t *off, const int64_t *s, int64_t n) \
    {                                                                         \
        const T *a = (const T *)c->a + off[0], *b = (const T *)c->b + off[1]; \
        const T *z = (const T *)c->out + oo, *g = (const T *)c->g + oo;       \
        T *d = (T *)c->dst + off[W];                                          \
        int64_t sd = s[W];                                                    \
        if (K == B_POW && s[0] == 1 && s[1] == 1) {                           \
            pow_bwd_row_##T(W, a, b, z, g, d, n);                             \
            return;                                                           \
        }                                                                     \
        for (int64_t i = 0; i < n; i++)                                       \
            d[i * sd] += (T)bin_d(K, W, a[i * s[0]], b[i * s[1]], z[i], g[i]); \
    }
BIN_ROWS(float)
BIN_ROWS(double)

/* The row kernels of op NAME: forward in each dtype, backward for each
 * input in each dtype, as ag_bcast_row callbacks. */
#define BIN_KERNELS(NAME, K)                                                  \
    static void NAME##_fwd64(void *c, int64_t oo, const int64_t *off,         \
                             const int64_t *s, int64_t n)                     \
    {                                                                         \
        fwd_row_double(K, c, oo, off, s, n);                                  \
    }                                                                         \
    static void NAME##_fwd32(void *c, int64_t oo, const int64_t *off,         \
                             const int64_t *s, int64_t n)                     \
    {                                                                         \
        fwd_row_float(K, c, oo, off, s, n);                                   \
    }                                                                         \
    static void NAME##_bwd64_a(void *c, int64_t oo, const int64_t *off,       \
                               const int64_t *s, int64_t n)                   \
    {                                                                         \
        bwd_row_double(K, 0, c, oo, off, s, n);                               \
    }                                                                         \
    static void NAME##_bwd64_b(void *c, int64_t oo, const int64_t *off,       \
                               const int64_t *s, int64_t n)                   \
    {                                                                         \
        bwd_row_double(K, 1, c, oo, off, s, n);                               \
    }                                                                         \
    static void NAME##_bwd32_a(void *c, int64_t oo, const int64_t *off,       \
                               const int64_t *s, int64_t n)                   \
    {                                                                         \
        bwd_row_float(K, 0, c, oo, off, s, n);                                \
    }                                                                         \
    static void NAME##_bwd32_b(void *c, int64_t oo, const int64_t *off,       \
                               const int64_t *s, int64_t n)                   \
    {                                                                         \
        bwd_row_float(K, 1, c, oo, off, s, n);                                \
    }                                                                         \
    static void NAME##_forward(ag_entry *e)                                   \
    {                                                                         \
        bin_forward(e, e->out->dtype == AG_F64 ? NAME##_fwd64 : NAME##_fwd32); \
    }                                                                         \
    static void NAME##_backward(ag_tape *t, ag_entry *e)                      \
    {                                                                         \
        bool f64 = e->out->dtype == AG_F64;                                   \
        ag_bcast_row rows[2] = {f64 ? NAME##_bwd64_a : NAME##_bwd32_a,        \
                                f64 ? NAME##_bwd64_b : NAME##_bwd32_b};       \
        bin_backward(t, e, rows);                                             \
    }

typedef struct {
    int64_t a[AG_MAX_DIMS], b[AG_MAX_DIMS];
} bin_strides;

static bin_strides strides_of(const ag_entry *e)
{
    bin_strides st;
    ag_broadcast_strides(e->in[0], e->out->ndim, e->out->shape, st.a);
    ag_broadcast_strides(e->in[1], e->out->ndim, e->out->shape, st.b);
    return st;
}

/* Without broadcasting (both inputs of the result's shape) the result is
 * one flat row, cut into chunks for the thread pool when large. */
typedef struct {
    ag_bcast_row row;
    bin_ctx *c;
} flat_ctx;

static void flat_range(void *vf, int64_t lo, int64_t hi)
{
    const flat_ctx *f = vf;
    static const int64_t unit[2] = {1, 1};
    f->row(f->c, lo, (int64_t[2]){lo, lo}, unit, hi - lo);
}

/* Runs row over the whole result: flat (in parallel when large) or by the
 * broadcast walk. */
static void bin_walk(const ag_entry *e, ag_bcast_row row, bin_ctx *c)
{
    ag_tensor *z = e->out;
    if (e->in[0]->numel == z->numel && e->in[1]->numel == z->numel) {
        flat_ctx f = {row, c};
        ag_par_elems(z->numel, flat_range, &f);
        return;
    }
    bin_strides st = strides_of(e);
    const int64_t *s[2] = {st.a, st.b};
    ag_bcast_walk(z->ndim, z->shape, 2, s, row, c);
}

static void bin_forward(ag_entry *e, ag_bcast_row row)
{
    bin_ctx c = {.out = e->out->data, .a = e->in[0]->data, .b = e->in[1]->data};
    bin_walk(e, row, &c);
}

/* rows[k]: the backward row kernel for input k */
static void bin_backward(ag_tape *tape, ag_entry *e, const ag_bcast_row *rows)
{
    ag_tensor *z = e->out;
    for (int k = 0; k < 2; k++) {
        void *dst = ag_grad_data(tape, e->in[k]);
        if (!dst)
            continue;
        bin_ctx c = {z->data, e->in[0]->data, e->in[1]->data, z->grad->data, dst};
        bin_walk(e, rows[k], &c);
    }
}

/* fn: the public function, for messages */
static ag_tensor *bin_run(ag_tape *tape, const ag_op_def *def, const char *fn, ag_tensor *a,
                          ag_tensor *b)
{
    ag_tensor *in[2] = {a, b};
    int nd;
    int64_t shape[AG_MAX_DIMS];
    if (!ag_check_inputs(tape, fn, 2, in) || !ag_check_same_dtype(tape, fn, a, b) ||
        !ag_broadcast_shape(tape, fn, a, b, &nd, shape))
        return NULL;
    ag_op_call c = {.def = def, .in = in, .n_in = 2, .dtype = a->dtype, .ndim = nd,
                    .shape = shape};
    return ag_op_run(tape, &c);
}

/* ---- gradcheck samples: same shapes, broadcasting both ways, scalars ---- */

static bool bin_sample(int which, ag_rng *rng, ag_op_sample *s, double lo, double hi)
{
    static const int64_t shapes[][2][4] = {
        /* ndim a, dims a...            ndim b, dims b... */
        {{2, 3, 4}, {2, 3, 4}},
        {{3, 2, 3, 4}, {1, 4}},
        {{2, 3, 1}, {2, 1, 4}},
        {{0}, {2, 2, 3}},
        {{3, 2, 1, 3}, {3, 2, 4, 1}},
    };
    if (which >= (int)(sizeof shapes / sizeof shapes[0]))
        return false;
    for (int k = 0; k < 2; k++) {
        const int64_t *d = shapes[which][k];
        s->in[k] = ag_sample_tensor(rng, (int)d[0], d + 1, AG_SAMPLE_RANGE, lo, hi);
    }
    s->n_in = 2;
    return true;
}

/* ---- the rows ----
 * Each op NAME supplies NAME_vjp, its recorded derivative in ops of x =
 * e->in[0], y = e->in[1], z = e->out and g, each input's gradient summed
 * back to its shape; the macro adds kernels, samples, row and function. */
#define BINARY_OP(NAME, KIND, LO, HI)                                         \
    BIN_KERNELS(NAME, KIND)                                                   \
    static ag_tensor *NAME##_apply(ag_tape *t, ag_tensor **in, void *ctx)     \
    {                                                                         \
        (void)ctx;                                                            \
        return ag_##NAME(t, in[0], in[1]);                                    \
    }                                                                         \
    static bool NAME##_sample(int which, ag_rng *rng, ag_op_sample *s)        \
    {                                                                         \
        s->fn = NAME##_apply;                                                 \
        return bin_sample(which, rng, s, LO, HI);                             \
    }                                                                         \
    const ag_op_def ag_op_##NAME = {.name = #NAME, .forward = NAME##_forward, \
                                    .backward = NAME##_backward,              \
                                    .vjp = NAME##_vjp, .sample = NAME##_sample}; \
    ag_tensor *ag_##NAME(ag_tape *t, ag_tensor *a, ag_tensor *b)              \
    {                                                                         \
        return bin_run(t, &ag_op_##NAME, "ag_" #NAME, a, b);                 \
    }

/* Which inputs want a gradient: ga / gb set only for those. */
#define WANT_A ag_needs_grad(t, e->in[0])
#define WANT_B ag_needs_grad(t, e->in[1])

/* dx = g;  dy = g */
static void add_vjp(ag_tape *t, const ag_entry *e, ag_tensor *g, ag_tensor **gin)
{
    if (WANT_A)
        gin[0] = ag_sum_to(t, g, e->in[0]);
    if (WANT_B)
        gin[1] = ag_sum_to(t, g, e->in[1]);
}
BINARY_OP(add, B_ADD, -2, 2)

/* dx = g;  dy = -g */
static void sub_vjp(ag_tape *t, const ag_entry *e, ag_tensor *g, ag_tensor **gin)
{
    if (WANT_A)
        gin[0] = ag_sum_to(t, g, e->in[0]);
    if (WANT_B)
        gin[1] = ag_sum_to(t, ag_neg(t, g), e->in[1]);
}
BINARY_OP(sub, B_SUB, -2, 2)

/* dx = g y;  dy = g x */
static void mul_vjp(ag_tape *t, const ag_entry *e, ag_tensor *g, ag_tensor **gin)
{
    ag_tensor *x = e->in[0], *y = e->in[1];
    if (WANT_A)
        gin[0] = ag_sum_to(t, ag_mul(t, g, y), x);
    if (WANT_B)
        gin[1] = ag_sum_to(t, ag_mul(t, g, x), y);
}
BINARY_OP(mul, B_MUL, -2, 2)

/* dx = g / y;  dy = -g x / y^2 */
static void div_vjp(ag_tape *t, const ag_entry *e, ag_tensor *g, ag_tensor **gin)
{
    ag_tensor *x = e->in[0], *y = e->in[1];
    if (WANT_A)
        gin[0] = ag_sum_to(t, ag_div(t, g, y), x);
    if (WANT_B)
        gin[1] = ag_sum_to(t, ag_neg(t, ag_div(t, ag_mul(t, g, x), ag_mul(t, y, y))), y);
}
BINARY_OP(div, B_DIV, 0.5, 2)

/* dx = g y x^(y-1);  dy = g z log x  (x > 0 for dy) */
static void pow_vjp(ag_tape *t, const ag_entry *e, ag_tensor *g, ag_tensor **gin)
{
    ag_tensor *x = e->in[0], *y = e->in[1];
    if (WANT_A) {
        ag_tensor *d = ag_mul(t, y, ag_pow(t, x, ag_add_scalar(t, y, -1.0)));
        gin[0] = ag_sum_to(t, ag_mul(t, g, d), x);
    }
    if (WANT_B)
        gin[1] = ag_sum_to(t, ag_mul(t, ag_mul(t, g, e->out), ag_log(t, x)), y);
}
BINARY_OP(pow, B_POW, 0.5, 2)

/* ---- maximum / minimum: g times a constant mask of the result's shape,
 * 1 where the input wins, 0.5 on a tie, 0 where it loses ---- */

typedef struct {
    const ag_tensor *self, *other; /* the input whose mask this is, the other one */
    int ndim;
    const int64_t *shape;          /* the result's */
    int64_t ss[AG_MAX_DIMS], so[AG_MAX_DIMS]; /* their broadcast strides */
    bool max;
} win_ctx;

static double fill_win(const void *vc, int64_t i)
{
    const win_ctx *c = vc;
    int64_t os = 0, oo = 0;
    for (int d = c->ndim - 1; d >= 0; d--) { /* unravel i over the result */
        int64_t k = i % c->shape[d];
        i /= c->shape[d];
        os += k * c->ss[d];
        oo += k * c->so[d];
    }
    double u = ag_get(c->self, os), v = ag_get(c->other, oo);
    bool wins = c->max ? u > v : u < v;
    return wins ? 1 : u == v ? 0.5 : 0;
}

static ag_tensor *win_mask(ag_tape *t, const ag_entry *e, int k, bool max)
{
    const ag_tensor *z = e->out;
    win_ctx c = {.self = e->in[k], .other = e->in[1 - k], .ndim = z->ndim,
                 .shape = z->shape, .max = max};
    ag_broadcast_strides(c.self, z->ndim, z->shape, c.ss);
    ag_broadcast_strides(c.other, z->ndim, z->shape, c.so);
    return ag_const_fill(t, z->dtype, z->ndim, z->shape, fill_win, &c);
}

/* dx = g * [x wins] (0.5 on a tie);  dy = g * [y wins] (0.5 on a tie) */
static void extremum_vjp(ag_tape *t, const ag_entry *e, ag_tensor *g, ag_tensor **gin,
                         bool max)
{
    for (int k = 0; k < 2; k++)
        if (ag_needs_grad(t, e->in[k]))
            gin[k] = ag_sum_to(t, ag_mul(t, g, win_mask(t, e, k, max)), e->in[k]);
}

static void maximum_vjp(ag_tape *t, const ag_entry *e, ag_tensor *g, ag_tensor **gin)
{
    extremum_vjp(t, e, g, gin, true);
}
BINARY_OP(maximum, B_MAX, -2, 2)

static void minimum_vjp(ag_tape *t, const ag_entry *e, ag_tensor *g, ag_tensor **gin)
{
    extremum_vjp(t, e, g, gin, false);
}
BINARY_OP(minimum, B_MIN, -2, 2)
