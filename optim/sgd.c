/* sgd.c — torch.optim.SGD (single-tensor path, PyTorch 1.13):
 *   d = g + wd * p
 *   buf = d (first step)  or  buf = momentum * buf + (1 - dampening) * d
 *   d = nesterov ? d + momentum * buf : buf          (when momentum != 0)
 *   p = p - lr * d
 * Legend: N = elements of one parameter. */
#include "optim_internal.h"

#include <string.h>

enum { SGD_MOMENTUM = 0 };

optim_sgd_opts optim_sgd_defaults(void)
{
    return (optim_sgd_opts){.lr = 1e-3};
}

static unsigned sgd_needs(const optim *o, const optim_pstate *st)
{
    (void)st;
    return o->opts.sgd.momentum != 0 ? 1u << SGD_MOMENTUM : 0u;
}

/* Scalars of one update. */
typedef struct sgd_k {
    double lr, wd, mom, damp;
    bool nesterov, first;
} sgd_k;

/* has_buf: momentum != 0 (a constant at each call site, like dt). */
OPTIM_KERNEL void sgd_loop(const sgd_k *k, int64_t N, void *restrict p,
                           const void *restrict g, void *restrict buf, ag_dtype dt,
                           bool has_buf)
{
    const double lr = k->lr, wd = k->wd, mom = k->mom, damp = k->damp;
    const bool nesterov = k->nesterov, first = k->first;
    for (int64_t i = 0; i < N; i++) {
        double pi = optim_ld(p, dt, i);
        double d = optim_ld(g, dt, i);
        d = wd != 0 ? d + wd * pi : d;
        if (has_buf) {
            double old = optim_ld(buf, dt, i);
            double b = optim_round(dt, first ? d : old * mom + damp * d);
            optim_st(buf, dt, i, b);
            d = nesterov ? d + mom * b : b;
        }
        optim_st(p, dt, i, pi + -lr * d);
    }
}

/* The kernel as optim_range_fn, arrays (p, g, buf), per dtype and buf. */
static void sgd_f32_range(const void *k, int64_t n, void *const *a)
{
    sgd_loop(k, n, a[0], a[1], NULL, AG_F32, false);
}
static void sgd_f32_buf_range(const void *k, int64_t n, void *const *a)
{
    sgd_loop(k, n, a[0], a[1], a[2], AG_F32, true);
}
static void sgd_f64_range(const void *k, int64_t n, void *const *a)
{
    sgd_loop(k, n, a[0], a[1], NULL, AG_F64, false);
}
static void sgd_f64_buf_range(const void *k, int64_t n, void *const *a)
{
    sgd_loop(k, n, a[0], a[1], a[2], AG_F64, true);
}

static void sgd_update(optim *o, optim_pstate *st, const ag_tensor *g)
{
    const optim_sgd_opts *op = &o->opts.sgd;
    const sgd_k k = {op->lr, op->weight_decay, op->momentum, 1 - op->dampening, op->nesterov,
                     !st->init};
    void *buf = k.mom != 0 ? ag_data(st->buf[SGD_MOMENTUM]) : NULL;
    void *a[] = {ag_data(st->param), (void *)ag_data_const(g), buf};
    const bool f32 = ag_dtype_of(st->param) == AG_F32;
    optim_range_fn fn = f32 ? (buf ? sgd_f32_buf_range : sgd_f32_range)
                            : (buf ? sgd_f64_buf_range : sgd_f64_range);
    optim_run(o, &k, fn, ag_dtype_size(ag_dtype_of(st->param)), 3, a);
    if (buf)
        st->init = true;
    st->steps++;
}

static bool sgd_opts_ok(const char *fn, const optim_sgd_opts *op)
{
    if (!optim_check_nonneg(fn, "lr", op->lr) ||
        !optim_check_nonneg(fn, "momentum", op->momentum) ||
        !optim_check_nonneg(fn, "weight_decay", op->weight_decay))
        return false;
    if (!isfinite(op->dampening)) {
        ag_set_last_error("%s: dampening = %g must be finite", fn, op->dampening);
        return false;
    }
    if (op->nesterov && (op->momentum <= 0 || op->dampening != 0)) {
        ag_set_last_error("%s: nesterov needs momentum > 0 and dampening 0 "
                          "(momentum = %g, dampening = %g)",
                          fn, op->momentum, op->dampening);
        return false;
    }
    return true;
}

static int sgd_opts_pack(const optim *o, double *out)
{
    const optim_sgd_opts *op = &o->opts.sgd;
    double v[] = {op->lr, op->momentum, op->dampening, op->weight_decay, op->nesterov};
    memcpy(out, v, sizeof v);
    return 5;
}

static bool sgd_opts_unpack(optim *o, const double *in, int n, bool apply)
{
    if (!optim_unpack_count(n, 5) || !optim_unpack_bool("nesterov", in[4]))
        return false;
    optim_sgd_opts op = {in[0], in[1], in[2], in[3], in[4] != 0};
    if (!sgd_opts_ok("optim.opts", &op))
        return false;
    if (apply)
        o->opts.sgd = op;
    return true;
}

const optim_kind_def optim_sgd_def = {
    .name = "sgd",
    .buf_names = {"momentum_buffer"},
    .buf_nonneg = {false},
    .needs = sgd_needs,
    .update = sgd_update,
    .opts_pack = sgd_opts_pack,
    .opts_unpack = sgd_opts_unpack,
};

/* Every default of SGD is 0 but lr, which has none: a zero lr (not
 * OPTIM_ZERO) is refused. */
optim *optim_sgd(ag_tensor **params, int n, optim_sgd_opts opts)
{
    if (opts.lr == 0 && !signbit(opts.lr)) {
        ag_set_last_error("optim_sgd: lr is 0: SGD has no default learning rate; set "
                          "opts.lr (OPTIM_ZERO for a learning rate of 0)");
        return NULL;
    }
    opts.lr = optim_opt(opts.lr, 0);
    opts.momentum = optim_opt(opts.momentum, 0);
    opts.dampening = optim_opt(opts.dampening, 0);
    opts.weight_decay = optim_opt(opts.weight_decay, 0);
    if (!sgd_opts_ok("optim_sgd", &opts))
        return NULL;
    optim *o = optim_new_common("optim_sgd", OPTIM_SGD, params, n);
    if (o)
        o->opts.sgd = opts;
    return o;
}
