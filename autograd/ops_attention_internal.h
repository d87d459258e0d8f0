/* ops_attention_internal.h — what ops_attention.c (ag_attention) and
 * ops_attention_qkv.c (ag_attention_qkv) share: the attribute, the saved
 * state, the geometry that says where each batch's rows lie, the blocked
 * kernels' driver and the recorded derivative. */
#ifndef TAPEGRAD_OPS_ATTENTION_INTERNAL_H
#define TAPEGRAD_OPS_ATTENTION_INTERNAL_H

#include "autograd_internal.h"

typedef struct {
    double scale;
    bool causal, has_mask;
    int64_t heads;       /* ag_attention_qkv's; 1 for ag_attention */
} attn_attr;

/* aux: lse (B, Tq) of the dtype, then `chunks` scratch areas of `panel`
 * elements each, one per chunk of batches the thread pool runs: one score
 * panel (forward), two (backward). */
typedef struct {
    void *lse;
    void *scratch;
    int64_t chunks, panel;
} attn_saved;

/* Where one operand's rows lie: batch b = (outer o, head h) with
 * o = b / heads, h = b % heads starts at o * sb + h * sh elements from its
 * base, rows ld apart.  ag_attention: heads 1, rows packed; ag_attention_qkv:
 * the heads side by side in the rows of qkv and of the output. */
typedef struct {
    int64_t sb, sh, ld;
} attn_lay;

/* Sizes of one call, the operands' layouts (q, k, v, o; a gradient has
 * its input's), and where the mask element (b, i, j) lies: its batch
 * offset from the batch dims (bshape, mstride), plus i * mq + j * mk. */
typedef struct {
    int64_t B, Tq, Tk, D, Dv, mq, mk, heads;
    attn_lay lq, lk, lv, lo;
    int nb;
    int64_t bshape[AG_MAX_DIMS], mstride[AG_MAX_DIMS];
} attn_geom;

/* The bases of q, k, v (in) and of their gradients (grads, backward;
 * NULL in forward and for one not wanted). */
typedef struct {
    const void *in[3];
    void *grads[3];
} attn_bases;

/* g->mstride, mq, mk: the mask's strides against the scores' shape, the
 * batch dims g->bshape (g->nb of them) then (Tq, Tk). */
void ag_attn_mask_strides(attn_geom *g, const ag_tensor *mask);
/* The forward or backward kernels of entry e over every batch (on the
 * pool when large); e->aux is the attn_saved ag_attn_record made. */
void ag_attn_run(ag_entry *e, const attn_geom *g, const attn_bases *p, bool backward);
/* Records op def on in[0..n_in) with attribute at and geometry g (the
 * lse and scratch it needs in aux); the output is (nd, shape). */
ag_tensor *ag_attn_record(ag_tape *t, const ag_op_def *def, ag_tensor **in, int n_in,
                          const attn_attr *at, const attn_geom *g, int nd,
                          const int64_t *shape);
/* fn's checks of a mask against the scores' shape (nd, scores): it
 * broadcasts and needs no gradient (its dtype is the caller's to check);
 * false with the error kept. */
bool ag_attn_check_mask(ag_tape *t, const char *fn, const ag_tensor *mask, int nd,
                        const int64_t *scores);
/* The recorded derivative on whole tensors q, k (..., Tq | Tk, D), v, the
 * output's gradient gout, and the entry's saved lse (rows that see no
 * key): sets gin[i] for each want[i] (q, k, v). */
void ag_attn_vjp(ag_tape *t, const ag_entry *e, ag_tensor *q, ag_tensor *k, ag_tensor *v,
                 const ag_tensor *mask, ag_tensor *gout, const bool want[3], ag_tensor **gin);
/* A sample mask of the given shape (f64, no gradient): normal values,
 * and -inf at a few places that leave each row a key (column 0). */
ag_tensor *ag_attn_sample_mask(ag_rng *rng, int ndim, const int64_t *shape);

#endif
