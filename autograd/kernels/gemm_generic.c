/* gemm_generic.c — portable GEMM micro-kernels (any C11 compiler, any CPU):
 * gemm_ukernel.h with one-element "vectors".  No FMA here (ISO C mode does
 * not contract a*b + c), and the scalar edge path rounds the same way, so
 * a C element's bits still do not depend on its tile.  Tiles 4 x 8 keep
 * 32 accumulators, which compilers vectorise with SSE2/NEON.
 */
#include "kernels_internal.h"

/* gemm_ukernel.h forgets every UKR_ macro after each kernel */

#define UKR_ATTR
#define UKR_PREFETCH(p) ((void)(p))
#define UKR_ZERO()   0
#define UKR_LOAD(p)  (*(p))
#define UKR_STORE(p, v) (*(p) = (v))
#define UKR_BCAST(p) (*(p))
#define UKR_SET1(x)  (x)
#define UKR_FMA(a, b, c) ((a) * (b) + (c))
#define UKR_MUL(a, b) ((a) * (b))
#define UKR_SFMA(a, b, c) ((a) * (b) + (c))
#define UKR_NAME     ukr_generic_f32
#define UKR_T        float
#define UKR_VEC      float
#define UKR_VLEN     1
#define UKR_MR       4
#define UKR_NV       8
#include "gemm_ukernel.h"

#define UKR_ATTR
#define UKR_PREFETCH(p) ((void)(p))
#define UKR_ZERO()   0
#define UKR_LOAD(p)  (*(p))
#define UKR_STORE(p, v) (*(p) = (v))
#define UKR_BCAST(p) (*(p))
#define UKR_SET1(x)  (x)
#define UKR_FMA(a, b, c) ((a) * (b) + (c))
#define UKR_MUL(a, b) ((a) * (b))
#define UKR_SFMA(a, b, c) ((a) * (b) + (c))
#define UKR_NAME     ukr_generic_f64
#define UKR_T        double
#define UKR_VEC      double
#define UKR_VLEN     1
#define UKR_MR       4
#define UKR_NV       4
#include "gemm_ukernel.h"

/* Packers: plain loops (see ag_gemm_pack_f32 for the layout). */
#define PACK(T)                                                               \
    static void pack_##T(const T *src, int64_t ld, bool along, int64_t rows,  \
                         int64_t kb, int R, T *dst)                           \
    {                                                                         \
        for (int64_t r0 = 0; r0 < rows; r0 += R, dst += kb * R) {             \
            int r = rows - r0 < R ? (int)(rows - r0) : R;                     \
            const T *s = along ? src + r0 : src + r0 * ld;                    \
            for (int64_t p = 0; p < kb; p++) {                                \
                T *d = dst + p * R;                                           \
                for (int i = 0; i < r; i++)                                   \
                    d[i] = along ? s[p * ld + i] : s[i * ld + p];             \
                for (int i = r; i < R; i++)                                   \
                    d[i] = 0;                                                 \
            }                                                                 \
        }                                                                     \
    }
PACK(float)
PACK(double)

static bool generic_supported(void)
{
    return true;
}

const ag_gemm_arch ag_gemm_arch_generic = {
    .name = "generic",
    .backend = "builtin-generic",
    .supported = generic_supported,
    .s = {.mr = 4, .nr = 8, .kc = 256, .mc = 128, .nc = 4096},
    .d = {.mr = 4, .nr = 4, .kc = 256, .mc = 64, .nc = 4096},
    .sukr = ukr_generic_f32,
    .dukr = ukr_generic_f64,
    .spack = pack_float,
    .dpack = pack_double,
};
