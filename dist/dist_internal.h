/* dist_internal.h — what comm.c and reducer.c share: the process group and
 * the error and agreement helpers. */
#ifndef TAPEGRAD_DIST_INTERNAL_H
#define TAPEGRAD_DIST_INTERNAL_H

#include <mpi.h>

#include "dist.h"

typedef struct dist_world {
    bool up;              /* between dist_init and dist_finalize */
    bool own_mpi;         /* dist_init called MPI_Init_thread */
    MPI_Comm comm;        /* a duplicate of MPI_COMM_WORLD: our traffic only */
    int rank, size;
    bool crowded;         /* more ranks on this machine than cores online */
    bool one_node;        /* every rank on this machine */
    double *gather;       /* dist_sum_f64's buffer (size * cap values), kept */
    int64_t gather_cap;
} dist_world;

extern dist_world dist_w;

/* MPI_Waitall that lets others have the core while it waits: MPI_Testall
 * in a loop for 100 us, then between tests sched_yield (another runnable
 * process on this core runs first; none: the test comes straight back).
 * Where the machine has more ranks than cores (crowded), a sleep from 20
 * us doubling up to 200 us instead, so that the rank waited for gets the
 * core.  Not sleeping otherwise matters: a message moves only inside MPI
 * calls on both sides, and a sleep overshoots by tens of microseconds at
 * every phase (on a 2-core Xeon of 2026-12-02 the MLP's allreduce wait was
 * 0.68-0.89 ms a step with the sleeps and 0.11-0.28 ms without). */
int dist_wait_all(int n, MPI_Request *req);
/* One turn of such a wait begun at t0 (MPI_Wtime): nothing for the first
 * 100 us, then a sched_yield, or when crowded a nap (*nap ns, starting at
 * 20000, doubled up to 200000). */
void dist_pause(double t0, long *nap);
#define DIST_NAP_START 20000

/* x up to a multiple of 64 (a cache line, AG_ALIGN). */
static inline size_t dist_round64(size_t x) { return (x + 63) / 64 * 64; }

/* ---- memory shared by the ranks of one machine (node.c) ----
 * Each rank maps a region of its own read-write and every other rank's
 * read-only; a region starts with nflags counters (the step a rank has
 * reached in each phase) that only its rank writes. */
typedef struct dist_node dist_node;
/* Collective.  NULL on every rank, with ag_last_error saying why, when a
 * rank could not map (no /dev/shm, no space: the caller falls back to
 * messages). */
dist_node *dist_node_open(size_t bytes, int nflags);
void dist_node_close(dist_node *nd);              /* NULL: no-op; not collective */
/* Rank q's region past the counters (q == dist_w.rank: the writable one),
 * aligned to 64 bytes. */
void *dist_node_base(const dist_node *nd, int q);
/* This rank's number when it opened nd (dist_w's is gone after dist_finalize). */
int dist_node_rank(const dist_node *nd);
/* Counter f of this rank becomes v, after every write before it. */
void dist_node_publish(dist_node *nd, int f, uint64_t v);
/* Whether every other rank's counter f is >= v (its writes before it then
 * visible); dist_node_wait spins (dist_pause) until it is. */
bool dist_node_reached(const dist_node *nd, int f, uint64_t v);
void dist_node_wait(const dist_node *nd, int f, uint64_t v);
/* AG_ERR_IO with ag_last_error "fn: call failed: <MPI's message>". */
ag_status dist_mpi_fail(const char *fn, const char *call, int rc);
/* Whether dist_init has run; else AG_ERR_STATE kept in ag_last_error. */
bool dist_check_up(const char *fn);
/* The MPI type of a tensor dtype (MPI_DATATYPE_NULL for others). */
MPI_Datatype dist_mpi_type(ag_dtype dt);

/* Collective agreement: every rank passes a 64-bit summary of its
 * arguments (sig) and whether it accepted them locally (ok; when not, the
 * caller already set ag_last_error).  AG_OK on every rank when all
 * accepted and all sigs are equal; otherwise the same failure on every rank
 * (the refusing rank keeps its own message, AG_ERR_ARG; the others get
 * AG_ERR_ARG naming fn, or AG_ERR_SHAPE with `what` when only the sigs
 * differ). */
ag_status dist_agree(const char *fn, uint64_t sig, bool ok, ag_status local,
                     const char *what);
/* One more value into a 64-bit summary. */
uint64_t dist_sig_mix(uint64_t h, uint64_t v);
/* A summary of tensors' count, dtypes and shapes for dist_agree. */
uint64_t dist_layout_sig(ag_tensor *const *t, int n);
/* Local checks of a tensor array argument `arg` of fn: n >= 0, t non-NULL
 * when n > 0, each t[i] non-NULL, persistent, f32 or f64.  AG_OK or
 * AG_ERR_ARG with ag_last_error naming fn and arg[i]. */
ag_status dist_check_tensors(const char *fn, const char *arg, ag_tensor *const *t, int n);

#endif
