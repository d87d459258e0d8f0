/* adam.c — torch.optim.Adam and AdamW (single-tensor path, PyTorch 1.13):
 *   t += 1
 *   Adam:  g = g + wd * p            AdamW:  p = p * (1 - lr * wd)
 *   m = beta1 * m + (1 - beta1) * g
 *   v = beta2 * v + (1 - beta2) * g * g
 *   vmax = max(vmax, v)                          (amsgrad; then v := vmax)
 *   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
 *   p = p - (lr / (1 - beta1^t)) * m / denom
 * Legend: N = elements of one parameter. */
#include "optim_internal.h"

#include <string.h>

enum { ADAM_M = 0, ADAM_V, ADAM_VMAX };

optim_adam_opts optim_adam_defaults(void)
{
    return (optim_adam_opts){.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

optim_adam_opts optim_adamw_defaults(void)
{
    optim_adam_opts o = optim_adam_defaults();
    o.weight_decay = 1e-2;
    return o;
}

static unsigned adam_needs(const optim *o, const optim_pstate *st)
{
    (void)st;
    return 1u << ADAM_M | 1u << ADAM_V | (o->opts.adam.amsgrad ? 1u << ADAM_VMAX : 0u);
}

/* torch.maximum: NaN wins. */
OPTIM_KERNEL double nan_max(double a, double b)
{
    return (isnan(a) || a > b) ? a : b;
}

typedef struct adam_k {
    double b1, b2, eps, wd, step_size, bc2_sqrt, p_scale;
    bool decoupled;
} adam_k;

/* amsgrad: a constant at each call site, like dt. */
OPTIM_KERNEL void adam_loop(const adam_k *k, int64_t N, void *restrict p,
                            const void *restrict g, void *restrict m, void *restrict v,
                            void *restrict vmax, ag_dtype dt, bool amsgrad)
{
    const double b1 = k->b1, b2 = k->b2, eps = k->eps, wd = k->wd;
    const double step_size = k->step_size, bc2_sqrt = k->bc2_sqrt, p_scale = k->p_scale;
    const bool decoupled = k->decoupled;
    for (int64_t i = 0; i < N; i++) {
        double pi = optim_ld(p, dt, i), gi = optim_ld(g, dt, i);
        pi = decoupled ? optim_round(dt, pi * p_scale) : pi;
        gi = !decoupled && wd != 0 ? gi + wd * pi : gi;
        double mi = optim_round(dt, optim_ld(m, dt, i) * b1 + (1 - b1) * gi);
        double vi = optim_round(dt, optim_ld(v, dt, i) * b2 + (1 - b2) * gi * gi);
        optim_st(m, dt, i, mi);
        optim_st(v, dt, i, vi);
        if (amsgrad) {
            vi = nan_max(optim_ld(vmax, dt, i), vi);
            optim_st(vmax, dt, i, vi);
        }
        double denom = sqrt(vi) / bc2_sqrt + eps;
        optim_st(p, dt, i, pi + -step_size * mi / denom);
    }
}

/* f32 without amsgrad, the training case: float math in torch's order.
 * A separate function on plain float arrays, so it vectorises (the
 * generic loop's dtype test defeats that). */
__attribute__((target_clones("avx2", "default")))
static void adam_f32(const adam_k *k, int64_t N, float *restrict p, const float *restrict g,
                     float *restrict m, float *restrict v)
{
    const float b1 = (float)k->b1, b2 = (float)k->b2, c1 = (float)(1 - k->b1);
    const float c2 = (float)(1 - k->b2), eps = (float)k->eps, wd = (float)k->wd;
    const float step = (float)k->step_size, bc2 = (float)k->bc2_sqrt;
    const float scale = (float)k->p_scale;
    const bool decoupled = k->decoupled, coupled_wd = !decoupled && k->wd != 0;
    for (int64_t i = 0; i < N; i++) {
        float pi = decoupled ? p[i] * scale : p[i];
        float gi = coupled_wd ? g[i] + wd * pi : g[i];
        float mi = m[i] * b1 + c1 * gi;          /* m = b1 m + (1 - b1) g */
        float vi = v[i] * b2 + c2 * gi * gi;     /* v = b2 v + (1 - b2) g^2 */
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step * mi / (sqrtf(vi) / bc2 + eps);
    }
}

/* The kernels as optim_range_fn, arrays (p, g, m, v, vmax). */
static void adam_f32_range(const void *k, int64_t n, void *const *a)
{
    adam_f32(k, n, a[0], a[1], a[2], a[3]);
}
static void adam_f32_ams_range(const void *k, int64_t n, void *const *a)
{
    adam_loop(k, n, a[0], a[1], a[2], a[3], a[4], AG_F32, true);
}
static void adam_f64_range(const void *k, int64_t n, void *const *a)
{
    adam_loop(k, n, a[0], a[1], a[2], a[3], NULL, AG_F64, false);
}
static void adam_f64_ams_range(const void *k, int64_t n, void *const *a)
{
    adam_loop(k, n, a[0], a[1], a[2], a[3], a[4], AG_F64, true);
}

static void adam_update(optim *o, optim_pstate *st, const ag_tensor *g)
{
    const optim_adam_opts *op = &o->opts.adam;
    st->steps++;
    st->init = true;
    const double t = (double)st->steps;
    const double bc1 = 1 - pow(op->beta1, t), bc2 = 1 - pow(op->beta2, t);
    const adam_k k = {
        .b1 = op->beta1, .b2 = op->beta2, .eps = op->eps, .wd = op->weight_decay,
        .step_size = op->lr / bc1, .bc2_sqrt = sqrt(bc2),
        .p_scale = 1 - op->lr * op->weight_decay, .decoupled = o->kind == OPTIM_ADAMW,
    };
    void *a[] = {ag_data(st->param), (void *)ag_data_const(g), ag_data(st->buf[ADAM_M]),
                 ag_data(st->buf[ADAM_V]), op->amsgrad ? ag_data(st->buf[ADAM_VMAX]) : NULL};
    const bool f32 = ag_dtype_of(st->param) == AG_F32;
    optim_range_fn fn = f32 ? (op->amsgrad ? adam_f32_ams_range : adam_f32_range)
                            : (op->amsgrad ? adam_f64_ams_range : adam_f64_range);
    optim_run(o, &k, fn, ag_dtype_size(ag_dtype_of(st->param)), 5, a);
}

static bool adam_opts_ok(const char *fn, const optim_adam_opts *op)
{
    return optim_check_nonneg(fn, "lr", op->lr) && optim_check_pos(fn, "eps", op->eps) &&
           optim_check_unit(fn, "beta1", op->beta1) &&
           optim_check_unit(fn, "beta2", op->beta2) &&
           optim_check_nonneg(fn, "weight_decay", op->weight_decay);
}

static int adam_opts_pack(const optim *o, double *out)
{
    const optim_adam_opts *op = &o->opts.adam;
    double v[] = {op->lr, op->beta1, op->beta2, op->eps, op->weight_decay, op->amsgrad};
    memcpy(out, v, sizeof v);
    return 6;
}

/* (A one-cycle schedule keeps beta1 in [0, 1) too.) */
static bool adam_opts_unpack(optim *o, const double *in, int n, bool apply)
{
    if (!optim_unpack_count(n, 6) || !optim_unpack_bool("amsgrad", in[5]))
        return false;
    optim_adam_opts op = {in[0], in[1], in[2], in[3], in[4], in[5] != 0};
    if (!adam_opts_ok("optim.opts", &op))
        return false;
    if (apply)
        o->opts.adam = op;
    return true;
}

const optim_kind_def optim_adam_def = {
    .name = "adam",
    .buf_names = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    .buf_nonneg = {false, true, true},
    .needs = adam_needs,
    .update = adam_update,
    .opts_pack = adam_opts_pack,
    .opts_unpack = adam_opts_unpack,
};

const optim_kind_def optim_adamw_def = {
    .name = "adamw",
    .buf_names = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    .buf_nonneg = {false, true, true},
    .needs = adam_needs,
    .update = adam_update,
    .opts_pack = adam_opts_pack,
    .opts_unpack = adam_opts_unpack,
};

/* A 0 field takes PyTorch's default (AdamW's weight decay 1e-2). */
static optim *adam_new(const char *fn, optim_kind kind, ag_tensor **params, int n,
                       optim_adam_opts opts)
{
    const optim_adam_opts d = kind == OPTIM_ADAMW ? optim_adamw_defaults()
                                                  : optim_adam_defaults();
    opts.lr = optim_opt(opts.lr, d.lr);
    opts.beta1 = optim_opt(opts.beta1, d.beta1);
    opts.beta2 = optim_opt(opts.beta2, d.beta2);
    opts.eps = optim_opt(opts.eps, d.eps);
    opts.weight_decay = optim_opt(opts.weight_decay, d.weight_decay);
    if (!adam_opts_ok(fn, &opts))
        return NULL;
    optim *o = optim_new_common(fn, kind, params, n);
    if (o)
        o->opts.adam = opts;
    return o;
}

optim *optim_adam(ag_tensor **params, int n, optim_adam_opts opts)
{
    return adam_new("optim_adam", OPTIM_ADAM, params, n, opts);
}

optim *optim_adamw(ag_tensor **params, int n, optim_adam_opts opts)
{
    return adam_new("optim_adamw", OPTIM_ADAMW, params, n, opts);
}
