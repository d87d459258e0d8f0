/* ops_binary.c — broadcasting elementwise binary ops: add sub mul div pow
 * maximum minimum.  Notation: x = a, y = b, z = out, g = dL/dz.  Backward
 * accumulates straight into the input gradient through its broadcast
 * strides, so a broadcast input's gradient is summed without a temporary. */
#include "autograd_internal.h"

#include <math.h>

typedef enum { B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_MAX, B_MIN } bin_kind;

typedef struct {
    void *out;
    const void *a, *b, *g;
    void *dst;
    bin_kind kind;
    int which; /* backward: 0 for d/da, 1 for d/db */
} bin_ctx;

#define BIN_LOOP(T, EXPR)                                                     \
    for (int64_t i = 0; i < n; i++) {                                         \
        T x = a[i * s[0]], y = b[i * s[1]];                                   \
        o[i] = (T)(EXPR);                                                     \
    }

#define BIN_FWD_ROW(T)                                                        \
    static void fwd_row_##T(void *vc, int64_t oo, const int64_t *off,         \
                            const int64_t *s, int64_t n)                      \
    {                                                                         \
        bin_ctx *c = vc;                                                      \
        T *o = (T *)c->out + oo;                                              \
        const T *a = (const T *)c->a + off[0], *b = (const T *)c->b + off[1]; \
        switch (c->kind) {                                                    \
        case B_ADD: BIN_LOOP(T, x + y) break;                                 \
        case B_SUB: BIN_LOOP(T, x - y) break;                                 \
        case B_MUL: BIN_LOOP(T, x * y) break;                                 \
        case B_DIV: BIN_LOOP(T, x / y) break;                                 \
        case B_POW: BIN_LOOP(T, pow(x, y)) break;                             \
        case B_MAX: BIN_LOOP(T, (x > y || x != x) ? x : y) break;             \
        case B_MIN: BIN_LOOP(T, (x < y || x != x) ? x : y) break;             \
        }                                                                     \
    }
BIN_FWD_ROW(float)
BIN_FWD_ROW(double)

/* dst[k] += g * dz/d(arg k), at the broadcast offset of arg k */
#define BIN_BWD_LOOP(T, DA, DB)                                               \
    for (int64_t i = 0; i < n; i++) {                                         \
        double x = a[i * s[0]], y = b[i * s[1]], z = zz[i], gi = g[i];       \
        (void)x; (void)y; (void)z;                                            \
        d[i * sd] += (T)(c->which == 0 ? (DA) : (DB));                        \
    }

#define BIN_BWD_ROW(T)                                                        \
    static void bwd_row_##T(void *vc, int64_t oo, const int64_t *off,         \
                            const int64_t *s, int64_t n)                      \
    {                                                                         \
        bin_ctx *c = vc;                                                      \
        const T *a = (const T *)c->a + off[0], *b = (const T *)c->b + off[1]; \
        const T *zz = (const T *)c->out + oo, *g = (const T *)c->g + oo;     \
        T *d = (T *)c->dst + off[c->which];                                   \
        int64_t sd = s[c->which];                                             \
        switch (c->kind) {                                                    \
        /* dx += g;  dy += +-g */                                             \
        case B_ADD: BIN_BWD_LOOP(T, gi, gi) break;                            \
        case B_SUB: BIN_BWD_LOOP(T, gi, -gi) break;                           \
        /* dx += g*y;  dy += g*x */                                           \
        case B_MUL: BIN_BWD_LOOP(T, gi * y, gi * x) break;                    \
        /* dx += g/y;  dy += -g*x/y^2 */                                      \
        case B_DIV: BIN_BWD_LOOP(T, gi / y, -gi * x / (y * y)) break;         \
        /* dx += g*y*x^(y-1);  dy += g*z*log(x) */                            \
        case B_POW: BIN_BWD_LOOP(T, gi * y * pow(x, y - 1), gi * z * log(x)) break; \
        /* the larger input takes g; a tie splits it, as PyTorch does */     \
        case B_MAX: BIN_BWD_LOOP(T, gi * (x > y ? 1 : x == y ? 0.5 : 0),     \
                                 gi * (y > x ? 1 : x == y ? 0.5 : 0)) break;  \
        case B_MIN: BIN_BWD_LOOP(T, gi * (x < y ? 1 : x == y ? 0.5 : 0),     \
                                 gi * (y < x ? 1 : x == y ? 0.5 : 0)) break;  \
        }                                                                     \
    }
BIN_BWD_ROW(float)
BIN_BWD_ROW(double)

static void bin_forward(ag_entry *e)
{
    ag_tensor *z = e->out;
    int64_t sa[AG_MAX_DIMS], sb[AG_MAX_DIMS];
    ag_broadcast_strides(e->in[0], z->ndim, z->shape, sa);
    ag_broadcast_strides(e->in[1], z->ndim, z->shape, sb);
    const int64_t *st[2] = {sa, sb};
    bin_ctx c = {z->data, e->in[0]->data, e->in[1]->data, NULL, NULL,
                 (bin_kind)e->iattr[0], 0};
    ag_bcast_walk(z->ndim, z->shape, 2, st, z->dtype == AG_F64 ? fwd_row_double : fwd_row_float,
                  &c);
}

static void bin_backward(ag_tape *tape, ag_entry *e)
{
    ag_tensor *z = e->out;
    int64_t sa[AG_MAX_DIMS], sb[AG_MAX_DIMS];
    ag_broadcast_strides(e->in[0], z->ndim, z->shape, sa);
    ag_broadcast_strides(e->in[1], z->ndim, z->shape, sb);
    const int64_t *st[2] = {sa, sb};
    for (int k = 0; k < 2; k++) {
        void *dst = ag_grad_data(tape, e->in[k]);
        if (!dst)
            continue;
        bin_ctx c = {z->data, e->in[0]->data, e->in[1]->data, z->grad->data, dst,
                     (bin_kind)e->iattr[0], k};
        ag_bcast_walk(z->ndim, z->shape, 2, st,
                      z->dtype == AG_F64 ? bwd_row_double : bwd_row_float, &c);
    }
}

static ag_tensor *bin_run(ag_tape *tape, const ag_op_def *def, bin_kind kind,
                          ag_tensor *a, ag_tensor *b)
{
    ag_tensor *in[2] = {a, b};
    int nd;
    int64_t shape[AG_MAX_DIMS];
    if (!ag_check_inputs(tape, def->name, 2, in) ||
        !ag_check_same_dtype(tape, def->name, a, b) ||
        !ag_broadcast_shape(tape, def->name, a, b, &nd, shape))
        return NULL;
    ag_op_call c = {.def = def, .in = in, .n_in = 2, .dtype = a->dtype, .ndim = nd,
                    .shape = shape, .iattr = {kind}};
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

#define BINARY_OP(NAME, KIND, LO, HI)                                         \
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
    const ag_op_def ag_op_##NAME = {#NAME, 2, bin_forward, bin_backward,      \
                                    NAME##_sample};                           \
    ag_tensor *ag_##NAME(ag_tape *t, ag_tensor *a, ag_tensor *b)              \
    {                                                                         \
        return bin_run(t, &ag_op_##NAME, KIND, a, b);                         \
    }

/* Sample ranges keep away from poles (div) and the domain edge (pow). */
BINARY_OP(add, B_ADD, -2, 2)
BINARY_OP(sub, B_SUB, -2, 2)
BINARY_OP(mul, B_MUL, -2, 2)
BINARY_OP(div, B_DIV, 0.5, 2)
BINARY_OP(pow, B_POW, 0.5, 2)
BINARY_OP(maximum, B_MAX, -2, 2)
BINARY_OP(minimum, B_MIN, -2, 2)
