/* null_sweep.h — the harness of the NULL / absurd-argument sweep, for the
 * calls that tests/gen_null_sweep.py generates from the installed headers
 * (null_sweep_calls.c) and the hand-written fixtures (null_sweep.c).
 *
 * A call is one function with one pattern: a character per parameter,
 *   V valid (a real object or a small sensible value)
 *   N NULL
 *   T tensors are op results on the call's tape (not persistent)
 *   Z 0 / a zeroed struct / an empty tensor [0, 3]
 *   M -1 / an int array of -1 / var id -1
 *   X the type's maximum / an int array of it / var id INT32_MAX / +Inf
 *   B an enum value of 99
 *   I NaN
 *   F false
 * and an expectation: 'E' an error (the function's error value and
 * ag_last_error set; for an op given a real tape, an error kept on it) or
 * 'A' anything but a crash, a sanitizer report or a leak.
 *
 * Every object a call gets is made for that call and freed after it.  A
 * parameter type the generator cannot make stops the build, naming the
 * fixture to add here: fx_<type>(c, i) returns a new (or per-call) <type>,
 * freed after the call with sw_defer. */
#ifndef TG_NULL_SWEEP_H
#define TG_NULL_SWEEP_H

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tapegrad.h"

typedef struct sw_call sw_call;

typedef struct sw_pattern {
    const char *pat;    /* one character per parameter */
    char expect;        /* 'E' or 'A' */
    const char *what;   /* the call as printed in a failure */
} sw_pattern;

typedef struct sw_function {
    const char *name;
    void (*run)(sw_call *c);
    const sw_pattern *pats;
    int n_pats;
} sw_function;

/* The generated table. */
extern const sw_function sw_functions[];
extern const int sw_n_functions;
extern const int sw_n_calls;

/* ---- for the generated thunks ---- */
char     sw_pat(const sw_call *c, int i);
int64_t  sw_sint(sw_call *c, int i, int64_t valid, int64_t max);
uint64_t sw_uint(sw_call *c, int i, uint64_t valid, uint64_t max);
double   sw_real(sw_call *c, int i, double valid);
bool     sw_bool(sw_call *c, int i);
ag_var   sw_var(sw_call *c, int i);
ag_var  *sw_vars(sw_call *c, int i);
ag_tensor  *sw_tensor(sw_call *c, int i);
ag_tensor **sw_tensors(sw_call *c, int i);
const char  *sw_str(sw_call *c, int i, const char *fn, const char *param);
const char **sw_strs(sw_call *c, int i, const char *param);
int64_t *sw_i64s(sw_call *c, int i, const char *fn, const char *param);
int     *sw_ints(sw_call *c, int i, const char *fn, const char *param);
double  *sw_f64s(sw_call *c, int i, const char *fn, const char *param);
float   *sw_f32s(sw_call *c, int i, const char *fn, const char *param);
uint8_t *sw_u8s(sw_call *c, int i, const char *fn, const char *param);
/* Zeroed memory freed after the call. */
void *sw_buf(sw_call *c, size_t size);
/* Runs fn(p) after the call (last deferred, first run). */
void sw_defer(sw_call *c, void (*fn)(void *), void *p);
/* p now belongs to the library (a _free, nn_params_add): not freed after. */
void sw_consume(sw_call *c, const void *p);
/* Around the call itself: clears ag_last_error, then checks the result
 * against the expectation.  op_tape: the tape an op keeps its error on. */
void sw_begin(sw_call *c);
void sw_end(sw_call *c, bool error_value, bool need_message, const ag_tape *op_tape);

/* ---- fixtures, by type name (i: the parameter's index) ---- */
void *fx_ag_tape(sw_call *c, int i);
void *fx_ag_rng(sw_call *c, int i);
void *fx_FILE(sw_call *c, int i);
void *fx_ag_allocator(sw_call *c, int i);
void *fx_ag_custom_op(sw_call *c, int i);
void *fx_ag_safetensors(sw_call *c, int i);
void *fx_nn_params(sw_call *c, int i);
void *fx_nn_linear(sw_call *c, int i);
void *fx_nn_mlp(sw_call *c, int i);
void *fx_nn_embedding(sw_call *c, int i);
void *fx_nn_layer_norm(sw_call *c, int i);
void *fx_nn_batch_norm(sw_call *c, int i);
void *fx_nn_dropout(sw_call *c, int i);
void *fx_nn_idx(sw_call *c, int i);
void *fx_nn_dataset(sw_call *c, int i);
void *fx_nn_batcher(sw_call *c, int i);
void *fx_nn_batch_opts(sw_call *c, int i);
void *fx_optim(sw_call *c, int i);
void *fx_optim_sched(sw_call *c, int i);
void *fx_ag_task(sw_call *c, int i);
ag_gradcheck_fn fx_ag_gradcheck_fn(sw_call *c, int i);
optim_onecycle_opts fx_optim_onecycle_opts(sw_call *c, int i);

#endif
