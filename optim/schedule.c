/* schedule.c — torch.optim.lr_scheduler (PyTorch 1.13): StepLR, MultiStepLR,
 * ExponentialLR, CosineAnnealingLR, LinearLR, SequentialLR(LinearLR, x) as
 * "warmup" and OneCycleLR.
 *
 * Each schedule follows _LRScheduler.step: step() advances last_epoch and
 * uses the chainable get_lr (which reads the optimizer's current lr);
 * step(0), used by SequentialLR at its milestone, sets last_epoch and uses
 * the closed form where PyTorch has one.  Every expression keeps Python's
 * evaluation order so the values are the same doubles. */
#include "optim_internal.h"

#include <stdio.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

typedef enum sched_kind {
    SCHED_STEP = 0,
    SCHED_MULTISTEP,
    SCHED_EXPONENTIAL,
    SCHED_COSINE,
    SCHED_LINEAR,
    SCHED_WARMUP,
    SCHED_ONECYCLE
} sched_kind;

static const char *const sched_names[] = {
    [SCHED_STEP] = "step",         [SCHED_MULTISTEP] = "multistep",
    [SCHED_EXPONENTIAL] = "exponential", [SCHED_COSINE] = "cosine",
    [SCHED_LINEAR] = "linear",     [SCHED_WARMUP] = "warmup",
    [SCHED_ONECYCLE] = "onecycle",
};

/* One phase of a one-cycle: values by index into oc_vals. */
enum { OC_INITIAL = 0, OC_MAX, OC_MIN, OC_MAX_M, OC_BASE_M };
typedef struct oc_phase {
    double end_step;
    int start_lr, end_lr, start_m, end_m;
} oc_phase;

struct optim_sched {
    sched_kind kind;
    optim *o;
    int64_t last_epoch, step_count;
    double base_lr, last_lr;
    /* step, multistep, exponential */
    int64_t step_size;
    double gamma;
    int64_t *milestones; /* sorted, with repeats */
    int n_milestones;
    /* cosine */
    int64_t t_max;
    double eta_min;
    /* linear */
    double start_factor, end_factor;
    int64_t total_iters;
    /* warmup = SequentialLR([first, then], [milestone]) */
    optim_sched *first, *then;
    int64_t milestone;
    /* onecycle */
    optim_onecycle_opts oc;
    double oc_vals[5];
    oc_phase phases[3];
    int n_phases;
    /* the optimizer as it was before construction, restored if it fails */
    optim saved;
};

/* Python's a // b for b > 0. */
static int64_t py_floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* ---- per-kind formulas ---- */

static int64_t milestone_count(const optim_sched *s, int64_t e)
{
    int64_t c = 0;
    for (int i = 0; i < s->n_milestones; i++)
        c += s->milestones[i] == e;
    return c;
}

/* bisect_right(sorted milestones, e) */
static int64_t milestones_upto(const optim_sched *s, int64_t e)
{
    int64_t c = 0;
    for (int i = 0; i < s->n_milestones; i++)
        c += s->milestones[i] <= e;
    return c;
}

static double anneal(const optim_sched *s, double start, double end, double pct)
{
    if (s->oc.anneal == OPTIM_ANNEAL_LINEAR)
        return (end - start) * pct + start;
    double cos_out = cos(M_PI * pct) + 1;
    return end + (start - end) / 2.0 * cos_out;
}

/* OneCycleLR.get_lr; also sets *mom.  Errors as PyTorch's ValueError /
 * ZeroDivisionError. */
static ag_status onecycle_lr(const optim_sched *s, double *lr, double *mom)
{
    int64_t step_num = s->last_epoch;
    if (step_num > s->oc.total_steps) {
        ag_set_last_error("optim_sched_step_once: one-cycle stepped %lld times, "
                          "but total_steps is %lld",
                          (long long)step_num + 1, (long long)s->oc.total_steps);
        return AG_ERR_STATE;
    }
    double start_step = 0;
    for (int i = 0; i < s->n_phases; i++) {
        const oc_phase *ph = &s->phases[i];
        if ((double)step_num <= ph->end_step || i == s->n_phases - 1) {
            double den = ph->end_step - start_step;
            if (den == 0) {
                ag_set_last_error("optim_sched_step_once: one-cycle phase %d has no "
                                  "length (pct_start * total_steps too small)", i);
                return AG_ERR_STATE;
            }
            double pct = ((double)step_num - start_step) / den;
            *lr = anneal(s, s->oc_vals[ph->start_lr], s->oc_vals[ph->end_lr], pct);
            *mom = anneal(s, s->oc_vals[ph->start_m], s->oc_vals[ph->end_m], pct);
            return AG_OK;
        }
        start_step = ph->end_step;
    }
    return AG_ERR_STATE; /* n_phases >= 2: not reached */
}

/* The chainable get_lr of a plain schedule at s->last_epoch. */
static double chain_lr(const optim_sched *s, double lr)
{
    const int64_t e = s->last_epoch;
    switch (s->kind) {
    case SCHED_STEP:
        return (e == 0 || e % s->step_size != 0) ? lr : lr * s->gamma;
    case SCHED_MULTISTEP: {
        int64_t c = milestone_count(s, e);
        return c == 0 ? lr : lr * pow(s->gamma, (double)c);
    }
    case SCHED_EXPONENTIAL:
        return e == 0 ? lr : lr * s->gamma;
    case SCHED_COSINE: {
        const double T = (double)s->t_max, de = (double)e;
        if (e == 0)
            return lr;
        if (s->step_count == 1 && e > 0)
            return s->eta_min + (s->base_lr - s->eta_min) * (1 + cos(de * M_PI / T)) / 2;
        /* (e - 1 - T) % (2 T) == 0 with e >= 1, in unsigned arithmetic:
         * 2 T overflows int64 for T > INT64_MAX / 2 */
        if ((uint64_t)(e - 1) % (2 * (uint64_t)s->t_max) == (uint64_t)s->t_max)
            return lr + (s->base_lr - s->eta_min) * (1 - cos(M_PI / T)) / 2;
        return (1 + cos(M_PI * de / T)) / (1 + cos(M_PI * (de - 1) / T)) *
                   (lr - s->eta_min) + s->eta_min;
    }
    case SCHED_LINEAR: {
        const double sf = s->start_factor, ef = s->end_factor;
        if (e == 0)
            return lr * sf;
        if (e > s->total_iters)
            return lr;
        return lr * (1. + (ef - sf) / ((double)s->total_iters * sf +
                                       (double)(e - 1) * (ef - sf)));
    }
    case SCHED_WARMUP:
    case SCHED_ONECYCLE: break;
    }
    return lr;
}

/* The closed form (_get_closed_form_lr); false where PyTorch has none. */
static bool closed_lr(const optim_sched *s, double *lr)
{
    const int64_t e = s->last_epoch;
    const double b = s->base_lr;
    switch (s->kind) {
    case SCHED_STEP:
        *lr = b * pow(s->gamma, (double)py_floordiv(e, s->step_size));
        return true;
    case SCHED_MULTISTEP:
        *lr = b * pow(s->gamma, (double)milestones_upto(s, e));
        return true;
    case SCHED_EXPONENTIAL:
        *lr = b * pow(s->gamma, (double)e);
        return true;
    case SCHED_COSINE:
        *lr = s->eta_min +
              (b - s->eta_min) * (1 + cos(M_PI * (double)e / (double)s->t_max)) / 2;
        return true;
    case SCHED_LINEAR: {
        int64_t k = e < s->total_iters ? e : s->total_iters;
        *lr = b * (s->start_factor + (s->end_factor - s->start_factor) * (double)k /
                                         (double)s->total_iters);
        return true;
    }
    case SCHED_WARMUP:
    case SCHED_ONECYCLE: break;
    }
    return false;
}

/* _LRScheduler.step(epoch): epoch < 0 means None (advance by one). */
static ag_status sched_step(optim_sched *s, int64_t epoch)
{
    const int64_t saved_epoch = s->last_epoch, saved_count = s->step_count;
    double lr = 0, mom = 0;
    ag_status st = AG_OK;
    s->step_count++;
    s->last_epoch = epoch < 0 ? s->last_epoch + 1 : epoch;
    if (s->kind == SCHED_ONECYCLE) {
        st = onecycle_lr(s, &lr, &mom);
    } else if (epoch < 0 || !closed_lr(s, &lr)) {
        lr = chain_lr(s, optim_get_lr(s->o));
    }
    if (st == AG_OK && !(lr < INFINITY)) {
        ag_set_last_error("optim_sched_step_once: %s schedule: the lr of step %lld would be "
                          "%g (last lr %g); nothing changed",
                          sched_names[s->kind], (long long)s->last_epoch, lr, s->last_lr);
        st = AG_ERR_NUMERIC;
    }
    if (st != AG_OK) {
        s->last_epoch = saved_epoch;
        s->step_count = saved_count;
        return st;
    }
    if (s->kind == SCHED_ONECYCLE && s->oc.cycle_momentum)
        *optim_momentum_ref(s->o) = mom;
    *optim_lr_ref(s->o) = lr;
    s->last_lr = lr;
    return AG_OK;
}

/* SequentialLR.step */
static ag_status warmup_step(optim_sched *s)
{
    s->last_epoch++;
    ag_status st;
    optim_sched *child = s->last_epoch >= s->milestone ? s->then : s->first;
    if (child == s->then && s->last_epoch == s->milestone)
        st = sched_step(child, 0);
    else
        st = sched_step(child, -1);
    if (st != AG_OK) {
        s->last_epoch--;
        return st;
    }
    s->last_lr = child->last_lr;
    return AG_OK;
}

ag_status optim_sched_step_once(optim_sched *s)
{
    if (!s) {
        ag_set_last_error("optim_sched_step_once: s is NULL");
        return AG_ERR_ARG;
    }
    return s->kind == SCHED_WARMUP ? warmup_step(s) : sched_step(s, -1);
}

/* ---- construction ---- */

/* A new schedule on o with PyTorch's base lr (initial_lr) recorded. */
static optim_sched *sched_new(const char *fn, optim *o, sched_kind kind)
{
    if (!o) {
        ag_set_last_error("%s: o is NULL", fn);
        return NULL;
    }
    optim_sched *s = ag_mem_calloc(sizeof *s);
    if (!s) {
        ag_set_last_error("%s: out of memory", fn);
        return NULL;
    }
    s->kind = kind;
    s->o = o;
    s->saved = *o;
    if (!o->has_initial_lr) {
        o->initial_lr = optim_get_lr(o);
        o->has_initial_lr = true;
    }
    s->base_lr = o->initial_lr;
    s->last_epoch = -1;
    return s;
}

/* _initial_step: step count 0, then one step to last_epoch 0.  On failure
 * the optimizer gets back its options and initial_lr. */
static optim_sched *sched_start(optim_sched *s)
{
    s->step_count = 0;
    if (sched_step(s, -1) != AG_OK) {
        s->o->opts = s->saved.opts;
        s->o->initial_lr = s->saved.initial_lr;
        s->o->has_initial_lr = s->saved.has_initial_lr;
        optim_sched_free(s);
        return NULL;
    }
    return s;
}

static bool gamma_ok(const char *fn, double gamma)
{
    if (gamma >= 0 && gamma < INFINITY)
        return true;
    ag_set_last_error("%s: gamma = %g must be finite and >= 0", fn, gamma);
    return false;
}

optim_sched *optim_sched_step(optim *o, int64_t step_size, double gamma)
{
    const char *fn = "optim_sched_step";
    if (step_size < 1) {
        ag_set_last_error("%s: step_size = %lld must be >= 1", fn, (long long)step_size);
        return NULL;
    }
    if (!gamma_ok(fn, gamma))
        return NULL;
    optim_sched *s = sched_new(fn, o, SCHED_STEP);
    if (!s)
        return NULL;
    s->step_size = step_size;
    s->gamma = gamma;
    return sched_start(s);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

optim_sched *optim_sched_multistep(optim *o, const int64_t *milestones, int n, double gamma)
{
    const char *fn = "optim_sched_multistep";
    if (!milestones || n < 1) {
        ag_set_last_error("%s: need at least one milestone (n = %d)", fn, n);
        return NULL;
    }
    if (!gamma_ok(fn, gamma))
        return NULL;
    optim_sched *s = sched_new(fn, o, SCHED_MULTISTEP);
    if (!s)
        return NULL;
    s->milestones = ag_mem_alloc((size_t)n * sizeof *milestones);
    if (!s->milestones) {
        ag_set_last_error("%s: out of memory", fn);
        optim_sched_free(s);
        return NULL;
    }
    memcpy(s->milestones, milestones, (size_t)n * sizeof *milestones);
    qsort(s->milestones, (size_t)n, sizeof *milestones, cmp_i64);
    s->n_milestones = n;
    s->gamma = gamma;
    return sched_start(s);
}

optim_sched *optim_sched_exponential(optim *o, double gamma)
{
    const char *fn = "optim_sched_exponential";
    if (!gamma_ok(fn, gamma))
        return NULL;
    optim_sched *s = sched_new(fn, o, SCHED_EXPONENTIAL);
    if (!s)
        return NULL;
    s->gamma = gamma;
    return sched_start(s);
}

optim_sched *optim_sched_cosine(optim *o, int64_t t_max, double eta_min)
{
    const char *fn = "optim_sched_cosine";
    if (t_max < 1) {
        ag_set_last_error("%s: t_max = %lld must be >= 1", fn, (long long)t_max);
        return NULL;
    }
    if (!optim_check_nonneg(fn, "eta_min", eta_min))
        return NULL;
    optim_sched *s = sched_new(fn, o, SCHED_COSINE);
    if (!s)
        return NULL;
    s->t_max = t_max;
    s->eta_min = eta_min;
    return sched_start(s);
}

static bool linear_args_ok(const char *fn, double start_factor, double end_factor,
                           int64_t total_iters)
{
    if (!(start_factor > 0 && start_factor <= 1)) {
        ag_set_last_error("%s: start_factor = %g is outside (0, 1]", fn, start_factor);
        return false;
    }
    if (!(end_factor >= 0 && end_factor <= 1)) {
        ag_set_last_error("%s: end_factor = %g is outside [0, 1]", fn, end_factor);
        return false;
    }
    if (total_iters < 1) {
        ag_set_last_error("%s: %lld steps; need >= 1", fn, (long long)total_iters);
        return false;
    }
    return true;
}

optim_sched *optim_sched_linear(optim *o, double start_factor, double end_factor,
                                int64_t total_iters)
{
    const char *fn = "optim_sched_linear";
    if (!linear_args_ok(fn, start_factor, end_factor, total_iters))
        return NULL;
    optim_sched *s = sched_new(fn, o, SCHED_LINEAR);
    if (!s)
        return NULL;
    s->start_factor = start_factor;
    s->end_factor = end_factor;
    s->total_iters = total_iters;
    return sched_start(s);
}

optim_sched *optim_sched_warmup(optim *o, double start_factor, int64_t warmup_steps,
                                optim_sched *then)
{
    const char *fn = "optim_sched_warmup";
    const char *why = !then ? "the following schedule is NULL (its constructor failed?)"
                      : then->o != o ? "the following schedule drives another optimizer"
                      : then->kind == SCHED_WARMUP ? "warm-ups do not nest"
                                                   : NULL;
    if (why || !o) {
        if (why)
            ag_set_last_error("%s: %s", fn, why);
        else
            ag_set_last_error("%s: o is NULL", fn);
        optim_sched_free(then);
        return NULL;
    }
    if (!linear_args_ok(fn, start_factor, 1.0, warmup_steps)) {
        optim_sched_free(then);
        return NULL;
    }
    const double lr0 = optim_get_lr(o);
    optim_sched *first = optim_sched_linear(o, start_factor, 1.0, warmup_steps);
    optim_sched *s = first ? sched_new(fn, o, SCHED_WARMUP) : NULL;
    if (!s) {
        *optim_lr_ref(o) = lr0;
        optim_sched_free(first);
        optim_sched_free(then);
        return NULL;
    }
    s->first = first;
    s->then = then;
    s->milestone = warmup_steps;
    /* SequentialLR.__init__: back to initial_lr, undo both initial steps,
     * then the first schedule's initial step again. */
    *optim_lr_ref(o) = o->initial_lr;
    first->last_epoch--;
    then->last_epoch--;
    first->step_count = 0;
    (void)sched_step(first, -1); /* LinearLR cannot fail */
    s->last_epoch = 0;
    s->last_lr = first->last_lr;
    return s;
}

optim_onecycle_opts optim_onecycle_defaults(double max_lr, int64_t total_steps)
{
    return (optim_onecycle_opts){
        .max_lr = max_lr,
        .total_steps = total_steps,
        .pct_start = 0.3,
        .anneal = OPTIM_ANNEAL_COS,
        .cycle_momentum = true,
        .base_momentum = 0.85,
        .max_momentum = 0.95,
        .div_factor = 25.,
        .final_div_factor = 1e4,
        .three_phase = false,
    };
}

static bool onecycle_opts_ok(const char *fn, const optim *o, const optim_onecycle_opts *op)
{
    const char *bad = NULL;
    double v = 0;
    if (op->div_factor == 0 || op->final_div_factor == 0) {
        ag_set_last_error("%s: opts.%s is 0: a zero-initialised optim_onecycle_opts is not "
                          "PyTorch's defaults (cycle_momentum would be off); start from "
                          "optim_onecycle_defaults(max_lr, total_steps)",
                          fn, op->div_factor == 0 ? "div_factor" : "final_div_factor");
        return false;
    }
    /* Adam's beta1 is the cycled momentum: it must stay in [0, 1) */
    const bool beta = o && (o->kind == OPTIM_ADAM || o->kind == OPTIM_ADAMW);
    const double mom_max = beta ? 1 : INFINITY;
    if (!(op->max_lr > 0 && op->max_lr < INFINITY))
        bad = "max_lr must be > 0", v = op->max_lr;
    else if (op->total_steps < 1)
        bad = "total_steps must be >= 1", v = (double)op->total_steps;
    else if (!(op->pct_start >= 0 && op->pct_start <= 1))
        bad = "pct_start must lie in [0, 1]", v = op->pct_start;
    else if (op->anneal != OPTIM_ANNEAL_COS && op->anneal != OPTIM_ANNEAL_LINEAR)
        bad = "anneal is not an optim_anneal", v = (double)op->anneal;
    else if (!(op->div_factor > 0 && op->div_factor < INFINITY))
        bad = "div_factor must be > 0", v = op->div_factor;
    else if (!(op->final_div_factor > 0 && op->final_div_factor < INFINITY))
        bad = "final_div_factor must be > 0", v = op->final_div_factor;
    else if (op->cycle_momentum && !(op->base_momentum >= 0 && op->base_momentum < mom_max))
        bad = beta ? "base_momentum (Adam's beta1) must lie in [0, 1)"
                   : "base_momentum must be finite and >= 0",
        v = op->base_momentum;
    else if (op->cycle_momentum && !(op->max_momentum >= 0 && op->max_momentum < mom_max))
        bad = beta ? "max_momentum (Adam's beta1) must lie in [0, 1)"
                   : "max_momentum must be finite and >= 0",
        v = op->max_momentum;
    if (bad) {
        ag_set_last_error("%s: %s (got %g)", fn, bad, v);
        return false;
    }
    if (o && op->cycle_momentum && !optim_momentum_ref((optim *)o)) {
        ag_set_last_error("%s: cycle_momentum needs an optimizer with momentum or "
                          "beta1, not %s", fn, optim_name(o));
        return false;
    }
    return true;
}

optim_sched *optim_sched_onecycle(optim *o, optim_onecycle_opts opts)
{
    const char *fn = "optim_sched_onecycle";
    if (!onecycle_opts_ok(fn, o, &opts))
        return NULL;
    optim_sched *s = sched_new(fn, o, SCHED_ONECYCLE);
    if (!s)
        return NULL;
    s->oc = opts;
    const double T = (double)opts.total_steps, pct = opts.pct_start;
    if (opts.three_phase) {
        s->phases[0] = (oc_phase){pct * T - 1, OC_INITIAL, OC_MAX, OC_MAX_M, OC_BASE_M};
        s->phases[1] = (oc_phase){2 * pct * T - 2, OC_MAX, OC_INITIAL, OC_BASE_M, OC_MAX_M};
        s->phases[2] = (oc_phase){T - 1, OC_INITIAL, OC_MIN, OC_MAX_M, OC_MAX_M};
        s->n_phases = 3;
    } else {
        s->phases[0] = (oc_phase){pct * T - 1, OC_INITIAL, OC_MAX, OC_MAX_M, OC_BASE_M};
        s->phases[1] = (oc_phase){T - 1, OC_MAX, OC_MIN, OC_BASE_M, OC_MAX_M};
        s->n_phases = 2;
    }
    /* OneCycleLR.__init__ overwrites initial_lr and sets the momentum. */
    s->oc_vals[OC_INITIAL] = opts.max_lr / opts.div_factor;
    s->oc_vals[OC_MAX] = opts.max_lr;
    s->oc_vals[OC_MIN] = s->oc_vals[OC_INITIAL] / opts.final_div_factor;
    s->oc_vals[OC_MAX_M] = opts.max_momentum;
    s->oc_vals[OC_BASE_M] = opts.base_momentum;
    o->initial_lr = s->oc_vals[OC_INITIAL];
    s->base_lr = o->initial_lr;
    if (opts.cycle_momentum)
        *optim_momentum_ref(o) = opts.max_momentum;
    return sched_start(s);
}

/* ---- access ---- */

/* false, with "fn: s is NULL", for a NULL s */
static bool have_sched(const char *fn, const optim_sched *s)
{
    if (s)
        return true;
    ag_set_last_error("%s: s is NULL", fn);
    return false;
}

double optim_sched_get_last_lr(const optim_sched *s)
{
    return have_sched("optim_sched_get_last_lr", s) ? s->last_lr : NAN;
}

int64_t optim_sched_last_epoch(const optim_sched *s)
{
    return have_sched("optim_sched_last_epoch", s) ? s->last_epoch : -1;
}

const char *optim_sched_name(const optim_sched *s)
{
    return have_sched("optim_sched_name", s) ? sched_names[s->kind] : NULL;
}

const optim *optim_sched_optimizer(const optim_sched *s)
{
    return s ? s->o : NULL;
}

void optim_sched_free(optim_sched *s)
{
    if (!s)
        return;
    optim_sched_free(s->first);
    optim_sched_free(s->then);
    ag_mem_free(s->milestones);
    ag_mem_free(s);
}

/* ---- checkpoint support ---- */

int optim_sched_pack(const optim_sched *s, double *out)
{
    int k = 0;
    if (out) {
        out[0] = (double)s->last_epoch;
        out[1] = (double)s->step_count;
        out[2] = s->base_lr;
        out[3] = s->last_lr;
    }
    k = 4;
    if (s->kind == SCHED_WARMUP) {
        k += optim_sched_pack(s->first, out ? out + k : NULL);
        k += optim_sched_pack(s->then, out ? out + k : NULL);
    }
    return k;
}

static void unpack_one(optim_sched *s, const double *in)
{
    s->last_epoch = (int64_t)in[0];
    s->step_count = (int64_t)in[1];
    s->base_lr = in[2];
    s->last_lr = in[3];
}

bool optim_sched_unpack(optim_sched *s, const double *in, int n, bool apply)
{
    static const char *const field[4] = {"last_epoch", "step_count", "base_lr", "last_lr"};
    const int want = optim_sched_pack(s, NULL);
    if (n != want) {
        ag_set_last_error("sched.state: %d values, expected %d", n, want);
        return false;
    }
    for (int i = 0; i < n; i += 4) {
        /* last_epoch >= -1 and step count >= 0, integers of sane size
         * (below 2^53, exact in a double); lrs finite and >= 0 */
        for (int j = 0; j < 4; j++) {
            const double v = in[i + j];
            const bool ok = j < 2 ? v >= -1 + j && v < 9e15 && v == floor(v)
                                  : v >= 0 && v < INFINITY;
            if (!ok) {
                ag_set_last_error("sched.state[%d]: %s = %.17g %s", i + j, field[j], v,
                                  j == 0   ? "must be a whole number in [-1, 9e15)"
                                  : j == 1 ? "must be a whole number in [0, 9e15)"
                                           : "must be finite and >= 0");
                return false;
            }
        }
    }
    if (!apply)
        return true;
    unpack_one(s, in);
    if (s->kind == SCHED_WARMUP) {
        unpack_one(s->first, in + 4);
        unpack_one(s->then, in + 8);
    }
    return true;
}

void optim_sched_describe(const optim_sched *s, char *buf, size_t n)
{
    char inner[512] = "";
    int used = 0;
    switch (s->kind) {
    case SCHED_STEP:
        snprintf(buf, n, "step(step_size=%lld,gamma=%.17g)", (long long)s->step_size,
                 s->gamma);
        return;
    case SCHED_MULTISTEP:
        used = snprintf(buf, n, "multistep(gamma=%.17g,milestones=", s->gamma);
        for (int i = 0; i < s->n_milestones && used >= 0 && (size_t)used < n; i++)
            used += snprintf(buf + used, n - (size_t)used, "%s%lld", i ? ":" : "",
                             (long long)s->milestones[i]);
        if (used >= 0 && (size_t)used < n)
            snprintf(buf + used, n - (size_t)used, ")");
        return;
    case SCHED_EXPONENTIAL:
        snprintf(buf, n, "exponential(gamma=%.17g)", s->gamma);
        return;
    case SCHED_COSINE:
        snprintf(buf, n, "cosine(t_max=%lld,eta_min=%.17g)", (long long)s->t_max, s->eta_min);
        return;
    case SCHED_LINEAR:
        snprintf(buf, n, "linear(start_factor=%.17g,end_factor=%.17g,total_iters=%lld)",
                 s->start_factor, s->end_factor, (long long)s->total_iters);
        return;
    case SCHED_WARMUP:
        optim_sched_describe(s->then, inner, sizeof inner);
        snprintf(buf, n, "warmup(start_factor=%.17g,steps=%lld,then=%s)",
                 s->first->start_factor, (long long)s->milestone, inner);
        return;
    case SCHED_ONECYCLE:
        snprintf(buf, n,
                 "onecycle(max_lr=%.17g,total_steps=%lld,pct_start=%.17g,anneal=%d,"
                 "cycle_momentum=%d,base_momentum=%.17g,max_momentum=%.17g,"
                 "div_factor=%.17g,final_div_factor=%.17g,three_phase=%d)",
                 s->oc.max_lr, (long long)s->oc.total_steps, s->oc.pct_start,
                 (int)s->oc.anneal, (int)s->oc.cycle_momentum, s->oc.base_momentum,
                 s->oc.max_momentum, s->oc.div_factor, s->oc.final_div_factor,
                 (int)s->oc.three_phase);
        return;
    }
}
