/* tape.c — the arena, the append-only entry list, recording an op, and the
 * reverse sweep.  The entry list is in execution order, so walking it
 * backwards is a valid topological order: no sort, no recursion. */
#include "autograd_internal.h"

#include <stdatomic.h>

#define BLOCK_MIN ((size_t)1 << 20)
#define HEAD_BLOCK_MIN ((size_t)64 << 10)

/* The next generation of any tape: unique in the process, and never 0 in
 * its low 32 bits (which ag_var carries). */
static uint64_t gen_next(void)
{
    static _Atomic uint64_t counter;
    uint64_t g;
    do
        g = atomic_fetch_add(&counter, 1) + 1;
    while ((uint32_t)g == 0);
    return g;
}

ag_tape *ag_tape_new(void)
{
    ag_tape *t = ag_mem_calloc(sizeof *t);
    if (!t) {
        ag_set_last_error("ag_tape_new: out of memory");
        return NULL;
    }
    t->gen = gen_next();
    t->arena.block_min = BLOCK_MIN;
    t->heads[0].block_min = t->heads[1].block_min = HEAD_BLOCK_MIN;
    t->scratch.block_min = HEAD_BLOCK_MIN;
    t->grad_enabled = true;
    return t;
}

static void arena_free(ag_arena *a)
{
    for (ag_block *b = a->first, *next; b; b = next) {
        next = b->next;
        ag_mem_free(b);
    }
}

static void arena_rewind(ag_arena *a)
{
    a->cur = a->first;
    if (a->cur)
        a->cur->used = 0;
}

static size_t arena_used(const ag_arena *a)
{
    size_t n = 0;
    if (!a->cur)
        return 0;
    for (ag_block *b = a->first; b != a->cur; b = b->next)
        n += b->size;
    return n + a->cur->used;
}

void ag_tape_free(ag_tape *tape)
{
    if (!tape)
        return;
    arena_free(&tape->arena);
    arena_free(&tape->heads[0]);
    arena_free(&tape->heads[1]);
    arena_free(&tape->scratch);
    ag_mem_free(tape->entries);
    ag_mem_free(tape->prof);
    ag_scalar_free(tape);
    ag_mem_free(tape);
}

void ag_tape_reset(ag_tape *tape)
{
    if (!tape)
        return;
    tape->gen = gen_next();
    tape->hpar ^= 1;
    arena_rewind(&tape->arena);
    arena_rewind(&tape->heads[tape->hpar]); /* the headers of two steps ago */
    arena_rewind(&tape->scratch);
    tape->n_entries = 0;
    tape->peak = 0;
    ag_scalar_reset(tape);
    tape->status = AG_OK;
    tape->msg[0] = '\0';
}

void ag_tape_set_grad_enabled(ag_tape *tape, bool on)
{
    if (tape)
        tape->grad_enabled = on;
}

/* For the accessors: false, with ag_last_error naming fn, for a NULL tape. */
static bool present(const ag_tape *tape, const char *fn)
{
    if (!tape)
        ag_set_last_error("%s: tape is NULL", fn);
    return tape != NULL;
}

bool ag_tape_grad_enabled(const ag_tape *tape)
{
    return present(tape, "ag_tape_grad_enabled") && tape->grad_enabled;
}
ag_status ag_tape_status(const ag_tape *tape) { return tape ? tape->status : AG_ERR_ARG; }
int64_t ag_tape_entries(const ag_tape *tape)
{
    return present(tape, "ag_tape_entries") ? tape->n_entries : 0;
}
size_t ag_tape_bytes_reserved(const ag_tape *tape)
{
    if (!present(tape, "ag_tape_bytes_reserved"))
        return 0;
    return tape->arena.reserved + tape->heads[0].reserved + tape->heads[1].reserved +
           tape->scratch.reserved;
}

const char *ag_tape_error(const ag_tape *tape)
{
    if (!tape)
        return "tape is NULL";
    return tape->status == AG_OK ? NULL : tape->msg;
}

/* This step's: the data arena, its side of the headers, a checkpoint's
 * staged outputs. */
static size_t in_use(const ag_tape *tape)
{
    return arena_used(&tape->arena) + arena_used(&tape->heads[tape->hpar]) +
           arena_used(&tape->scratch);
}

size_t ag_tape_bytes_used(const ag_tape *tape)
{
    return present(tape, "ag_tape_bytes_used") ? in_use(tape) : 0;
}

/* In use only grows between the points that lower it (reset, a
 * checkpoint's rollback), and those raise the peak first. */
size_t ag_tape_bytes_peak(const ag_tape *tape)
{
    if (!present(tape, "ag_tape_bytes_peak"))
        return 0;
    size_t now = in_use(tape);
    return tape->peak > now ? tape->peak : now;
}

void ag_tape_note_peak(ag_tape *tape)
{
    size_t now = in_use(tape);
    if (now > tape->peak)
        tape->peak = now;
}

void *ag_fail(ag_tape *tape, ag_status s, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ag_set_last_error("%s", buf);
    if (tape && tape->status == AG_OK) {
        tape->status = s;
        memcpy(tape->msg, buf, sizeof buf);
    }
    return NULL;
}

bool ag_tape_ok(const ag_tape *tape, const char *fn)
{
    if (tape->status == AG_OK)
        return true;
    ag_set_last_error("%s: the tape holds an earlier error: %s", fn, tape->msg);
    return false;
}

void *ag_tape_fail(ag_tape *tape, ag_status s, const char *fmt, ...)
{
    if (!fmt)
        return ag_fail(tape, s, "ag_tape_fail: fmt is NULL");
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return ag_fail(tape, s, "%s", buf);
}

/* ---- arena ---- */

static ag_block *block_new(size_t size)
{
    size_t head = (sizeof(ag_block) + AG_ALIGN - 1) / AG_ALIGN * AG_ALIGN;
    ag_block *b = ag_mem_alloc(head + size);
    if (!b)
        return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    b->mem = (unsigned char *)b + head;
    return b;
}

/* The other side of a header arena grows with it (a block of the same
 * size at its end), so the step after the first allocates nothing
 * either.  Best effort: a side that could not grow now grows when used. */
static void twin_grow(ag_tape *tape, const ag_arena *a, size_t size)
{
    ag_arena *twin = a == &tape->heads[0] ? &tape->heads[1]
                   : a == &tape->heads[1] ? &tape->heads[0] : NULL;
    if (!twin || twin->reserved >= a->reserved)
        return;
    ag_block *nb = block_new(size), **end = &twin->first;
    if (!nb)
        return;
    while (*end)
        end = &(*end)->next;
    *end = nb;
    twin->reserved += size;
}

/* Slow path: moves on to the blocks an earlier step left behind, and
 * appends a new block only when none of them fits. */
void *ag_arena_next_block(ag_tape *tape, ag_arena *a, size_t size)
{
    ag_block *b = a->cur;
    while (b && b->next) {
        b = b->next;
        b->used = 0;
        if (b->size >= size)
            break;
    }
    if (!b || b->size - b->used < size) {
        size_t want = a->reserved > a->block_min ? a->reserved : a->block_min;
        if (want < size)
            want = size;
        ag_block *nb = block_new(want);
        if (!nb)
            return ag_fail(tape, AG_ERR_NOMEM, "tape arena: out of memory for %zu bytes",
                           size);
        a->reserved += want;
        if (b) {
            nb->next = b->next;
            b->next = nb;
        } else {
            a->first = nb;
        }
        b = nb;
        twin_grow(tape, a, want);
    }
    a->cur = b;
    void *p = b->mem + b->used;
    b->used += size;
    return p;
}

void *ag_arena_alloc_align(ag_tape *tape, size_t size, size_t align)
{
    return ag_arena_take(tape, &tape->arena, size, align);
}

void *ag_arena_alloc(ag_tape *tape, size_t size)
{
    return ag_arena_alloc_align(tape, size ? size : 1, AG_ALIGN);
}

void *ag_arena_calloc(ag_tape *tape, size_t size)
{
    void *p = ag_arena_alloc(tape, size);
    if (p)
        memset(p, 0, size);
    return p;
}

/* ---- going back: a checkpoint forgets its segment ---- */

ag_arena_mark ag_arena_mark_now(const ag_arena *a)
{
    return (ag_arena_mark){a->cur, a->cur ? a->cur->used : 0};
}

/* The blocks past the mark keep their stale `used`: the slow path zeroes
 * it when it moves on to one. */
void ag_arena_rollback(ag_arena *a, ag_arena_mark m)
{
    if (!m.block) {
        arena_rewind(a);
        return;
    }
    a->cur = m.block;
    m.block->used = m.used;
}

ag_tape_mark ag_tape_mark_now(const ag_tape *tape)
{
    return (ag_tape_mark){tape->n_entries, ag_arena_mark_now(&tape->arena),
                          ag_arena_mark_now(&tape->heads[tape->hpar])};
}

void ag_tape_rollback(ag_tape *tape, const ag_tape_mark *m)
{
    ag_tape_note_peak(tape);
    tape->n_entries = m->n_entries;
    ag_arena_rollback(&tape->arena, m->data);
    ag_arena_rollback(&tape->heads[tape->hpar], m->heads);
}

/* Blocks in use run from first to cur, so a header past the mark lies in
 * the mark's block above its `used`, or in a block after it up to cur. */
bool ag_tape_made_since(const ag_tape *tape, const ag_tape_mark *m, const ag_tensor *x)
{
    if (x->persistent)
        return false;
    const ag_arena *a = &tape->heads[tape->hpar];
    uintptr_t p = (uintptr_t)x;
    size_t from = m->heads.used;
    for (const ag_block *b = m->heads.block ? m->heads.block : a->first; b; b = b->next) {
        uintptr_t lo = (uintptr_t)b->mem;
        if (p >= lo + from && p < lo + b->size)
            return true;
        if (b == a->cur)
            break;
        from = 0;
    }
    return false;
}

/* ---- recording ---- */

/* Why x (not live) is refused; keeps AG_ERR_STATE and returns false. */
static bool dead_tensor(ag_tape *tape, const ag_tensor *x, const char *fn, const char *arg)
{
    if (x->tape == tape)
        ag_fail(tape, AG_ERR_STATE, "%s: %s is a tape tensor from before ag_tape_reset "
                "(tape tensors live one step)", fn, arg);
    else
        ag_fail(tape, AG_ERR_STATE, "%s: %s belongs to another tape", fn, arg);
    return false;
}

/* Kept out of line: its buffer would cost every ag_check_inputs a stack
 * guard. */
static __attribute__((noinline, cold)) bool dead_input(ag_tape *tape, const ag_tensor *x,
                                                       const char *op, int i)
{
    char arg[32];
    snprintf(arg, sizeof arg, "input #%d", i + 1);
    return dead_tensor(tape, x, op, arg);
}

static __attribute__((noinline, cold)) bool int_input(ag_tape *tape, const char *op, int i)
{
    ag_fail(tape, AG_ERR_DTYPE, "%s: input #%d is an int64 tensor (indices from ag_argmax "
            "or ag_topk); ops take f32 or f64 tensors", op, i + 1);
    return false;
}

bool ag_check_live(ag_tape *tape, const ag_tensor *x, const char *fn, const char *arg)
{
    if (!x) {
        ag_fail(tape, AG_ERR_NULL, "%s: %s is NULL", fn, arg);
        return false;
    }
    return ag_is_live(tape, x) || dead_tensor(tape, x, fn, arg);
}

bool ag_check_inputs(ag_tape *tape, const char *op, int n, ag_tensor *const *in)
{
    if (!tape) {
        ag_set_last_error("%s: tape is NULL", op);
        return false;
    }
    if (!ag_tape_ok(tape, op))
        return false;
    for (int i = 0; i < n; i++) {
        if (!in[i]) {
            ag_fail(tape, AG_ERR_NULL, "%s: input #%d is NULL", op, i + 1);
            return false;
        }
        if (!ag_is_live(tape, in[i]))
            return dead_input(tape, in[i], op, i);
        if (in[i]->dtype == AG_I64)
            return int_input(tape, op, i);
    }
    return true;
}

bool ag_check_same_dtype(ag_tape *tape, const char *op, const ag_tensor *a,
                         const ag_tensor *b)
{
    if (a->dtype == b->dtype)
        return true;
    ag_fail(tape, AG_ERR_DTYPE, "%s: dtypes differ (%s and %s)", op,
            a->dtype == AG_F64 ? "f64" : "f32", b->dtype == AG_F64 ? "f64" : "f32");
    return false;
}

bool ag_check_axis(ag_tape *tape, const char *op, int ndim, int *axis)
{
    int a = *axis;
    if (a < 0)
        a += ndim;
    if (a < 0 || a >= ndim) {
        ag_fail(tape, AG_ERR_ARG, "%s: axis %d out of range for %d dims", op, *axis, ndim);
        return false;
    }
    *axis = a;
    return true;
}

static ag_entry *entry_append(ag_tape *tape)
{
    if (tape->n_entries == tape->cap_entries) {
        int64_t cap = tape->cap_entries ? tape->cap_entries * 2 : 256;
        ag_entry *e = ag_mem_alloc((size_t)cap * sizeof *e);
        if (!e)
            return ag_fail(tape, AG_ERR_NOMEM, "tape: out of memory for %lld entries",
                           (long long)cap);
        if (tape->n_entries)
            memcpy(e, tape->entries, (size_t)tape->n_entries * sizeof *e);
        ag_mem_free(tape->entries);
        tape->entries = e;
        tape->cap_entries = cap;
    }
    return &tape->entries[tape->n_entries++];
}

/* A checksum of x's data, for anomaly mode's check of unmarked writes. */
static uint64_t data_sum(const ag_tensor *x)
{
    const unsigned char *p = x->data;
    size_t n = (size_t)x->numel * ag_dtype_size(x->dtype), i = 0;
    uint64_t h = 0x9e3779b97f4a7c15u ^ n;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3u;
        h ^= h >> 29;
    }
    for (; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3u;
    return h;
}

/* A recorded entry's copy of its inputs and, when some are persistent,
 * the versions of all (tape tensors' stay 0) and in anomaly mode the
 * checksums of the persistent ones, in the arena. */
static bool save_inputs(ag_tape *tape, ag_entry *e, const ag_op_call *c, bool persistent)
{
    size_t n = (size_t)c->n_in;
    e->in = ag_arena_alloc_align(tape, n * (sizeof *e->in + persistent * sizeof *e->ver), 16);
    if (!e->in)
        return false;
    memcpy(e->in, c->in, n * sizeof *e->in);
    e->ver = e->sum = NULL;
    if (!persistent)
        return true;
    e->ver = (uint64_t *)(e->in + n);
    for (size_t k = 0; k < n; k++)
        e->ver[k] = ag_version_src(c->in[k])->version;
    if (!tape->anomaly)
        return true;
    if (!(e->sum = ag_arena_alloc_align(tape, n * sizeof *e->sum, 16)))
        return false;
    for (size_t k = 0; k < n; k++)
        e->sum[k] = ag_version_src(c->in[k])->persistent ? data_sum(c->in[k]) : 0;
    return true;
}

static __attribute__((noinline, cold)) bool input_changed(ag_tape *tape, const ag_entry *e,
                                                         int k, const char *fn, bool unmarked)
{
    const ag_tensor *x = ag_version_src(e->in[k]);
    char who[160];
    if (x != e->in[k])
        snprintf(who, sizeof who, "%s (viewed by input #%d of %s)",
                 x->name ? x->name : "a persistent tensor", k + 1, e->op->name);
    else if (x->name)
        snprintf(who, sizeof who, "%s (input #%d of %s)", x->name, k + 1, e->op->name);
    else
        snprintf(who, sizeof who, "input #%d of %s", k + 1, e->op->name);
    if (unmarked)
        ag_fail(tape, AG_ERR_STATE, "%s: %s was written through ag_data after it was "
                "recorded (anomaly mode: its data checksum changed); write before "
                "recording, and call ag_tensor_mark_modified after such writes", fn, who);
    else
        ag_fail(tape, AG_ERR_STATE, "%s: %s was modified after it was recorded (version "
                "%llu, recorded at %llu): an optimizer step, ag_set or a write marked with "
                "ag_tensor_mark_modified between forward and backward", fn, who,
                (unsigned long long)x->version, (unsigned long long)e->ver[k]);
    return false;
}

bool ag_entry_inputs_unchanged(ag_tape *tape, const ag_entry *e, const char *fn)
{
    if (!e->ver) /* no persistent input */
        return true;
    for (int k = 0; k < e->n_in; k++)
        if (ag_version_src(e->in[k])->version != e->ver[k])
            return input_changed(tape, e, k, fn, false);
    for (int k = 0; e->sum && k < e->n_in; k++)
        if (ag_version_src(e->in[k])->persistent && data_sum(e->in[k]) != e->sum[k])
            return input_changed(tape, e, k, fn, true);
    return true;
}

/* An allocation inside ag_op_run failed: the arena's message ("tape
 * arena: out of memory for N bytes") is prefixed with the op the user
 * called, when it is the tape's first error. */
static ag_tensor *op_alloc_failed(ag_tape *tape, const ag_op_call *c, bool was_ok)
{
    if (was_ok && tape->status != AG_OK) {
        /* room for all of it; the kept message is cut to its buffer */
        char shape[160], msg[sizeof tape->msg + 256];
        ag_fmt_shape(shape, sizeof shape, c->ndim, c->shape);
        snprintf(msg, sizeof msg, "ag_%s (result %s): %s", c->def->name, shape, tape->msg);
        msg[sizeof tape->msg - 1] = '\0';
        memcpy(tape->msg, msg, sizeof tape->msg);
        ag_set_last_error("%s", tape->msg);
    }
    return NULL;
}

ag_tensor *ag_op_run(ag_tape *tape, const ag_op_call *c)
{
    /* the profiler charges the op with everything from here on */
    ag_debug_mark m = {0, 0};
    if (tape->debug)
        m = ag_debug_begin(tape);
    bool was_ok = tape->status == AG_OK;
    ag_tensor *out = c->view ? ag_tensor_view(tape, c->view, c->ndim, c->shape)
                             : ag_tensor_tape(tape, c->dtype, c->ndim, c->shape);
    if (!out)
        return op_alloc_failed(tape, c, was_ok);
    bool needs_grad = false, persistent = false;
    for (int i = 0; i < c->n_in; i++) {
        needs_grad |= c->in[i]->requires_grad;
        persistent |= c->in[i]->persistent | (c->in[i]->base != NULL);
    }
    bool record = needs_grad && tape->grad_enabled;

    ag_entry local, *e = record ? entry_append(tape) : &local;
    if (!e)
        return op_alloc_failed(tape, c, was_ok);
    e->op = c->def;
    e->out = out;
    e->smark = ag_scalar_count(tape);
    e->site = NULL;
    e->line = 0;
    e->n_in = c->n_in;
    e->in = (ag_tensor **)c->in; /* unrecorded: ver and sum are never read */
    if (record && !save_inputs(tape, e, c, persistent)) {
        tape->n_entries--;
        return op_alloc_failed(tape, c, was_ok);
    }
    AG_ASSERT(c->attr_size <= sizeof e->attr);
    if (c->attr_size)
        memcpy(e->attr.bytes, c->attr, c->attr_size);
    e->aux = c->aux_bytes ? ag_arena_calloc(tape, c->aux_bytes) : c->aux;
    if (c->aux_bytes && !e->aux) {
        if (record)
            tape->n_entries--;
        return op_alloc_failed(tape, c, was_ok);
    }
    int copied = record && tape->ckpt_replay ? ag_ckpt_copy_kept(tape, e) : 0;
    if (copied < 0)
        return NULL;
    if (!copied)
        c->def->forward(e);
    if (tape->debug) {
        ag_debug_forward(tape, e, m);
        if (tape->status != AG_OK)
            return NULL;
    }
    out->requires_grad = record;
    return out;
}

/* ---- the reverse sweep ---- */

static void zero_part(void *p, int64_t lo, int64_t hi)
{
    memset((char *)p + lo, 0, (size_t)(hi - lo));
}

/* A new gradient buffer's zeros, on the pool when large: one thread's
 * memset of a GPT layer's activation gradients was 2.5% of its step. */
static void zero_bytes(void *p, size_t bytes)
{
    const int64_t elems = (int64_t)(bytes / sizeof(float));
    if (elems < AG_PAR_MIN)
        memset(p, 0, bytes);
    else
        ag_parallel_for((int64_t)bytes, AG_PAR_CHUNK * (int64_t)sizeof(float), zero_part, p);
}

bool ag_needs_grad(const ag_tape *tape, const ag_tensor *x)
{
    return x->requires_grad && (!tape->sweep_id || x->mark == tape->sweep_id);
}

/* A new tape gradient buffer for x: zeroed, or when fresh is not NULL
 * left for the caller to write whole (*fresh = true; ag_tape_empty's NaN
 * in anomaly mode, so an element it leaves shows). */
static ag_tensor *new_tape_grad(ag_tape *tape, ag_tensor *x, bool *fresh)
{
    if (fresh) {
        ag_tensor *g = ag_tape_empty(tape, x->dtype, x->ndim, x->shape);
        *fresh = g != NULL;
        return g;
    }
    ag_tensor *g = ag_tensor_tape(tape, x->dtype, x->ndim, x->shape);
    if (g)
        zero_bytes(g->data, (size_t)x->numel * ag_dtype_size(x->dtype));
    return g;
}

/* ag_gradients' slot for a persistent tensor: a tape buffer for this
 * sweep, so the persistent gradient is never touched. */
static void *sweep_grad(ag_tape *tape, ag_tensor *x, bool *fresh)
{
    if (x->sgrad_id != tape->sweep_id) {
        ag_tensor *g = new_tape_grad(tape, x, fresh);
        if (!g)
            return NULL;
        x->sgrad = g;
        x->sgrad_id = tape->sweep_id;
    }
    return x->sgrad->data;
}

ag_tensor *ag_grad_peek(const ag_tape *tape, const ag_tensor *x)
{
    if (!ag_needs_grad(tape, x))
        return NULL;
    if (x->persistent && tape->sweep_id)
        return x->sgrad_id == tape->sweep_id ? x->sgrad : NULL;
    return x->grad;
}

ag_tensor *ag_grad_tensor(ag_tape *tape, ag_tensor *x)
{
    return ag_grad_data(tape, x) ? ag_grad_peek(tape, x) : NULL;
}

/* ag_grad_data, and ag_grad_out when fresh is not NULL */
static void *grad_buffer(ag_tape *tape, ag_tensor *x, bool *fresh)
{
    if (fresh)
        *fresh = false;
    if (!ag_needs_grad(tape, x))
        return NULL;
    if (x->persistent && tape->sweep_id)
        return sweep_grad(tape, x, fresh);
    if (x->grad)
        return x->grad->data;
    ag_tensor *g;
    if (x->persistent) { /* kept across steps: zeroed, as ag_tensor_new makes it */
        g = ag_tensor_new(x->dtype, x->ndim, x->shape);
        if (!g)
            return ag_fail(tape, AG_ERR_NOMEM, "backward: out of memory for a gradient");
    } else {
        g = new_tape_grad(tape, x, fresh);
        if (!g)
            return NULL;
    }
    x->grad = g;
    return g->data;
}

void *ag_grad_data(ag_tape *tape, ag_tensor *x)
{
    return grad_buffer(tape, x, NULL);
}

void *ag_grad_out(ag_tape *tape, ag_tensor *x, bool *fresh)
{
    return grad_buffer(tape, x, fresh);
}

/* Runs entry e of a sweep, its output's gradient present; false when an
 * input changed since it was recorded (the error kept). */
static bool sweep_entry(ag_tape *tape, ag_entry *e, const char *fn)
{
    if (e->ver && !ag_entry_inputs_unchanged(tape, e, fn))
        return false;
    if (tape->debug)
        ag_debug_backward(tape, e);
    else
        e->op->backward(tape, e);
    return true;
}

void ag_sweep_range(ag_tape *tape, int64_t lo, int64_t hi, const char *fn)
{
    for (int64_t i = hi - 1; i >= lo && tape->status == AG_OK; i--) {
        ag_entry *e = &tape->entries[i];
        if (e->out->grad && !sweep_entry(tape, e, fn))
            return;
    }
}

void ag_sweep(ag_tape *tape, int64_t e_end, int64_t s_end, const char *fn)
{
    /* the gradient-ready plan is this sweep's alone; with scalar ops
     * (which may add into a leaf through ag_var_from_tensor) it fires at
     * the end; without a plan fire_at stays -1 */
    ag_ready_plan *rp = tape->ready;
    tape->ready = NULL;
    int64_t fire_at = rp && s_end == 0 && rp->n ? rp->at[rp->n - 1] : -1;
    /* scalar ops recorded after entry i run before it in reverse */
    int64_t s_hi = s_end;
    for (int64_t i = e_end - 1; i >= 0 && tape->status == AG_OK; i--) {
        ag_entry *e = &tape->entries[i];
        if (e->smark < s_hi) {
            ag_scalar_reverse(tape, e->smark, s_hi);
            s_hi = e->smark;
        }
        if (e->out->grad && !sweep_entry(tape, e, fn))
            return;
        if (i == fire_at)
            fire_at = ag_ready_fire(tape, rp, i);
    }
    if (s_hi > 0 && tape->status == AG_OK)
        ag_scalar_reverse(tape, 0, s_hi);
    if (rp)
        ag_ready_fire(tape, rp, -1);
}

static ag_status backward_from(ag_tape *tape, ag_tensor *root, const ag_tensor *seed,
                               const char *fn)
{
    /* tape gradients start afresh on each sweep; persistent ones accumulate */
    for (int64_t i = 0; i < tape->n_entries; i++)
        tape->entries[i].out->grad = NULL;
    int64_t n_scalar = ag_scalar_count(tape);
    if (!ag_scalar_adjoints_clear(tape, n_scalar))
        return tape->status;
    void *g = ag_grad_data(tape, root);
    if (!g)
        return tape->status;
    for (int64_t i = 0; i < root->numel; i++) {
        if (root->dtype == AG_F64)
            ((double *)g)[i] += seed ? ag_get(seed, i) : 1.0;
        else
            ((float *)g)[i] += seed ? (float)ag_get(seed, i) : 1.0f;
    }
    if (tape->ready_fn && !(tape->ready = ag_ready_plan_new(tape, tape->n_entries)))
        return tape->status;
    ag_sweep(tape, tape->n_entries, n_scalar, fn);
    return tape->status;
}

static bool backward_checks(ag_tape *tape, const ag_tensor *root, const char *fn)
{
    if (!tape) {
        ag_set_last_error("%s: tape is NULL", fn);
        return false;
    }
    if (!ag_tape_ok(tape, fn))
        return false;
    if (!ag_check_live(tape, root, fn, "root"))
        return false;
    if (!root->requires_grad) {
        ag_fail(tape, AG_ERR_STATE,
                "%s: root does not depend on any tensor that requires grad "
                "(or was computed with grad disabled)", fn);
        return false;
    }
    return true;
}

ag_status ag_backward(ag_tape *tape, ag_tensor *root)
{
    if (!backward_checks(tape, root, "ag_backward"))
        return tape ? tape->status : AG_ERR_ARG;
    if (root->numel != 1) {
        char b[128];
        ag_fail(tape, AG_ERR_SHAPE,
                "ag_backward: root %s has %lld elements; use ag_backward_seeded for "
                "a non-scalar root", ag_shape_str(root, b, sizeof b),
                (long long)root->numel);
        return tape->status;
    }
    return backward_from(tape, root, NULL, "ag_backward");
}

ag_status ag_backward_seeded(ag_tape *tape, ag_tensor *root, const ag_tensor *seed)
{
    if (!backward_checks(tape, root, "ag_backward_seeded"))
        return tape ? tape->status : AG_ERR_ARG;
    if (!ag_check_live(tape, seed, "ag_backward_seeded", "seed"))
        return tape->status;
    if (!ag_same_shape(root, seed) || root->dtype != seed->dtype) {
        char b1[128], b2[128];
        ag_fail(tape, AG_ERR_SHAPE,
                "ag_backward_seeded: seed %s %s does not match root %s %s",
                ag_shape_str(seed, b1, sizeof b1), seed->dtype == AG_F64 ? "f64" : "f32",
                ag_shape_str(root, b2, sizeof b2), root->dtype == AG_F64 ? "f64" : "f32");
        return tape->status;
    }
    return backward_from(tape, root, seed, "ag_backward_seeded");
}
