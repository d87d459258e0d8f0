/* gemm_avx512.c — GEMM micro-kernels for AVX-512F (32 zmm registers).
 *
 * Tiles: f32 12 x 32 (24 accumulators + 2 B vectors + 1 broadcast), f64
 * 12 x 16.  The kernel body is gemm_ukernel.h, the same code the AVX2 and
 * generic paths run (and the tests check on any x86-64); only the vector
 * macros below are AVX-512 specific.  Blocks keep kc x nr of B in a 32 KiB
 * L1 (kc 192 x 32 floats = 24 KiB) and mc x kc of A in about half of L2.
 */
#include "kernels_internal.h"

#ifdef AG_GEMM_X86
#include <immintrin.h>

#define UKR_ATTR       __attribute__((target("avx512f")))
#define UKR_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)

#define UKR_NAME     ukr_avx512_f32
#define UKR_T        float
#define UKR_VEC      __m512
#define UKR_VLEN     16
#define UKR_MR       12
#define UKR_NV       2
#define UKR_ZERO()   _mm512_setzero_ps()
#define UKR_LOAD(p)  _mm512_loadu_ps(p)
#define UKR_STORE(p, v) _mm512_storeu_ps(p, v)
#define UKR_BCAST(p) _mm512_set1_ps(*(p))
#define UKR_SET1(x)  _mm512_set1_ps(x)
#define UKR_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define UKR_MUL(a, b) _mm512_mul_ps(a, b)
#define UKR_SFMA(a, b, c) __builtin_fmaf(a, b, c)
#define UKR_KEEP     1
#include "gemm_ukernel.h"
/* the same kernel reading A in place */
#undef UKR_NAME
#define UKR_NAME     ukr_avx512_f32_rows
#define UKR_ROWS     1
#include "gemm_ukernel.h"

#define UKR_ATTR       __attribute__((target("avx512f")))
#define UKR_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)

#define UKR_NAME     ukr_avx512_f64
#define UKR_T        double
#define UKR_VEC      __m512d
#define UKR_VLEN     8
#define UKR_MR       12
#define UKR_NV       2
#define UKR_ZERO()   _mm512_setzero_pd()
#define UKR_LOAD(p)  _mm512_loadu_pd(p)
#define UKR_STORE(p, v) _mm512_storeu_pd(p, v)
#define UKR_BCAST(p) _mm512_set1_pd(*(p))
#define UKR_SET1(x)  _mm512_set1_pd(x)
#define UKR_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define UKR_MUL(a, b) _mm512_mul_pd(a, b)
#define UKR_SFMA(a, b, c) __builtin_fma(a, b, c)
#include "gemm_ukernel.h"

static bool avx512_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

const ag_gemm_arch ag_gemm_arch_avx512 = {
    .name = "avx512",
    .backend = "builtin-avx512",
    .supported = avx512_supported,
    .s = {.mr = 12, .nr = 32, .kc = 192, .mc = 192, .nc = 4096},
    .d = {.mr = 12, .nr = 16, .kc = 192, .mc = 96, .nc = 4096},
    .sukr = ukr_avx512_f32,
    .dukr = ukr_avx512_f64,
    .sukr_rows = ukr_avx512_f32_rows,
    .spack = ag_gemm_pack_avx2_f32,
    .dpack = ag_gemm_pack_avx2_f64,
};
#endif
