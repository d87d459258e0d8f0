/* custom_op.c — a user-defined op with its own forward and backward,
 * registered through the public API and checked against finite
 * differences: softsign(x) = x / (1 + |x|), d/dx = 1 / (1 + |x|)^2. */
#include <math.h>
#include <stdio.h>

#include <autograd.h>

static void softsign_fwd(ag_tensor *const *in, int n_in, ag_tensor *out, void *ctx)
{
    (void)n_in;
    (void)ctx;
    for (int64_t i = 0; i < ag_numel(out); i++) {
        double x = ag_get(in[0], i);
        ag_set(out, i, x / (1 + fabs(x)));
    }
}

/* dx += g / (1 + |x|)^2 */
static void softsign_bwd(ag_tensor *const *in, int n_in, const ag_tensor *out,
                         const ag_tensor *gout, ag_tensor *const *gin, void *ctx)
{
    (void)n_in;
    (void)ctx;
    if (!gin[0])
        return;
    for (int64_t i = 0; i < ag_numel(out); i++) {
        double d = 1 + fabs(ag_get(in[0], i));
        ag_set(gin[0], i, ag_get(gin[0], i) + ag_get(gout, i) / (d * d));
    }
}

static const ag_custom_op softsign = {.name = "softsign", .forward = softsign_fwd,
                                      .backward = softsign_bwd};

/* f(x, w) = sum(softsign(x * w)), with the custom op inside a composition */
static ag_tensor *f(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    ag_tensor *xw = ag_mul(t, in[0], in[1]);
    ag_tensor *s = ag_custom(t, &softsign, &xw, 1, ag_ndim(xw), ag_shape(xw), NULL);
    return ag_sum(t, s, AG_ALL, false);
}

int main(void)
{
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    int64_t sx[] = {4, 3}, sw[] = {3};
    ag_tensor *in[2] = {ag_tensor_normal(AG_F64, 2, sx, 0, 1, &rng),
                        ag_tensor_normal(AG_F64, 1, sw, 0, 1, &rng)};
    ag_set_requires_grad(in[0], true);
    ag_set_requires_grad(in[1], true);
    ag_gradcheck_report r;
    ag_gradcheck_opts o = {.rtol = 1e-6, .atol = 1e-9};
    ag_status st = ag_gradcheck(f, NULL, in, 2, &o, &r);
    printf("%s\n", r.message);
    ag_tensor_free(in[0]);
    ag_tensor_free(in[1]);
    return st == AG_OK ? 0 : 1;
}
