/* optim_internal.h — what the files of optim/ share: the optimizer and
 * per-parameter state structs, the per-kind update kernels and the element
 * accessors.  optim/ stands on autograd's public header only. */
#ifndef TAPEGRAD_OPTIM_INTERNAL_H
#define TAPEGRAD_OPTIM_INTERNAL_H

#include "optim.h"

#include <math.h>
#include <stdlib.h>

/* uthash must not exit() on out of memory: a failed add leaves the element
 * out of the table, which optim_new_common detects by counting. */
#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) ag_mem_alloc(sz)
#define uthash_free(ptr, sz) ag_mem_free(ptr)
#include <uthash.h>

typedef enum optim_kind {
    OPTIM_SGD = 0,
    OPTIM_ADAM,
    OPTIM_ADAMW,
    OPTIM_RMSPROP,
    OPTIM_ADAGRAD,
    OPTIM_KIND_COUNT
} optim_kind;

#define OPTIM_MAX_BUFS 3

/* State of one parameter: PyTorch's optimizer.state[p]. */
typedef struct optim_pstate {
    ag_tensor *param;             /* hash key (the pointer) */
    int index;                    /* position in optim.params */
    int64_t steps;                /* updates applied to param */
    bool init;                    /* PyTorch's state exists (first step done;
                                     SGD: momentum buffer taken) */
    ag_tensor *buf[OPTIM_MAX_BUFS]; /* param's shape and dtype; NULL until needed */
    UT_hash_handle hh;
} optim_pstate;

/* Per-kind behaviour: buffer names (PyTorch's) and the update. */
typedef struct optim_kind_def {
    const char *name;
    const char *buf_names[OPTIM_MAX_BUFS]; /* NULL: unused slot */
    /* Buffers whose elements are never negative (sums of squares): a
     * checkpoint with a negative one is refused. */
    bool buf_nonneg[OPTIM_MAX_BUFS];
    /* Which buffers this step needs for a parameter (bit i: buf[i]). */
    unsigned (*needs)(const optim *o, const optim_pstate *st);
    /* Updates one parameter whose gradient g exists and whose needed
     * buffers are allocated. */
    void (*update)(optim *o, optim_pstate *st, const ag_tensor *g);
    /* Options as doubles (bools as 0/1) in struct order, for checkpoints:
     * pack returns the count (<= OPTIM_MAX_OPTS); unpack validates them like
     * the constructor (0 is 0 here, never a default), setting a message
     * "optim.opts: <field> = ..." when one does not fit, and stores them
     * only when valid (when apply). */
    int (*opts_pack)(const optim *o, double *out);
    bool (*opts_unpack)(optim *o, const double *in, int n, bool apply);
} optim_kind_def;

#define OPTIM_MAX_OPTS 8

struct optim {
    optim_kind kind;
    const optim_kind_def *def;
    int n;
    ag_tensor **params;           /* copy of the caller's array */
    optim_pstate *states;         /* n entries, in params order */
    optim_pstate *by_tensor;      /* uthash head over states, keyed by param */
    union {
        optim_sgd_opts sgd;
        optim_adam_opts adam;     /* Adam and AdamW */
        optim_rmsprop_opts rmsprop;
        optim_adagrad_opts adagrad;
    } opts;
    /* PyTorch's param_group['initial_lr']: set by the first schedule. */
    double initial_lr;
    bool has_initial_lr;
    /* The elements [lo, hi) of the parameter an update is writing: all of
     * them in optim_step, a part in optim_step_parts. */
    int64_t lo, hi;
};

extern const optim_kind_def optim_sgd_def, optim_adam_def, optim_adamw_def,
    optim_rmsprop_def, optim_adagrad_def;

/* Builds the common part of an optimizer (params checked and copied, state
 * hashed); NULL with ag_last_error naming `fn` on failure. */
optim *optim_new_common(const char *fn, optim_kind kind, ag_tensor **params, int n);
optim_pstate *optim_find_state(const optim *o, const ag_tensor *param);
/* Allocates buffer i of st (zeros) if absent; false on no memory. */
bool optim_buf_ensure(optim_pstate *st, int i);

/* The momentum-like hyperparameter a one-cycle schedule cycles: SGD and
 * RMSprop momentum, Adam/AdamW beta1; NULL for Adagrad. */
double *optim_momentum_ref(optim *o);
double *optim_lr_ref(optim *o);

/* Kernels are written once over a dtype argument and instantiated for
 * AG_F32 and AG_F64 by calling them with a constant: always_inline makes
 * the compiler fold the dtype tests out of the loops. */
#define OPTIM_KERNEL static inline __attribute__((always_inline))

/* An update's kernel over n elements of its arrays (a[k] NULL for the
 * ones this update lacks), with its scalars k. */
typedef void (*optim_range_fn)(const void *k, int64_t n, void *const *a);

/* Large parameters go to the thread pool in chunks of this many elements
 * (a parameter of at most one chunk runs on the caller): at 2^15 an Adam
 * chunk takes ~10 us, a few times a pool wake-up. */
#define OPTIM_CHUNK 32768
#define OPTIM_MAX_ARRAYS 6

typedef struct optim_run_ctx {
    const void *k;
    optim_range_fn fn;
    void *a[OPTIM_MAX_ARRAYS];
    int n_arrays;
    size_t esz;
} optim_run_ctx;

static inline void optim_run_chunk(void *vc, int64_t lo, int64_t hi)
{
    const optim_run_ctx *c = vc;
    void *a[OPTIM_MAX_ARRAYS] = {0};
    for (int i = 0; i < c->n_arrays; i++)
        a[i] = c->a[i] ? (char *)c->a[i] + (size_t)lo * c->esz : NULL;
    c->fn(c->k, hi - lo, a);
}

/* Runs fn over elements [o->lo, o->hi) of the n_arrays arrays (whole
 * parameter-shaped arrays, elements of esz bytes), in chunks on the thread
 * pool.  Every element is updated on its own, so results depend neither on
 * the thread count nor on how the elements are split into parts. */
static inline void optim_run(const optim *o, const void *k, optim_range_fn fn, size_t esz,
                             int n_arrays, void *const *arrays)
{
    optim_run_ctx c = {.k = k, .fn = fn, .n_arrays = n_arrays, .esz = esz};
    for (int i = 0; i < n_arrays; i++)
        c.a[i] = arrays[i] ? (char *)arrays[i] + (size_t)o->lo * esz : NULL;
    ag_parallel_for(o->hi - o->lo, OPTIM_CHUNK, optim_run_chunk, &c);
}

/* Element i of a float or double array, as double; store rounds to dtype. */
OPTIM_KERNEL double optim_ld(const void *base, ag_dtype dt, int64_t i)
{
    return dt == AG_F64 ? ((const double *)base)[i] : (double)((const float *)base)[i];
}

OPTIM_KERNEL void optim_st(void *base, ag_dtype dt, int64_t i, double v)
{
    if (dt == AG_F64)
        ((double *)base)[i] = v;
    else
        ((float *)base)[i] = (float)v;
}

/* v as it reads back after a store in dtype dt. */
OPTIM_KERNEL double optim_round(ag_dtype dt, double v)
{
    return dt == AG_F64 ? v : (double)(float)v;
}

/* Schedules, for checkpoints.  optim_sched_pack writes the position of s
 * (last epoch, step count, base and last lr, for each part of a warm-up)
 * into out (when not NULL) and returns the number of values, at most
 * OPTIM_SCHED_STATE_MAX.  optim_sched_unpack checks them and, when apply,
 * restores them: false (changing nothing) when count or values do not fit.  optim_sched_describe
 * writes the kind and configuration ("cosine(t_max=50,eta_min=0)"). */
#define OPTIM_SCHED_STATE_MAX 16
int  optim_sched_pack(const optim_sched *s, double *out);
bool optim_sched_unpack(optim_sched *s, const double *in, int n, bool apply);
void optim_sched_describe(const optim_sched *s, char *buf, size_t n);
const optim *optim_sched_optimizer(const optim_sched *s);

/* Checks shared by the option validators; each sets "fn: opt = v ..." on
 * failure.  nonneg: finite and >= 0; pos: finite and > 0; unit: [0, 1). */
bool optim_check_nonneg(const char *fn, const char *opt, double v);
bool optim_check_pos(const char *fn, const char *opt, double v);
bool optim_check_unit(const char *fn, const char *opt, double v);

/* For opts_unpack: n == want, and a bool option stored as 0 or 1 (each
 * sets an "optim.opts: ..." message when not). */
bool optim_unpack_count(int n, int want);
bool optim_unpack_bool(const char *opt, double v);

/* An option as the caller gave it: 0 takes the default dflt, OPTIM_ZERO
 * (a negative zero) is 0, anything else stays. */
double optim_opt(double v, double dflt);

#endif
