/* clip.c — torch.nn.utils.clip_grad_norm_ and clip_grad_value_.
 * The norm is taken per gradient, then over those norms (as PyTorch does):
 *   total = || (||g_1||_p, ..., ||g_k||_p) ||_p,  or max |g| for p = inf
 *   coef  = max_norm / (total + 1e-6);  g *= coef when coef < 1 */
#include "optim_internal.h"

static bool clip_args_ok(const char *fn, ag_tensor **params, int n)
{
    if (n < 0 || (n > 0 && !params)) {
        ag_set_last_error("%s: bad parameter list (params %s, n = %d)", fn,
                          params ? "given" : "NULL", n);
        return false;
    }
    for (int i = 0; i < n; i++) {
        if (!params[i]) {
            ag_set_last_error("%s: parameter #%d is NULL", fn, i + 1);
            return false;
        }
    }
    return true;
}

/* Sums of x[i]^2 over [0, n) in double, eight running sums (a fixed
 * order the compiler can keep in one vector register: the scalar loop
 * through optim_ld took 1.9% of a charlm GPT step). */
#define SUMSQ(T)                                                              \
    static double sumsq_##T(const T *restrict x, int64_t n)                   \
    {                                                                         \
        double s[8] = {0}, tail = 0;                                          \
        int64_t i = 0;                                                        \
        for (; i + 8 <= n; i += 8)                                            \
            for (int k = 0; k < 8; k++)                                       \
                s[k] += (double)x[i + k] * (double)x[i + k];                  \
        for (; i < n; i++)                                                    \
            tail += (double)x[i] * (double)x[i];                              \
        return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) + tail; \
    }                                                                         \
    /* x *= coef, rounded once from double as optim_st does */                \
    static void scale_##T(T *restrict x, int64_t n, double coef)              \
    {                                                                         \
        for (int64_t i = 0; i < n; i++)                                       \
            x[i] = (T)((double)x[i] * coef);                                  \
    }
SUMSQ(float)
SUMSQ(double)

/* ||g||_p of one gradient in double; p = INFINITY gives max |g|. */
static double grad_norm(const ag_tensor *g, double p)
{
    const ag_dtype dt = ag_dtype_of(g);
    const void *d = ag_data_const(g);
    const int64_t N = ag_numel(g);
    double acc = 0;
    if (p == INFINITY) {
        for (int64_t i = 0; i < N; i++) {
            double a = fabs(optim_ld(d, dt, i));
            if (isnan(a) || a > acc)
                acc = a;
            if (isnan(acc))
                return acc;
        }
        return acc;
    }
    if (p == 2)
        return sqrt(dt == AG_F64 ? sumsq_double(d, N) : sumsq_float(d, N));
    if (p == 1) {
        for (int64_t i = 0; i < N; i++)
            acc += fabs(optim_ld(d, dt, i));
        return acc;
    }
    for (int64_t i = 0; i < N; i++)
        acc += pow(fabs(optim_ld(d, dt, i)), p);
    return pow(acc, 1 / p);
}

ag_status optim_clip_grad_norm(ag_tensor **params, int n, double max_norm,
                               double norm_type, double *total_norm)
{
    const char *fn = "optim_clip_grad_norm";
    if (total_norm)
        *total_norm = NAN;
    if (!clip_args_ok(fn, params, n))
        return AG_ERR_ARG;
    if (!(max_norm >= 0)) {
        ag_set_last_error("%s: max_norm = %g must be >= 0", fn, max_norm);
        return AG_ERR_ARG;
    }
    if (!(norm_type > 0)) {
        ag_set_last_error("%s: norm_type = %g must be > 0 (or INFINITY)", fn, norm_type);
        return AG_ERR_ARG;
    }
    /* Norm of the per-gradient norms, as torch.norm(torch.stack(norms), p). */
    double total = 0;
    for (int i = 0; i < n; i++) {
        const ag_tensor *g = ag_grad(params[i]);
        if (!g)
            continue;
        double ni = grad_norm(g, norm_type);
        if (norm_type == INFINITY)
            total = (isnan(ni) || ni > total) ? ni : total;
        else if (norm_type == 2)
            total += ni * ni;
        else if (norm_type == 1)
            total += ni;
        else
            total += pow(ni, norm_type);
    }
    if (norm_type == 2)
        total = sqrt(total);
    else if (norm_type != 1 && norm_type != INFINITY)
        total = pow(total, 1 / norm_type);
    if (total_norm)
        *total_norm = total;
    if (!isfinite(total)) {
        ag_set_last_error("%s: the total norm of order %g is %g; gradients left as they are",
                          fn, norm_type, total);
        return AG_ERR_NUMERIC;
    }
    double coef = max_norm / (total + 1e-6);
    if (coef >= 1)
        return AG_OK;
    for (int i = 0; i < n; i++) {
        ag_tensor *g = ag_grad(params[i]);
        if (!g)
            continue;
        if (ag_dtype_of(g) == AG_F64)
            scale_double(ag_data(g), ag_numel(g), coef);
        else
            scale_float(ag_data(g), ag_numel(g), coef);
    }
    return AG_OK;
}

ag_status optim_clip_grad_value(ag_tensor **params, int n, double clip_value)
{
    const char *fn = "optim_clip_grad_value";
    if (!clip_args_ok(fn, params, n))
        return AG_ERR_ARG;
    if (!(clip_value >= 0)) {
        ag_set_last_error("%s: clip_value = %g must be >= 0", fn, clip_value);
        return AG_ERR_ARG;
    }
    for (int i = 0; i < n; i++) {
        ag_tensor *g = ag_grad(params[i]);
        if (!g)
            continue;
        const ag_dtype dt = ag_dtype_of(g);
        void *d = ag_data(g);
        for (int64_t j = 0; j < ag_numel(g); j++) {
            double x = optim_ld(d, dt, j); /* NaN fails both tests and stays */
            if (x < -clip_value)
                optim_st(d, dt, j, -clip_value);
            else if (x > clip_value)
                optim_st(d, dt, j, clip_value);
        }
    }
    return AG_OK;
}
