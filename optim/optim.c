/* optim.c — what every optimizer shares: construction, per-parameter state
 * keyed by tensor, the step loop, lr access and freeing. */
#include "optim_internal.h"

#include <math.h>
#include <string.h>

static const optim_kind_def *const kind_defs[OPTIM_KIND_COUNT] = {
    [OPTIM_SGD] = &optim_sgd_def,
    [OPTIM_ADAM] = &optim_adam_def,
    [OPTIM_ADAMW] = &optim_adamw_def,
    [OPTIM_RMSPROP] = &optim_rmsprop_def,
    [OPTIM_ADAGRAD] = &optim_adagrad_def,
};

bool optim_check_nonneg(const char *fn, const char *opt, double v)
{
    if (v >= 0 && v < INFINITY)
        return true;
    ag_set_last_error("%s: %s = %g must be finite and >= 0", fn, opt, v);
    return false;
}

bool optim_check_pos(const char *fn, const char *opt, double v)
{
    if (v > 0 && v < INFINITY)
        return true;
    ag_set_last_error("%s: %s = %g must be finite and > 0", fn, opt, v);
    return false;
}

bool optim_check_unit(const char *fn, const char *opt, double v)
{
    if (v >= 0 && v < 1)
        return true;
    ag_set_last_error("%s: %s = %g is outside [0, 1)", fn, opt, v);
    return false;
}

bool optim_unpack_count(int n, int want)
{
    if (n == want)
        return true;
    ag_set_last_error("optim.opts: %d options, expected %d", n, want);
    return false;
}

bool optim_unpack_bool(const char *opt, double v)
{
    if (v == 0 || v == 1)
        return true;
    ag_set_last_error("optim.opts: %s = %g must be 0 or 1", opt, v);
    return false;
}

double optim_opt(double v, double dflt)
{
    if (v != 0)
        return v;
    return signbit(v) ? 0.0 : dflt;
}

/* A tape tensor (an op result) dies at the next ag_tape_reset.  autograd's
 * header has no query for it, but ag_set_requires_grad changes persistent
 * tensors only: flip the flag, see whether it moved, put it back. */
optim *optim_new_common(const char *fn, optim_kind kind, ag_tensor **params, int n)
{
    if (!params) {
        ag_set_last_error("%s: params is NULL", fn);
        return NULL;
    }
    if (n < 1) {
        ag_set_last_error("%s: n = %d; need at least one parameter", fn, n);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (!params[i]) {
            ag_set_last_error("%s: parameter #%d is NULL", fn, i + 1);
            return NULL;
        }
        if (!ag_tensor_is_persistent(params[i])) {
            ag_set_last_error("%s: parameter #%d is a tape tensor (an op result, freed "
                              "by ag_tape_reset); parameters are persistent tensors",
                              fn, i + 1);
            return NULL;
        }
    }
    optim *o = ag_mem_calloc(sizeof *o);
    if (o) {
        o->params = ag_mem_calloc((size_t)n * sizeof *o->params);
        o->states = ag_mem_calloc((size_t)n * sizeof *o->states);
    }
    if (!o || !o->params || !o->states) {
        optim_free(o);
        ag_set_last_error("%s: out of memory for %d parameters", fn, n);
        return NULL;
    }
    o->kind = kind;
    o->def = kind_defs[kind];
    o->n = n;
    memcpy(o->params, params, (size_t)n * sizeof *params);
    for (int i = 0; i < n; i++) {
        optim_pstate *st = &o->states[i], *dup = NULL;
        HASH_FIND_PTR(o->by_tensor, &params[i], dup);
        if (dup) {
            ag_set_last_error("%s: parameter #%d is the same tensor as #%d", fn,
                              i + 1, dup->index + 1);
            optim_free(o);
            return NULL;
        }
        st->param = params[i];
        st->index = i;
        HASH_ADD_PTR(o->by_tensor, param, st);
        if (HASH_COUNT(o->by_tensor) != (unsigned)i + 1) {
            ag_set_last_error("%s: out of memory for the state table", fn);
            optim_free(o);
            return NULL;
        }
    }
    return o;
}

optim_pstate *optim_find_state(const optim *o, const ag_tensor *param)
{
    optim_pstate *st = NULL;
    if (o && param)
        HASH_FIND_PTR(o->by_tensor, &param, st);
    return st;
}

bool optim_buf_ensure(optim_pstate *st, int i)
{
    if (!st->buf[i])
        st->buf[i] = ag_tensor_new(ag_dtype_of(st->param), ag_ndim(st->param),
                                   ag_shape(st->param));
    return st->buf[i] != NULL;
}

/* optim_step (lo NULL: every element) and optim_step_parts. */
static ag_status step(optim *o, const int64_t *lo, const int64_t *hi, const char *fn)
{
    /* Allocate every buffer this step needs first, so that running out of
     * memory leaves all parameters as they were. */
    for (int i = 0; i < o->n; i++) {
        optim_pstate *st = &o->states[i];
        if (!ag_grad(st->param))
            continue;
        unsigned need = o->def->needs(o, st);
        for (int b = 0; b < OPTIM_MAX_BUFS; b++) {
            if ((need >> b & 1u) && !optim_buf_ensure(st, b)) {
                ag_set_last_error("%s: out of memory for the state of parameter #%d "
                                  "(%lld elements)", fn, i + 1,
                                  (long long)ag_numel(st->param));
                return AG_ERR_NOMEM;
            }
        }
    }
    for (int i = 0; i < o->n; i++) {
        optim_pstate *st = &o->states[i];
        const ag_tensor *g = ag_grad(st->param);
        if (!g)
            continue;
        o->lo = lo ? lo[i] : 0;
        o->hi = lo ? hi[i] : ag_numel(st->param);
        o->def->update(o, st, g);
        if (o->hi > o->lo)
            ag_tensor_mark_modified(st->param);
    }
    return AG_OK;
}

ag_status optim_step(optim *o)
{
    if (!o) {
        ag_set_last_error("optim_step: o is NULL");
        return AG_ERR_ARG;
    }
    return step(o, NULL, NULL, "optim_step");
}

ag_status optim_step_parts(optim *o, const int64_t *lo, const int64_t *hi)
{
    const char *fn = "optim_step_parts";
    if (!o || !lo || !hi) {
        ag_set_last_error("%s: %s is NULL", fn, !o ? "o" : !lo ? "lo" : "hi");
        return AG_ERR_ARG;
    }
    for (int i = 0; i < o->n; i++)
        if (lo[i] < 0 || hi[i] < lo[i] || hi[i] > ag_numel(o->params[i])) {
            ag_set_last_error("%s: parameter #%d: [lo, hi) = [%lld, %lld) is not a range of "
                              "its %lld elements", fn, i + 1, (long long)lo[i],
                              (long long)hi[i], (long long)ag_numel(o->params[i]));
            return AG_ERR_ARG;
        }
    return step(o, lo, hi, fn);
}

void optim_zero_grad(optim *o)
{
    for (int i = 0; o && i < o->n; i++)
        ag_zero_grad(o->params[i]);
}

double *optim_lr_ref(optim *o)
{
    switch (o->kind) {
    case OPTIM_SGD: return &o->opts.sgd.lr;
    case OPTIM_ADAM:
    case OPTIM_ADAMW: return &o->opts.adam.lr;
    case OPTIM_RMSPROP: return &o->opts.rmsprop.lr;
    case OPTIM_ADAGRAD: return &o->opts.adagrad.lr;
    case OPTIM_KIND_COUNT: break;
    }
    return NULL;
}

double *optim_momentum_ref(optim *o)
{
    switch (o->kind) {
    case OPTIM_SGD: return &o->opts.sgd.momentum;
    case OPTIM_ADAM:
    case OPTIM_ADAMW: return &o->opts.adam.beta1;
    case OPTIM_RMSPROP: return &o->opts.rmsprop.momentum;
    case OPTIM_ADAGRAD:
    case OPTIM_KIND_COUNT: break;
    }
    return NULL;
}

void optim_set_lr(optim *o, double lr)
{
    if (!o) {
        ag_set_last_error("optim_set_lr: o is NULL");
        return;
    }
    if (!optim_check_nonneg("optim_set_lr", "lr", lr))
        return;
    *optim_lr_ref(o) = lr;
}

/* false, with "fn: o is NULL", for a NULL o */
static bool have(const char *fn, const char *arg, const void *p)
{
    if (p)
        return true;
    ag_set_last_error("%s: %s is NULL", fn, arg);
    return false;
}

double optim_get_lr(const optim *o)
{
    return have("optim_get_lr", "o", o) ? *optim_lr_ref((optim *)o) : NAN;
}

double optim_get_momentum(const optim *o)
{
    const double *m = have("optim_get_momentum", "o", o) ? optim_momentum_ref((optim *)o) : NULL;
    return m ? *m : NAN;
}

const char *optim_name(const optim *o)
{
    return have("optim_name", "o", o) ? o->def->name : NULL;
}

/* optim_state and optim_state_buffer, named fn in messages. */
static ag_tensor *state_buf(const optim *o, const ag_tensor *param, const char *name,
                            const char *fn)
{
    if (!have(fn, "o", o) || !have(fn, "param", param) || !have(fn, "name", name))
        return NULL;
    const optim_pstate *st = optim_find_state(o, param);
    if (!st)
        return NULL;
    for (int b = 0; b < OPTIM_MAX_BUFS; b++) {
        const char *bn = o->def->buf_names[b];
        if (bn && strcmp(bn, name) == 0)
            return st->buf[b];
    }
    return NULL;
}

const ag_tensor *optim_state(const optim *o, const ag_tensor *param, const char *name)
{
    return state_buf(o, param, name, "optim_state");
}

ag_tensor *optim_state_buffer(optim *o, const ag_tensor *param, const char *name)
{
    return state_buf(o, param, name, "optim_state_buffer");
}

const char *optim_state_name(const optim *o, int i)
{
    if (!have("optim_state_name", "o", o))
        return NULL;
    return i >= 0 && i < OPTIM_MAX_BUFS ? o->def->buf_names[i] : NULL;
}

int64_t optim_state_steps(const optim *o, const ag_tensor *param)
{
    if (!have("optim_state_steps", "o", o) || !have("optim_state_steps", "param", param))
        return 0;
    const optim_pstate *st = optim_find_state(o, param);
    return st ? st->steps : 0;
}

void optim_free(optim *o)
{
    if (!o)
        return;
    HASH_CLEAR(hh, o->by_tensor);
    for (int i = 0; o->states && i < o->n; i++)
        for (int b = 0; b < OPTIM_MAX_BUFS; b++)
            ag_tensor_free(o->states[i].buf[b]);
    ag_mem_free(o->states);
    ag_mem_free(o->params);
    ag_mem_free(o);
}
