/* conv_internal.h — the convolution kernels (im2col + GEMM; direct ones
 * for a one-channel 3x3 first layer) behind ops_conv.c, and the loop over
 * independent items that the convolution and pooling ops share; for
 * autograd/ and the benches, never installed.
 *
 * Dimension legend (NCHW, as PyTorch): x [N, C, H, W], w [O, Cg, kh, kw],
 * y [N, O, Ho, Wo]; G groups, Cg = C / G input and Og = O / G output
 * channels a group; K = Cg * kh * kw (a column of the unrolled input),
 * P = Ho * Wo (output positions).  col is the unrolled input of one sample
 * and group, [K, P]: col[(c, i, j), (oh, ow)] = x[c, oh*sh - ph + i*dh,
 * ow*sw - pw + j*dw], 0 in the padding.  Then, per sample n and group g:
 *   forward       y[n, g]  = w[g] col          (Og x K)(K x P)
 *   input grad    dx[n, g] += col2im(w[g]^T dy[n, g])   (K x Og)(Og x P)
 *   weight grad   dw[g]   += sum_n dy[n, g] col^T       (Og x P)(P x K)
 *
 * Threads: each kernel cuts its items into chunks (ag_work_chunks: by
 * the sizes only, never the thread count) that threads take one at a
 * time, each with its own column buffer.  Forward and input gradient
 * items are (n, g) pairs, each written by one chunk with one fixed
 * arithmetic; the weight gradient sums its chunk's samples, in order,
 * into the chunk's partial buffer, then adds the partials in chunk order.
 * So every result is the same for any thread count (given a GEMM whose
 * result does not depend on it either, as the built-in one).
 */
#ifndef TAPEGRAD_CONV_INTERNAL_H
#define TAPEGRAD_CONV_INTERNAL_H

#include "autograd.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ag_conv_geom {
    int64_t N, C, H, W;      /* x */
    int64_t O, kh, kw;       /* w: [O, C / G, kh, kw] */
    int64_t Ho, Wo;          /* y */
    int64_t sh, sw, ph, pw, dh, dw;
    int64_t G;
} ag_conv_geom;

/* Chunks (and column buffers) of a convolution kernel of this size. */
int64_t ag_conv_chunks(const ag_conv_geom *g);
/* Scratch bytes a kernel needs: a column buffer per chunk, and for the
 * weight gradient (weight_grad) the partial sums of its chunks. */
size_t ag_conv_scratch_bytes(const ag_conv_geom *g, ag_dtype dt, bool weight_grad);

/* The Winograd F(2x2, 3x3) forward (conv_winograd.c) for 3x3 kernels at
 * stride 1 without dilation or groups, 16+ channels in and out: whether
 * it applies, its scratch (ag_conv_scratch_bytes covers it), and y (+)=
 * conv(x, w) (+ b) by it.  ag_conv_forward and ag_conv_input_grad take it
 * where it applies. */
bool ag_conv_winograd_fits(const ag_conv_geom *g);
size_t ag_conv_winograd_scratch(const ag_conv_geom *g, ag_dtype dt);
void ag_conv_winograd_forward(const ag_conv_geom *g, ag_dtype dt, const void *x,
                              const void *w, const void *b, void *y, bool acc, void *scratch);
/* dx += the input gradient for dy by the same transforms, transposed. */
void ag_conv_winograd_input_grad(const ag_conv_geom *g, ag_dtype dt, const void *dy,
                                 const void *w, void *dx, void *scratch);

/* y = conv(x, w) + b (b [O] or NULL), or y += conv(x, w) when acc. */
void ag_conv_forward(const ag_conv_geom *g, ag_dtype dt, const void *x, const void *w,
                     const void *b, void *y, bool acc, void *scratch);
/* dx += the input gradient of y = conv(x, w) for dy (a transposed
 * convolution of dy with w). */
void ag_conv_input_grad(const ag_conv_geom *g, ag_dtype dt, const void *dy, const void *w,
                        void *dx, void *scratch);
/* dw = (or += when acc) the weight gradient: the correlation of x with dy;
 * and db += the bias gradient (ag_conv_bias_grad) when db, in the same pass
 * over dy where a kernel can. */
void ag_conv_weight_grad(const ag_conv_geom *g, ag_dtype dt, const void *x, const void *dy,
                         void *dw, bool acc, void *db, void *scratch);
/* db[o] += sum over n, oh, ow of dy[n, o, oh, ow]. */
void ag_conv_bias_grad(const ag_conv_geom *g, ag_dtype dt, const void *dy, void *db);

/* The direct f32 kernels (conv_direct.c) for one input channel, a 3x3
 * kernel, stride 1, no padding or dilation, one group, Wo >= 16 (the
 * widest vector): whether
 * they fit, the forward (y = conv(x, w) + b, b may be NULL) and the
 * weight gradient (dw = or += when acc; db += the bias gradient when db);
 * the generic entry points above
 * call them when they fit.  No scratch. */
bool ag_conv_direct_fits(const ag_conv_geom *g, ag_dtype dt);
void ag_conv_direct_forward(const ag_conv_geom *g, const float *x, const float *w,
                            const float *b, float *y);
void ag_conv_direct_weight_grad(const ag_conv_geom *g, const float *x, const float *dy,
                                float *dw, bool acc, float *db);

/* Max pooling over the 2x2 windows at stride 2 of the row pair r0, r1 of
 * a plane W wide (pool2x2.c): for j in [0, n), y[j] = the max of r0[2j],
 * r0[2j + 1], r1[2j], r1[2j + 1] (the first max; a NaN wins) and idx[j]
 * its offset in the plane, base + 2j (+ 1 on the right) (+ W below),
 * base being r0's offset. */
void ag_max2x2_row_f32(const float *r0, const float *r1, float *y, int64_t *idx, int64_t n,
                       int64_t base, int64_t W);
void ag_max2x2_row_f64(const double *r0, const double *r1, double *y, int64_t *idx,
                       int64_t n, int64_t base, int64_t W);
/* Their gradient: d0[idx[j] - base] += g[j] for j in [0, n), d0 being
 * the plane's gradient at base (idx as ag_max2x2_row_* wrote it); when
 * !add, the 2n columns of both rows are stored instead (g at the argmax,
 * 0 elsewhere), whatever they held. */
void ag_max2x2_back_row_f32(const float *g, const int64_t *idx, float *d0, int64_t n,
                            int64_t base, int64_t W, bool add);
void ag_max2x2_back_row_f64(const double *g, const int64_t *idx, double *d0, int64_t n,
                            int64_t base, int64_t W, bool add);

/* How many chunks n items of `work` elementary steps in all are cut into:
 * 1 below a measured size (0 for no items), else min(n, 16).  Sizes only:
 * never the thread count. */
int64_t ag_work_chunks(int64_t n, double work);
/* fn(ctx, item, c) for every item of each chunk c of nchunks (chunk c:
 * items [c*n/nchunks, (c+1)*n/nchunks), in order), the chunks spread over
 * the thread pool (ag_parallel_for). */
typedef void (*ag_item_fn)(void *ctx, int64_t item, int64_t chunk);
void ag_parallel_chunks(int64_t n, int64_t nchunks, ag_item_fn fn, void *ctx);

#endif
