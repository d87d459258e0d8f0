/* ops_attention.c — fused scaled-dot-product attention,
 *   out = softmax(q k^T * scale + mask + causal) v,
 * memory-linear as flash attention: the forward keeps the output and the
 * log-sum-exp of each row's scores, never the Tq x Tk probabilities, and
 * the backward recomputes them a block of query rows at a time
 * (FlashAttention-2's backward).  Every product is a GEMM on a block.
 *
 * Legend: B = batch (the product of the leading dims), Tq queries, Tk
 * keys, D = width of q and k, Dv = width of v; a block holds bq query rows
 * and its panel the scores of those rows against the keys they can see
 * (kn <= Tk: all of them, or under the causal mask those up to the
 * block's last row).  Per batch: q (Tq, D), k (Tk, D), v (Tk, Dv), o (Tq,
 * Dv), lse (Tq).  The mask is a constant (no gradient) broadcast to
 * (..., Tq, Tk); causal hides key j > query i (top-left aligned, as
 * torch.tril(ones(Tq, Tk))).  A row that sees no key (every score -inf)
 * gives 0 and passes no gradient; PyTorch's softmax gives NaN there. */
#include "ops_attention_internal.h"
#include "kernels/kernels_internal.h"
#include "kernels/vmath.h"

#include <math.h>

/* Query rows per block.  Causal blocks are smaller, so that each sees
 * fewer of the keys past its own rows.  At the GPT's shape (batch 12, 4
 * heads, T 64, D 32, f32, one thread; forward + backward, best of 300 in
 * thread CPU time) blocks of 16 / 32 / 64 took 1.26 / 1.30 / 1.45 ms
 * with OpenBLAS's GEMM and 1.84 / 1.58 / 1.71 ms with the built-in one;
 * without the mask 64 beat 16, 1.49 to 1.70 ms (OpenBLAS). */
static int64_t block_rows(bool causal) { return causal ? 32 : 64; }
/* Below this many multiply-adds one thread runs the whole op (the GEMM
 * file's threshold for a second thread). */
#define PARALLEL_MACS (96.0 * 96 * 96)

/* The mask's strides against the scores' shape: the batch dims
 * g->bshape, then (Tq, Tk). */
void ag_attn_mask_strides(attn_geom *g, const ag_tensor *mask)
{
    int64_t full[AG_MAX_DIMS];
    memcpy(full, g->bshape, sizeof full);
    full[g->nb] = g->Tq;
    full[g->nb + 1] = g->Tk;
    ag_broadcast_strides(mask, g->nb + 2, full, g->mstride);
    g->mq = g->mstride[g->nb];
    g->mk = g->mstride[g->nb + 1];
}

static attn_geom geom_of(const ag_entry *e)
{
    const ag_tensor *q = e->in[0], *k = e->in[1], *v = e->in[2];
    attn_geom g = {.B = 1, .Tq = q->shape[q->ndim - 2], .Tk = k->shape[k->ndim - 2],
                   .D = q->shape[q->ndim - 1], .Dv = v->shape[v->ndim - 1], .heads = 1,
                   .nb = q->ndim - 2};
    g.lq = (attn_lay){g.Tq * g.D, 0, g.D};
    g.lk = (attn_lay){g.Tk * g.D, 0, g.D};
    g.lv = (attn_lay){g.Tk * g.Dv, 0, g.Dv};
    g.lo = (attn_lay){g.Tq * g.Dv, 0, g.Dv};
    for (int d = 0; d < g.nb; d++) {
        g.bshape[d] = q->shape[d];
        g.B *= q->shape[d];
    }
    if (AG_ATTR(e, attn_attr)->has_mask)
        ag_attn_mask_strides(&g, e->in[3]);
    return g;
}

static int64_t mask_offset(const attn_geom *g, int64_t b)
{
    int64_t off = 0;
    for (int d = g->nb - 1; d >= 0; d--) {
        off += b % g->bshape[d] * g->mstride[d];
        b /= g->bshape[d];
    }
    return off;
}

static int64_t lay_at(const attn_geom *g, const attn_lay *l, int64_t b)
{
    return b / g->heads * l->sb + b % g->heads * l->sh;
}

/* One batch's operands (the mask NULL when there is none) and, in
 * backward, the input gradients (NULL: not wanted); S the scratch panels. */
typedef struct {
    const void *q, *k, *v, *m, *go;
    void *o, *lse, *dq, *dk, *dv, *S;
} attn_batch;

/* Keys the rows [i0, i0 + bq) can see, and those row i can see. */
static int64_t block_keys(const attn_geom *g, bool causal, int64_t i0, int64_t bq)
{
    return causal && i0 + bq < g->Tk ? i0 + bq : g->Tk;
}
static int64_t row_keys(const attn_geom *g, bool causal, int64_t i)
{
    return causal && i + 1 < g->Tk ? i + 1 : g->Tk;
}

/* One block's kernels, per dtype.  S, P, dP: panels (bq, kn), row stride kn. */
#define ATTN_LOOPS(T, GEMM, LOG)                                         \
    /* S = q_blk k^T * scale + mask over the keys the block sees */          \
    static void scores_##T(const attn_geom *g, const attn_attr *a, const T *q, const T *k, \
                           const T *m, int64_t i0, int64_t bq, int64_t kn, T *S) \
    {                                                                         \
        GEMM(false, true, bq, kn, g->D, (T)a->scale, q + i0 * g->lq.ld, g->lq.ld, k, g->lk.ld, 0, \
             S, kn);                                                          \
        for (int64_t r = 0; m && r < bq; r++) {                               \
            const T *mr = m + (i0 + r) * g->mq;                               \
            T *row = S + r * kn;                                              \
            for (int64_t j = 0; j < kn; j++)                                  \
                row[j] += mr[j * g->mk];                                      \
        }                                                                     \
    }                                                                         \
    /* P = softmax of each row of S over its visible keys (0 elsewhere);     \
     * lse = max + log(sum exp(s - max)), -inf for a row that sees none (a   \
     * NaN score makes the max, so the whole row, NaN) */                    \
    static void softmax_rows_##T(const attn_geom *g, bool causal, int64_t i0, int64_t bq, \
                                 int64_t kn, T *S, T *lse)                    \
    {                                                                         \
        for (int64_t r = 0; r < bq; r++) {                                    \
            T *row = S + r * kn, mx = -INFINITY, sum = 0;                     \
            int64_t lim = row_keys(g, causal, i0 + r);                        \
            AG_SIMD_REDUCE(max, mx) for (int64_t j = 0; j < lim; j++)         \
                mx = row[j] > mx ? row[j] : mx;                               \
            /* NaN scores pass through exp into the sum and so the row,     \
             * unless nothing else is above -inf */                          \
            for (int64_t j = 0; mx == -INFINITY && j < lim; j++)              \
                mx = row[j] != row[j] ? row[j] : mx;                          \
            if (mx == -INFINITY) {                                            \
                memset(row, 0, (size_t)kn * sizeof *row);                     \
                lse[i0 + r] = -INFINITY;                                      \
                continue;                                                     \
            }                                                                 \
            for (int64_t j = 0; j < lim; j++)                                 \
                row[j] -= mx;                                                 \
            ag_vm_##T()->exp(row, row, lim);                                  \
            AG_SIMD_REDUCE(+, sum) for (int64_t j = 0; j < lim; j++)          \
                sum += row[j];                                                \
            T inv = 1 / sum;                                                  \
            for (int64_t j = 0; j < lim; j++)                                 \
                row[j] *= inv;                                                \
            for (int64_t j = lim; j < kn; j++)                                \
                row[j] = 0;                                                   \
            lse[i0 + r] = mx + LOG(sum);                                      \
        }                                                                     \
    }                                                                         \
    /* P = exp(S - lse), the forward's probabilities again */                \
    static void probs_again_##T(const attn_geom *g, bool causal, int64_t i0, int64_t bq, \
                                int64_t kn, T *S, const T *lse)               \
    {                                                                         \
        for (int64_t r = 0; r < bq; r++) {                                    \
            T *row = S + r * kn, l = lse[i0 + r];                             \
            int64_t lim = l == -INFINITY ? 0 : row_keys(g, causal, i0 + r);   \
            for (int64_t j = 0; j < lim; j++)                                 \
                row[j] -= l;                                                  \
            ag_vm_##T()->exp(row, row, lim);                                  \
            for (int64_t j = lim; j < kn; j++)                                \
                row[j] = 0;                                                   \
        }                                                                     \
    }                                                                         \
    static void fwd_batch_##T(const attn_geom *g, const attn_attr *a, const attn_batch *p) \
    {                                                                         \
        const T *q = p->q, *k = p->k, *v = p->v, *m = p->m;                   \
        T *o = p->o, *S = p->S;                                               \
        int64_t rows = block_rows(a->causal);                                 \
        for (int64_t i0 = 0; i0 < g->Tq; i0 += rows) {                        \
            int64_t bq = g->Tq - i0 < rows ? g->Tq - i0 : rows;               \
            int64_t kn = block_keys(g, a->causal, i0, bq);                    \
            scores_##T(g, a, q, k, m, i0, bq, kn, S);                         \
            softmax_rows_##T(g, a->causal, i0, bq, kn, S, p->lse);            \
            /* o_blk = P v */                                                 \
            GEMM(false, false, bq, g->Dv, kn, 1, S, kn, v, g->lv.ld, 0,         \
                 o + i0 * g->lo.ld, g->lo.ld);                                \
        }                                                                     \
    }                                                                         \
    /* dS = P * (dP - D) in place of dP, D_i = rowsum(do_i * o_i) */         \
    static void dscores_##T(const attn_geom *g, const T *go_b, const T *o_b, int64_t bq, \
                            int64_t kn, const T *P, T *dP)                    \
    {                                                                         \
        for (int64_t r = 0; r < bq; r++) {                                    \
            const T *gr = go_b + r * g->lo.ld, *orow = o_b + r * g->lo.ld;     \
            const T *pr = P + r * kn;                                         \
            T di = 0, *dr = dP + r * kn;                                      \
            AG_SIMD_REDUCE(+, di) for (int64_t d = 0; d < g->Dv; d++)         \
                di += gr[d] * orow[d];                                        \
            for (int64_t j = 0; j < kn; j++)                                  \
                dr[j] = pr[j] * (dr[j] - di);                                 \
        }                                                                     \
    }                                                                         \
    /* dv += P^T do;  dP = do v^T;  dS = P * (dP - D);                      \
     * dq += dS k * scale;  dk += dS^T q * scale */                          \
    static void bwd_batch_##T(const attn_geom *g, const attn_attr *a, const attn_batch *p) \
    {                                                                         \
        const T *q = p->q, *k = p->k, *v = p->v, *m = p->m, *o = p->o, *go = p->go; \
        T *dq = p->dq, *dk = p->dk, *dv = p->dv, *P = p->S;                   \
        int64_t rows = block_rows(a->causal), D = g->D, Dv = g->Dv;           \
        int64_t lq = g->lq.ld, lk = g->lk.ld, lv = g->lv.ld, lo = g->lo.ld;   \
        T *dP = P + rows * g->Tk, sc = (T)a->scale;                           \
        for (int64_t i0 = 0; i0 < g->Tq; i0 += rows) {                        \
            int64_t bq = g->Tq - i0 < rows ? g->Tq - i0 : rows;               \
            int64_t kn = block_keys(g, a->causal, i0, bq);                    \
            const T *go_b = go + i0 * lo;                                     \
            scores_##T(g, a, q, k, m, i0, bq, kn, P);                         \
            probs_again_##T(g, a->causal, i0, bq, kn, P, p->lse);             \
            if (dv)                                                           \
                GEMM(true, false, kn, Dv, bq, 1, P, kn, go_b, lo, 1, dv, lv);  \
            if (!dq && !dk)                                                   \
                continue;                                                     \
            GEMM(false, true, bq, kn, Dv, 1, go_b, lo, v, lv, 0, dP, kn);     \
            dscores_##T(g, go_b, o + i0 * lo, bq, kn, P, dP);                 \
            if (dq)                                                           \
                GEMM(false, false, bq, D, kn, sc, dP, kn, k, lk, 1, dq + i0 * lq, lq); \
            if (dk)                                                           \
                GEMM(true, false, kn, D, bq, sc, dP, kn, q + i0 * lq, lq, 1, dk, lk); \
        }                                                                     \
    }
ATTN_LOOPS(float, ag_gemm_f32, logf)
ATTN_LOOPS(double, ag_gemm_f64, log)

/* Chunks of batches for the pool: one below PARALLEL_MACS, else two per
 * thread (so that a descheduled worker's share is taken up by the
 * others), at most one per batch. */
static int64_t chunks_for(const attn_geom *g, bool causal)
{
    double macs = (double)g->B * (double)g->Tq * (double)g->Tk * (double)(g->D + g->Dv);
    if (causal)
        macs /= 2;
    int64_t n = macs < PARALLEL_MACS ? 1 : 2 * (int64_t)ag_get_num_threads();
    return n > g->B ? (g->B > 0 ? g->B : 1) : n;
}

/* Batch b's rows of each operand, and of the gradients (backward). */
static attn_batch batch_at(const ag_entry *e, const attn_geom *g, const attn_bases *p0,
                           int64_t b, int64_t chunk, bool backward)
{
    const attn_saved *s = e->aux;
    size_t z = ag_dtype_size(e->out->dtype);
#define AT(p, l) ((p) ? (unsigned char *)(p) + (size_t)lay_at(g, &g->l, b) * z : NULL)
    const ag_tensor *m = AG_ATTR(e, attn_attr)->has_mask ? e->in[e->n_in - 1] : NULL;
    attn_batch p = {
        .q = AT(p0->in[0], lq), .k = AT(p0->in[1], lk), .v = AT(p0->in[2], lv),
        .m = m ? (unsigned char *)m->data + (size_t)mask_offset(g, b) * z : NULL,
        .o = AT(e->out->data, lo),
        .lse = (unsigned char *)s->lse + (size_t)(b * g->Tq) * z,
        .S = (unsigned char *)s->scratch + (size_t)(chunk * s->panel) * z,
    };
    if (backward) {
        p.go = AT(e->out->grad->data, lo);
        p.dq = AT(p0->grads[0], lq);
        p.dk = AT(p0->grads[1], lk);
        p.dv = AT(p0->grads[2], lv);
    }
#undef AT
    return p;
}

typedef struct {
    ag_entry *e;
    attn_geom g;
    const attn_bases *p;
    bool backward;
    int64_t per_chunk;   /* batches */
} attn_job;

/* fwd_batch or bwd_batch (by dtype and direction) for the batches of
 * chunks [lo, hi), each chunk with its own scratch */
static void attn_chunks(void *vj, int64_t lo, int64_t hi)
{
    const attn_job *j = vj;
    const attn_attr *a = AG_ATTR(j->e, attn_attr);
    bool f64 = j->e->out->dtype == AG_F64;
    for (int64_t c = lo; c < hi; c++)
        for (int64_t b = c * j->per_chunk; b < (c + 1) * j->per_chunk && b < j->g.B; b++) {
            attn_batch p = batch_at(j->e, &j->g, j->p, b, c, j->backward);
            if (j->backward)
                f64 ? bwd_batch_double(&j->g, a, &p) : bwd_batch_float(&j->g, a, &p);
            else
                f64 ? fwd_batch_double(&j->g, a, &p) : fwd_batch_float(&j->g, a, &p);
        }
}

void ag_attn_run(ag_entry *e, const attn_geom *g, const attn_bases *p, bool backward)
{
    const attn_saved *s = e->aux;
    attn_job j = {e, *g, p, backward, 0};
    j.per_chunk = (j.g.B + s->chunks - 1) / s->chunks;
    if (s->chunks > 1)
        ag_parallel_for(s->chunks, 1, attn_chunks, &j);
    else
        attn_chunks(&j, 0, 1);
}

static void attention_forward(ag_entry *e)
{
    attn_geom g = geom_of(e);
    attn_bases p = {{e->in[0]->data, e->in[1]->data, e->in[2]->data}, {NULL}};
    ag_attn_run(e, &g, &p, false);
}

static void attention_backward(ag_tape *tape, ag_entry *e)
{
    attn_geom g = geom_of(e);
    attn_bases p = {{e->in[0]->data, e->in[1]->data, e->in[2]->data}, {NULL}};
    for (int i = 0; i < 3; i++)
        p.grads[i] = ag_grad_data(tape, e->in[i]);
    if (tape->status == AG_OK && (p.grads[0] || p.grads[1] || p.grads[2]))
        ag_attn_run(e, &g, &p, true);
}

/* ---- the recorded derivative: the same math in ops, on whole tensors
 * (Tq x Tk probabilities: correct and differentiable, not memory-linear) */

/* -inf above the diagonal (key j > query i) of (Tq, Tk), else 0 */
static double causal_at(const void *tk, int64_t n)
{
    int64_t c = *(const int64_t *)tk;
    return n % c > n / c ? -INFINITY : 0.0;
}

/* 1 at the rows that see no key (lse = -inf), shaped (..., Tq, 1) */
static double dead_at(const void *lse, int64_t i)
{
    return ag_get(lse, i) == -INFINITY ? 1.0 : 0.0;
}

/* The rows of e that see no key, as a (..., Tq, 1) mask shaped like q
 * (nd, qshape) but its last dim, or NULL when every row sees one (or on
 * failure, kept on the tape). */
static ag_tensor *dead_rows(ag_tape *t, const ag_entry *e, int nd, const int64_t *qshape)
{
    const attn_saved *s = e->aux;
    int64_t rows = 1;
    for (int d = 0; d < nd - 1; d++)
        rows *= qshape[d];
    ag_tensor lse = {.data = s->lse, .dtype = e->out->dtype, .numel = rows}; /* (B, Tq) */
    bool any = false;
    for (int64_t i = 0; i < rows && !any; i++)
        any = ag_get(&lse, i) == -INFINITY;
    if (!any)
        return NULL;
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, qshape, (size_t)nd * sizeof *shape);
    shape[nd - 1] = 1;
    return ag_const_fill(t, e->out->dtype, nd, shape, dead_at, &lse);
}

/* P = softmax(q k^T * scale + mask + causal) (0 on rows that see no key);
 * dv = P^T g;  dP = g v^T;  dS = P * (dP - rowsum(P * dP));
 * dq = dS k * scale;  dk = dS^T q * scale */
void ag_attn_vjp(ag_tape *t, const ag_entry *e, ag_tensor *q, ag_tensor *k, ag_tensor *v,
                 const ag_tensor *mask, ag_tensor *gout, const bool want[3], ag_tensor **gin)
{
    const attn_attr *a = AG_ATTR(e, attn_attr);
    if (!q || !k || !v || !gout)
        return; /* a failed op before: the tape has the error */
    int64_t tq = q->shape[q->ndim - 2], tk = k->shape[k->ndim - 2];
    ag_tensor *s = ag_mul_scalar(t, ag_matmul(t, q, ag_transpose(t, k, -2, -1)), a->scale);
    if (mask)
        s = ag_add(t, s, (ag_tensor *)mask);
    if (a->causal) {
        s = ag_add(t, s, ag_const_fill(t, q->dtype, 2, (int64_t[]){tq, tk}, causal_at, &tk));
    }
    ag_tensor *dead = dead_rows(t, e, q->ndim, q->shape);
    ag_tensor *p = ag_softmax(t, dead ? ag_masked_fill(t, s, dead, 0) : s, -1);
    if (dead)
        p = ag_masked_fill(t, p, dead, 0);
    if (want[2])
        gin[2] = ag_matmul(t, ag_transpose(t, p, -2, -1), gout);
    if (!want[0] && !want[1])
        return;
    ag_tensor *dp = ag_matmul(t, gout, ag_transpose(t, v, -2, -1));
    ag_tensor *ds = ag_mul(t, p, ag_sub(t, dp, ag_sum(t, ag_mul(t, p, dp), -1, true)));
    if (want[0])
        gin[0] = ag_mul_scalar(t, ag_matmul(t, ds, k), a->scale);
    if (want[1])
        gin[1] = ag_mul_scalar(t, ag_matmul(t, ag_transpose(t, ds, -2, -1), q), a->scale);
}

static void attention_vjp(ag_tape *t, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const bool want[3] = {ag_needs_grad(t, e->in[0]), ag_needs_grad(t, e->in[1]),
                          ag_needs_grad(t, e->in[2])};
    const ag_tensor *mask = AG_ATTR(e, attn_attr)->has_mask ? e->in[3] : NULL;
    ag_attn_vjp(t, e, e->in[0], e->in[1], e->in[2], mask, gout, want, gin);
}

/* ---- the call ---- */

/* The shape checks of ag_attention; false with the error kept. */
static bool attn_check(ag_tape *t, ag_tensor *const *in, const ag_tensor *mask)
{
    static const char *fn = "ag_attention";
    const ag_tensor *q = in[0], *k = in[1], *v = in[2];
    char s1[128], s2[128], s3[128];
    for (int i = 1; i < (mask ? 4 : 3); i++)
        if (!ag_check_same_dtype(t, fn, q, in[i]))
            return false;
    int nd = q->ndim;
    bool ok = nd >= 2 && k->ndim == nd && v->ndim == nd;
    for (int d = 0; ok && d < nd - 2; d++)
        ok = k->shape[d] == q->shape[d] && v->shape[d] == q->shape[d];
    ok = ok && k->shape[nd - 1] == q->shape[nd - 1] && v->shape[nd - 2] == k->shape[nd - 2];
    if (!ok) {
        ag_fail(t, AG_ERR_SHAPE, "ag_attention: q %s, k %s and v %s do not fit q [..., Tq, D], "
                "k [..., Tk, D], v [..., Tk, Dv] with the same leading dims",
                ag_shape_str(q, s1, sizeof s1), ag_shape_str(k, s2, sizeof s2),
                ag_shape_str(v, s3, sizeof s3));
        return false;
    }
    if (!mask)
        return true;
    int64_t full[AG_MAX_DIMS];
    memcpy(full, q->shape, sizeof full);
    full[nd - 1] = k->shape[nd - 2];
    return ag_attn_check_mask(t, fn, mask, nd, full);
}

bool ag_attn_check_mask(ag_tape *t, const char *fn, const ag_tensor *mask, int nd,
                        const int64_t *scores)
{
    char s1[128], s2[128];
    bool ok = mask->ndim <= nd;
    for (int d = 1; ok && d <= mask->ndim; d++)
        ok = mask->shape[mask->ndim - d] == scores[nd - d] || mask->shape[mask->ndim - d] == 1;
    if (!ok) {
        ag_fail(t, AG_ERR_SHAPE, "%s: mask %s does not broadcast to the scores %s", fn,
                ag_shape_str(mask, s1, sizeof s1), ag_fmt_shape(s2, sizeof s2, nd, scores));
        return false;
    }
    if (mask->requires_grad) {
        ag_fail(t, AG_ERR_ARG, "%s: mask requires grad, but it is taken as a "
                "constant (no gradient flows to it)", fn);
        return false;
    }
    return true;
}

ag_tensor *ag_attention(ag_tape *t, ag_tensor *q, ag_tensor *k, ag_tensor *v,
                        const ag_tensor *mask, bool causal, double scale)
{
    ag_tensor *in[4] = {q, k, v, (ag_tensor *)mask}; /* mask is only read */
    int n_in = mask ? 4 : 3;
    if (!ag_check_inputs(t, "ag_attention", n_in, in) || !attn_check(t, in, mask))
        return NULL;
    if (!isfinite(scale))
        return ag_fail(t, AG_ERR_ARG, "ag_attention: scale %g is not finite", scale);
    int nd = q->ndim;
    int64_t D = q->shape[nd - 1];
    attn_attr at = {scale != 0 ? scale : D > 0 ? 1 / sqrt((double)D) : 1, causal, mask != NULL,
                    1};
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, q->shape, sizeof shape);
    shape[nd - 1] = v->shape[nd - 1];
    ag_entry probe = {.in = in, .attr = {{0}}};
    memcpy(probe.attr.bytes, &at, sizeof at);
    attn_geom g = geom_of(&probe);
    return ag_attn_record(t, &ag_op_attention, in, n_in, &at, &g, nd, shape);
}

ag_tensor *ag_attn_record(ag_tape *t, const ag_op_def *def, ag_tensor **in, int n_in,
                          const attn_attr *at, const attn_geom *g, int nd,
                          const int64_t *shape)
{
    bool record = false; /* (a mask that requires grad was refused) */
    for (int i = 0; t->grad_enabled && i < n_in; i++)
        record = record || in[i]->requires_grad;
    size_t esz = ag_dtype_size(in[0]->dtype);
    int64_t rows = block_rows(at->causal), bq = g->Tq < rows ? g->Tq : rows;
    attn_saved sv = {NULL, NULL, chunks_for(g, at->causal), (record ? 2 * rows : bq) * g->Tk};
    unsigned char *mem = ag_arena_alloc(t, sizeof sv + (size_t)(g->B * g->Tq) * esz +
                                               (size_t)(sv.chunks * sv.panel) * esz);
    if (!mem)
        return NULL;
    sv.lse = mem + sizeof sv;
    sv.scratch = (unsigned char *)sv.lse + (size_t)(g->B * g->Tq) * esz;
    memcpy(mem, &sv, sizeof sv);
    ag_op_call c = {.def = def, .in = in, .n_in = n_in, .dtype = in[0]->dtype, .ndim = nd,
                    .shape = shape, .attr = at, .attr_size = sizeof *at, .aux = mem};
    return ag_op_run(t, &c);
}

/* ---- samples ----
 * iarg: causal, mask kind (0 none, 1 (Tq, Tk) shared by every batch, 2
 * (B0, 1, 1, Tk) key padding); farg: scale (0: 1/sqrt(D)).  Masks hold
 * -inf entries, never a whole row (a row that sees no key has zero
 * derivatives; test_ops_attention checks it). */

static ag_tensor *attention_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    const ag_op_sample *s = ctx;
    return ag_attention(t, in[0], in[1], in[2], s->n_in > 3 ? in[3] : NULL, s->iarg[0],
                        s->farg[0]);
}

ag_tensor *ag_attn_sample_mask(ag_rng *rng, int ndim, const int64_t *shape)
{
    ag_tensor *m = ag_sample_tensor(rng, ndim, shape, AG_SAMPLE_RANGE, -1, 1);
    if (!m)
        return NULL;
    m->requires_grad = false;
    int64_t last = shape[ndim - 1];
    for (int64_t i = 0; i < m->numel; i++)
        if (i % last != 0 && ag_rng_below(rng, 4) == 0)
            ((double *)m->data)[i] = -INFINITY;
    return m;
}

static bool attention_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    static const struct {
        int nb;
        int64_t batch[2], tq, tk, d, dv;
        bool causal;
        int mask;
        double scale;
    } cases[] = {
        {1, {2}, 3, 5, 4, 3, false, 0, 0},    {2, {2, 2}, 4, 4, 3, 2, true, 0, 0},
        {1, {1}, 5, 3, 2, 2, true, 0, 0.8},   {1, {2}, 3, 5, 3, 2, true, 1, 0},
        {2, {2, 2}, 3, 4, 2, 3, false, 2, -0.6}, {0, {0}, 66, 3, 2, 1, true, 0, 0},
    };
    if (which >= (int)(sizeof cases / sizeof cases[0]))
        return false;
    int nb = cases[which].nb, nd = nb + 2;
    int64_t qs[4], ks[4], vs[4];
    for (int d = 0; d < nb; d++)
        qs[d] = ks[d] = vs[d] = cases[which].batch[d];
    qs[nb] = cases[which].tq;
    ks[nb] = vs[nb] = cases[which].tk;
    qs[nb + 1] = ks[nb + 1] = cases[which].d;
    vs[nb + 1] = cases[which].dv;
    s->in[0] = ag_sample_tensor(rng, nd, qs, AG_SAMPLE_RANGE, -1.5, 1.5);
    s->in[1] = ag_sample_tensor(rng, nd, ks, AG_SAMPLE_RANGE, -1.5, 1.5);
    s->in[2] = ag_sample_tensor(rng, nd, vs, AG_SAMPLE_RANGE, -2, 2);
    s->n_in = 3;
    if (cases[which].mask == 1)
        s->in[s->n_in++] = ag_attn_sample_mask(rng, 2, (int64_t[]){qs[nb], ks[nb]});
    else if (cases[which].mask == 2)
        s->in[s->n_in++] = ag_attn_sample_mask(rng, 4, (int64_t[]){qs[0], 1, 1, ks[nb]});
    s->fn = attention_apply;
    s->iarg[0] = cases[which].causal;
    s->farg[0] = cases[which].scale;
    return true;
}

const ag_op_def ag_op_attention = {.name = "attention", .forward = attention_forward,
                                   .backward = attention_backward, .vjp = attention_vjp,
                                   .sample = attention_sample};
