/* gemm_ukernel.h — the one GEMM micro-kernel, written once and stamped out
 * per ISA and dtype by gemm_avx512.c, gemm_avx2.c and gemm_generic.c, so
 * the AVX-512 kernel runs the very code the AVX2 and generic tests check;
 * only the vector macros differ.  Include it once per kernel, with:
 *
 *   UKR_NAME   function name          UKR_T     float or double
 *   UKR_VEC    vector type            UKR_VLEN  elements per vector
 *   UKR_MR     rows of the tile       UKR_NV    vectors per row (nr = NV*VLEN)
 *   UKR_ATTR   target attribute (or nothing)
 *   UKR_ZERO() UKR_LOAD(p) UKR_STORE(p, v) UKR_BCAST(p) UKR_SET1(x)
 *   UKR_FMA(a, b, c) = a*b + c       UKR_MUL(a, b)
 *   UKR_SFMA(a, b, c) scalar a*b + c rounded exactly as UKR_FMA
 *   UKR_PREFETCH(p)  (may expand to nothing)
 *   UKR_KEEP   (optional) keep these macros defined after the kernel, for
 *              a second one (UKR_NAME must then be redefined)
 *
 * Dimension legend: kc = depth of this pass, mr x nr = register tile,
 * m x n = the part of the tile that lies inside C (edge tiles are smaller).
 * Ap: kc x mr, Bp: kc x nr, both k-major and zero-padded by the packers.
 * With UKR_ROWS defined the kernel takes A as stored instead, row-major
 * with row stride lda (whole tiles only: m = mr), for a product whose A
 * would need a transposing pack; the arithmetic is the same.
 */

#define UKR_NR (UKR_NV * UKR_VLEN)

#ifdef UKR_ROWS
#define UKR_A_PARAMS const UKR_T *restrict Ap, int64_t lda
#define UKR_A_AT(i) (Ap + (i) * lda)
#define UKR_A_STEP 1
#else
#define UKR_A_PARAMS const UKR_T *restrict Ap
#define UKR_A_AT(i) (Ap + (i))
#define UKR_A_STEP UKR_MR
#endif

UKR_ATTR static void UKR_NAME(int64_t kc, UKR_A_PARAMS, const UKR_T *restrict Bp,
                              UKR_T *restrict C, int64_t ldc, UKR_T alpha, UKR_T beta,
                              int m, int n)
{
    UKR_VEC acc[UKR_MR][UKR_NV];

#pragma GCC unroll 32
    for (int i = 0; i < UKR_MR; i++) {
#pragma GCC unroll 8
        for (int v = 0; v < UKR_NV; v++)
            acc[i][v] = UKR_ZERO();
    }
    /* C rows are touched last; start pulling them in now */
#pragma GCC unroll 32
    for (int i = 0; i < UKR_MR; i++)
        if (i < m)
            UKR_PREFETCH(C + i * ldc);

    /* unrolled 4: measured +5-10% at n = 256-512 on Zen 4 (loop overhead
     * and a longer window for the out-of-order core) */
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        UKR_VEC b[UKR_NV];
#pragma GCC unroll 8
        for (int v = 0; v < UKR_NV; v++)
            b[v] = UKR_LOAD(Bp + v * UKR_VLEN);
#pragma GCC unroll 32
        for (int i = 0; i < UKR_MR; i++) {
            UKR_VEC a = UKR_BCAST(UKR_A_AT(i));
#pragma GCC unroll 8
            for (int v = 0; v < UKR_NV; v++)
                acc[i][v] = UKR_FMA(a, b[v], acc[i][v]);
        }
        Ap += UKR_A_STEP;
        Bp += UKR_NR;
    }

    UKR_VEC va = UKR_SET1(alpha), vb = UKR_SET1(beta);
    if (m == UKR_MR && n == UKR_NR && beta == 0) {
        /* beta == 0 must not read C: it may hold NaN */
#pragma GCC unroll 32
        for (int i = 0; i < UKR_MR; i++) {
#pragma GCC unroll 8
            for (int v = 0; v < UKR_NV; v++)
                UKR_STORE(C + i * ldc + v * UKR_VLEN, UKR_MUL(va, acc[i][v]));
        }
        return;
    }
    if (m == UKR_MR && n == UKR_NR) {
#pragma GCC unroll 32
        for (int i = 0; i < UKR_MR; i++) {
#pragma GCC unroll 8
            for (int v = 0; v < UKR_NV; v++) {
                UKR_T *c = C + i * ldc + v * UKR_VLEN;
                UKR_STORE(c, UKR_FMA(vb, UKR_LOAD(c), UKR_MUL(va, acc[i][v])));
            }
        }
        return;
    }
    /* edge tile: same arithmetic through a scratch tile, so a C element
     * gets the same bits whether it sits in a full or an edge tile (the
     * result must not depend on how threads split C) */
    UKR_T tile[UKR_MR * UKR_NR];
#pragma GCC unroll 32
    for (int i = 0; i < UKR_MR; i++) {
#pragma GCC unroll 8
        for (int v = 0; v < UKR_NV; v++)
            UKR_STORE(tile + i * UKR_NR + v * UKR_VLEN, UKR_MUL(va, acc[i][v]));
    }
    for (int i = 0; i < m; i++) {
        UKR_T *c = C + i * ldc;
        const UKR_T *t = tile + i * UKR_NR;
        if (beta == 0)
            for (int j = 0; j < n; j++)
                c[j] = t[j];
        else
            for (int j = 0; j < n; j++)
                c[j] = UKR_SFMA(beta, c[j], t[j]);
    }
}

#undef UKR_NR
#undef UKR_ROWS
#undef UKR_A_PARAMS
#undef UKR_A_AT
#undef UKR_A_STEP
#ifdef UKR_KEEP /* the includer stamps a second kernel with these macros */
#undef UKR_KEEP
#else
#undef UKR_NAME
#undef UKR_T
#undef UKR_VEC
#undef UKR_VLEN
#undef UKR_MR
#undef UKR_NV
#undef UKR_ATTR
#undef UKR_ZERO
#undef UKR_LOAD
#undef UKR_STORE
#undef UKR_BCAST
#undef UKR_SET1
#undef UKR_FMA
#undef UKR_MUL
#undef UKR_SFMA
#undef UKR_PREFETCH
#endif
