/* conv.c — the convolution kernels of conv_internal.h (legend there):
 * im2col / col2im per sample and group, products by the GEMM, and the
 * item loop the convolution and pooling ops share. */
#include "conv_internal.h"

#include "autograd_internal.h"
#include "kernels_internal.h"

/* Work below which one chunk does it all (multiply-adds for a
 * convolution, elements visited for a pooling): a round trip through the
 * pool costs some microseconds, the time of ~2^18 multiply-adds. */
#define PARALLEL_WORK (1 << 18)
/* Chunks of a parallel loop (fewer for fewer items): fixed, never the
 * thread count, so the weight gradient's sums over its chunks come out
 * the same on any number of threads; 16 keeps 16 threads busy. */
#define MAX_CHUNKS 16

int64_t ag_work_chunks(int64_t n, double work)
{
    if (work < PARALLEL_WORK)
        return n > 0 ? 1 : 0;
    return n < MAX_CHUNKS ? n : MAX_CHUNKS;
}

typedef struct {
    int64_t n, nchunks;
    ag_item_fn fn;
    void *ctx;
} chunks_call;

/* Chunks [lo, hi) of a chunks_call, each its items in order. */
static void chunks_body(void *vc, int64_t lo, int64_t hi)
{
    const chunks_call *c = vc;
    for (int64_t k = lo; k < hi; k++)
        for (int64_t i = k * c->n / c->nchunks; i < (k + 1) * c->n / c->nchunks; i++)
            c->fn(c->ctx, i, k);
}

void ag_parallel_chunks(int64_t n, int64_t nchunks, ag_item_fn fn, void *ctx)
{
    chunks_call c = {n, nchunks, fn, ctx};
    ag_status st = ag_parallel_for(nchunks, 1, chunks_body, &c);
    AG_ASSERT(st == AG_OK);
}

/* ---- geometry ---- */

/* Output positions o in [0, out) whose input position o*s + off lies in
 * [0, in): the range [lo, hi). */
typedef struct {
    int64_t lo, hi, off;
} span;

static span span_of(int64_t out, int64_t s, int64_t off, int64_t in)
{
    span r = {off >= 0 ? 0 : (-off + s - 1) / s, in - off <= 0 ? 0 : (in - off + s - 1) / s,
              off};
    if (r.hi > out)
        r.hi = out;
    if (r.lo > r.hi)
        r.lo = r.hi;
    return r;
}

/* A 1x1 kernel with stride 1 and no padding: col is x itself. */
static bool pointwise(const ag_conv_geom *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

static int64_t col_elems(const ag_conv_geom *g)
{
    return pointwise(g) ? 0 : g->C / g->G * g->kh * g->kw * g->Ho * g->Wo;
}

/* The weight gradient as dw^T = col dy^T (K x Og): the GEMM's tiles fit
 * better when K is the smaller (a 3x3 kernel over one channel: K = 9). */
static bool dw_transposed(const ag_conv_geom *g)
{
    return g->C / g->G * g->kh * g->kw < g->O / g->G;
}

static size_t round_up(size_t n)
{
    return (n + AG_ALIGN - 1) / AG_ALIGN * AG_ALIGN;
}

int64_t ag_conv_chunks(const ag_conv_geom *g)
{
    double macs = (double)g->N * (double)g->O * (double)(g->Ho * g->Wo) *
                  (double)(g->C / g->G * g->kh * g->kw);
    return ag_work_chunks(g->N * g->G, macs);
}

/* The weight gradient's chunks of samples. */
static int64_t dw_chunks(const ag_conv_geom *g)
{
    int64_t c = ag_conv_chunks(g);
    return g->N < c ? g->N : c;
}

size_t ag_conv_scratch_bytes(const ag_conv_geom *g, ag_dtype dt, bool weight_grad)
{
    size_t esz = ag_dtype_size(dt);
    size_t bytes = (size_t)ag_conv_chunks(g) * round_up((size_t)col_elems(g) * esz);
    int64_t nch = dw_chunks(g);
    if (weight_grad && (nch > 1 || dw_transposed(g)))
        bytes += (size_t)nch * (size_t)(g->O * (g->C / g->G) * g->kh * g->kw) * esz;
    return bytes;
}

/* ---- typed loops ---- */

/* Vectorises the loop after it, a sum into a variable named s. */
#ifdef _OPENMP
#define SIMD_SUM_S _Pragma("omp simd reduction(+ : s)")
#else
#define SIMD_SUM_S
#endif

#define CONV_LOOPS(T)                                                         \
    /* d[0, n) = s[0, n): the short rows of im2col (11 elements for a 3x3   \
     * kernel on 13x13) as fixed-size copies the compiler inlines, the last \
     * one overlapping, rather than a memcpy call per row */                 \
    AG_INLINE void copy_row_##T(T *restrict d, const T *restrict s, int64_t n) \
    {                                                                         \
        enum { B = 8 };                                                       \
        if (n >= B) {                                                         \
            int64_t k = 0;                                                    \
            for (; k + B <= n; k += B)                                        \
                memcpy(d + k, s + k, B * sizeof(T));                          \
            if (k < n)                                                        \
                memcpy(d + n - B, s + n - B, B * sizeof(T));                  \
        } else if (n >= B / 2) {                                              \
            memcpy(d, s, B / 2 * sizeof(T));                                  \
            memcpy(d + n - B / 2, s + n - B / 2, B / 2 * sizeof(T));          \
        } else {                                                              \
            for (int64_t k = 0; k < n; k++)                                   \
                d[k] = s[k];                                                  \
        }                                                                     \
    }                                                                         \
    /* col [K, P] = the unrolled x [Cg, H, W] of one sample and group */      \
    __attribute__((target_clones("avx2", "default")))                       \
    static void im2col_##T(const T *restrict x, const ag_conv_geom *g, T *restrict col) \
    {                                                                         \
        int64_t Cg = g->C / g->G, Ho = g->Ho, Wo = g->Wo, W = g->W;           \
        for (int64_t c = 0; c < Cg; c++)                                      \
            for (int64_t i = 0; i < g->kh; i++) {                             \
                span rh = span_of(Ho, g->sh, i * g->dh - g->ph, g->H);        \
                for (int64_t j = 0; j < g->kw; j++) {                         \
                    span rw = span_of(Wo, g->sw, j * g->dw - g->pw, W);       \
                    T *d = col + ((c * g->kh + i) * g->kw + j) * Ho * Wo;     \
                    const T *s = x + c * g->H * W;                            \
                    for (int64_t oh = 0; oh < Ho; oh++, d += Wo) {            \
                        if (oh < rh.lo || oh >= rh.hi) {                      \
                            memset(d, 0, (size_t)Wo * sizeof(T));             \
                            continue;                                         \
                        }                                                     \
                        int64_t r = (oh * g->sh + rh.off) * W + rw.off;       \
                        for (int64_t ow = 0; ow < rw.lo; ow++)                \
                            d[ow] = 0;                                        \
                        if (g->sw == 1)                                       \
                            copy_row_##T(d + rw.lo, s + r + rw.lo, rw.hi - rw.lo); \
                        else                                                  \
                            for (int64_t ow = rw.lo; ow < rw.hi; ow++)        \
                                d[ow] = s[r + ow * g->sw];                    \
                        for (int64_t ow = rw.hi; ow < Wo; ow++)               \
                            d[ow] = 0;                                        \
                    }                                                         \
                }                                                             \
            }                                                                 \
    }                                                                         \
    /* dx [Cg, H, W] += col [K, P] folded back (im2col's adjoint) */          \
    __attribute__((target_clones("avx2", "default")))                       \
    static void col2im_##T(const T *restrict col, const ag_conv_geom *g, T *restrict dx) \
    {                                                                         \
        int64_t Cg = g->C / g->G, Ho = g->Ho, Wo = g->Wo, W = g->W;           \
        for (int64_t c = 0; c < Cg; c++)                                      \
            for (int64_t i = 0; i < g->kh; i++) {                             \
                span rh = span_of(Ho, g->sh, i * g->dh - g->ph, g->H);        \
                for (int64_t j = 0; j < g->kw; j++) {                         \
                    span rw = span_of(Wo, g->sw, j * g->dw - g->pw, W);       \
                    const T *d = col + ((c * g->kh + i) * g->kw + j) * Ho * Wo; \
                    T *s = dx + c * g->H * W;                                 \
                    for (int64_t oh = rh.lo; oh < rh.hi; oh++) {              \
                        int64_t r = (oh * g->sh + rh.off) * W + rw.off;       \
                        const T *dr = d + oh * Wo;                            \
                        if (g->sw == 1)                                       \
                            AG_SIMD for (int64_t ow = rw.lo; ow < rw.hi; ow++) \
                                s[r + ow] += dr[ow];                          \
                        else                                                  \
                            for (int64_t ow = rw.lo; ow < rw.hi; ow++)        \
                                s[r + ow * g->sw] += dr[ow];                  \
                    }                                                         \
                }                                                             \
            }                                                                 \
    }                                                                         \
    /* y [rows, P] += b[row] */                                               \
    static void add_bias_##T(T *restrict y, const T *restrict b, int64_t rows, int64_t P) \
    {                                                                         \
        for (int64_t r = 0; r < rows; r++)                                    \
            for (int64_t p = 0; p < P; p++)                                   \
                y[r * P + p] += b[r];                                         \
    }                                                                         \
    /* dw[g, o, k] (+)= sum over chunks c, in order, of part[c, g, o, k]     \
     * (part[c, g, k, o] when trans) */                                      \
    static void sum_chunks_##T(T *restrict dw, const T *restrict part, int64_t nch, \
                               const ag_conv_geom *g, bool trans, bool acc)   \
    {                                                                         \
        int64_t Og = g->O / g->G, K = g->C / g->G * g->kh * g->kw, n = g->O * K; \
        for (int64_t grp = 0; grp < g->G; grp++)                              \
            for (int64_t o = 0; o < Og; o++)                                  \
                for (int64_t k = 0; k < K; k++) {                             \
                    int64_t i = (grp * Og + o) * K + k;                       \
                    int64_t at = trans ? (grp * K + k) * Og + o : i;          \
                    T s = part[at];                                           \
                    for (int64_t c = 1; c < nch; c++)                         \
                        s += part[c * n + at];                                \
                    dw[i] = acc ? dw[i] + s : s;                              \
                }                                                             \
    }                                                                         \
    /* sum of x[0, n) (vectorised: a fixed order, whatever the threads) */   \
    static T row_sum_##T(const T *restrict x, int64_t n)                      \
    {                                                                         \
        T s = 0;                                                              \
        SIMD_SUM_S                                                            \
        for (int64_t i = 0; i < n; i++)                                       \
            s += x[i];                                                        \
        return s;                                                             \
    }                                                                         \
    /* db[o] += sum_n (sum_p dy[n, o, p]), the outer sum in double */        \
    static void bias_grad_##T(const T *restrict dy, T *restrict db, int64_t N, int64_t O, \
                              int64_t P, int64_t o)                           \
    {                                                                         \
        double s = 0;                                                         \
        for (int64_t n = 0; n < N; n++)                                       \
            s += row_sum_##T(dy + (n * O + o) * P, P);                        \
        db[o] += (T)s;                                                        \
    }
CONV_LOOPS(float)
CONV_LOOPS(double)

#define BY_DTYPE(dt, fn, ...)                                                 \
    ((dt) == AG_F64 ? fn##_double(__VA_ARGS__) : fn##_float(__VA_ARGS__))

/* ---- the three products ---- */

/* One kernel call: operands as bytes, derived sizes, scratch. */
typedef struct {
    const ag_conv_geom *g;
    ag_dtype dt;
    size_t esz;
    const char *x, *w, *b, *dy;
    char *out;
    bool acc;
    char *scratch;   /* a column buffer of `slot` bytes per chunk */
    size_t slot;
    char *part;      /* then the weight gradient's chunk partials [nch, O, K] */
    int64_t Cg, Og, K, P, HW, nch;
    bool pw, trans;  /* pointwise; weight gradient transposed */
} conv_run;

static conv_run run_of(const ag_conv_geom *g, ag_dtype dt, void *scratch)
{
    conv_run r = {.g = g, .dt = dt, .esz = ag_dtype_size(dt), .scratch = scratch};
    r.Cg = g->C / g->G;
    r.Og = g->O / g->G;
    r.K = r.Cg * g->kh * g->kw;
    r.P = g->Ho * g->Wo;
    r.HW = g->H * g->W;
    r.pw = pointwise(g);
    r.slot = round_up((size_t)col_elems(g) * r.esz);
    r.nch = dw_chunks(g);
    r.trans = dw_transposed(g);
    r.part = r.scratch + (size_t)ag_conv_chunks(g) * r.slot;
    return r;
}

/* x of sample n, group grp, unrolled into chunk c's columns (x itself
 * for a pointwise kernel). */
static const char *columns(const conv_run *r, int64_t n, int64_t grp, int64_t c)
{
    const char *xs = r->x + (size_t)((n * r->g->C + grp * r->Cg) * r->HW) * r->esz;
    if (r->pw)
        return xs;
    char *col = r->scratch + (size_t)c * r->slot;
    BY_DTYPE(r->dt, im2col, (const void *)xs, r->g, (void *)col);
    return col;
}

/* y[n, grp] (+)= w[grp] col (+ b[grp]) */
static void forward_item(void *vc, int64_t item, int64_t c)
{
    const conv_run *r = vc;
    int64_t n = item / r->g->G, grp = item % r->g->G;
    const char *col = columns(r, n, grp, c);
    char *y = r->out + (size_t)((n * r->g->O + grp * r->Og) * r->P) * r->esz;
    const char *wg = r->w + (size_t)(grp * r->Og * r->K) * r->esz;
    ag_gemm_dt(r->dt, false, false, r->Og, r->P, r->K, wg, r->K, col, r->P, r->acc ? 1.0 : 0.0,
               y, r->P);
    if (r->b)
        BY_DTYPE(r->dt, add_bias, (void *)y, (const void *)(r->b + (size_t)(grp * r->Og) * r->esz),
                 r->Og, r->P);
}

void ag_conv_forward(const ag_conv_geom *g, ag_dtype dt, const void *x, const void *w,
                     const void *b, void *y, bool acc, void *scratch)
{
    if (!acc && ag_conv_direct_fits(g, dt)) {
        ag_conv_direct_forward(g, x, w, b, y);
        return;
    }
    conv_run r = run_of(g, dt, scratch);
    r.x = x, r.w = w, r.b = b, r.out = y, r.acc = acc;
    ag_parallel_chunks(g->N * g->G, ag_conv_chunks(g), forward_item, &r);
}

/* dx[n, grp] += col2im(w[grp]^T dy[n, grp]) */
static void input_grad_item(void *vc, int64_t item, int64_t c)
{
    const conv_run *r = vc;
    int64_t n = item / r->g->G, grp = item % r->g->G;
    const char *dy = r->dy + (size_t)((n * r->g->O + grp * r->Og) * r->P) * r->esz;
    const char *wg = r->w + (size_t)(grp * r->Og * r->K) * r->esz;
    char *dx = r->out + (size_t)((n * r->g->C + grp * r->Cg) * r->HW) * r->esz;
    if (r->pw) { /* (Cg x Og)(Og x HW) straight into dx */
        ag_gemm_dt(r->dt, true, false, r->K, r->P, r->Og, wg, r->K, dy, r->P, 1.0, dx, r->P);
        return;
    }
    char *col = r->scratch + (size_t)c * r->slot;
    ag_gemm_dt(r->dt, true, false, r->K, r->P, r->Og, wg, r->K, dy, r->P, 0.0, col, r->P);
    BY_DTYPE(r->dt, col2im, (const void *)col, r->g, (void *)dx);
}

void ag_conv_input_grad(const ag_conv_geom *g, ag_dtype dt, const void *dy, const void *w,
                        void *dx, void *scratch)
{
    conv_run r = run_of(g, dt, scratch);
    r.dy = dy, r.w = w, r.out = dx;
    ag_parallel_chunks(g->N * g->G, ag_conv_chunks(g), input_grad_item, &r);
}

/* Sample n into chunk c's partial, part[c][grp] += dy[n, grp] col^T (or
 * its transpose), the chunk's first sample overwriting; a single chunk,
 * not transposed, writes dw itself (adding when acc). */
static void weight_grad_item(void *vc, int64_t n, int64_t c)
{
    const conv_run *r = vc;
    const ag_conv_geom *g = r->g;
    bool direct = r->nch == 1 && !r->trans;
    char *dst = direct ? r->out : r->part + (size_t)(c * g->O * r->K) * r->esz;
    bool first = n == c * g->N / r->nch;
    double beta = first && !(direct && r->acc) ? 0.0 : 1.0;
    for (int64_t grp = 0; grp < g->G; grp++) {
        const char *col = columns(r, n, grp, c);
        const char *dy = r->dy + (size_t)((n * g->O + grp * r->Og) * r->P) * r->esz;
        char *d = dst + (size_t)(grp * r->Og * r->K) * r->esz;
        if (r->trans) /* (K x P)(P x Og) */
            ag_gemm_dt(r->dt, false, true, r->K, r->Og, r->P, col, r->P, dy, r->P, beta, d, r->Og);
        else /* (Og x P)(P x K) */
            ag_gemm_dt(r->dt, false, true, r->Og, r->K, r->P, dy, r->P, col, r->P, beta, d, r->K);
    }
}

void ag_conv_weight_grad(const ag_conv_geom *g, ag_dtype dt, const void *x, const void *dy,
                         void *dw, bool acc, void *scratch)
{
    if (ag_conv_direct_fits(g, dt)) {
        ag_conv_direct_weight_grad(g, x, dy, dw, acc);
        return;
    }
    conv_run r = run_of(g, dt, scratch);
    r.x = x, r.dy = dy, r.out = dw, r.acc = acc;
    if (r.nch == 0) { /* no samples: a zero gradient */
        if (!acc)
            memset(dw, 0, (size_t)(g->O * r.K) * r.esz);
        return;
    }
    ag_parallel_chunks(g->N, r.nch, weight_grad_item, &r);
    if (r.nch > 1 || r.trans)
        BY_DTYPE(dt, sum_chunks, dw, (const void *)r.part, r.nch, g, r.trans, acc);
}

typedef struct {
    const ag_conv_geom *g;
    ag_dtype dt;
    const void *dy;
    void *db;
} bias_run;

static void bias_item(void *vc, int64_t o, int64_t c)
{
    (void)c;
    const bias_run *r = vc;
    BY_DTYPE(r->dt, bias_grad, r->dy, r->db, r->g->N, r->g->O, r->g->Ho * r->g->Wo, o);
}

/* each channel's sum is one item: the same on any thread count */
void ag_conv_bias_grad(const ag_conv_geom *g, ag_dtype dt, const void *dy, void *db)
{
    bias_run r = {g, dt, dy, db};
    double work = (double)g->N * (double)g->O * (double)(g->Ho * g->Wo);
    ag_parallel_chunks(g->O, ag_work_chunks(g->O, work), bias_item, &r);
}
