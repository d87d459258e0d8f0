/* vmath_avx512.c — vmath.h's functions for AVX-512F: vmath_impl.h over
 * 16 floats / 8 doubles, on SLEEF's AVX-512F functions (1.0 ulp; erfc
 * 1.5).  This file alone is compiled with -mavx512f (kernels/meson.build),
 * and runs only where ag_vmath_avx512.supported() said yes. */
#include "vmath.h"

#include <immintrin.h>
#include <sleef.h>
#include <string.h>

static bool avx512_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* ---- f32 ---- */
#define VM_T float
#define VM_V __m512
#define VM_N 16
#define VM_M __mmask16
#define VM_F32 1
#define VM_NAME(f) f##_avx512_f32
#define VM_TABLE vm_avx512_f32
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_STORE(p, v) _mm512_storeu_ps(p, v)
#define V_SET1(c) _mm512_set1_ps(c)
#define V_ADD(a, b) _mm512_add_ps(a, b)
#define V_SUB(a, b) _mm512_sub_ps(a, b)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#define V_DIV(a, b) _mm512_div_ps(a, b)
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_NEG(a) _mm512_sub_ps(_mm512_setzero_ps(), a)
#define V_ABS(a) _mm512_abs_ps(a)
#define V_MIN(a, b) _mm512_min_ps(a, b)
#define V_MAX(a, b) _mm512_max_ps(a, b)
#define V_GE(a, b) _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ)
#define V_LT(a, b) _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ)
#define V_SEL(m, a, b) _mm512_mask_blend_ps(m, b, a)
#define V_ROUND(a) _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_LDEXP(a, k) _mm512_scalef_ps(a, k)
#define V_EXP(a) Sleef_expf16_u10avx512f(a)
#define V_LOG(a) Sleef_logf16_u10avx512f(a)
#define V_LOG1P(a) Sleef_log1pf16_u10avx512f(a)
#define V_TANH(a) Sleef_tanhf16_u10avx512f(a)
#define V_ERF(a) Sleef_erff16_u10avx512f(a)
#define V_ERFC(a) Sleef_erfcf16_u15avx512f(a)
#define V_SIN(a) Sleef_sinf16_u10avx512f(a)
#define V_COS(a) Sleef_cosf16_u10avx512f(a)
#define V_POW(a, b) Sleef_powf16_u10avx512f(a, b)
#include "vmath_impl.h"

/* ---- f64 ---- */
#define VM_T double
#define VM_V __m512d
#define VM_N 8
#define VM_M __mmask8
#define VM_F32 0
#define VM_NAME(f) f##_avx512_f64
#define VM_TABLE vm_avx512_f64
#define V_LOAD(p) _mm512_loadu_pd(p)
#define V_STORE(p, v) _mm512_storeu_pd(p, v)
#define V_SET1(c) _mm512_set1_pd(c)
#define V_ADD(a, b) _mm512_add_pd(a, b)
#define V_SUB(a, b) _mm512_sub_pd(a, b)
#define V_MUL(a, b) _mm512_mul_pd(a, b)
#define V_DIV(a, b) _mm512_div_pd(a, b)
#define V_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define V_NEG(a) _mm512_sub_pd(_mm512_setzero_pd(), a)
#define V_ABS(a) _mm512_abs_pd(a)
#define V_MIN(a, b) _mm512_min_pd(a, b)
#define V_MAX(a, b) _mm512_max_pd(a, b)
#define V_GE(a, b) _mm512_cmp_pd_mask(a, b, _CMP_GE_OQ)
#define V_LT(a, b) _mm512_cmp_pd_mask(a, b, _CMP_LT_OQ)
#define V_SEL(m, a, b) _mm512_mask_blend_pd(m, b, a)
#define V_EXP(a) Sleef_expd8_u10avx512f(a)
#define V_LOG(a) Sleef_logd8_u10avx512f(a)
#define V_LOG1P(a) Sleef_log1pd8_u10avx512f(a)
#define V_TANH(a) Sleef_tanhd8_u10avx512f(a)
#define V_ERF(a) Sleef_erfd8_u10avx512f(a)
#define V_ERFC(a) Sleef_erfcd8_u15avx512f(a)
#define V_SIN(a) Sleef_sind8_u10avx512f(a)
#define V_COS(a) Sleef_cosd8_u10avx512f(a)
#define V_POW(a, b) Sleef_powd8_u10avx512f(a, b)
#include "vmath_impl.h"

const ag_vmath_arch ag_vmath_avx512 = {
    .name = "avx512",
    .supported = avx512_supported,
    .f = &vm_avx512_f32,
    .d = &vm_avx512_f64,
};
