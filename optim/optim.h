/*
 * optim.h — optimizers, learning-rate schedules, gradient clipping and
 * resumable checkpoints, with torch.optim's exact semantics.
 *
 *   ag_tensor **p = nn_params_tensors(params, &n);
 *   optim       *opt   = optim_adamw(p, n, (optim_adam_opts){.lr = 3e-4});
 *                        (the fields left 0: PyTorch's defaults)
 *   optim_sched *sched = optim_sched_warmup(opt, 0.1, 500,
 *                            optim_sched_cosine(opt, 10000, 0.0));
 *   if (!opt || !sched) fprintf(stderr, "%s\n", ag_last_error());
 *   for (step = 0; step < 10000; step++) {
 *       optim_zero_grad(opt);
 *       ... forward, ag_backward(tape, loss) ...
 *       optim_clip_grad_norm(p, n, 1.0, 2.0, NULL);
 *       optim_step(opt);
 *       optim_sched_step_once(sched);    (after optim_step, as in PyTorch)
 *       ag_tape_reset(tape);
 *   }
 *   optim_checkpoint_save("ckpt.safetensors", names, p, n, opt, sched, &rng);
 *   optim_sched_free(sched);  optim_free(opt);
 *
 * Semantics.  Every optimizer and schedule follows the single-tensor code
 * path of torch.optim / torch.optim.lr_scheduler (PyTorch 1.13): the same
 * update formulas in the same order, state created lazily on the first step
 * a parameter has a gradient, and schedules that are "chainable" (they
 * multiply the optimizer's current lr, so optim_set_lr between steps acts
 * as in PyTorch).  An optimizer has one parameter group.
 *
 * Options.  A field left at 0 takes PyTorch's default, so an initializer
 * names only what differs:
 *     optim *opt = optim_adam(p, n, (optim_adam_opts){.lr = 3e-4});
 * is torch.optim.Adam(params, lr=3e-4): betas (0.9, 0.999), eps 1e-8.
 * optim_<name>_defaults() spells the same defaults out.  Where the value 0
 * itself is wanted for a field whose default is not 0 (Adam's beta1 = 0,
 * AdamW's weight_decay = 0, an lr of 0), write OPTIM_ZERO:
 *     (optim_adam_opts){.lr = 1e-2, .beta1 = OPTIM_ZERO}
 * SGD's lr has no default (as in PyTorch 1.13): a zero lr is refused.
 * Every option must be finite; eps must be > 0 (an eps of 0 divides 0 by 0
 * where a gradient is 0).  The one-cycle schedule's options cannot follow
 * the rule (cycle_momentum is on by default): start them from
 * optim_onecycle_defaults(); a zero-initialised struct is refused.
 *
 * dtypes.  Parameters may be AG_F32 or AG_F64 (mixed in one optimizer).
 * The arithmetic is done in double and rounded to the parameter's dtype on
 * store; state buffers (moments, sums) have the parameter's dtype.
 *
 * Errors.  Constructors return NULL and functions return an ag_status; the
 * message is read with ag_last_error() (autograd's per-thread message).
 * Nothing is modified by a call that fails.
 *
 * Ownership.  An optimizer keeps a copy of the parameter array (not of the
 * tensors): the tensors must outlive it.  A schedule points to its
 * optimizer, which must outlive the schedule.  Every *_free accepts NULL.
 *
 * Threads.  An optimizer or schedule is used by one thread at a time.
 * optim_step splits parameters of more than 32768 elements into chunks
 * of 32768 for the thread pool (ag_parallel_for, ag_get_num_threads()
 * threads); every element is updated on its own, so results do not
 * depend on the thread count.
 */
#ifndef TAPEGRAD_OPTIM_H
#define TAPEGRAD_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct optim optim;
typedef struct optim_sched optim_sched;

/* ---- options ---------------------------------------------------------------
 * Checked by the constructors; a bad value gives NULL and a message naming
 * the option ("optim_adam: beta2 = 1 is outside [0, 1)").  NaN and
 * infinities are never accepted.  A 0 field means the default listed. */

/* The value 0 for an option whose 0 means "PyTorch's default" (a negative
 * zero, which the constructors read as exactly 0; -ffast-math's
 * -fno-signed-zeros may fold it into a plain 0 in the caller's code). */
#define OPTIM_ZERO (-0.0)

/* torch.optim.SGD.  Errors: no lr (0), lr, momentum or weight_decay < 0;
 * nesterov without momentum > 0 and dampening == 0. */
typedef struct optim_sgd_opts {
    double lr;           /* required: 0 is refused (OPTIM_ZERO for 0); PyTorch
                            1.13 has no default, optim_sgd_defaults() gives
                            PyTorch 2's 1e-3 */
    double momentum;     /* default 0 */
    double dampening;    /* default 0 */
    double weight_decay; /* L2 penalty added to the gradient; default 0 */
    bool nesterov;       /* default false */
} optim_sgd_opts;

/* torch.optim.Adam and torch.optim.AdamW (the same options; AdamW applies
 * weight decay to the parameter, p *= 1 - lr * weight_decay, instead of
 * adding it to the gradient).  Errors: lr or weight_decay < 0, eps <= 0,
 * beta1 or beta2 outside [0, 1). */
typedef struct optim_adam_opts {
    double lr;           /* default 1e-3 */
    double beta1;        /* default 0.9 */
    double beta2;        /* default 0.999 */
    double eps;          /* default 1e-8 */
    double weight_decay; /* default 0 (Adam), 1e-2 (AdamW) */
    bool amsgrad;        /* default false */
} optim_adam_opts;

/* torch.optim.RMSprop.  Errors: any option < 0, eps <= 0, alpha > 1. */
typedef struct optim_rmsprop_opts {
    double lr;           /* default 1e-2 */
    double alpha;        /* smoothing constant; default 0.99 */
    double eps;          /* default 1e-8 */
    double weight_decay; /* default 0 */
    double momentum;     /* default 0 */
    bool centered;       /* divide by the estimated variance; default false */
} optim_rmsprop_opts;

/* torch.optim.Adagrad.  Errors: any option < 0, eps <= 0. */
typedef struct optim_adagrad_opts {
    double lr;                        /* default 1e-2 */
    double lr_decay;                  /* default 0 */
    double weight_decay;              /* default 0 */
    double eps;                       /* default 1e-10 */
    double initial_accumulator_value; /* default 0 */
} optim_adagrad_opts;

/* PyTorch's defaults, as listed above (what a zero struct means; SGD's
 * lr 1e-3). */
optim_sgd_opts     optim_sgd_defaults(void);
optim_adam_opts    optim_adam_defaults(void);
optim_adam_opts    optim_adamw_defaults(void);   /* weight_decay 1e-2 */
optim_rmsprop_opts optim_rmsprop_defaults(void);
optim_adagrad_opts optim_adagrad_defaults(void);

/* ---- optimizers --------------------------------------------------------- */

/* Each constructor takes n >= 1 distinct, non-NULL persistent parameter
 * tensors (normally with requires_grad) and returns a new optimizer owned
 * by the caller (optim_free), or NULL with ag_last_error for bad options,
 * a NULL, repeated or tape tensor (an op result dies at ag_tape_reset), or
 * no memory.  The array is copied; its order is the order of optim_step's
 * updates. */
optim *optim_sgd(ag_tensor **params, int n, optim_sgd_opts opts);
optim *optim_adam(ag_tensor **params, int n, optim_adam_opts opts);
optim *optim_adamw(ag_tensor **params, int n, optim_adam_opts opts);
optim *optim_rmsprop(ag_tensor **params, int n, optim_rmsprop_opts opts);
/* Adagrad fills its sums with initial_accumulator_value at construction,
 * as PyTorch does. */
optim *optim_adagrad(ag_tensor **params, int n, optim_adagrad_opts opts);

/* One update of every parameter whose gradient exists (ag_grad != NULL);
 * parameters without a gradient are skipped and their state is untouched,
 * as in PyTorch.  Every parameter it writes gets ag_tensor_mark_modified
 * (so a backward recorded before the step refuses to run).  Returns AG_OK,
 * AG_ERR_ARG for o == NULL, or AG_ERR_NOMEM when state buffers cannot be
 * allocated (then no parameter is changed). */
ag_status optim_step(optim *o);

/* optim_step for a part of each parameter: the elements [lo[i], hi[i])
 * (row-major) of parameter i (in the order the optimizer was given them)
 * are updated from the same elements of its gradient, its other elements
 * and their state left as they are; step counts advance as in optim_step
 * (for every parameter with a gradient, also one whose part is empty).
 * Every optimizer here updates each element on its own, so processes that
 * each step a disjoint part of every parameter, together covering it,
 * compute exactly optim_step's values, element by element: a sharded
 * optimizer step (ZeRO stage 1, dist_reducer_opts.update).  The elements
 * outside the part (and their state) are this process's to bring up to
 * date (dist_reducer_gather).  AG_ERR_ARG for a NULL argument or a range
 * outside a parameter (nothing changed); AG_ERR_NOMEM as optim_step. */
ag_status optim_step_parts(optim *o, const int64_t *lo, const int64_t *hi);

/* Sets every parameter's gradient to 0 (ag_zero_grad); NULL is a no-op. */
void optim_zero_grad(optim *o);

/* The learning rate used by the next optim_step.  optim_set_lr ignores a
 * NULL optimizer and a negative or non-finite lr (with ag_last_error set). */
void   optim_set_lr(optim *o, double lr);
double optim_get_lr(const optim *o);       /* NaN for NULL (with ag_last_error) */

/* The momentum the next step uses: SGD's and RMSprop's momentum, Adam's
 * and AdamW's beta1 (a one-cycle schedule cycles it); NaN for Adagrad and
 * (with ag_last_error) for NULL. */
double optim_get_momentum(const optim *o);

/* "sgd", "adam", "adamw", "rmsprop" or "adagrad"; NULL (with ag_last_error)
 * for NULL. */
const char *optim_name(const optim *o);

/* Inspecting state (tests, logging).  optim_state returns the state buffer
 * `name` of parameter `param` (PyTorch's names: "momentum_buffer" for SGD;
 * "exp_avg", "exp_avg_sq", "max_exp_avg_sq" for Adam/AdamW; "square_avg",
 * "momentum_buffer", "grad_avg" for RMSprop; "sum" for Adagrad), owned by
 * the optimizer, or NULL while it does not exist (and, with ag_last_error,
 * for a NULL argument).  optim_state_steps is the number of updates applied
 * to param (0 for a parameter not in o; 0 with ag_last_error for NULL). */
const ag_tensor *optim_state(const optim *o, const ag_tensor *param, const char *name);
/* The same buffer, writable: for bringing state up to date from other
 * processes after optim_step_parts (dist_reducer_gather).  Writing it
 * changes the optimizer's next steps as such. */
ag_tensor       *optim_state_buffer(optim *o, const ag_tensor *param, const char *name);
/* The name of state buffer i (0, 1, ...) this kind of optimizer keeps, as
 * optim_state takes it; NULL past the last (and, with ag_last_error, for a
 * NULL o). */
const char      *optim_state_name(const optim *o, int i);
int64_t          optim_state_steps(const optim *o, const ag_tensor *param);

void optim_free(optim *o);

/* ---- learning-rate schedules -------------------------------------------------
 * A schedule sets its optimizer's lr.  Like torch.optim.lr_scheduler, the
 * constructor already performs step 0 (it sets lr for the first
 * optim_step); afterwards call optim_sched_step_once once per step or epoch,
 * after optim_step.  Values equal PyTorch's get_last_lr() bit for bit where
 * the same libm is used (same formulas in the same order, including
 * PyTorch's recursive "chainable" forms).
 *
 * The first schedule attached to an optimizer records its current lr as
 * the base lr (PyTorch's "initial_lr"); later schedules on the same
 * optimizer reuse it.  Constructors return NULL with ag_last_error for a
 * NULL optimizer, bad arguments or no memory. */

/* StepLR: lr *= gamma every step_size steps.  step_size >= 1, gamma >= 0. */
optim_sched *optim_sched_step(optim *o, int64_t step_size, double gamma);

/* MultiStepLR: lr *= gamma at each of the n milestones (any order; a
 * milestone listed k times multiplies by gamma^k).  n >= 1, gamma >= 0.
 * The array is copied. */
optim_sched *optim_sched_multistep(optim *o, const int64_t *milestones, int n,
                                   double gamma);

/* ExponentialLR: lr *= gamma every step.  gamma >= 0. */
optim_sched *optim_sched_exponential(optim *o, double gamma);

/* CosineAnnealingLR: from the base lr down to eta_min over t_max steps (and
 * back up over the next t_max, periodically, as PyTorch's recursive form
 * does).  t_max >= 1, eta_min >= 0. */
optim_sched *optim_sched_cosine(optim *o, int64_t t_max, double eta_min);

/* LinearLR: the factor of the base lr goes linearly from start_factor to
 * end_factor over total_iters steps, then stays.  0 < start_factor <= 1,
 * 0 <= end_factor <= 1, total_iters >= 1. */
optim_sched *optim_sched_linear(optim *o, double start_factor, double end_factor,
                                int64_t total_iters);

/* Linear warm-up followed by another schedule: PyTorch's
 *   SequentialLR(opt, [LinearLR(opt, start_factor, 1.0, warmup_steps), then],
 *                milestones=[warmup_steps])
 * Create `then` on the same optimizer first (any schedule but another
 * warm-up, which PyTorch cannot nest either); it starts at step
 * warmup_steps, counting its own steps from 0 there.  The new schedule
 * owns `then` and frees it, also when construction fails (so a NULL `then`
 * from a failed inner constructor is reported, not leaked; what `then`'s
 * own construction did to the optimizer's lr stays).
 * 0 < start_factor <= 1, warmup_steps >= 1. */
optim_sched *optim_sched_warmup(optim *o, double start_factor, int64_t warmup_steps,
                                optim_sched *then);

/* OneCycleLR (two-phase by default, or three_phase).  The lr starts at
 * max_lr / div_factor, rises to max_lr over pct_start of total_steps and
 * anneals to max_lr / div_factor / final_div_factor.  With cycle_momentum
 * the optimizer's momentum (SGD, RMSprop) or beta1 (Adam, AdamW) cycles
 * inversely between max_momentum and base_momentum, as in PyTorch, where it
 * is on by default (so an SGD without momentum gets momentum 0.95 at
 * construction); Adagrad has no momentum and needs cycle_momentum false.
 * For Adam and AdamW the momenta are beta1 and must lie in [0, 1).
 * Stepping beyond total_steps is an error (AG_ERR_STATE), as in PyTorch.
 * Options: start from optim_onecycle_defaults (PyTorch's defaults);
 * cycle_momentum's default is true, so a zero-initialised struct cannot mean
 * the defaults and is refused (div_factor 0, with a message saying so). */
typedef enum optim_anneal { OPTIM_ANNEAL_COS = 0, OPTIM_ANNEAL_LINEAR } optim_anneal;
typedef struct optim_onecycle_opts {
    double max_lr;           /* > 0, required */
    int64_t total_steps;     /* >= 1, required */
    double pct_start;        /* [0, 1]; default 0.3 */
    optim_anneal anneal;     /* default OPTIM_ANNEAL_COS */
    bool cycle_momentum;     /* default true */
    double base_momentum;    /* default 0.85 */
    double max_momentum;     /* default 0.95 */
    double div_factor;       /* > 0; default 25 */
    double final_div_factor; /* > 0; default 1e4 */
    bool three_phase;        /* default false */
} optim_onecycle_opts;
optim_onecycle_opts optim_onecycle_defaults(double max_lr, int64_t total_steps);
optim_sched *optim_sched_onecycle(optim *o, optim_onecycle_opts opts);

/* Advances the schedule by one step and sets the optimizer's lr (and
 * momentum for a cycling one-cycle).  AG_OK; AG_ERR_ARG for NULL;
 * AG_ERR_STATE past a one-cycle's total_steps or where PyTorch would divide
 * by zero; AG_ERR_NUMERIC where the new lr would not be finite (a gamma > 1
 * compounded past the largest double).  Nothing changes on an error. */
ag_status optim_sched_step_once(optim_sched *s);

/* The accessors below set ag_last_error for a NULL s.
 * The lr the schedule set last (PyTorch's get_last_lr()[0]); NaN for NULL. */
double  optim_sched_get_last_lr(const optim_sched *s);
/* Steps taken since construction (PyTorch's last_epoch): 0 right after
 * construction; -1 for NULL. */
int64_t optim_sched_last_epoch(const optim_sched *s);
/* "step", "multistep", "exponential", "cosine", "linear", "warmup" or
 * "onecycle"; NULL for NULL. */
const char *optim_sched_name(const optim_sched *s);
void optim_sched_free(optim_sched *s);

/* ---- gradient clipping ------------------------------------------------------
 * Both skip parameters without a gradient; NULL entries are errors. */

/* torch.nn.utils.clip_grad_norm_: the norm of all gradients taken together
 * (as one concatenated vector; norm_type p > 0, or INFINITY for the max
 * norm; 2.0 is the usual choice).  When it exceeds max_norm every gradient
 * is multiplied by max_norm / (total + 1e-6).  *total_norm (may be NULL)
 * receives the norm before clipping, 0 when no parameter has a gradient.
 * A NaN or infinite norm gives AG_ERR_NUMERIC and leaves every gradient
 * untouched (*total_norm still receives it).  AG_ERR_ARG for n < 0, NULL
 * params, max_norm < 0 or a bad norm_type. */
ag_status optim_clip_grad_norm(ag_tensor **params, int n, double max_norm,
                               double norm_type, double *total_norm);

/* torch.nn.utils.clip_grad_value_: clamps every gradient element into
 * [-clip_value, clip_value] (a NaN stays NaN).  AG_ERR_ARG for a negative or
 * NaN clip_value, n < 0 or NULL params. */
ag_status optim_clip_grad_value(ag_tensor **params, int n, double clip_value);

/* ---- checkpoints --------------------------------------------------------------
 * One safetensors file holds what resuming needs: the n named parameters
 * (under their own names, so PyTorch's load_state_dict reads them), the
 * optimizer's state ("optim.state.<param name>.<buffer>" and ".step"
 * tensors, its options with the current lr and momentum in "optim.opts"),
 * the schedule position
 * ("sched.state") and the generator's state (metadata "rng").  o, s and rng
 * may each be NULL to leave that part out.  Every parameter of o must be
 * among params.  Names must be unique, non-empty and not start with
 * "optim." or "sched.".
 *
 * Saving is atomic (ag_safetensors_save).  Loading reads into existing
 * objects built the same way as the saved ones (same parameter shapes and
 * dtypes, same optimizer and schedule kinds): typically fresh objects.  It
 * validates the whole file against them first and changes nothing unless
 * everything fits; then the next optim_step / optim_sched_step_once /
 * ag_rng draw continue exactly where the saved run stood, bit for bit.
 * Values are checked as well as structure: options in the ranges the
 * constructors accept (finite; betas in [0, 1); eps > 0), state buffers
 * finite (and >= 0 for exp_avg_sq, max_exp_avg_sq, square_avg and sum),
 * step counts and schedule positions whole numbers in range.  Parameters
 * loaded get ag_tensor_mark_modified.
 * Errors: AG_ERR_ARG (bad arguments), AG_ERR_IO, AG_ERR_FORMAT (malformed
 * file, a missing tensor, a shape, dtype or kind that does not fit, a value
 * out of range: the message names the tensor and the field), AG_ERR_NOMEM. */
ag_status optim_checkpoint_save(const char *path, const char *const *param_names,
                                ag_tensor **params, int n, const optim *o,
                                const optim_sched *s, const ag_rng *rng);
ag_status optim_checkpoint_load(const char *path, const char *const *param_names,
                                ag_tensor **params, int n, optim *o, optim_sched *s,
                                ag_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
