/* autograd_internal.h — what the files of autograd/ share and nobody else
 * sees: the tensor and tape structs, the op table, arena and error helpers.
 * Dimension legend used in kernels: N = numel, D = ndim. */
#ifndef TAPEGRAD_AUTOGRAD_INTERNAL_H
#define TAPEGRAD_AUTOGRAD_INTERNAL_H

#include "autograd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Broken internal invariant: a bug in tapegrad, never a user mistake. */
#define AG_ASSERT(x)                                                          \
    do {                                                                      \
        if (!(x)) {                                                           \
            fprintf(stderr, "tapegrad: %s:%d: assertion failed: %s\n",        \
                    __FILE__, __LINE__, #x);                                  \
            abort();                                                          \
        }                                                                     \
    } while (0)

#define AG_ALIGN 64

/* Inlined into each caller, so a kernel instantiated per op kind (a
 * constant after inlining) folds its switch away. */
#define AG_INLINE static inline __attribute__((always_inline))
/* A loop gcc may vectorise though it cannot prove it safe (a select on a
 * compare is a blend, not a branch). */
#ifdef _OPENMP
#define AG_SIMD _Pragma("omp simd")
#else
#define AG_SIMD
#endif
/* A loop whose reductions (OP over the listed variables: + or max) may be
 * vectorised: partial results per lane, combined at the end (an order
 * fixed by the code, so the same bits on every run and thread count). */
#ifdef _OPENMP
#define AG_PRAGMA(x) _Pragma(#x)
#define AG_SIMD_REDUCE(OP, ...) AG_PRAGMA(omp simd reduction(OP : __VA_ARGS__))
#else
#define AG_SIMD_REDUCE(OP, ...)
#endif

struct ag_tensor {
    void *data;
    ag_tensor *grad;      /* persistent: heap; tape tensor: arena */
    ag_tape *tape;        /* NULL for persistent tensors */
    int64_t numel;
    int64_t shape[AG_MAX_DIMS];
    int ndim;
    ag_dtype dtype;
    bool requires_grad;   /* leaf flag, or "depends on a leaf that has it" */
    bool persistent;
    bool foreign;         /* persistent: data is the caller's (ag_tensor_set_storage) */
    char *name;           /* persistent only: heap copy, for graphs and reports */
    /* ag_gradients bookkeeping, valid while a sweep's id matches:
     * mark: x lies on a path from a wrt tensor (sweep id);
     * sgrad: a persistent tensor's gradient for that sweep only, on the
     * tape, so ag_gradients never touches the persistent buffer. */
    uint64_t mark, sgrad_id;
    ag_tensor *sgrad;
    uint64_t version;     /* persistent: bumped by every write (ag_tensor_mark_modified) */
    /* Tape tensor: the tape's generation when it was made (ag_check_live);
     * persistent: 0, which no generation is. */
    uint64_t gen;
    /* A view (reshape, squeeze, unsqueeze) of a persistent tensor, or of
     * such a view: that persistent tensor, whose data it shares, so the
     * version checks and checksums of an input are its (ag_version_src);
     * else NULL. */
    ag_tensor *base;
};

typedef struct ag_entry ag_entry;

/* One chunk of an arena.  Blocks are kept across resets and walked in
 * order, so a step that repeats the same requests reuses them all. */
typedef struct ag_block {
    struct ag_block *next;
    size_t size, used;
    unsigned char *mem;
} ag_block;

typedef struct ag_arena {
    ag_block *first, *cur;
    size_t reserved;          /* bytes held */
    size_t block_min;         /* smallest block it asks for */
} ag_arena;

struct ag_tape {
    /* Generation: unique over every tape and step of the process (a new
     * tape and every ag_tape_reset take the next one, never 0), carried by
     * each tape tensor (low 32 bits: by each ag_var), so one compare tells
     * a live input from one of another step or tape. */
    uint64_t gen;
    ag_arena arena;           /* data of tape tensors, index arrays, aux */
    /* Tape tensor headers, in a pair of arenas taken in turn by step
     * (heads[hpar]): a step never writes over the headers of the step
     * before it, so a tensor kept across one reset still shows its own,
     * stale generation.  Every header takes one fixed-size slot. */
    ag_arena heads[2];
    int hpar;
    ag_entry *entries;        /* heap array, kept across resets */
    int64_t n_entries, cap_entries;
    ag_status status;         /* first error, sticky until reset */
    char msg[512];
    bool grad_enabled;
    bool debug;               /* anomaly or profile on: ag_op_run calls the hooks */
    bool anomaly;
    const char *site;         /* call site of the next op (ag_tape_site / label) */
    int line;
    struct ag_profile *prof;  /* per-op times, when profiling */
    struct ag_scalar_tape *scalar; /* the scalar path's arrays, if used */
    /* The sweep of ag_gradients in progress (0: a plain ag_backward):
     * only tensors marked with this id get gradients, and persistent ones
     * get them in their sgrad slot. */
    uint64_t sweep_id;
    /* The gradient-ready hook (ag_tape_set_grad_ready) and the plan of
     * the ag_backward sweep about to run (ag_ready_plan_new; ag_sweep
     * takes it, so a nested sweep sees none). */
    ag_grad_ready_fn ready_fn;
    void *ready_ctx;
    struct ag_ready_plan *ready;
    /* Gradient checkpointing (checkpoint.c): the high-water mark of the
     * bytes in use, raised where they fall (a checkpoint dropping its
     * segment) and read as max(peak, in use now), so the bump path never
     * touches it; the arena a checkpoint stages its outputs in while it
     * drops the segment around them (empty between calls); the
     * generator its segments replay (ag_tape_set_checkpoint_rng). */
    size_t peak;
    ag_arena scratch;
    ag_rng *ckpt_rng;
    /* ag_checkpoint_save: while a checkpoint's fn first runs, the outputs
     * it keeps (collect); while one rebuilds, the kept outputs that
     * ag_op_run copies instead of running those ops' forwards (replay);
     * NULL otherwise. */
    struct ag_ckpt_saves *ckpt_collect, *ckpt_replay;
};

/* A sample case for the op-table gradcheck: persistent f64 inputs, the
 * function that applies the op to them, and small arguments it reads. */
typedef struct ag_op_sample {
    int n_in;
    ag_tensor *in[4];
    ag_gradcheck_fn fn;
    int64_t iarg[4];
    double farg[2];
} ag_op_sample;

typedef enum { AG_SAMPLE_RANGE, AG_SAMPLE_SIGNED } ag_sample_mode;
/* A persistent f64 tensor that requires grad, for samples: RANGE draws
 * uniform in [lo, hi]; SIGNED draws magnitudes in [lo, hi] with random
 * signs (clear of a kink at 0).  NULL on no memory. */
ag_tensor *ag_sample_tensor(ag_rng *rng, int ndim, const int64_t *shape,
                            ag_sample_mode mode, double lo, double hi);

/* One row of the op table: the op.
 * forward: computes e->out from e->in and the attributes;
 * backward (fast): raw kernels adding into the gradient buffers of the
 *   inputs that need them (ag_grad_data), for first-order sweeps;
 * vjp (recorded): the same vector-Jacobian product written with ag_ ops:
 *   given gout = dL/dout (a tape tensor of out's shape), sets gin[k] to
 *   dL/din[k] (a tape tensor of in[k]'s shape) for each k with
 *   ag_needs_grad(tape, e->in[k]), leaving the others NULL.  Its ops are
 *   recorded, so the result can be differentiated again.  NULL for an op
 *   whose output never carries a gradient (argmax);
 * sample: fills case `which` (false past the last case). */
typedef struct ag_op_def {
    const char *name;
    /* Its forward writes out and nothing its backward reads besides the
     * inputs and out (no aux): a checkpoint may keep out from its first
     * run instead of running the op again (ag_checkpoint_save). */
    bool saveable;
    void (*forward)(ag_entry *e);
    void (*backward)(ag_tape *tape, ag_entry *e);
    bool (*sample)(int which, ag_rng *rng, ag_op_sample *s);
    void (*vjp)(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin);
} ag_op_def;

/* Room for an op's typed attributes, kept inside its entry (no arena
 * request per op).  Read them with AG_ATTR(e, type). */
#define AG_ATTR_BYTES 64
typedef union ag_attr {
    unsigned char bytes[AG_ATTR_BYTES];
    int64_t i;
    double d;
    void *p;
} ag_attr;
#define AG_ATTR(e, T) ((const T *)(const void *)(e)->attr.bytes)

struct ag_entry {
    const ag_op_def *op;
    ag_tensor *out;
    ag_tensor **in;      /* n_in pointers, in the arena */
    int n_in;
    ag_attr attr;        /* the op's typed attributes (AG_ATTR) */
    void *aux;           /* arena: saved values, index arrays, ... */
    uint64_t *ver;       /* arena: in[k]'s version when recorded (n_in), or
                          * NULL when no input is persistent */
    uint64_t *sum;       /* anomaly mode: checksums of the persistent inputs' data
                          * when recorded (n_in; 0 for tape inputs), else NULL */
    int64_t smark;       /* scalar ops recorded before this entry */
    const char *site;    /* anomaly mode: call site file or label, else NULL */
    int line;
};


/* ---- errors ---- */
/* Keeps the first error on the tape; returns NULL for `return ag_fail(...)`. */
void *ag_fail(ag_tape *tape, ag_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Whether the tape holds no error; else sets ag_last_error to
 * "fn: the tape holds an earlier error: <it>" (so every refused call says
 * why, not only the first) and returns false. */
bool ag_tape_ok(const ag_tape *tape, const char *fn);

/* ---- arena ---- */
/* Aligned, uninitialised memory that lives until ag_tape_reset; NULL (and
 * an AG_ERR_NOMEM kept on the tape) on failure. */
void *ag_arena_alloc(ag_tape *tape, size_t size);
void *ag_arena_calloc(ag_tape *tape, size_t size);
/* The same with a smaller power-of-two alignment, for small records. */
void *ag_arena_alloc_align(ag_tape *tape, size_t size, size_t align);
/* The arena functions' slow path (a new or next block, size a multiple of
 * AG_ALIGN); NULL with AG_ERR_NOMEM kept on failure. */
void *ag_arena_next_block(ag_tape *tape, ag_arena *a, size_t size);
/* The bump allocation itself, inlined where it counts. */
AG_INLINE void *ag_arena_take(ag_tape *tape, ag_arena *a, size_t size, size_t align)
{
    ag_block *b = a->cur;
    if (b) {
        size_t at = (b->used + align - 1) & ~(align - 1);
        if (at + size <= b->size) {
            b->used = at + size;
            return b->mem + at;
        }
    }
    return ag_arena_next_block(tape, a, (size + AG_ALIGN - 1) / AG_ALIGN * AG_ALIGN);
}
/* A tape tensor's header slot (uninitialised), on this step's side of the
 * header arenas; NULL (and AG_ERR_NOMEM kept) on failure.  The slot size
 * is a multiple of AG_ALIGN, so both paths of ag_arena_take give the same
 * slots: a header lies exactly where one of an earlier step on the same
 * side lay, never across one. */
#define AG_HEADER_BYTES ((sizeof(ag_tensor) + AG_ALIGN - 1) / AG_ALIGN * AG_ALIGN)
AG_INLINE ag_tensor *ag_arena_header(ag_tape *tape)
{
    return ag_arena_take(tape, &tape->heads[tape->hpar], AG_HEADER_BYTES, AG_ALIGN);
}

/* ---- tensors ---- */
/* Tape tensor with uninitialised data. */
ag_tensor *ag_tensor_tape(ag_tape *tape, ag_dtype dt, int ndim, const int64_t *shape);
/* A tape tensor header of the given shape (of.numel elements) over of's
 * data: a view, its base set from of. */
ag_tensor *ag_tensor_view(ag_tape *tape, ag_tensor *of, int ndim, const int64_t *shape);
/* The tensor whose version and data checksum stand for x's: the
 * persistent tensor a view shares its data with, else x. */
static inline const ag_tensor *ag_version_src(const ag_tensor *x)
{
    return x->base ? x->base : x;
}
bool    ag_shape_valid(int ndim, const int64_t *shape, int64_t *numel);
bool    ag_same_shape(const ag_tensor *a, const ag_tensor *b);
/* Formats a shape as "[2,3]". */
char   *ag_fmt_shape(char *buf, size_t n, int ndim, const int64_t *shape);

/* ---- recording ---- */
/* Checks that each input is non-NULL and persistent or a live tensor of
 * this tape (this step).  On failure keeps AG_ERR_NULL / AG_ERR_STATE
 * naming `op` and the input (#1 first) and returns false. */
bool ag_check_inputs(ag_tape *tape, const char *op, int n, ag_tensor *const *in);
/* Whether x (non-NULL) is persistent or a tensor of this tape and step:
 * one compare. */
static inline bool ag_is_live(const ag_tape *tape, const ag_tensor *x)
{
    return x->gen == tape->gen || x->gen == 0;
}
/* The same check for an argument of fn that is not an op input (a root,
 * seed, wrt): x NULL keeps AG_ERR_NULL, a dead x AG_ERR_STATE, both naming
 * fn and arg (`ag_backward: root is ...`); returns false then. */
bool ag_check_live(ag_tape *tape, const ag_tensor *x, const char *fn, const char *arg);
/* Whether entry e's inputs still hold what was recorded (the version each
 * had then, and in anomaly mode the checksum of a persistent input's
 * data); else keeps AG_ERR_STATE naming fn, the input and the op and
 * returns false.  Backward sweeps call it before each entry they run
 * that has e->ver (the only entries with persistent inputs). */
bool ag_entry_inputs_unchanged(ag_tape *tape, const ag_entry *e, const char *fn);
bool ag_check_same_dtype(ag_tape *tape, const char *op, const ag_tensor *a,
                         const ag_tensor *b);
/* Normalises an axis (negative counts from the end) into [0, ndim); keeps
 * AG_ERR_ARG and returns false when out of range. */
bool ag_check_axis(ag_tape *tape, const char *op, int ndim, int *axis);
/* Runs an op: allocates the output (a tape tensor of dtype/shape), fills an
 * entry for `def` (inputs copied to the arena, attributes, aux of
 * aux_bytes zeroed arena bytes when > 0), calls def->forward, and records
 * the entry when grad is enabled and some input requires grad.  Returns
 * the output, or NULL with the error kept on the tape.  Shape and argument
 * checks are the caller's, before this call. */
typedef struct ag_op_call {
    const ag_op_def *def;
    ag_tensor *const *in;
    int n_in;
    ag_dtype dtype;
    int ndim;
    const int64_t *shape;
    const void *attr;    /* the op's attribute struct, copied into the entry */
    size_t attr_size;    /* <= AG_ATTR_BYTES */
    void *aux;           /* used as is when aux_bytes == 0 */
    size_t aux_bytes;
    /* A view: the output shares this input's data (no data allocated; the
     * row's forward writes nothing) and is counted as persistent data
     * when it is persistent or a view of one (ag_tensor.base). */
    ag_tensor *view;
} ag_op_call;
ag_tensor *ag_op_run(ag_tape *tape, const ag_op_call *c);

/* Gradient buffer of x during backward: allocated zeroed on first use, or
 * NULL when x needs no gradient (then skip it). */
void *ag_grad_data(ag_tape *tape, ag_tensor *x);
/* The same for a backward that can store its whole contribution rather
 * than add it: *fresh = true when the buffer is new and unwritten (NaN in
 * anomaly mode), and the caller must then write every element; false
 * when it holds a gradient already (add to it).  Saves a memset and a
 * read of the buffer: both were 5% of a CNN step (relu, max pooling). */
void *ag_grad_out(ag_tape *tape, ag_tensor *x, bool *fresh);
/* The same as a tensor (x's shape and dtype). */
ag_tensor *ag_grad_tensor(ag_tape *tape, ag_tensor *x);
/* x's gradient in the sweep in progress without allocating one: NULL
 * when none has reached it yet or x needs none. */
ag_tensor *ag_grad_peek(const ag_tape *tape, const ag_tensor *x);
/* Whether the sweep in progress wants a gradient for x (the test both
 * ag_grad_data and the recorded derivatives use). */
bool ag_needs_grad(const ag_tape *tape, const ag_tensor *x);

/* ---- recorded derivatives: helpers for vjp functions ---- */
/* g summed down to like's shape over the dims where like broadcast (g
 * itself when the shapes agree); recorded, its derivative is ag_expand. */
ag_tensor *ag_sum_to(ag_tape *tape, ag_tensor *g, const ag_tensor *like);
/* A constant tape tensor (never requires grad) of dtype/shape, filled by
 * fill(ctx, i) for each flat index i: masks and other factors a
 * derivative treats as constant (relu's x > 0). */
ag_tensor *ag_const_fill(ag_tape *tape, ag_dtype dt, int ndim, const int64_t *shape,
                         double (*fill)(const void *ctx, int64_t i), const void *ctx);
/* A constant tape tensor of x's dtype and shape holding v everywhere. */
ag_tensor *ag_const_like(ag_tape *tape, const ag_tensor *x, double v);

/* ---- anomaly mode and profiling (debug.c) ---- */
typedef struct ag_debug_mark {
    double t0;
    size_t bytes0;
} ag_debug_mark;
ag_debug_mark ag_debug_begin(const ag_tape *tape);
/* After an op's forward: profile, site, NaN/Inf check of the output. */
void ag_debug_forward(ag_tape *tape, ag_entry *e, ag_debug_mark m);
/* Runs e's backward with timing and the NaN/Inf check of its gradients. */
void ag_debug_backward(ag_tape *tape, ag_entry *e);

/* ---- threads (threads.c) ---- */
/* Elementwise kernels over at least AG_PAR_MIN elements go to the thread
 * pool, AG_PAR_CHUNK elements a chunk; below that a wake-up costs more
 * than it saves (a chunk of relu is ~2 us, a pool round trip ~1-2 us
 * with the workers spinning). */
#define AG_PAR_MIN ((int64_t)1 << 16)
#define AG_PAR_CHUNK ((int64_t)1 << 14)
/* Whether ag_parallel_for called now from this thread would use more
 * than this thread (false: one thread set, a nested call, or the pool
 * staying on one thread for a while): a kernel whose split costs extra
 * work (the GEMM's strips pack their operands twice) does it whole. */
bool ag_pool_would_thread(void);
/* false: the pool never falls back to one thread when it measures no gain
 * (threads.c), so tests exercise the threads whatever the machine's load;
 * true (the default) restores that policy. */
void ag_pool_adapt(bool on);
/* fn(ctx, 0, n) on the caller when n < AG_PAR_MIN, else the pool. */
static inline void ag_par_elems(int64_t n, ag_parallel_fn fn, void *ctx)
{
    if (n < AG_PAR_MIN)
        fn(ctx, 0, n);
    else
        ag_parallel_for(n, AG_PAR_CHUNK, fn, ctx);
}

/* ---- the scalar path (scalar.c) ---- */
/* Reverse sweep of scalar ops [lo, hi), adjoints already seeded. */
void ag_scalar_reverse(ag_tape *tape, int64_t lo, int64_t hi);
/* Allocates and zeroes the adjoints of the first n scalar ops. */
bool ag_scalar_adjoints_clear(ag_tape *tape, int64_t n);
int64_t ag_scalar_count(const ag_tape *tape);
/* Forgets every scalar op; new vars carry the tape's (new) generation. */
void ag_scalar_reset(ag_tape *tape);
void ag_scalar_free(ag_tape *tape);
/* The whole interleaved reverse sweep over tensor entries [0, e_end) and
 * scalar ops [0, s_end), once the root's gradient is seeded; fn (the
 * public call) names an error. */
void ag_sweep(ag_tape *tape, int64_t e_end, int64_t s_end, const char *fn);

/* ---- the gradient-ready hook (grad.c) ---- */
/* The persistent leaves that require grad read by entries [0, end), each
 * with the index of the earliest entry reading it, in that order (at[]
 * ascending); the sweep fires them from the end.  In the arena. */
typedef struct ag_ready_plan {
    ag_grad_ready_fn fn;
    void *ctx;
    ag_tensor **leaf;
    int64_t *at;
    int64_t n;            /* items [0, n) not fired yet */
} ag_ready_plan;
/* The plan for the hook set on the tape; NULL with AG_ERR_NOMEM kept. */
ag_ready_plan *ag_ready_plan_new(ag_tape *tape, int64_t end);
/* Fires the leaves whose earliest reader is entry i (i < 0: all left);
 * returns the entry index of the next firing, or -1 when none is left. */
int64_t ag_ready_fire(ag_tape *tape, ag_ready_plan *p, int64_t i);

/* ---- gradient checkpointing: going back on the tape (tape.c, grad.c) ----
 * A checkpoint runs its segment, then forgets it: the entries and the tape
 * tensors made since a mark, whose memory the next requests take again. */
typedef struct ag_arena_mark {
    ag_block *block;          /* the arena's cur then (NULL: nothing taken) */
    size_t used;
} ag_arena_mark;
typedef struct ag_tape_mark {
    int64_t n_entries;
    ag_arena_mark data, heads;  /* the arena, this step's header arena */
} ag_tape_mark;
ag_arena_mark ag_arena_mark_now(const ag_arena *a);
/* Back to m: what was taken since is free again. */
void ag_arena_rollback(ag_arena *a, ag_arena_mark m);
ag_tape_mark ag_tape_mark_now(const ag_tape *tape);
/* Forgets every entry and tape tensor made since m, after raising the
 * peak to the bytes in use. */
void ag_tape_rollback(ag_tape *tape, const ag_tape_mark *m);
/* Whether x, a live tensor of this tape, was made since m (persistent
 * tensors never were): its header lies past the mark. */
bool ag_tape_made_since(const ag_tape *tape, const ag_tape_mark *m, const ag_tensor *x);
/* Raises the peak to the bytes in use now. */
void ag_tape_note_peak(ag_tape *tape);
/* The fast sweep over entries [lo, hi) alone (no scalar ops, no
 * gradient-ready hook): a checkpoint's rebuilt segment. */
void ag_sweep_range(ag_tape *tape, int64_t lo, int64_t hi, const char *fn);
/* ag_gradients' marking of the tensors on a path from its wrt tensors,
 * and its recorded sweep, over entries [lo, hi) alone, in the sweep in
 * progress (tape->sweep_id): a checkpoint's rebuilt segment. */
void ag_mark_range(ag_tape *tape, int64_t lo, int64_t hi);
void ag_sweep_recorded_range(ag_tape *tape, int64_t lo, int64_t hi);
/* The entries a checkpoint records (checkpoint.c): the anomaly checks
 * skip them, as every op of their segment is checked itself. */
bool ag_is_checkpoint_op(const ag_op_def *d);
extern const ag_op_def ag_op_checkpoint_steps;  /* checkpoint_steps.c */
/* A checkpoint's kept output: a tape tensor of head's dtype and shape
 * holding a copy of data, recorded on token (the checkpoint entry's
 * output, or NULL) when both need gradients, so its gradient wakes the
 * checkpoint entry; NULL with the error kept. */
ag_tensor *ag_ckpt_keep(ag_tape *t, ag_tensor *token, const ag_tensor *head, const void *data);
bool ag_ckpt_listed(ag_tensor *const *list, int n, const ag_tensor *x);
/* While a checkpoint rebuilds (tape->ckpt_replay): when e, the entry just
 * appended, is in the place of an output ag_checkpoint_save kept, copies
 * it into e->out and returns 1 (the op's forward is not run); 0 when e
 * is no such entry; -1 with AG_ERR_STATE kept when the op there is not
 * the one that was saved. */
int ag_ckpt_copy_kept(ag_tape *t, ag_entry *e);
/* The profiler around a checkpoint (debug.c).  hold: profiling off while
 * a segment is re-run in backward (that forward is the checkpoint's
 * backward time, not a second forward of its ops); gives back what
 * release restores.  bytes_save / bytes_restore: the per-op bytes before
 * fn runs, put back once its segment is dropped (its ops hold no tape
 * bytes then); save returns NULL when not profiling (restore ignores it)
 * or on no memory (kept on the tape). */
struct ag_profile *ag_debug_profile_hold(ag_tape *tape);
void ag_debug_profile_release(ag_tape *tape, struct ag_profile *p);
int64_t *ag_debug_bytes_save(ag_tape *tape);
void ag_debug_bytes_restore(ag_tape *tape, const int64_t *saved);

/* ---- axis reductions ---- */
/* x viewed as (outer, k, inner) around axis (k = the axis; axis < 0: all
 * elements, as (1, numel, 1)). */
typedef struct ag_axis_view {
    int64_t outer, k, inner;
} ag_axis_view;
ag_axis_view ag_axis_view_of(const ag_tensor *x, int axis);

/* ---- broadcasting ---- */
/* Result shape of broadcasting a and b; false (with an error kept naming
 * op and both shapes) if they do not broadcast. */
bool ag_broadcast_shape(ag_tape *tape, const char *op, const ag_tensor *a,
                        const ag_tensor *b, int *ndim, int64_t *shape);
/* Element strides of x viewed in an output of shape (ndim, shape): 0 on
 * broadcast dims. */
void ag_broadcast_strides(const ag_tensor *x, int ndim, const int64_t *shape,
                          int64_t *strides);
/* Calls row(ctx, out_offset, operand_offsets, operand_inner_strides, n)
 * once per innermost row of a result of shape (ndim, shape), for up to 4
 * operands with the given strides (from ag_broadcast_strides). */
typedef void (*ag_bcast_row)(void *ctx, int64_t out_off, const int64_t *off,
                             const int64_t *inner_stride, int64_t n);
void ag_bcast_walk(int ndim, const int64_t *shape, int n_ops, const int64_t *const *strides,
                   ag_bcast_row row, void *ctx);
/* dst (shape of x) += src (out shape) summed over the broadcast dims. */
void ag_reduce_into(void *dst, const ag_tensor *x, const void *src, ag_dtype dt,
                    int ndim, const int64_t *shape);

/* ---- the op table ---- */
typedef enum ag_op_id {
#define AG_OP(id, def) AG_OP_##id,
#include "ops_list.h"
#undef AG_OP
    AG_OP_COUNT
} ag_op_id;

extern const ag_op_def *const ag_op_table[AG_OP_COUNT];
#define AG_OP(id, def) extern const ag_op_def def;
#include "ops_list.h"
#undef AG_OP

#endif
