/* vmath_avx2.c — vmath.h's functions for AVX2 + FMA: vmath_impl.h over 8
 * floats / 4 doubles, on SLEEF's AVX2 functions (1.0 ulp; erfc 1.5).  This
 * file alone is compiled with -mavx2 -mfma (kernels/meson.build), and runs
 * only where ag_vmath_avx2.supported() said yes. */
#include "vmath.h"

#include <immintrin.h>
#include <sleef.h>
#include <string.h>

static bool avx2_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* a 2^k, k integer-valued in [-252, 254], as two scalings by 2^(k/2) and
 * 2^(k - k/2), each a normal number, so only the second rounds (AVX2 has
 * no vscalef) */
static inline __m256 ldexp_avx2_f32(__m256 a, __m256 k)
{
    __m256i ki = _mm256_cvtps_epi32(k), k1 = _mm256_srai_epi32(ki, 1);
    __m256i k2 = _mm256_sub_epi32(ki, k1), bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(a, s1), s2);
}

/* ---- f32 ---- */
#define VM_T float
#define VM_V __m256
#define VM_N 8
#define VM_M __m256
#define VM_F32 1
#define VM_NAME(f) f##_avx2_f32
#define VM_TABLE vm_avx2_f32
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define V_SET1(c) _mm256_set1_ps(c)
#define V_ADD(a, b) _mm256_add_ps(a, b)
#define V_SUB(a, b) _mm256_sub_ps(a, b)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define V_DIV(a, b) _mm256_div_ps(a, b)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_NEG(a) _mm256_sub_ps(_mm256_setzero_ps(), a)
#define V_ABS(a) _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a)
#define V_MIN(a, b) _mm256_min_ps(a, b)
#define V_MAX(a, b) _mm256_max_ps(a, b)
#define V_GE(a, b) _mm256_cmp_ps(a, b, _CMP_GE_OQ)
#define V_LT(a, b) _mm256_cmp_ps(a, b, _CMP_LT_OQ)
#define V_SEL(m, a, b) _mm256_blendv_ps(b, a, m)
#define V_ROUND(a) _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_LDEXP(a, k) ldexp_avx2_f32(a, k)
#define V_EXP(a) Sleef_expf8_u10avx2(a)
#define V_LOG(a) Sleef_logf8_u10avx2(a)
#define V_LOG1P(a) Sleef_log1pf8_u10avx2(a)
#define V_TANH(a) Sleef_tanhf8_u10avx2(a)
#define V_ERF(a) Sleef_erff8_u10avx2(a)
#define V_ERFC(a) Sleef_erfcf8_u15avx2(a)
#define V_SIN(a) Sleef_sinf8_u10avx2(a)
#define V_COS(a) Sleef_cosf8_u10avx2(a)
#define V_POW(a, b) Sleef_powf8_u10avx2(a, b)
#include "vmath_impl.h"

/* ---- f64 ---- */
#define VM_T double
#define VM_V __m256d
#define VM_N 4
#define VM_M __m256d
#define VM_F32 0
#define VM_NAME(f) f##_avx2_f64
#define VM_TABLE vm_avx2_f64
#define V_LOAD(p) _mm256_loadu_pd(p)
#define V_STORE(p, v) _mm256_storeu_pd(p, v)
#define V_SET1(c) _mm256_set1_pd(c)
#define V_ADD(a, b) _mm256_add_pd(a, b)
#define V_SUB(a, b) _mm256_sub_pd(a, b)
#define V_MUL(a, b) _mm256_mul_pd(a, b)
#define V_DIV(a, b) _mm256_div_pd(a, b)
#define V_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define V_NEG(a) _mm256_sub_pd(_mm256_setzero_pd(), a)
#define V_ABS(a) _mm256_andnot_pd(_mm256_set1_pd(-0.0), a)
#define V_MIN(a, b) _mm256_min_pd(a, b)
#define V_MAX(a, b) _mm256_max_pd(a, b)
#define V_GE(a, b) _mm256_cmp_pd(a, b, _CMP_GE_OQ)
#define V_LT(a, b) _mm256_cmp_pd(a, b, _CMP_LT_OQ)
#define V_SEL(m, a, b) _mm256_blendv_pd(b, a, m)
#define V_EXP(a) Sleef_expd4_u10avx2(a)
#define V_LOG(a) Sleef_logd4_u10avx2(a)
#define V_LOG1P(a) Sleef_log1pd4_u10avx2(a)
#define V_TANH(a) Sleef_tanhd4_u10avx2(a)
#define V_ERF(a) Sleef_erfd4_u10avx2(a)
#define V_ERFC(a) Sleef_erfcd4_u15avx2(a)
#define V_SIN(a) Sleef_sind4_u10avx2(a)
#define V_COS(a) Sleef_cosd4_u10avx2(a)
#define V_POW(a, b) Sleef_powd4_u10avx2(a, b)
#include "vmath_impl.h"

const ag_vmath_arch ag_vmath_avx2 = {
    .name = "avx2",
    .supported = avx2_supported,
    .f = &vm_avx2_f32,
    .d = &vm_avx2_f64,
};
