/* ops_attention_qkv.c — self-attention over one packed projection,
 *   qkv [..., T, 3C] -> out [..., T, C],
 * where qkv is x W_in^T + b_in as nn.MultiheadAttention computes it: q, k
 * and v side by side along the last dim, and within each the H heads of
 * width D = C / H side by side; the output has the heads side by side
 * again, ready for the out-projection.  It is ag_attention on
 * q, k, v = the heads of qkv ([..., H, T, D] each), with the heads merged
 * back, but without the reshape, permute and slice copies (and their
 * gradients) around it: the kernels read each head's rows in place, 3C
 * apart, and write the output and the gradient of qkv the same way.  In
 * the GPT of examples/charlm those copies were 6% of a training step.
 * The recorded derivative builds q, k, v by those ops and reuses
 * ag_attention's. */
#include "ops_attention_internal.h"

#include <math.h>
#include <string.h>

static attn_geom qkv_geom(const ag_tensor *qkv, const ag_tensor *mask, int64_t H)
{
    int lead = qkv->ndim - 2;
    int64_t T = qkv->shape[lead], C = qkv->shape[lead + 1] / 3, D = C / H;
    attn_geom g = {.B = H, .Tq = T, .Tk = T, .D = D, .Dv = D, .heads = H, .nb = lead + 1};
    g.lq = g.lk = g.lv = (attn_lay){T * 3 * C, D, 3 * C};
    g.lo = (attn_lay){T * C, D, C};
    for (int d = 0; d < lead; d++) {
        g.bshape[d] = qkv->shape[d];
        g.B *= qkv->shape[d];
    }
    g.bshape[lead] = H;
    if (mask)
        ag_attn_mask_strides(&g, mask);
    return g;
}

static attn_geom entry_geom(const ag_entry *e)
{
    const attn_attr *a = AG_ATTR(e, attn_attr);
    return qkv_geom(e->in[0], a->has_mask ? e->in[1] : NULL, a->heads);
}

/* q, k, v start 0, C and 2C elements into the row of base. */
static void qkv_bases(const ag_tensor *qkv, const void *base, const void **out)
{
    size_t third = (size_t)(qkv->shape[qkv->ndim - 1] / 3) * ag_dtype_size(qkv->dtype);
    for (int i = 0; i < 3; i++)
        out[i] = base ? (const unsigned char *)base + i * third : NULL;
}

static void attention_qkv_forward(ag_entry *e)
{
    attn_geom g = entry_geom(e);
    attn_bases p = {{NULL}, {NULL}};
    qkv_bases(e->in[0], e->in[0]->data, p.in);
    ag_attn_run(e, &g, &p, false);
}

static void attention_qkv_backward(ag_tape *tape, ag_entry *e)
{
    void *d = ag_grad_data(tape, e->in[0]);
    if (!d)
        return;
    attn_geom g = entry_geom(e);
    attn_bases p = {{NULL}, {NULL}};
    qkv_bases(e->in[0], e->in[0]->data, p.in);
    qkv_bases(e->in[0], d, (const void **)p.grads);
    ag_attn_run(e, &g, &p, true);
}

/* ---- the recorded derivative ---- */

/* x [L..., T, c H D] -> [L..., c, H, T, D]: the heads of c projections. */
static ag_tensor *heads_of(ag_tape *t, ag_tensor *x, int64_t c, int64_t H)
{
    int lead = x->ndim - 2, nd = lead + 4;
    int64_t shape[AG_MAX_DIMS];
    int perm[AG_MAX_DIMS];
    memcpy(shape, x->shape, (size_t)lead * sizeof *shape);
    int64_t T = x->shape[lead], D = x->shape[lead + 1] / c / H;
    shape[lead] = T, shape[lead + 1] = c, shape[lead + 2] = H, shape[lead + 3] = D;
    for (int d = 0; d < lead; d++)
        perm[d] = d;
    perm[lead] = lead + 1, perm[lead + 1] = lead + 2, perm[lead + 2] = lead,
    perm[lead + 3] = lead + 3;
    return ag_permute(t, ag_reshape(t, x, nd, shape), perm);
}

/* The inverse of heads_of: [L..., c, H, T, D] -> [L..., T, c H D]. */
static ag_tensor *heads_merged(ag_tape *t, ag_tensor *h, int lead)
{
    int64_t shape[AG_MAX_DIMS];
    int perm[AG_MAX_DIMS];
    memcpy(shape, h->shape, (size_t)lead * sizeof *shape);
    for (int d = 0; d < lead; d++)
        perm[d] = d;
    perm[lead] = lead + 2, perm[lead + 1] = lead, perm[lead + 2] = lead + 1,
    perm[lead + 3] = lead + 3;
    shape[lead] = h->shape[lead + 2];
    shape[lead + 1] = h->shape[lead] * h->shape[lead + 1] * h->shape[lead + 3];
    return ag_reshape(t, ag_permute(t, h, perm), lead + 2, shape);
}

/* q, k, v = the heads of qkv; dq, dk, dv as ag_attention's, merged back
 * into the layout of qkv. */
static void attention_qkv_vjp(ag_tape *t, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    ag_tensor *qkv = e->in[0];
    const attn_attr *a = AG_ATTR(e, attn_attr);
    int lead = qkv->ndim - 2;
    ag_tensor *h[3], *g[3] = {NULL, NULL, NULL};
    if (ag_split(t, heads_of(t, qkv, 3, a->heads), 3, (const int64_t[]){1, 1, 1}, lead, h) !=
        AG_OK)
        return;
    for (int i = 0; i < 3; i++)
        h[i] = ag_squeeze(t, h[i], lead);                           /* [L..., H, T, D] */
    ag_tensor *go = ag_squeeze(t, heads_of(t, gout, 1, a->heads), lead);
    const bool want[3] = {true, true, true};
    ag_attn_vjp(t, e, h[0], h[1], h[2], a->has_mask ? e->in[1] : NULL, go, want, g);
    if (g[0] && g[1] && g[2])
        gin[0] = heads_merged(t, ag_stack(t, g, 3, lead), lead);
}

/* ---- the call ---- */

/* qkv [..., T, 3C] with 3C a multiple of 3 H; false with the error kept. */
static bool qkv_check(ag_tape *t, const ag_tensor *qkv, int64_t H)
{
    static const char *fn = "ag_attention_qkv";
    char b[128];
    if (H < 1) {
        ag_fail(t, AG_ERR_ARG, "%s: num_heads = %lld (at least 1)", fn, (long long)H);
        return false;
    }
    /* the recorded derivative splits the last dim in three (q k v, heads,
     * D); heads of width 0 only as one head (so heads * rows stays in the
     * element count) */
    int64_t last = qkv->ndim ? qkv->shape[qkv->ndim - 1] : 0;
    if (qkv->ndim < 2 || qkv->ndim > AG_MAX_DIMS - 2 || last % 3 != 0 || last / 3 % H != 0 ||
        (last == 0 && H != 1)) {
        ag_fail(t, AG_ERR_SHAPE, "%s: qkv %s is not [..., T, 3 * num_heads * D] with "
                "num_heads = %lld (2 to %d dims)", fn, ag_shape_str(qkv, b, sizeof b),
                (long long)H, AG_MAX_DIMS - 2);
        return false;
    }
    return true;
}

ag_tensor *ag_attention_qkv(ag_tape *t, ag_tensor *qkv, int64_t num_heads,
                            const ag_tensor *mask, bool causal, double scale)
{
    ag_tensor *in[2] = {qkv, (ag_tensor *)mask}; /* mask is only read */
    int n_in = mask ? 2 : 1;
    if (!ag_check_inputs(t, "ag_attention_qkv", n_in, in) || !qkv_check(t, qkv, num_heads))
        return NULL;
    attn_geom g = qkv_geom(qkv, NULL, num_heads);
    int nd = qkv->ndim;
    int64_t scores[AG_MAX_DIMS];
    memcpy(scores, g.bshape, (size_t)g.nb * sizeof *scores);
    scores[g.nb] = scores[g.nb + 1] = g.Tq;
    if (mask && (!ag_check_same_dtype(t, "ag_attention_qkv", qkv, mask) ||
                 !ag_attn_check_mask(t, "ag_attention_qkv", mask, g.nb + 2, scores)))
        return NULL;
    if (!isfinite(scale))
        return ag_fail(t, AG_ERR_ARG, "ag_attention_qkv: scale %g is not finite", scale);
    attn_attr at = {scale != 0 ? scale : g.D > 0 ? 1 / sqrt((double)g.D) : 1, causal,
                    mask != NULL, num_heads};
    if (mask)
        ag_attn_mask_strides(&g, mask);
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, qkv->shape, sizeof shape);
    shape[nd - 1] /= 3;
    return ag_attn_record(t, &ag_op_attention_qkv, in, n_in, &at, &g, nd, shape);
}

/* ---- samples ----
 * iarg: causal, heads, mask kind (0 none, 1 (T, T), 2 (L0, 1, 1, T) key
 * padding); farg: scale.  Masks keep key 0 visible to every row. */

static ag_tensor *attention_qkv_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    const ag_op_sample *s = ctx;
    return ag_attention_qkv(t, in[0], s->iarg[1], s->n_in > 1 ? in[1] : NULL, s->iarg[0],
                            s->farg[0]);
}

static bool attention_qkv_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    static const struct {
        int lead;
        int64_t l[2], T, H, D;
        bool causal;
        int mask;
        double scale;
    } cases[] = {
        {1, {2}, 3, 2, 2, false, 0, 0},       {0, {0}, 4, 1, 3, true, 0, 0},
        {2, {1, 2}, 3, 2, 1, true, 1, 0.7},   {1, {2}, 4, 2, 2, false, 2, -0.6},
        {0, {0}, 66, 1, 1, true, 0, 0},
    };
    if (which >= (int)(sizeof cases / sizeof cases[0]))
        return false;
    int lead = cases[which].lead;
    int64_t shape[4];
    memcpy(shape, cases[which].l, (size_t)lead * sizeof *shape);
    shape[lead] = cases[which].T;
    shape[lead + 1] = 3 * cases[which].H * cases[which].D;
    s->in[0] = ag_sample_tensor(rng, lead + 2, shape, AG_SAMPLE_RANGE, -1.5, 1.5);
    s->n_in = 1;
    int64_t T = cases[which].T;
    if (cases[which].mask == 1)
        s->in[s->n_in++] = ag_attn_sample_mask(rng, 2, (int64_t[]){T, T});
    else if (cases[which].mask == 2)
        s->in[s->n_in++] = ag_attn_sample_mask(rng, 4, (int64_t[]){shape[0], 1, 1, T});
    s->fn = attention_qkv_apply;
    s->iarg[0] = cases[which].causal;
    s->iarg[1] = cases[which].H;
    s->farg[0] = cases[which].scale;
    return true;
}

const ag_op_def ag_op_attention_qkv = {.name = "attention_qkv",
                                       .forward = attention_qkv_forward,
                                       .backward = attention_qkv_backward,
                                       .vjp = attention_qkv_vjp,
                                       .sample = attention_qkv_sample};
