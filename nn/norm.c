/* norm.c — layer_norm, batch_norm1d and dropout.
 * Dimension legend: N = batch, C = channels, L = length (batch_norm1d's
 * optional third dim), R = rows before the normalized dims, D = elements
 * of the normalized dims. */
#include "nn_internal.h"

#include <math.h>

/* ---- layer_norm ---- */

nn_layer_norm *nn_layer_norm_new(nn_params *p, const char *name, int ndim,
                                 const int64_t *shape, double eps, bool affine)
{
    const char *fn = "nn_layer_norm_new";
    bool dims_ok = shape && ndim >= 1 && ndim <= AG_MAX_DIMS;
    for (int i = 0; dims_ok && i < ndim; i++)
        dims_ok = shape[i] >= 1;
    if (!p || !name || !dims_ok || !(eps >= 0)) {
        ag_set_last_error("%s: %s", fn, !p || !name ? "params or name is NULL"
                                        : !dims_ok  ? "shape needs 1..8 dims, each >= 1"
                                                    : "eps must be >= 0");
        return NULL;
    }
    nn_layer_norm *l = ag_mem_calloc(sizeof *l);
    if (!l) {
        ag_set_last_error("%s: out of memory", fn);
        return NULL;
    }
    l->ndim = ndim;
    memcpy(l->shape, shape, (size_t)ndim * sizeof *shape);
    l->eps = eps;
    if (affine) {
        int n0 = nn_params_count(p);
        l->weight = nn_new_param(p, fn, name, "weight", ndim, shape, false);
        l->bias = l->weight ? nn_new_param(p, fn, name, "bias", ndim, shape, false) : NULL;
        if (!l->bias) {
            nn_params_truncate(p, n0);
            ag_mem_free(l);
            return NULL;
        }
        nn_init_ones(l->weight);
    }
    return l;
}

ag_tensor *nn_layer_norm_forward(ag_tape *t, nn_layer_norm *l, ag_tensor *x)
{
    const char *fn = "nn_layer_norm_forward";
    if (!l)
        return ag_tape_fail(t, AG_ERR_ARG, "%s: layer is NULL", fn);
    if (!nn_check_input(t, fn, x))
        return NULL;
    int nd = ag_ndim(x), k = l->ndim;
    bool fits = nd >= k;
    int64_t d = 1;
    for (int i = 0; fits && i < k; i++) {
        fits = ag_shape(x)[nd - k + i] == l->shape[i];
        d *= l->shape[i];
    }
    if (!fits) {
        char b[96];
        return ag_tape_fail(t, AG_ERR_SHAPE, "%s: x is %s, its last %d dims must be the layer's",
                       fn, ag_shape_str(x, b, sizeof b), k);
    }
    if (l->weight && !nn_check_dtype(t, fn, x, ag_dtype_of(l->weight)))
        return NULL;
    ag_tensor *xr = ag_reshape(t, x, 2, (const int64_t[]){ag_numel(x) / d, d}); /* (R, D) */
    ag_tensor *mu = ag_mean(t, xr, 1, true);                                    /* (R, 1) */
    ag_tensor *xc = ag_sub(t, xr, mu);
    ag_tensor *var = ag_mean(t, ag_mul(t, xc, xc), 1, true);     /* biased: (R, 1) */
    ag_tensor *y = ag_div(t, xc, ag_sqrt(t, ag_add_scalar(t, var, l->eps)));
    y = ag_reshape(t, y, nd, ag_shape(x));
    if (l->weight)
        y = ag_add(t, ag_mul(t, y, l->weight), l->bias);
    return y;
}

void nn_layer_norm_free(nn_layer_norm *l) { ag_mem_free(l); }

/* ---- batch_norm1d ---- */

nn_batch_norm *nn_batch_norm1d_new(nn_params *p, const char *name, int64_t c, double eps,
                                   double momentum, bool affine)
{
    const char *fn = "nn_batch_norm1d_new";
    if (!p || !name || c < 1 || !(eps >= 0) || !(momentum >= 0 && momentum <= 1)) {
        ag_set_last_error("%s: %s", fn, !p || !name ? "params or name is NULL"
                                        : c < 1     ? "needs at least one channel"
                                                    : "eps must be >= 0, momentum in [0, 1]");
        return NULL;
    }
    nn_batch_norm *b = ag_mem_calloc(sizeof *b);
    if (!b) {
        ag_set_last_error("%s: out of memory", fn);
        return NULL;
    }
    b->c = c;
    b->eps = eps;
    b->momentum = momentum;
    b->owner = p;
    int n0 = nn_params_count(p);
    bool ok = true;
    if (affine) {
        ok = (b->weight = nn_new_param(p, fn, name, "weight", 1, &c, false)) &&
             (b->bias = nn_new_param(p, fn, name, "bias", 1, &c, false));
    }
    ok = ok && (b->running_mean = nn_new_param(p, fn, name, "running_mean", 1, &c, true)) &&
         (b->running_var = nn_new_param(p, fn, name, "running_var", 1, &c, true));
    if (!ok) {
        nn_params_truncate(p, n0);
        ag_mem_free(b);
        return NULL;
    }
    if (b->weight)
        nn_init_ones(b->weight);
    nn_init_ones(b->running_var);
    return b;
}

/* r = (1 - m) r + m s for the running mean and the unbiased running
 * variance, from the batch statistics mu and var ((1, C) or (1, C, 1)) over
 * count values per channel. */
static void update_running(nn_batch_norm *b, const ag_tensor *mu, const ag_tensor *var,
                           int64_t count)
{
    double m = b->momentum, unbias = (double)count / (double)(count - 1);
    for (int64_t c = 0; c < b->c; c++) {
        ag_set(b->running_mean, c, (1 - m) * ag_get(b->running_mean, c) + m * ag_get(mu, c));
        ag_set(b->running_var, c,
               (1 - m) * ag_get(b->running_var, c) + m * ag_get(var, c) * unbias);
    }
}

/* Mean over N (and L) keeping dims: (1, C) or (1, C, 1). */
static ag_tensor *channel_mean(ag_tape *t, ag_tensor *x)
{
    ag_tensor *m = ag_mean(t, x, 0, true);
    return ag_ndim(x) == 3 ? ag_mean(t, m, 2, true) : m;
}

ag_tensor *nn_batch_norm1d_forward(ag_tape *t, nn_batch_norm *b, ag_tensor *x)
{
    const char *fn = "nn_batch_norm1d_forward";
    if (!b)
        return ag_tape_fail(t, AG_ERR_ARG, "%s: layer is NULL", fn);
    if (!nn_check_input(t, fn, x))
        return NULL;
    int nd = ag_ndim(x);
    char sb[96];
    if ((nd != 2 && nd != 3) || ag_shape(x)[1] != b->c)
        return ag_tape_fail(t, AG_ERR_SHAPE, "%s: x is %s, expected [N, %lld] or [N, %lld, L]", fn,
                       ag_shape_str(x, sb, sizeof sb), (long long)b->c, (long long)b->c);
    if (!nn_check_dtype(t, fn, x, ag_dtype_of(b->running_mean)))
        return NULL;
    const int64_t cshape[3] = {1, b->c, 1};   /* per-channel broadcast shape */
    ag_tensor *y;
    if (nn_params_training(b->owner)) {
        int64_t count = ag_numel(x) / b->c;   /* N * L */
        if (count < 2)
            return ag_tape_fail(t, AG_ERR_SHAPE,
                           "%s: x is %s: training needs more than 1 value per channel", fn,
                           ag_shape_str(x, sb, sizeof sb));
        ag_tensor *mu = channel_mean(t, x);
        ag_tensor *xc = ag_sub(t, x, mu);
        ag_tensor *var = channel_mean(t, ag_mul(t, xc, xc));   /* biased */
        if (mu && var)
            update_running(b, mu, var, count);
        y = ag_div(t, xc, ag_sqrt(t, ag_add_scalar(t, var, b->eps)));
    } else {
        ag_tensor *rm = ag_reshape(t, b->running_mean, nd, cshape);
        ag_tensor *rv = ag_reshape(t, b->running_var, nd, cshape);
        y = ag_div(t, ag_sub(t, x, rm), ag_sqrt(t, ag_add_scalar(t, rv, b->eps)));
    }
    if (b->weight) {
        ag_tensor *w = ag_reshape(t, b->weight, nd, cshape);
        y = ag_add(t, ag_mul(t, y, w), ag_reshape(t, b->bias, nd, cshape));
    }
    return y;
}

void nn_batch_norm_free(nn_batch_norm *b) { ag_mem_free(b); }

/* ---- dropout ---- */

nn_dropout *nn_dropout_new(nn_params *p, double prob)
{
    if (!p || !(prob >= 0 && prob < 1)) {
        ag_set_last_error("nn_dropout_new: %s", p ? "prob must be in [0, 1)" : "params is NULL");
        return NULL;
    }
    nn_dropout *d = ag_mem_calloc(sizeof *d);
    if (!d) {
        ag_set_last_error("nn_dropout_new: out of memory");
        return NULL;
    }
    d->prob = prob;
    d->owner = p;
    return d;
}

ag_tensor *nn_dropout_forward(ag_tape *t, nn_dropout *d, ag_tensor *x, ag_rng *rng)
{
    if (!d)
        return ag_tape_fail(t, AG_ERR_ARG, "nn_dropout_forward: layer is NULL");
    if (!nn_check_input(t, "nn_dropout_forward", x))
        return NULL;
    return ag_dropout(t, x, d->prob, nn_params_training(d->owner), rng);
}

void nn_dropout_free(nn_dropout *d) { ag_mem_free(d); }
