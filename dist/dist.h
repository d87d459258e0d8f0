/*
 * dist.h — data-parallel training over MPI (OpenMPI): every rank holds the
 * whole model, computes the gradient of its shard of each global batch,
 * and the gradients are summed over the ranks before every rank takes the
 * same optimizer step.  Built when meson finds MPI (feature `mpi`); link
 * with the MPI library (pkg-config ompi-c) and run under mpirun.
 *
 *   if (dist_init(&argc, &argv) != AG_OK) { ... ag_last_error() ... }
 *   int rank = dist_rank(), ranks = dist_size();
 *   ... build the model and optimizer the same way on every rank ...
 *   int n;  ag_tensor **p = nn_params_tensors(params, &n);
 *   dist_broadcast(p, n, 0);                          (rank 0's weights everywhere)
 *   dist_reducer *red = dist_reducer_new(p, n, NULL); (collective)
 *   for (each global batch of B samples) {
 *       optim_zero_grad(opt);
 *       ... rows [rank*B/ranks, (rank+1)*B/ranks) of the batch ...
 *       loss = sum over the shard's rows of the per-sample loss, times 1/B;
 *       dist_reducer_begin(red, tape);                (arms the hook)
 *       ag_backward(tape, loss);                      (buckets leave as they are ready)
 *       dist_reducer_wait(red);                       (gradients: the sum over ranks)
 *       optim_step(opt);  ag_tape_reset(tape);
 *   }
 *   dist_reducer_free(red);  dist_finalize();
 *
 * Or with the optimizer step sharded (ZeRO stage 1: each rank does 1/R of
 * it and the ranks exchange parameters instead of gradients; the same
 * bytes result): opts.update = a function calling optim_step_parts(opt,
 * lo, hi), and no optim_step after dist_reducer_wait, which takes the
 * step; dist_reducer_gather on the optimizer's state buffers before a
 * checkpoint (dist_reducer_opts.update).
 *
 * Sum, not mean.  dist_reducer_wait leaves in each gradient the SUM of the
 * ranks' gradients (opts.average divides it by the number of ranks
 * afterwards).  For the gradient of a loss that is a mean over the global
 * batch, let each rank's loss be its rows' SUM divided by the global batch
 * size B (above): the sum over ranks is then exactly the global mean's
 * gradient whatever the shard sizes, also when B does not divide evenly or
 * a last batch is short.  A rank's mean over its own rows, averaged over
 * the ranks, is the same only for equal shards.
 *
 * Determinism.  Each gradient element is summed in rank order,
 * ((g0 + g1) + g2) + ..., on every run and every rank: a bucket is cut into
 * one chunk per rank, rank j receives chunk j of every rank and adds them
 * up in rank order, then every rank receives every summed chunk (a
 * reduce-scatter and an allgather, 2 (R-1)/R of the bucket's bytes sent
 * and received per rank).  MPI's own reductions promise no order.  So R
 * ranks give parameters byte-identical to one process that computes the R
 * shard gradients (each from zero) and adds them in shard order, whatever
 * the bucket size, the timing or which buckets overlapped with backward.
 *
 * Transport.  When every rank runs on one machine (MPI's shared-memory
 * split holds them all) the reducer maps one POSIX shared-memory region
 * per rank and keeps the gradients (and, with opts.update, the
 * parameters) in it: rank j reads chunk j of every other rank's gradients
 * where they lie, sums in the same order, and the others copy the summed
 * (or updated) chunk from it; counters in the regions say which phase
 * each rank has reached, and each dist_reducer_wait ends when every rank
 * is done reading, so between steps the caller owns its tensors again.
 * No message, no copy into MPI's buffers.  Otherwise, or with
 * opts.no_shared_memory, or where the regions cannot be made (a full
 * /dev/shm), the chunks travel as MPI messages.  The bytes are the same.
 *
 * Overlap.  Buckets are formed from the parameters in reverse order (the
 * order backward finishes them when the array is in forward order, as
 * nn_params_tensors gives it), opts.bucket_bytes each.  dist_reducer_begin
 * sets the tape's gradient-ready hook (ag_tape_set_grad_ready): as soon as
 * backward has passed the last entry that adds into a bucket's gradients,
 * the bucket's exchange starts (nonblocking), and buckets in flight are
 * moved on at each later hook call.
 * dist_reducer_wait finishes them, so the optimizer step sees the sums.
 * From begin to wait the reducer owns the gradients: do not write them.
 * MPI moves a message on only inside MPI calls (no progress thread), so
 * what overlaps is what completes between two hook calls; the statistics
 * say how much of the reduction's cost stayed hidden.
 *
 * Errors.  Functions return an ag_status (or NULL) and set ag_last_error(),
 * naming the function and argument; an MPI failure is AG_ERR_IO with MPI's
 * message (the library's communicator returns errors, never aborts).  The
 * calls marked collective must be made by every rank in the same order;
 * their argument checks that depend on other ranks (tensor counts, shapes,
 * dtypes) fail on every rank together, so a mismatch is an error, never a
 * hang or a silent wrong sum.  Before dist_init every call but dist_rank and
 * dist_size is AG_ERR_STATE.
 *
 * Threads.  MPI is initialised with MPI_THREAD_FUNNELED: call dist_ from the
 * thread that called dist_init (OpenMP kernels may run on other threads).
 */
#ifndef TAPEGRAD_DIST_H
#define TAPEGRAD_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the process group ---- */

/* Initialises MPI (MPI_Init_thread, FUNNELED) unless the program already
 * did, and takes a private duplicate of MPI_COMM_WORLD for the library's
 * traffic.  argc and argv may both be NULL.  A second call before
 * dist_finalize, a call after MPI was finalized, or only one of argc/argv
 * NULL: AG_ERR_STATE / AG_ERR_ARG. */
ag_status dist_init(int *argc, char ***argv);
/* Frees the communicator and buffers and finalizes MPI if dist_init
 * initialised it.  Without dist_init: AG_OK, nothing to do.  Collective. */
ag_status dist_finalize(void);
/* This process's rank in [0, size), and the number of ranks; 0 and 1
 * outside dist_init .. dist_finalize (one process). */
int dist_rank(void);
int dist_size(void);

/* ---- collectives on tensors and values ---- */

/* Overwrites the data of t[0..n) on every rank with root's (tensors
 * persistent, f32 or f64; each rank passes its own, of the same shapes and
 * dtypes) and bumps their versions where they changed hands (ranks other
 * than root).  Collective.  AG_ERR_ARG for NULL t with n > 0, a NULL or tape
 * tensor, n < 0 or root outside [0, size); AG_ERR_SHAPE on every rank when
 * the ranks' counts, shapes or dtypes differ. */
ag_status dist_broadcast(ag_tensor *const *t, int n, int root);
/* v[0..n) becomes, on every rank, the sum over ranks of v in rank order
 * (v_0 + v_1) + v_2 ... (for losses and counters).  Collective.  AG_ERR_ARG
 * for NULL v with n > 0 or n < 0; AG_ERR_SHAPE on every rank when the
 * ranks' n differ. */
ag_status dist_sum_f64(double *v, int n);

/* ---- gradient reduction in buckets ---- */

typedef struct dist_reducer dist_reducer;

/* Bytes per bucket when dist_reducer_opts.bucket_bytes is 0: small enough
 * that the MLP's last layers leave before its first layer's gradient is
 * done, large enough that per-message latency stays small (docs/scaling.md). */
#define DIST_BUCKET_BYTES ((size_t)128 << 10)

typedef struct dist_reducer_opts {
    /* A bucket closes before the parameter that would take it past this
     * many bytes (a larger parameter is a bucket of its own) and at a
     * change of dtype; 0: DIST_BUCKET_BYTES.  Changes timing, never the
     * result. */
    size_t bucket_bytes;
    /* Divide each summed gradient by the number of ranks (after the sum,
     * in the gradient's dtype).  false (default): the sum. */
    bool average;
    /* Every probe_every-th step armed by dist_reducer_begin runs without
     * the hook (all buckets start in dist_reducer_wait), to measure what
     * the reduction costs when nothing hides it; 0: never.  Same result. */
    int probe_every;
    /* The optimizer step sharded over the ranks (ZeRO stage 1).  NULL
     * (default): dist_reducer_wait leaves the whole sum in every gradient
     * and the caller steps every parameter.  Set: dist_reducer_wait calls
     * update(update_ctx, lo, hi) once, after the reduce-scatter, with
     * lo[k], hi[k] the elements of params[k] (the caller's array) whose
     * sum this rank holds in the gradient (its chunks of the buckets; an
     * empty range where it holds none), for it to update those elements
     * and only those (optim_step_parts(opt, lo, hi), the parameters in the
     * optimizer's order = the reducer's); then the ranks exchange the
     * updated parameters instead of the summed gradients, so each does
     * 1/R of the optimizer's work and every rank ends with the same
     * parameters, byte for byte those of one optimizer step on the whole
     * sum (the optimizers update each element on its own).  After such a
     * wait a gradient holds the sum only in this rank's part, and the
     * optimizer's state is current only there: dist_reducer_gather
     * brings state buffers up to date (before a checkpoint).  An update
     * that fails returns its status from dist_reducer_wait on its rank;
     * the exchange still runs.  From begin to wait the reducer owns the
     * parameters too. */
    ag_status (*update)(void *update_ctx, const int64_t *lo, const int64_t *hi);
    void *update_ctx;
    /* When every rank runs on one machine the ranks exchange through
     * memory they share: the gradients (and, with update, the parameters)
     * then live in it (ag_tensor_set_storage, undone by dist_reducer_free),
     * and each rank reads the others' instead of receiving copies; the
     * same sums, byte for byte.  The parameters move at dist_reducer_new,
     * a gradient when its first step reaches it: no tape may hold views
     * of them then (an ag_reshape of a parameter recorded before the
     * reducer was made, say), and none may move them while it lives.
     * true: MPI messages all the same (for comparison, or where /dev/shm
     * is too small; without room there the reducer falls back to
     * messages by itself). */
    bool no_shared_memory;
} dist_reducer_opts;

/* A reducer for the gradients of params[0..n) (persistent, f32 or f64,
 * requires grad; an array in forward order, as nn_params_tensors gives
 * it; the array is copied, the tensors must outlive the reducer).  opts
 * NULL: all defaults.  Collective.  NULL with ag_last_error: AG_ERR_ARG
 * cases as dist_broadcast plus a parameter listed twice, one that does
 * not require grad, or a bucket of more than INT_MAX elements; AG_ERR_SHAPE
 * on every rank when the ranks' parameter lists differ in count, shape or
 * dtype; AG_ERR_STATE before dist_init. */
dist_reducer *dist_reducer_new(ag_tensor *const *params, int n, const dist_reducer_opts *opts);
/* Frees it (NULL: no-op).  Not collective; never call it with a step
 * begun and not waited for. */
void dist_reducer_free(dist_reducer *r);

/* Arms the reducer for the next ag_backward on tape (sets the tape's
 * gradient-ready hook, which dist_reducer_wait removes).  Call it after
 * the gradients were zeroed and before the backward whose gradients are
 * to be reduced (with gradient accumulation: before the last micro-batch's
 * backward only).  AG_ERR_ARG for NULL r or tape, AG_ERR_STATE when a step
 * is already armed. */
ag_status dist_reducer_begin(dist_reducer *r, ag_tape *tape);
/* Starts the buckets not started yet, finishes every exchange and writes
 * the sums (or averages) into the gradient buffers.  Without a
 * dist_reducer_begin before it, the whole reduction runs here (no
 * overlap).  Collective.  AG_ERR_ARG for NULL r; AG_ERR_STATE when a
 * parameter has no gradient buffer on this rank (a backward must reach
 * every parameter before the first wait; its bucket's sum is then dropped
 * on this rank only); AG_ERR_IO when MPI fails. */
ag_status dist_reducer_wait(dist_reducer *r);

/* With opts.update: t[k] (one tensor per parameter, in the caller's
 * order, each of its parameter's shape and dtype: the optimizer's state
 * buffers of one name, say) becomes on every rank the same, each
 * element taken from the rank that updated it.  Blocking; collective; not
 * between dist_reducer_begin and dist_reducer_wait.  AG_ERR_ARG for NULL
 * r or t, a NULL, tape or mismatched t[k]; AG_ERR_STATE without
 * opts.update or inside a step; AG_ERR_IO when MPI fails.  The argument
 * checks fail on every rank together. */
ag_status dist_reducer_gather(dist_reducer *r, ag_tensor *const *t);

typedef struct dist_reducer_stats {
    int buckets;            /* per step */
    int64_t bytes;          /* gradient bytes per step (all buckets) */
    int64_t steps;          /* waits after a dist_reducer_begin (hook armed) */
    int64_t early;          /* of their buckets, those started during backward */
    double wait_s;          /* seconds inside those waits (the exposed cost) */
    double flight_s;        /* seconds from their first bucket's start to wait */
    int64_t probe_steps;    /* waits without the hook (probes, or no begin) */
    double probe_wait_s;    /* seconds inside those waits (the unhidden cost) */
    double update_s;        /* seconds in opts.update (not in the waits above) */
    bool shared_memory;     /* the exchange goes through shared memory, not messages */
} dist_reducer_stats;
/* Counters since dist_reducer_new; zeros for NULL r (ag_last_error set).
 * The share of the reduction hidden behind backward is
 * 1 - (wait_s / steps) / (probe_wait_s / probe_steps). */
dist_reducer_stats dist_reducer_stats_get(const dist_reducer *r);

#ifdef __cplusplus
}
#endif
#endif
