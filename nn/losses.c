/* losses.c — losses as compositions of ag ops, with torch's reductions.
 * d = input - target throughout. */
#include "nn_internal.h"

#include <math.h>

ag_tensor *nn_reduce(ag_tape *t, const char *fn, ag_tensor *l, ag_reduction red)
{
    switch (red) {
    case AG_REDUCE_MEAN: return ag_mean(t, l, AG_ALL, false);
    case AG_REDUCE_SUM: return ag_sum(t, l, AG_ALL, false);
    case AG_REDUCE_NONE: return l;
    }
    return ag_tape_fail(t, AG_ERR_ARG, "%s: unknown reduction %d", fn, (int)red);
}

/* input and target present, with the same shape and dtype. */
static bool check_pair(ag_tape *t, const char *fn, const ag_tensor *a, const ag_tensor *b,
                       ag_reduction red)
{
    if (!nn_check_input(t, fn, a) || !nn_check_input(t, fn, b))
        return false;
    if ((unsigned)red > AG_REDUCE_NONE) {
        ag_tape_fail(t, AG_ERR_ARG, "%s: unknown reduction %d", fn, (int)red);
        return false;
    }
    bool same = ag_ndim(a) == ag_ndim(b);
    for (int i = 0; same && i < ag_ndim(a); i++)
        same = ag_shape(a)[i] == ag_shape(b)[i];
    if (!same) {
        char sa[96], sb[96];
        ag_tape_fail(t, AG_ERR_SHAPE, "%s: input is %s, target is %s (shapes must match)", fn,
                ag_shape_str(a, sa, sizeof sa), ag_shape_str(b, sb, sizeof sb));
        return false;
    }
    if (ag_dtype_of(a) != ag_dtype_of(b)) {
        ag_tape_fail(t, AG_ERR_DTYPE, "%s: input and target dtypes differ", fn);
        return false;
    }
    return true;
}

ag_tensor *nn_mse_loss(ag_tape *t, ag_tensor *input, ag_tensor *target, ag_reduction red)
{
    const char *fn = "nn_mse_loss";
    if (!check_pair(t, fn, input, target, red))
        return NULL;
    ag_tensor *d = ag_sub(t, input, target);
    return nn_reduce(t, fn, ag_mul(t, d, d), red);   /* d^2 */
}

ag_tensor *nn_l1_loss(ag_tape *t, ag_tensor *input, ag_tensor *target, ag_reduction red)
{
    const char *fn = "nn_l1_loss";
    if (!check_pair(t, fn, input, target, red))
        return NULL;
    return nn_reduce(t, fn, ag_abs(t, ag_sub(t, input, target)), red);   /* |d| */
}

/* With a = |d| and m = min(a, k):  q m^2 + s (a - m)  is  q a^2 below k and
 * q k^2 + s (a - k) above, with gradient (2 q m + s (1 - 1)) sign(d) below
 * and s sign(d) above; no branch, so no Inf * 0 in backward. */
static ag_tensor *quad_lin(ag_tape *t, ag_tensor *input, ag_tensor *target, double k, double q,
                           double s)
{
    ag_tensor *a = ag_abs(t, ag_sub(t, input, target));
    ag_tensor *m = ag_clamp(t, a, -INFINITY, k);
    return ag_add(t, ag_mul_scalar(t, ag_mul(t, m, m), q), ag_mul_scalar(t, ag_sub(t, a, m), s));
}

ag_tensor *nn_smooth_l1_loss(ag_tape *t, ag_tensor *input, ag_tensor *target, double beta,
                             ag_reduction red)
{
    const char *fn = "nn_smooth_l1_loss";
    if (!check_pair(t, fn, input, target, red))
        return NULL;
    if (!(beta >= 0))
        return ag_tape_fail(t, AG_ERR_ARG, "%s: beta %g must be >= 0", fn, beta);
    if (beta == 0)
        return nn_reduce(t, fn, ag_abs(t, ag_sub(t, input, target)), red);
    /* 0.5 m^2 / beta + (a - m) */
    return nn_reduce(t, fn, quad_lin(t, input, target, beta, 0.5 / beta, 1.0), red);
}

ag_tensor *nn_huber_loss(ag_tape *t, ag_tensor *input, ag_tensor *target, double delta,
                         ag_reduction red)
{
    const char *fn = "nn_huber_loss";
    if (!check_pair(t, fn, input, target, red))
        return NULL;
    if (!(delta > 0))
        return ag_tape_fail(t, AG_ERR_ARG, "%s: delta %g must be > 0", fn, delta);
    /* 0.5 m^2 + delta (a - m) */
    return nn_reduce(t, fn, quad_lin(t, input, target, delta, 0.5, delta), red);
}

ag_tensor *nn_cross_entropy(ag_tape *t, ag_tensor *logits, const int64_t *labels, int64_t n)
{
    return ag_cross_entropy_logits(t, logits, labels, n, NULL);
}

ag_tensor *nn_cross_entropy_opts(ag_tape *t, ag_tensor *logits, const int64_t *labels,
                                 int64_t n, const ag_ce_opts *opts)
{
    return ag_cross_entropy_logits(t, logits, labels, n, opts);
}

/* Checks logp [n, C] against labels; on success fills idx (labels, 0 for
 * ignored rows) and keep (1 kept, 0 ignored), both (n, 1), and the count of
 * kept rows. */
static bool nll_inputs(ag_tape *t, ag_tensor *logp, const int64_t *labels, int64_t n,
                       int64_t ignore, ag_tensor **idx, ag_tensor **keep, int64_t *kept)
{
    const char *fn = "nn_nll_loss";
    if (!nn_check_input(t, fn, logp))
        return false;
    char sb[96];
    if (ag_ndim(logp) != 2 || ag_shape(logp)[0] != n || n < 0 || (n > 0 && !labels)) {
        ag_tape_fail(t, AG_ERR_SHAPE, "%s: logp is %s, expected [%lld, C] with %lld labels", fn,
                ag_shape_str(logp, sb, sizeof sb), (long long)n, (long long)n);
        return false;
    }
    int64_t c = ag_shape(logp)[1];
    *idx = ag_tape_tensor(t, ag_dtype_of(logp), 2, (const int64_t[]){n, 1});
    *keep = ag_tape_tensor(t, ag_dtype_of(logp), 2, (const int64_t[]){n, 1});
    if (!*idx || !*keep)
        return false;
    *kept = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] == ignore)
            continue;
        if (labels[i] < 0 || labels[i] >= c) {
            ag_tape_fail(t, AG_ERR_ARG, "%s: labels[%lld] = %lld is outside [0, %lld)", fn,
                    (long long)i, (long long)labels[i], (long long)c);
            return false;
        }
        ag_set(*idx, i, (double)labels[i]);
        ag_set(*keep, i, 1.0);
        (*kept)++;
    }
    return true;
}

ag_tensor *nn_nll_loss(ag_tape *t, ag_tensor *logp, const int64_t *labels, int64_t n,
                       int64_t ignore_index, ag_reduction red)
{
    const char *fn = "nn_nll_loss";
    if ((unsigned)red > AG_REDUCE_NONE)
        return ag_tape_fail(t, AG_ERR_ARG, "%s: unknown reduction %d", fn, (int)red);
    ag_tensor *idx, *keep;
    int64_t kept;
    if (!nll_inputs(t, logp, labels, n, ignore_index, &idx, &keep, &kept))
        return NULL;
    ag_tensor *picked = ag_gather(t, logp, 1, idx);                    /* (n, 1) */
    ag_tensor *l = ag_neg(t, ag_mul(t, picked, keep));                 /* -logp[i, y_i] */
    l = ag_reshape(t, l, 1, &n);                                       /* (n) */
    if (red != AG_REDUCE_MEAN)
        return nn_reduce(t, fn, l, red);
    /* mean over kept rows; none kept: 0 * NaN = NaN, as torch */
    return ag_mul_scalar(t, ag_sum(t, l, AG_ALL, false), kept ? 1.0 / (double)kept : NAN);
}

ag_tensor *nn_bce_with_logits(ag_tape *t, ag_tensor *logits, ag_tensor *target,
                              ag_reduction red)
{
    const char *fn = "nn_bce_with_logits";
    if (!check_pair(t, fn, logits, target, red))
        return NULL;
    /* max(x, 0) - x y + log(1 + e^-|x|) = softplus(x) - x y; ag_softplus
     * evaluates the stable left side and has the exact gradient sigmoid(x)
     * even at x = 0, where max and |x| have kinks. */
    ag_tensor *l = ag_sub(t, ag_softplus(t, logits), ag_mul(t, logits, target));
    return nn_reduce(t, fn, l, red);
}
