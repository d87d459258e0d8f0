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
 * with the same values; the weight gradient masks them out of its sums.
 * The loops (conv_direct_impl.h) are stamped once per ISA with its own
 * vector width and channel block, and one is chosen by CPU features. */
#include "conv_internal.h"

#include "autograd_internal.h"
#include "kernels_internal.h"

#include <string.h>
#ifdef AG_GEMM_X86
#include <immintrin.h>
#endif

/* The vector helpers are always inlined, so the ABI GCC warns about
 * (vectors passed in registers the default target lacks) never applies. */
#pragma GCC diagnostic ignored "-Wpsabi"

/* Taps; the widest vector of any ISA (the rows a geometry needs). */
enum { T = 9, VL_MAX = 16 };

bool ag_conv_direct_fits(const ag_conv_geom *g, ag_dtype dt)
{
    return dt == AG_F32 && g->G == 1 && g->C == 1 && g->kh == 3 && g->kw == 3 && g->sh == 1 &&
           g->sw == 1 && g->ph == 0 && g->pw == 0 && g->dh == 1 && g->dw == 1 &&
           g->Wo >= VL_MAX;
}

typedef struct {
    const ag_conv_geom *g;
    const float *x, *w, *b;
    float *y;
} fwd_run;

typedef struct {
    const ag_conv_geom *g;
    const float *x, *dy;
    float *dw, *db;
    bool acc;
} dw_run;

#ifdef AG_GEMM_X86
#define D(name) name##_avx512
#define DVL 16
#define DOB 2
#define DATTR __attribute__((target("avx512f")))
#define DFMA(a, b, c) ((D(vf))_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#include "conv_direct_impl.h"
#define D(name) name##_avx2
#define DVL 8
#define DOB 1
#define DATTR __attribute__((target("avx2,fma")))
#define DFMA(a, b, c) ((D(vf))_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#include "conv_direct_impl.h"
#endif
#define D(name) name##_generic
#define DVL 4
#define DOB 1
#define DATTR
#define DFMA(a, b, c) ((a) * (b) + (c))
#include "conv_direct_impl.h"

/* This CPU's loops and their channel block. */
typedef struct {
    ag_item_fn forward_sample, weight_grad_block;
    int ob;
} direct_isa;

static const direct_isa *isa(void)
{
    static const direct_isa generic = {forward_sample_generic, weight_grad_block_generic, 1};
#ifdef AG_GEMM_X86
    static const direct_isa avx512 = {forward_sample_avx512, weight_grad_block_avx512, 2},
                            avx2 = {forward_sample_avx2, weight_grad_block_avx2, 1};
    if (__builtin_cpu_supports("avx512f"))
        return &avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return &avx2;
#endif
    return &generic;
}

void ag_conv_direct_forward(const ag_conv_geom *g, const float *x, const float *w,
                            const float *b, float *y)
{
    fwd_run r = {g, x, w, b, y};
    double macs = (double)g->N * (double)g->O * (double)(g->Ho * g->Wo) * T;
    ag_parallel_chunks(g->N, ag_work_chunks(g->N, macs), isa()->forward_sample, &r);
}

void ag_conv_direct_weight_grad(const ag_conv_geom *g, const float *x, const float *dy,
                                float *dw, bool acc, float *db)
{
    const direct_isa *k = isa();
    dw_run r = {g, x, dy, dw, db, acc};
    int64_t blocks = (g->O + k->ob - 1) / k->ob;
    double macs = (double)g->N * (double)g->O * (double)(g->Ho * g->Wo) * T;
    ag_parallel_chunks(blocks, ag_work_chunks(blocks, macs), k->weight_grad_block, &r);
}
