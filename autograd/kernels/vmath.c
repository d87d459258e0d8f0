/* vmath.c — which code path vmath.h's functions take, and the scalar one:
 * vmath_impl.h with one-lane "vectors" of double on libm, for CPUs
 * without AVX2 and builds without SLEEF.  Its f32 functions run the f64
 * ones and round once, as the ops did before there were vector paths. */
#include "vmath.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#define VM_T double
#define VM_V double
#define VM_N 1
#define VM_M bool
#define VM_F32 0
#define VM_NAME(f) f##_scalar_f64
#define VM_TABLE vm_scalar_f64
#define V_LOAD(p) (*(p))
#define V_STORE(p, v) (*(p) = (v))
#define V_SET1(c) ((double)(c))
#define V_ADD(a, b) ((a) + (b))
#define V_SUB(a, b) ((a) - (b))
#define V_MUL(a, b) ((a) * (b))
#define V_DIV(a, b) ((a) / (b))
#define V_FMA(a, b, c) fma(a, b, c)
#define V_NEG(a) (-(a))
#define V_ABS(a) fabs(a)
#define V_MIN(a, b) ((a) < (b) ? (a) : (b))
#define V_MAX(a, b) ((a) > (b) ? (a) : (b))
#define V_GE(a, b) ((a) >= (b))
#define V_LT(a, b) ((a) < (b))
#define V_SEL(m, a, b) ((m) ? (a) : (b))
#define V_EXP(a) exp(a)
#define V_LOG(a) log(a)
#define V_LOG1P(a) log1p(a)
#define V_TANH(a) tanh(a)
#define V_ERF(a) erf(a)
#define V_ERFC(a) erfc(a)
#define V_SIN(a) sin(a)
#define V_COS(a) cos(a)
#define V_POW(a, b) pow(a, b)
#include "vmath_impl.h"

/* f32 through the f64 kernels, one rounding at the end */
#define VM_F32_MAP(F)                                                         \
    static void F##_scalar_f32(const float *x, float *y, int64_t n)           \
    {                                                                         \
        for (int64_t i = 0; i < n; i++)                                       \
            y[i] = (float)k_##F##_scalar_f64(x[i]);                           \
    }
VM_F32_MAP(exp)
VM_F32_MAP(log)
VM_F32_MAP(tanh)
VM_F32_MAP(sigmoid)
VM_F32_MAP(softplus)
VM_F32_MAP(erf)
VM_F32_MAP(ncdf)
VM_F32_MAP(gelu)
VM_F32_MAP(gelu_tanh)
VM_F32_MAP(sin)
VM_F32_MAP(cos)
#undef VM_F32_MAP

static void powc_scalar_f32(const float *x, float c, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)pow(x[i], c);
}

static void pow_scalar_f32(const float *x, const float *e, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)pow(x[i], e[i]);
}

static const ag_vmath_float vm_scalar_f32 = {
    .exp = exp_scalar_f32, .log = log_scalar_f32, .tanh = tanh_scalar_f32,
    .sigmoid = sigmoid_scalar_f32, .softplus = softplus_scalar_f32, .erf = erf_scalar_f32,
    .ncdf = ncdf_scalar_f32, .gelu = gelu_scalar_f32, .gelu_tanh = gelu_tanh_scalar_f32,
    .sin = sin_scalar_f32, .cos = cos_scalar_f32, .powc = powc_scalar_f32,
    .pow = pow_scalar_f32,
};

static bool scalar_supported(void) { return true; }

static const ag_vmath_arch vm_scalar = {
    .name = "scalar",
    .supported = scalar_supported,
    .f = &vm_scalar_f32,
    .d = &vm_scalar_f64,
};

/* ---- the choice ---- */

static const ag_vmath_arch *const k_archs[] = {
#ifdef AG_VMATH_X86
    &ag_vmath_avx512,
    &ag_vmath_avx2,
#endif
    &vm_scalar,
};
#define N_ARCHS (sizeof k_archs / sizeof k_archs[0])

static _Atomic(const ag_vmath_arch *) g_arch;

static const ag_vmath_arch *best_arch(void)
{
    for (size_t i = 0; i < N_ARCHS; i++)
        if (k_archs[i]->supported())
            return k_archs[i];
    return &vm_scalar;
}

static const ag_vmath_arch *cur_arch(void)
{
    const ag_vmath_arch *a = atomic_load_explicit(&g_arch, memory_order_acquire);
    if (!a) {
        /* racing first calls all store the same answer */
        a = best_arch();
        atomic_store_explicit(&g_arch, a, memory_order_release);
    }
    return a;
}

const ag_vmath_float *ag_vm_float(void) { return cur_arch()->f; }
const ag_vmath_double *ag_vm_double(void) { return cur_arch()->d; }
const char *ag_vm_arch(void) { return cur_arch()->name; }

bool ag_vm_set_arch(const char *name)
{
    if (!name) {
        atomic_store(&g_arch, best_arch());
        return true;
    }
    for (size_t i = 0; i < N_ARCHS; i++) {
        if (strcmp(k_archs[i]->name, name) == 0) {
            if (!k_archs[i]->supported())
                return false;
            atomic_store(&g_arch, k_archs[i]);
            return true;
        }
    }
    return false;
}
