/* conv_loops.h — the typed loops of conv.c (legend in conv_internal.h),
 * written once and stamped out per dtype: conv.c includes it twice, with
 *
 *   CL_T  float or double      CL_I  the same-width integer (int32_t, int64_t)
 *   CL(name)  name with the dtype's suffix
 *
 * and with span, span_of, CL_VEC_BYTES and ag_conv_geom in scope.
 *
 * Rows of im2col and col2im are short (11 elements for a 3x3 kernel on
 * 13x13), so both move them as whole vectors (CL_VEC_BYTES: a zmm register,
 * or two ymm or four xmm where the target lacks AVX-512) that may run past
 * a row, reading (and for im2col writing) into the slack around the column
 * buffer (conv.c's slot layout).  Exact-length copies cost ~17 cycles a row
 * (bench/conv's conv2, perf annotate), and adding rows straight into dx as
 * vectors that overlap the next row stalled on store forwarding (77% of
 * col2im on one store), hence col2im's gathering of each dx row.
 */

typedef CL_T CL(vec) __attribute__((vector_size(CL_VEC_BYTES)));
typedef CL_I CL(ivec) __attribute__((vector_size(CL_VEC_BYTES)));
enum { CL(VL) = CL_VEC_BYTES / sizeof(CL_T) };

/* d[0, n) = s[0, n) as whole vectors, d and s used up to VL - 1 elements
 * past n.  (One vector is a case of its own: GCC turns the loop into a call
 * to memcpy.) */
AG_INLINE void CL(copy_over)(CL_T *restrict d, const CL_T *restrict s, int64_t n)
{
    CL(vec) v;
    if (n <= CL(VL)) {
        memcpy(&v, s, sizeof v);
        memcpy(d, &v, sizeof v);
        return;
    }
    for (int64_t k = 0; k < n; k += CL(VL)) {
        memcpy(&v, s + k, sizeof v);
        memcpy(d + k, &v, sizeof v);
    }
}

/* Rows oh in [0, Ho) of one tap's block d [Ho, Wo] of col from x's plane
 * s (stride 1 along a row, whole rows: rw covers [0, Wo)): the taken ones
 * (rh) start at s[first] and are each a whole-vector copy, written in
 * ascending order so what one row writes past its end the next
 * overwrites, where the last one's reads stay inside x (s_end: elements
 * readable from s); exact copies otherwise. */
AG_INLINE void CL(tap_rows)(CL_T *restrict d, const CL_T *restrict s, int64_t first,
                            const ag_conv_geom *g, span rh, int64_t s_end)
{
    int64_t Wo = g->Wo, step = g->sh * g->W, n = rh.hi - rh.lo;
    int64_t over = (Wo + CL(VL) - 1) / CL(VL) * CL(VL);
    memset(d, 0, (size_t)(rh.lo * Wo) * sizeof(CL_T));
    d += rh.lo * Wo;
    if (n > 0 && first + (n - 1) * step + over <= s_end) {
        for (int64_t k = 0; k < n; k++, d += Wo)
            CL(copy_over)(d, s + first + k * step, Wo);
    } else {
        for (int64_t k = 0; k < n; k++, d += Wo)
            memcpy(d, s + first + k * step, (size_t)Wo * sizeof(CL_T));
    }
    memset(d, 0, (size_t)((g->Ho - rh.hi) * Wo) * sizeof(CL_T));
}

/* col [K, P] = the unrolled x [Cg, H, W] of one sample and group; x has
 * `avail` elements from its start.  col has CL_VEC_BYTES of slack past
 * its end. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void CL(im2col)(const CL_T *restrict x, const ag_conv_geom *g, CL_T *restrict col,
                       int64_t avail)
{
    int64_t Cg = g->C / g->G, Ho = g->Ho, Wo = g->Wo, W = g->W;
    for (int64_t c = 0; c < Cg; c++)
        for (int64_t i = 0; i < g->kh; i++) {
            span rh = span_of(Ho, g->sh, i * g->dh - g->ph, g->H);
            for (int64_t j = 0; j < g->kw; j++) {
                span rw = span_of(Wo, g->sw, j * g->dw - g->pw, W);
                CL_T *d = col + ((c * g->kh + i) * g->kw + j) * Ho * Wo;
                const CL_T *s = x + c * g->H * W;
                if (g->sw == 1 && rw.lo == 0 && rw.hi == Wo) {
                    int64_t first = (rh.lo * g->sh + rh.off) * W + rw.off;
                    CL(tap_rows)(d, s, first, g, rh, avail - c * g->H * W);
                    continue;
                }
                for (int64_t oh = 0; oh < Ho; oh++, d += Wo) {
                    if (oh < rh.lo || oh >= rh.hi) {
                        memset(d, 0, (size_t)Wo * sizeof(CL_T));
                        continue;
                    }
                    int64_t r = (oh * g->sh + rh.off) * W + rw.off;
                    for (int64_t ow = 0; ow < rw.lo; ow++)
                        d[ow] = 0;
                    for (int64_t ow = rw.lo; ow < rw.hi; ow++)
                        d[ow] = s[r + ow * g->sw];
                    for (int64_t ow = rw.hi; ow < Wo; ow++)
                        d[ow] = 0;
                }
            }
        }
}

/* Vectors a row of dx takes in col2im's gathering path, or 0 where that
 * path does not apply: stride 1 along rows, rows of at most 4 vectors, at
 * most 8 taps along a row, and tap offsets of at most a vector either
 * way, so a tap row's loads stay within the slack around col. */
static int64_t CL(fold_vectors)(const ag_conv_geom *g)
{
    int64_t nv = (g->W + CL(VL) - 1) / CL(VL);
    bool fits = g->sw == 1 && nv <= 4 && g->kw <= 8 && (g->kw - 1) * g->dw <= CL(VL) &&
                g->pw <= CL(VL);
    return fits ? nv : 0;
}

/* dx row h of channel plane s += the sum over the taps (i, j) that reach
 * it of col's rows for them (d: channel c's first tap block), as nv
 * vectors a tap, lanes masked by m[j][v]: the sum stays in registers and
 * dx is written once (adding each tap into dx or into a buffer instead
 * stalled on store forwarding: 77% of col2im on one store). */
AG_INLINE void CL(fold_row)(CL_T *restrict s, const CL_T *restrict d, const ag_conv_geom *g,
                            int64_t h, const int64_t *off, const CL(ivec) (*m)[4], int nv)
{
    CL(vec) acc[4] = {{0}};
    int64_t P = g->Ho * g->Wo;
    for (int64_t i = 0; i < g->kh; i++) {
        int64_t t = h - i * g->dh + g->ph;
        if (t < 0 || t % g->sh || t / g->sh >= g->Ho)
            continue;
        const CL_T *row = d + i * g->kw * P + t / g->sh * g->Wo;
        for (int64_t j = 0; j < g->kw; j++, row += P)
            for (int v = 0; v < nv; v++) {
                CL(vec) x;
                memcpy(&x, row + v * CL(VL) - off[j], sizeof x);
                acc[v] += (CL(vec))((CL(ivec))x & m[j][v]);
            }
    }
    CL_T sum[4 * CL(VL)];
    memcpy(sum, acc, sizeof sum);
    AG_SIMD for (int64_t w = 0; w < g->W; w++)
        s[h * g->W + w] += sum[w];
}

/* dx [Cg, H, W] += col [K, P] folded back (im2col's adjoint): by rows of
 * dx where fold_vectors(g) (col then has a vector of slack before it and
 * 5 after), else by rows of col. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void CL(col2im)(const CL_T *restrict col, const ag_conv_geom *g, CL_T *restrict dx)
{
    int64_t Cg = g->C / g->G, Ho = g->Ho, Wo = g->Wo, W = g->W, H = g->H;
    int64_t nv = CL(fold_vectors)(g);
    if (nv) {
        /* lane l of vector v takes dx column w = v*VL + l, from output
         * column w - off[j] of tap j where that is one of its span */
        int64_t off[8];
        CL(ivec) m[8][4];
        for (int64_t j = 0; j < g->kw; j++) {
            span rw = span_of(Wo, 1, j * g->dw - g->pw, W);
            off[j] = rw.off;
            for (int64_t v = 0; v < 4; v++)
                for (int l = 0; l < CL(VL); l++) {
                    int64_t q = v * CL(VL) + l - rw.off;
                    m[j][v][l] = q >= rw.lo && q < rw.hi ? -1 : 0;
                }
        }
        for (int64_t c = 0; c < Cg; c++)
            for (int64_t h = 0; h < H; h++) {
                const CL_T *d = col + c * g->kh * g->kw * Ho * Wo;
                CL_T *s = dx + c * H * W;
                if (nv == 1) /* constant trip counts for the common case */
                    CL(fold_row)(s, d, g, h, off, (const CL(ivec)(*)[4])m, 1);
                else
                    CL(fold_row)(s, d, g, h, off, (const CL(ivec)(*)[4])m, (int)nv);
            }
        return;
    }
    for (int64_t c = 0; c < Cg; c++)
        for (int64_t i = 0; i < g->kh; i++) {
            span rh = span_of(Ho, g->sh, i * g->dh - g->ph, H);
            for (int64_t j = 0; j < g->kw; j++) {
                span rw = span_of(Wo, g->sw, j * g->dw - g->pw, W);
                const CL_T *d = col + ((c * g->kh + i) * g->kw + j) * Ho * Wo;
                CL_T *s = dx + c * H * W;
                for (int64_t oh = rh.lo; oh < rh.hi; oh++) {
                    int64_t r = (oh * g->sh + rh.off) * W + rw.off;
                    const CL_T *dr = d + oh * Wo;
                    if (g->sw == 1)
                        AG_SIMD for (int64_t ow = rw.lo; ow < rw.hi; ow++)
                            s[r + ow] += dr[ow];
                    else
                        for (int64_t ow = rw.lo; ow < rw.hi; ow++)
                            s[r + ow * g->sw] += dr[ow];
                }
            }
        }
}

/* wt[grp] = w[grp]^T [K, Og], for G groups of w [Og, K] */
static void CL(transpose_w)(const CL_T *restrict w, CL_T *restrict wt, int64_t G, int64_t Og,
                            int64_t K)
{
    for (int64_t grp = 0; grp < G; grp++)
        for (int64_t o = 0; o < Og; o++)
            for (int64_t k = 0; k < K; k++)
                wt[(grp * K + k) * Og + o] = w[(grp * Og + o) * K + k];
}

/* y [rows, P] += b[row] */
static void CL(add_bias)(CL_T *restrict y, const CL_T *restrict b, int64_t rows, int64_t P)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t p = 0; p < P; p++)
            y[r * P + p] += b[r];
}

/* dw[g, o, k] (+)= sum over chunks c, in order, of part[c, g, k, o]: the
 * chunks summed into part[0] first (contiguous, vectorised), then
 * transposed into dw. */
static void CL(sum_chunks)(CL_T *restrict dw, CL_T *restrict part, int64_t nch,
                           const ag_conv_geom *g, bool acc)
{
    int64_t Og = g->O / g->G, K = g->C / g->G * g->kh * g->kw, n = g->O * K;
    for (int64_t c = 1; c < nch; c++)
        AG_SIMD for (int64_t i = 0; i < n; i++)
            part[i] += part[c * n + i];
    for (int64_t grp = 0; grp < g->G; grp++)
        for (int64_t k = 0; k < K; k++)
            for (int64_t o = 0; o < Og; o++) {
                CL_T s = part[(grp * K + k) * Og + o];
                CL_T *d = dw + (grp * Og + o) * K + k;
                *d = acc ? *d + s : s;
            }
}

/* sum of x[0, n) (vectorised: a fixed order, whatever the threads) */
static CL_T CL(row_sum)(const CL_T *restrict x, int64_t n)
{
    CL_T s = 0;
    AG_SIMD_SUM_S
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    return s;
}

/* db[o] += sum_n (sum_p dy[n, o, p]), the outer sum in double */
static void CL(bias_grad)(const CL_T *restrict dy, CL_T *restrict db, int64_t N, int64_t O,
                          int64_t P, int64_t o)
{
    double s = 0;
    for (int64_t n = 0; n < N; n++)
        s += CL(row_sum)(dy + (n * O + o) * P, P);
    db[o] += (CL_T)s;
}
