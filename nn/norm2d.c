/* norm2d.c — batch_norm2d: batch_norm1d on x viewed as [N, C, H*W], plus
 * torch's num_batches_tracked counter, so a torch.nn.BatchNorm2d
 * state_dict has every entry.
 * Dimension legend: N = batch, C = channels, H, W = spatial size. */
#include "nn_internal.h"

nn_batch_norm2d *nn_batch_norm2d_new(nn_params *p, const char *name, int64_t c, double eps,
                                     double momentum, bool affine)
{
    const char *fn = "nn_batch_norm2d_new";
    if (!p || !name || c < 1 || !(eps >= 0) || !(momentum >= 0 && momentum <= 1)) {
        ag_set_last_error("%s: %s", fn, !p || !name ? "params or name is NULL"
                                        : c < 1     ? "needs at least one channel"
                                                    : "eps must be >= 0, momentum in [0, 1]");
        return NULL;
    }
    nn_batch_norm2d *b = ag_mem_calloc(sizeof *b);
    if (!b) {
        ag_set_last_error("%s: out of memory", fn);
        return NULL;
    }
    nn_batch_norm *bn = &b->bn;
    *bn = (nn_batch_norm){.c = c, .eps = eps, .momentum = momentum, .owner = p};
    int n0 = nn_params_count(p);
    bool ok = true;
    if (affine)   /* registered here, not by nn_batch_norm1d_new, so errors name this call */
        ok = (bn->weight = nn_new_param(p, fn, name, "weight", 1, &c, false)) &&
             (bn->bias = nn_new_param(p, fn, name, "bias", 1, &c, false));
    ok = ok && (bn->running_mean = nn_new_param(p, fn, name, "running_mean", 1, &c, true)) &&
         (bn->running_var = nn_new_param(p, fn, name, "running_var", 1, &c, true)) &&
         (b->num_batches_tracked =
              nn_new_param(p, fn, name, "num_batches_tracked", 0, NULL, true));
    if (!ok) {
        nn_params_truncate(p, n0);
        ag_mem_free(b);
        return NULL;
    }
    if (bn->weight)
        nn_init_ones(bn->weight);
    nn_init_ones(bn->running_var);
    return b;
}

ag_tensor *nn_batch_norm2d_forward(ag_tape *t, nn_batch_norm2d *b, ag_tensor *x)
{
    const char *fn = "nn_batch_norm2d_forward";
    if (!b)
        return ag_tape_fail(t, AG_ERR_ARG, "%s: layer is NULL", fn);
    if (!nn_check_input(t, fn, x))
        return NULL;
    char sb[96];
    const int64_t *s = ag_shape(x);
    if (ag_ndim(x) != 4 || s[1] != b->bn.c)
        return ag_tape_fail(t, AG_ERR_SHAPE, "%s: x is %s, expected [N, %lld, H, W]", fn,
                            ag_shape_str(x, sb, sizeof sb), (long long)b->bn.c);
    if (!nn_check_dtype(t, fn, x, ag_dtype_of(b->bn.running_mean)))
        return NULL;
    bool training = nn_params_training(b->bn.owner);
    if (training && s[0] * s[2] * s[3] < 2)
        return ag_tape_fail(t, AG_ERR_SHAPE,
                            "%s: x is %s: training needs more than 1 value per channel", fn,
                            ag_shape_str(x, sb, sizeof sb));
    /* every check of batch_norm1d passed above, so its messages never show */
    ag_tensor *x3 = ag_reshape(t, x, 3, (const int64_t[]){s[0], s[1], s[2] * s[3]});
    ag_tensor *y = nn_batch_norm1d_forward(t, &b->bn, x3);   /* (N, C, H*W) */
    if (y && training)
        ag_set(b->num_batches_tracked, 0, ag_get(b->num_batches_tracked, 0) + 1);
    return ag_reshape(t, y, 4, s);
}

void nn_batch_norm2d_free(nn_batch_norm2d *b) { ag_mem_free(b); }
