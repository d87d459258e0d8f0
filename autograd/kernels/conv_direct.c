/* conv_direct.c — direct f32 kernels for a convolution over one input
 * channel with a 3x3 kernel (stride 1, no padding or dilation, one group),
 * a network's first layer on a grey image: there K = 9, too short a
 * product for the GEMM to pay for its packing, so the taps are applied
 * straight from x (legend in conv_internal.h; T = 9 taps t = (i, j)).
 *
 * Vectors run along an output row, VL columns at a time; a row whose
 * width is no multiple of VL ends with a vector that overlaps the one
 * before it (columns Wo - VL .. Wo - 1), so nothing is read or written
 * outside the tensors.  The forward writes the overlapped columns twice
 * with the same values; the weight gradient masks them out of its sums. */
#include "conv_internal.h"

#include "autograd_internal.h"

#include <string.h>

/* The vector helpers below are always inlined, so the ABI GCC warns
 * about (vectors passed in registers the default target lacks) never
 * applies. */
#pragma GCC diagnostic ignored "-Wpsabi"

enum { VL = 16, T = 9, OB = 2 };
typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));

AG_INLINE vf load(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

AG_INLINE void store(float *p, vf v)
{
    memcpy(p, &v, sizeof v);
}

/* s in every lane (s - 0 is s, -0 included, so this folds to a broadcast) */
AG_INLINE vf splat(float s)
{
    return s - (vf){0};
}

bool ag_conv_direct_fits(const ag_conv_geom *g, ag_dtype dt)
{
    return dt == AG_F32 && g->G == 1 && g->C == 1 && g->kh == 3 && g->kw == 3 && g->sh == 1 &&
           g->sw == 1 && g->ph == 0 && g->pw == 0 && g->dh == 1 && g->dw == 1 && g->Wo >= VL;
}

/* First column of vector v of a row (the last one pulled back to end at
 * Wo), and how many vectors a row has. */
static int64_t col_of(const ag_conv_geom *g, int64_t v)
{
    int64_t c = v * VL;
    return c + VL <= g->Wo ? c : g->Wo - VL;
}

static int64_t row_vectors(const ag_conv_geom *g)
{
    return (g->Wo + VL - 1) / VL;
}

/* ---- forward ---- */

typedef struct {
    const ag_conv_geom *g;
    const float *x, *w, *b;
    float *y;
} fwd_run;

/* Output channels o0 .. o0 + nb - 1 (nb <= OB) of sample x: each vector
 * of x's 9 taps loaded once for all of them, each channel's sum in the
 * same order as alone (bias, then taps 0..8). */
AG_INLINE void forward_block(const fwd_run *r, const float *x, float *y, int64_t o0, int nb)
{
    const ag_conv_geom *g = r->g;
    vf wv[OB][T], bias[OB];
    for (int k = 0; k < nb; k++) {
        bias[k] = splat(r->b ? r->b[o0 + k] : 0.0f);
        for (int t = 0; t < T; t++)
            wv[k][t] = splat(r->w[(o0 + k) * T + t]);
    }
    int64_t P = g->Ho * g->Wo, nv = row_vectors(g);
    for (int64_t oh = 0; oh < g->Ho; oh++)
        for (int64_t v = 0; v < nv; v++) {
            int64_t c = col_of(g, v);
            const float *xs = x + oh * g->W + c;
            vf xv[T], acc[OB];
            for (int t = 0; t < T; t++)
                xv[t] = load(xs + t / 3 * g->W + t % 3);
            for (int k = 0; k < nb; k++) {
                acc[k] = bias[k];
                for (int t = 0; t < T; t++)
                    acc[k] += wv[k][t] * xv[t];
                store(y + (o0 + k) * P + oh * g->Wo + c, acc[k]);
            }
        }
}

/* y[n] = w * x[n] + b, OB channels at a time: their weights in
 * registers, x[n] in L1, each tap vector loaded once for the OB
 * channels (one at a time, the forward took ~23 cycles an output
 * vector: 9 loads, 9 multiplies, 9 adds and the addressing). */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void forward_sample(void *vr, int64_t n, int64_t chunk)
{
    (void)chunk;
    const fwd_run *r = vr;
    const ag_conv_geom *g = r->g;
    const float *x = r->x + n * g->H * g->W;
    float *y = r->y + n * g->O * g->Ho * g->Wo;
    int64_t o = 0;
    for (; o + OB <= g->O; o += OB)
        forward_block(r, x, y, o, OB);
    for (; o < g->O; o++)
        forward_block(r, x, y, o, 1);
}

void ag_conv_direct_forward(const ag_conv_geom *g, const float *x, const float *w,
                            const float *b, float *y)
{
    fwd_run r = {g, x, w, b, y};
    double macs = (double)g->N * (double)g->O * (double)(g->Ho * g->Wo) * T;
    ag_parallel_chunks(g->N, ag_work_chunks(g->N, macs), forward_sample, &r);
}

/* ---- weight gradient ---- */

typedef struct {
    const ag_conv_geom *g;
    const float *x, *dy;
    float *dw, *db;
    bool acc;
} dw_run;

/* Lanes of vector v that no earlier vector of the row covered. */
AG_INLINE vi fresh_lanes(const ag_conv_geom *g, int64_t v)
{
    int64_t skip = v * VL - col_of(g, v);
    vi m;
    for (int l = 0; l < VL; l++)
        m[l] = l < skip ? 0 : -1;
    return m;
}

/* dw[o0 + k, t] (+)= sum over n, oh, ow of dy[n, o0 + k, oh, ow]
 * x[n, oh + i, ow + j] for k < nb, and db[o0 + k] += the sum of dy over
 * the same (when db; the pass over dy it would take alone cost 2.2% of a
 * CNN training step): per lane sums over each sample's rows, added up
 * over the samples in order, then the lanes in order, so each element is
 * one fixed sequence of operations whatever the thread count. */
AG_INLINE void dw_block(const dw_run *r, int64_t o0, int nb)
{
    const ag_conv_geom *g = r->g;
    int64_t P = g->Ho * g->Wo, nv = row_vectors(g);
    vi tail = fresh_lanes(g, nv - 1);
    vf tot[OB][T] = {{{0}}}, btot[OB] = {{0}};
    for (int64_t n = 0; n < g->N; n++) {
        /* a sample's own sums first: rounding grows with the terms a
         * lane adds in one run */
        vf acc[OB][T] = {{{0}}}, bacc[OB] = {{0}};
        for (int64_t oh = 0; oh < g->Ho; oh++)
            for (int64_t v = 0; v < nv; v++) {
                int64_t c = col_of(g, v);
                vi keep = v + 1 < nv ? (vi){0} - 1 : tail;
                const float *xs = r->x + n * g->H * g->W + oh * g->W + c;
                vf d[OB];
                for (int k = 0; k < nb; k++) {
                    const float *dyk = r->dy + (n * g->O + o0 + k) * P + oh * g->Wo + c;
                    if (n + 1 < g->N) /* the next sample's plane: a jump the
                                       * prefetcher misses */
                        __builtin_prefetch(dyk + g->O * P);
                    d[k] = (vf)((vi)load(dyk) & keep);
                    bacc[k] += d[k];
                }
                for (int t = 0; t < T; t++) {
                    vf xv = load(xs + t / 3 * g->W + t % 3);
                    for (int k = 0; k < nb; k++)
                        acc[k][t] += d[k] * xv;
                }
            }
        for (int k = 0; k < nb; k++) {
            for (int t = 0; t < T; t++)
                tot[k][t] += acc[k][t];
            btot[k] += bacc[k];
        }
    }
    for (int k = 0; k < nb; k++)
        for (int t = 0; t < T; t++) {
            float s = 0;
            for (int l = 0; l < VL; l++)
                s += tot[k][t][l];
            float *d = r->dw + (o0 + k) * T + t;
            *d = r->acc ? *d + s : s;
        }
    for (int k = 0; k < nb && r->db; k++) {
        float s = 0;
        for (int l = 0; l < VL; l++)
            s += btot[k][l];
        r->db[o0 + k] += s;
    }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void weight_grad_block(void *vr, int64_t blk, int64_t chunk)
{
    (void)chunk;
    const dw_run *r = vr;
    int64_t o0 = blk * OB;
    _Static_assert(OB == 2, "a last, partial block has one channel");
    if (o0 + OB <= r->g->O)
        dw_block(r, o0, OB);
    else
        dw_block(r, o0, 1);
}

void ag_conv_direct_weight_grad(const ag_conv_geom *g, const float *x, const float *dy,
                                float *dw, bool acc, float *db)
{
    dw_run r = {g, x, dy, dw, db, acc};
    int64_t blocks = (g->O + OB - 1) / OB;
    double macs = (double)g->N * (double)g->O * (double)(g->Ho * g->Wo) * T;
    ag_parallel_chunks(blocks, ag_work_chunks(blocks, macs), weight_grad_block, &r);
}
