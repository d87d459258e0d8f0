/* custom.c — user-defined ops: one generic row ("custom") whose forward
 * and backward call the user's functions, kept in the entry's aux. */
#include "autograd_internal.h"

#define MAX_CUSTOM_INPUTS 8

typedef struct {
    const ag_custom_op *op;
    void *ctx;
} custom_aux;

static void custom_forward(ag_entry *e)
{
    const custom_aux *a = e->aux;
    a->op->forward(e->in, e->n_in, e->out, a->ctx);
}

static void custom_backward(ag_tape *tape, ag_entry *e)
{
    const custom_aux *a = e->aux;
    ag_tensor *gin[MAX_CUSTOM_INPUTS];
    for (int k = 0; k < e->n_in; k++)
        gin[k] = ag_grad_tensor(tape, e->in[k]);
    if (tape->status == AG_OK)
        a->op->backward(e->in, e->n_in, e->out, e->out->grad, gin, a->ctx);
}

static void custom_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const custom_aux *a = e->aux;
    if (!a->op->vjp) {
        ag_fail(tape, AG_ERR_STATE, "ag_gradients: custom op %s has no vjp, so "
                "create_graph cannot pass through it", a->op->name ? a->op->name : "?");
        return;
    }
    bool need[MAX_CUSTOM_INPUTS];
    for (int k = 0; k < e->n_in; k++)
        need[k] = ag_needs_grad(tape, e->in[k]);
    a->op->vjp(tape, e->in, e->n_in, e->out, gout, need, gin, a->ctx);
    for (int k = 0; k < e->n_in && tape->status == AG_OK; k++)
        if (gin[k] && (!need[k] || gin[k]->dtype != e->in[k]->dtype ||
                       !ag_same_shape(gin[k], e->in[k])))
            ag_fail(tape, AG_ERR_SHAPE, "ag_gradients: custom op %s: vjp gave gin[%d] "
                    "of the wrong shape or dtype, or one not asked for", a->op->name, k);
}

/* Not a primitive: it has no samples and lives outside the op table. */
static const ag_op_def op_custom = {.name = "custom", .forward = custom_forward,
                                    .backward = custom_backward, .vjp = custom_vjp};

ag_tensor *ag_custom(ag_tape *t, const ag_custom_op *op, ag_tensor *const *in, int n_in,
                     int out_ndim, const int64_t *out_shape, void *ctx)
{
    const char *name = op && op->name ? op->name : "ag_custom";
    char why[96] = "";
    if (!op)
        snprintf(why, sizeof why, "op is NULL");
    else if (!op->forward || !op->backward)
        snprintf(why, sizeof why, "op->%s is NULL", !op->forward ? "forward" : "backward");
    else if (n_in < 1 || n_in > MAX_CUSTOM_INPUTS)
        snprintf(why, sizeof why, "n_in is %d (must be 1..%d)", n_in, MAX_CUSTOM_INPUTS);
    else if (!in)
        snprintf(why, sizeof why, "in is NULL");
    if (why[0]) {
        if (!t)
            ag_set_last_error("ag_custom: tape is NULL");
        else if (t->status == AG_OK)
            ag_fail(t, AG_ERR_ARG, "ag_custom: %s%s%s", op && op->name ? op->name : "",
                    op && op->name ? ": " : "", why);
        return NULL;
    }
    if (!ag_check_inputs(t, name, n_in, in))
        return NULL;
    for (int k = 1; k < n_in; k++)
        if (!ag_check_same_dtype(t, name, in[0], in[k]))
            return NULL;
    int64_t numel;
    if (!ag_shape_valid(out_ndim, out_shape, &numel))
        return ag_fail(t, AG_ERR_SHAPE, "ag_custom: %s: bad output shape (ndim %d)", name,
                       out_ndim);
    custom_aux *aux = ag_arena_alloc_align(t, sizeof *aux, 16);
    if (!aux)
        return NULL;
    aux->op = op;
    aux->ctx = ctx;
    ag_op_call c = {.def = &op_custom, .in = in, .n_in = n_in, .dtype = in[0]->dtype,
                    .ndim = out_ndim, .shape = out_shape, .aux = aux};
    return ag_op_run(t, &c);
}
