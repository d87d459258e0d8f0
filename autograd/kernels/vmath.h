/* vmath.h — the transcendental functions of the elementwise ops, over
 * arrays: y[i] = f(x[i]) for i < n (y may be x).  Shared by ops_unary.c,
 * ops_binary.c, ops_nn.c and ops_reduce.c, the tests and the benches;
 * never installed.
 *
 * One table per code path, chosen at run time by CPU features as the GEMM
 * is (kernels/gemm.c): AVX-512F, AVX2 + FMA (SLEEF's vector functions,
 * vmath_avx512.c / vmath_avx2.c, when the build found SLEEF), or scalar
 * libm in double (vmath.c; any CPU, any build).  Each table's f32
 * functions stay within 4 ulp of the exact result over each function's
 * range (erf, ncdf, gelu, gelu_tanh within 8), its f64 functions likewise
 * in f64 ulp: tests/test_vmath.c sweeps every path the CPU has.
 *
 * The functions, for x of the table's dtype:
 *   exp log tanh erf sin cos   as in libm
 *   sigmoid    1 / (1 + e^-x)
 *   softplus   log(1 + e^x)
 *   ncdf       Phi(x) = (1 + erf(x / sqrt 2)) / 2, the normal CDF
 *   gelu       x Phi(x)
 *   gelu_tanh  x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2
 *   powc       x^c, c one constant;  pow  x[i]^e[i]   (C99 pow cases)
 * Tails of sigmoid, softplus, ncdf, gelu and gelu_tanh keep their relative
 * accuracy where a naive formula cancels (1 + erf(x) for x << 0): the
 * arguments are carried in two parts where their rounding would be
 * amplified (x^2 inside e^(-x^2/2), the cubic inside gelu_tanh). */
#ifndef TAPEGRAD_VMATH_H
#define TAPEGRAD_VMATH_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ag_vmath_float {
    void (*exp)(const float *x, float *y, int64_t n);
    void (*log)(const float *x, float *y, int64_t n);
    void (*tanh)(const float *x, float *y, int64_t n);
    void (*sigmoid)(const float *x, float *y, int64_t n);
    void (*softplus)(const float *x, float *y, int64_t n);
    void (*erf)(const float *x, float *y, int64_t n);
    void (*ncdf)(const float *x, float *y, int64_t n);
    void (*gelu)(const float *x, float *y, int64_t n);
    void (*gelu_tanh)(const float *x, float *y, int64_t n);
    void (*sin)(const float *x, float *y, int64_t n);
    void (*cos)(const float *x, float *y, int64_t n);
    void (*powc)(const float *x, float c, float *y, int64_t n);
    void (*pow)(const float *x, const float *e, float *y, int64_t n);
} ag_vmath_float;

typedef struct ag_vmath_double {
    void (*exp)(const double *x, double *y, int64_t n);
    void (*log)(const double *x, double *y, int64_t n);
    void (*tanh)(const double *x, double *y, int64_t n);
    void (*sigmoid)(const double *x, double *y, int64_t n);
    void (*softplus)(const double *x, double *y, int64_t n);
    void (*erf)(const double *x, double *y, int64_t n);
    void (*ncdf)(const double *x, double *y, int64_t n);
    void (*gelu)(const double *x, double *y, int64_t n);
    void (*gelu_tanh)(const double *x, double *y, int64_t n);
    void (*sin)(const double *x, double *y, int64_t n);
    void (*cos)(const double *x, double *y, int64_t n);
    void (*powc)(const double *x, double c, double *y, int64_t n);
    void (*pow)(const double *x, const double *e, double *y, int64_t n);
} ag_vmath_double;

/* The tables of the code path in use (the best the CPU has, unless a test
 * chose another).  Named after the element type, so typed macros in the
 * ops files write ag_vm_##T(). */
const ag_vmath_float *ag_vm_float(void);
const ag_vmath_double *ag_vm_double(void);

/* The code path in use: "avx512", "avx2" or "scalar". */
const char *ag_vm_arch(void);
/* Selects a code path by name; NULL restores the best one.  false (and
 * nothing changes) when the CPU or the build lacks it.  For tests and
 * benches, while no other thread runs an op. */
bool ag_vm_set_arch(const char *name);

/* ---- between vmath.c and the per-ISA files ---- */
typedef struct ag_vmath_arch {
    const char *name;
    bool (*supported)(void);
    const ag_vmath_float *f;
    const ag_vmath_double *d;
} ag_vmath_arch;

#if defined(AG_HAVE_SLEEF) && (defined(__x86_64__) || defined(__i386__))
#define AG_VMATH_X86 1
extern const ag_vmath_arch ag_vmath_avx512;
extern const ag_vmath_arch ag_vmath_avx2;
#endif

#endif
