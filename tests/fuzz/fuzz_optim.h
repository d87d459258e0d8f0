/* fuzz_optim.h — the training objects that fuzz_optim_checkpoint.c loads
 * checkpoints into and that fuzz_seeds.c saves its seed checkpoints from:
 * two parameters (an f32 [2, 3] "w" and an f64 [3] "b"), an optimizer of
 * each kind and a schedule of each kind with fixed arguments, so that a
 * checkpoint saved from one of them describes the same schedule as the one
 * the target builds (checkpoints name the schedule with its arguments). */
#ifndef TAPEGRAD_FUZZ_OPTIM_H
#define TAPEGRAD_FUZZ_OPTIM_H

#include "optim.h"

#include <stdbool.h>
#include <string.h>

#define FZ_NPARAMS 2
static const char *const fz_names[FZ_NPARAMS] = {"w", "b"};

/* Fresh parameters with fixed values (requiring grad); false on no memory. */
static bool fz_make_params(ag_tensor *p[FZ_NPARAMS])
{
    static const float w[6] = {0.5f, -1.0f, 0.25f, 2.0f, -0.125f, 1.5f};
    static const double b[3] = {0.1, -0.2, 0.3};
    p[0] = ag_tensor_from_f32(2, (const int64_t[]){2, 3}, w);
    p[1] = ag_tensor_from_f64(1, (const int64_t[]){3}, b);
    for (int i = 0; i < FZ_NPARAMS; i++)
        if (p[i])
            ag_set_requires_grad(p[i], true);
    return p[0] && p[1];
}

static void fz_free_params(ag_tensor *p[FZ_NPARAMS])
{
    for (int i = 0; i < FZ_NPARAMS; i++)
        ag_tensor_free(p[i]);
}

/* Gradients d/dp sum(p * p) into every parameter that requires grad
 * (accumulating). */
static ag_status fz_grads(ag_tensor *p[FZ_NPARAMS])
{
    ag_tape *t = ag_tape_new();
    if (!t)
        return AG_ERR_NOMEM;
    ag_status st = AG_OK;
    for (int i = 0; i < FZ_NPARAMS && st == AG_OK; i++) {
        if (!ag_requires_grad(p[i]))
            continue;
        st = ag_backward(t, ag_sum(t, ag_mul(t, p[i], p[i]), AG_ALL, false));
        ag_tape_reset(t);
    }
    ag_tape_free(t);
    return st;
}

/* The optimizer named kind ("sgd", "adam", "adamw", "rmsprop", "adagrad";
 * anything else: SGD).  variant picks other options (the seeds use it; a
 * loaded checkpoint brings its own options). */
static optim *fz_make_optim(const char *kind, ag_tensor *p[FZ_NPARAMS], int variant)
{
    kind = kind ? kind : "";
    if (strcmp(kind, "adam") == 0 || strcmp(kind, "adamw") == 0) {
        bool w = kind[4] == 'w';
        optim_adam_opts ao = w ? optim_adamw_defaults() : optim_adam_defaults();
        ao.amsgrad = variant & 1;
        ao.weight_decay = variant & 2 ? 0.01 : ao.weight_decay;
        return w ? optim_adamw(p, FZ_NPARAMS, ao) : optim_adam(p, FZ_NPARAMS, ao);
    }
    if (strcmp(kind, "rmsprop") == 0) {
        optim_rmsprop_opts ro = optim_rmsprop_defaults();
        ro.centered = variant & 1;
        ro.momentum = variant & 2 ? 0.5 : 0;
        return optim_rmsprop(p, FZ_NPARAMS, ro);
    }
    if (strcmp(kind, "adagrad") == 0) {
        optim_adagrad_opts ag = optim_adagrad_defaults();
        ag.initial_accumulator_value = variant & 1 ? 0.1 : 0;
        ag.lr_decay = variant & 2 ? 0.01 : 0;
        return optim_adagrad(p, FZ_NPARAMS, ag);
    }
    optim_sgd_opts so = optim_sgd_defaults();
    so.lr = 0.1;
    so.momentum = variant & 1 ? 0.9 : 0;
    so.nesterov = (variant & 3) == 3;
    so.dampening = (variant & 3) == 1 ? 0.1 : 0;
    so.weight_decay = variant & 4 ? 1e-4 : 0;
    return optim_sgd(p, FZ_NPARAMS, so);
}

/* The schedule whose checkpoint description starts with name ("step",
 * "multistep", "exponential", "cosine", "linear", "warmup", "onecycle"),
 * always with the same arguments; NULL for a NULL name or no memory. */
static optim_sched *fz_make_sched(const char *name, optim *o)
{
    if (!name || !o)
        return NULL;
    size_t n = strcspn(name, "(");
#define FZ_IS(s) (n == strlen(s) && strncmp(name, s, n) == 0)
    if (FZ_IS("step"))
        return optim_sched_step(o, 3, 0.5);
    if (FZ_IS("multistep"))
        return optim_sched_multistep(o, (const int64_t[]){5, 2, 5}, 3, 0.1);
    if (FZ_IS("exponential"))
        return optim_sched_exponential(o, 0.9);
    if (FZ_IS("linear"))
        return optim_sched_linear(o, 0.5, 1.0, 4);
    if (FZ_IS("warmup"))
        return optim_sched_warmup(o, 0.1, 3, optim_sched_cosine(o, 10, 0.0));
    if (FZ_IS("onecycle")) {
        optim_onecycle_opts oc = optim_onecycle_defaults(0.1, 20);
        oc.cycle_momentum = strcmp(optim_name(o), "adagrad") != 0;
        return optim_sched_onecycle(o, oc);
    }
    return optim_sched_cosine(o, 10, 0.001); /* "cosine" and anything else */
#undef FZ_IS
}

#endif
