/* ops_pool.c — 2-D pooling over the planes of NCHW tensors, as
 * torch.nn.functional's max_pool2d, avg_pool2d (count_include_pad) and
 * adaptive_avg_pool2d.
 *
 * Dimension legend: x [N, C, H, W], y [N, C, Ho, Wo]; a plane is one
 * (n, c).  Output (i, j) of a plane reads the window rows [hs_i, he_i) x
 * columns [ws_j, we_j) of its input plane, clipped to the input (padding
 * counts as -inf for the max, 0 for the average).  The windows are worked
 * out once, when the op is recorded, into tables the kernels read, so the
 * fixed and the adaptive average are one kernel on different tables:
 *   fixed     hs_i = i*s - p (then clipped), he_i = hs_i + k; divisor
 *             hn_i = min(i*s - p + k, H + p) - (i*s - p)   (PyTorch's)
 *   adaptive  hs_i = floor(i*H / Ho), he_i = ceil((i+1)*H / Ho), hn_i = he_i - hs_i
 * (the same for columns).  Each kernel makes one pass over the windows.
 *   max_pool2d   y = the window's max, idx = its first argmax in the plane
 *                (a NaN wins, as in PyTorch), kept for backward:
 *                dx[idx] += g.  Recorded: dx = ag_scatter_add of g at idx
 *                (on [N*C, H*W] views), whose derivative is the gather of
 *                the same constant idx.
 *   avg_pool2d, adaptive_avg_pool2d   y = sum over the window / (hn_i wn_j):
 *                linear, with adjoint avg_pool2d_grad, dx[window] += g /
 *                (hn_i wn_j); each is the other's recorded derivative.
 * Planes are independent, so threads split them and results do not
 * depend on the thread count. */
#include "autograd_internal.h"
#include "kernels/conv_internal.h"

#include <math.h>

/* The windows of one op (arena), and max_pool2d's argmax per output. */
typedef struct {
    int64_t H, W, Ho, Wo;
    int64_t *hs, *he, *hn, *ws, *we, *wn; /* (Ho), (Wo) */
    int64_t *idx;                         /* max: (N, C, Ho, Wo) offsets in the plane */
    /* fixed windows: the columns [jlo, jhi) whose windows j*sw - pw + [0,
     * kw) lie inside the input (none for adaptive ones) */
    int64_t kw, sw, pw, jlo, jhi;
    /* 2x2 windows at stride 2 from (0, 0): disjoint tiles, each whole */
    bool tiled2;
} pool_tab;

/* avg_pool2d_grad: the forward row whose adjoint it is (its recorded
 * derivative records that row again). */
typedef struct {
    const ag_op_def *fwd;
} avg_grad_attr;

/* Largest kernel, stride, padding or output size taken. */
#define OPT_MAX INT32_MAX
/* Output columns max pooling takes together (max_block). */
#define POOL_BLOCK 64

/* ---- typed loops over one plane ---- */

#define POOL_LOOPS(T)                                                         \
    /* y[i, j], idx[i, j] = the max of window (i, j) and where, for j in    \
     * [j0, j1) */                                                            \
    static void max_windows_##T(const T *restrict x, T *restrict y, int64_t *restrict idx, \
                                const pool_tab *p, int64_t i, int64_t j0, int64_t j1) \
    {                                                                         \
        for (int64_t j = j0; j < j1; j++) {                                   \
            int64_t at = p->hs[i] * p->W + p->ws[j];                          \
            T best = (T)-INFINITY;                                            \
            for (int64_t h = p->hs[i]; h < p->he[i]; h++)                     \
                for (int64_t w = p->ws[j]; w < p->we[j]; w++) {               \
                    T v = x[h * p->W + w];                                    \
                    if (v > best || v != v) {                                 \
                        best = v;                                             \
                        at = h * p->W + w;                                    \
                    }                                                         \
                }                                                             \
            y[j] = best;                                                      \
            idx[j] = at;                                                      \
        }                                                                     \
    }                                                                         \
    /* The same for the columns j in [j0, j0 + n), n <= POOL_BLOCK, whose   \
     * windows j*s - pw + [0, kw) lie inside the input: a tap (h, q) at a   \
     * time for all of them, its values first copied together, so that the \
     * compare and the selects (of the value and of the winning tap, both   \
     * 32-bit wide: kernels are at most OPT_MAX) run as vectors; a branch   \
     * per element mispredicts half the time on real data. */               \
    __attribute__((target_clones("avx2", "default")))                       \
    static void max_block_##T(const T *restrict x, T *restrict y, int64_t *restrict idx, \
                              const pool_tab *p, int64_t i, int64_t j0, int64_t n) \
    {                                                                         \
        int64_t s = p->sw;                                                    \
        T best[POOL_BLOCK], v[POOL_BLOCK];                                    \
        int32_t th[POOL_BLOCK], tq[POOL_BLOCK];                               \
        int64_t W = p->W, c0 = j0 * s - p->pw;                                \
        for (int64_t j = 0; j < n; j++) {                                     \
            best[j] = (T)-INFINITY;                                           \
            th[j] = tq[j] = 0;                                                \
        }                                                                     \
        for (int32_t h = 0; h < (int32_t)(p->he[i] - p->hs[i]); h++)          \
            for (int32_t q = 0; q < (int32_t)p->kw; q++) {                    \
                const T *row = x + (p->hs[i] + h) * W + c0 + q;               \
                for (int64_t j = 0; j < n; j++)                               \
                    v[j] = row[j * s];                                        \
                AG_SIMD for (int64_t j = 0; j < n; j++) {                     \
                    bool take = v[j] > best[j] || v[j] != v[j];               \
                    best[j] = take ? v[j] : best[j];                          \
                    th[j] = take ? h : th[j];                                 \
                    tq[j] = take ? q : tq[j];                                 \
                }                                                             \
            }                                                                 \
        for (int64_t j = 0; j < n; j++) {                                     \
            y[j] = best[j];                                                   \
            idx[j] = (p->hs[i] + th[j]) * W + c0 + j * s + tq[j];             \
        }                                                                     \
    }                                                                         \
    /* y = max over each window, idx = where (the first max; a NaN wins) */ \
    static void max_plane_##T(const T *restrict x, T *restrict y, int64_t *restrict idx, \
                              const pool_tab *p)                              \
    {                                                                         \
        for (int64_t i = 0; i < p->Ho; i++) {                                 \
            T *yr = y + i * p->Wo;                                            \
            int64_t *ir = idx + i * p->Wo;                                    \
            max_windows_##T(x, yr, ir, p, i, 0, p->jlo);                      \
            if (p->sw == 2 && p->kw == 2 && p->he[i] - p->hs[i] == 2) {       \
                int64_t base = p->hs[i] * p->W + 2 * p->jlo - p->pw;          \
                ag_max2x2_row_##T(x + base, x + base + p->W, yr + p->jlo, ir + p->jlo, \
                                  p->jhi - p->jlo, base, p->W);               \
            } else {                                                          \
                for (int64_t j = p->jlo; j < p->jhi; j += POOL_BLOCK) {       \
                    int64_t n = p->jhi - j < POOL_BLOCK ? p->jhi - j : POOL_BLOCK; \
                    max_block_##T(x, yr + j, ir + j, p, i, j, n);             \
                }                                                             \
            }                                                                 \
            max_windows_##T(x, yr, ir, p, i, p->jhi, p->Wo);                  \
        }                                                                     \
    }                                                                         \
    /* dx[idx[k]] += g[k], the rows of 2x2 windows at stride 2 as vectors; \
     * a fresh dx (unwritten) is stored whole: by rows of tiles when the    \
     * windows tile it from (0, 0), else zeroed first */                    \
    static void max_back_plane_##T(const T *restrict g, T *restrict dx,       \
                                   const int64_t *restrict idx, const pool_tab *p, \
                                   bool fresh)                                \
    {                                                                         \
        if (fresh && p->tiled2) {                                             \
            for (int64_t i = 0; i < p->Ho; i++) {                             \
                T *d0 = dx + 2 * i * p->W;                                    \
                ag_max2x2_back_row_##T(g + i * p->Wo, idx + i * p->Wo, d0, p->Wo, \
                                       2 * i * p->W, p->W, false);            \
                for (int64_t w = 2 * p->Wo; w < p->W; w++)                    \
                    d0[w] = d0[p->W + w] = 0;                                 \
            }                                                                 \
            for (int64_t k = 2 * p->Ho * p->W; k < p->H * p->W; k++)          \
                dx[k] = 0;                                                    \
            return;                                                           \
        }                                                                     \
        if (fresh)                                                            \
            memset(dx, 0, (size_t)(p->H * p->W) * sizeof(T));                 \
        bool two = p->sw == 2 && p->kw == 2;                                  \
        for (int64_t i = 0; i < p->Ho; i++) {                                 \
            const T *gr = g + i * p->Wo;                                      \
            const int64_t *ir = idx + i * p->Wo;                              \
            int64_t j = 0;                                                    \
            if (two && p->he[i] - p->hs[i] == 2) {                            \
                int64_t base = p->hs[i] * p->W + 2 * p->jlo - p->pw;          \
                for (; j < p->jlo; j++)                                       \
                    dx[ir[j]] += gr[j];                                       \
                ag_max2x2_back_row_##T(gr + j, ir + j, dx + base, p->jhi - j, base, p->W, \
                                       true);                                 \
                j = p->jhi;                                                   \
            }                                                                 \
            for (; j < p->Wo; j++)                                            \
                dx[ir[j]] += gr[j];                                           \
        }                                                                     \
    }                                                                         \
    /* y (+)= sum over each window / (hn_i wn_j) */                           \
    static void avg_plane_##T(const T *restrict x, T *restrict y, const pool_tab *p, bool acc) \
    {                                                                         \
        for (int64_t i = 0; i < p->Ho; i++)                                   \
            for (int64_t j = 0; j < p->Wo; j++) {                             \
                T s = 0;                                                      \
                for (int64_t h = p->hs[i]; h < p->he[i]; h++)                 \
                    for (int64_t w = p->ws[j]; w < p->we[j]; w++)             \
                        s += x[h * p->W + w];                                 \
                s /= (T)(p->hn[i] * p->wn[j]);                                \
                y[i * p->Wo + j] = acc ? y[i * p->Wo + j] + s : s;            \
            }                                                                 \
    }                                                                         \
    /* dx[window] += g / (hn_i wn_j) */                                       \
    static void avg_adj_plane_##T(const T *restrict g, T *restrict dx, const pool_tab *p) \
    {                                                                         \
        for (int64_t i = 0; i < p->Ho; i++)                                   \
            for (int64_t j = 0; j < p->Wo; j++) {                             \
                T v = g[i * p->Wo + j] / (T)(p->hn[i] * p->wn[j]);            \
                for (int64_t h = p->hs[i]; h < p->he[i]; h++)                 \
                    for (int64_t w = p->ws[j]; w < p->we[j]; w++)             \
                        dx[h * p->W + w] += v;                                \
            }                                                                 \
    }
#define ag_max2x2_row_float ag_max2x2_row_f32
#define ag_max2x2_row_double ag_max2x2_row_f64
#define ag_max2x2_back_row_float ag_max2x2_back_row_f32
#define ag_max2x2_back_row_double ag_max2x2_back_row_f64
POOL_LOOPS(float)
POOL_LOOPS(double)

#define BY_DTYPE(dt, fn, ...)                                                 \
    ((dt) == AG_F64 ? fn##_double(__VA_ARGS__) : fn##_float(__VA_ARGS__))

/* ---- the plane loop ---- */

/* One kernel over every plane: from src planes (the input side for a
 * forward, the output side for an adjoint) into dst planes. */
typedef struct {
    const pool_tab *p;
    ag_dtype dt;
    size_t esz;
    const char *src;
    char *dst;
    bool acc; /* avg: y += ; max gradient: dx += (else stored, dx fresh) */
} plane_run;

/* Plane k's input-side (x) and output-side (y) offsets, in bytes. */
static size_t x_at(const plane_run *r, int64_t k)
{
    return (size_t)(k * r->p->H * r->p->W) * r->esz;
}

static size_t y_at(const plane_run *r, int64_t k)
{
    return (size_t)(k * r->p->Ho * r->p->Wo) * r->esz;
}

static void max_item(void *vc, int64_t k, int64_t chunk)
{
    (void)chunk;
    const plane_run *r = vc;
    BY_DTYPE(r->dt, max_plane, (const void *)(r->src + x_at(r, k)), (void *)(r->dst + y_at(r, k)),
             r->p->idx + k * r->p->Ho * r->p->Wo, r->p);
}

static void max_back_item(void *vc, int64_t k, int64_t chunk)
{
    (void)chunk;
    const plane_run *r = vc;
    int64_t n = r->p->Ho * r->p->Wo;
    BY_DTYPE(r->dt, max_back_plane, (const void *)(r->src + y_at(r, k)),
             (void *)(r->dst + x_at(r, k)), r->p->idx + k * n, r->p, !r->acc);
}

static void avg_item(void *vc, int64_t k, int64_t chunk)
{
    (void)chunk;
    const plane_run *r = vc;
    BY_DTYPE(r->dt, avg_plane, (const void *)(r->src + x_at(r, k)), (void *)(r->dst + y_at(r, k)),
             r->p, r->acc);
}

static void avg_adj_item(void *vc, int64_t k, int64_t chunk)
{
    (void)chunk;
    const plane_run *r = vc;
    BY_DTYPE(r->dt, avg_adj_plane, (const void *)(r->src + y_at(r, k)),
             (void *)(r->dst + x_at(r, k)), r->p);
}

/* Elements one window reads at most. */
static int64_t window_max(const pool_tab *p)
{
    int64_t h = 0, w = 0;
    for (int64_t i = 0; i < p->Ho; i++)
        h = p->he[i] - p->hs[i] > h ? p->he[i] - p->hs[i] : h;
    for (int64_t j = 0; j < p->Wo; j++)
        w = p->we[j] - p->ws[j] > w ? p->we[j] - p->ws[j] : w;
    return h * w;
}

/* item over the n planes, on threads when the windows hold enough work */
static void planes(const pool_tab *p, int64_t n, ag_dtype dt, const void *src, void *dst,
                   bool acc, ag_item_fn item)
{
    plane_run r = {p, dt, ag_dtype_size(dt), src, dst, acc};
    double work = (double)n * (double)(p->Ho * p->Wo) * (double)window_max(p);
    ag_parallel_chunks(n, ag_work_chunks(n, work), item, &r);
}

static int64_t n_planes(const ag_tensor *x)
{
    return x->shape[0] * x->shape[1];
}

/* ---- window tables ---- */

/* A table for planes H x W -> Ho x Wo in the arena, with room for nidx
 * argmax offsets; NULL with AG_ERR_NOMEM kept. */
static pool_tab *tab_new(ag_tape *t, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t nidx)
{
    size_t head = (sizeof(pool_tab) + 7) / 8 * 8;
    pool_tab *p = ag_arena_alloc(t, head + (size_t)(3 * Ho + 3 * Wo + nidx) * sizeof(int64_t));
    if (!p)
        return NULL;
    int64_t *v = (int64_t *)(void *)((char *)p + head);
    *p = (pool_tab){.H = H, .W = W, .Ho = Ho, .Wo = Wo, .hs = v, .he = v + Ho,
                    .hn = v + 2 * Ho, .ws = v + 3 * Ho, .we = v + 3 * Ho + Wo,
                    .wn = v + 3 * Ho + 2 * Wo, .idx = nidx ? v + 3 * Ho + 3 * Wo : NULL};
    return p;
}

/* Kernel k, stride s, padding p along a dim of size in, out windows:
 * clipped bounds and PyTorch's count_include_pad divisor. */
static void fixed_windows(int64_t in, int64_t k, int64_t s, int64_t p, int64_t out,
                          int64_t *st, int64_t *en, int64_t *cnt)
{
    for (int64_t i = 0; i < out; i++) {
        int64_t a = i * s - p, b = a + k;
        st[i] = a < 0 ? 0 : a;
        en[i] = b > in ? in : b;
        cnt[i] = (b < in + p ? b : in + p) - a;
    }
}

/* floor(i*in/out) to ceil((i+1)*in/out), divisor the window's size */
static void adaptive_windows(int64_t in, int64_t out, int64_t *st, int64_t *en, int64_t *cnt)
{
    for (int64_t i = 0; i < out; i++) {
        st[i] = i * in / out;
        en[i] = ((i + 1) * in + out - 1) / out;
        cnt[i] = en[i] - st[i];
    }
}

static int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t p)
{
    return (in + 2 * p - k) / s + 1;
}

/* Fixed windows (arguments checked); nidx as tab_new. */
static pool_tab *fixed_tab(ag_tape *t, const int64_t *xs, const int64_t *k, const int64_t *s,
                           const int64_t *p, int64_t nidx)
{
    int64_t Ho = pool_out(xs[2], k[0], s[0], p[0]), Wo = pool_out(xs[3], k[1], s[1], p[1]);
    pool_tab *tab = tab_new(t, xs[2], xs[3], Ho, Wo, nidx);
    if (!tab)
        return NULL;
    fixed_windows(xs[2], k[0], s[0], p[0], Ho, tab->hs, tab->he, tab->hn);
    fixed_windows(xs[3], k[1], s[1], p[1], Wo, tab->ws, tab->we, tab->wn);
    tab->kw = k[1], tab->sw = s[1], tab->pw = p[1];
    tab->tiled2 = k[0] == 2 && k[1] == 2 && s[0] == 2 && s[1] == 2 && p[0] == 0 && p[1] == 0;
    /* j*s - p >= 0 and j*s - p + k <= W */
    tab->jlo = (p[1] + s[1] - 1) / s[1];
    tab->jhi = (xs[3] + p[1] - k[1]) / s[1] + 1;
    tab->jhi = tab->jhi > Wo ? Wo : tab->jhi;
    tab->jlo = tab->jlo > tab->jhi ? tab->jhi : tab->jlo;
    return tab;
}

static pool_tab *adaptive_tab(ag_tape *t, const int64_t *xs, int64_t Ho, int64_t Wo)
{
    pool_tab *tab = tab_new(t, xs[2], xs[3], Ho, Wo, 0);
    if (tab) {
        adaptive_windows(xs[2], Ho, tab->hs, tab->he, tab->hn);
        adaptive_windows(xs[3], Wo, tab->ws, tab->we, tab->wn);
    }
    return tab;
}

/* ---- max_pool2d ---- */

static void max_pool_forward(ag_entry *e)
{
    planes(e->aux, n_planes(e->in[0]), e->out->dtype, e->in[0]->data, e->out->data, false,
           max_item);
}

static void max_pool_backward(ag_tape *tape, ag_entry *e)
{
    bool fresh;
    void *dx = ag_grad_out(tape, e->in[0], &fresh);
    if (dx) /* dx[idx] += g (acc), or = into a fresh dx */
        planes(e->aux, n_planes(e->in[0]), e->out->dtype, e->out->grad->data, dx, !fresh,
               max_back_item);
}

static double idx_fill(const void *ctx, int64_t i)
{
    return (double)((const int64_t *)ctx)[i];
}

static double zero_fill(const void *ctx, int64_t i)
{
    (void)ctx, (void)i;
    return 0;
}

/* dx = scatter_add(0, idx, G) along the planes' elements */
static void max_pool_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    ag_tensor *x = e->in[0];
    if (!ag_needs_grad(tape, x))
        return;
    const pool_tab *p = e->aux;
    int64_t ys[2] = {n_planes(x), p->Ho * p->Wo}, xs[2] = {n_planes(x), p->H * p->W};
    ag_tensor *index = ag_const_fill(tape, AG_F64, 2, ys, idx_fill, p->idx);
    ag_tensor *zero = ag_const_fill(tape, x->dtype, 2, xs, zero_fill, NULL);
    ag_tensor *dx = ag_scatter_add(tape, zero, 1, index, ag_reshape(tape, gout, 2, ys));
    gin[0] = ag_reshape(tape, dx, 4, x->shape);
}

/* ---- avg_pool2d, adaptive_avg_pool2d and their adjoint avg_pool2d_grad ---- */

/* y = the average pooling `def` of x over the windows of p */
static ag_tensor *avg_run(ag_tape *t, const ag_op_def *def, ag_tensor *x, pool_tab *p)
{
    int64_t ys[4] = {x->shape[0], x->shape[1], p->Ho, p->Wo};
    ag_op_call c = {.def = def, .in = &x, .n_in = 1, .dtype = x->dtype, .ndim = 4,
                    .shape = ys, .aux = p};
    return ag_op_run(t, &c);
}

/* dx [xs] = the adjoint of the average pooling fwd, applied to g */
static ag_tensor *avg_grad_run(ag_tape *t, ag_tensor *g, pool_tab *p, const ag_op_def *fwd,
                               const int64_t *xs)
{
    avg_grad_attr a = {fwd};
    ag_op_call c = {.def = &ag_op_avg_pool2d_grad, .in = &g, .n_in = 1, .dtype = g->dtype,
                    .ndim = 4, .shape = xs, .attr = &a, .attr_size = sizeof a, .aux = p};
    return ag_op_run(t, &c);
}

static void avg_pool_forward(ag_entry *e)
{
    planes(e->aux, n_planes(e->in[0]), e->out->dtype, e->in[0]->data, e->out->data, false,
           avg_item);
}

static void avg_pool_backward(ag_tape *tape, ag_entry *e)
{
    void *dx = ag_grad_data(tape, e->in[0]);
    if (dx) /* dx[window] += g / (hn wn) */
        planes(e->aux, n_planes(e->in[0]), e->out->dtype, e->out->grad->data, dx, false,
               avg_adj_item);
}

static void avg_pool_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    if (ag_needs_grad(tape, e->in[0])) /* dx = avg_pool2d_grad(G) */
        gin[0] = avg_grad_run(tape, gout, e->aux, e->op, e->in[0]->shape);
}

static void avg_grad_forward(ag_entry *e)
{
    ag_tensor *y = e->out;
    memset(y->data, 0, (size_t)y->numel * ag_dtype_size(y->dtype));
    planes(e->aux, n_planes(y), y->dtype, e->in[0]->data, y->data, false, avg_adj_item);
}

static void avg_grad_backward(ag_tape *tape, ag_entry *e)
{
    void *dg = ag_grad_data(tape, e->in[0]);
    if (dg) /* dg += the average pooling of G */
        planes(e->aux, n_planes(e->out), e->out->dtype, e->out->grad->data, dg, true,
               avg_item);
}

static void avg_grad_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    if (ag_needs_grad(tape, e->in[0])) /* dg = the average pooling of G */
        gin[0] = avg_run(tape, AG_ATTR(e, avg_grad_attr)->fwd, gout, e->aux);
}

/* ---- checks and the public functions ---- */

/* x a 4-D tensor with non-empty planes; false with the error kept. */
static bool check_x(ag_tape *t, const char *fn, ag_tensor *x)
{
    if (!ag_check_inputs(t, fn, 1, &x))
        return false;
    char s1[128];
    if (x->ndim != 4 || x->shape[2] < 1 || x->shape[3] < 1)
        return ag_fail(t, AG_ERR_SHAPE, "%s: x is %s but must be 4-D [N, C, H, W] with H, W "
                       ">= 1", fn, ag_shape_str(x, s1, sizeof s1)), false;
    return true;
}

/* v into [lo, hi] or AG_ERR_ARG naming fn and the option */
static bool in_range(ag_tape *t, const char *fn, const char *name, int i, int64_t v,
                     int64_t lo, int64_t hi, const char *note)
{
    if (v >= lo && v <= hi)
        return true;
    ag_fail(t, AG_ERR_ARG, "%s: %s[%d] is %lld (must be in [%lld, %lld]%s)", fn, name, i,
            (long long)v, (long long)lo, (long long)hi, note);
    return false;
}

/* An output of n elements that memory cannot hold: AG_ERR_NOMEM. */
static bool check_out(ag_tape *t, const char *fn, const ag_tensor *x, double n)
{
    if (n <= 0x1p46)
        return true;
    char s1[128];
    ag_fail(t, AG_ERR_NOMEM, "%s: x %s: the result (%.0f elements) is too large", fn,
            ag_shape_str(x, s1, sizeof s1), n);
    return false;
}

/* The fixed windows of o on x into k, s, p (stride 0: the kernel); their
 * table (with argmax room for max pooling), or NULL with the error kept. */
static pool_tab *pool_check(ag_tape *t, const char *fn, ag_tensor *x, const ag_pool2d_opts *o,
                            bool with_idx)
{
    if (!check_x(t, fn, x))
        return NULL;
    int64_t k[2], s[2], p[2];
    double n = (double)n_planes(x);
    for (int i = 0; i < 2; i++) {
        k[i] = o->kernel[i];
        s[i] = o->stride[i] ? o->stride[i] : k[i];
        p[i] = o->padding[i];
        if (!in_range(t, fn, "kernel", i, k[i], 1, OPT_MAX, "") ||
            !in_range(t, fn, "stride", i, o->stride[i] ? s[i] : 1, 1, OPT_MAX,
                      "; 0 means the kernel size") ||
            !in_range(t, fn, "padding", i, p[i], 0, k[i] / 2, ": at most half the kernel"))
            return NULL;
        if (x->shape[2 + i] + 2 * p[i] < k[i]) {
            char s1[128];
            return ag_fail(t, AG_ERR_SHAPE, "%s: kernel[%d] = %lld is larger than x %s padded "
                           "by %lld (%lld in dim %d)", fn, i, (long long)k[i],
                           ag_shape_str(x, s1, sizeof s1), (long long)p[i],
                           (long long)(x->shape[2 + i] + 2 * p[i]), 2 + i);
        }
        n *= (double)pool_out(x->shape[2 + i], k[i], s[i], p[i]);
    }
    if (!check_out(t, fn, x, n))
        return NULL;
    return fixed_tab(t, x->shape, k, s, p, with_idx ? (int64_t)n : 0);
}

ag_tensor *ag_max_pool2d(ag_tape *t, ag_tensor *x, ag_pool2d_opts o)
{
    pool_tab *p = pool_check(t, "ag_max_pool2d", x, &o, true);
    if (!p)
        return NULL;
    int64_t ys[4] = {x->shape[0], x->shape[1], p->Ho, p->Wo};
    ag_op_call c = {.def = &ag_op_max_pool2d, .in = &x, .n_in = 1, .dtype = x->dtype,
                    .ndim = 4, .shape = ys, .aux = p};
    return ag_op_run(t, &c);
}

ag_tensor *ag_avg_pool2d(ag_tape *t, ag_tensor *x, ag_pool2d_opts o)
{
    pool_tab *p = pool_check(t, "ag_avg_pool2d", x, &o, false);
    return p ? avg_run(t, &ag_op_avg_pool2d, x, p) : NULL;
}

ag_tensor *ag_adaptive_avg_pool2d(ag_tape *t, ag_tensor *x, int64_t out_h, int64_t out_w)
{
    const char *fn = "ag_adaptive_avg_pool2d";
    if (!check_x(t, fn, x))
        return NULL;
    int64_t out[2] = {out_h, out_w};
    const char *names[2] = {"out_h", "out_w"};
    for (int i = 0; i < 2; i++)
        if (out[i] < 1 || out[i] > OPT_MAX)
            return ag_fail(t, AG_ERR_ARG, "%s: %s is %lld (must be in [1, %d])", fn, names[i],
                           (long long)out[i], OPT_MAX);
    if (!check_out(t, fn, x, (double)n_planes(x) * (double)out_h * (double)out_w))
        return NULL;
    /* the windows' bounds are worked out as (i + 1) * H / out_h */
    if ((double)x->shape[2] * (double)out_h > 0x1p62 ||
        (double)x->shape[3] * (double)out_w > 0x1p62) {
        char s1[128];
        return ag_fail(t, AG_ERR_ARG, "%s: x %s is too large for out_h %lld, out_w %lld", fn,
                       ag_shape_str(x, s1, sizeof s1), (long long)out_h, (long long)out_w);
    }
    pool_tab *p = adaptive_tab(t, x->shape, out_h, out_w);
    return p ? avg_run(t, &ag_op_adaptive_avg_pool2d, x, p) : NULL;
}

/* ---- samples: the CNN's 2x2, overlapping windows with padding, odd
 * sizes, a 1x1 window; adaptive: overlapping, global, larger than x ---- */

static const struct {
    int64_t x[4], k[2], s[2], p[2];
} pool_cases[] = {
    {{2, 2, 6, 6}, {2, 2}, {0, 0}, {0, 0}},
    {{1, 2, 7, 5}, {3, 3}, {2, 2}, {1, 1}},
    {{1, 3, 5, 6}, {3, 2}, {1, 2}, {1, 1}},
    {{2, 1, 3, 4}, {1, 1}, {1, 2}, {0, 0}},
};
#define N_POOL_CASES (int)(sizeof pool_cases / sizeof pool_cases[0])

static const struct {
    int64_t x[4], out[2];
} adaptive_cases[] = {
    {{1, 2, 5, 7}, {3, 4}},
    {{2, 3, 4, 4}, {1, 1}},
    {{1, 1, 3, 5}, {5, 2}},
};
#define N_ADAPTIVE_CASES (int)(sizeof adaptive_cases / sizeof adaptive_cases[0])

static ag_pool2d_opts case_opts(int k)
{
    ag_pool2d_opts o;
    memcpy(o.kernel, pool_cases[k].k, sizeof o.kernel);
    memcpy(o.stride, pool_cases[k].s, sizeof o.stride);
    memcpy(o.padding, pool_cases[k].p, sizeof o.padding);
    return o;
}

/* One input of the given shape, case number in iarg[0]. */
static bool pool_sample_of(int which, ag_rng *rng, ag_op_sample *s, ag_gradcheck_fn fn,
                           const int64_t *shape)
{
    s->in[0] = ag_sample_tensor(rng, 4, shape, AG_SAMPLE_RANGE, -2, 2);
    s->n_in = 1;
    s->iarg[0] = which;
    s->fn = fn;
    return true;
}

static ag_tensor *max_pool_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    return ag_max_pool2d(t, in[0], case_opts((int)((ag_op_sample *)ctx)->iarg[0]));
}

static bool max_pool_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    return which < N_POOL_CASES && pool_sample_of(which, rng, s, max_pool_apply,
                                                  pool_cases[which].x);
}

static ag_tensor *avg_pool_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    return ag_avg_pool2d(t, in[0], case_opts((int)((ag_op_sample *)ctx)->iarg[0]));
}

static bool avg_pool_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    return which < N_POOL_CASES && pool_sample_of(which, rng, s, avg_pool_apply,
                                                  pool_cases[which].x);
}

static ag_tensor *adaptive_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    int k = (int)((ag_op_sample *)ctx)->iarg[0];
    return ag_adaptive_avg_pool2d(t, in[0], adaptive_cases[k].out[0], adaptive_cases[k].out[1]);
}

static bool adaptive_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    return which < N_ADAPTIVE_CASES && pool_sample_of(which, rng, s, adaptive_apply,
                                                      adaptive_cases[which].x);
}

/* avg_pool2d_grad: the fixed cases, then the adaptive ones.  The
 * pooling's input shape xs and output shape ys of case k. */
static void grad_case_shapes(int k, const int64_t **xs, int64_t *ys)
{
    bool fixed = k < N_POOL_CASES;
    *xs = fixed ? pool_cases[k].x : adaptive_cases[k - N_POOL_CASES].x;
    ys[0] = (*xs)[0];
    ys[1] = (*xs)[1];
    for (int i = 0; i < 2; i++) {
        int64_t kk = fixed ? pool_cases[k].k[i] : 0, st = fixed ? pool_cases[k].s[i] : 0;
        ys[2 + i] = fixed ? pool_out((*xs)[2 + i], kk, st ? st : kk, pool_cases[k].p[i])
                          : adaptive_cases[k - N_POOL_CASES].out[i];
    }
}

static ag_tensor *avg_grad_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    int k = (int)((ag_op_sample *)ctx)->iarg[0];
    const int64_t *xs;
    int64_t ys[4];
    grad_case_shapes(k, &xs, ys);
    if (k >= N_POOL_CASES) {
        pool_tab *p = adaptive_tab(t, xs, ys[2], ys[3]);
        return p ? avg_grad_run(t, in[0], p, &ag_op_adaptive_avg_pool2d, xs) : NULL;
    }
    int64_t s[2];
    for (int i = 0; i < 2; i++)
        s[i] = pool_cases[k].s[i] ? pool_cases[k].s[i] : pool_cases[k].k[i];
    pool_tab *p = fixed_tab(t, xs, pool_cases[k].k, s, pool_cases[k].p, 0);
    return p ? avg_grad_run(t, in[0], p, &ag_op_avg_pool2d, xs) : NULL;
}

static bool avg_grad_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    if (which >= N_POOL_CASES + N_ADAPTIVE_CASES)
        return false;
    const int64_t *xs;
    int64_t ys[4];
    grad_case_shapes(which, &xs, ys);
    return pool_sample_of(which, rng, s, avg_grad_apply, ys);
}

const ag_op_def ag_op_max_pool2d = {.name = "max_pool2d", .forward = max_pool_forward,
                                    .backward = max_pool_backward, .vjp = max_pool_vjp,
                                    .sample = max_pool_sample};
const ag_op_def ag_op_avg_pool2d = {.name = "avg_pool2d", .forward = avg_pool_forward,
                                    .backward = avg_pool_backward, .vjp = avg_pool_vjp,
                                    .sample = avg_pool_sample};
const ag_op_def ag_op_adaptive_avg_pool2d = {.name = "adaptive_avg_pool2d",
                                             .forward = avg_pool_forward,
                                             .backward = avg_pool_backward,
                                             .vjp = avg_pool_vjp, .sample = adaptive_sample};
const ag_op_def ag_op_avg_pool2d_grad = {.name = "avg_pool2d_grad",
                                         .forward = avg_grad_forward,
                                         .backward = avg_grad_backward, .vjp = avg_grad_vjp,
                                         .sample = avg_grad_sample};
