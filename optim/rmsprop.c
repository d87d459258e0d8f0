/* rmsprop.c — torch.optim.RMSprop (single-tensor path, PyTorch 1.13):
 *   g = g + wd * p
 *   sq = alpha * sq + (1 - alpha) * g * g
 *   centered:  ga = alpha * ga + (1 - alpha) * g;  avg = sqrt(sq - ga * ga)
 *   otherwise: avg = sqrt(sq)
 *   avg = avg + eps
 *   momentum > 0:  buf = momentum * buf + g / avg;  p = p - lr * buf
 *   otherwise:     p = p - lr * g / avg
 * Legend: N = elements of one parameter. */
#include "optim_internal.h"

#include <string.h>

enum { RMS_SQ = 0, RMS_MOMENTUM, RMS_GRAD_AVG };

optim_rmsprop_opts optim_rmsprop_defaults(void)
{
    return (optim_rmsprop_opts){.lr = 1e-2, .alpha = 0.99, .eps = 1e-8};
}

/* PyTorch creates the momentum buffer and the gradient average together
 * with square_avg, at the first step; a later change of momentum (by a
 * one-cycle schedule) finds the buffer there or creates it zeroed. */
static unsigned rmsprop_needs(const optim *o, const optim_pstate *st)
{
    (void)st;
    const optim_rmsprop_opts *op = &o->opts.rmsprop;
    return 1u << RMS_SQ | (op->momentum > 0 ? 1u << RMS_MOMENTUM : 0u) |
           (op->centered ? 1u << RMS_GRAD_AVG : 0u);
}

typedef struct rms_k {
    double lr, alpha, eps, wd, mom;
} rms_k;

/* centered, has_buf: constants at each call site, like dt. */
OPTIM_KERNEL void rmsprop_loop(const rms_k *k, int64_t N, void *restrict p,
                               const void *restrict g, void *restrict sq,
                               void *restrict buf, void *restrict ga, ag_dtype dt,
                               bool centered, bool has_buf)
{
    const double lr = k->lr, alpha = k->alpha, eps = k->eps, wd = k->wd, mom = k->mom;
    for (int64_t i = 0; i < N; i++) {
        double pi = optim_ld(p, dt, i), gi = optim_ld(g, dt, i);
        gi = wd != 0 ? gi + wd * pi : gi;
        double sqi = optim_round(dt, optim_ld(sq, dt, i) * alpha + (1 - alpha) * gi * gi);
        optim_st(sq, dt, i, sqi);
        double avg;
        if (centered) {
            double gai = optim_round(dt, optim_ld(ga, dt, i) * alpha + (1 - alpha) * gi);
            optim_st(ga, dt, i, gai);
            avg = sqrt(sqi + -1.0 * gai * gai);
        } else {
            avg = sqrt(sqi);
        }
        avg = avg + eps;
        if (has_buf) {
            double b = optim_round(dt, optim_ld(buf, dt, i) * mom + 1.0 * gi / avg);
            optim_st(buf, dt, i, b);
            optim_st(p, dt, i, pi + -lr * b);
        } else {
            optim_st(p, dt, i, pi + -lr * gi / avg);
        }
    }
}

/* One instantiation per (dtype, centered, has_buf), as optim_range_fn;
 * arrays (p, g, sq, buf, ga). */
#define RMS_RANGE(NAME, DT, CENTERED, HAS_BUF)                                \
    static void NAME(const void *k, int64_t n, void *const *a)                \
    {                                                                         \
        rmsprop_loop(k, n, a[0], a[1], a[2], a[3], a[4], DT, CENTERED, HAS_BUF); \
    }
RMS_RANGE(rms_f32, AG_F32, false, false)
RMS_RANGE(rms_f32_buf, AG_F32, false, true)
RMS_RANGE(rms_f32_c, AG_F32, true, false)
RMS_RANGE(rms_f32_c_buf, AG_F32, true, true)
RMS_RANGE(rms_f64, AG_F64, false, false)
RMS_RANGE(rms_f64_buf, AG_F64, false, true)
RMS_RANGE(rms_f64_c, AG_F64, true, false)
RMS_RANGE(rms_f64_c_buf, AG_F64, true, true)
#undef RMS_RANGE

static void rmsprop_update(optim *o, optim_pstate *st, const ag_tensor *g)
{
    const optim_rmsprop_opts *op = &o->opts.rmsprop;
    const rms_k k = {op->lr, op->alpha, op->eps, op->weight_decay, op->momentum};
    void *buf = k.mom > 0 ? ag_data(st->buf[RMS_MOMENTUM]) : NULL;
    void *ga = op->centered ? ag_data(st->buf[RMS_GRAD_AVG]) : NULL;
    static const optim_range_fn fns[2][2][2] = {
        {{rms_f64, rms_f64_buf}, {rms_f64_c, rms_f64_c_buf}},
        {{rms_f32, rms_f32_buf}, {rms_f32_c, rms_f32_c_buf}}};
    ag_dtype dt = ag_dtype_of(st->param);
    void *a[] = {ag_data(st->param), (void *)ag_data_const(g), ag_data(st->buf[RMS_SQ]), buf,
                 ga};
    optim_run(o, &k, fns[dt == AG_F32][ga != NULL][buf != NULL], ag_dtype_size(dt), 5, a);
    st->steps++;
    st->init = true;
}

/* alpha > 1 would make 1 - alpha negative and square_avg with it. */
static bool rmsprop_opts_ok(const char *fn, const optim_rmsprop_opts *op)
{
    if (!optim_check_nonneg(fn, "alpha", op->alpha))
        return false;
    if (op->alpha > 1) {
        ag_set_last_error("%s: alpha = %g is outside [0, 1]", fn, op->alpha);
        return false;
    }
    return optim_check_nonneg(fn, "lr", op->lr) && optim_check_pos(fn, "eps", op->eps) &&
           optim_check_nonneg(fn, "weight_decay", op->weight_decay) &&
           optim_check_nonneg(fn, "momentum", op->momentum);
}

static int rmsprop_opts_pack(const optim *o, double *out)
{
    const optim_rmsprop_opts *op = &o->opts.rmsprop;
    double v[] = {op->lr, op->alpha, op->eps, op->weight_decay, op->momentum, op->centered};
    memcpy(out, v, sizeof v);
    return 6;
}

static bool rmsprop_opts_unpack(optim *o, const double *in, int n, bool apply)
{
    if (!optim_unpack_count(n, 6) || !optim_unpack_bool("centered", in[5]))
        return false;
    optim_rmsprop_opts op = {in[0], in[1], in[2], in[3], in[4], in[5] != 0};
    if (!rmsprop_opts_ok("optim.opts", &op))
        return false;
    if (apply)
        o->opts.rmsprop = op;
    return true;
}

const optim_kind_def optim_rmsprop_def = {
    .name = "rmsprop",
    .buf_names = {"square_avg", "momentum_buffer", "grad_avg"},
    .buf_nonneg = {true, false, false},
    .needs = rmsprop_needs,
    .update = rmsprop_update,
    .opts_pack = rmsprop_opts_pack,
    .opts_unpack = rmsprop_opts_unpack,
};

/* A 0 field takes PyTorch's default. */
optim *optim_rmsprop(ag_tensor **params, int n, optim_rmsprop_opts opts)
{
    const optim_rmsprop_opts d = optim_rmsprop_defaults();
    opts.lr = optim_opt(opts.lr, d.lr);
    opts.alpha = optim_opt(opts.alpha, d.alpha);
    opts.eps = optim_opt(opts.eps, d.eps);
    opts.weight_decay = optim_opt(opts.weight_decay, d.weight_decay);
    opts.momentum = optim_opt(opts.momentum, d.momentum);
    if (!rmsprop_opts_ok("optim_rmsprop", &opts))
        return NULL;
    optim *o = optim_new_common("optim_rmsprop", OPTIM_RMSPROP, params, n);
    if (o)
        o->opts.rmsprop = opts;
    return o;
}
