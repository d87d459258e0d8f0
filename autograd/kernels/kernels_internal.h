/* kernels_internal.h — the hot loops of autograd/ (GEMM today), shared by
 * the ops files and the tests/benches, never installed.
 *
 * GEMM dimension legend: C (M x N) = alpha * op(A) (M x K) * op(B) (K x N)
 * + beta * C.  Everything is row-major; op(X) is X transposed when its flag
 * is set, read in place (no transposed copy is ever made).  lda, ldb, ldc
 * are the row strides, in elements, of the matrices as stored: A is stored
 * M x K (lda >= K) or, transposed, K x M (lda >= M); likewise B.
 *
 *   matmul forward   C  = A  * B     ag_gemm_f32(false, false, ...)
 *   backward dA     dA += dC * B^T   ag_gemm_f32(false, true,  ..., beta 1)
 *   backward dB     dB += A^T * dC   ag_gemm_f32(true,  false, ..., beta 1)
 */
#ifndef TAPEGRAD_KERNELS_INTERNAL_H
#define TAPEGRAD_KERNELS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "autograd.h"

/* C = alpha * op(A) * op(B) + beta * C.  beta == 0 overwrites C without
 * reading it (NaN in C does not survive); alpha == 0 or K == 0 reads
 * neither A nor B.  M, N or K may be 0.  Runs on ag_get_num_threads()
 * threads when the product is large; the result does not depend on the
 * thread count (the built-in backend is bit-identical for any count).
 * Never fails: if the pack buffers cannot be allocated it falls back to a
 * slow unpacked loop. */
void ag_gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                 float alpha, const float *A, int64_t lda, const float *B,
                 int64_t ldb, float beta, float *C, int64_t ldc);
void ag_gemm_f64(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                 double alpha, const double *A, int64_t lda, const double *B,
                 int64_t ldb, double beta, double *C, int64_t ldc);
/* C = op(A) op(B) + beta C in dtype dt (alpha 1): the ops' one door to the
 * two above. */
static inline void ag_gemm_dt(ag_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                              const void *A, int64_t lda, const void *B, int64_t ldb,
                              double beta, void *C, int64_t ldc)
{
    if (dt == AG_F64)
        ag_gemm_f64(ta, tb, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc);
    else
        ag_gemm_f32(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, (float)beta, C, ldc);
}

/* Backend that large products use now: "openblas", "builtin-avx512",
 * "builtin-avx2" or "builtin-generic".  The default is chosen in gemm.c
 * (use_blas) from measurements; these switches are for tests and benches
 * and last until the next call of either. */
const char *ag_gemm_backend(void);
/* true: always the built-in GEMM; false: back to the default. */
void ag_gemm_force_builtin(bool on);
/* true: always OpenBLAS (false, and nothing changes, when the build has
 * none); false: back to the default. */
bool ag_gemm_force_openblas(bool on);
/* Selects the built-in code path by name ("avx512", "avx2", "generic");
 * NULL restores the best one the CPU supports.  Returns false (and changes
 * nothing) when the CPU or the build lacks it.  For tests and benches. */
bool ag_gemm_set_arch(const char *name);
/* Frees the pack buffers of every thread.  Call only while no GEMM runs:
 * before ag_set_allocator swaps the allocator, or at the end of a test
 * that counts allocations. */
void ag_gemm_release_buffers(void);

/* ---- between gemm.c and the per-ISA micro-kernel files ---- */

/* Micro-kernel: C[m x n] = alpha * Ap * Bp + beta * C (beta 0: overwrite),
 * m <= mr, n <= nr.  Ap is a packed panel of mr rows (kc x mr, k-major),
 * Bp a packed panel of nr columns (kc x nr, k-major), zero-padded. */
typedef void (*ag_gemm_ukr_f32)(int64_t kc, const float *Ap, const float *Bp,
                                float *C, int64_t ldc, float alpha, float beta,
                                int m, int n);
typedef void (*ag_gemm_ukr_f64)(int64_t kc, const double *Ap, const double *Bp,
                                double *C, int64_t ldc, double alpha,
                                double beta, int m, int n);
/* The same with A read in place, row-major (row i at A + i * lda), for
 * whole tiles (m = mr): the same arithmetic, so the same bits. */
typedef void (*ag_gemm_ukr_f32_rows)(int64_t kc, const float *A, int64_t lda, const float *Bp,
                                     float *C, int64_t ldc, float alpha, float beta, int m,
                                     int n);

/* Packer: `rows` x kb of a stored matrix -> panels of R rows, each kb x R,
 * k-major (dst[p*R + r]), the last one zero-padded to R rows.  Element
 * (r, p) is src[p*ld + r] when `along` (the panel dimension is contiguous
 * in memory) and src[r*ld + p] otherwise (a transposing gather).  A packs
 * as (A, lda, trans_a, M, K, mr), B as (B, ldb, !trans_b, N, K, nr). */
typedef void (*ag_gemm_pack_f32)(const float *src, int64_t ld, bool along,
                                 int64_t rows, int64_t kb, int R, float *dst);
typedef void (*ag_gemm_pack_f64)(const double *src, int64_t ld, bool along,
                                 int64_t rows, int64_t kb, int R, double *dst);

/* Register tile (mr x nr) and cache blocks: an mc x kc block of A stays in
 * L2, a kc x nr sliver of B in L1, a kc x nc panel of B in L3. */
typedef struct ag_gemm_blocking {
    int mr, nr;
    int64_t kc, mc, nc;
} ag_gemm_blocking;

typedef struct ag_gemm_arch {
    const char *name;          /* "avx2", also "builtin-avx2" by backend */
    const char *backend;
    bool (*supported)(void);   /* CPU check, run time */
    ag_gemm_blocking s, d;     /* f32, f64 */
    ag_gemm_ukr_f32 sukr;
    ag_gemm_ukr_f64 dukr;
    /* NULL, or the f32 kernel that reads an untransposed A in place
     * instead of packing it (the transposing pack of the activations,
     * memory-bound, was 5% of a GPT step) */
    ag_gemm_ukr_f32_rows sukr_rows;
    ag_gemm_pack_f32 spack;
    ag_gemm_pack_f64 dpack;
} ag_gemm_arch;

#if defined(__x86_64__) || defined(__i386__)
#define AG_GEMM_X86 1
extern const ag_gemm_arch ag_gemm_arch_avx512;
extern const ag_gemm_arch ag_gemm_arch_avx2;
/* AVX2 packers, also used by the AVX-512 path (every AVX-512 CPU has AVX2) */
void ag_gemm_pack_avx2_f32(const float *src, int64_t ld, bool along,
                           int64_t rows, int64_t kb, int R, float *dst);
void ag_gemm_pack_avx2_f64(const double *src, int64_t ld, bool along,
                           int64_t rows, int64_t kb, int R, double *dst);
#endif
extern const ag_gemm_arch ag_gemm_arch_generic;

#endif
