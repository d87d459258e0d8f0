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

/* Bytes of one vector of the row loops (conv_loops.h): 16 floats, 8
 * doubles. */
#define VEC_BYTES 64

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

/* Vectorises the loop after it, a sum into a variable named s. */
#ifdef _OPENMP
#define AG_SIMD_SUM_S _Pragma("omp simd reduction(+ : s)")
#else
#define AG_SIMD_SUM_S
#endif

#define CL_VEC_BYTES VEC_BYTES
#define CL_T float
#define CL_I int32_t
#define CL(name) name##_float
#include "conv_loops.h"
#undef CL_T
#undef CL_I
#undef CL
#define CL_T double
#define CL_I int64_t
#define CL(name) name##_double
#include "conv_loops.h"
#undef CL_T
#undef CL_I
#undef CL

/* A chunk's slot of scratch (empty for a pointwise kernel): a vector of
 * slack, the column buffer at `col`, 5 vectors of slack (the row loops
 * read up to 5 past a row and write up to 1), `bytes` in all. */
typedef struct {
    size_t col, bytes;
} slot_layout;

static slot_layout layout_of(const ag_conv_geom *g, ag_dtype dt)
{
    slot_layout L = {0};
    int64_t n = col_elems(g);
    if (!n)
        return L;
    L.col = VEC_BYTES;
    L.bytes = round_up(L.col + (size_t)n * ag_dtype_size(dt) + 5 * VEC_BYTES);
    return L;
}

size_t ag_conv_scratch_bytes(const ag_conv_geom *g, ag_dtype dt, bool weight_grad)
{
    size_t esz = ag_dtype_size(dt);
    size_t bytes = (size_t)ag_conv_chunks(g) * layout_of(g, dt).bytes;
    int64_t nch = dw_chunks(g);
    /* the weight gradient's chunk partials, or the input gradient's w^T */
    size_t wbytes = (size_t)(g->O * (g->C / g->G) * g->kh * g->kw) * esz;
    bytes += (size_t)(weight_grad ? nch : 1) * wbytes;
    size_t wino = ag_conv_winograd_fits(g) ? ag_conv_winograd_scratch(g, dt) : 0;
    return bytes > wino ? bytes : wino;
}

/* ---- typed loops ---- */

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
    char *scratch;   /* a slot per chunk */
    slot_layout slot;
    char *part;      /* then the weight gradient's chunk partials [nch, O, K] */
    int64_t Cg, Og, K, P, HW, nch;
    bool pw;         /* pointwise */
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
    r.slot = layout_of(g, dt);
    r.nch = dw_chunks(g);
    r.part = r.scratch + (size_t)ag_conv_chunks(g) * r.slot.bytes;
    return r;
}

/* x of sample n, group grp, unrolled into chunk c's columns (x itself
 * for a pointwise kernel). */
static const char *columns(const conv_run *r, int64_t n, int64_t grp, int64_t c)
{
    const char *xs = r->x + (size_t)((n * r->g->C + grp * r->Cg) * r->HW) * r->esz;
    if (r->pw)
        return xs;
    char *col = r->scratch + (size_t)c * r->slot.bytes + r->slot.col;
    int64_t avail = (r->g->N - n) * r->g->C * r->HW - grp * r->Cg * r->HW;
    BY_DTYPE(r->dt, im2col, (const void *)xs, r->g, (void *)col, avail);
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
    if (ag_conv_winograd_fits(g)) {
        ag_conv_winograd_forward(g, dt, x, w, b, y, acc, scratch);
        return;
    }
    conv_run r = run_of(g, dt, scratch);
    r.x = x, r.w = w, r.b = b, r.out = y, r.acc = acc;
    ag_parallel_chunks(g->N * g->G, ag_conv_chunks(g), forward_item, &r);
}

/* dx[n, grp] += col2im(w[grp]^T dy[n, grp]), w^T from r->w (wt) */
static void input_grad_item(void *vc, int64_t item, int64_t c)
{
    const conv_run *r = vc;
    int64_t n = item / r->g->G, grp = item % r->g->G;
    const char *dy = r->dy + (size_t)((n * r->g->O + grp * r->Og) * r->P) * r->esz;
    const char *wt = r->w + (size_t)(grp * r->Og * r->K) * r->esz;
    char *dx = r->out + (size_t)((n * r->g->C + grp * r->Cg) * r->HW) * r->esz;
    if (r->pw) { /* (Cg x Og)(Og x HW) straight into dx */
        ag_gemm_dt(r->dt, false, false, r->K, r->P, r->Og, wt, r->Og, dy, r->P, 1.0, dx, r->P);
        return;
    }
    char *col = r->scratch + (size_t)c * r->slot.bytes + r->slot.col;
    ag_gemm_dt(r->dt, false, false, r->K, r->P, r->Og, wt, r->Og, dy, r->P, 0.0, col, r->P);
    BY_DTYPE(r->dt, col2im, (const void *)col, r->g, (void *)dx);
}

/* The products take w^T laid out once (the chunks' part of the scratch),
 * not w transposed by each sample's pack: untransposed, the f32 GEMM
 * reads it in place. */
void ag_conv_input_grad(const ag_conv_geom *g, ag_dtype dt, const void *dy, const void *w,
                        void *dx, void *scratch)
{
    if (ag_conv_winograd_fits(g)) {
        ag_conv_winograd_input_grad(g, dt, dy, w, dx, scratch);
        return;
    }
    conv_run r = run_of(g, dt, scratch);
    BY_DTYPE(dt, transpose_w, w, (void *)r.part, g->G, r.Og, r.K);
    r.dy = dy, r.w = r.part, r.out = dx;
    ag_parallel_chunks(g->N * g->G, ag_conv_chunks(g), input_grad_item, &r);
}

/* Sample n into chunk c's partial, part[c][grp] += (dy[n, grp] col^T)^T
 * = col dy[n, grp]^T, the chunk's first sample overwriting.  Transposed,
 * because then col is the GEMM's A, read in place, and the operand it
 * packs is dy, the smaller; faster for every shape timed (bench/conv's
 * and others, AVX-512 and AVX2, one thread: the CNN's conv2, Og 64, K 288,
 * P 121: 42.4 vs 51.0 us a sample; Og 32, K 288, P 3136: 532 vs 766). */
static void weight_grad_item(void *vc, int64_t n, int64_t c)
{
    const conv_run *r = vc;
    const ag_conv_geom *g = r->g;
    char *dst = r->part + (size_t)(c * g->O * r->K) * r->esz;
    double beta = n == c * g->N / r->nch ? 0.0 : 1.0;
    for (int64_t grp = 0; grp < g->G; grp++) {
        const char *col = columns(r, n, grp, c);
        const char *dy = r->dy + (size_t)((n * g->O + grp * r->Og) * r->P) * r->esz;
        char *d = dst + (size_t)(grp * r->Og * r->K) * r->esz;
        /* (K x P)(P x Og) */
        ag_gemm_dt(r->dt, false, true, r->K, r->Og, r->P, col, r->P, dy, r->P, beta, d, r->Og);
    }
}

void ag_conv_weight_grad(const ag_conv_geom *g, ag_dtype dt, const void *x, const void *dy,
                         void *dw, bool acc, void *db, void *scratch)
{
    if (ag_conv_direct_fits(g, dt)) {
        ag_conv_direct_weight_grad(g, x, dy, dw, acc, db);
        return;
    }
    if (db)
        ag_conv_bias_grad(g, dt, dy, db);
    conv_run r = run_of(g, dt, scratch);
    r.x = x, r.dy = dy, r.out = dw, r.acc = acc;
    if (r.nch == 0) { /* no samples: a zero gradient */
        if (!acc)
            memset(dw, 0, (size_t)(g->O * r.K) * r.esz);
        return;
    }
    ag_parallel_chunks(g->N, r.nch, weight_grad_item, &r);
    BY_DTYPE(dt, sum_chunks, dw, (void *)r.part, r.nch, g, acc);
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
