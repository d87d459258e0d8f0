/* activations.c — activations as compositions of ag ops, and the input
 * checks the compositions share. */
#include "nn_internal.h"

#include <math.h>

/* Also false for a NULL tape (ag_last_error naming fn) and for a tape that
 * keeps an error already (every op would return NULL at once). */
bool nn_check_input(ag_tape *t, const char *fn, const ag_tensor *x)
{
    if (!t) {
        ag_set_last_error("%s: tape is NULL", fn);
        return false;
    }
    if (ag_tape_status(t) != AG_OK)
        return false;
    if (!x) {
        ag_tape_fail(t, AG_ERR_NULL, "%s: input is NULL (an earlier op failed?)", fn);
        return false;
    }
    return true;
}

bool nn_check_dtype(ag_tape *t, const char *fn, const ag_tensor *x, ag_dtype dt)
{
    if (ag_dtype_of(x) != dt) {
        ag_tape_fail(t, AG_ERR_DTYPE, "%s: input is %s, the layer's parameters are %s", fn,
                ag_dtype_of(x) == AG_F64 ? "F64" : "F32", dt == AG_F64 ? "F64" : "F32");
        return false;
    }
    return true;
}

/* The wrappers check their arguments themselves, so a message names the
 * nn_ function the user called, not the op inside. */
ag_tensor *nn_relu(ag_tape *t, ag_tensor *x)
{
    return nn_check_input(t, "nn_relu", x) ? ag_relu(t, x) : NULL;
}

ag_tensor *nn_leaky_relu(ag_tape *t, ag_tensor *x, double slope)
{
    return nn_check_input(t, "nn_leaky_relu", x) ? ag_leaky_relu(t, x, slope) : NULL;
}

/* A constant of x's shape and dtype: 1 where x > 0, else 0. */
static ag_tensor *positive_mask(ag_tape *t, ag_tensor *x)
{
    ag_tensor *m = ag_tape_tensor(t, ag_dtype_of(x), ag_ndim(x), ag_shape(x));
    int64_t n = ag_numel(x);
    for (int64_t i = 0; m && i < n; i++)
        ag_set(m, i, ag_get(x, i) > 0 ? 1.0 : 0.0);
    return m;
}

ag_tensor *nn_elu(ag_tape *t, ag_tensor *x, double alpha)
{
    if (!nn_check_input(t, "nn_elu", x))
        return NULL;
    /* where(x > 0, x, alpha (e^xn - 1)), xn = where(x > 0, 0, x): the
     * exponential never sees a large positive x (no Inf * 0 in backward), and
     * d/dx at 0 is alpha, as in torch. */
    ag_tensor *pos = positive_mask(t, x);
    ag_tensor *zero = ag_tape_tensor(t, ag_dtype_of(x), 0, NULL);
    ag_tensor *xn = ag_where(t, pos, zero, x);
    ag_tensor *neg = ag_mul_scalar(t, ag_add_scalar(t, ag_exp(t, xn), -1.0), alpha);
    return ag_where(t, pos, x, neg);
}

ag_tensor *nn_gelu(ag_tape *t, ag_tensor *x, bool tanh_approx)
{
    if (!nn_check_input(t, "nn_gelu", x))
        return NULL;
    return tanh_approx ? ag_gelu_tanh(t, x) : ag_gelu(t, x);
}

ag_tensor *nn_silu(ag_tape *t, ag_tensor *x)
{
    return nn_check_input(t, "nn_silu", x) ? ag_mul(t, x, ag_sigmoid(t, x)) : NULL;
}

ag_tensor *nn_tanh(ag_tape *t, ag_tensor *x)
{
    return nn_check_input(t, "nn_tanh", x) ? ag_tanh(t, x) : NULL;
}

ag_tensor *nn_sigmoid(ag_tape *t, ag_tensor *x)
{
    return nn_check_input(t, "nn_sigmoid", x) ? ag_sigmoid(t, x) : NULL;
}

ag_tensor *nn_softplus(ag_tape *t, ag_tensor *x, double beta)
{
    if (!nn_check_input(t, "nn_softplus", x))
        return NULL;
    if (!(beta > 0))
        return ag_tape_fail(t, AG_ERR_ARG, "nn_softplus: beta %g must be > 0", beta);
    if (beta == 1.0)
        return ag_softplus(t, x);
    /* log(1 + e^(beta x)) / beta */
    return ag_mul_scalar(t, ag_softplus(t, ag_mul_scalar(t, x, beta)), 1.0 / beta);
}

ag_tensor *nn_softmax(ag_tape *t, ag_tensor *x, int axis)
{
    return nn_check_input(t, "nn_softmax", x) ? ag_softmax(t, x, axis) : NULL;
}

ag_tensor *nn_log_softmax(ag_tape *t, ag_tensor *x, int axis)
{
    return nn_check_input(t, "nn_log_softmax", x) ? ag_log_softmax(t, x, axis) : NULL;
}

ag_tensor *nn_activate(ag_tape *t, nn_activation act, ag_tensor *x)
{
    if (!nn_check_input(t, "nn_activate", x))
        return NULL;   /* also for NN_ACT_NONE, which returns x itself */
    switch (act) {
    case NN_ACT_NONE: return x;
    case NN_ACT_RELU: return ag_relu(t, x);
    case NN_ACT_LEAKY_RELU: return ag_leaky_relu(t, x, 0.01);
    case NN_ACT_ELU: return nn_elu(t, x, 1.0);
    case NN_ACT_GELU: return ag_gelu(t, x);
    case NN_ACT_GELU_TANH: return ag_gelu_tanh(t, x);
    case NN_ACT_SILU: return nn_silu(t, x);
    case NN_ACT_TANH: return ag_tanh(t, x);
    case NN_ACT_SIGMOID: return ag_sigmoid(t, x);
    case NN_ACT_SOFTPLUS: return ag_softplus(t, x);
    }
    return ag_tape_fail(t, AG_ERR_ARG, "nn_activate: unknown activation %d", (int)act);
}
