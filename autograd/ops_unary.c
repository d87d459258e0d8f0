/* ops_unary.c — elementwise unary ops, including those with a constant
 * (leaky_relu slope, add/mul/pow by a scalar).  Notation: x = input,
 * z = output, c = the constant, g = dL/dz.  Math runs in double and is
 * rounded once to the tensor's dtype. */
#include "autograd_internal.h"

#include <math.h>

#define SQRT_2_OVER_PI 0.7978845608028654
#define INV_SQRT_2 0.7071067811865476
#define INV_SQRT_2PI 0.3989422804014327

typedef enum {
    U_NEG, U_EXP, U_LOG, U_SQRT, U_ABS, U_SIN, U_COS, U_TANH, U_SIGMOID, U_RELU,
    U_LEAKY, U_GELU, U_GELU_TANH, U_SOFTPLUS, U_ADDC, U_MULC, U_POWC
} un_kind;


AG_INLINE double sigmoid(double x)
{
    if (x >= 0)
        return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

AG_INLINE double f_forward(un_kind k, double x, double c)
{
    switch (k) {
    case U_NEG: return -x;
    case U_EXP: return exp(x);
    case U_LOG: return log(x);
    case U_SQRT: return sqrt(x);
    case U_ABS: return fabs(x);
    case U_SIN: return sin(x);
    case U_COS: return cos(x);
    case U_TANH: return tanh(x);
    case U_SIGMOID: return sigmoid(x);
    case U_RELU: return x > 0 ? x : 0;
    case U_LEAKY: return x > 0 ? x : c * x;
    case U_GELU: return 0.5 * x * (1.0 + erf(x * INV_SQRT_2));
    case U_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
    case U_SOFTPLUS: return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
    case U_ADDC: return x + c;
    case U_MULC: return x * c;
    case U_POWC: return pow(x, c);
    }
    return 0;
}

/* dz/dx from x, z and c */
AG_INLINE double f_deriv(un_kind k, double x, double z, double c)
{
    switch (k) {
    case U_NEG: return -1;
    case U_EXP: return z;                       /* e^x */
    case U_LOG: return 1.0 / x;
    case U_SQRT: return 0.5 / z;
    case U_ABS: return x > 0 ? 1 : x < 0 ? -1 : 0;
    case U_SIN: return cos(x);
    case U_COS: return -sin(x);
    case U_TANH: return 1.0 - z * z;
    case U_SIGMOID: return z * (1.0 - z);
    case U_RELU: return x > 0 ? 1 : 0;
    case U_LEAKY: return x > 0 ? 1 : c;
    case U_GELU: /* Phi(x) + x phi(x) */
        return 0.5 * (1.0 + erf(x * INV_SQRT_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x);
    case U_GELU_TANH: {
        double u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x), t = tanh(u);
        double du = SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x);
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du;
    }
    case U_SOFTPLUS: return sigmoid(x);
    case U_ADDC: return 1;
    case U_MULC: return c;
    case U_POWC: return c == 0 ? 0 : c * pow(x, c - 1);
    }
    return 0;
}

/* dx += g * (x > 0), as a mask: a random-sign branch mispredicts half
 * the time (relu backward ran at ~15 cycles an element). */
#define RELU_BWD(T)                                                           \
    static void relu_bwd_##T(const T *restrict x, const T *restrict g,        \
                             T *restrict d, int64_t n)                        \
    {                                                                         \
        AG_SIMD                                                               \
        for (int64_t i = 0; i < n; i++)                                       \
            d[i] += g[i] * (T)(x[i] > 0);                                     \
    }
RELU_BWD(float)
RELU_BWD(double)

/* The loops are instantiated once per op kind (K a constant after
 * inlining), so the switch in f_forward / f_deriv folds away and the
 * simple kinds vectorise. */
#define UN_LOOPS(T)                                                           \
    AG_INLINE void fwd_##T(un_kind K, const T *restrict x, T *restrict z,       \
                           int64_t n, double c)                               \
    {                                                                         \
        if (K == U_RELU) {                                                    \
            AG_SIMD                                                           \
            for (int64_t i = 0; i < n; i++)                                   \
                z[i] = x[i] > 0 ? x[i] : (T)0;                                \
            return;                                                           \
        }                                                                     \
        for (int64_t i = 0; i < n; i++)                                       \
            z[i] = (T)f_forward(K, x[i], c);                                  \
    }                                                                         \
    /* dx += g * dz/dx */                                                     \
    AG_INLINE void bwd_##T(un_kind K, const T *restrict x, const T *restrict z,  \
                           const T *restrict g, T *restrict d, int64_t n,      \
                           double c)                                          \
    {                                                                         \
        if (K == U_RELU) { /* hot in training */                             \
            relu_bwd_##T(x, g, d, n);                                         \
            return;                                                           \
        }                                                                     \
        for (int64_t i = 0; i < n; i++)                                       \
            d[i] += (T)(g[i] * f_deriv(K, x[i], z[i], c));                    \
    }
UN_LOOPS(float)
UN_LOOPS(double)

#define UN_KINDS(X)                                                           \
    X(U_NEG) X(U_EXP) X(U_LOG) X(U_SQRT) X(U_ABS) X(U_SIN) X(U_COS) X(U_TANH)   \
    X(U_SIGMOID) X(U_RELU) X(U_LEAKY) X(U_GELU) X(U_GELU_TANH) X(U_SOFTPLUS)    \
    X(U_ADDC) X(U_MULC) X(U_POWC)

static void un_forward(ag_entry *e)
{
    un_kind k = (un_kind)e->iattr[0];
    double c = e->fattr[0];
    int64_t n = e->out->numel;
    if (e->out->dtype == AG_F64) {
        const double *x = e->in[0]->data;
        double *z = e->out->data;
        switch (k) {
#define FWD64(K) case K: fwd_double(K, x, z, n, c); break;
            UN_KINDS(FWD64)
        }
    } else {
        const float *x = e->in[0]->data;
        float *z = e->out->data;
        switch (k) {
#define FWD32(K) case K: fwd_float(K, x, z, n, c); break;
            UN_KINDS(FWD32)
        }
    }
}

static void un_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (!dx)
        return;
    un_kind k = (un_kind)e->iattr[0];
    double c = e->fattr[0];
    int64_t n = e->out->numel;
    if (e->out->dtype == AG_F64) {
        const double *x = e->in[0]->data, *z = e->out->data, *g = e->out->grad->data;
        switch (k) {
#define BWD64(K) case K: bwd_double(K, x, z, g, dx, n, c); break;
            UN_KINDS(BWD64)
        }
    } else {
        const float *x = e->in[0]->data, *z = e->out->data, *g = e->out->grad->data;
        switch (k) {
#define BWD32(K) case K: bwd_float(K, x, z, g, dx, n, c); break;
            UN_KINDS(BWD32)
        }
    }
}

static ag_tensor *un_run(ag_tape *tape, const ag_op_def *def, un_kind k, ag_tensor *a,
                         double c)
{
    if (!ag_check_inputs(tape, def->name, 1, &a))
        return NULL;
    ag_op_call call = {.def = def, .in = &a, .n_in = 1, .dtype = a->dtype,
                       .ndim = a->ndim, .shape = a->shape, .iattr = {k}, .fattr = {c}};
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

#define UNARY_OP(NAME, KIND, MODE, LO, HI)                                          \
    static ag_tensor *NAME##_apply(ag_tape *t, ag_tensor **in, void *ctx)     \
    {                                                                         \
        (void)ctx;                                                            \
        return ag_##NAME(t, in[0]);                                           \
    }                                                                         \
    static bool NAME##_sample(int which, ag_rng *rng, ag_op_sample *s)        \
    {                                                                         \
        s->fn = NAME##_apply;                                                 \
        return un_sample(which, rng, s, MODE, LO, HI);                              \
    }                                                                         \
    const ag_op_def ag_op_##NAME = {#NAME, 1, un_forward, un_backward,        \
                                    NAME##_sample};                           \
    ag_tensor *ag_##NAME(ag_tape *t, ag_tensor *a)                            \
    {                                                                         \
        return un_run(t, &ag_op_##NAME, KIND, a, 0);                          \
    }

#define UNARY_C_OP(NAME, KIND, MODE, LO, HI, C)                                     \
    static ag_tensor *NAME##_apply(ag_tape *t, ag_tensor **in, void *ctx)     \
    {                                                                         \
        return ag_##NAME(t, in[0], ((ag_op_sample *)ctx)->farg[0]);           \
    }                                                                         \
    static bool NAME##_sample(int which, ag_rng *rng, ag_op_sample *s)        \
    {                                                                         \
        s->fn = NAME##_apply;                                                 \
        s->farg[0] = C;                                                       \
        return un_sample(which, rng, s, MODE, LO, HI);                              \
    }                                                                         \
    const ag_op_def ag_op_##NAME = {#NAME, 1, un_forward, un_backward,        \
                                    NAME##_sample};                           \
    ag_tensor *ag_##NAME(ag_tape *t, ag_tensor *a, double c)                  \
    {                                                                         \
        return un_run(t, &ag_op_##NAME, KIND, a, c);                          \
    }

/* Sample values: RANGE draws uniform in [lo, hi]; SIGNED draws magnitudes
 * in [lo, hi] with random signs, keeping clear of the kink at 0. */
UNARY_OP(neg, U_NEG, AG_SAMPLE_RANGE, -2, 2)
UNARY_OP(exp, U_EXP, AG_SAMPLE_RANGE, -2, 2)
UNARY_OP(log, U_LOG, AG_SAMPLE_RANGE, 0.2, 3)
UNARY_OP(sqrt, U_SQRT, AG_SAMPLE_RANGE, 0.2, 3)
UNARY_OP(abs, U_ABS, AG_SAMPLE_SIGNED, 0.1, 2)
UNARY_OP(sin, U_SIN, AG_SAMPLE_RANGE, -3, 3)
UNARY_OP(cos, U_COS, AG_SAMPLE_RANGE, -3, 3)
UNARY_OP(tanh, U_TANH, AG_SAMPLE_RANGE, -2, 2)
UNARY_OP(sigmoid, U_SIGMOID, AG_SAMPLE_RANGE, -4, 4)
UNARY_OP(relu, U_RELU, AG_SAMPLE_SIGNED, 0.1, 2)
UNARY_OP(gelu, U_GELU, AG_SAMPLE_RANGE, -3, 3)
UNARY_OP(gelu_tanh, U_GELU_TANH, AG_SAMPLE_RANGE, -3, 3)
UNARY_OP(softplus, U_SOFTPLUS, AG_SAMPLE_RANGE, -4, 4)
UNARY_C_OP(leaky_relu, U_LEAKY, AG_SAMPLE_SIGNED, 0.1, 2, 0.01)
UNARY_C_OP(add_scalar, U_ADDC, AG_SAMPLE_RANGE, -2, 2, 1.5)
UNARY_C_OP(mul_scalar, U_MULC, AG_SAMPLE_RANGE, -2, 2, -0.75)
UNARY_C_OP(pow_scalar, U_POWC, AG_SAMPLE_RANGE, 0.3, 2, 2.5)
