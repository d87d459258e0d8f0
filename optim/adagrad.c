/* adagrad.c — torch.optim.Adagrad (single-tensor path, PyTorch 1.13):
 *   t += 1
 *   g = g + wd * p
 *   clr = lr / (1 + (t - 1) * lr_decay)
 *   sum = sum + g * g
 *   p = p - clr * g / (sqrt(sum) + eps)
 * Legend: N = elements of one parameter. */
#include "optim_internal.h"

#include <string.h>

enum { ADAGRAD_SUM = 0 };

optim_adagrad_opts optim_adagrad_defaults(void)
{
    return (optim_adagrad_opts){.lr = 1e-2, .eps = 1e-10};
}

static unsigned adagrad_needs(const optim *o, const optim_pstate *st)
{
    (void)o;
    (void)st;
    return 1u << ADAGRAD_SUM;
}

OPTIM_KERNEL void adagrad_loop(double clr, double wd, double eps, int64_t N,
                               void *restrict p, const void *restrict g, void *restrict sum,
                               ag_dtype dt)
{
    for (int64_t i = 0; i < N; i++) {
        double pi = optim_ld(p, dt, i), gi = optim_ld(g, dt, i);
        gi = wd != 0 ? gi + wd * pi : gi;
        double si = optim_round(dt, optim_ld(sum, dt, i) + 1.0 * gi * gi);
        optim_st(sum, dt, i, si);
        double std = sqrt(si) + eps;
        optim_st(p, dt, i, pi + -clr * gi / std);
    }
}

/* The scalars of one update; the kernel as optim_range_fn per dtype,
 * arrays (p, g, sum). */
typedef struct adagrad_k {
    double clr, wd, eps;
} adagrad_k;

static void adagrad_f32_range(const void *vk, int64_t n, void *const *a)
{
    const adagrad_k *k = vk;
    adagrad_loop(k->clr, k->wd, k->eps, n, a[0], a[1], a[2], AG_F32);
}
static void adagrad_f64_range(const void *vk, int64_t n, void *const *a)
{
    const adagrad_k *k = vk;
    adagrad_loop(k->clr, k->wd, k->eps, n, a[0], a[1], a[2], AG_F64);
}

static void adagrad_update(optim *o, optim_pstate *st, const ag_tensor *g)
{
    const optim_adagrad_opts *op = &o->opts.adagrad;
    st->steps++;
    const adagrad_k k = {op->lr / (1 + ((double)st->steps - 1) * op->lr_decay),
                         op->weight_decay, op->eps};
    void *a[] = {ag_data(st->param), (void *)ag_data_const(g), ag_data(st->buf[ADAGRAD_SUM])};
    ag_dtype dt = ag_dtype_of(st->param);
    optim_run(o, &k, dt == AG_F32 ? adagrad_f32_range : adagrad_f64_range, ag_dtype_size(dt),
              3, a);
}

static bool adagrad_opts_ok(const char *fn, const optim_adagrad_opts *op)
{
    return optim_check_nonneg(fn, "lr", op->lr) &&
           optim_check_nonneg(fn, "lr_decay", op->lr_decay) &&
           optim_check_nonneg(fn, "weight_decay", op->weight_decay) &&
           optim_check_pos(fn, "eps", op->eps) &&
           optim_check_nonneg(fn, "initial_accumulator_value", op->initial_accumulator_value);
}

static int adagrad_opts_pack(const optim *o, double *out)
{
    const optim_adagrad_opts *op = &o->opts.adagrad;
    double v[] = {op->lr, op->lr_decay, op->weight_decay, op->eps,
                  op->initial_accumulator_value};
    memcpy(out, v, sizeof v);
    return 5;
}

static bool adagrad_opts_unpack(optim *o, const double *in, int n, bool apply)
{
    if (!optim_unpack_count(n, 5))
        return false;
    optim_adagrad_opts op = {in[0], in[1], in[2], in[3], in[4]};
    if (!adagrad_opts_ok("optim.opts", &op))
        return false;
    if (apply)
        o->opts.adagrad = op;
    return true;
}

const optim_kind_def optim_adagrad_def = {
    .name = "adagrad",
    .buf_names = {"sum"},
    .buf_nonneg = {true},
    .needs = adagrad_needs,
    .update = adagrad_update,
    .opts_pack = adagrad_opts_pack,
    .opts_unpack = adagrad_opts_unpack,
};

optim *optim_adagrad(ag_tensor **params, int n, optim_adagrad_opts opts)
{
    const char *fn = "optim_adagrad";
    const optim_adagrad_opts d = optim_adagrad_defaults();   /* a 0 field: the default */
    opts.lr = optim_opt(opts.lr, d.lr);
    opts.lr_decay = optim_opt(opts.lr_decay, d.lr_decay);
    opts.weight_decay = optim_opt(opts.weight_decay, d.weight_decay);
    opts.eps = optim_opt(opts.eps, d.eps);
    opts.initial_accumulator_value =
        optim_opt(opts.initial_accumulator_value, d.initial_accumulator_value);
    if (!adagrad_opts_ok(fn, &opts))
        return NULL;
    optim *o = optim_new_common(fn, OPTIM_ADAGRAD, params, n);
    if (!o)
        return NULL;
    o->opts.adagrad = opts;
    /* PyTorch fills the sums at construction and counts steps from there. */
    for (int i = 0; i < n; i++) {
        optim_pstate *st = &o->states[i];
        if (!optim_buf_ensure(st, ADAGRAD_SUM)) {
            ag_set_last_error("%s: out of memory for the state of parameter #%d", fn, i + 1);
            optim_free(o);
            return NULL;
        }
        void *sum = ag_data(st->buf[ADAGRAD_SUM]);
        for (int64_t j = 0; j < ag_numel(st->param); j++)
            optim_st(sum, ag_dtype_of(st->param), j, opts.initial_accumulator_value);
        st->init = true;
    }
    return o;
}
