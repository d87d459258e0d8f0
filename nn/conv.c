/* conv.c — convolution layers (conv1d, conv2d), pooling and flatten, as
 * compositions of ag_conv1d / ag_conv2d / ag_*_pool2d and ag_reshape.
 * Dimension legend: N = batch, C = input channels, O = output channels,
 * G = groups, H, W (L for conv1d) = spatial size, k = kernel size. */
#include "nn_internal.h"

#include <math.h>
#include <stdint.h>

/* Largest kernel, stride, padding or dilation taken, so that sizes
 * computed from them cannot overflow (ag_conv2d's own limit). */
#define OPT_MAX INT32_MAX

/* ---- shared by conv1d and conv2d ---- */

/* PyTorch's default for a zero option. */
static int64_t or_one(int64_t v) { return v == 0 ? 1 : v; }

/* Checks one spatial dim of a layer's options (already defaulted). */
static bool dim_ok(const char *fn, const char *what, int64_t k, int64_t stride, int64_t pad,
                   int64_t dil)
{
    if (k >= 1 && stride >= 1 && pad >= 0 && dil >= 1 && k <= OPT_MAX && stride <= OPT_MAX &&
        pad <= OPT_MAX && dil <= OPT_MAX)
        return true;
    ag_set_last_error("%s: %s: kernel %lld, stride %lld, padding %lld, dilation %lld "
                      "(kernel >= 1, stride and dilation >= 0 with 0 meaning 1, "
                      "padding >= 0, each at most %d)", fn, what, (long long)k,
                      (long long)stride, (long long)pad, (long long)dil, OPT_MAX);
    return false;
}

static bool channels_ok(const char *fn, nn_params *p, const char *name, int64_t in,
                        int64_t out, int64_t groups)
{
    if (!p || !name) {
        ag_set_last_error("%s: %s is NULL", fn, !p ? "params" : "name");
        return false;
    }
    if (in < 1 || out < 1 || groups < 1 || in % groups || out % groups) {
        ag_set_last_error("%s: in %lld and out %lld must be >= 1 and divisible by groups %lld",
                          fn, (long long)in, (long long)out, (long long)groups);
        return false;
    }
    return true;
}

/* Registers weight [O, C/G, k...] and bias [O] (when wanted) and draws
 * them as torch.nn.ConvNd.reset_parameters does: kaiming_uniform(a =
 * sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C/G *
 * prod(k), and the bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)).  false
 * (p unchanged) on failure. */
static bool conv_params(nn_params *p, const char *fn, const char *name, int ndim,
                        const int64_t *wshape, bool bias, ag_rng *rng, ag_tensor **w,
                        ag_tensor **b)
{
    int n0 = nn_params_count(p);
    *w = nn_new_param(p, fn, name, "weight", ndim, wshape, false);
    *b = *w && bias ? nn_new_param(p, fn, name, "bias", 1, wshape, false) : NULL;
    if (!*w || (bias && !*b)) {
        nn_params_truncate(p, n0);
        return false;
    }
    if (rng) {
        int64_t fan_in = ag_numel(*w) / wshape[0];
        nn_init_kaiming_uniform(*w, sqrt(5.0), NN_FAN_IN, "leaky_relu", rng);
        if (*b)
            nn_init_uniform(*b, -1.0 / sqrt((double)fan_in), 1.0 / sqrt((double)fan_in), rng);
    }
    return true;
}

/* Output length of one spatial dim, or -1 when the padded input is shorter
 * than the dilated kernel. */
static int64_t out_len(int64_t n, int64_t k, int64_t stride, int64_t pad, int64_t dil)
{
    int64_t span = dil * (k - 1) + 1;
    return n + 2 * pad < span ? -1 : (n + 2 * pad - span) / stride + 1;
}

/* Tape-side checks of a conv layer's input: ndim dims [N, in, ...], the
 * weight's dtype, and room for the kernel in each spatial dim. */
static bool conv_input_ok(ag_tape *t, const char *fn, const ag_tensor *x, int ndim,
                          int64_t in, const ag_tensor *w, const int64_t *k,
                          const int64_t *stride, const int64_t *pad, const int64_t *dil)
{
    char b[96];
    if (ag_ndim(x) != ndim || ag_shape(x)[1] != in) {
        ag_tape_fail(t, AG_ERR_SHAPE, "%s: x is %s, the layer expects [N, %lld%s]", fn,
                     ag_shape_str(x, b, sizeof b), (long long)in, ndim == 4 ? ", H, W" : ", L");
        return false;
    }
    for (int i = 0; i < ndim - 2; i++)
        if (out_len(ag_shape(x)[2 + i], k[i], stride[i], pad[i], dil[i]) < 1) {
            ag_tape_fail(t, AG_ERR_SHAPE,
                         "%s: x is %s: spatial dim %d (%lld, padded by %lld on each side) "
                         "is smaller than the dilated kernel (%lld)", fn,
                         ag_shape_str(x, b, sizeof b), i + 1, (long long)ag_shape(x)[2 + i],
                         (long long)pad[i], (long long)(dil[i] * (k[i] - 1) + 1));
            return false;
        }
    return nn_check_dtype(t, fn, x, ag_dtype_of(w));
}

/* ---- conv2d ---- */

nn_conv2d *nn_conv2d_new(nn_params *p, const char *name, int64_t in, int64_t out,
                         int64_t kh, int64_t kw, ag_conv2d_opts o, bool bias, ag_rng *rng)
{
    const char *fn = "nn_conv2d_new";
    ag_conv2d_opts d = {.groups = or_one(o.groups)};
    for (int i = 0; i < 2; i++) {
        d.stride[i] = or_one(o.stride[i]);
        d.padding[i] = o.padding[i];
        d.dilation[i] = or_one(o.dilation[i]);
    }
    if (!channels_ok(fn, p, name, in, out, d.groups) ||
        !dim_ok(fn, "height", kh, d.stride[0], d.padding[0], d.dilation[0]) ||
        !dim_ok(fn, "width", kw, d.stride[1], d.padding[1], d.dilation[1]))
        return NULL;
    nn_conv2d *l = ag_mem_calloc(sizeof *l);
    if (!l) {
        ag_set_last_error("%s: out of memory", fn);
        return NULL;
    }
    *l = (nn_conv2d){.in = in, .out = out, .kernel = {kh, kw}, .opts = d};
    const int64_t wshape[4] = {out, in / d.groups, kh, kw};
    if (!conv_params(p, fn, name, 4, wshape, bias, rng, &l->weight, &l->bias)) {
        ag_mem_free(l);
        return NULL;
    }
    return l;
}

ag_tensor *nn_conv2d_forward(ag_tape *t, nn_conv2d *l, ag_tensor *x)
{
    const char *fn = "nn_conv2d_forward";
    if (!l)
        return ag_tape_fail(t, AG_ERR_ARG, "%s: layer is NULL", fn);
    if (!nn_check_input(t, fn, x) ||
        !conv_input_ok(t, fn, x, 4, l->in, l->weight, l->kernel, l->opts.stride,
                       l->opts.padding, l->opts.dilation))
        return NULL;
    return ag_conv2d(t, x, l->weight, l->bias, l->opts);   /* (N, O, H_out, W_out) */
}

void nn_conv2d_free(nn_conv2d *l) { ag_mem_free(l); }

/* ---- conv1d ---- */

nn_conv1d *nn_conv1d_new(nn_params *p, const char *name, int64_t in, int64_t out, int64_t k,
                         ag_conv1d_opts o, bool bias, ag_rng *rng)
{
    const char *fn = "nn_conv1d_new";
    ag_conv1d_opts d = {.stride = or_one(o.stride), .padding = o.padding,
                        .dilation = or_one(o.dilation), .groups = or_one(o.groups)};
    if (!channels_ok(fn, p, name, in, out, d.groups) ||
        !dim_ok(fn, "length", k, d.stride, d.padding, d.dilation))
        return NULL;
    nn_conv1d *l = ag_mem_calloc(sizeof *l);
    if (!l) {
        ag_set_last_error("%s: out of memory", fn);
        return NULL;
    }
    *l = (nn_conv1d){.in = in, .out = out, .kernel = k, .opts = d};
    const int64_t wshape[3] = {out, in / d.groups, k};
    if (!conv_params(p, fn, name, 3, wshape, bias, rng, &l->weight, &l->bias)) {
        ag_mem_free(l);
        return NULL;
    }
    return l;
}

ag_tensor *nn_conv1d_forward(ag_tape *t, nn_conv1d *l, ag_tensor *x)
{
    const char *fn = "nn_conv1d_forward";
    if (!l)
        return ag_tape_fail(t, AG_ERR_ARG, "%s: layer is NULL", fn);
    if (!nn_check_input(t, fn, x) ||
        !conv_input_ok(t, fn, x, 3, l->in, l->weight, &l->kernel, &l->opts.stride,
                       &l->opts.padding, &l->opts.dilation))
        return NULL;
    return ag_conv1d(t, x, l->weight, l->bias, l->opts);   /* (N, O, L_out) */
}

void nn_conv1d_free(nn_conv1d *l) { ag_mem_free(l); }

/* ---- pooling ---- */

/* x [N, C, H, W] and options PyTorch accepts: kernel >= 1, stride >= 0
 * (0: the kernel), 0 <= padding <= kernel / 2, an output of at least 1. */
static bool pool_ok(ag_tape *t, const char *fn, const ag_tensor *x, const ag_pool2d_opts *o)
{
    if (!nn_check_input(t, fn, x))
        return false;
    char b[96];
    if (ag_ndim(x) != 4) {
        ag_tape_fail(t, AG_ERR_SHAPE, "%s: x is %s, expected [N, C, H, W]", fn,
                     ag_shape_str(x, b, sizeof b));
        return false;
    }
    for (int i = 0; i < 2; i++) {
        int64_t k = o->kernel[i], s = o->stride[i] ? o->stride[i] : k, pad = o->padding[i];
        if (k < 1 || s < 1 || pad < 0 || pad > k / 2 || k > OPT_MAX || s > OPT_MAX) {
            ag_tape_fail(t, AG_ERR_ARG,
                         "%s: %s: kernel %lld, stride %lld, padding %lld (1 <= kernel <= %d, "
                         "0 <= stride <= %d with 0 meaning the kernel, 0 <= padding <= "
                         "kernel/2)", fn, i ? "width" : "height", (long long)k,
                         (long long)o->stride[i], (long long)pad, OPT_MAX, OPT_MAX);
            return false;
        }
        if (out_len(ag_shape(x)[2 + i], k, s, pad, 1) < 1) {
            ag_tape_fail(t, AG_ERR_SHAPE, "%s: x is %s: %s %lld (padded by %lld on each side) "
                         "is smaller than the kernel (%lld)", fn, ag_shape_str(x, b, sizeof b),
                         i ? "width" : "height", (long long)ag_shape(x)[2 + i],
                         (long long)pad, (long long)k);
            return false;
        }
    }
    return true;
}

ag_tensor *nn_max_pool2d(ag_tape *t, ag_tensor *x, ag_pool2d_opts o)
{
    return pool_ok(t, "nn_max_pool2d", x, &o) ? ag_max_pool2d(t, x, o) : NULL;
}

ag_tensor *nn_avg_pool2d(ag_tape *t, ag_tensor *x, ag_pool2d_opts o)
{
    return pool_ok(t, "nn_avg_pool2d", x, &o) ? ag_avg_pool2d(t, x, o) : NULL;
}

/* ---- flatten ---- */

ag_tensor *nn_flatten(ag_tape *t, ag_tensor *x, int start_dim, int end_dim)
{
    const char *fn = "nn_flatten";
    if (!nn_check_input(t, fn, x))
        return NULL;
    int nd = ag_ndim(x), rank = nd > 0 ? nd : 1;   /* a 0-d x flattens as [1] */
    int s = start_dim < 0 ? start_dim + rank : start_dim;
    int e = end_dim < 0 ? end_dim + rank : end_dim;
    if (s < 0 || s >= rank || e < 0 || e >= rank || s > e) {
        char b[96];
        return ag_tape_fail(t, AG_ERR_ARG,
                            "%s: x is %s: start_dim %d and end_dim %d are not dims 0 <= start "
                            "<= end < %d (negative counts from the end)", fn,
                            ag_shape_str(x, b, sizeof b), start_dim, end_dim, rank);
    }
    if (nd == 0)
        return ag_reshape(t, x, 1, (const int64_t[]){1});
    int64_t shape[AG_MAX_DIMS], merged = 1;
    int n = 0;
    for (int i = 0; i < nd; i++) {
        if (i < s || i > e) {
            shape[n++] = ag_shape(x)[i];
            continue;
        }
        merged *= ag_shape(x)[i];
        if (i == e)
            shape[n++] = merged;
    }
    return ag_reshape(t, x, n, shape);
}
