/* ops_cell.c — the elementwise part of one LSTM or GRU step, fused: what
 * nn_lstm / nn_gru ran as 15 and 13 recorded ops per step (slices,
 * sigmoids, tanhs, products, sums) is one or two here, each saving the
 * activations its backward needs.  On the charlm LSTM (T 64, batch 32, H
 * 256, one thread) ag_tape_profile put the composition's elementwise ops
 * at 22% of a step's wall time on a busy machine; fused, a step records
 * 326 entries instead of 1030 and 52.7 MB of tape instead of 68.4 (GRU:
 * 199 and 32.7 MB instead of 1159 and 60.0), while its CPU time stayed
 * within the noise of the composition's (the GEMMs are 73% of it).
 * Legend: R = rows (every dim but the last), H = hidden; gates are
 * PyTorch's [.., 4H] (i f g o) and [.., 3H] (r z n); s = sigmoid, g =
 * dL/dout.
 *
 *   lstm_cell_c (gates, c)  -> c' = s(f) c + s(i) tanh(g)
 *   lstm_cell_h (gates, c') -> h' = s(o) tanh(c')
 *   gru_cell (gx, gh, h)    -> h' = (1 - z) n + z h,  r = s(gx_r + gh_r),
 *                              z = s(gx_z + gh_z), n = tanh(gx_n + r gh_n)
 */
#include "autograd_internal.h"
#include "kernels/vmath.h"

#include <math.h>

/* ---- lstm_cell_c: aux (R, 3H) = s(i), s(f), tanh(g) ---- */

#define LSTM_C_LOOPS(T)                                                         \
    static void lstm_c_fwd_##T(const T *gates, const T *c, T *out, T *act, int64_t R, \
                               int64_t H)                                      \
    {                                                                           \
        for (int64_t r = 0; r < R; r++) {                                       \
            const T *gr = gates + r * 4 * H;                                    \
            T *a = act + r * 3 * H;                                             \
            ag_vm_##T()->sigmoid(gr, a, 2 * H);          /* i, f */             \
            ag_vm_##T()->tanh(gr + 2 * H, a + 2 * H, H); /* g */                \
            AG_SIMD for (int64_t j = 0; j < H; j++)                             \
                out[r * H + j] = a[H + j] * c[r * H + j] + a[j] * a[2 * H + j]; \
        }                                                                       \
    }                                                                           \
    /* di += g' tanh(g) i (1-i);  df += g' c f (1-f);  dg += g' i (1-tanh^2); \
     * dc += g' f  (g' = dL/dc') */                                             \
    static void lstm_c_bwd_##T(const T *go, const T *c, const T *act, T *dgates, T *dc, \
                               int64_t R, int64_t H)                           \
    {                                                                           \
        for (int64_t r = 0; r < R; r++) {                                       \
            const T *a = act + r * 3 * H, *gr = go + r * H, *cr = c + r * H;    \
            T *dg = dgates ? dgates + r * 4 * H : NULL, *dcr = dc ? dc + r * H : NULL; \
            if (dg)                                                             \
                AG_SIMD for (int64_t j = 0; j < H; j++) {                       \
                    T i = a[j], f = a[H + j], gg = a[2 * H + j], d = gr[j];     \
                    dg[j] += d * gg * i * (1 - i);                              \
                    dg[H + j] += d * cr[j] * f * (1 - f);                       \
                    dg[2 * H + j] += d * i * (1 - gg * gg);                     \
                }                                                               \
            if (dcr)                                                            \
                AG_SIMD for (int64_t j = 0; j < H; j++) dcr[j] += gr[j] * a[H + j]; \
        }                                                                       \
    }
LSTM_C_LOOPS(float)
LSTM_C_LOOPS(double)

static void lstm_c_forward(ag_entry *e)
{
    const ag_tensor *c = e->in[1];
    int64_t H = c->shape[c->ndim - 1], R = H ? c->numel / H : 0;
    if (c->dtype == AG_F64)
        lstm_c_fwd_double(e->in[0]->data, c->data, e->out->data, e->aux, R, H);
    else
        lstm_c_fwd_float(e->in[0]->data, c->data, e->out->data, e->aux, R, H);
}

static void lstm_c_backward(ag_tape *tape, ag_entry *e)
{
    void *dg = ag_grad_data(tape, e->in[0]), *dc = ag_grad_data(tape, e->in[1]);
    const ag_tensor *c = e->in[1];
    int64_t H = c->shape[c->ndim - 1], R = H ? c->numel / H : 0;
    if (c->dtype == AG_F64)
        lstm_c_bwd_double(e->out->grad->data, c->data, e->aux, dg, dc, R, H);
    else
        lstm_c_bwd_float(e->out->grad->data, c->data, e->aux, dg, dc, R, H);
}

/* Part k (of n) of x along the last dim. */
static ag_tensor *part(ag_tape *t, ag_tensor *x, int k, int n)
{
    int64_t w = x->shape[x->ndim - 1] / n;
    return ag_slice(t, x, -1, k * w, (k + 1) * w, 1);
}

/* s'(x) = s(x) s(-x) */
static ag_tensor *dsigmoid(ag_tape *t, ag_tensor *x)
{
    return ag_mul(t, ag_sigmoid(t, x), ag_sigmoid(t, ag_neg(t, x)));
}

/* 1 - tanh(x)^2 */
static ag_tensor *dtanh(ag_tape *t, ag_tensor *x)
{
    ag_tensor *y = ag_tanh(t, x);
    return ag_add_scalar(t, ag_neg(t, ag_mul(t, y, y)), 1.0);
}

/* The same math in ops:  d[i f g] = g' (tanh(g) s'(i), c s'(f), s(i) tanh'(g)),
 * placed in the first 3H of the gates (d o = 0);  dc = g' s(f). */
static void lstm_c_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    ag_tensor *gates = e->in[0], *c = e->in[1];
    ag_tensor *gi = part(tape, gates, 0, 4), *gf = part(tape, gates, 1, 4);
    ag_tensor *gg = part(tape, gates, 2, 4);
    if (ag_needs_grad(tape, gates)) {
        ag_tensor *d[3] = {ag_mul(tape, gout, ag_mul(tape, ag_tanh(tape, gg), dsigmoid(tape, gi))),
                           ag_mul(tape, gout, ag_mul(tape, c, dsigmoid(tape, gf))),
                           ag_mul(tape, gout, ag_mul(tape, ag_sigmoid(tape, gi), dtanh(tape, gg)))};
        gin[0] = ag_unslice(tape, ag_concat(tape, d, 3, -1), -1, gates->shape[gates->ndim - 1],
                            0, 1);
    }
    if (ag_needs_grad(tape, c))
        gin[1] = ag_mul(tape, gout, ag_sigmoid(tape, gf));
}

/* ---- lstm_cell_h: aux (R, 2H) = s(o), tanh(c') ---- */

#define LSTM_H_LOOPS(T)                                                         \
    static void lstm_h_fwd_##T(const T *gates, const T *c, T *out, T *act, int64_t R, \
                               int64_t H)                                      \
    {                                                                           \
        for (int64_t r = 0; r < R; r++) {                                       \
            T *a = act + r * 2 * H;                                             \
            ag_vm_##T()->sigmoid(gates + r * 4 * H + 3 * H, a, H); /* o */      \
            ag_vm_##T()->tanh(c + r * H, a + H, H);                             \
            AG_SIMD for (int64_t j = 0; j < H; j++) out[r * H + j] = a[j] * a[H + j]; \
        }                                                                       \
    }                                                                           \
    /* do += g' tanh(c') o (1-o);  dc' += g' o (1 - tanh^2(c')) */              \
    static void lstm_h_bwd_##T(const T *go, const T *act, T *dgates, T *dc, int64_t R, \
                               int64_t H)                                      \
    {                                                                           \
        for (int64_t r = 0; r < R; r++) {                                       \
            const T *a = act + r * 2 * H, *gr = go + r * H;                     \
            T *dg = dgates ? dgates + r * 4 * H + 3 * H : NULL, *dcr = dc ? dc + r * H : NULL; \
            if (dg)                                                             \
                AG_SIMD for (int64_t j = 0; j < H; j++)                         \
                    dg[j] += gr[j] * a[H + j] * a[j] * (1 - a[j]);              \
            if (dcr)                                                            \
                AG_SIMD for (int64_t j = 0; j < H; j++)                         \
                    dcr[j] += gr[j] * a[j] * (1 - a[H + j] * a[H + j]);         \
        }                                                                       \
    }
LSTM_H_LOOPS(float)
LSTM_H_LOOPS(double)

static void lstm_h_forward(ag_entry *e)
{
    const ag_tensor *c = e->in[1];
    int64_t H = c->shape[c->ndim - 1], R = H ? c->numel / H : 0;
    if (c->dtype == AG_F64)
        lstm_h_fwd_double(e->in[0]->data, c->data, e->out->data, e->aux, R, H);
    else
        lstm_h_fwd_float(e->in[0]->data, c->data, e->out->data, e->aux, R, H);
}

static void lstm_h_backward(ag_tape *tape, ag_entry *e)
{
    void *dg = ag_grad_data(tape, e->in[0]), *dc = ag_grad_data(tape, e->in[1]);
    const ag_tensor *c = e->in[1];
    int64_t H = c->shape[c->ndim - 1], R = H ? c->numel / H : 0;
    if (c->dtype == AG_F64)
        lstm_h_bwd_double(e->out->grad->data, e->aux, dg, dc, R, H);
    else
        lstm_h_bwd_float(e->out->grad->data, e->aux, dg, dc, R, H);
}

/* d o = g' tanh(c') s'(o), in the last H of the gates;  dc' = g' s(o) tanh'(c') */
static void lstm_h_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    ag_tensor *gates = e->in[0], *c = e->in[1], *go = part(tape, gates, 3, 4);
    int64_t w = gates->shape[gates->ndim - 1];
    if (ag_needs_grad(tape, gates))
        gin[0] = ag_unslice(tape, ag_mul(tape, gout, ag_mul(tape, ag_tanh(tape, c),
                                                            dsigmoid(tape, go))),
                            -1, w, 3 * (w / 4), 1);
    if (ag_needs_grad(tape, c))
        gin[1] = ag_mul(tape, gout, ag_mul(tape, ag_sigmoid(tape, go), dtanh(tape, c)));
}

/* ---- gru_cell: aux (R, 3H) = r, z, n ---- */

#define GRU_LOOPS(T)                                                            \
    static void gru_fwd_##T(const T *gx, const T *gh, const T *h, T *out, T *act, \
                            int64_t R, int64_t H)                              \
    {                                                                           \
        for (int64_t r = 0; r < R; r++) {                                       \
            const T *x = gx + r * 3 * H, *y = gh + r * 3 * H;                   \
            T *a = act + r * 3 * H;                                             \
            for (int64_t j = 0; j < 2 * H; j++)                                 \
                a[j] = x[j] + y[j];                                             \
            ag_vm_##T()->sigmoid(a, a, 2 * H);                  /* r, z */      \
            for (int64_t j = 0; j < H; j++)                                     \
                a[2 * H + j] = x[2 * H + j] + a[j] * y[2 * H + j];              \
            ag_vm_##T()->tanh(a + 2 * H, a + 2 * H, H);         /* n */         \
            for (int64_t j = 0; j < H; j++) {                                   \
                T z = a[H + j], n = a[2 * H + j];                               \
                out[r * H + j] = n + z * (h[r * H + j] - n);                    \
            }                                                                   \
        }                                                                       \
    }                                                                           \
    /* dn = g (1-z), dz = g (h - n), dh += g z;  p = dn (1 - n^2):             \
     * dgx_n += p, dgh_n += p r;  q = p gh_n r (1-r): dgx_r, dgh_r += q;        \
     * u = dz z (1-z): dgx_z, dgh_z += u */                                     \
    static void gru_bwd_##T(const T *go, const T *gh, const T *h, const T *act, T *dgx, \
                            T *dgh, T *dh, int64_t R, int64_t H)               \
    {                                                                           \
        for (int64_t r = 0; r < R; r++)                                         \
            for (int64_t j = 0; j < H; j++) {                                   \
                const T *a = act + r * 3 * H;                                   \
                T rr = a[j], z = a[H + j], n = a[2 * H + j], g = go[r * H + j]; \
                T p = g * (1 - z) * (1 - n * n);                                \
                T q = p * gh[r * 3 * H + 2 * H + j] * rr * (1 - rr);            \
                T u = g * (h[r * H + j] - n) * z * (1 - z);                     \
                int64_t o = r * 3 * H + j;                                      \
                if (dgx) {                                                      \
                    dgx[o] += q;                                                \
                    dgx[o + H] += u;                                            \
                    dgx[o + 2 * H] += p;                                        \
                }                                                               \
                if (dgh) {                                                      \
                    dgh[o] += q;                                                \
                    dgh[o + H] += u;                                            \
                    dgh[o + 2 * H] += p * rr;                                   \
                }                                                               \
                if (dh)                                                         \
                    dh[r * H + j] += g * z;                                     \
            }                                                                   \
    }
GRU_LOOPS(float)
GRU_LOOPS(double)

static void gru_forward(ag_entry *e)
{
    const ag_tensor *h = e->in[2];
    int64_t H = h->shape[h->ndim - 1], R = H ? h->numel / H : 0;
    if (h->dtype == AG_F64)
        gru_fwd_double(e->in[0]->data, e->in[1]->data, h->data, e->out->data, e->aux, R, H);
    else
        gru_fwd_float(e->in[0]->data, e->in[1]->data, h->data, e->out->data, e->aux, R, H);
}

static void gru_backward(ag_tape *tape, ag_entry *e)
{
    void *dgx = ag_grad_data(tape, e->in[0]), *dgh = ag_grad_data(tape, e->in[1]);
    void *dh = ag_grad_data(tape, e->in[2]);
    const ag_tensor *h = e->in[2];
    int64_t H = h->shape[h->ndim - 1], R = H ? h->numel / H : 0;
    if (h->dtype == AG_F64)
        gru_bwd_double(e->out->grad->data, e->in[1]->data, h->data, e->aux, dgx, dgh, dh, R, H);
    else
        gru_bwd_float(e->out->grad->data, e->in[1]->data, h->data, e->aux, dgx, dgh, dh, R, H);
}

/* The same math in ops, with r, z, n recomputed from the inputs:
 * dgx = [q, u, p], dgh = [q, u, p r], dh = g z. */
static void gru_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    ag_tensor *gx = e->in[0], *gh = e->in[1], *h = e->in[2];
    ag_tensor *pr = ag_add(tape, part(tape, gx, 0, 3), part(tape, gh, 0, 3));
    ag_tensor *pz = ag_add(tape, part(tape, gx, 1, 3), part(tape, gh, 1, 3));
    ag_tensor *ghn = part(tape, gh, 2, 3), *r = ag_sigmoid(tape, pr), *z = ag_sigmoid(tape, pz);
    ag_tensor *pn = ag_add(tape, part(tape, gx, 2, 3), ag_mul(tape, r, ghn));
    ag_tensor *n = ag_tanh(tape, pn);
    ag_tensor *one_z = ag_add_scalar(tape, ag_neg(tape, z), 1.0);
    ag_tensor *p = ag_mul(tape, ag_mul(tape, gout, one_z), dtanh(tape, pn));
    ag_tensor *q = ag_mul(tape, ag_mul(tape, p, ghn), dsigmoid(tape, pr));
    ag_tensor *u = ag_mul(tape, ag_mul(tape, gout, ag_sub(tape, h, n)), dsigmoid(tape, pz));
    if (ag_needs_grad(tape, gx))
        gin[0] = ag_concat(tape, (ag_tensor *[]){q, u, p}, 3, -1);
    if (ag_needs_grad(tape, gh))
        gin[1] = ag_concat(tape, (ag_tensor *[]){q, u, ag_mul(tape, p, r)}, 3, -1);
    if (ag_needs_grad(tape, h))
        gin[2] = ag_mul(tape, gout, z);
}

/* ---- the public functions ---- */

/* x [.., k H] against y [.., H] (same leading dims and dtype); H into *h. */
static bool cell_shapes(ag_tape *t, const char *fn, const char *xn, const ag_tensor *x, int k,
                        const char *yn, const ag_tensor *y, int64_t *h)
{
    bool ok = x->ndim == y->ndim && x->ndim >= 1 &&
              x->shape[x->ndim - 1] == k * y->shape[y->ndim - 1];
    for (int d = 0; ok && d + 1 < x->ndim; d++)
        ok = x->shape[d] == y->shape[d];
    if (!ok) {
        char a[128], b[128];
        ag_fail(t, AG_ERR_SHAPE, "%s: %s is %s and %s is %s (%s needs [.., %dH] for %s [.., H])",
                fn, xn, ag_shape_str(x, a, sizeof a), yn, ag_shape_str(y, b, sizeof b), xn, k,
                yn);
        return false;
    }
    *h = y->shape[y->ndim - 1];
    return ag_check_same_dtype(t, fn, x, y);
}

/* Runs def on in (the last one shaped like the output) with k H activations
 * a row saved in aux. */
static ag_tensor *cell_run(ag_tape *t, const ag_op_def *def, ag_tensor **in, int n, int k)
{
    const ag_tensor *like = in[n - 1];
    void *act = ag_arena_alloc(t, (size_t)(k * like->numel) * ag_dtype_size(like->dtype));
    if (!act)
        return NULL;
    ag_op_call c = {.def = def, .in = in, .n_in = n, .dtype = like->dtype,
                    .ndim = like->ndim, .shape = like->shape, .aux = act};
    return ag_op_run(t, &c);
}

ag_tensor *ag_lstm_cell(ag_tape *t, ag_tensor *gates, ag_tensor *c, ag_tensor **c_next)
{
    static const char *fn = "ag_lstm_cell";
    ag_tensor *in[2] = {gates, c};
    int64_t h;
    if (c_next)
        *c_next = NULL;
    if (!c_next)
        return ag_fail(t, AG_ERR_ARG, "%s: c_next is NULL", fn);
    if (!ag_check_inputs(t, fn, 2, in) || !cell_shapes(t, fn, "gates", gates, 4, "c", c, &h))
        return NULL;
    ag_tensor *cn = cell_run(t, &ag_op_lstm_cell_c, in, 2, 3);          /* (R, H) */
    in[1] = cn;
    ag_tensor *hn = cn ? cell_run(t, &ag_op_lstm_cell_h, in, 2, 2) : NULL;
    *c_next = hn ? cn : NULL;
    return hn;
}

ag_tensor *ag_gru_cell(ag_tape *t, ag_tensor *gx, ag_tensor *gh, ag_tensor *h)
{
    static const char *fn = "ag_gru_cell";
    ag_tensor *in[3] = {gx, gh, h};
    int64_t hd;
    if (!ag_check_inputs(t, fn, 3, in) || !cell_shapes(t, fn, "gx", gx, 3, "h", h, &hd) ||
        !cell_shapes(t, fn, "gh", gh, 3, "h", h, &hd))
        return NULL;
    return cell_run(t, &ag_op_gru_cell, in, 3, 3);
}

/* ---- samples: gates over the sigmoid's and tanh's curved range ---- */

static ag_tensor *lstm_c_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    ag_tensor *cn;
    return ag_lstm_cell(t, in[0], in[1], &cn) ? cn : NULL;
}

static ag_tensor *lstm_h_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    ag_tensor *cn;
    return ag_lstm_cell(t, in[0], in[1], &cn);
}

static ag_tensor *gru_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    return ag_gru_cell(t, in[0], in[1], in[2]);
}

/* Case which: rows shape[which] (leading dims), H = hs[which]. */
static bool cell_sample(int which, ag_rng *rng, ag_op_sample *s, int n_gates, int n_in)
{
    static const int64_t lead[][3] = {{1, 3}, {2, 2, 1}, {1, 1}};
    static const int64_t hs[] = {2, 3, 1};
    if (which >= 3)
        return false;
    int nd = (int)lead[which][0] + 1;
    int64_t gs[4], st[4];
    for (int d = 0; d + 1 < nd; d++)
        gs[d] = st[d] = lead[which][1 + d];
    gs[nd - 1] = n_gates * hs[which];
    st[nd - 1] = hs[which];
    for (int i = 0; i + 1 < n_in; i++)
        s->in[i] = ag_sample_tensor(rng, nd, gs, AG_SAMPLE_RANGE, -2, 2);
    s->in[n_in - 1] = ag_sample_tensor(rng, nd, st, AG_SAMPLE_RANGE, -1.5, 1.5);
    s->n_in = n_in;
    return true;
}

static bool lstm_c_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    s->fn = lstm_c_apply;
    return cell_sample(which, rng, s, 4, 2);
}

static bool lstm_h_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    s->fn = lstm_h_apply;
    return cell_sample(which, rng, s, 4, 2);
}

static bool gru_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    s->fn = gru_apply;
    return cell_sample(which, rng, s, 3, 3);
}

const ag_op_def ag_op_lstm_cell_c = {.name = "lstm_cell_c", .forward = lstm_c_forward,
                                     .backward = lstm_c_backward, .vjp = lstm_c_vjp,
                                     .sample = lstm_c_sample};
const ag_op_def ag_op_lstm_cell_h = {.name = "lstm_cell_h", .forward = lstm_h_forward,
                                     .backward = lstm_h_backward, .vjp = lstm_h_vjp,
                                     .sample = lstm_h_sample};
const ag_op_def ag_op_gru_cell = {.name = "gru_cell", .forward = gru_forward,
                                  .backward = gru_backward, .vjp = gru_vjp,
                                  .sample = gru_sample};
