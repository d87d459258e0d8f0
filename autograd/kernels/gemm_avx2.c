/* gemm_avx2.c — GEMM micro-kernels for AVX2 + FMA (16 ymm registers).
 *
 * Tiles: f32 6 x 16 (12 accumulators + 2 B vectors + 1 broadcast), f64
 * 6 x 8; per k step 2 loads, 6 broadcasts, 12 FMAs keep both FMA pipes of
 * Zen/Haswell busy (FMA latency 4 x 2 pipes needs >= 8 independent
 * accumulators).  Cache blocks were tuned with bench/gemm on a Zen 4
 * (32 KiB L1d, 1 MiB L2): kc x nr of B fits L1, mc x kc of A about half L2.
 */
#include "kernels_internal.h"

#ifdef AG_GEMM_X86
#include <immintrin.h>

#define UKR_ATTR       __attribute__((target("avx2,fma")))
#define UKR_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)

#define UKR_NAME     ukr_avx2_f32
#define UKR_T        float
#define UKR_VEC      __m256
#define UKR_VLEN     8
#define UKR_MR       6
#define UKR_NV       2
#define UKR_ZERO()   _mm256_setzero_ps()
#define UKR_LOAD(p)  _mm256_loadu_ps(p)
#define UKR_STORE(p, v) _mm256_storeu_ps(p, v)
#define UKR_BCAST(p) _mm256_broadcast_ss(p)
#define UKR_SET1(x)  _mm256_set1_ps(x)
#define UKR_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define UKR_MUL(a, b) _mm256_mul_ps(a, b)
#define UKR_SFMA(a, b, c) __builtin_fmaf(a, b, c)
#define UKR_KEEP     1
#include "gemm_ukernel.h"
/* the same kernel reading A in place */
#undef UKR_NAME
#define UKR_NAME     ukr_avx2_f32_rows
#define UKR_ROWS     1
#include "gemm_ukernel.h"

#define UKR_ATTR       __attribute__((target("avx2,fma")))
#define UKR_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)

#define UKR_NAME     ukr_avx2_f64
#define UKR_T        double
#define UKR_VEC      __m256d
#define UKR_VLEN     4
#define UKR_MR       6
#define UKR_NV       2
#define UKR_ZERO()   _mm256_setzero_pd()
#define UKR_LOAD(p)  _mm256_loadu_pd(p)
#define UKR_STORE(p, v) _mm256_storeu_pd(p, v)
#define UKR_BCAST(p) _mm256_broadcast_sd(p)
#define UKR_SET1(x)  _mm256_set1_pd(x)
#define UKR_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define UKR_MUL(a, b) _mm256_mul_pd(a, b)
#define UKR_SFMA(a, b, c) __builtin_fma(a, b, c)
#include "gemm_ukernel.h"

/* ---- packers ----
 * Panels are R = 4..32 rows wide, handled in groups of 8 floats (4
 * doubles); a group narrower than a vector (R = 6, 12) moves with half
 * and quarter vectors so nothing past the panel is read or written.  The
 * transposing gather (row-major A, or B^T) goes 8 x 8 (4 x 4) blocks at a
 * time through registers instead of one element at a time: at n = 256 the
 * scalar gather cost 8% of the whole product. */

#define AVX2 __attribute__((target("avx2,fma")))

/* first w (2, 4, 6 or 8) floats */
AVX2 static inline __m256 load_ps(const float *s, int w)
{
    if (w == 8)
        return _mm256_loadu_ps(s);
    __m128 lo = w >= 4 ? _mm_loadu_ps(s) : _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)s));
    __m128 hi = w == 6 ? _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(s + 4)))
                       : _mm_setzero_ps();
    return _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
}

AVX2 static inline void store_ps(float *d, __m256 v, int w)
{
    if (w == 8) {
        _mm256_storeu_ps(d, v);
        return;
    }
    __m128 lo = _mm256_castps256_ps128(v);
    if (w >= 4) {
        _mm_storeu_ps(d, lo);
        if (w == 4)
            return;
        d += 4;
        lo = _mm256_extractf128_ps(v, 1);
    }
    _mm_storel_epi64((__m128i *)d, _mm_castps_si128(lo));
}

/* r[i] = row i -> r[q] = column q */
AVX2 static inline void transpose8_ps(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Full panel of R rows, element (r, p) at s[r*ld + p]: k in blocks of 8;
 * returns how many k it did (kb rounded down to 8).  Inlined per R so
 * the group widths are constants and r[] stays in registers. */
AVX2 static inline __attribute__((always_inline)) int64_t
gather_f32(const float *s, int64_t ld, int64_t kb, int R, float *dst)
{
    int64_t p = 0;
    for (; p + 8 <= kb; p += 8) {
#pragma GCC unroll 4
        for (int g = 0; g < R; g += 8) {
            int w = R - g < 8 ? R - g : 8;
            __m256 r[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                r[i] = i < w ? _mm256_loadu_ps(s + (g + i) * ld + p) : _mm256_setzero_ps();
            transpose8_ps(r);
#pragma GCC unroll 8
            for (int q = 0; q < 8; q++)
                store_ps(dst + (p + q) * R + g, r[q], w);
        }
    }
    return p;
}

/* Full panel, element (r, p) at s[p*ld + r]: a plain copy of R per k. */
AVX2 static inline __attribute__((always_inline)) int64_t
copy_f32(const float *s, int64_t ld, int64_t kb, int R, float *dst)
{
    for (int64_t p = 0; p < kb; p++) {
#pragma GCC unroll 4
        for (int g = 0; g < R; g += 8) {
            int w = R - g < 8 ? R - g : 8;
            store_ps(dst + p * R + g, load_ps(s + p * ld + g, w), w);
        }
    }
    return kb;
}

/* the panel widths of the AVX2 and AVX-512 tiles, as constants */
#define AG_PACK_ANY(name, fn, T, c1, c2, c3, c4)                              \
    AVX2 static int64_t name(const T *s, int64_t ld, int64_t kb, int R, T *d) \
    {                                                                         \
        switch (R) {                                                          \
        case c1: return fn(s, ld, kb, c1, d);                                 \
        case c2: return fn(s, ld, kb, c2, d);                                 \
        case c3: return fn(s, ld, kb, c3, d);                                 \
        case c4: return fn(s, ld, kb, c4, d);                                 \
        default: return fn(s, ld, kb, R, d);                                  \
        }                                                                     \
    }
AG_PACK_ANY(gather_f32_any, gather_f32, float, 6, 12, 16, 32)
AG_PACK_ANY(copy_f32_any, copy_f32, float, 6, 12, 16, 32)

AVX2 void ag_gemm_pack_avx2_f32(const float *src, int64_t ld, bool along,
                                int64_t rows, int64_t kb, int R, float *dst)
{
    for (int64_t r0 = 0; r0 < rows; r0 += R, dst += kb * R) {
        int r = rows - r0 < R ? (int)(rows - r0) : R;
        const float *s = along ? src + r0 : src + r0 * ld;
        int64_t p = 0;
        if (r == R && along) {
            p = copy_f32_any(s, ld, kb, R, dst);
        } else if (r == R) {
            p = gather_f32_any(s, ld, kb, R, dst);
        }
        for (; p < kb; p++) { /* edge panel, k tail */
            float *d = dst + p * R;
            for (int i = 0; i < r; i++)
                d[i] = along ? s[p * ld + i] : s[i * ld + p];
            for (int i = r; i < R; i++)
                d[i] = 0;
        }
    }
}

/* f64: the same with 4-wide groups (2 or 4 doubles). */
AVX2 static inline __m256d load_pd(const double *s, int w)
{
    if (w == 4)
        return _mm256_loadu_pd(s);
    return _mm256_castpd128_pd256(_mm_loadu_pd(s)); /* upper half unused */
}

AVX2 static inline void store_pd(double *d, __m256d v, int w)
{
    if (w == 4)
        _mm256_storeu_pd(d, v);
    else
        _mm_storeu_pd(d, _mm256_castpd256_pd128(v));
}

AVX2 static inline void transpose4_pd(__m256d r[4])
{
    __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

AVX2 static inline __attribute__((always_inline)) int64_t
gather_f64(const double *s, int64_t ld, int64_t kb, int R, double *dst)
{
    int64_t p = 0;
    for (; p + 4 <= kb; p += 4) {
#pragma GCC unroll 8
        for (int g = 0; g < R; g += 4) {
            int w = R - g < 4 ? R - g : 4;
            __m256d r[4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                r[i] = i < w ? _mm256_loadu_pd(s + (g + i) * ld + p) : _mm256_setzero_pd();
            transpose4_pd(r);
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++)
                store_pd(dst + (p + q) * R + g, r[q], w);
        }
    }
    return p;
}

AVX2 static inline __attribute__((always_inline)) int64_t
copy_f64(const double *s, int64_t ld, int64_t kb, int R, double *dst)
{
    for (int64_t p = 0; p < kb; p++) {
#pragma GCC unroll 8
        for (int g = 0; g < R; g += 4) {
            int w = R - g < 4 ? R - g : 4;
            store_pd(dst + p * R + g, load_pd(s + p * ld + g, w), w);
        }
    }
    return kb;
}

AG_PACK_ANY(gather_f64_any, gather_f64, double, 6, 8, 12, 16)
AG_PACK_ANY(copy_f64_any, copy_f64, double, 6, 8, 12, 16)

AVX2 void ag_gemm_pack_avx2_f64(const double *src, int64_t ld, bool along,
                                int64_t rows, int64_t kb, int R, double *dst)
{
    for (int64_t r0 = 0; r0 < rows; r0 += R, dst += kb * R) {
        int r = rows - r0 < R ? (int)(rows - r0) : R;
        const double *s = along ? src + r0 : src + r0 * ld;
        int64_t p = 0;
        if (r == R && along) {
            p = copy_f64_any(s, ld, kb, R, dst);
        } else if (r == R) {
            p = gather_f64_any(s, ld, kb, R, dst);
        }
        for (; p < kb; p++) {
            double *d = dst + p * R;
            for (int i = 0; i < r; i++)
                d[i] = along ? s[p * ld + i] : s[i * ld + p];
            for (int i = r; i < R; i++)
                d[i] = 0;
        }
    }
}

static bool avx2_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

const ag_gemm_arch ag_gemm_arch_avx2 = {
    .name = "avx2",
    .backend = "builtin-avx2",
    .supported = avx2_supported,
    .s = {.mr = 6, .nr = 16, .kc = 256, .mc = 144, .nc = 4096},
    .d = {.mr = 6, .nr = 8, .kc = 256, .mc = 72, .nc = 4096},
    .sukr = ukr_avx2_f32,
    .dukr = ukr_avx2_f64,
    .sukr_rows = ukr_avx2_f32_rows,
    .spack = ag_gemm_pack_avx2_f32,
    .dpack = ag_gemm_pack_avx2_f64,
};
#endif
