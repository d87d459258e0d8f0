/* tape.c — the arena, the append-only entry list, recording an op, and the
 * reverse sweep.  The entry list is in execution order, so walking it
 * backwards is a valid topological order: no sort, no recursion. */
#include "autograd_internal.h"

#define BLOCK_MIN ((size_t)1 << 20)

ag_tape *ag_tape_new(void)
{
    ag_tape *t = ag_mem_calloc(sizeof *t);
    if (!t) {
        ag_set_last_error("ag_tape_new: out of memory");
        return NULL;
    }
    t->grad_enabled = true;
    return t;
}


void ag_tape_free(ag_tape *tape)
{
    if (!tape)
        return;
    for (ag_block *b = tape->first, *next; b; b = next) {
        next = b->next;
        ag_mem_free(b);
    }
    ag_mem_free(tape->entries);
    ag_mem_free(tape->prof);
    ag_scalar_free(tape);
    ag_mem_free(tape);
}

void ag_tape_reset(ag_tape *tape)
{
    if (!tape)
        return;
    tape->cur = tape->first;
    if (tape->cur)
        tape->cur->used = 0;
    tape->n_entries = 0;
    ag_scalar_reset(tape);
    tape->status = AG_OK;
    tape->msg[0] = '\0';
}

void ag_tape_set_grad_enabled(ag_tape *tape, bool on)
{
    if (tape)
        tape->grad_enabled = on;
}

bool ag_tape_grad_enabled(const ag_tape *tape) { return tape && tape->grad_enabled; }
ag_status ag_tape_status(const ag_tape *tape) { return tape ? tape->status : AG_ERR_ARG; }
int64_t ag_tape_entries(const ag_tape *tape) { return tape ? tape->n_entries : 0; }
size_t ag_tape_bytes_reserved(const ag_tape *tape) { return tape ? tape->reserved : 0; }

const char *ag_tape_error(const ag_tape *tape)
{
    if (!tape)
        return "tape is NULL";
    return tape->status == AG_OK ? NULL : tape->msg;
}

size_t ag_tape_bytes_used(const ag_tape *tape)
{
    size_t n = 0;
    if (!tape || !tape->cur)
        return 0;
    for (ag_block *b = tape->first; b != tape->cur; b = b->next)
        n += b->size;
    return n + tape->cur->used;
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

void *ag_tape_fail(ag_tape *tape, ag_status s, const char *fmt, ...)
{
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

/* Slow path: moves on to the blocks an earlier step left behind, and
 * appends a new block only when none of them fits. */
static void *arena_next_block(ag_tape *tape, size_t size)
{
    ag_block *b = tape->cur;
    while (b && b->next) {
        b = b->next;
        b->used = 0;
        if (b->size >= size)
            break;
    }
    if (!b || b->size - b->used < size) {
        size_t want = tape->reserved > BLOCK_MIN ? tape->reserved : BLOCK_MIN;
        if (want < size)
            want = size;
        ag_block *nb = block_new(want);
        if (!nb)
            return ag_fail(tape, AG_ERR_NOMEM, "tape arena: out of memory for %zu bytes",
                           size);
        tape->reserved += want;
        if (b) {
            nb->next = b->next;
            b->next = nb;
        } else {
            tape->first = nb;
        }
        b = nb;
    }
    tape->cur = b;
    void *p = b->mem + b->used;
    b->used += size;
    return p;
}

void *ag_arena_alloc_align(ag_tape *tape, size_t size, size_t align)
{
    ag_block *b = tape->cur;
    if (b) {
        size_t at = (b->used + align - 1) & ~(align - 1);
        if (at + size <= b->size) {
            b->used = at + size;
            return b->mem + at;
        }
    }
    return arena_next_block(tape, (size + AG_ALIGN - 1) / AG_ALIGN * AG_ALIGN);
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

/* ---- recording ---- */

bool ag_check_inputs(ag_tape *tape, const char *op, int n, ag_tensor *const *in)
{
    if (!tape) {
        ag_set_last_error("%s: tape is NULL", op);
        return false;
    }
    if (tape->status != AG_OK)
        return false;
    for (int i = 0; i < n; i++) {
        if (!in[i]) {
            ag_fail(tape, AG_ERR_NULL, "%s: input #%d is NULL", op, i + 1);
            return false;
        }
        if (in[i]->tape && in[i]->tape != tape) {
            ag_fail(tape, AG_ERR_ARG, "%s: input #%d belongs to another tape", op, i + 1);
            return false;
        }
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

ag_tensor *ag_op_run(ag_tape *tape, const ag_op_call *c)
{
    ag_tensor *out = ag_tensor_tape(tape, c->dtype, c->ndim, c->shape);
    if (!out)
        return NULL;
    bool needs_grad = false;
    for (int i = 0; i < c->n_in; i++)
        needs_grad |= c->in[i]->requires_grad;
    bool record = needs_grad && tape->grad_enabled;

    ag_entry local, *e = record ? entry_append(tape) : &local;
    if (!e)
        return NULL;
    e->op = c->def;
    e->out = out;
    e->smark = ag_scalar_count(tape);
    e->site = NULL;
    e->line = 0;
    e->n_in = c->n_in;
    e->in = (ag_tensor **)c->in;
    if (record) {
        e->in = ag_arena_alloc_align(tape, (size_t)c->n_in * sizeof *e->in, 16);
        if (!e->in) {
            tape->n_entries--;
            return NULL;
        }
        memcpy(e->in, c->in, (size_t)c->n_in * sizeof *e->in);
    }
    AG_ASSERT(c->attr_size <= sizeof e->attr);
    if (c->attr_size)
        memcpy(e->attr.bytes, c->attr, c->attr_size);
    e->aux = c->aux_bytes ? ag_arena_calloc(tape, c->aux_bytes) : c->aux;
    if (c->aux_bytes && !e->aux) {
        if (record)
            tape->n_entries--;
        return NULL;
    }
    if (tape->debug) {
        ag_debug_mark m = ag_debug_begin(tape);
        c->def->forward(e);
        ag_debug_forward(tape, e, m);
        if (tape->status != AG_OK)
            return NULL;
    } else {
        c->def->forward(e);
    }
    out->requires_grad = record;
    return out;
}

/* ---- the reverse sweep ---- */

bool ag_needs_grad(const ag_tape *tape, const ag_tensor *x)
{
    return x->requires_grad && (!tape->sweep_id || x->mark == tape->sweep_id);
}

/* ag_gradients' slot for a persistent tensor: a tape buffer for this
 * sweep, so the persistent gradient is never touched. */
static void *sweep_grad(ag_tape *tape, ag_tensor *x)
{
    if (x->sgrad_id != tape->sweep_id) {
        ag_tensor *g = ag_tensor_tape(tape, x->dtype, x->ndim, x->shape);
        if (!g)
            return NULL;
        memset(g->data, 0, (size_t)x->numel * ag_dtype_size(x->dtype));
        x->sgrad = g;
        x->sgrad_id = tape->sweep_id;
    }
    return x->sgrad->data;
}

ag_tensor *ag_grad_tensor(ag_tape *tape, ag_tensor *x)
{
    if (!ag_grad_data(tape, x))
        return NULL;
    return x->persistent && tape->sweep_id ? x->sgrad : x->grad;
}

void *ag_grad_data(ag_tape *tape, ag_tensor *x)
{
    if (!ag_needs_grad(tape, x))
        return NULL;
    if (x->persistent && tape->sweep_id)
        return sweep_grad(tape, x);
    if (x->grad)
        return x->grad->data;
    size_t bytes = (size_t)x->numel * ag_dtype_size(x->dtype);
    ag_tensor *g;
    if (x->persistent) {
        g = ag_tensor_new(x->dtype, x->ndim, x->shape);
        if (!g)
            return ag_fail(tape, AG_ERR_NOMEM, "backward: out of memory for a gradient");
    } else {
        g = ag_tensor_tape(tape, x->dtype, x->ndim, x->shape);
        if (!g)
            return NULL;
        memset(g->data, 0, bytes);
    }
    x->grad = g;
    return g->data;
}

void ag_sweep(ag_tape *tape, int64_t e_end, int64_t s_end)
{
    /* scalar ops recorded after entry i run before it in reverse */
    int64_t s_hi = s_end;
    for (int64_t i = e_end - 1; i >= 0 && tape->status == AG_OK; i--) {
        ag_entry *e = &tape->entries[i];
        if (e->smark < s_hi) {
            ag_scalar_reverse(tape, e->smark, s_hi);
            s_hi = e->smark;
        }
        if (e->out->grad) {
            if (tape->debug)
                ag_debug_backward(tape, e);
            else
                e->op->backward(tape, e);
        }
    }
    if (s_hi > 0 && tape->status == AG_OK)
        ag_scalar_reverse(tape, 0, s_hi);
}

static ag_status backward_from(ag_tape *tape, ag_tensor *root, const ag_tensor *seed)
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
    ag_sweep(tape, tape->n_entries, n_scalar);
    return tape->status;
}

static bool backward_checks(ag_tape *tape, const ag_tensor *root, const char *fn)
{
    if (!tape) {
        ag_set_last_error("%s: tape is NULL", fn);
        return false;
    }
    if (tape->status != AG_OK)
        return false;
    if (!root) {
        ag_fail(tape, AG_ERR_NULL, "%s: root is NULL", fn);
        return false;
    }
    if (root->tape && root->tape != tape) {
        ag_fail(tape, AG_ERR_ARG, "%s: root belongs to another tape", fn);
        return false;
    }
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
    return backward_from(tape, root, NULL);
}

ag_status ag_backward_seeded(ag_tape *tape, ag_tensor *root, const ag_tensor *seed)
{
    if (!backward_checks(tape, root, "ag_backward_seeded"))
        return tape ? tape->status : AG_ERR_ARG;
    if (!seed) {
        ag_fail(tape, AG_ERR_NULL, "ag_backward_seeded: seed is NULL");
        return tape->status;
    }
    if (!ag_same_shape(root, seed) || root->dtype != seed->dtype) {
        char b1[128], b2[128];
        ag_fail(tape, AG_ERR_SHAPE,
                "ag_backward_seeded: seed %s %s does not match root %s %s",
                ag_shape_str(seed, b1, sizeof b1), seed->dtype == AG_F64 ? "f64" : "f32",
                ag_shape_str(root, b2, sizeof b2), root->dtype == AG_F64 ? "f64" : "f32");
        return tape->status;
    }
    return backward_from(tape, root, seed);
}
