/* inspect.c — the recorded graph as Graphviz DOT and as a text listing.
 * The entry list is already in execution order, so the part of the graph
 * that reaches the root is found in one backward pass over it. */
#include "autograd_internal.h"

#include <math.h>

/* uthash must not exit() on out of memory: a failed add leaves the node
 * out of the set, which add() detects by counting. */
#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) ag_mem_alloc(sz)
#define uthash_free(p, sz) ag_mem_free(p)
#include <uthash.h>

typedef struct tensor_node {
    const ag_tensor *t;
    int64_t producer;   /* entry index, or -1 for a leaf */
    UT_hash_handle hh;
} tensor_node;

static tensor_node *find(tensor_node *set, const ag_tensor *t)
{
    tensor_node *n;
    HASH_FIND_PTR(set, &t, n);
    return n;
}

static bool add(tensor_node **set, const ag_tensor *t, int64_t producer)
{
    if (find(*set, t))
        return true;
    tensor_node *n = ag_mem_alloc(sizeof *n);
    if (!n)
        return false;
    n->t = t;
    n->producer = producer;
    unsigned before = HASH_COUNT(*set);
    HASH_ADD_PTR(*set, t, n);
    if (HASH_COUNT(*set) != before + 1) {
        ag_mem_free(n);
        return false;
    }
    return true;
}

static void free_set(tensor_node **set)
{
    tensor_node *n, *tmp;
    HASH_ITER(hh, *set, n, tmp) {
        HASH_DEL(*set, n);
        ag_mem_free(n);
    }
}

static double grad_norm(const ag_tensor *t)
{
    double s = 0;
    for (int64_t i = 0; t->grad && i < t->numel; i++)
        s += ag_get(t->grad, i) * ag_get(t->grad, i);
    return sqrt(s);
}

static const char *dt_name(ag_dtype dt) { return dt == AG_F64 ? "f64" : "f32"; }

/* Leaf node: name, shape, dtype, requires grad, |grad|. */
static void dot_leaf(FILE *out, const ag_tensor *t)
{
    char shape[128];
    fprintf(out, "  t%p [shape=box, style=filled, fillcolor=\"%s\", label=\"%s\\n%s %s",
            (const void *)t, t->requires_grad ? "#ffe9b3" : "#eeeeee",
            t->name ? t->name : (t->persistent ? "tensor" : "tape tensor"),
            ag_shape_str(t, shape, sizeof shape), dt_name(t->dtype));
    if (t->requires_grad)
        fprintf(out, "\\nrequires grad");
    if (t->grad)
        fprintf(out, "\\n|grad| %.4g", grad_norm(t));
    fprintf(out, "\"];\n");
}

static void dot_entry(FILE *out, const ag_tape *tape, int64_t i, tensor_node *producers)
{
    const ag_entry *e = &tape->entries[i];
    fprintf(out, "  e%lld [shape=ellipse, label=\"%s", (long long)i, e->op->name);
    if (e->site)
        fprintf(out, "\\n%s:%d", e->site, e->line);
    if (e->out->grad)
        fprintf(out, "\\n|grad| %.4g", grad_norm(e->out));
    fprintf(out, "\"];\n");
    for (int k = 0; k < e->n_in; k++) {
        char shape[128];
        const tensor_node *p = find(producers, e->in[k]);
        ag_shape_str(e->in[k], shape, sizeof shape);
        if (p && p->producer >= 0)
            fprintf(out, "  e%lld -> e%lld [label=\"%s\"];\n", (long long)p->producer,
                    (long long)i, shape);
        else
            fprintf(out, "  t%p -> e%lld;\n", (const void *)e->in[k], (long long)i);
    }
}

ag_status ag_tape_dot(const ag_tape *tape, const ag_tensor *root, FILE *out)
{
    if (!tape || !root || !out) {
        ag_set_last_error("ag_tape_dot: %s is NULL", !tape ? "tape" : !root ? "root" : "out");
        return AG_ERR_ARG;
    }
    tensor_node *producers = NULL, *needed = NULL, *leaves = NULL;
    bool ok = true;
    for (int64_t i = 0; i < tape->n_entries && ok; i++)
        ok = add(&producers, tape->entries[i].out, i);
    ok = ok && add(&needed, root, -1);
    for (int64_t i = tape->n_entries - 1; i >= 0 && ok; i--) {
        const ag_entry *e = &tape->entries[i];
        if (!find(needed, e->out))
            continue;
        for (int k = 0; k < e->n_in && ok; k++) {
            const tensor_node *p = find(producers, e->in[k]);
            ok = add(&needed, e->in[k], -1) &&
                 (p || add(&leaves, e->in[k], -1));
        }
    }
    if (ok) {
        fprintf(out, "digraph tape {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n");
        tensor_node *n, *tmp;
        HASH_ITER(hh, leaves, n, tmp)
            dot_leaf(out, n->t);
        for (int64_t i = 0; i < tape->n_entries; i++)
            if (find(needed, tape->entries[i].out))
                dot_entry(out, tape, i, producers);
        const tensor_node *r = find(producers, root);
        char shape[128];
        fprintf(out, "  root [shape=doublecircle, label=\"root\\n%s\"];\n",
                ag_shape_str(root, shape, sizeof shape));
        if (r)
            fprintf(out, "  e%lld -> root;\n", (long long)r->producer);
        fprintf(out, "}\n");
    }
    free_set(&producers);
    free_set(&needed);
    free_set(&leaves);
    if (!ok) {
        ag_set_last_error("ag_tape_dot: out of memory");
        return AG_ERR_NOMEM;
    }
    return ferror(out) ? AG_ERR_IO : AG_OK;
}

ag_status ag_tape_print(const ag_tape *tape, FILE *out)
{
    if (!tape || !out) {
        ag_set_last_error("ag_tape_print: %s is NULL", !tape ? "tape" : "out");
        return AG_ERR_ARG;
    }
    fprintf(out, "tape: %lld entries, %lld scalar ops, %zu arena bytes in use\n",
            (long long)tape->n_entries, (long long)ag_scalar_count(tape),
            ag_tape_bytes_used(tape));
    for (int64_t i = 0; i < tape->n_entries; i++) {
        const ag_entry *e = &tape->entries[i];
        char shape[128];
        fprintf(out, "#%-4lld %-16s", (long long)i, e->op->name);
        for (int k = 0; k < e->n_in; k++)
            fprintf(out, "%s%s%s%s %s", k ? ", " : "", e->in[k]->name ? e->in[k]->name : "",
                    e->in[k]->name ? " " : "", ag_shape_str(e->in[k], shape, sizeof shape),
                    dt_name(e->in[k]->dtype));
        fprintf(out, " -> %s %s", ag_shape_str(e->out, shape, sizeof shape),
                dt_name(e->out->dtype));
        if (e->site)
            fprintf(out, "  @ %s:%d", e->site, e->line);
        fprintf(out, "\n");
    }
    return ferror(out) ? AG_ERR_IO : AG_OK;
}
