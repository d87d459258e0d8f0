/* init.c — torch.nn.init from a seeded ag_rng: in place, element order. */
#include "nn_internal.h"

#include <math.h>

double nn_init_gain(const char *nonlinearity, double param)
{
    static const char *const unit[] = {"linear", "conv1d", "conv2d", "conv3d",
                                       "conv_transpose1d", "conv_transpose2d",
                                       "conv_transpose3d", "sigmoid"};
    if (!nonlinearity) {
        ag_set_last_error("nn_init_gain: nonlinearity is NULL");
        return NAN;
    }
    for (size_t i = 0; i < sizeof unit / sizeof unit[0]; i++)
        if (!strcmp(nonlinearity, unit[i]))
            return 1.0;
    if (!strcmp(nonlinearity, "tanh"))
        return 5.0 / 3.0;
    if (!strcmp(nonlinearity, "relu"))
        return sqrt(2.0);
    if (!strcmp(nonlinearity, "leaky_relu"))
        return sqrt(2.0 / (1.0 + param * param));
    if (!strcmp(nonlinearity, "selu"))
        return 0.75;
    ag_set_last_error("nn_init_gain: unsupported nonlinearity \"%s\"", nonlinearity);
    return NAN;
}

ag_status nn_init_fans(const ag_tensor *t, int64_t *fan_in, int64_t *fan_out)
{
    if (!t) {
        ag_set_last_error("nn_init_fans: tensor is NULL");
        return AG_ERR_ARG;
    }
    int nd = ag_ndim(t);
    if (nd < 2) {
        ag_set_last_error("nn_init_fans: fans need at least 2 dims, tensor has %d", nd);
        return AG_ERR_ARG;
    }
    const int64_t *s = ag_shape(t);
    int64_t receptive = 1;
    for (int i = 2; i < nd; i++)
        receptive *= s[i];
    if (fan_in)
        *fan_in = s[1] * receptive;
    if (fan_out)
        *fan_out = s[0] * receptive;
    return AG_OK;
}

static ag_status check(const char *fn, const ag_tensor *t, const ag_rng *rng, bool need_rng)
{
    if (!t || (need_rng && !rng)) {
        ag_set_last_error("%s: %s is NULL", fn, t ? "rng" : "tensor");
        return AG_ERR_ARG;
    }
    return AG_OK;
}

ag_status nn_init_uniform(ag_tensor *t, double lo, double hi, ag_rng *rng)
{
    ag_status s = check("nn_init_uniform", t, rng, true);
    if (s != AG_OK)
        return s;
    if (!(lo <= hi)) {
        ag_set_last_error("nn_init_uniform: bounds [%g, %g) are not ordered", lo, hi);
        return AG_ERR_ARG;
    }
    int64_t n = ag_numel(t);
    for (int64_t i = 0; i < n; i++)
        ag_set(t, i, lo + (hi - lo) * ag_rng_uniform(rng));
    return AG_OK;
}

ag_status nn_init_normal(ag_tensor *t, double mean, double std, ag_rng *rng)
{
    ag_status s = check("nn_init_normal", t, rng, true);
    if (s != AG_OK)
        return s;
    if (!(std >= 0)) {
        ag_set_last_error("nn_init_normal: std %g is negative", std);
        return AG_ERR_ARG;
    }
    int64_t n = ag_numel(t);
    for (int64_t i = 0; i < n; i++)
        ag_set(t, i, mean + std * ag_rng_normal(rng));
    return AG_OK;
}

ag_status nn_init_constant(ag_tensor *t, double value)
{
    ag_status s = check("nn_init_constant", t, NULL, false);
    if (s != AG_OK)
        return s;
    int64_t n = ag_numel(t);
    for (int64_t i = 0; i < n; i++)
        ag_set(t, i, value);
    return AG_OK;
}

ag_status nn_init_zeros(ag_tensor *t) { return nn_init_constant(t, 0.0); }

ag_status nn_init_ones(ag_tensor *t) { return nn_init_constant(t, 1.0); }

/* std of xavier init, or a negative value with the error set. */
static double xavier_std(const char *fn, const ag_tensor *t, double gain)
{
    int64_t fi, fo;
    if (nn_init_fans(t, &fi, &fo) != AG_OK) {
        ag_set_last_error("%s: tensor needs at least 2 dims", fn);
        return -1;
    }
    return fi + fo > 0 ? gain * sqrt(2.0 / (double)(fi + fo)) : 0.0;
}

ag_status nn_init_xavier_uniform(ag_tensor *t, double gain, ag_rng *rng)
{
    ag_status s = check("nn_init_xavier_uniform", t, rng, true);
    double std = s == AG_OK ? xavier_std("nn_init_xavier_uniform", t, gain) : -1;
    if (s != AG_OK || std < 0)
        return s != AG_OK ? s : AG_ERR_ARG;
    double b = sqrt(3.0) * std;
    return nn_init_uniform(t, -b, b, rng);
}

ag_status nn_init_xavier_normal(ag_tensor *t, double gain, ag_rng *rng)
{
    ag_status s = check("nn_init_xavier_normal", t, rng, true);
    double std = s == AG_OK ? xavier_std("nn_init_xavier_normal", t, gain) : -1;
    if (s != AG_OK || std < 0)
        return s != AG_OK ? s : AG_ERR_ARG;
    return nn_init_normal(t, 0.0, std, rng);
}

/* std of kaiming init, or a negative value with the error set. */
static double kaiming_std(const char *fn, const ag_tensor *t, double a, nn_fan_mode mode,
                          const char *nonlinearity)
{
    int64_t fi, fo;
    if (nn_init_fans(t, &fi, &fo) != AG_OK) {
        ag_set_last_error("%s: tensor needs at least 2 dims", fn);
        return -1;
    }
    if (mode != NN_FAN_IN && mode != NN_FAN_OUT) {
        ag_set_last_error("%s: mode %d is neither NN_FAN_IN nor NN_FAN_OUT", fn, (int)mode);
        return -1;
    }
    double gain = nn_init_gain(nonlinearity, a);
    if (isnan(gain)) {
        ag_set_last_error("%s: unsupported nonlinearity \"%s\"", fn,
                          nonlinearity ? nonlinearity : "(null)");
        return -1;
    }
    int64_t fan = mode == NN_FAN_IN ? fi : fo;
    return fan > 0 ? gain / sqrt((double)fan) : 0.0;
}

ag_status nn_init_kaiming_uniform(ag_tensor *t, double a, nn_fan_mode mode,
                                  const char *nonlinearity, ag_rng *rng)
{
    const char *fn = "nn_init_kaiming_uniform";
    ag_status s = check(fn, t, rng, true);
    double std = s == AG_OK ? kaiming_std(fn, t, a, mode, nonlinearity) : -1;
    if (s != AG_OK || std < 0)
        return s != AG_OK ? s : AG_ERR_ARG;
    double b = sqrt(3.0) * std;
    return nn_init_uniform(t, -b, b, rng);
}

ag_status nn_init_kaiming_normal(ag_tensor *t, double a, nn_fan_mode mode,
                                 const char *nonlinearity, ag_rng *rng)
{
    const char *fn = "nn_init_kaiming_normal";
    ag_status s = check(fn, t, rng, true);
    double std = s == AG_OK ? kaiming_std(fn, t, a, mode, nonlinearity) : -1;
    if (s != AG_OK || std < 0)
        return s != AG_OK ? s : AG_ERR_ARG;
    return nn_init_normal(t, 0.0, std, rng);
}
