/* checkpoint.c — gradient checkpointing: ag_checkpoint runs a segment of
 * ops, keeps its inputs and outputs and forgets the rest; backward runs
 * the segment again and back-propagates through the rebuilt entries.
 *
 * On the tape a checkpoint is
 *   one "checkpoint" entry: its inputs are the caller's, then every other
 *     tensor the segment's entries read from outside it (parameters, an
 *     earlier tape tensor fn reached through ctx), each once, so the
 *     version checks, ag_gradients' marking and the gradient-ready hook
 *     see them; its output is a one-element token that carries no value;
 *   one "checkpoint_out" entry per output fn made: input the token, output
 *     a copy of that output, kept.
 * An output's gradient wakes its checkpoint_out entry, whose backward only
 * gives the token a gradient; the checkpoint entry's backward then re-runs
 * fn past a mark, gives each rebuilt output the kept output's gradient
 * buffer itself, sweeps the rebuilt entries and goes back to the mark, so
 * every checkpoint's rebuild takes the same memory in turn.  The rebuilt
 * entries add into the very buffers, in the very order, the segment's own
 * entries would have without the checkpoint: the gradients are the same
 * bits.  The recorded derivative (create_graph) rebuilds the same way but
 * keeps the rebuilt entries, in the checkpoint's place (materialize): the
 * derivative it records is made of them, and every later sweep then runs
 * through the very tape the segment would have recorded without the
 * checkpoint, so derivatives of derivatives are the same bits too.
 *
 * Dropping the segment: fn's outputs are staged (headers and data) in the
 * tape's scratch arena, the tape goes back to the mark taken before fn,
 * and the entries are made there, their outputs copied from the stage. */
#include "autograd_internal.h"

/* Bound on n_in and n_out: the arrays they count are the caller's. */
#define MAX_IO (1 << 16)

typedef struct ckpt_aux {
    ag_checkpoint_fn fn;
    void *ctx;
    int n_user, n_out;    /* the caller's inputs come first in the entry's */
    ag_tensor **out;      /* (n_out) the outputs ag_checkpoint gave */
    /* (n_out) where output j came from: j, made by fn (a kept copy);
     * k < j, the same tensor as output k; -1, a tensor from outside fn
     * (an input passed through) */
    int *src;
    bool *used;           /* (n_user) read by some entry of the segment */
    ag_rng *rng;          /* the generator replayed, or NULL */
    ag_rng rng_at;        /* its state when fn first ran */
    /* What ag_checkpoint_save kept: entry k of the segment (counted from
     * its first) had output data[k] of bytes[k]; n_kept of them, in
     * entry order. */
    int n_kept;
    int64_t *kept_at;
    void **kept;
    size_t *kept_bytes;
} ckpt_aux;

/* A checkpoint's saves (tape->ckpt_collect / ckpt_replay): entries
 * counted from base, the segment's first.  Collecting: x[k] the outputs
 * ag_checkpoint_save named, at[k] their entries.  Replaying: data[k]
 * their kept bytes, next the first not yet copied. */
struct ag_ckpt_saves {
    int64_t base;
    int n, cap, next;
    int64_t *at;
    ag_tensor **x;
    void *const *data;
    const size_t *bytes;
};

typedef struct {
    const void *from;     /* the staged data, gone when ag_checkpoint returns */
} out_attr;

static const char *const WHO = "ag_checkpoint";
static const char *const WHO_AGAIN = "ag_checkpoint (fn re-run in backward)";

/* ---- running fn ---- */

/* Calls fn with the rng at its state of the first run (replay: put back
 * afterwards, so a rebuild leaves the caller's stream where it was, as
 * PyTorch's preserve_rng_state) and checks what it did; false with the
 * error kept on the tape. */
static bool run_fn(ag_tape *t, const ckpt_aux *a, ag_tensor *const *in, ag_tensor **r,
                   bool replay, struct ag_ckpt_saves *saves)
{
    const char *who = replay ? WHO_AGAIN : WHO;
    uint64_t gen = t->gen;
    int64_t n_scalar = ag_scalar_count(t);
    ag_rng now = {{0}};
    if (a->rng && replay) {
        now = *a->rng;
        *a->rng = a->rng_at;
    }
    struct ag_ckpt_saves *collect = t->ckpt_collect, *copying = t->ckpt_replay;
    struct ag_ckpt_saves again = {.base = t->n_entries, .n = a->n_kept, .at = a->kept_at,
                                  .data = a->kept, .bytes = a->kept_bytes};
    t->ckpt_collect = replay ? NULL : saves;
    t->ckpt_replay = replay && a->n_kept ? &again : NULL;
    ag_status st = a->fn(t, a->n_user, in, a->n_out, r, a->ctx);
    t->ckpt_collect = collect;
    t->ckpt_replay = copying;
    if (a->rng && replay)
        *a->rng = now;
    if (t->gen != gen)
        return ag_fail(t, AG_ERR_STATE, "%s: fn reset the tape", who), false;
    if (st != AG_OK && t->status == AG_OK)
        ag_fail(t, st, "%s: fn returned %s", who, ag_status_str(st));
    if (t->status != AG_OK)
        return false;
    if (ag_scalar_count(t) != n_scalar)
        return ag_fail(t, AG_ERR_STATE, "%s: fn recorded scalar (ag_var) ops, which a "
                       "checkpoint cannot drop and rebuild", who), false;
    if (replay && again.next != again.n)
        return ag_fail(t, AG_ERR_STATE, "%s: fn recorded fewer ops than in the first run "
                       "(%d of its %d kept outputs were not made again)", who,
                       again.n - again.next, again.n), false;
    for (int j = 0; j < a->n_out; j++) {
        char arg[48];
        snprintf(arg, sizeof arg, "output #%d of fn", j + 1);
        if (!ag_check_live(t, r[j], who, arg))
            return false;
    }
    return true;
}

bool ag_ckpt_listed(ag_tensor *const *list, int n, const ag_tensor *x)
{
    for (int k = 0; k < n; k++)
        if (list[k] == x)
            return true;
    return false;
}

/* ---- the forward: run, stage, drop, record ---- */

/* The checkpoint entry's inputs, in the scratch arena: the caller's, then
 * each tensor from outside the segment its entries read; marks in used
 * the caller's that some entry read.  NULL on no memory. */
static ag_tensor **gather_inputs(ag_tape *t, const ag_tape_mark *m, int n_in,
                                 ag_tensor *const *in, bool *used, int *n_all)
{
    size_t cap = (size_t)n_in;
    for (int64_t i = m->n_entries; i < t->n_entries; i++)
        cap += (size_t)t->entries[i].n_in;
    ag_tensor **list = ag_arena_take(t, &t->scratch, (cap ? cap : 1) * sizeof *list, 16);
    if (!list)
        return NULL;
    int n = n_in;
    if (n_in) /* in may be NULL then */
        memcpy(list, in, (size_t)n_in * sizeof *list);
    for (int64_t i = m->n_entries; i < t->n_entries; i++) {
        const ag_entry *e = &t->entries[i];
        for (int k = 0; k < e->n_in; k++) {
            ag_tensor *x = e->in[k];
            if (ag_tape_made_since(t, m, x))
                continue;
            for (int u = 0; u < n_in; u++)
                used[u] |= in[u] == x;
            if (!ag_ckpt_listed(list, n, x))
                list[n++] = x;
        }
    }
    *n_all = n;
    return list;
}

/* What survives the drop of one output: its header and, for one fn made,
 * its data. */
typedef struct {
    ag_tensor head;
    const void *data;
} staged;

static staged *stage_outputs(ag_tape *t, const ag_tape_mark *m, ag_tensor **r, int n_out,
                             int *src)
{
    staged *s = ag_arena_take(t, &t->scratch, (size_t)n_out * sizeof *s, 16);
    for (int j = 0; s && j < n_out; j++) {
        s[j].head = *r[j];
        s[j].data = NULL;
        src[j] = ag_tape_made_since(t, m, r[j]) ? j : -1;
        for (int k = 0; k < j && src[j] == j; k++)
            if (r[k] == r[j])
                src[j] = k;
        if (src[j] != j)
            continue;
        size_t bytes = (size_t)r[j]->numel * ag_dtype_size(r[j]->dtype);
        void *d = ag_arena_take(t, &t->scratch, bytes ? bytes : 1, AG_ALIGN);
        if (!d)
            return NULL;
        memcpy(d, r[j]->data, bytes);
        s[j].data = d;
    }
    return s;
}

static void ckpt_forward(ag_entry *e)
{
    *(float *)e->out->data = 0.0f; /* the token: fn ran before the entry was made */
}

static void out_forward(ag_entry *e)
{
    memcpy(e->out->data, AG_ATTR(e, out_attr)->from,
           (size_t)e->out->numel * ag_dtype_size(e->out->dtype));
}

static const ag_op_def op_checkpoint, op_checkpoint_out;

/* The checkpoint entry (NULL token when nothing needs a gradient: then
 * only the outputs are kept) and its aux, in the arena. */
static ckpt_aux *record_entry(ag_tape *t, const ckpt_aux *proto, ag_tensor **list, int n_all,
                              const bool *used, ag_tensor **token)
{
    *token = NULL;
    bool needs = false;
    for (int k = 0; k < n_all; k++)
        needs |= list[k]->requires_grad;
    if (!needs || !t->grad_enabled)
        return NULL;
    int n_out = proto->n_out, n_user = proto->n_user;
    ckpt_aux *a = ag_arena_alloc(t, sizeof *a + (size_t)n_out * (sizeof *a->out + sizeof *a->src)
                                        + (size_t)n_user * sizeof *a->used);
    if (!a)
        return NULL;
    *a = *proto;
    a->out = (ag_tensor **)(a + 1);
    a->src = (int *)(a->out + n_out);
    a->used = (bool *)(a->src + n_out);
    memcpy(a->used, used, (size_t)n_user * sizeof *used);
    ag_op_call c = {.def = &op_checkpoint, .in = list, .n_in = n_all, .dtype = AG_F32,
                    .ndim = 0, .aux = a};
    *token = ag_op_run(t, &c);
    return *token ? a : NULL;
}

/* The outputs, after the drop: a copy of each fn made (recorded on the
 * token when both it and the token need gradients), the others as they
 * were. */
static bool record_outputs(ag_tape *t, ag_tensor *token, const staged *s, ag_tensor **r,
                           const int *src, int n_out, ag_tensor **out)
{
    for (int j = 0; j < n_out; j++) {
        if (src[j] < 0) {
            out[j] = r[j];
            continue;
        }
        if (src[j] < j) {
            out[j] = out[src[j]];
            continue;
        }
        if (!(out[j] = ag_ckpt_keep(t, token, &s[j].head, s[j].data)))
            return false;
    }
    return true;
}

ag_tensor *ag_ckpt_keep(ag_tape *t, ag_tensor *token, const ag_tensor *head, const void *data)
{
    bool link = token && token->requires_grad && head->requires_grad;
    out_attr at = {data};
    ag_op_call c = {.def = &op_checkpoint_out, .in = &token, .n_in = link,
                    .dtype = head->dtype, .ndim = head->ndim, .shape = head->shape,
                    .attr = &at, .attr_size = sizeof at};
    return ag_op_run(t, &c);
}

/* The outputs ag_checkpoint_save named, in entry order, their bytes
 * staged in the scratch arena before the drop (data, size); false with
 * the error kept. */
static bool stage_kept(ag_tape *t, struct ag_ckpt_saves *s, void **data, size_t *size)
{
    for (int k = 1; k < s->n; k++) /* insertion sort by entry: a few */
        for (int j = k; j > 0 && s->at[j - 1] > s->at[j]; j--) {
            int64_t at = s->at[j];
            ag_tensor *x = s->x[j];
            s->at[j] = s->at[j - 1], s->x[j] = s->x[j - 1];
            s->at[j - 1] = at, s->x[j - 1] = x;
        }
    for (int k = 0; k < s->n; k++) {
        const ag_tensor *x = s->x[k];
        size[k] = (size_t)x->numel * ag_dtype_size(x->dtype);
        if (!(data[k] = ag_arena_take(t, &t->scratch, size[k] ? size[k] : 1, AG_ALIGN)))
            return ag_fail(t, AG_ERR_NOMEM, "%s: out of memory staging the saved tensors",
                           WHO), false;
        memcpy(data[k], x->data, size[k]);
    }
    return true;
}

/* The staged saves into the arena, owned by the checkpoint's aux a (for
 * every rebuild in backward); false with the error kept. */
static bool keep_saved(ag_tape *t, ckpt_aux *a, const struct ag_ckpt_saves *s,
                       void *const *data, const size_t *size)
{
    int n = a->n_kept = s->n;
    if (!n)
        return true;
    a->kept_at = ag_arena_alloc(t, (size_t)n * sizeof *a->kept_at);
    a->kept = ag_arena_alloc(t, (size_t)n * sizeof *a->kept);
    a->kept_bytes = ag_arena_alloc(t, (size_t)n * sizeof *a->kept_bytes);
    for (int k = 0; a->kept_at && a->kept && a->kept_bytes && k < n; k++) {
        if (!(a->kept[k] = ag_arena_alloc(t, size[k])))
            return false;
        memcpy(a->kept[k], data[k], size[k]);
        a->kept_at[k] = s->at[k];
        a->kept_bytes[k] = size[k];
    }
    return t->status == AG_OK;
}

/* fn has run past m: keeps what the checkpoint needs, drops the rest. */
static bool keep(ag_tape *t, ckpt_aux *proto, struct ag_ckpt_saves *saves,
                 ag_tensor *const *in, ag_tensor **r, const ag_tape_mark *m,
                 const int64_t *bytes, ag_tensor **out)
{
    int n_out = proto->n_out, n_all = 0;
    void **kept = ag_arena_take(t, &t->scratch, (size_t)(saves->n + 1) * sizeof *kept, 16);
    size_t *kept_size = ag_arena_take(t, &t->scratch, (size_t)(saves->n + 1) * sizeof(size_t),
                                      16);
    if (!kept || !kept_size)
        return ag_fail(t, AG_ERR_NOMEM, "%s: out of memory staging the outputs", WHO), false;
    if (!stage_kept(t, saves, kept, kept_size))
        return false;
    bool *used = ag_arena_take(t, &t->scratch, (size_t)proto->n_user + 1, 1);
    int *src = ag_arena_take(t, &t->scratch, (size_t)n_out * sizeof *src, 16);
    if (used)
        memset(used, 0, (size_t)proto->n_user + 1);
    ag_tensor **list = used && src ? gather_inputs(t, m, proto->n_user, in, used, &n_all)
                                   : NULL;
    staged *s = list ? stage_outputs(t, m, r, n_out, src) : NULL;
    ag_tape_rollback(t, m);
    if (!s)
        return ag_fail(t, AG_ERR_NOMEM, "%s: out of memory staging the outputs", WHO), false;
    ag_debug_bytes_restore(t, bytes);
    ag_tensor *token;
    ckpt_aux *a = record_entry(t, proto, list, n_all, used, &token);
    if (t->status != AG_OK || !record_outputs(t, token, s, r, src, n_out, out))
        return false;
    if (a) {
        memcpy(a->out, out, (size_t)n_out * sizeof *out);
        memcpy(a->src, src, (size_t)n_out * sizeof *src);
        return keep_saved(t, a, saves, kept, kept_size);
    }
    return true;
}

static bool args_ok(ag_tape *t, ag_checkpoint_fn fn, int n_in, ag_tensor *const *in,
                    int n_out, ag_tensor **out)
{
    if (!t)
        return ag_set_last_error("%s: tape is NULL", WHO), false;
    if (t->status != AG_OK)
        return false;
    if (!fn)
        return ag_fail(t, AG_ERR_ARG, "%s: fn is NULL", WHO), false;
    if (n_in < 0 || n_in > MAX_IO)
        return ag_fail(t, AG_ERR_ARG, "%s: n_in is %d (must be 0..%d)", WHO, n_in, MAX_IO),
               false;
    if (n_out < 1 || n_out > MAX_IO)
        return ag_fail(t, AG_ERR_ARG, "%s: n_out is %d (must be 1..%d)", WHO, n_out, MAX_IO),
               false;
    if (n_in > 0 && !in)
        return ag_fail(t, AG_ERR_NULL, "%s: in is NULL (n_in is %d)", WHO, n_in), false;
    if (!out)
        return ag_fail(t, AG_ERR_NULL, "%s: out is NULL", WHO), false;
    for (int k = 0; k < n_in; k++) {
        char arg[32];
        snprintf(arg, sizeof arg, "input #%d", k + 1);
        if (!ag_check_live(t, in[k], WHO, arg))
            return false;
    }
    return true;
}

ag_status ag_checkpoint(ag_tape *t, ag_checkpoint_fn fn, void *ctx, int n_in,
                        ag_tensor *const *in, int n_out, ag_tensor **out)
{
    if (!args_ok(t, fn, n_in, in, n_out, out)) {
        if (out && n_out >= 1 && n_out <= MAX_IO)
            memset(out, 0, (size_t)n_out * sizeof *out);
        return t ? t->status : AG_ERR_ARG;
    }
    ag_arena_mark sm = ag_arena_mark_now(&t->scratch);
    ckpt_aux proto = {.fn = fn, .ctx = ctx, .n_user = n_in, .n_out = n_out,
                      .rng = t->ckpt_rng};
    if (proto.rng)
        proto.rng_at = *proto.rng;
    int64_t *bytes = ag_debug_bytes_save(t);
    ag_tape_mark m = ag_tape_mark_now(t);
    /* fn's outputs, then ours: out may be in (x = f(x)), so it is written
     * last */
    ag_tensor **r = ag_arena_take(t, &t->scratch, 2 * (size_t)n_out * sizeof *r, 16);
    bool ok = r != NULL;
    if (ok) {
        memset(r, 0, 2 * (size_t)n_out * sizeof *r);
        uint64_t gen = t->gen;
        struct ag_ckpt_saves saves = {.base = m.n_entries};
        ok = run_fn(t, &proto, in, r, false, &saves) &&
             keep(t, &proto, &saves, in, r, &m, bytes, r + n_out);
        if (!ok && t->gen == gen)
            ag_tape_rollback(t, &m);
    }
    if (ok)
        memcpy(out, r + n_out, (size_t)n_out * sizeof *out);
    else
        memset(out, 0, (size_t)n_out * sizeof *out);
    ag_arena_rollback(&t->scratch, sm);
    return t->status;
}

/* ---- selective checkpointing: outputs kept from the first run ---- */

ag_status ag_checkpoint_save(ag_tape *t, ag_tensor *x)
{
    const char *fn = "ag_checkpoint_save";
    if (!t) {
        ag_set_last_error("%s: tape is NULL", fn);
        return AG_ERR_ARG;
    }
    if (!ag_tape_ok(t, fn))
        return t->status;
    if (!ag_check_live(t, x, fn, "x"))
        return t->status;
    struct ag_ckpt_saves *s = t->ckpt_collect;
    if (!s)
        return AG_OK;
    int64_t i = t->n_entries - 1;
    while (i >= s->base && t->entries[i].out != x)
        i--;
    if (i < s->base)
        return ag_fail(t, AG_ERR_ARG, "%s: x is not the output of an op this checkpoint's fn "
                       "recorded (an op of it whose result needs a gradient)", fn), t->status;
    if (!t->entries[i].op->saveable)
        return ag_fail(t, AG_ERR_ARG, "%s: x is the output of %s, whose backward reads values "
                       "its forward keeps besides x; save the output of a linear or matmul",
                       fn, t->entries[i].op->name), t->status;
    for (int k = 0; k < s->n; k++)
        if (s->at[k] == i - s->base)
            return AG_OK;
    if (s->n == s->cap) { /* grow in the scratch arena, dropped with the call */
        int cap = s->cap ? 2 * s->cap : 8;
        int64_t *at = ag_arena_take(t, &t->scratch, (size_t)cap * sizeof *at, 16);
        ag_tensor **xs = ag_arena_take(t, &t->scratch, (size_t)cap * sizeof *xs, 16);
        if (!at || !xs)
            return ag_fail(t, AG_ERR_NOMEM, "%s: out of memory", fn), t->status;
        if (s->n) {
            memcpy(at, s->at, (size_t)s->n * sizeof *at);
            memcpy(xs, s->x, (size_t)s->n * sizeof *xs);
        }
        s->at = at, s->x = xs, s->cap = cap;
    }
    s->at[s->n] = i - s->base;
    s->x[s->n++] = x;
    return AG_OK;
}

int ag_ckpt_copy_kept(ag_tape *t, ag_entry *e)
{
    struct ag_ckpt_saves *r = t->ckpt_replay;
    if (r->next >= r->n || t->n_entries - 1 - r->base != r->at[r->next])
        return 0;
    size_t size = (size_t)e->out->numel * ag_dtype_size(e->out->dtype);
    if (!e->op->saveable || size != r->bytes[r->next])
        return ag_fail(t, AG_ERR_STATE, "%s: the op in the place of a saved output is %s of "
                       "%zu bytes, not the one saved: fn must record the same ops each time",
                       WHO_AGAIN, e->op->name, size), -1;
    memcpy(e->out->data, r->data[r->next++], size);
    return 1;
}

/* ---- backward: rebuild, seed, sweep ---- */

/* Whether the rebuild past m gave what the first run gave: the same
 * outputs, bit for bit, and no tensor from outside that the entry does
 * not list (its gradient would go to memory the drop frees).  Else keeps
 * AG_ERR_STATE. */
static bool rebuilt_same(ag_tape *t, const ag_entry *e, ag_tensor **r, const ag_tape_mark *m)
{
    const ckpt_aux *a = e->aux;
    for (int j = 0; j < a->n_out; j++) {
        const ag_tensor *o = a->out[j];
        bool same = a->src[j] < 0   ? r[j] == o
                    : a->src[j] < j ? r[j] == r[a->src[j]]
                                    : ag_tape_made_since(t, m, r[j]) && r[j]->dtype == o->dtype &&
                                          ag_same_shape(r[j], o) &&
                                          !memcmp(r[j]->data, o->data, (size_t)o->numel *
                                                  ag_dtype_size(o->dtype));
        if (!same)
            return ag_fail(t, AG_ERR_STATE, "%s: output #%d differs from the first run: fn "
                           "must compute the same values from the same inputs (register "
                           "the generator it draws from with ag_tape_set_checkpoint_rng; "
                           "keep what it reads through ctx unchanged until backward)",
                           WHO_AGAIN, j + 1), false;
    }
    for (int64_t i = m->n_entries; i < t->n_entries; i++) {
        const ag_entry *s = &t->entries[i];
        for (int k = 0; k < s->n_in; k++)
            if (!ag_tape_made_since(t, m, s->in[k]) && !ag_ckpt_listed(e->in, e->n_in, s->in[k]))
                return ag_fail(t, AG_ERR_STATE, "%s: fn read a tensor it did not read in "
                               "the first run (input #%d of %s)", WHO_AGAIN, k + 1,
                               s->op->name), false;
    }
    return true;
}

/* fn run again past m, recording; the rebuilt outputs, or NULL with the
 * error kept. */
static ag_tensor **rebuild(ag_tape *t, const ag_entry *e, const ag_tape_mark *m)
{
    const ckpt_aux *a = e->aux;
    ag_tensor **r = ag_arena_calloc(t, (size_t)a->n_out * sizeof *r);
    if (!r)
        return NULL;
    bool enabled = t->grad_enabled;
    t->grad_enabled = true;
    bool ok = run_fn(t, a, e->in, r, true, NULL);
    t->grad_enabled = enabled;
    return ok && rebuilt_same(t, e, r, m) ? r : NULL;
}

/* Each rebuilt output takes the kept output's gradient buffer itself, so
 * what the rebuilt entries add to it lands where the segment's own
 * entries would have added it. */
static void seed(ag_tape *t, const ckpt_aux *a, ag_tensor **r)
{
    for (int j = 0; j < a->n_out; j++)
        if (a->src[j] == j && a->out[j]->grad && ag_needs_grad(t, r[j]))
            r[j]->grad = a->out[j]->grad;
}

static void ckpt_backward(ag_tape *t, ag_entry *live)
{
    ag_entry e = *live; /* fn's ops may move the entry array */
    const ckpt_aux *a = e.aux;
    /* the inputs' gradients are made before the mark: they outlive the
     * rebuilt segment */
    for (int k = 0; k < e.n_in && t->status == AG_OK; k++)
        if (k >= a->n_user || a->used[k])
            ag_grad_data(t, e.in[k]);
    if (t->status != AG_OK)
        return;
    ag_tape_mark m = ag_tape_mark_now(t);
    struct ag_profile *prof = ag_debug_profile_hold(t);
    ag_tensor **r = rebuild(t, &e, &m);
    ag_debug_profile_release(t, prof);
    if (r) {
        if (t->sweep_id)
            ag_mark_range(t, m.n_entries, t->n_entries);
        seed(t, a, r);
        ag_sweep_range(t, m.n_entries, t->n_entries,
                       t->sweep_id ? "ag_gradients" : "ag_backward");
    }
    ag_tape_rollback(t, &m);
}

static void reverse(ag_entry *e, int64_t n)
{
    for (int64_t i = 0, j = n - 1; i < j; i++, j--) {
        ag_entry tmp = e[i];
        e[i] = e[j];
        e[j] = tmp;
    }
}

/* Puts the rebuilt entries [n0, end) in the place of checkpoint entry e
 * and its outputs' entries, making the kept outputs themselves (the
 * rebuilt outputs hold the same bits): the tape is then the one the
 * segment would have recorded without the checkpoint.  Returns where the
 * rebuilt entries now start. */
static int64_t materialize(ag_tape *t, const ag_entry *e, ag_tensor **r, int64_t n0)
{
    const ckpt_aux *a = e->aux;
    int64_t end = t->n_entries;
    for (int64_t i = n0; i < end; i++) {
        ag_entry *s = &t->entries[i];
        /* a checkpoint inside names its outputs too */
        ckpt_aux *in = s->op == &op_checkpoint ? s->aux : NULL;
        for (int j = 0; j < a->n_out; j++) {
            if (a->src[j] != j)
                continue;
            s->out = s->out == r[j] ? a->out[j] : s->out;
            for (int k = 0; k < s->n_in; k++)
                s->in[k] = s->in[k] == r[j] ? a->out[j] : s->in[k];
            for (int k = 0; in && k < in->n_out; k++)
                in->out[k] = in->out[k] == r[j] ? a->out[j] : in->out[k];
        }
    }
    int64_t p = n0 - 1;
    while (p >= 0 && !(t->entries[p].op == &op_checkpoint && t->entries[p].aux == e->aux))
        p--;
    AG_ASSERT(p >= 0);
    int64_t q = p + 1;
    while (q < n0 && t->entries[q].op == &op_checkpoint_out &&
           t->entries[q].in[0] == t->entries[p].out)
        q++;
    /* [p, q) leaves; [q, n0) and [n0, end) swap places (by three
     * reversals), then all of it moves down to p */
    reverse(t->entries + q, n0 - q);
    reverse(t->entries + n0, end - n0);
    reverse(t->entries + q, end - q);
    memmove(t->entries + p, t->entries + q, (size_t)(end - q) * sizeof *t->entries);
    t->n_entries -= q - p;
    return p;
}

/* A graph through the checkpoint is a graph through its ops: the segment
 * is rebuilt and stays, in the checkpoint's place, so this sweep and every
 * later one (derivatives of this derivative) run through the same entries,
 * in the same order, as without the checkpoint.  The token's gradient
 * carries nothing, and gin stays NULL: the rebuilt entries' vjps add into
 * the inputs' slots themselves. */
static void ckpt_vjp(ag_tape *t, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    (void)gout;
    (void)gin;
    ag_tape_mark m = ag_tape_mark_now(t);
    ag_tensor **r = rebuild(t, e, &m);
    if (!r)
        return;
    int64_t k = t->n_entries - m.n_entries, p = materialize(t, e, r, m.n_entries);
    ag_mark_range(t, p, p + k);
    ag_sweep_recorded_range(t, p, p + k);
}

/* An output's gradient only wakes the checkpoint entry, which reads it
 * from the output itself. */
static void out_backward(ag_tape *t, ag_entry *e) { ag_grad_data(t, e->in[0]); }

static void out_vjp(ag_tape *t, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    (void)gout;
    if (ag_needs_grad(t, e->in[0]))
        gin[0] = ag_const_like(t, e->in[0], 0.0);
}

/* Not primitives: their forward is the caller's fn, so they have no
 * samples and live outside the op table, as ag_custom's row. */
static const ag_op_def op_checkpoint = {.name = "checkpoint", .forward = ckpt_forward,
                                        .backward = ckpt_backward, .vjp = ckpt_vjp};
static const ag_op_def op_checkpoint_out = {.name = "checkpoint_out", .forward = out_forward,
                                            .backward = out_backward, .vjp = out_vjp};

bool ag_is_checkpoint_op(const ag_op_def *d)
{
    return d == &op_checkpoint || d == &op_checkpoint_out || d == &ag_op_checkpoint_steps;
}

ag_status ag_tape_set_checkpoint_rng(ag_tape *tape, ag_rng *rng)
{
    if (!tape) {
        ag_set_last_error("ag_tape_set_checkpoint_rng: tape is NULL");
        return AG_ERR_ARG;
    }
    tape->ckpt_rng = rng;
    return AG_OK;
}
