/*
 * autograd.h — tapegrad's ground floor: tensors, the tape, primitive ops,
 * reverse-mode differentiation and gradient checking.
 *
 *   ag_tape   *tape = ag_tape_new();
 *   ag_tensor *w    = ag_tensor_normal(AG_F32, 2, (int64_t[]){784, 10}, 0, 0.01, &rng);
 *   ag_set_requires_grad(w, true);
 *   ag_tensor *y    = ag_matmul(tape, x, w);               (tape-owned result)
 *   ag_tensor *loss = ag_mean(tape, ag_mul(tape, y, y), AG_ALL, false);
 *   if (ag_backward(tape, loss) != AG_OK)
 *       fprintf(stderr, "%s\n", ag_tape_error(tape));
 *   ... read ag_grad(w), update w ...
 *   ag_zero_grad(w);  ag_tape_reset(tape);
 *
 * Ownership.  Persistent tensors (ag_tensor_new, ag_tensor_from_*, ...) are
 * owned by the caller and freed with ag_tensor_free.  Every op result is a
 * tape tensor: it lives in the tape's arena and dies at ag_tape_reset or
 * ag_tape_free; never free it.
 *
 * Lifetimes.  A tape has a generation, unique in the process, that every
 * ag_tape_reset replaces; each tape tensor and ag_var carries the one it
 * was made in.  Ops, ag_backward(_seeded), ag_gradients (and ag_hvp,
 * ag_jvp, ag_hessian, ag_jacobian), the ag_var_* functions and
 * ag_tape_replay refuse an argument of another tape or an earlier step with
 * AG_ERR_STATE naming the call and the argument: "ag_mul: input #1 is a
 * tape tensor from before ag_tape_reset (tape tensors live one step)".
 * What is caught, one compare per argument:
 *  - an ag_var of another tape or step: always (the generation is in the
 *    var's value; two generations agree only 2^32 resets apart);
 *  - a tape tensor of another live tape: always;
 *  - a tape tensor kept across one reset: always.  Headers of consecutive
 *    steps lie in two separate regions taken in turn, so a step never
 *    writes over the step before it, and the stale header still shows
 *    its old generation;
 *  - kept across two or more resets: refused unless this step has already
 *    made a tensor in its place (the k-th tape tensor of a step, gradients
 *    included, takes the place of the k-th one of the step two, four, ...
 *    resets before).  Then the pointer designates that live tensor and is
 *    taken for it.  A tensor misused in a loop is caught at the first
 *    step after the one that made it;
 *  - a tensor of a freed tape: not caught (its memory is gone: a use
 *    after free).
 * Calls without a tape (ag_get, ag_data, ag_item, ag_grad, ag_shape, ...)
 * do not check: through them a stale tensor reads whatever its memory
 * holds now.
 *
 * In-place edits.  A persistent tensor has a version, bumped by every
 * library function that writes it (ag_set, optimizer steps, nn_init_*,
 * nn_params_load*, optimizer checkpoint loads) and by
 * ag_tensor_mark_modified after a write through ag_data.  A recorded op
 * keeps the versions of its inputs; ag_backward(_seeded), ag_gradients
 * and ag_var_backward refuse to run one whose input has changed version
 * since (AG_ERR_STATE): "ag_backward: fc1.weight (input #2 of linear) was
 * modified after it was recorded (version 3, recorded at 2): ...", as
 * PyTorch's "modified by an inplace operation".  Only the entries a sweep
 * runs are checked, and every input of such an entry counts (PyTorch
 * counts only those saved for backward).  An unmarked write through
 * ag_data is not seen, except in anomaly mode (ag_tape_set_anomaly), which
 * also keeps a checksum of each persistent input's data when recording
 * and compares it before running the entry (one pass over that data per
 * op recorded and per op swept).  A write that puts the old values back
 * still counts as a write.  Write parameters before recording, or record
 * again after writing.
 *
 * Errors.  Ops never crash on user mistakes.  The first error on a tape is
 * kept (status + message naming the op and the shapes); the op returns NULL,
 * every later op given NULL returns NULL at once, and ag_backward returns the
 * kept status.  Functions without a tape return NULL or an ag_status and set
 * a per-thread message read by ag_last_error().
 *
 * Layout.  Up to AG_MAX_DIMS dimensions, row-major, contiguous.  Binary
 * elementwise ops broadcast by NumPy rules.  Inputs of one op share a dtype.
 */
#ifndef TAPEGRAD_AUTOGRAD_H
#define TAPEGRAD_AUTOGRAD_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AG_MAX_DIMS 8
/* Reduce over every element (pass as the axis of ag_sum, ag_mean, ...). */
#define AG_ALL INT_MIN

/* AG_I64: int64 indices, only as results of ag_argmax and ag_topk (tape
 * tensors).  Read them with ag_get or ag_data (int64_t *); every op
 * refuses an int64 input (AG_ERR_DTYPE), and persistent tensors are f32
 * or f64. */
typedef enum ag_dtype { AG_F32 = 0, AG_F64 = 1, AG_I64 = 2 } ag_dtype;

typedef enum ag_status {
    AG_OK = 0,
    AG_ERR_SHAPE,    /* shapes do not fit the op */
    AG_ERR_DTYPE,    /* dtypes differ or are not supported */
    AG_ERR_ARG,      /* a bad argument: NULL, axis out of range, ... */
    AG_ERR_NOMEM,    /* the system refused memory */
    AG_ERR_NULL,     /* an input was NULL because an earlier op failed */
    AG_ERR_FORMAT,   /* a malformed file */
    AG_ERR_IO,       /* reading or writing a file failed */
    AG_ERR_NUMERIC,  /* NaN or Inf found (anomaly mode, clipping) */
    AG_ERR_GRADIENT, /* gradcheck: analytic and numeric gradients disagree */
    AG_ERR_RETAPE,   /* replay would take another branch: record again */
    AG_ERR_STATE     /* call out of order (backward without graph, ...) */
} ag_status;

typedef struct ag_tensor ag_tensor;
typedef struct ag_tape ag_tape;

/* Human-readable name of a status ("shape mismatch", ...); never NULL. */
const char *ag_status_str(ag_status s);

/* Message of the last failed call without a tape on this thread, or NULL. */
const char *ag_last_error(void);
/* Sets that message (printf format); for modules built on autograd (nn,
 * optim, user libraries) so all report errors the same way. */
void ag_set_last_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ag_clear_last_error(void);

/* ---- memory ------------------------------------------------------------ */

/* Every system allocation of the library goes through this allocator.
 * alloc returns memory aligned to `align` (a power of two) or NULL.
 * Passing NULL restores the default (aligned_alloc / free).  Set it before
 * creating any object; memory must be freed by the allocator that made it. */
typedef struct ag_allocator {
    void *(*alloc)(size_t size, size_t align, void *ctx);
    void (*free)(void *p, void *ctx);
    void *ctx;
} ag_allocator;
void ag_set_allocator(const ag_allocator *a);
/* Memory from that allocator, 64-byte aligned (NULL on failure), for
 * modules built on autograd so one hook sees every allocation. */
void *ag_mem_alloc(size_t size);
void *ag_mem_calloc(size_t size);   /* zeroed */
void  ag_mem_free(void *p);         /* NULL is a no-op */

/* ---- random numbers ---------------------------------------------------- */

/* An explicit, seedable generator (xoshiro256**).  Plain data: copy it to
 * save its position, restore it by copying back.  An all-zero state (a
 * generator declared and never seeded) draws as ag_rng_seed(r, 0) does; a
 * NULL r gives 0 (NaN for the doubles) with ag_last_error. */
typedef struct ag_rng {
    uint64_t s[4];
} ag_rng;
void     ag_rng_seed(ag_rng *r, uint64_t seed);
uint64_t ag_rng_next(ag_rng *r);                  /* 64 random bits */
double   ag_rng_uniform(ag_rng *r);               /* [0, 1) with 53 bits */
double   ag_rng_normal(ag_rng *r);                /* mean 0, std 1 */
uint64_t ag_rng_below(ag_rng *r, uint64_t n);     /* uniform in [0, n), n > 0 */

/* ---- persistent tensors -------------------------------------------------- */

/* All return a caller-owned tensor, or NULL (with ag_last_error) for a bad
 * dtype, ndim outside [0, AG_MAX_DIMS], a negative dim, or no memory.
 * ndim 0 is a scalar with one element. */
ag_tensor *ag_tensor_new(ag_dtype dt, int ndim, const int64_t *shape); /* zeros */
ag_tensor *ag_tensor_ones(ag_dtype dt, int ndim, const int64_t *shape);
ag_tensor *ag_tensor_full(ag_dtype dt, int ndim, const int64_t *shape, double value);
ag_tensor *ag_tensor_from_f32(int ndim, const int64_t *shape, const float *data);
ag_tensor *ag_tensor_from_f64(int ndim, const int64_t *shape, const double *data);
/* 1-D tensor start, start+step, ... < stop (> stop for negative step). */
ag_tensor *ag_tensor_arange(ag_dtype dt, double start, double stop, double step);
/* Elements uniform in [lo, hi) / normal(mean, std), drawn from rng in order. */
ag_tensor *ag_tensor_uniform(ag_dtype dt, int ndim, const int64_t *shape,
                             double lo, double hi, ag_rng *rng);
ag_tensor *ag_tensor_normal(ag_dtype dt, int ndim, const int64_t *shape,
                            double mean, double std, ag_rng *rng);
/* A persistent deep copy (data only, no grad) of any tensor. */
ag_tensor *ag_tensor_clone(const ag_tensor *t);
/* Frees a persistent tensor and its gradient.  NULL is a no-op; a tape
 * tensor is ignored (the tape owns it). */
void ag_tensor_free(ag_tensor *t);
/* torch's Tensor.set_ for memory the caller manages: t's elements move to
 * data (numel x dtype size bytes, aligned to 64; its current values are
 * copied there) and t reads and writes them there from now on, its own
 * buffer freed; ag_tensor_free(t) leaves data alone, which must stay valid
 * until then or until the next call.  data NULL: back into memory t owns
 * (values copied; a no-op when they are there already).  t may be a
 * persistent tensor's gradient (ag_grad).  For buffers that other
 * processes map (dist/); never while a tape holds views of t.  AG_ERR_ARG
 * for NULL t, a tape tensor or misaligned data, AG_ERR_NOMEM. */
ag_status ag_tensor_set_storage(ag_tensor *t, void *data);

/* Marks a persistent tensor as a parameter (or not).  Backward fills its
 * gradient buffer for tensors that require grad. */
void ag_set_requires_grad(ag_tensor *t, bool on);
bool ag_requires_grad(const ag_tensor *t);
/* True for a persistent tensor; false for a tape tensor (an op result,
 * freed by ag_tape_reset) and for NULL. */
bool ag_tensor_is_persistent(const ag_tensor *t);

int            ag_ndim(const ag_tensor *t);
const int64_t *ag_shape(const ag_tensor *t);
int64_t        ag_numel(const ag_tensor *t);
ag_dtype       ag_dtype_of(const ag_tensor *t);
size_t         ag_dtype_size(ag_dtype dt);
void          *ag_data(ag_tensor *t);          /* float* or double*, by dtype */
/* After writing a persistent tensor through ag_data: bumps its version,
 * so a backward whose recording saved the old values refuses to run
 * (AG_ERR_STATE) instead of using the new ones ("In-place edits" above).
 * Every library function that writes a persistent tensor (ag_set,
 * optimizer steps, loaders, initialisers) bumps it itself.  NULL and tape
 * tensors are ignored. */
void           ag_tensor_mark_modified(ag_tensor *t);
const void    *ag_data_const(const ag_tensor *t);
/* Element i (row-major flat index) as double.  A NULL t or an i outside
 * [0, numel) gives NaN (ag_set: no write), with ag_last_error.  ag_set on a
 * persistent tensor bumps its version (a write); on an AG_I64 tensor it
 * truncates v toward 0 (no write, with ag_last_error, for a v outside
 * int64's range or NaN). */
double         ag_get(const ag_tensor *t, int64_t i);
void           ag_set(ag_tensor *t, int64_t i, double v);
/* Gradient of t (same shape and dtype), or NULL until a backward reached t.
 * For a persistent tensor the gradient is owned by t and accumulates over
 * backward calls; for a tape tensor it lives on the tape. */
ag_tensor *ag_grad(const ag_tensor *t);
void       ag_zero_grad(ag_tensor *t);         /* sets the gradient to 0 */
/* Value of a one-element tensor (NaN, with ag_last_error, otherwise). */
double     ag_item(const ag_tensor *t);
/* Writes "[2,3]" into buf (always NUL-terminated); returns buf. */
char      *ag_shape_str(const ag_tensor *t, char *buf, size_t n);

/* ---- the tape ------------------------------------------------------------ */

ag_tape *ag_tape_new(void);                    /* NULL on no memory */
void     ag_tape_free(ag_tape *tape);          /* NULL is a no-op */
/* Forgets every entry, tape tensor and ag_var in O(1), keeping the memory
 * for the next step, clears a kept error and starts a new generation:
 * tensors and vars of the old step are refused from now on ("Lifetimes"
 * above). */
void     ag_tape_reset(ag_tape *tape);
/* Off: ops compute values and record nothing (evaluation). Default on. */
void     ag_tape_set_grad_enabled(ag_tape *tape, bool on);
bool     ag_tape_grad_enabled(const ag_tape *tape);
ag_status   ag_tape_status(const ag_tape *tape);
const char *ag_tape_error(const ag_tape *tape);        /* NULL when all is well */
/* Number of entries recorded for backward (pruned ops are not counted). */
int64_t  ag_tape_entries(const ag_tape *tape);
/* Bytes of arena memory in use / reserved. */
size_t   ag_tape_bytes_used(const ag_tape *tape);
size_t   ag_tape_bytes_reserved(const ag_tape *tape);
/* High-water mark of arena bytes in use since the last reset, counted as
 * ag_tape_bytes_used counts them (a block's unused tail counts once the
 * arena moved past it): the figure gradient checkpointing lowers, as a
 * checkpoint's segment is in use only while it runs (forward) or is
 * rebuilt (backward).  0 for a NULL tape, with ag_last_error. */
size_t   ag_tape_bytes_peak(const ag_tape *tape);

/* Keeps an error on the tape the way ops do (the first one sticks; also
 * sets ag_last_error), for layers and user functions built on ops.
 * Returns NULL, so `return ag_tape_fail(...)` ends an op-like function. */
void *ag_tape_fail(ag_tape *tape, ag_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A tape-owned tensor of zeros (a constant, or a buffer to fill). */
ag_tensor *ag_tape_tensor(ag_tape *tape, ag_dtype dt, int ndim, const int64_t *shape);
/* The same without the zeros, as torch.empty: its contents are whatever
 * the arena held, for a buffer the caller writes whole before any op
 * reads it (nn_batcher_next's batch).  In anomaly mode
 * (ag_tape_set_anomaly) it is filled with NaN instead, so a read of an
 * element never written shows. */
ag_tensor *ag_tape_empty(ag_tape *tape, ag_dtype dt, int ndim, const int64_t *shape);

/* Reverse sweep from a one-element root: d root / d x for every tensor x
 * between root and a tensor that requires grad.  Persistent gradients
 * accumulate; tape gradients are recomputed by each call.  Returns the
 * tape's kept error if there is one, AG_ERR_SHAPE for a root with more than
 * one element, AG_ERR_STATE when root does not depend on any tensor that
 * requires grad, is of another tape or an earlier step, or when an input
 * of a recorded op it runs changed version since the op was recorded
 * ("In-place edits" above; the sweep stops there, so gradients are
 * incomplete: persistent ones reached before it keep what they got). */
ag_status ag_backward(ag_tape *tape, ag_tensor *root);
/* The same from any root, with its output gradient `seed` (root's shape
 * and dtype; persistent or tape tensor). */
ag_status ag_backward_seeded(ag_tape *tape, ag_tensor *root, const ag_tensor *seed);

/* ---- gradient-ready hook (for data parallelism, dist/dist.h) ---------------
 * fn(leaves, n, ctx) is called by ag_backward and ag_backward_seeded as soon
 * as the gradients of persistent tensors that require grad are final in
 * that sweep: right after the sweep passes the earliest-recorded entry that
 * reads them (each entry adds only into its own inputs' gradients, and every
 * later-recorded reader has run by then).  leaves: the n tensors made final
 * at that entry, in input order; the array lives until fn returns.  Each
 * such tensor read by the tape's entries is reported once per sweep, also
 * one no gradient reached (ag_grad may then be NULL); leaves read only
 * through ag_var_from_tensor are not reported, and on a tape holding scalar
 * (ag_var) ops every report waits for the sweep's end.  (ag_checkpoint
 * lists the tensors its segment reads among its entry's inputs, so they
 * are reported after the segment's rebuild has added to them.)  Not called by
 * ag_gradients (persistent gradients are not touched there) nor once the
 * sweep has failed.  fn may read and write gradient buffers but must not
 * use the tape.  fn NULL (the default) removes the hook: the sweep then
 * pays one compare per entry.  Kept across ag_tape_reset.  NULL tape:
 * nothing (ag_last_error says so). */
typedef void (*ag_grad_ready_fn)(ag_tensor *const *leaves, int n, void *ctx);
void ag_tape_set_grad_ready(ag_tape *tape, ag_grad_ready_fn fn, void *ctx);

/* ---- gradient checkpointing ----------------------------------------------
 * Trades compute for tape memory, as torch.utils.checkpoint: a segment of
 * ops keeps only its inputs and outputs on the tape, and backward runs it
 * again to get what it dropped.  One checkpoint per block of a deep net
 * keeps one activation per block instead of all of them:
 *
 *   static ag_status block(ag_tape *t, int n_in, ag_tensor *const *in,
 *                          int n_out, ag_tensor **out, void *ctx)
 *   {   const blk *b = ctx;                        // weights, rng, ...
 *       ag_tensor *h = ag_gelu(t, ag_linear(t, in[0], b->w1, b->b1));
 *       out[0] = ag_add(t, in[0], ag_linear(t, h, b->w2, b->b2));
 *       return AG_OK;   }
 *   for (l = 0; l < L; l++)
 *       ag_checkpoint(t, block, &blocks[l], 1, &x, 1, &x);
 *
 * fn: computes out[0..n_out) from in[0..n_in) with ops on t and returns
 * AG_OK (or an error status, which ag_checkpoint returns, keeping it on
 * the tape if no op kept one first).  It may also read tensors through
 * ctx — parameters, or tape tensors of this step — and their gradients
 * are computed as for in[].  It runs once in forward and once more in
 * every first-order sweep that reaches its outputs (ag_backward,
 * ag_gradients without create_graph), which drops the rebuilt ops again
 * when done; a create_graph sweep rebuilds them for good, in the
 * checkpoint's place (the derivative it records is made of them, and the
 * tape is then the one the ops would have recorded without the
 * checkpoint).  So fn must compute the same values each time: no ag_var
 * ops, no ag_tape_reset, no backward or
 * ag_gradients inside, and what it reads through ctx (and ctx itself)
 * unchanged until the last backward.  A rebuild that gives other output
 * bits, or reads a tensor the first run did not, stops the sweep with
 * AG_ERR_STATE.  Tensors fn makes other than its outputs die when
 * ag_checkpoint returns: do not keep them.
 * Random draws: fn may draw from one generator, the one registered with
 * ag_tape_set_checkpoint_rng when ag_checkpoint is called (dropout masks):
 * its state is saved then, put back before each rebuild, and the
 * caller's stream restored after it, so the rebuild draws the same masks
 * and the training's draws are as without checkpoints.
 * out: the outputs, tape tensors (NULL on failure).  One fn made is a
 * copy that the tape keeps; an input (or another tensor from outside fn)
 * returned as an output is returned as is.  The gradient of an output
 * that reaches it only from inside fn is not kept in it.
 * Gradients (ag_backward, ag_gradients, ag_hvp, ...) are those of the same
 * ops without the checkpoint, to the bit.  Checkpoints nest: fn may call
 * ag_checkpoint (with a ctx that, like every ctx, lives until the last
 * backward: not fn's own stack).  With grad disabled or when nothing needs
 * a gradient, fn runs once and only its outputs stay on the tape.
 * Errors: AG_ERR_ARG for a NULL fn, n_in outside [0, 65536] or n_out
 * outside [1, 65536]; AG_ERR_NULL for a NULL in (n_in > 0), out, input or
 * output of fn; AG_ERR_STATE for an input or output of another tape or
 * step, or a fn that recorded ag_var ops or reset the tape; fn's own
 * status; the tape's kept error (then fn is not called). */
typedef ag_status (*ag_checkpoint_fn)(ag_tape *t, int n_in, ag_tensor *const *in,
                                      int n_out, ag_tensor **out, void *ctx);
ag_status ag_checkpoint(ag_tape *t, ag_checkpoint_fn fn, void *ctx, int n_in,
                        ag_tensor *const *in, int n_out, ag_tensor **out);
/* Selective checkpointing (JAX's save_only_these_names, PyTorch's
 * selective activation checkpointing): called inside a checkpoint's fn
 * on x, the output of a linear or matmul fn has recorded, it keeps x's
 * values from that first run, so the rebuild in backward copies them
 * instead of running the op again.  It trades memory (x's bytes stay on
 * the tape until reset) for time (the op's forward is not run twice).
 * The gradients are the same bits.  Outside a checkpoint's first run (no
 * checkpoint, or while one rebuilds) it does nothing and returns AG_OK,
 * so the same code runs with and without checkpoints.  Errors (kept on
 * the tape): AG_ERR_ARG for a NULL tape, for an x this fn's ops did not
 * make, or one made by an op whose backward reads more than its inputs
 * and output; AG_ERR_NULL / AG_ERR_STATE for a NULL or stale x. */
ag_status ag_checkpoint_save(ag_tape *t, ag_tensor *x);
/* The generator that checkpoints made from now on replay (NULL: none);
 * kept across ag_tape_reset.  It must outlive the backward sweeps of those
 * checkpoints.  AG_ERR_ARG for a NULL tape. */
ag_status ag_tape_set_checkpoint_rng(ag_tape *tape, ag_rng *rng);

/* Binomial checkpointing of a recurrence (Griewank's revolve):
 * state_{i+1} = step(i, state_i) for i = 0 .. n_steps-1, each state n
 * tensors of the layouts (dtype, shape) of state[0..n), out = the last
 * state.  Forward runs the steps one at a time and keeps only the first
 * and the last state (and a checksum per step).  Backward reverses them
 * with at most `snapshots` states stored at once besides the first, plus
 * three states of buffers and one step's tape: it runs steps forward again
 * by the binomial schedule, which needs the fewest such steps for that
 * memory, t(T, s) = r T - C(s + r + 1, r - 1) with r the least such that
 * C(s + r + 1, r) >= T (T = n_steps, s = snapshots): T = 1000 and s = 10
 * give r = 4 and t = 3545; s >= T - 1 gives t = T - 1.  So one backward
 * calls step T + t(T, s) times (T of them recorded and swept one by one),
 * on top of forward's T.
 * step: as ag_checkpoint's fn, with the step's index i; the same rules
 * (the same values each time, tensors through ctx, the registered
 * generator replayed: its state before step 0 is saved, and each stored
 * state keeps the generator's).  A step that makes another state in
 * backward stops the sweep with AG_ERR_STATE.  Gradients are those of the
 * plain recording of the steps, to the bit; create_graph through it is
 * refused (AG_ERR_STATE): use ag_checkpoint for derivatives of
 * derivatives.  out may be state (x = f(x)); NULL on failure.
 * Errors: AG_ERR_ARG for a NULL step, n_steps outside [1, 2^40],
 * snapshots outside [0, 65536] or n outside [1, 65536]; AG_ERR_NULL for a
 * NULL state, out or tensor of a state; AG_ERR_SHAPE for a state of
 * another layout; AG_ERR_STATE as ag_checkpoint; step's own status. */
typedef ag_status (*ag_checkpoint_step_fn)(ag_tape *t, int64_t i, int n,
                                           ag_tensor *const *state, ag_tensor **next,
                                           void *ctx);
ag_status ag_checkpoint_steps(ag_tape *t, ag_checkpoint_step_fn step, void *ctx,
                              int64_t n_steps, int snapshots, int n, ag_tensor *const *state,
                              ag_tensor **out);

/* ---- derivatives of derivatives ------------------------------------------
 * torch.autograd.grad: grads[i] = d <root, seed> / d wrt[i], a tape tensor
 * of wrt[i]'s shape and dtype; no persistent gradient buffer is touched.
 * seed: root's shape and dtype, or NULL for a one-element root (a 1).
 * wrt: persistent tensors or tape tensors (a PINN's input x); one that root
 * does not depend on (or that needs no grad) gets zeros.
 * create_graph: the gradients are recorded with ag_ ops, so they are tape
 * tensors that can be differentiated again, to any order (a seed that
 * requires grad is differentiated too, and so must outlive the tape's
 * step like any op input; other seeds are copied); false: plain values from the fast
 * backward kernels, recorded nothing.  May be called many times on one
 * recording.  Ops without a recorded derivative (an ag_custom op without a
 * vjp) refuse create_graph with AG_ERR_STATE.
 *
 *   ag_tensor *g;                                   // du/dx, recorded
 *   ag_gradients(t, u, NULL, 1, &x, &g, true);
 *   ag_tensor *gg;                                  // d2u/dx2
 *   ag_gradients(t, ag_sum(t, g, -1, false), NULL, 1, &x, &gg, true);      */
ag_status ag_gradients(ag_tape *t, ag_tensor *root, const ag_tensor *seed, int n,
                       ag_tensor *const *wrt, ag_tensor **grads, bool create_graph);

/* Hessian-vector products of a one-element root: hv[i] = sum_j
 * (d2 root / d wrt[i] d wrt[j]) v[j], v[j] of wrt[j]'s shape and dtype
 * (reverse-over-reverse: one recorded gradient, then one gradient of
 * <grad, v>).  hv are tape tensors, recorded when create_graph. */
ag_status ag_hvp(ag_tape *t, ag_tensor *root, int n, ag_tensor *const *wrt,
                 ag_tensor *const *v, ag_tensor **hv, bool create_graph);
/* Jacobian-vector product of any root: jv = sum_j (d root / d wrt[j]) u[j],
 * of root's shape (the double-VJP trick: the VJP is linear in its seed, so
 * differentiating it with respect to the seed in direction u gives J u). */
ag_status ag_jvp(ag_tape *t, ag_tensor *root, int n, ag_tensor *const *wrt,
                 ag_tensor *const *u, ag_tensor **jv, bool create_graph);
/* Dense derivatives for small inputs, as tape tensors of x's dtype:
 * ag_hessian: one-element root, H [numel(x), numel(x)];
 * ag_jacobian: J [numel(root), numel(x)], J[i][j] = d root_i / d x_j. */
ag_status ag_hessian(ag_tape *t, ag_tensor *root, ag_tensor *x, ag_tensor **h);
ag_status ag_jacobian(ag_tape *t, ag_tensor *root, ag_tensor *x, ag_tensor **jac);

/* ---- ops ------------------------------------------------------------------
 * Tape first; return a tape tensor, or NULL with the error kept on the tape.
 * Binary ops broadcast; inputs must share a dtype. */

ag_tensor *ag_add(ag_tape *t, ag_tensor *a, ag_tensor *b);
ag_tensor *ag_sub(ag_tape *t, ag_tensor *a, ag_tensor *b);
ag_tensor *ag_mul(ag_tape *t, ag_tensor *a, ag_tensor *b);
ag_tensor *ag_div(ag_tape *t, ag_tensor *a, ag_tensor *b);
ag_tensor *ag_pow(ag_tape *t, ag_tensor *a, ag_tensor *b);     /* a > 0 for d/db */
ag_tensor *ag_maximum(ag_tape *t, ag_tensor *a, ag_tensor *b); /* ties: half each */
ag_tensor *ag_minimum(ag_tape *t, ag_tensor *a, ag_tensor *b); /* ties: half each */

ag_tensor *ag_neg(ag_tape *t, ag_tensor *a);
ag_tensor *ag_exp(ag_tape *t, ag_tensor *a);
ag_tensor *ag_log(ag_tape *t, ag_tensor *a);
ag_tensor *ag_sqrt(ag_tape *t, ag_tensor *a);
ag_tensor *ag_abs(ag_tape *t, ag_tensor *a);      /* d/dx at 0 is 0 */
ag_tensor *ag_sin(ag_tape *t, ag_tensor *a);
ag_tensor *ag_cos(ag_tape *t, ag_tensor *a);
ag_tensor *ag_tanh(ag_tape *t, ag_tensor *a);
ag_tensor *ag_sigmoid(ag_tape *t, ag_tensor *a);
ag_tensor *ag_relu(ag_tape *t, ag_tensor *a);     /* d/dx at 0 is 0 */
ag_tensor *ag_leaky_relu(ag_tape *t, ag_tensor *a, double slope);
ag_tensor *ag_gelu(ag_tape *t, ag_tensor *a);      /* exact: x * Phi(x) (erf) */
ag_tensor *ag_gelu_tanh(ag_tape *t, ag_tensor *a); /* tanh approximation */
ag_tensor *ag_softplus(ag_tape *t, ag_tensor *a);  /* log(1 + e^x), stable */
ag_tensor *ag_erf(ag_tape *t, ag_tensor *a);       /* torch.erf: 2/sqrt(pi) int_0^x e^-s^2 */
ag_tensor *ag_add_scalar(ag_tape *t, ag_tensor *a, double c);
ag_tensor *ag_mul_scalar(ag_tape *t, ag_tensor *a, double c);
ag_tensor *ag_pow_scalar(ag_tape *t, ag_tensor *a, double c);

/* Sum / mean over `axis` (negative counts from the end) or AG_ALL.  keepdim
 * keeps the reduced axis with size 1 (every axis for AG_ALL). */
ag_tensor *ag_sum(ag_tape *t, ag_tensor *a, int axis, bool keepdim);
ag_tensor *ag_mean(ag_tape *t, ag_tensor *a, int axis, bool keepdim);

/* ---- linear algebra ---- */

/* torch.matmul: 1-D x 1-D is a dot product (0-d result); 2-D x 2-D the
 * matrix product [n,k]x[k,m] -> [n,m]; a 1-D operand is promoted to a
 * matrix and the added dim removed; N-D operands are stacks of matrices
 * whose batch dims broadcast.  AG_ERR_SHAPE names both shapes when the
 * inner dims differ. */
ag_tensor *ag_matmul(ag_tape *t, ag_tensor *a, ag_tensor *b);
/* A dense layer in one op: y = x W^T + b with x [..., in], W [out, in]
 * (PyTorch's layout), b [out] or NULL; y is [..., out].  The GEMMs read W
 * transposed in place, so neither direction copies it. */
ag_tensor *ag_linear(ag_tape *t, ag_tensor *x, ag_tensor *w, ag_tensor *b);

/* ---- more reductions (axis or AG_ALL, negative axes count from the end) */

/* Largest / smallest element.  The gradient goes to the first element
 * holding the extreme value (ties: the lowest index wins, unlike PyTorch's
 * even split for AG_ALL; sample inputs avoid ties). */
ag_tensor *ag_max(ag_tape *t, ag_tensor *a, int axis, bool keepdim);
ag_tensor *ag_min(ag_tape *t, ag_tensor *a, int axis, bool keepdim);
/* log(sum(exp(a))), computed stably (shifted by the maximum). */
ag_tensor *ag_logsumexp(ag_tape *t, ag_tensor *a, int axis, bool keepdim);
/* Variance with Bessel-style correction: sum((a - mean)^2) / (n - correction);
 * correction 1 is torch.var's default.  n - correction <= 0 is AG_ERR_ARG. */
ag_tensor *ag_variance(ag_tape *t, ag_tensor *a, int axis, bool keepdim, int correction);
/* Index of the largest element along axis (first one on ties; a NaN counts
 * as the largest, as in PyTorch), an AG_I64 tensor (torch.argmax); no
 * gradient flows (the result never requires grad, and ops refuse it). */
ag_tensor *ag_argmax(ag_tape *t, ag_tensor *a, int axis, bool keepdim);
/* torch.topk (sorted=True): the k largest elements along axis (the k
 * smallest when !largest), in order (largest first; smallest first when
 * !largest), ties broken by the lower index; a NaN counts as the largest.
 * Returns the values, a's shape with k along axis and a's dtype; the
 * gradient goes to the chosen elements.  *indices (when indices is not
 * NULL) receives their positions along axis, an AG_I64 tensor of the same
 * shape.  k outside [0, size along axis]: AG_ERR_ARG. */
ag_tensor *ag_topk(ag_tape *t, ag_tensor *a, int64_t k, int axis, bool largest,
                   ag_tensor **indices);

/* ---- shape ----
 * ag_reshape, ag_squeeze and ag_unsqueeze are views: the result shares
 * a's data (no copy, no tape memory but its header), as every tensor is
 * contiguous; its gradient is a buffer of its own.  A write through a
 * view (ag_set, ag_data) writes a, and counts as a write of a persistent
 * a (its version: "In-place edits" above).  The other shape ops make new
 * contiguous tensors. */

/* Same elements, new shape; one dim may be -1 (inferred).  The element
 * count must match (AG_ERR_SHAPE). */
ag_tensor *ag_reshape(ag_tape *t, ag_tensor *a, int ndim, const int64_t *shape);
/* Swaps dims d0 and d1 (negative counts from the end; a 0-d tensor takes
 * 0 or -1, as torch).  AG_ERR_ARG for an axis out of range. */
ag_tensor *ag_transpose(ag_tape *t, ag_tensor *a, int d0, int d1);
/* Output dim i is input dim perm[i]; perm is a permutation of 0..ndim-1
 * (negative entries count from the end).  AG_ERR_ARG names perm otherwise. */
ag_tensor *ag_permute(ag_tape *t, ag_tensor *a, const int *perm);
/* Elements start, start+step, ... < stop along axis (step >= 1; start and
 * stop may be negative, counting from the end, and must lie in range:
 * past the end is AG_ERR_ARG, not clamped).  start >= stop gives an empty
 * axis, as a[5:2] does in torch. */
ag_tensor *ag_slice(ag_tape *t, ag_tensor *a, int axis, int64_t start, int64_t stop,
                    int64_t step);
/* The adjoint of ag_slice (torch's slice_backward): a's shape but `size`
 * along axis, zeros except at start, start + step, ... (as many places as
 * a has elements there), which hold a's elements in order; start may be
 * negative, counting from the end.  Places outside [0, size), or step < 1,
 * are AG_ERR_ARG.  ag_slice of the result with the same start and step
 * gives a back; each is the other's gradient. */
ag_tensor *ag_unslice(ag_tape *t, ag_tensor *a, int axis, int64_t size, int64_t start,
                      int64_t step);
/* Joins n >= 1 tensors along an existing axis; all other dims must agree
 * (AG_ERR_SHAPE names the index and shape of the first that does not). */
ag_tensor *ag_concat(ag_tape *t, ag_tensor *const *tensors, int n, int axis);
/* Joins n >= 1 same-shaped tensors along a new axis, in [-(ndim+1), ndim]. */
ag_tensor *ag_stack(ag_tape *t, ag_tensor *const *tensors, int n, int axis);
/* Broadcasts a to shape (NumPy rules; torch.broadcast_to): -1 keeps a's
 * size of a dim a has (not allowed for new leading dims).  Backward sums
 * the gradient over the broadcast dims. */
ag_tensor *ag_expand(ag_tape *t, ag_tensor *a, int ndim, const int64_t *shape);
/* Removes dim axis (must have size 1, else AG_ERR_SHAPE, unlike torch's
 * silent no-op); AG_ALL removes every size-1 dim. */
ag_tensor *ag_squeeze(ag_tape *t, ag_tensor *a, int axis);
/* Inserts a size-1 dim at axis (in [-(ndim+1), ndim]). */
ag_tensor *ag_unsqueeze(ag_tape *t, ag_tensor *a, int axis);
/* Constant padding: pad[2*i] elements before and pad[2*i+1] after dim i,
 * for every dim i of a (non-negative), filled with value.  Dim 0 comes
 * first, unlike F.pad's list, which starts at the last dim. */
ag_tensor *ag_pad(ag_tape *t, ag_tensor *a, const int64_t *pad, double value);

/* ---- indexing ---- */

/* torch.gather: out[i][j][k] = a[index[i][j][k]][j][k] for axis 0, etc.
 * index holds integral values (in a's dtype or either float dtype) with
 * a's ndim and dims <= a's on the other axes; out has index's shape.  An
 * index outside [0, a.shape[axis]) is AG_ERR_ARG.  No gradient to index. */
ag_tensor *ag_gather(ag_tape *t, ag_tensor *a, int axis, const ag_tensor *index);
/* torch.scatter_add, gather's adjoint: a copy of a with, for axis 0,
 * out[index[i][j][k]][j][k] += src[i][j][k] (repeated indices add up).
 * index as for ag_gather (a's ndim, dims <= a's off the axis, integral
 * values in [0, a.shape[axis]), else AG_ERR_SHAPE / AG_ERR_ARG); src has
 * index's shape exactly (a narrower form than torch's) and a's dtype.
 * Gradients to a and src; none to index. */
ag_tensor *ag_scatter_add(ag_tape *t, ag_tensor *a, int axis, const ag_tensor *index,
                          ag_tensor *src);
/* Rows idx[0..n) of a along axis (embedding lookup).  Backward adds into
 * the selected rows; repeated indices add up.  Out-of-range: AG_ERR_ARG. */
ag_tensor *ag_index_select(ag_tape *t, ag_tensor *a, int axis, const int64_t *idx,
                           int64_t n);
/* torch.index_add, index_select's adjoint: a copy of a with src's rows
 * added into rows idx[0..n) along axis (repeated indices add up).  src is
 * a's shape with n on the axis, and a's dtype (else AG_ERR_SHAPE /
 * AG_ERR_DTYPE); an index out of range is AG_ERR_ARG.  idx is copied. */
ag_tensor *ag_index_add(ag_tape *t, ag_tensor *a, int axis, const int64_t *idx, int64_t n,
                        ag_tensor *src);
/* cond != 0 ? a : b elementwise, broadcasting all three; no gradient to
 * cond. */
ag_tensor *ag_where(ag_tape *t, ag_tensor *cond, ag_tensor *a, ag_tensor *b);
/* min(max(a, lo), hi) (all hi when lo > hi; a NaN element stays NaN);
 * gradient 1 where lo <= a <= hi, bounds included as in PyTorch, else 0.
 * Use -INFINITY / INFINITY for a one-sided clamp; a NaN bound is AG_ERR_ARG. */
ag_tensor *ag_clamp(ag_tape *t, ag_tensor *a, double lo, double hi);

/* ---- neural-network primitives ---- */

/* exp(a) / sum(exp(a)) and its log along axis (negative counts from the
 * end; a 0-d tensor takes axis 0 or -1), same shape as a.  Computed
 * shifted by the lane's maximum, so logits of +-1e4 stay finite; a NaN in
 * a lane makes the whole lane NaN.  Bad axis: AG_ERR_ARG. */
ag_tensor *ag_softmax(ag_tape *t, ag_tensor *a, int axis);
ag_tensor *ag_log_softmax(ag_tape *t, ag_tensor *a, int axis);

typedef enum { AG_REDUCE_MEAN = 0, AG_REDUCE_SUM, AG_REDUCE_NONE } ag_reduction;
typedef struct ag_ce_opts {
    double label_smoothing;   /* in [0, 1); 0: none */
    int64_t ignore_index;     /* a label to skip; AG_CE_NO_IGNORE: none */
    ag_reduction reduction;   /* mean over non-ignored rows, sum, or per row */
} ag_ce_opts;
#define AG_CE_NO_IGNORE INT64_MIN
/* Cross-entropy of logits [n, C] against labels[n] in [0, C) (or the
 * ignore index), fused with log-softmax for stability: PyTorch's
 * F.cross_entropy with the same options.  Logits [..., C] with more dims
 * (a sequence model's [B, T, C]) are taken as rows without a reshape: n
 * is the product of the leading dims, labels row-major over them (the
 * class dim is the last, unlike PyTorch's [N, C, d1, ...]), and NONE
 * gives the leading dims' shape.  Per row, with eps the smoothing:
 * (1-eps) * -log p_label + eps * mean_c(-log p_c); ignored rows give 0 and
 * MEAN divides by the rows not ignored (every row ignored: NaN, as in
 * PyTorch, and a zero gradient).  opts NULL: mean, no smoothing,
 * ignore_index -100 (PyTorch's default).  Result: 0-d, or [n] for NONE.
 * labels are copied when the op is recorded; the softmax is saved for
 * backward (n*C values on the tape).  Errors: logits with fewer than 2
 * dims or n != rows (AG_ERR_SHAPE); labels NULL, smoothing outside [0, 1), an unknown
 * reduction, or a label out of range (AG_ERR_ARG naming the row). */
ag_tensor *ag_cross_entropy_logits(ag_tape *t, ag_tensor *logits, const int64_t *labels,
                                   int64_t n, const ag_ce_opts *opts);
/* Inverted dropout: in training, zeroes each element with probability p
 * (one draw from rng per element, at record time; the mask is kept for
 * backward) and scales the rest by 1/(1-p).  Not training, or p == 0:
 * returns a itself (no copy, nothing recorded, rng untouched and may be
 * NULL).  p outside [0, 1) (also when not training) or a NULL rng in
 * training: AG_ERR_ARG. */
ag_tensor *ag_dropout(ag_tape *t, ag_tensor *a, double p, bool training, ag_rng *rng);

/* ---- convolution and pooling (NCHW, as PyTorch) ----
 *   ag_tensor *h = ag_conv2d(t, x, w, b, (ag_conv2d_opts){.padding = {1, 1}});
 *   h = ag_max_pool2d(t, ag_relu(t, h), (ag_pool2d_opts){.kernel = {2, 2}});
 * Results are tape tensors; f32 and f64 (every input of one dtype).  Each
 * op records its derivative as convolutions (and poolings) again, so
 * gradients can be differentiated to any order.  Errors (kept on the tape,
 * the result NULL), naming the function, the argument and the shapes:
 * AG_ERR_SHAPE for a wrong rank, channels that do not match w or groups,
 * b not [C_out], a (dilated) kernel larger than the padded input;
 * AG_ERR_ARG for an option out of range (negative, or above 2^31 - 1);
 * AG_ERR_DTYPE for mixed dtypes; AG_ERR_NOMEM for a result too large. */
/* A zero field means PyTorch's default: stride 1, padding 0, dilation 1,
 * groups 1.  stride, padding and dilation are per dim (H, then W). */
typedef struct ag_conv2d_opts {
    int64_t stride[2], padding[2], dilation[2], groups;
} ag_conv2d_opts;
typedef struct ag_conv1d_opts {
    int64_t stride, padding, dilation, groups;
} ag_conv1d_opts;
/* x [N, C_in, H, W], w [C_out, C_in/groups, kH, kW], b [C_out] or NULL ->
 * [N, C_out, H_out, W_out]: torch.nn.functional.conv2d (a correlation),
 * H_out = (H + 2 padding - dilation (kH - 1) - 1) / stride + 1 (floor),
 * W_out likewise.  groups must divide C_in and C_out (groups = C_in:
 * depthwise).  Scratch for the unrolled input comes from the tape.  A 3x3
 * kernel at stride 1 (no dilation or groups) with 16+
 * channels in and out runs its forward and input gradient by Winograd's
 * F(2x2, 3x3): 2.25x fewer multiplies, rounding that differs from the
 * direct sum's but is no larger (kernels/conv_winograd.c). */
ag_tensor *ag_conv2d(ag_tape *t, ag_tensor *x, ag_tensor *w, ag_tensor *b, ag_conv2d_opts o);
/* The same on x [N, C_in, L], w [C_out, C_in/groups, k] -> [N, C_out,
 * L_out]: torch.nn.functional.conv1d (conv2d on [N, C_in, 1, L]). */
ag_tensor *ag_conv1d(ag_tape *t, ag_tensor *x, ag_tensor *w, ag_tensor *b, ag_conv1d_opts o);
/* Pooling windows: kernel (>= 1, no default), stride (0 means the kernel
 * size, as PyTorch), padding (at most half the kernel, as PyTorch), per
 * dim (H, then W); H_out = (H + 2 padding - kernel) / stride + 1 (floor,
 * no ceil_mode), W_out likewise. */
typedef struct ag_pool2d_opts {
    int64_t kernel[2], stride[2], padding[2];
} ag_pool2d_opts;
/* x [N, C, H, W] (H, W >= 1) -> [N, C, H_out, W_out], the max of each
 * window (padding never wins): F.max_pool2d.  The first maximum of a
 * window (row by row) takes its gradient, and a NaN wins its window, as
 * in PyTorch; the positions are kept on the tape (8 bytes an output). */
ag_tensor *ag_max_pool2d(ag_tape *t, ag_tensor *x, ag_pool2d_opts o);
/* The mean of each window, padding counted in the divisor
 * (count_include_pad, PyTorch's default): F.avg_pool2d. */
ag_tensor *ag_avg_pool2d(ag_tape *t, ag_tensor *x, ag_pool2d_opts o);
/* x [N, C, H, W] -> [N, C, out_h, out_w] (each in [1, 2^31 - 1]), the mean
 * over rows floor(i H / out_h) to ceil((i+1) H / out_h) (exclusive) and
 * likewise columns: F.adaptive_avg_pool2d (1, 1 is the global average). */
ag_tensor *ag_adaptive_avg_pool2d(ag_tape *t, ag_tensor *x, int64_t out_h, int64_t out_w);

/* ---- attention ---- */
/* q [..., Tq, D], k [..., Tk, D], v [..., Tk, Dv] -> [..., Tq, Dv]:
 * softmax(q k^T * scale + mask) v; scale 0 means 1/sqrt(D); mask additive
 * and broadcast to [..., Tq, Tk] (NULL: none); causal masks key j > query
 * i.  Fused and memory-linear: backward keeps each row's log-sum-exp, not
 * the probabilities.
 * Details.  q, k and v share their leading dims (no broadcasting among
 * them) and a dtype; the mask has it too and may hold -inf (a padded
 * key).  The mask is a constant: no gradient flows to it, and one that
 * requires grad is AG_ERR_ARG.  causal is top-left aligned, as
 * torch.tril(ones(Tq, Tk)): with Tq > Tk the rows past Tk see every key.
 * A row that sees no key (every score -inf) gives 0 and passes no
 * gradient, where the written-out softmax gives NaN.  The forward keeps
 * the output and Tq log-sum-exps per head on the tape, plus O(Tk) scratch
 * per thread; the backward recomputes the probabilities a block of query
 * rows at a time (FlashAttention-2's backward), all products as GEMMs, on
 * ag_get_num_threads() threads over the leading dims when large.  The
 * recorded derivative (create_graph) is composed of ops and keeps the
 * Tq x Tk probabilities.  Errors: shapes that do not fit or a mask that
 * does not broadcast (AG_ERR_SHAPE), dtypes that differ (AG_ERR_DTYPE), a
 * non-finite scale (AG_ERR_ARG). */
ag_tensor *ag_attention(ag_tape *t, ag_tensor *q, ag_tensor *k, ag_tensor *v,
                        const ag_tensor *mask, bool causal, double scale);
/* Self-attention over one packed projection, as nn.MultiheadAttention
 * computes it: qkv [..., T, 3C] holds q, k, v side by side along its last
 * dim, each the num_heads heads of width D = C / num_heads side by side
 * (x W_in^T + b_in); the result [..., T, C] has the heads side by side,
 * ready for the out-projection.  Equal to ag_attention on the heads
 * [..., num_heads, T, D] of q, k, v with the result's heads merged, but
 * reads and writes them in place: no reshape, permute or slice copies and
 * none of their gradients.  The mask broadcasts to the scores
 * [..., num_heads, T, T]; scale, causal and the rest as ag_attention.
 * Errors: num_heads < 1 or scale not finite (AG_ERR_ARG), qkv with fewer
 * than 2 or more than 6 dims or a last dim not a multiple of 3 num_heads
 * (0 only with one head),
 * a mask that does not broadcast (AG_ERR_SHAPE), dtypes that differ
 * (AG_ERR_DTYPE). */
ag_tensor *ag_attention_qkv(ag_tape *t, ag_tensor *qkv, int64_t num_heads,
                            const ag_tensor *mask, bool causal, double scale);

/* ---- normalization ---- */
/* F.layer_norm over the last dim: y = (x - mean) / sqrt(var + eps) * w + b,
 * mean and biased variance over each row of x's last dim D; w and b [D]
 * (either may be NULL: no scale / no shift), x's dtype.  One fused op that
 * keeps each row's mean and 1/std for backward.  Errors: x 0-d or w, b not
 * [D] (AG_ERR_SHAPE), eps negative or not finite (AG_ERR_ARG). */
ag_tensor *ag_layer_norm(ag_tape *t, ag_tensor *x, ag_tensor *w, ag_tensor *b, double eps);

/* ---- recurrent cells ---- */
/* The elementwise part of one LSTM step, fused (nn_lstm's step after its
 * GEMMs): gates [..., 4H] are the pre-activations W_ih x + b_ih + W_hh h +
 * b_hh in PyTorch's order i, f, g, o along the last dim, c [..., H] the
 * cell state (same leading dims and dtype; zeros for a zero state):
 *   c' = sigmoid(f) c + sigmoid(i) tanh(g),   h' = sigmoid(o) tanh(c').
 * Returns h' and sets *c_next to c' (tape tensors of c's shape), recorded
 * as two ops (lstm_cell_c, lstm_cell_h) that keep the activations for
 * backward (5H values a row).  AG_ERR_SHAPE names both shapes when gates is
 * not [..., 4H] for c [..., H]; c_next NULL is AG_ERR_ARG; on any error
 * *c_next is NULL too. */
ag_tensor *ag_lstm_cell(ag_tape *t, ag_tensor *gates, ag_tensor *c, ag_tensor **c_next);
/* One GRU step, fused: gx = W_ih x + b_ih and gh = W_hh h + b_hh, both
 * [..., 3H] in PyTorch's order r, z, n, and the state h [..., H]:
 *   r = sigmoid(gx_r + gh_r), z = sigmoid(gx_z + gh_z),
 *   n = tanh(gx_n + r gh_n),  h' = (1 - z) n + z h  (h's shape).
 * One recorded op keeping r, z, n for backward.  AG_ERR_SHAPE as above. */
ag_tensor *ag_gru_cell(ag_tape *t, ag_tensor *gx, ag_tensor *gh, ag_tensor *h);

/* ---- sequence-model utilities ---- */
/* torch.detach: a copy of a's values that belongs to no graph, a tape
 * tensor that never requires grad, so no gradient flows back through it
 * (truncated backpropagation through time).  Records nothing. */
ag_tensor *ag_detach(ag_tape *t, ag_tensor *a);
/* torch.split with a list of sizes: out[i] holds the next sizes[i]
 * elements of a along axis (negative counts from the end), each a
 * recorded slice that gradients flow back through.  n >= 1 sizes, each
 * >= 0, adding up to a's size along axis (else AG_ERR_ARG).  out has room
 * for n tensors; on failure every out[i] is NULL and the tape keeps the
 * error.  Returns AG_OK or that error. */
ag_status ag_split(ag_tape *t, ag_tensor *a, int n, const int64_t *sizes, int axis,
                   ag_tensor **out);
/* torch.chunk: a split along axis into pieces of ceil(size / chunks)
 * elements, the last one smaller.  As in PyTorch there can be fewer than
 * chunks pieces (size 6 in 4 chunks gives 3 pieces of 2); a size of 0
 * gives chunks empty pieces.  out has room for chunks tensors; returns the
 * number of pieces written, or -1 with the error kept on the tape
 * (chunks < 1 or a bad axis: AG_ERR_ARG). */
int ag_chunk(ag_tape *t, ag_tensor *a, int chunks, int axis, ag_tensor **out);
/* torch.masked_fill: a where mask == 0 and value where mask != 0, with a's
 * shape; mask (f32 or f64, any values, no gradient) broadcasts to a's
 * shape.  The gradient to a passes where mask == 0.  value may be -inf
 * (scores masked before a softmax): anomaly mode takes an Inf that
 * masked_fill puts there as passed through from value, not made. */
ag_tensor *ag_masked_fill(ag_tape *t, ag_tensor *a, const ag_tensor *mask, double value);

/* torch.no_grad as a scope: turns recording off and returns the state it
 * found, for ag_no_grad_end to restore, so scopes nest:
 *   bool g = ag_no_grad_begin(t);   ... evaluation ...   ag_no_grad_end(t, g);
 * A NULL tape: false (end: nothing), with ag_last_error. */
bool ag_no_grad_begin(ag_tape *t);
void ag_no_grad_end(ag_tape *t, bool saved);

/* Draws one class per row of logits [..., C] (f32 or f64, tape or
 * persistent) from softmax(logits / temperature) into out[r], r over the
 * numel / C rows in row-major order (out has room for them), with one
 * ag_rng_uniform draw per row; a -inf logit is never drawn.  temperature 0
 * takes each row's argmax (greedy, first on ties): no draw, and rng may be
 * NULL.  AG_ERR_ARG (with ag_last_error): logits or out NULL, logits 0-d
 * or C = 0, temperature negative or NaN, rng NULL with temperature > 0;
 * AG_ERR_NUMERIC: a row with a NaN or whose largest logit is not finite
 * (nothing is written then). */
ag_status ag_sample_logits(const ag_tensor *logits, double temperature, ag_rng *rng,
                           int64_t *out);

/* ---- the scalar path -------------------------------------------------------
 * Scalar programs (micrograd-style models, scientific functions) record on
 * the same tape without a tensor per operation: an ag_var is an index into
 * structure-of-arrays storage (value, adjoint, two operand indices, op code,
 * branch flag: 26 bytes per op) that the tape keeps across resets, so a
 * re-recorded program allocates nothing.
 *
 *   ag_var x = ag_var_new(tape, 0.5), y = ag_var_new(tape, 2.0);
 *   ag_var f = ag_var_mul(tape, ag_var_sin(tape, x), y);
 *   ag_var_backward(tape, f);      ag_var_grad(tape, x) == cos(0.5) * 2
 *
 * A var is its op's index and the generation of the step that recorded
 * it (plain data, 8 bytes; make vars only with ag_var_*).  An operand of
 * another tape or from before a reset keeps AG_ERR_STATE ("ag_var_mul: b
 * is an ag_var from another tape or from before ag_tape_reset"); a failed
 * op's result (id -1) keeps AG_ERR_ARG; either way the result is invalid
 * (id -1). */
typedef struct ag_var {
    int32_t id;
    uint32_t gen;
} ag_var;

ag_var ag_var_new(ag_tape *t, double value);    /* an input: its gradient is wanted */
ag_var ag_var_const(ag_tape *t, double value);  /* a constant: replay never changes it */
ag_var ag_var_add(ag_tape *t, ag_var a, ag_var b);
ag_var ag_var_sub(ag_tape *t, ag_var a, ag_var b);
ag_var ag_var_mul(ag_tape *t, ag_var a, ag_var b);
ag_var ag_var_div(ag_tape *t, ag_var a, ag_var b);
ag_var ag_var_pow(ag_tape *t, ag_var a, ag_var b);   /* d/db needs a > 0 */
ag_var ag_var_min(ag_tape *t, ag_var a, ag_var b);   /* ties: half the gradient each */
ag_var ag_var_max(ag_tape *t, ag_var a, ag_var b);
ag_var ag_var_neg(ag_tape *t, ag_var a);
ag_var ag_var_exp(ag_tape *t, ag_var a);
ag_var ag_var_log(ag_tape *t, ag_var a);
ag_var ag_var_sqrt(ag_tape *t, ag_var a);
ag_var ag_var_sin(ag_tape *t, ag_var a);
ag_var ag_var_cos(ag_tape *t, ag_var a);
ag_var ag_var_tanh(ag_tape *t, ag_var a);
ag_var ag_var_sigmoid(ag_tape *t, ag_var a);
ag_var ag_var_relu(ag_tape *t, ag_var a);            /* d/dx at 0 is 0 */
ag_var ag_var_abs(ag_tape *t, ag_var a);             /* d/dx at 0 is 0 */
/* a < b, recorded as a branch decision that ag_tape_replay re-checks.
 * An invalid operand gives false (and the error on the tape). */
bool   ag_var_less(ag_tape *t, ag_var a, ag_var b);

/* NaN, with ag_last_error, for an invalid var or one of another tape or
 * step (these readers keep no error on the tape). */
double ag_var_value(const ag_tape *t, ag_var x);
/* d y / d x from the last sweep that reached x: ag_var_backward(y) (0 for
 * an x recorded before y that y does not depend on), ag_var_hvp /
 * ag_var_hessian, or a tensor backward through the scalar ops.  NaN, with
 * ag_last_error, when no sweep covered x (none since the reset, or x was
 * recorded after the last sweep's root), when the tape holds an error (a
 * failed sweep leaves partial adjoints), and for the vars ag_var_value
 * refuses. */
double ag_var_grad(const ag_tape *t, ag_var x);
/* One reverse sweep from y: the gradient with respect to every input.
 * Tensor entries recorded before y that feed it are swept too. */
ag_status ag_var_backward(ag_tape *t, ag_var y);
/* Second order on the scalar path, forward over reverse as ADOL-C's
 * hess_vec: one tangent sweep along v, then one reverse sweep of adjoints
 * and adjoint tangents.  ag_var_hvp: hv[i] = sum_j d2y / dx_i dx_j v[j]
 * over the n input vars x (from ag_var_new; other inputs are held fixed);
 * ag_var_hessian: the dense n x n Hessian h (row-major), n products.  Both
 * leave d y / d x in ag_var_grad, as ag_var_backward does.  Kinks (relu,
 * abs, min, max) have second derivative 0.  v, hv, h are the caller's and
 * may be NULL only when n is 0.  Errors: the tape's kept error;
 * AG_ERR_STATE when the tape holds tensor ops (use ag_hvp there) or for a
 * var of another tape or step; AG_ERR_ARG for a NULL tape or array, n < 0,
 * an invalid var, an x that is not an input; AG_ERR_NOMEM.  The first call adds 16 bytes per op of
 * tangent storage, kept by the tape like the other arrays. */
ag_status ag_var_hvp(ag_tape *t, ag_var y, int n, const ag_var *x, const double *v,
                     double *hv);
ag_status ag_var_hessian(ag_tape *t, ag_var y, int n, const ag_var *x, double *h);

/* A var holding the value of a one-element tensor; gradients reaching the
 * var flow on into the tensor. */
ag_var ag_var_from_tensor(ag_tape *t, ag_tensor *x);
/* A tape tensor of the given shape and dtype holding vars[i] (row-major);
 * its gradient flows back into the vars.  vars NULL (with elements) is
 * AG_ERR_NULL; a var of another tape or step AG_ERR_STATE. */
ag_tensor *ag_tensor_from_vars(ag_tape *t, ag_dtype dt, int ndim, const int64_t *shape,
                               const ag_var *vars);

/* Re-evaluates the recorded scalar program with inputs[i] set to values[i]
 * and nothing else changed, without re-recording; call ag_var_backward for
 * the new gradient.  Every recorded branch decision (ag_var_less, min, max,
 * relu, abs) is re-taken; if one would go the other way the tape keeps
 * AG_ERR_RETAPE and the caller must reset and record again.  Tapes holding
 * tensor entries cannot be replayed (AG_ERR_STATE).  n == 0 re-evaluates
 * with the inputs as they are (an empty tape: nothing to do, AG_OK);
 * n < 0, or NULL arrays with n > 0, are AG_ERR_ARG; an input of another
 * tape or step AG_ERR_STATE; one not made by ag_var_new AG_ERR_ARG. */
ag_status ag_tape_replay(ag_tape *t, int n, const ag_var *inputs, const double *values);
/* Number of scalar ops recorded, and the bytes each one takes. */
int64_t ag_tape_scalar_ops(const ag_tape *t);
size_t  ag_scalar_bytes_per_op(void);

/* ---- seeing inside -----------------------------------------------------------
 * Names, graph export, anomaly mode and the profiler.  All are off or empty
 * by default and cost one branch per op when off. */

/* Names a persistent tensor (copied) for graphs and reports; nn_params
 * names its parameters.  Tape tensors ignore it. */
void        ag_tensor_set_name(ag_tensor *t, const char *name);
const char *ag_tensor_name(const ag_tensor *t);   /* NULL when unnamed */

/* Writes the graph that leads to root as Graphviz DOT: one node per op
 * (name from the op table, call site in anomaly mode), one per leaf tensor
 * (name, shape, dtype, requires grad, and |grad| once backward ran), edges
 * labelled with shapes.  Render with `dot -Tpng`.  AG_ERR_ARG / AG_ERR_IO. */
ag_status ag_tape_dot(const ag_tape *tape, const ag_tensor *root, FILE *out);
/* A text listing of every recorded entry: index, op, inputs, output. */
ag_status ag_tape_print(const ag_tape *tape, FILE *out);

/* Anomaly mode: each op records its call site, and every forward output
 * and backward gradient is checked; the first anomaly keeps AG_ERR_NUMERIC
 * with a message naming the op, the call site, forward or backward, the
 * element, and the input ranges (inputs numbered from 1).  Scalar (ag_var)
 * ops are not checked.  What is an anomaly:
 *  - a NaN, anywhere, always (also one passed through from an input);
 *  - an Inf (either sign) that the op made from finite values: exp
 *    overflow, log(0), x / 0, a sum that overflows.  An Inf the op passes
 *    through from an infinite value it was computed from is not one: the
 *    causal mask ag_softmax(ag_where(mask, scores, minus_inf), -1), max,
 *    maximum, -inf + 1, -2 * -inf = +inf.
 * "Computed from", forward: for the elementwise ops (the binary ops,
 * where, the unary ops, add/mul/pow_scalar, clamp, dropout) the input
 * elements aligned with that output element under broadcasting, and the
 * op's scalar constant; for every other op (reductions, matmul, softmax,
 * shape and index ops, custom ops), conservatively, any element of any
 * input.  Backward, for the gradient of input k: for an elementwise op
 * and an input of the output's shape, the aligned elements of the inputs,
 * the output and the output's gradient; otherwise any element of those.
 * An Inf already in the gradient buffer before the op's backward ran
 * (accumulated by an entry checked before it, or left in a persistent
 * gradient by an earlier backward) is not the op's doing.  So a
 * conservative op may let a made Inf pass when one of its inputs holds an
 * Inf elsewhere; it never reports a passed-through one. */
void ag_tape_set_anomaly(ag_tape *tape, bool on);
/* Sets the call site of the next ops; returns 0.  Used by the macros of
 * autograd/ag_sites.h, which wrap every op as `(ag_tape_site(t, __FILE__,
 * __LINE__), ag_op)(t, ...)`.  file must outlive the tape's step. */
int  ag_tape_site(ag_tape *tape, const char *file, int line);
/* An explicit label for the next ops (line 0), e.g. "decoder softmax". */
void ag_tape_label(ag_tape *tape, const char *label);

/* Profiler: per op, forward and backward time, calls and tape bytes,
 * accumulated over steps (ag_tape_reset keeps them) until
 * ag_tape_profile_reset.  Forward time and tape bytes cover the op's whole
 * recording: tape bytes are what each call put on the tape, as
 * ag_tape_bytes_used counts them — what the op's function allocated before
 * recording (a dropout mask, saved probabilities, scratch), its output
 * tensor, its entry's input array and saved values, and whatever its
 * forward allocated; a constant made between two ops (ag_tape_tensor)
 * counts for the op after it, and gradient buffers made by backward are
 * not included, so after a forward the column adds up to
 * ag_tape_bytes_used.  The ops inside a checkpoint (ag_checkpoint) hold no
 * bytes once it has dropped them: its rows "checkpoint" and
 * "checkpoint_out" hold what it keeps, and "checkpoint"'s backward time
 * includes the rebuild of its segment, while its ops' own backward times
 * stay in their rows. */
void ag_tape_set_profile(ag_tape *tape, bool on);
void ag_tape_profile_reset(ag_tape *tape);
/* Prints the table, sorted by total time, and the backward/forward ratio
 * of everything recorded against the cheap-gradient bound (~3). */
ag_status ag_tape_profile(const ag_tape *tape, FILE *out);
/* Totals in nanoseconds (0 when profiling never ran). */
void ag_tape_profile_totals(const ag_tape *tape, double *forward_ns, double *backward_ns);

/* ---- user-defined ops ------------------------------------------------------
 * An op of your own, with its forward and backward, recorded on the tape
 * like any built-in one (check it with ag_gradcheck):
 *
 *   static void cube_fwd(ag_tensor *const *in, int n, ag_tensor *out, void *ctx)
 *   { for (i...) ag_set(out, i, pow(ag_get(in[0], i), 3)); }
 *   static void cube_bwd(ag_tensor *const *in, int n, const ag_tensor *out,
 *                        const ag_tensor *gout, ag_tensor *const *gin, void *ctx)
 *   { if (gin[0]) for (i...) ag_set(gin[0], i, ag_get(gin[0], i)
 *                                   + ag_get(gout, i) * 3 * pow(ag_get(in[0], i), 2)); }
 *   static const ag_custom_op cube = {.name = "cube", .forward = cube_fwd,
 *                                     .backward = cube_bwd};
 *   ag_tensor *y = ag_custom(tape, &cube, &x, 1, ag_ndim(x), ag_shape(x), NULL);
 */
typedef struct ag_custom_op {
    const char *name;
    /* Fills out (already shaped, of the inputs' dtype) from the inputs. */
    void (*forward)(ag_tensor *const *in, int n_in, ag_tensor *out, void *ctx);
    /* Adds d loss / d in[k] into gin[k] given gout = d loss / d out;
     * gin[k] is NULL for inputs that need no gradient.  Add, never
     * overwrite: gradients accumulate. */
    void (*backward)(ag_tensor *const *in, int n_in, const ag_tensor *out,
                     const ag_tensor *gout, ag_tensor *const *gin, void *ctx);
    /* Optional, for ag_gradients(..., create_graph = true): the same
     * derivative written with ag_ ops on t, so it can be differentiated
     * again.  For each k with need[k], set gin[k] to d loss / d in[k], a
     * tape tensor of in[k]'s shape (leave the others NULL).  Without it,
     * create_graph through this op fails with AG_ERR_STATE. */
    void (*vjp)(ag_tape *t, ag_tensor *const *in, int n_in, ag_tensor *out,
                ag_tensor *gout, const bool *need, ag_tensor **gin, void *ctx);
} ag_custom_op;

/* Records op over n_in (1..8) inputs sharing a dtype, with an output of
 * the given shape.  op and ctx must outlive the tape's step.  The result
 * is a tape tensor, or NULL with the error kept on the tape. */
ag_tensor *ag_custom(ag_tape *t, const ag_custom_op *op, ag_tensor *const *in, int n_in,
                     int out_ndim, const int64_t *out_shape, void *ctx);

/* ---- gradient checking -----------------------------------------------------
 * fn records a function of inputs on the tape and returns its output (any
 * shape).  Inputs must be persistent f64 tensors; those with requires_grad
 * are checked.  Each analytic d out_j / d x_i is compared with the central
 * difference (f(x+eps) - f(x-eps)) / 2eps and passes when
 * |analytic - numeric| <= atol + rtol * |numeric|  (PyTorch's rule; equal
 * values, equal infinities too, pass; a NaN fails).
 * Outputs with up to full_max elements get the full Jacobian; larger ones
 * (or mode FAST) compare random projections v^T J u instead. */
typedef ag_tensor *(*ag_gradcheck_fn)(ag_tape *tape, ag_tensor **inputs, void *ctx);

typedef enum { AG_GRADCHECK_AUTO = 0, AG_GRADCHECK_FULL, AG_GRADCHECK_FAST } ag_gradcheck_mode;

typedef struct ag_gradcheck_opts {
    double eps;       /* 0: 1e-6 */
    double atol;      /* 0: 1e-5; a negative value means exactly 0 */
    double rtol;      /* 0: 1e-3 */
    ag_gradcheck_mode mode;
    int64_t full_max; /* 0: 256 output elements */
    uint64_t seed;    /* projections in FAST mode */
} ag_gradcheck_opts;

/* The worst entry is the compared pair with the largest error
 *   |analytic - numeric| / max(1, |numeric|)
 * (the absolute error where |numeric| <= 1, where a relative error means
 * nothing, the relative error above; a NaN counts as an infinite error),
 * taken among the failing pairs when some fail: a failed report names a
 * pair that fails, a passing one the least accurate pair, not an
 * exact-zero one.  Pass or fail is PyTorch's rule alone (worst_excess). */
typedef struct ag_gradcheck_report {
    bool    passed;
    int     worst_input;   /* 0-based index into inputs (the message says
                              "input #1" for 0); -1 in FAST or if none compared */
    int64_t worst_element; /* flat index in that input (FULL), -1 in FAST */
    int64_t worst_output;  /* flat index in the output (FULL), -1 in FAST */
    double  analytic, numeric;  /* at the worst entry */
    double  worst_excess;  /* max over all pairs of |a-n| - (atol + rtol|n|)
                              (+inf for a NaN); <= 0 passes */
    int64_t compared;      /* number of values compared */
    char    message[512];  /* one line: passed or FAILED, the worst entry and
                              its error, |diff| and tolerance */
} ag_gradcheck_report;

/* AG_OK when every value passes, AG_ERR_GRADIENT when one does not, another
 * status when fn fails or the arguments are bad (message in report and in
 * ag_last_error).  opts and report may be NULL. */
ag_status ag_gradcheck(ag_gradcheck_fn fn, void *ctx, ag_tensor **inputs, int n,
                       const ag_gradcheck_opts *opts, ag_gradcheck_report *report);
/* PyTorch's gradgradcheck: checks the recorded second derivative.  With
 * y = fn(inputs) and a fixed random v of y's shape (itself an input), the
 * first derivative G(inputs, v) = d <y, v> / d inputs is computed with
 * create_graph and gradchecked: finite differences of G against the
 * backward through G's recording.  Same opts, report and statuses. */
ag_status ag_gradgradcheck(ag_gradcheck_fn fn, void *ctx, ag_tensor **inputs, int n,
                           const ag_gradcheck_opts *opts, ag_gradcheck_report *report);


/* ---- threads ------------------------------------------------------------ */

/* Threads used inside large kernels: tapegrad's own pool (below), which
 * every parallel kernel runs on; OpenBLAS, when built with it, is kept on
 * one thread and fed strips of a product by the pool, so the two never
 * spin against each other.  n <= 0 restores the default: every core,
 * which stays fast on a busy machine: idle workers spin ~60 us, then
 * sleep; work goes in chunks that a descheduled worker simply leaves to
 * the others; and while the pool measures no gain from its threads (the
 * caller waiting on a preempted worker) it runs on the caller alone for a
 * while, 20 ms to 1 s, then tries again.  At most 64.  Small ops always
 * run on one thread.  Results never depend on the count. */
void ag_set_num_threads(int n);
int  ag_get_num_threads(void);

/* The pool, for custom kernels as for the library's own: calls
 * fn(ctx, lo, hi) for each chunk [lo, hi) of [0, n) cut every `chunk`
 * elements (the last one shorter; chunk <= 0 means one chunk), each chunk
 * exactly once, on up to ag_get_num_threads() threads, the caller among
 * them, and returns when all have run.  Chunk boundaries depend on n and
 * chunk only, so a reduction that writes one partial per chunk and adds
 * them in chunk order gives the same bits for any thread count.  Runs
 * inline on the caller (chunks in order) with one thread, one chunk, from
 * inside fn or a task, or while another thread's call holds the pool.
 * AG_ERR_ARG, and nothing runs, for fn NULL, n < 0 or more than 2^32
 * chunks; n == 0 runs nothing. */
typedef void (*ag_parallel_fn)(void *ctx, int64_t lo, int64_t hi);
ag_status ag_parallel_for(int64_t n, int64_t chunk, ag_parallel_fn fn, void *ctx);

/* A background job for a pool thread, for work that overlaps the caller's
 * (the next minibatch while a step runs).  ag_task_start queues fn(ctx)
 * and returns its handle; it returns NULL and runs nothing (ag_last_error
 * says why) when fn is NULL or no pool thread would take it now: one
 * thread set, a call from inside the pool, the pool staying on one thread
 * for a while (ag_set_num_threads), or 4 tasks already queued.  Then the
 * caller does the work itself, when it needs it.  ag_task_wait returns
 * once the task has run (running it on the caller if no pool thread has
 * taken it yet) and frees the handle; NULL returns at once.  Wait for
 * every handle exactly once. */
typedef struct ag_task ag_task;
typedef void (*ag_task_fn)(void *ctx);
ag_task *ag_task_start(ag_task_fn fn, void *ctx);
void     ag_task_wait(ag_task *t);

/* ---- safetensors ----------------------------------------------------------
 * The file format of models and checkpoints: 8-byte little-endian header
 * length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
 * {key: value}}, then raw little-endian data.  Only F32 and F64 tensors. */

/* Writes n named tensors (names unique, not "__metadata__") and n_meta
 * string pairs to path atomically: a temporary file in the same folder
 * (path.tmp.PID.N) is written, flushed, fsynced and renamed over path, and
 * the folder fsynced, so a failure leaves an existing file whole and no
 * temporary.  Each save first removes the temporaries of path that killed
 * saves left (their process gone; never a running save's).  The header
 * lists the tensors in argument order; the data holds the F64 ones first,
 * then the F32 ones, so each is aligned to its dtype.  AG_ERR_ARG /
 * AG_ERR_IO. */
ag_status ag_safetensors_save(const char *path, int n, const char *const *names,
                              const ag_tensor *const *tensors, int n_meta,
                              const char *const *meta_keys,
                              const char *const *meta_values);

/* A loaded file: every tensor validated and copied into memory. */
typedef struct ag_safetensors ag_safetensors;
/* Validates the whole header (length cap, JSON, duplicate keys, dtypes,
 * shapes, overflow, contiguous offsets covering the data exactly) before
 * reading data; any valid file loads, aligned or not.  Only a regular file
 * (or a link to one) is opened: a folder, FIFO or device is AG_ERR_IO at
 * once.  Memory: a few hundred bytes a tensor beyond the header and data.
 * *out is NULL on failure: AG_ERR_IO (cannot read) or AG_ERR_FORMAT
 * (malformed), with the reason in ag_last_error().  The accessors below
 * take NULL (and an index out of range): NULL or 0, with the message. */
ag_status   ag_safetensors_load(const char *path, ag_safetensors **out);
void        ag_safetensors_free(ag_safetensors *f);              /* NULL ok */
int         ag_safetensors_count(const ag_safetensors *f);
/* Name of tensor i in file order (by data offset: in a file saved here,
 * the F64 tensors first). */
const char *ag_safetensors_name(const ag_safetensors *f, int i);
/* Borrowed tensor owned by f, or NULL when the name is absent. */
ag_tensor  *ag_safetensors_get(const ag_safetensors *f, const char *name);
/* Metadata value for key, or NULL. */
const char *ag_safetensors_meta(const ag_safetensors *f, const char *key);
int         ag_safetensors_meta_count(const ag_safetensors *f);
const char *ag_safetensors_meta_key(const ag_safetensors *f, int i);

/* ---- the gradient-interpretation report ----------------------------------
 * For a loss L and parameters w, dL/dw says how L moves when w moves: a
 * positive derivative means increasing w raises L, and w + p changes L by
 * about p * dL/dw while p is small enough for the linear picture to hold.
 * ag_explain lists the weights with the largest |dL/dw|, says so in words,
 * then checks each prediction by nudging the weight by +-p, re-evaluating
 * the loss, and reports the p where the first-order prediction stops
 * holding (relative error above tolerance).  It also prints per-tensor
 * gradient norms and the fraction of exactly-zero gradients (dead ReLUs). */
typedef struct ag_explain_opts {
    int top;              /* weights to list; 0: 10 (at most 64) */
    double say_step;      /* step used in the sentence; 0: 0.01 */
    int n_steps;          /* nudges to verify; 0: 1e-4, 1e-3, 1e-2, 1e-1 */
    double steps[8];
    double tolerance;     /* relative error where the prediction "breaks"; 0: 0.1 */
} ag_explain_opts;

typedef struct ag_explain_item {
    int param;            /* index into params */
    int64_t index;        /* flat element index */
    double grad;          /* dL/dw */
    int n_steps;
    double step[8];       /* p */
    double predicted[8];  /* p * dL/dw */
    double actual[8];     /* L(w + p) - L(w) */
    double actual_neg[8]; /* L(w - p) - L(w) */
    double rel_err[8];    /* max over +-p of |actual - predicted| / |predicted| */
    double breaks_at;     /* smallest p with rel_err > tolerance; 0 if none */
} ag_explain_item;

/* loss(tape, params, ctx) records a one-element loss.  Parameters are
 * restored exactly and their gradients left as they were.  items (may be
 * NULL; room for opts->top entries) receives the listed weights, most
 * important first, zeroed past the last; out (may be NULL) the report.  Returns AG_OK, or the loss function's error. */
ag_status ag_explain(ag_gradcheck_fn loss, void *ctx, ag_tensor **params, int n,
                     const ag_explain_opts *opts, ag_explain_item *items, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
