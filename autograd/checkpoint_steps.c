/* checkpoint_steps.c — binomial checkpointing of a recurrence, as
 * Griewank's revolve: state_{i+1} = step(i, state_i), i = 0 .. T-1.
 * Legend: T = steps, f = snapshots (states stored at once besides the
 * first), n = tensors in a state.
 *
 * Forward runs the steps one at a time, dropping each as soon as the state
 * it made is staged; what stays is one "checkpoint_steps" entry (inputs:
 * the first state, then every tensor from outside the steps they read;
 * aux: a checksum of each state made, to catch a step that computes
 * otherwise in backward) and a kept copy of the last state, recorded as
 * ag_checkpoint's outputs are.
 * Backward reverses the steps by the binomial schedule: to reverse [a, b)
 * from a stored state a with f free slots, run forward (unrecorded) to the
 * split m, store state m, reverse [m, b) with f - 1 slots, then [a, m)
 * with f (m's slot is free again); with no free slot, run forward from a
 * to each step in turn.  The split minimises the forward steps, whose
 * minimum is known in closed form (cost), so backward runs T +
 * cost(T, f) steps.  Reversing step i ("turn") records it from state i,
 * hands the state it made the gradient of state i+1 (the buffer itself),
 * sweeps it, keeps the gradient of state i and drops the step: every
 * gradient gets the steps' contributions in the order a plain recording
 * would give them, so the gradients are the same bits. */
#include "autograd_internal.h"

#define MAX_STATE (1 << 16)

typedef struct steps_aux {
    ag_checkpoint_step_fn step;
    void *ctx;
    int64_t n_steps;
    int snapshots, n;     /* the first n inputs of the entry: the first state */
    ag_tensor **out;      /* (n) the kept last state */
    uint64_t *sum;        /* (T) checksum of the state step i made */
    ag_rng *rng;          /* the generator replayed, or NULL */
    ag_rng rng_at;        /* its state before step 0 */
} steps_aux;

static const char *const WHO = "ag_checkpoint_steps";

static uint64_t state_sum(ag_tensor *const *x, int n)
{
    uint64_t h = 0x9e3779b97f4a7c15u;
    for (int j = 0; j < n; j++) {
        const unsigned char *p = x[j]->data;
        size_t bytes = (size_t)x[j]->numel * ag_dtype_size(x[j]->dtype);
        for (size_t i = 0; i < bytes; i++)
            h = (h ^ p[i]) * 0x100000001b3u;
    }
    return h;
}

/* Calls step i on x (the state) into next, checking what it gave against
 * the first state's layout; false with the error kept. */
static bool run_step(ag_tape *t, const steps_aux *a, ag_tensor *const *first, int64_t i,
                     ag_tensor *const *x, ag_tensor **next)
{
    uint64_t gen = t->gen;
    int64_t n_scalar = ag_scalar_count(t);
    memset(next, 0, (size_t)a->n * sizeof *next);
    /* a step's entries come and go: an enclosing checkpoint's saves and
     * copies (ag_checkpoint_save) must not see them */
    struct ag_ckpt_saves *collect = t->ckpt_collect, *replay = t->ckpt_replay;
    t->ckpt_collect = t->ckpt_replay = NULL;
    ag_status st = a->step(t, i, a->n, x, next, a->ctx);
    t->ckpt_collect = collect;
    t->ckpt_replay = replay;
    if (t->gen != gen)
        return ag_fail(t, AG_ERR_STATE, "%s: step %lld reset the tape", WHO, (long long)i), false;
    if (st != AG_OK && t->status == AG_OK)
        ag_fail(t, st, "%s: step %lld returned %s", WHO, (long long)i, ag_status_str(st));
    if (t->status != AG_OK)
        return false;
    if (ag_scalar_count(t) != n_scalar)
        return ag_fail(t, AG_ERR_STATE, "%s: step %lld recorded scalar (ag_var) ops", WHO,
                       (long long)i), false;
    for (int j = 0; j < a->n; j++) {
        char arg[64];
        snprintf(arg, sizeof arg, "tensor #%d of the state step %lld made", j + 1, (long long)i);
        if (!ag_check_live(t, next[j], WHO, arg))
            return false;
        if (next[j]->dtype != first[j]->dtype || !ag_same_shape(next[j], first[j])) {
            char b1[96], b2[96];
            return ag_fail(t, AG_ERR_SHAPE, "%s: %s is %s, the first state's is %s", WHO, arg,
                           ag_shape_str(next[j], b1, sizeof b1),
                           ag_shape_str(first[j], b2, sizeof b2)), false;
        }
    }
    return true;
}

/* A state's tensors made after the tape's last mark, holding copies of
 * data (n buffers of the first state's layout). */
static ag_tensor **state_of(ag_tape *t, ag_tensor *const *first, int n, void *const *data,
                            bool grad)
{
    ag_tensor **x = ag_arena_alloc_align(t, (size_t)n * sizeof *x, 16);
    for (int j = 0; x && j < n; j++) {
        if (!(x[j] = ag_tensor_tape(t, first[j]->dtype, first[j]->ndim, first[j]->shape)))
            return NULL;
        memcpy(x[j]->data, data[j], (size_t)x[j]->numel * ag_dtype_size(x[j]->dtype));
        x[j]->requires_grad = grad;
    }
    return x;
}

/* n buffers of the first state's layout in arena a (the scratch arena in
 * forward, the tape's own in backward). */
static void **buffers(ag_tape *t, ag_arena *a, ag_tensor *const *first, int n)
{
    void **d = ag_arena_take(t, a, (size_t)n * sizeof *d, 16);
    for (int j = 0; d && j < n; j++) {
        size_t bytes = (size_t)first[j]->numel * ag_dtype_size(first[j]->dtype);
        if (!(d[j] = ag_arena_take(t, a, bytes ? bytes : 1, AG_ALIGN)))
            return NULL;
    }
    return d;
}

static void copy_state(void *const *dst, ag_tensor *const *src, int n)
{
    for (int j = 0; j < n; j++)
        memcpy(dst[j], src[j]->data, (size_t)src[j]->numel * ag_dtype_size(src[j]->dtype));
}

/* ---- forward ---- */

/* The entry's inputs so far (the first state, then what the steps read
 * from outside), in the scratch arena, grown by doubling. */
typedef struct {
    ag_tensor **in;
    int n, cap;
} input_list;

static bool gather(ag_tape *t, const ag_tape_mark *m, input_list *l)
{
    for (int64_t i = m->n_entries; i < t->n_entries; i++) {
        const ag_entry *e = &t->entries[i];
        for (int k = 0; k < e->n_in; k++) {
            ag_tensor *x = e->in[k];
            if (ag_tape_made_since(t, m, x) || ag_ckpt_listed(l->in, l->n, x))
                continue;
            if (l->n == l->cap) {
                ag_tensor **more = ag_arena_take(t, &t->scratch,
                                                 2 * (size_t)l->cap * sizeof *more, 16);
                if (!more)
                    return false;
                memcpy(more, l->in, (size_t)l->n * sizeof *more);
                l->in = more;
                l->cap *= 2;
            }
            l->in[l->n++] = x;
        }
    }
    return true;
}

/* Runs the T steps, each dropped past m once its state is staged in
 * `last` (heads: their headers); fills sums and the input list. */
static bool run_forward(ag_tape *t, const steps_aux *a, ag_tensor *const *state,
                        const ag_tape_mark *m, uint64_t *sums, input_list *l, void **last,
                        ag_tensor *heads)
{
    ag_tensor **next = ag_arena_take(t, &t->scratch, (size_t)a->n * sizeof *next, 16);
    if (!next)
        return false;
    ag_tensor *const *x = state;
    for (int64_t i = 0; i < a->n_steps; i++) {
        if (!run_step(t, a, state, i, x, next) || !gather(t, m, l))
            return false;
        sums[i] = state_sum(next, a->n);
        copy_state(last, next, a->n);
        for (int j = 0; j < a->n; j++)
            heads[j] = *next[j];
        ag_tape_rollback(t, m);
        if (i + 1 < a->n_steps) {
            ag_tensor **y = state_of(t, state, a->n, last, false);
            if (!y)
                return false;
            for (int j = 0; j < a->n; j++)
                y[j]->requires_grad = heads[j].requires_grad;
            x = y;
        }
    }
    return true;
}

/* The entry (when something needs a gradient) and the kept last state. */
static bool record(ag_tape *t, const steps_aux *proto, const input_list *l,
                   const uint64_t *sums, void *const *last, const ag_tensor *heads,
                   ag_tensor **out)
{
    bool needs = false;
    for (int k = 0; k < l->n; k++)
        needs |= l->in[k]->requires_grad;
    ag_tensor *token = NULL;
    steps_aux *a = NULL;
    if (needs && t->grad_enabled) {
        size_t T = (size_t)proto->n_steps, n = (size_t)proto->n;
        a = ag_arena_alloc(t, sizeof *a + n * sizeof *a->out + T * sizeof *a->sum);
        if (!a)
            return false;
        *a = *proto;
        a->out = (ag_tensor **)(a + 1);
        a->sum = (uint64_t *)(a->out + n);
        memcpy(a->sum, sums, T * sizeof *sums);
        ag_op_call c = {.def = &ag_op_checkpoint_steps, .in = l->in, .n_in = l->n,
                        .dtype = AG_F32, .ndim = 0, .aux = a};
        if (!(token = ag_op_run(t, &c)))
            return false;
    }
    for (int j = 0; j < proto->n; j++)
        if (!(out[j] = ag_ckpt_keep(t, token, &heads[j], last[j])))
            return false;
    if (a)
        memcpy(a->out, out, (size_t)proto->n * sizeof *out);
    return true;
}

static bool args_ok(ag_tape *t, ag_checkpoint_step_fn step, int64_t n_steps, int snapshots,
                    int n, ag_tensor *const *state, ag_tensor **out)
{
    if (!t)
        return ag_set_last_error("%s: tape is NULL", WHO), false;
    if (t->status != AG_OK)
        return false;
    if (!step)
        return ag_fail(t, AG_ERR_ARG, "%s: step is NULL", WHO), false;
    if (n_steps < 1 || n_steps > ((int64_t)1 << 40))
        return ag_fail(t, AG_ERR_ARG, "%s: n_steps is %lld (must be 1..2^40)", WHO,
                       (long long)n_steps), false;
    if (snapshots < 0 || snapshots > MAX_STATE)
        return ag_fail(t, AG_ERR_ARG, "%s: snapshots is %d (must be 0..%d)", WHO, snapshots,
                       MAX_STATE), false;
    if (n < 1 || n > MAX_STATE)
        return ag_fail(t, AG_ERR_ARG, "%s: n is %d (must be 1..%d)", WHO, n, MAX_STATE), false;
    if (!state || !out)
        return ag_fail(t, AG_ERR_NULL, "%s: %s is NULL", WHO, !state ? "state" : "out"), false;
    for (int j = 0; j < n; j++) {
        char arg[32];
        snprintf(arg, sizeof arg, "state #%d", j + 1);
        if (!ag_check_live(t, state[j], WHO, arg))
            return false;
    }
    return true;
}

ag_status ag_checkpoint_steps(ag_tape *t, ag_checkpoint_step_fn step, void *ctx, int64_t n_steps,
                              int snapshots, int n, ag_tensor *const *state, ag_tensor **out)
{
    if (!args_ok(t, step, n_steps, snapshots, n, state, out)) {
        if (out && n >= 1 && n <= MAX_STATE)
            memset(out, 0, (size_t)n * sizeof *out);
        return t ? t->status : AG_ERR_ARG;
    }
    steps_aux proto = {.step = step, .ctx = ctx, .n_steps = n_steps, .snapshots = snapshots,
                       .n = n, .rng = t->ckpt_rng};
    if (proto.rng)
        proto.rng_at = *proto.rng;
    ag_arena_mark sm = ag_arena_mark_now(&t->scratch);
    int64_t *bytes = ag_debug_bytes_save(t);
    ag_tape_mark m = ag_tape_mark_now(t);
    uint64_t *sums = ag_arena_take(t, &t->scratch, (size_t)n_steps * sizeof *sums, 16);
    input_list l = {ag_arena_take(t, &t->scratch, 2 * (size_t)n * sizeof *l.in, 16), n, 2 * n};
    void **last = buffers(t, &t->scratch, state, n);
    ag_tensor *heads = ag_arena_take(t, &t->scratch, (size_t)n * sizeof *heads, 16);
    /* out may be state: written last */
    ag_tensor **res = ag_arena_take(t, &t->scratch, (size_t)n * sizeof *res, 16);
    uint64_t gen = t->gen;
    bool ok = sums && l.in && last && heads && res;
    if (ok) {
        memcpy(l.in, state, (size_t)n * sizeof *l.in);
        ok = run_forward(t, &proto, state, &m, sums, &l, last, heads);
    }
    if (ok) { /* the steps are dropped: back at m */
        ag_debug_bytes_restore(t, bytes);
        ok = record(t, &proto, &l, sums, last, heads, res);
    }
    if (!ok && t->gen == gen)
        ag_tape_rollback(t, &m);
    if (ok)
        memcpy(out, res, (size_t)n * sizeof *out);
    else
        memset(out, 0, (size_t)n * sizeof *out);
    ag_arena_rollback(&t->scratch, sm);
    return t->status;
}

/* ---- backward: the binomial schedule ---- */

/* Forward steps the schedule needs to reverse l steps from a stored state
 * with f free slots (Griewank 1992): r l - beta(f + 2, r - 1), r the least
 * with beta(f + 1, r) >= l, beta(s, r) = C(s + r, s). */
static int64_t cost(int64_t l, int f)
{
    if (l <= 1)
        return 0;
    int64_t s = (int64_t)f + 1, beta = 1, r = 0; /* beta(s, r) */
    while (beta < l) {
        r++;
        beta = beta * (s + r) / r;
    }
    return r * l - beta * r / (s + 1); /* beta(s + 1, r - 1) = beta(s, r) r / (s + 1) */
}

/* Where to store the next state in [0, l), f > 0 free slots: the split
 * with the fewest forward steps. */
static int64_t split(int64_t l, int f)
{
    int64_t best = 1, least = INT64_MAX;
    for (int64_t k = 1; k < l; k++) {
        int64_t c = k + cost(l - k, f - 1) + cost(k, f);
        if (c < least) {
            least = c;
            best = k;
        }
    }
    return best;
}

/* The reversal in progress. */
typedef struct rev {
    ag_tape *t;
    const ag_entry *e;      /* the entry (a copy) */
    const steps_aux *a;
    ag_tensor *const *first; /* the first state: e->in */
    void ***slot;           /* (snapshots + 1) stored states; [0]: the first's data */
    ag_rng *slot_rng;       /* (snapshots + 1) the generator at each */
    void **cur;             /* the state being advanced */
    ag_tensor **g;          /* (n) gradient of the state after the next step to turn */
    ag_tensor **gbuf[2];    /* where the turns keep it, in turn */
    int side;
} rev;

static void load(rev *r, int k)
{
    for (int j = 0; j < r->a->n; j++)
        memcpy(r->cur[j], r->slot[k][j],
               (size_t)r->first[j]->numel * ag_dtype_size(r->first[j]->dtype));
    if (r->a->rng)
        *r->a->rng = r->slot_rng[k];
}

static void store(rev *r, int k)
{
    for (int j = 0; j < r->a->n; j++)
        memcpy(r->slot[k][j], r->cur[j],
               (size_t)r->first[j]->numel * ag_dtype_size(r->first[j]->dtype));
    if (r->a->rng)
        r->slot_rng[k] = *r->a->rng;
}

static bool same_sum(rev *r, ag_tensor *const *next, int64_t i)
{
    if (state_sum(next, r->a->n) == r->a->sum[i])
        return true;
    return ag_fail(r->t, AG_ERR_STATE, "%s: step %lld made another state when run again in "
                   "backward: it must compute the same values from the same inputs (register "
                   "the generator it draws from with ag_tape_set_checkpoint_rng)", WHO,
                   (long long)i), false;
}

/* Runs steps [from, to) on cur, unrecorded, each dropped once its state
 * is back in cur. */
static bool advance(rev *r, int64_t from, int64_t to)
{
    ag_tape *t = r->t;
    ag_tensor **next = ag_arena_alloc_align(t, (size_t)r->a->n * sizeof *next, 16);
    bool enabled = t->grad_enabled, ok = next != NULL;
    t->grad_enabled = false;
    struct ag_profile *prof = ag_debug_profile_hold(t); /* the entry's backward time */
    for (int64_t i = from; ok && i < to; i++) {
        ag_tape_mark m = ag_tape_mark_now(t);
        ag_tensor **x = state_of(t, r->first, r->a->n, r->cur, false);
        ok = x && run_step(t, r->a, r->first, i, x, next) && same_sum(r, next, i);
        if (ok)
            copy_state(r->cur, next, r->a->n);
        ag_tape_rollback(t, &m);
    }
    ag_debug_profile_release(t, prof);
    t->grad_enabled = enabled;
    return ok;
}

/* The state step i made takes g, the gradient of that state: the buffer
 * itself where the step made the tensor (as ag_checkpoint's outputs). */
static void seed(rev *r, const ag_tape_mark *m, ag_tensor **next)
{
    ag_tape *t = r->t;
    for (int j = 0; j < r->a->n && t->status == AG_OK; j++) {
        ag_tensor *g = r->g[j], *y = next[j];
        if (!g || !ag_needs_grad(t, y))
            continue;
        if (ag_tape_made_since(t, m, y) && !y->grad) {
            y->grad = g;
            continue;
        }
        void *d = ag_grad_data(t, y);
        for (int64_t k = 0; d && k < y->numel; k++) {
            if (y->dtype == AG_F64)
                ((double *)d)[k] += ((const double *)g->data)[k];
            else
                ((float *)d)[k] += ((const float *)g->data)[k];
        }
    }
}

/* Reverses step i from cur: records it, sweeps it with the gradient of
 * the state it made, keeps the gradient of its own state, drops it. */
static bool turn(rev *r, int64_t i)
{
    ag_tape *t = r->t;
    ag_tape_mark m = ag_tape_mark_now(t);
    ag_tensor *const *x = r->first;
    if (i > 0 && !(x = state_of(t, r->first, r->a->n, r->cur, true)))
        return false;
    for (int j = 0; i > 0 && j < r->a->n; j++)
        x[j]->mark = r->e->out->mark; /* on a path from wrt when the token is */
    ag_tensor **next = ag_arena_alloc_align(t, (size_t)r->a->n * sizeof *next, 16);
    bool enabled = t->grad_enabled;
    t->grad_enabled = true;
    struct ag_profile *prof = ag_debug_profile_hold(t);
    bool ok = next && run_step(t, r->a, r->first, i, x, next) && same_sum(r, next, i);
    ag_debug_profile_release(t, prof);
    t->grad_enabled = enabled;
    for (int64_t k = m.n_entries; ok && k < t->n_entries; k++) {
        const ag_entry *s = &t->entries[k];
        for (int q = 0; ok && q < s->n_in; q++) {
            if (ag_tape_made_since(t, &m, s->in[q]) ||
                ag_ckpt_listed(r->e->in, r->e->n_in, s->in[q]))
                continue;
            ag_fail(t, AG_ERR_STATE, "%s: step %lld read a tensor in backward that it did "
                    "not read in forward (input #%d of %s)", WHO, (long long)i, q + 1,
                    s->op->name);
            ok = false;
        }
    }
    if (ok) {
        if (t->sweep_id)
            ag_mark_range(t, m.n_entries, t->n_entries);
        seed(r, &m, next);
        ag_sweep_range(t, m.n_entries, t->n_entries, t->sweep_id ? "ag_gradients" : "ag_backward");
        ok = t->status == AG_OK;
    }
    for (int j = 0; ok && i > 0 && j < r->a->n; j++) {
        ag_tensor *g = x[j]->grad, *keep = r->gbuf[r->side][j];
        if (g)
            memcpy(keep->data, g->data, (size_t)g->numel * ag_dtype_size(g->dtype));
        r->g[j] = g ? keep : NULL;
    }
    r->side ^= 1;
    ag_tape_rollback(t, &m);
    return ok;
}

/* Reverses steps [a, b) from the state in slot k, with f slots free after
 * it. */
static bool reverse(rev *r, int64_t a, int64_t b, int k, int f)
{
    while (b - a > 1 && f > 0) {
        int64_t m = a + split(b - a, f);
        load(r, k);
        if (!advance(r, a, m))
            return false;
        store(r, k + 1);
        if (!reverse(r, m, b, k + 1, f - 1))
            return false;
        b = m;
    }
    for (int64_t i = b - 1; i >= a; i--) {
        load(r, k);
        if (!advance(r, a, i) || !turn(r, i))
            return false;
    }
    return true;
}

/* The slots, cur and the gradient buffers, before the schedule's marks:
 * they outlive every step it drops. */
static bool rev_init(rev *r, int f)
{
    ag_tape *t = r->t;
    const steps_aux *a = r->a;
    int n = a->n;
    r->slot = ag_arena_alloc_align(t, (size_t)(f + 1) * sizeof *r->slot, 16);
    r->slot_rng = ag_arena_alloc_align(t, (size_t)(f + 1) * sizeof *r->slot_rng, 16);
    r->g = ag_arena_alloc_align(t, (size_t)n * sizeof *r->g, 16);
    if (!r->slot || !r->slot_rng || !r->g || !(r->cur = buffers(t, &t->arena, r->first, n)))
        return false;
    r->slot[0] = ag_arena_alloc_align(t, (size_t)n * sizeof *r->slot[0], 16);
    for (int j = 0; r->slot[0] && j < n; j++)
        r->slot[0][j] = r->first[j]->data;
    r->slot_rng[0] = a->rng_at;
    for (int k = 1; k <= f && r->slot[0]; k++)
        if (!(r->slot[k] = buffers(t, &t->arena, r->first, n)))
            return false;
    for (int s = 0; s < 2; s++) {
        r->gbuf[s] = ag_arena_alloc_align(t, (size_t)n * sizeof *r->gbuf[s], 16);
        for (int j = 0; r->gbuf[s] && j < n; j++)
            if (!(r->gbuf[s][j] = ag_tensor_tape(t, r->first[j]->dtype, r->first[j]->ndim,
                                                 r->first[j]->shape)))
                return false;
        if (!r->gbuf[s])
            return false;
    }
    for (int j = 0; j < n; j++)
        r->g[j] = a->out[j]->grad;
    return r->slot[0] != NULL;
}

static void steps_backward(ag_tape *t, ag_entry *live)
{
    ag_entry e = *live; /* the steps' ops may move the entry array */
    const steps_aux *a = e.aux;
    for (int k = 0; k < e.n_in && t->status == AG_OK; k++)
        ag_grad_data(t, e.in[k]); /* before the marks: they outlive the steps */
    if (t->status != AG_OK)
        return;
    ag_tape_mark m = ag_tape_mark_now(t);
    ag_rng now = {{0}};
    if (a->rng)
        now = *a->rng;
    rev r = {.t = t, .e = &e, .a = a, .first = e.in};
    /* T - 1 slots store every state: more would stay unused */
    int f = a->snapshots < a->n_steps - 1 ? a->snapshots : (int)(a->n_steps - 1);
    if (rev_init(&r, f))
        reverse(&r, 0, a->n_steps, 0, f);
    if (a->rng) /* the caller's stream goes on where it was */
        *a->rng = now;
    ag_tape_rollback(t, &m);
}

static void steps_forward(ag_entry *e)
{
    *(float *)e->out->data = 0.0f; /* the token: the steps ran before the entry was made */
}

/* No recorded derivative: the sweep refuses create_graph through it
 * (ag_checkpoint's segments have one). */
const ag_op_def ag_op_checkpoint_steps = {.name = "checkpoint_steps", .forward = steps_forward,
                                          .backward = steps_backward};
