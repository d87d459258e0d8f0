/* grad.c — ag_gradients (torch.autograd.grad) and what is built on it:
 * Hessian-vector and Jacobian-vector products, dense Hessians and
 * Jacobians; and the plan of ag_backward's gradient-ready hook.
 *
 * Both sweeps walk the entries recorded before the call, from the end.
 * Fast: the raw backward kernels, into tape buffers (persistent tensors
 * get a per-sweep slot, so their own gradient buffers are not touched).
 * Recorded (create_graph): each op's vjp, whose ag_ ops are appended to
 * the same tape as the sweep goes; the gradient of a tape tensor is kept
 * in its grad pointer, that of a persistent one in its slot.  The new
 * entries lie past the sweep's start, so the sweep never visits them, and
 * a later backward or ag_gradients differentiates through them. */
#include "autograd_internal.h"

#include <stdatomic.h>

static _Atomic uint64_t sweep_counter;

static uint64_t sweep_new_id(void) { return atomic_fetch_add(&sweep_counter, 1) + 1; }

/* Marks the tensors that lie on a path from a wrt tensor (the wrt
 * themselves, then in tape order every output with a marked input), so
 * the sweep computes only the gradients the caller asked for.  A scalar
 * (ag_var) program can carry a path between entries; with one on the tape
 * every entry output is marked. */
static void mark_entries(ag_tape *t, uint64_t id, int64_t lo, int64_t hi)
{
    bool all = ag_scalar_count(t) > 0;
    for (int64_t i = lo; i < hi; i++) {
        ag_entry *e = &t->entries[i];
        bool on = all;
        for (int k = 0; k < e->n_in && !on; k++)
            on = e->in[k]->mark == id;
        if (on)
            e->out->mark = id;
    }
}

static void mark_paths(ag_tape *t, uint64_t id, int n, ag_tensor *const *wrt, int64_t end)
{
    for (int i = 0; i < n; i++)
        wrt[i]->mark = id;
    mark_entries(t, id, 0, end);
}

void ag_mark_range(ag_tape *t, int64_t lo, int64_t hi) { mark_entries(t, t->sweep_id, lo, hi); }

/* arg names the parameter; i >= 0 is an index into it, -1 a lone tensor */
static bool tensor_on_tape(ag_tape *t, const ag_tensor *x, const char *fn, const char *arg,
                           int i)
{
    char name[48];
    if (i >= 0)
        snprintf(name, sizeof name, "%s[%d]", arg, i);
    else
        snprintf(name, sizeof name, "%s", arg);
    return ag_check_live(t, x, fn, name);
}

static bool same_layout(const ag_tensor *a, const ag_tensor *b)
{
    return a->dtype == b->dtype && ag_same_shape(a, b);
}

static bool layout_matches(ag_tape *t, const char *fn, const char *what, int i,
                           const ag_tensor *got, const ag_tensor *want, const char *wname)
{
    if (same_layout(got, want))
        return true;
    char b1[128], b2[128];
    ag_fail(t, AG_ERR_SHAPE, "%s: %s[%d] is %s %s but %s is %s %s", fn, what, i,
            ag_shape_str(got, b1, sizeof b1), got->dtype == AG_F64 ? "f64" : "f32", wname,
            ag_shape_str(want, b2, sizeof b2), want->dtype == AG_F64 ? "f64" : "f32");
    return false;
}

/* The checks every entry point shares; out names its result parameter. */
static ag_status gradients_checks(ag_tape *t, const char *fn, ag_tensor *root,
                                  const ag_tensor *seed, int n, ag_tensor *const *wrt,
                                  ag_tensor **grads, const char *out)
{
    if (!t) {
        ag_set_last_error("%s: tape is NULL", fn);
        return AG_ERR_ARG;
    }
    if (!ag_tape_ok(t, fn))
        return t->status;
    if (!tensor_on_tape(t, root, fn, "root", -1))
        return t->status;
    if (n < 0) {
        ag_fail(t, AG_ERR_ARG, "%s: n is %d", fn, n);
        return t->status;
    }
    if (n > 0 && (!wrt || !grads)) {
        ag_fail(t, AG_ERR_NULL, "%s: %s is NULL (n is %d)", fn, !wrt ? "wrt" : out, n);
        return t->status;
    }
    for (int i = 0; i < n; i++)
        if (!tensor_on_tape(t, wrt[i], fn, "wrt", i))
            return t->status;
    if (seed) {
        if (!tensor_on_tape(t, seed, fn, "seed", -1))
            return t->status;
        if (!layout_matches(t, fn, "seed", 0, seed, root, "root"))
            return t->status;
    } else if (root->numel != 1) {
        char b[128];
        ag_fail(t, AG_ERR_SHAPE, "%s: root %s has %lld elements: give a seed of its shape",
                fn, ag_shape_str(root, b, sizeof b), (long long)root->numel);
        return t->status;
    }
    return AG_OK;
}

ag_tensor *ag_const_fill(ag_tape *tape, ag_dtype dt, int ndim, const int64_t *shape,
                         double (*fill)(const void *ctx, int64_t i), const void *ctx)
{
    ag_tensor *c = ag_tensor_tape(tape, dt, ndim, shape);
    if (!c)
        return NULL;
    for (int64_t i = 0; i < c->numel; i++)
        ag_set(c, i, fill(ctx, i));
    return c;
}

static double fill_value(const void *ctx, int64_t i)
{
    (void)i;
    return *(const double *)ctx;
}

ag_tensor *ag_const_like(ag_tape *tape, const ag_tensor *x, double v)
{
    return ag_const_fill(tape, x->dtype, x->ndim, x->shape, fill_value, &v);
}

enum { SMALL_N = 16 };

/* Room for n tensor pointers: on the stack for a few, else the arena. */
static ag_tensor **ptrs(ag_tape *t, ag_tensor **local, int n)
{
    return n <= SMALL_N ? local
                        : ag_arena_alloc_align(t, (size_t)n * sizeof(ag_tensor *), 16);
}

/* The gradient slot of x in the recorded sweep. */
static ag_tensor **slot_of(ag_tape *t, ag_tensor *x)
{
    if (!x->persistent)
        return &x->grad;
    if (x->sgrad_id != t->sweep_id) {
        x->sgrad = NULL;
        x->sgrad_id = t->sweep_id;
    }
    return &x->sgrad;
}

static void accumulate(ag_tape *t, ag_tensor *x, ag_tensor *g)
{
    ag_tensor **s = slot_of(t, x);
    *s = *s ? ag_add(t, *s, g) : g;
}

/* Seeds root (a 1, or the caller's seed tensor itself so that a seed that
 * requires grad is differentiated too) and runs the vjps from entry end-1
 * down.  Each entry is copied before its vjp runs: the vjp's own ops may
 * grow (move) the entry array. */
static double copy_elem(const void *ctx, int64_t i) { return ag_get(ctx, i); }

static void sweep_recorded(ag_tape *t, ag_tensor *root, const ag_tensor *seed, int64_t end)
{
    /* a seed that needs no gradient is copied, so the recording never
     * points at a persistent tensor the caller may free */
    ag_tensor *s = seed && seed->requires_grad ? (ag_tensor *)seed
                   : seed ? ag_const_fill(t, seed->dtype, seed->ndim, seed->shape, copy_elem, seed)
                          : ag_const_like(t, root, 1.0);
    if (!s)
        return;
    accumulate(t, root, s);
    ag_sweep_recorded_range(t, 0, end);
}

void ag_sweep_recorded_range(ag_tape *t, int64_t lo, int64_t hi)
{
    for (int64_t i = hi - 1; i >= lo && t->status == AG_OK; i--) {
        ag_entry e = t->entries[i];
        ag_tensor *gout = e.out->grad;
        if (!gout || e.out->mark != t->sweep_id)
            continue;
        if (e.ver && !ag_entry_inputs_unchanged(t, &e, "ag_gradients"))
            return;
        if (!e.op->vjp) {
            ag_fail(t, AG_ERR_STATE,
                    "ag_gradients: op %s has no recorded derivative, so create_graph "
                    "cannot pass through it", e.op->name);
            return;
        }
        ag_tensor *local[SMALL_N], **gin = ptrs(t, local, e.n_in);
        if (!gin)
            return;
        memset(gin, 0, (size_t)e.n_in * sizeof *gin);
        e.op->vjp(t, &e, gout, gin);
        for (int k = 0; k < e.n_in && t->status == AG_OK; k++) {
            if (!gin[k])
                continue;
            AG_ASSERT(same_layout(gin[k], e.in[k]));
            accumulate(t, e.in[k], gin[k]);
        }
    }
}

static void sweep_fast(ag_tape *t, ag_tensor *root, const ag_tensor *seed, int64_t end)
{
    int64_t n_scalar = ag_scalar_count(t);
    if (!ag_scalar_adjoints_clear(t, n_scalar))
        return;
    void *g = ag_grad_data(t, root);
    if (!g)
        return;
    for (int64_t i = 0; i < root->numel; i++) {
        double v = seed ? ag_get(seed, i) : 1.0;
        if (root->dtype == AG_F64)
            ((double *)g)[i] += v;
        else
            ((float *)g)[i] += (float)v;
    }
    ag_sweep(t, end, n_scalar, "ag_gradients");
}

/* The gradient the sweep left for x, or zeros when none reached it. */
static ag_tensor *result_of(ag_tape *t, ag_tensor *x)
{
    ag_tensor *g = ag_grad_peek(t, x);
    return g ? g : ag_const_like(t, x, 0.0);
}

ag_status ag_gradients(ag_tape *t, ag_tensor *root, const ag_tensor *seed, int n,
                       ag_tensor *const *wrt, ag_tensor **grads, bool create_graph)
{
    ag_status st = gradients_checks(t, "ag_gradients", root, seed, n, wrt, grads, "grads");
    if (st != AG_OK)
        return st;
    if (create_graph && ag_scalar_count(t) > 0)
        return ag_fail(t, AG_ERR_STATE, "ag_gradients: create_graph through scalar (ag_var) "
                       "ops is not supported; use ag_var_hvp"), t->status;
    int64_t end = t->n_entries;
    uint64_t id = sweep_new_id();
    mark_paths(t, id, n, wrt, end);
    for (int64_t i = 0; i < end; i++)
        t->entries[i].out->grad = NULL;
    for (int i = 0; i < n; i++)
        if (!wrt[i]->persistent && wrt[i]->requires_grad)
            wrt[i]->grad = NULL; /* a tape leaf, produced by no entry */
    uint64_t outer = t->sweep_id;
    bool enabled = t->grad_enabled;
    t->sweep_id = id;
    if (ag_needs_grad(t, root)) {
        if (create_graph) {
            t->grad_enabled = true;
            sweep_recorded(t, root, seed, end);
        } else {
            sweep_fast(t, root, seed, end);
        }
    }
    for (int i = 0; i < n && t->status == AG_OK; i++)
        grads[i] = result_of(t, wrt[i]);
    t->sweep_id = outer;
    t->grad_enabled = enabled;
    if (t->status != AG_OK)
        for (int i = 0; i < n; i++)
            grads[i] = NULL;
    return t->status;
}

/* ---- built on ag_gradients ---- */

/* sum over i of <a[i], b[i]> as a one-element tensor (recorded) */
static ag_tensor *dot_all(ag_tape *t, int n, ag_tensor *const *a, ag_tensor *const *b)
{
    ag_tensor *s = NULL;
    for (int i = 0; i < n; i++) {
        ag_tensor *d = ag_sum(t, ag_mul(t, a[i], b[i]), AG_ALL, false);
        s = s ? ag_add(t, s, d) : d;
    }
    return s;
}

ag_status ag_hvp(ag_tape *t, ag_tensor *root, int n, ag_tensor *const *wrt,
                 ag_tensor *const *v, ag_tensor **hv, bool create_graph)
{
    ag_status st = gradients_checks(t, "ag_hvp", root, NULL, n, wrt, hv, "hv");
    if (st != AG_OK)
        return st;
    if (n > 0 && !v)
        return ag_fail(t, AG_ERR_NULL, "ag_hvp: v is NULL"), t->status;
    for (int i = 0; i < n; i++)
        if (!tensor_on_tape(t, v[i], "ag_hvp", "v", i) ||
            !layout_matches(t, "ag_hvp", "v", i, v[i], wrt[i], "its wrt"))
            return t->status;
    ag_tensor *local[SMALL_N], **g = ptrs(t, local, n);
    if (!g)
        return t->status;
    st = ag_gradients(t, root, NULL, n, wrt, g, true);
    if (st != AG_OK)
        return st;
    ag_tensor *s = dot_all(t, n, g, v);
    if (!s)
        return t->status;
    return ag_gradients(t, s, NULL, n, wrt, hv, create_graph);
}

ag_status ag_jvp(ag_tape *t, ag_tensor *root, int n, ag_tensor *const *wrt,
                 ag_tensor *const *u, ag_tensor **jv, bool create_graph)
{
    ag_status st = gradients_checks(t, "ag_jvp", root, root, n, wrt, jv, "jv");
    if (st != AG_OK)
        return st;
    if (!jv)
        return ag_fail(t, AG_ERR_NULL, "ag_jvp: jv is NULL"), t->status;
    if (n > 0 && !u)
        return ag_fail(t, AG_ERR_NULL, "ag_jvp: u is NULL"), t->status;
    for (int i = 0; i < n; i++)
        if (!tensor_on_tape(t, u[i], "ag_jvp", "u", i) ||
            !layout_matches(t, "ag_jvp", "u", i, u[i], wrt[i], "its wrt"))
            return t->status;
    /* w: a tape leaf of root's shape; J^T w is linear in w, and
     * d <J^T w, u> / dw = J u whatever w's value. */
    ag_tensor *w = ag_const_like(t, root, 0.0);
    if (!w)
        return t->status;
    w->requires_grad = true;
    ag_tensor *local[SMALL_N], **g = ptrs(t, local, n);
    if (!g)
        return t->status;
    st = ag_gradients(t, root, w, n, wrt, g, true);
    if (st != AG_OK)
        return st;
    ag_tensor *s = dot_all(t, n, g, u);
    if (!s) /* n == 0, or no path: J u is zero */
        return t->status != AG_OK ? t->status
                                  : (*jv = ag_const_like(t, root, 0.0)) ? AG_OK : t->status;
    return ag_gradients(t, s, NULL, 1, &w, jv, create_graph);
}

/* Row r of d out / d x as an [numel(x)] tensor, by one seeded sweep. */
static ag_tensor *jacobian_row(ag_tape *t, ag_tensor *out, ag_tensor *x, int64_t r)
{
    ag_tensor *seed = ag_const_like(t, out, 0.0), *g = NULL;
    if (!seed)
        return NULL;
    ag_set(seed, r, 1.0);
    if (ag_gradients(t, out, seed, 1, &x, &g, false) != AG_OK)
        return NULL;
    return g;
}

static ag_status dense_rows(ag_tape *t, const char *fn, ag_tensor *out, ag_tensor *x,
                            ag_tensor **res)
{
    if (!res)
        return ag_fail(t, AG_ERR_NULL, "%s: result pointer is NULL", fn), t->status;
    *res = NULL;
    int64_t shape[2] = {out->numel, x->numel};
    ag_tensor *m = ag_tensor_tape(t, x->dtype, 2, shape);
    if (!m)
        return t->status;
    for (int64_t r = 0; r < out->numel; r++) {
        ag_tensor *row = jacobian_row(t, out, x, r);
        if (!row)
            return t->status;
        for (int64_t j = 0; j < x->numel; j++)
            ag_set(m, r * x->numel + j, ag_get(row, j));
    }
    *res = m;
    return AG_OK;
}

/* x and the result pointer by their own names, then the shared checks */
static ag_status dense_checks(ag_tape *t, const char *fn, ag_tensor *root,
                              const ag_tensor *seed, ag_tensor *x, ag_tensor **res,
                              const char *out)
{
    if (t && t->status == AG_OK && !x)
        return ag_fail(t, AG_ERR_NULL, "%s: x is NULL", fn), t->status;
    if (t && t->status == AG_OK && !res)
        return ag_fail(t, AG_ERR_NULL, "%s: %s is NULL", fn, out), t->status;
    if (t && t->status == AG_OK && !tensor_on_tape(t, x, fn, "x", -1))
        return t->status;
    return gradients_checks(t, fn, root, seed, 1, &x, res, out);
}

ag_status ag_jacobian(ag_tape *t, ag_tensor *root, ag_tensor *x, ag_tensor **jac)
{
    ag_status st = dense_checks(t, "ag_jacobian", root, root, x, jac, "jac");
    return st != AG_OK ? st : dense_rows(t, "ag_jacobian", root, x, jac);
}

ag_status ag_hessian(ag_tape *t, ag_tensor *root, ag_tensor *x, ag_tensor **h)
{
    ag_status st = dense_checks(t, "ag_hessian", root, NULL, x, h, "h");
    if (st != AG_OK)
        return st;
    ag_tensor *g;
    if (ag_gradients(t, root, NULL, 1, &x, &g, true) != AG_OK)
        return t->status;
    /* rows of the Jacobian of the gradient: H is symmetric */
    return dense_rows(t, "ag_hessian", g, x, h);
}

/* ---- the gradient-ready hook ---- */

void ag_tape_set_grad_ready(ag_tape *tape, ag_grad_ready_fn fn, void *ctx)
{
    if (!tape) {
        ag_set_last_error("ag_tape_set_grad_ready: tape is NULL");
        return;
    }
    tape->ready_fn = fn;
    tape->ready_ctx = fn ? ctx : NULL;
}

static bool is_ready_leaf(const ag_tensor *x) { return x->persistent && x->requires_grad; }

/* Open addressing on the tensor's address: slot of x in a table of 2^bits. */
static size_t leaf_slot(ag_tensor *const *table, int bits, const ag_tensor *x)
{
    size_t mask = ((size_t)1 << bits) - 1;
    size_t h = (size_t)(((uint64_t)(uintptr_t)x * 0x9e3779b97f4a7c15u) >> (64 - bits));
    while (table[h] && table[h] != x)
        h = (h + 1) & mask;
    return h;
}

/* One forward walk: the first entry to read a leaf is its earliest reader
 * (a hash set of the leaves seen, so a leaf read by many entries costs one
 * probe each). */
ag_ready_plan *ag_ready_plan_new(ag_tape *t, int64_t end)
{
    int64_t cap = 0;
    for (int64_t i = 0; i < end; i++)
        for (int k = 0; t->entries[i].ver && k < t->entries[i].n_in; k++)
            cap += is_ready_leaf(t->entries[i].in[k]);
    int bits = 4;
    while (((int64_t)1 << bits) < 2 * cap)
        bits++;
    size_t slots = (size_t)1 << bits;
    ag_ready_plan *p = ag_arena_alloc(t, sizeof *p);
    ag_tensor **table = ag_arena_calloc(t, slots * sizeof *table);
    if (!p || !table)
        return NULL;
    p->leaf = ag_arena_alloc(t, (size_t)cap * sizeof *p->leaf);
    p->at = ag_arena_alloc(t, (size_t)cap * sizeof *p->at);
    if (!p->leaf || !p->at)
        return NULL;
    p->fn = t->ready_fn;
    p->ctx = t->ready_ctx;
    p->n = 0;
    for (int64_t i = 0; i < end; i++) {
        const ag_entry *e = &t->entries[i];
        for (int k = 0; e->ver && k < e->n_in; k++) {
            ag_tensor *x = e->in[k];
            if (!is_ready_leaf(x))
                continue;
            size_t h = leaf_slot(table, bits, x);
            if (table[h])
                continue;
            table[h] = x;
            p->leaf[p->n] = x;
            p->at[p->n++] = i;
        }
    }
    return p;
}

int64_t ag_ready_fire(ag_tape *t, ag_ready_plan *p, int64_t i)
{
    while (p->n > 0 && (i < 0 || p->at[p->n - 1] == i) && t->status == AG_OK) {
        int64_t lo = p->n - 1;
        while (lo > 0 && p->at[lo - 1] == p->at[p->n - 1])
            lo--;
        p->fn(p->leaf + lo, (int)(p->n - lo), p->ctx);
        p->n = lo;
    }
    return p->n > 0 ? p->at[p->n - 1] : -1;
}
