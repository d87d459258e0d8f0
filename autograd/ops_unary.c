/* ops_unary.c — elementwise unary ops, including those with a constant
 * (leaky_relu slope, add/mul/pow by a scalar), and erf, the primitive
 * exact gelu's recorded derivative needs.  Notation: x = input, z =
 * output, c = the constant, g = dL/dz.  The transcendentals (and the
 * derivatives that need one) run through kernels/vmath.h, vectorised in
 * the tensor's dtype within a few ulp; the other math runs in double and
 * is rounded once to the tensor's dtype.
 *
 * Each op is one row with its own forward and fast backward: a kernel
 * instantiated with the op's kind as a compile-time constant (the switch
 * folds away), and its own recorded derivative, written with ag_ ops in
 * terms of x and z, next to its row at the end of the file. */
#include "autograd_internal.h"
#include "kernels/vmath.h"

#include <math.h>

#define SQRT_2_OVER_PI 0.7978845608028654
#define INV_SQRT_2 0.7071067811865476
#define INV_SQRT_2PI 0.3989422804014327
#define TWO_OVER_SQRT_PI 1.1283791670955126
#define GELU_K 0.044715 /* gelu_tanh: u = sqrt(2/pi) (x + k x^3) */

/* A compile-time tag for the shared kernels, never stored or switched on
 * at run time. */
typedef enum {
    U_NEG, U_EXP, U_LOG, U_SQRT, U_ABS, U_SIN, U_COS, U_TANH, U_SIGMOID, U_RELU,
    U_LEAKY, U_ERF, U_GELU, U_GELU_TANH, U_SOFTPLUS, U_ADDC, U_MULC, U_POWC
} un_kind;

/* ---- typed attributes ---- */
typedef struct {
    double slope; /* z = slope * x for x <= 0 */
} leaky_attr;
typedef struct {
    double c; /* add_scalar, mul_scalar, pow_scalar: the constant */
} scalar_attr;

/* z for the kinds whose forward is arithmetic (the others: un_vm) */
AG_INLINE double f_forward(un_kind k, double x, double c)
{
    switch (k) {
    case U_NEG: return -x;
    case U_SQRT: return sqrt(x);
    case U_ABS: return fabs(x);
    case U_LEAKY: return x > 0 ? x : c * x;
    case U_ADDC: return x + c;
    case U_MULC: return x * c;
    default: return 0;
    }
}

/* dz/dx from x, z and c, for the kinds whose derivative is arithmetic
 * (the others: un_vm_deriv): the fast backward is dx += g * dz/dx.  Each
 * line's math is repeated on the op's recorded derivative below. */
AG_INLINE double f_deriv(un_kind k, double x, double z, double c)
{
    switch (k) {
    case U_NEG: return -1;                      /* dx = -g */
    case U_EXP: return z;                       /* dx = g * z */
    case U_LOG: return 1.0 / x;                 /* dx = g / x */
    case U_SQRT: return 0.5 / z;                /* dx = g * 0.5 / z */
    case U_ABS: return x > 0 ? 1 : x < 0 ? -1 : 0; /* dx = g * sign(x) */
    case U_TANH: return 1.0 - z * z;            /* dx = g * (1 - z^2) */
    case U_SIGMOID: return z * (1.0 - z);       /* dx = g * z (1 - z) */
    case U_LEAKY: return x > 0 ? 1 : c;         /* dx = g * (x > 0 ? 1 : c) */
    case U_ADDC: return 1;                      /* dx = g */
    case U_MULC: return c;                      /* dx = g * c */
    default: return 0;
    }
}

/* dx += g * (x > 0), or dx = that into a fresh buffer (ag_grad_out), as
 * a mask: a random-sign branch mispredicts half the time (relu backward
 * ran at ~15 cycles an element). */
#define RELU_BWD(T)                                                           \
    static void relu_bwd_##T(const T *restrict x, const T *restrict g,        \
                             T *restrict d, int64_t n, bool fresh)            \
    {                                                                         \
        if (fresh) {                                                          \
            AG_SIMD                                                           \
            for (int64_t i = 0; i < n; i++)                                   \
                d[i] = g[i] * (T)(x[i] > 0);                                  \
            return;                                                           \
        }                                                                     \
        AG_SIMD                                                               \
        for (int64_t i = 0; i < n; i++)                                       \
            d[i] += g[i] * (T)(x[i] > 0);                                     \
    }
RELU_BWD(float)
RELU_BWD(double)

/* Whether kind K's forward is a vmath.h function. */
AG_INLINE bool un_vm(un_kind K)
{
    return K == U_EXP || K == U_LOG || K == U_SIN || K == U_COS || K == U_TANH ||
           K == U_SIGMOID || K == U_ERF || K == U_GELU || K == U_GELU_TANH ||
           K == U_SOFTPLUS || K == U_POWC;
}

/* Whether kind K's derivative needs a transcendental of x (the others
 * are arithmetic on x, z and c in f_deriv). */
AG_INLINE bool un_vm_deriv(un_kind K)
{
    return K == U_SIN || K == U_COS || K == U_ERF || K == U_GELU || K == U_GELU_TANH ||
           K == U_SOFTPLUS || K == U_POWC;
}

/* Derivatives with a transcendental go a block at a time through
 * vmath.h into stack buffers (2 KiB each, in L1). */
#define UN_BLOCK 256

/* The loops, inlined into each op's row with K a constant, so the switch
 * in f_forward / f_deriv / the vmath calls folds away and the simple kinds
 * vectorise. */
#define UN_LOOPS(T)                                                           \
    AG_INLINE void vm_fwd_##T(un_kind K, const T *x, T *z, int64_t n, double c) \
    {                                                                         \
        const ag_vmath_##T *vm = ag_vm_##T();                                 \
        switch (K) {                                                          \
        case U_EXP: vm->exp(x, z, n); break;                                  \
        case U_LOG: vm->log(x, z, n); break;                                  \
        case U_SIN: vm->sin(x, z, n); break;                                  \
        case U_COS: vm->cos(x, z, n); break;                                  \
        case U_TANH: vm->tanh(x, z, n); break;                                \
        case U_SIGMOID: vm->sigmoid(x, z, n); break;                          \
        case U_ERF: vm->erf(x, z, n); break;                                  \
        case U_GELU: vm->gelu(x, z, n); break;                                \
        case U_GELU_TANH: vm->gelu_tanh(x, z, n); break;                      \
        case U_SOFTPLUS: vm->softplus(x, z, n); break;                        \
        case U_POWC: vm->powc(x, (T)c, z, n); break;                          \
        default: break;                                                       \
        }                                                                     \
    }                                                                         \
    AG_INLINE void fwd_##T(un_kind K, const T *restrict x, T *restrict z,     \
                           int64_t n, double c)                               \
    {                                                                         \
        if (un_vm(K)) {                                                       \
            vm_fwd_##T(K, x, z, n, c);                                        \
            return;                                                           \
        }                                                                     \
        if (K == U_RELU) {                                                    \
            AG_SIMD                                                           \
            for (int64_t i = 0; i < n; i++)                                   \
                z[i] = x[i] > 0 ? x[i] : (T)0;                                \
            return;                                                           \
        }                                                                     \
        for (int64_t i = 0; i < n; i++)                                       \
            z[i] = (T)f_forward(K, x[i], c);                                  \
    }                                                                         \
    /* dx += g * dz/dx over m <= UN_BLOCK elements, dz/dx from vmath.h:     \
     * the math of each line is f_deriv's */                                 \
    AG_INLINE void vm_bwd_block_##T(un_kind K, const T *x, const T *z, const T *g, \
                                    T *d, int64_t m, double c)                \
    {                                                                         \
        const ag_vmath_##T *vm = ag_vm_##T();                                 \
        T a[UN_BLOCK], b[UN_BLOCK];                                           \
        switch (K) {                                                          \
        case U_SIN: /* dx = g * cos x */                                      \
            vm->cos(x, a, m);                                                 \
            for (int64_t i = 0; i < m; i++)                                   \
                d[i] += g[i] * a[i];                                          \
            break;                                                            \
        case U_COS: /* dx = -g * sin x */                                     \
            vm->sin(x, a, m);                                                 \
            for (int64_t i = 0; i < m; i++)                                   \
                d[i] -= g[i] * a[i];                                          \
            break;                                                            \
        case U_ERF: /* dx = g 2/sqrt(pi) e^(-x^2) */                          \
            for (int64_t i = 0; i < m; i++)                                   \
                a[i] = -x[i] * x[i];                                          \
            vm->exp(a, a, m);                                                 \
            for (int64_t i = 0; i < m; i++)                                   \
                d[i] += g[i] * ((T)TWO_OVER_SQRT_PI * a[i]);                  \
            break;                                                            \
        case U_GELU: /* dx = g * (Phi(x) + x phi(x)), Phi(x) = z / x from   \
                      * the output (an erf less: gelu's backward cost 2.3   \
                      * forwards); at |x| < 2^-60, where z may be           \
                      * subnormal, Phi = 1/2 to the last bit */             \
            for (int64_t i = 0; i < m; i++) { /* one compare and selects,  \
                                                * no branch: the division   \
                                                * vectorises */             \
                bool big = x[i] * x[i] > (T)0x1p-120;                         \
                a[i] = z[i] / (big ? x[i] : (T)1);                            \
                a[i] = big ? a[i] : (T)0.5;                                   \
                b[i] = (T)-0.5 * x[i] * x[i];                                 \
            }                                                                 \
            vm->exp(b, b, m);                                                 \
            for (int64_t i = 0; i < m; i++)                                   \
                d[i] += g[i] * (a[i] + x[i] * ((T)INV_SQRT_2PI * b[i]));      \
            break;                                                            \
        case U_GELU_TANH: /* with s = sigmoid(2u) = (1 + tanh u) / 2:        \
                           * dx = g * (s + 2 x s (1 - s) du/dx) */            \
            for (int64_t i = 0; i < m; i++) {                                 \
                T x2 = x[i] * x[i];                                           \
                a[i] = (T)(2 * SQRT_2_OVER_PI) * (x[i] + (T)GELU_K * x2 * x[i]); \
                b[i] = (T)SQRT_2_OVER_PI * (1 + (T)(3 * GELU_K) * x2);        \
            }                                                                 \
            vm->sigmoid(a, a, m);                                             \
            for (int64_t i = 0; i < m; i++)                                   \
                d[i] += g[i] * (a[i] + 2 * x[i] * a[i] * (1 - a[i]) * b[i]);  \
            break;                                                            \
        case U_SOFTPLUS: /* dx = g * sigmoid(x) */                            \
            vm->sigmoid(x, a, m);                                             \
            for (int64_t i = 0; i < m; i++)                                   \
                d[i] += g[i] * a[i];                                          \
            break;                                                            \
        case U_POWC: /* dx = g * c x^(c-1) */                                 \
            vm->powc(x, (T)(c - 1), a, m);                                    \
            for (int64_t i = 0; i < m; i++)                                   \
                d[i] += g[i] * ((T)c * a[i]);                                 \
            break;                                                            \
        default: break;                                                       \
        }                                                                     \
    }                                                                         \
    /* dx += g * dz/dx; a fresh dx (ag_grad_out) is stored by relu and \
     * zeroed first by the others, a chunk at a time while it is in cache */ \
    AG_INLINE void bwd_##T(un_kind K, const T *restrict x, const T *restrict z, \
                           const T *restrict g, T *restrict d, int64_t n,     \
                           double c, bool fresh)                              \
    {                                                                         \
        if (K == U_RELU) { /* hot in training */                              \
            relu_bwd_##T(x, g, d, n, fresh);                                  \
            return;                                                           \
        }                                                                     \
        if (fresh)                                                            \
            memset(d, 0, (size_t)n * sizeof(T));                              \
        if (K == U_POWC && c == 0) /* dx = 0 */                               \
            return;                                                           \
        if (un_vm_deriv(K)) {                                                 \
            for (int64_t i = 0; i < n; i += UN_BLOCK)                         \
                vm_bwd_block_##T(K, x + i, z + i, g + i, d + i,               \
                                 n - i < UN_BLOCK ? n - i : UN_BLOCK, c);     \
            return;                                                           \
        }                                                                     \
        for (int64_t i = 0; i < n; i++)                                       \
            d[i] += (T)(g[i] * f_deriv(K, x[i], z[i], c));                    \
    }
UN_LOOPS(float)
UN_LOOPS(double)

/* The op's constant, read from its typed attributes (0 for the ops
 * without one); K is a constant, so this is one load or nothing. */
AG_INLINE double un_const(un_kind K, const ag_entry *e)
{
    if (K == U_LEAKY)
        return AG_ATTR(e, leaky_attr)->slope;
    if (K == U_ADDC || K == U_MULC || K == U_POWC)
        return AG_ATTR(e, scalar_attr)->c;
    return 0;
}

/* Elements [lo, hi) of the forward; whole arrays go to the pool in
 * chunks when large (ag_par_elems), each chunk this on its range. */
AG_INLINE void un_forward(un_kind K, const ag_entry *e, int64_t lo, int64_t hi)
{
    double c = un_const(K, e);
    if (e->out->dtype == AG_F64)
        fwd_double(K, (const double *)e->in[0]->data + lo, (double *)e->out->data + lo,
                   hi - lo, c);
    else
        fwd_float(K, (const float *)e->in[0]->data + lo, (float *)e->out->data + lo,
                  hi - lo, c);
}

typedef struct {
    const ag_entry *e;
    void *dx;
    bool fresh; /* dx new and unwritten (ag_grad_out) */
} un_bwd_ctx;

AG_INLINE void un_backward(un_kind K, const un_bwd_ctx *b, int64_t lo, int64_t hi)
{
    const ag_entry *e = b->e;
    double c = un_const(K, e);
    const ag_tensor *x = e->in[0], *z = e->out;
    if (z->dtype == AG_F64)
        bwd_double(K, (const double *)x->data + lo, (const double *)z->data + lo,
                   (const double *)z->grad->data + lo, (double *)b->dx + lo, hi - lo, c,
                   b->fresh);
    else
        bwd_float(K, (const float *)x->data + lo, (const float *)z->data + lo,
                  (const float *)z->grad->data + lo, (float *)b->dx + lo, hi - lo, c,
                  b->fresh);
}

/* fn: the public function, for messages */
static ag_tensor *un_run(ag_tape *tape, const ag_op_def *def, const char *fn, ag_tensor *a,
                         const void *attr, size_t attr_size)
{
    if (!ag_check_inputs(tape, fn, 1, &a))
        return NULL;
    ag_op_call call = {.def = def, .in = &a, .n_in = 1, .dtype = a->dtype,
                       .ndim = a->ndim, .shape = a->shape, .attr = attr,
                       .attr_size = attr_size};
    return ag_op_run(tape, &call);
}

/* ---- samples: a few shapes; ranges keep clear of kinks and domains ---- */

static bool un_sample(int which, ag_rng *rng, ag_op_sample *s, ag_sample_mode m,
                      double lo, double hi)
{
    static const int64_t shapes[][4] = {{2, 3, 4}, {0}, {1, 5}, {3, 2, 1, 3}};
    if (which >= 4)
        return false;
    s->in[0] = ag_sample_tensor(rng, (int)shapes[which][0], shapes[which] + 1, m, lo, hi);
    s->n_in = 1;
    return true;
}

/* ---- the rows ----
 * Each op NAME supplies NAME_dx(tape, e, g), its recorded derivative dL/dx
 * in ops of x = e->in[0], z = e->out and g; the macros add the forward and
 * fast backward (the shared kernels at KIND), the vjp, samples, the row
 * and the public function. */

#define UN_ROW_FNS(NAME, KIND)                                                \
    static void NAME##_fwd_range(void *e, int64_t lo, int64_t hi)             \
    {                                                                         \
        un_forward(KIND, e, lo, hi);                                          \
    }                                                                         \
    static void NAME##_forward(ag_entry *e)                                   \
    {                                                                         \
        ag_par_elems(e->out->numel, NAME##_fwd_range, e);                     \
    }                                                                         \
    static void NAME##_bwd_range(void *b, int64_t lo, int64_t hi)             \
    {                                                                         \
        un_backward(KIND, b, lo, hi);                                         \
    }                                                                         \
    static void NAME##_backward(ag_tape *t, ag_entry *e)                      \
    {                                                                         \
        un_bwd_ctx b = {e, NULL, false};                                      \
        b.dx = ag_grad_out(t, e->in[0], &b.fresh);                            \
        if (b.dx)                                                             \
            ag_par_elems(e->out->numel, NAME##_bwd_range, &b);                \
    }                                                                         \
    static void NAME##_vjp(ag_tape *t, const ag_entry *e, ag_tensor *g,       \
                           ag_tensor **gin)                                   \
    {                                                                         \
        if (ag_needs_grad(t, e->in[0]))                                       \
            gin[0] = NAME##_dx(t, e, g);                                      \
    }

#define UN_ROW_DEF(NAME)                                                      \
    const ag_op_def ag_op_##NAME = {.name = #NAME, .forward = NAME##_forward, \
                                    .backward = NAME##_backward,              \
                                    .vjp = NAME##_vjp, .sample = NAME##_sample};

/* Sample values: RANGE draws uniform in [lo, hi]; SIGNED draws magnitudes
 * in [lo, hi] with random signs, keeping clear of the kink at 0. */
#define UNARY_OP(NAME, KIND, MODE, LO, HI)                                    \
    UN_ROW_FNS(NAME, KIND)                                                    \
    static ag_tensor *NAME##_apply(ag_tape *t, ag_tensor **in, void *ctx)     \
    {                                                                         \
        (void)ctx;                                                            \
        return ag_##NAME(t, in[0]);                                           \
    }                                                                         \
    static bool NAME##_sample(int which, ag_rng *rng, ag_op_sample *s)        \
    {                                                                         \
        s->fn = NAME##_apply;                                                 \
        return un_sample(which, rng, s, MODE, LO, HI);                        \
    }                                                                         \
    UN_ROW_DEF(NAME)                                                          \
    ag_tensor *ag_##NAME(ag_tape *t, ag_tensor *a)                            \
    {                                                                         \
        return un_run(t, &ag_op_##NAME, "ag_" #NAME, a, NULL, 0);            \
    }

/* An op with one double constant, kept as the attribute struct ATTR.  C:
 * the samples' constant, an expression that may use the case `which`. */
#define UNARY_C_OP(NAME, KIND, ATTR, MODE, LO, HI, C)                         \
    UN_ROW_FNS(NAME, KIND)                                                    \
    static ag_tensor *NAME##_apply(ag_tape *t, ag_tensor **in, void *ctx)     \
    {                                                                         \
        return ag_##NAME(t, in[0], ((ag_op_sample *)ctx)->farg[0]);           \
    }                                                                         \
    static bool NAME##_sample(int which, ag_rng *rng, ag_op_sample *s)        \
    {                                                                         \
        s->fn = NAME##_apply;                                                 \
        s->farg[0] = C;                                                       \
        return un_sample(which, rng, s, MODE, LO, HI);                        \
    }                                                                         \
    UN_ROW_DEF(NAME)                                                          \
    ag_tensor *ag_##NAME(ag_tape *t, ag_tensor *a, double c)                  \
    {                                                                         \
        ATTR at = {c};                                                        \
        return un_run(t, &ag_op_##NAME, "ag_" #NAME, a, &at, sizeof at);     \
    }

/* ---- helpers of the recorded derivatives ---- */

/* 1 - v */
static ag_tensor *one_minus(ag_tape *t, ag_tensor *v)
{
    return ag_add_scalar(t, ag_neg(t, v), 1.0);
}

/* Constant factors of x's shape: fill(ctx, i) from x's values. */
static ag_tensor *mask_of(ag_tape *t, const ag_tensor *x,
                          double (*fill)(const void *ctx, int64_t i), const void *ctx)
{
    return ag_const_fill(t, x->dtype, x->ndim, x->shape, fill, ctx);
}

static double fill_positive(const void *x, int64_t i) { return ag_get(x, i) > 0; }

static double fill_sign(const void *x, int64_t i)
{
    double v = ag_get(x, i);
    return v > 0 ? 1 : v < 0 ? -1 : 0;
}

typedef struct {
    const ag_tensor *x;
    double slope;
} leaky_fill_ctx;

static double fill_leaky(const void *ctx, int64_t i)
{
    const leaky_fill_ctx *c = ctx;
    return ag_get(c->x, i) > 0 ? 1 : c->slope;
}

/* ---- the ops: recorded derivative, then the row ---- */

/* dx = -g */
static ag_tensor *neg_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    (void)e;
    return ag_neg(t, g);
}
UNARY_OP(neg, U_NEG, AG_SAMPLE_RANGE, -2, 2)

/* dx = g * z */
static ag_tensor *exp_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    return ag_mul(t, g, e->out);
}
UNARY_OP(exp, U_EXP, AG_SAMPLE_RANGE, -2, 2)

/* dx = g / x */
static ag_tensor *log_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    return ag_div(t, g, e->in[0]);
}
UNARY_OP(log, U_LOG, AG_SAMPLE_RANGE, 0.2, 3)

/* dx = g * 0.5 / z */
static ag_tensor *sqrt_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    return ag_mul_scalar(t, ag_div(t, g, e->out), 0.5);
}
UNARY_OP(sqrt, U_SQRT, AG_SAMPLE_RANGE, 0.2, 3)

/* dx = g * sign(x), a constant mask */
static ag_tensor *abs_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    return ag_mul(t, g, mask_of(t, e->in[0], fill_sign, e->in[0]));
}
UNARY_OP(abs, U_ABS, AG_SAMPLE_SIGNED, 0.1, 2)

/* dx = g * cos x */
static ag_tensor *sin_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    return ag_mul(t, g, ag_cos(t, e->in[0]));
}
UNARY_OP(sin, U_SIN, AG_SAMPLE_RANGE, -3, 3)

/* dx = -g * sin x */
static ag_tensor *cos_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    return ag_neg(t, ag_mul(t, g, ag_sin(t, e->in[0])));
}
UNARY_OP(cos, U_COS, AG_SAMPLE_RANGE, -3, 3)

/* dx = g * (1 - z^2) */
static ag_tensor *tanh_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    return ag_mul(t, g, one_minus(t, ag_mul(t, e->out, e->out)));
}
UNARY_OP(tanh, U_TANH, AG_SAMPLE_RANGE, -2, 2)

/* dx = g * z (1 - z) */
static ag_tensor *sigmoid_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    return ag_mul(t, g, ag_mul(t, e->out, one_minus(t, e->out)));
}
UNARY_OP(sigmoid, U_SIGMOID, AG_SAMPLE_RANGE, -4, 4)

/* dx = g * (x > 0), a constant mask */
static ag_tensor *relu_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    return ag_mul(t, g, mask_of(t, e->in[0], fill_positive, e->in[0]));
}
UNARY_OP(relu, U_RELU, AG_SAMPLE_SIGNED, 0.1, 2)

/* dx = g * (x > 0 ? 1 : slope), a constant mask */
static ag_tensor *leaky_relu_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    leaky_fill_ctx c = {e->in[0], AG_ATTR(e, leaky_attr)->slope};
    return ag_mul(t, g, mask_of(t, e->in[0], fill_leaky, &c));
}
UNARY_C_OP(leaky_relu, U_LEAKY, leaky_attr, AG_SAMPLE_SIGNED, 0.1, 2, 0.01)

/* dx = g * 2/sqrt(pi) e^(-x^2) */
static ag_tensor *erf_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    ag_tensor *x = e->in[0];
    ag_tensor *d = ag_mul_scalar(t, ag_exp(t, ag_neg(t, ag_mul(t, x, x))), TWO_OVER_SQRT_PI);
    return ag_mul(t, g, d);
}
UNARY_OP(erf, U_ERF, AG_SAMPLE_RANGE, -2.5, 2.5)

/* dx = g * (Phi(x) + x phi(x)), Phi(x) = 0.5 (1 + erf(x / sqrt 2)),
 * phi(x) = e^(-x^2 / 2) / sqrt(2 pi) */
static ag_tensor *gelu_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    ag_tensor *x = e->in[0];
    ag_tensor *cdf = ag_mul_scalar(
        t, ag_add_scalar(t, ag_erf(t, ag_mul_scalar(t, x, INV_SQRT_2)), 1.0), 0.5);
    ag_tensor *pdf = ag_mul_scalar(t, ag_exp(t, ag_mul_scalar(t, ag_mul(t, x, x), -0.5)),
                                   INV_SQRT_2PI);
    return ag_mul(t, g, ag_add(t, cdf, ag_mul(t, x, pdf)));
}
UNARY_OP(gelu, U_GELU, AG_SAMPLE_RANGE, -3, 3)

/* dx = g * (0.5 (1 + t) + 0.5 x (1 - t^2) du/dx), t = tanh u,
 * u = s (x + k x^3), du/dx = s (1 + 3k x^2), s = sqrt(2/pi) */
static ag_tensor *gelu_tanh_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    ag_tensor *x = e->in[0], *x2 = ag_mul(t, x, x);
    ag_tensor *u = ag_mul_scalar(
        t, ag_add(t, x, ag_mul_scalar(t, ag_mul(t, x2, x), GELU_K)), SQRT_2_OVER_PI);
    ag_tensor *th = ag_tanh(t, u);
    ag_tensor *du = ag_mul_scalar(t, ag_add_scalar(t, ag_mul_scalar(t, x2, 3 * GELU_K), 1.0),
                                  SQRT_2_OVER_PI);
    ag_tensor *left = ag_mul_scalar(t, ag_add_scalar(t, th, 1.0), 0.5);
    ag_tensor *right = ag_mul(t, ag_mul_scalar(t, x, 0.5),
                              ag_mul(t, one_minus(t, ag_mul(t, th, th)), du));
    return ag_mul(t, g, ag_add(t, left, right));
}
UNARY_OP(gelu_tanh, U_GELU_TANH, AG_SAMPLE_RANGE, -3, 3)

/* dx = g * sigmoid(x) */
static ag_tensor *softplus_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    return ag_mul(t, g, ag_sigmoid(t, e->in[0]));
}
UNARY_OP(softplus, U_SOFTPLUS, AG_SAMPLE_RANGE, -4, 4)

/* dx = g */
static ag_tensor *add_scalar_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    (void)t;
    (void)e;
    return g;
}
UNARY_C_OP(add_scalar, U_ADDC, scalar_attr, AG_SAMPLE_RANGE, -2, 2, 1.5)

/* dx = g * c */
static ag_tensor *mul_scalar_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    return ag_mul_scalar(t, g, AG_ATTR(e, scalar_attr)->c);
}
UNARY_C_OP(mul_scalar, U_MULC, scalar_attr, AG_SAMPLE_RANGE, -2, 2, -0.75)

/* dx = g * c x^(c-1)  (0 for c = 0); samples also take c = 1 and 0,
 * whose derivatives end in pow_scalar(x, 0) and a constant 0 */
static const double pow_scalar_c[] = {2.5, 1, 0, -1.5};
static ag_tensor *pow_scalar_dx(ag_tape *t, const ag_entry *e, ag_tensor *g)
{
    double c = AG_ATTR(e, scalar_attr)->c;
    if (c == 0)
        return ag_const_like(t, e->in[0], 0.0);
    return ag_mul(t, g, ag_mul_scalar(t, ag_pow_scalar(t, e->in[0], c - 1), c));
}
UNARY_C_OP(pow_scalar, U_POWC, scalar_attr, AG_SAMPLE_RANGE, 0.3, 2, pow_scalar_c[which & 3])
