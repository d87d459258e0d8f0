/* conv_winograd.c — 3x3 convolutions at stride 1 by Winograd's minimal
 * filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for
 * Convolutional Neural Networks", 2015): each 2x2 tile of outputs from a
 * 4x4 tile of inputs with 16 multiplies a channel pair instead of 36
 * (legend in conv_internal.h):
 *   U = G g G^T    the kernel g [3, 3] of each (o, c), once a call
 *   V = B^T d B    the input tile d [4, 4] of each (tile, c)
 *   M = U . V      summed over c: 16 products (one per element xi of the
 *                  4x4), (tiles x C)(C x O), by the GEMM
 *   Y = A^T M A    the output tile [2, 2] of each (tile, o)
 * with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5;
 * .5 -.5 .5; 0 0 1], A^T = [1 1 1 0; 0 1 -1 -1].  The transforms run over
 * channels (each sample's planes first laid out channel-last), the
 * products over the tiles of a chunk's samples together.  The products
 * take 2.25x fewer multiply-adds than im2col's (a little less for the
 * tiles' padding to even sizes), at the price of rounding that differs
 * from the direct sum (no larger: the CNN's conv2 in f32 against a double
 * sum, max error 2.4e-7 of max |y| here, 4.0e-7 by im2col).
 * The input gradient is the same algorithm transposed, on the same tiles:
 * Q = A dY A^T of each 2x2 tile of dy, R = Q U^T by the GEMM, and dx +=
 * B R B^T added into the overlapping 4x4 input tiles.  (A Winograd
 * convolution of dy with the kernels turned, 49 tiles a sample here
 * instead of 36, measured slower than im2col.)  The CNN's conv2, batch
 * 64, one thread: forward 2.43-2.51 ms against 3.84-3.87 by im2col, input
 * gradient 2.52-2.74 against 3.51-3.73.  The weight gradient stays
 * im2col's: by the transforms (S = V^T Q summed over the tiles, dw = G^T
 * S G) it was no faster (2.9-3.8 against 3.0-3.4 ms, noisy).
 * Threads: chunks of samples as conv.c's, each with its own scratch. */
#include "conv_internal.h"

#include "autograd_internal.h"
#include "kernels_internal.h"

#include <string.h>

/* Which convolutions run here: the multiply-adds saved must pay for the
 * transforms, so enough channels in and out. */
#define MIN_CHANNELS 16
/* A chunk's samples go through in groups whose V and M take at most this
 * much, so they stay in L2 (1 MB a core here) between the transforms and
 * the products: the CNN's conv2 forward, one thread, took 3.02 ms in
 * groups of 4 samples, 2.41-2.65 in groups of 2, 2.42-2.54 one by one
 * (im2col: 3.77). */
#define GROUP_BYTES ((size_t)512 << 10)

bool ag_conv_winograd_fits(const ag_conv_geom *g)
{
    return g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 &&
           g->G == 1 && g->C >= MIN_CHANNELS && g->O >= MIN_CHANNELS && g->Ho >= 2 &&
           g->Wo >= 2;
}

/* Sizes of a call: tiles a sample (th x tw), the padded channel-last
 * input (Hp x Wp), samples a chunk at most, samples a group. */
typedef struct {
    int64_t th, tw, T1, Hp, Wp, spc, nch, grp;
    size_t esz, u, xt, v, m, yt, slot; /* bytes */
} wino_sizes;

static size_t round64(size_t n)
{
    return (n + 63) / 64 * 64;
}

static wino_sizes sizes_of(const ag_conv_geom *g, ag_dtype dt)
{
    wino_sizes z = {.esz = ag_dtype_size(dt)};
    z.th = (g->Ho + 1) / 2, z.tw = (g->Wo + 1) / 2, z.T1 = z.th * z.tw;
    z.Hp = 2 * z.th + 2, z.Wp = 2 * z.tw + 2;
    z.nch = ag_conv_chunks(g);
    z.spc = z.nch ? (g->N + z.nch - 1) / z.nch : 0;
    size_t per = 16 * (size_t)(z.T1 * (g->C + g->O)) * z.esz;
    z.grp = (int64_t)(GROUP_BYTES / per);
    z.grp = z.grp < 1 ? 1 : z.grp > z.spc ? z.spc : z.grp;
    z.u = round64(16 * (size_t)(g->C * g->O) * z.esz);
    z.xt = round64((size_t)(z.Hp * z.Wp * g->C) * z.esz);
    z.v = round64(16 * (size_t)(z.grp * z.T1 * g->C) * z.esz);
    z.m = round64(16 * (size_t)(z.grp * z.T1 * g->O) * z.esz);
    z.yt = round64((size_t)(4 * z.T1 * g->O) * z.esz);
    z.slot = z.xt + z.v + z.m + z.yt;
    return z;
}

size_t ag_conv_winograd_scratch(const ag_conv_geom *g, ag_dtype dt)
{
    wino_sizes z = sizes_of(g, dt);
    return z.u + (size_t)z.nch * z.slot;
}

#define WT float
#define W(name) name##_float
#include "conv_winograd_impl.h"
#undef WT
#undef W
#define WT double
#define W(name) name##_double
#include "conv_winograd_impl.h"
#undef WT
#undef W

/* One call: the forward (in x, out y, b, acc) or, with grad, the input
 * gradient (in dy = x, out dx = y, added to). */
typedef struct {
    const ag_conv_geom *g;
    ag_dtype dt;
    wino_sizes z;
    const void *x, *b;
    void *y;
    bool acc, grad;
    char *scratch;
} wino_run;

/* Chunks [lo, hi): their samples in groups. */
static void chunk_body(void *vr, int64_t lo, int64_t hi)
{
    const wino_run *r = vr;
    const void *U = r->scratch;
    for (int64_t c = lo; c < hi; c++) {
        int64_t n0 = c * r->z.spc, n1 = n0 + r->z.spc < r->g->N ? n0 + r->z.spc : r->g->N;
        char *slot = r->scratch + r->z.u + (size_t)c * r->z.slot;
        for (int64_t m0 = n0; m0 < n1; m0 += r->z.grp) {
            int64_t m1 = m0 + r->z.grp < n1 ? m0 + r->z.grp : n1;
            if (r->grad && r->dt == AG_F64)
                dx_group_double(r->g, &r->z, r->x, U, r->y, slot, m0, m1);
            else if (r->grad)
                dx_group_float(r->g, &r->z, r->x, U, r->y, slot, m0, m1);
            else if (r->dt == AG_F64)
                fwd_group_double(r->g, &r->z, r->x, U, r->b, r->y, r->acc, slot, m0, m1);
            else
                fwd_group_float(r->g, &r->z, r->x, U, r->b, r->y, r->acc, slot, m0, m1);
        }
    }
}

static void run(wino_run *r, const void *w)
{
    if (r->dt == AG_F64)
        filter_double(r->g, w, r->grad, (void *)r->scratch);
    else
        filter_float(r->g, w, r->grad, (void *)r->scratch);
    ag_status st = ag_parallel_for(r->z.nch, 1, chunk_body, r);
    AG_ASSERT(st == AG_OK);
}

void ag_conv_winograd_forward(const ag_conv_geom *g, ag_dtype dt, const void *x,
                              const void *w, const void *b, void *y, bool acc, void *scratch)
{
    wino_run r = {g, dt, sizes_of(g, dt), x, b, y, acc, false, scratch};
    run(&r, w);
}

void ag_conv_winograd_input_grad(const ag_conv_geom *g, ag_dtype dt, const void *dy,
                                 const void *w, void *dx, void *scratch)
{
    wino_run r = {g, dt, sizes_of(g, dt), dy, NULL, dx, true, true, scratch};
    run(&r, w);
}
