/* conv_winograd_impl.h — the typed loops of conv_winograd.c (which see),
 * stamped out per dtype: included with WT (float or double) and W(name),
 * and wino_sizes in scope.  Layouts (xi the element of the 4x4 transform):
 *   U  [16][C][O]           the transformed kernels, one call ([16][O][C]
 *                           for the input gradient)
 *   xt [Hp][Wp][C]          one sample, zero-padded, channel-last
 *   V  [16][grp * T1][C]    a group's transformed input tiles
 *   M  [16][grp * T1][O]    their products with U
 *   yt [2 th][2 tw][O]      one sample's outputs, channel-last
 * and for the input gradient yt holds dy laid out the same way, M its
 * tiles' Q = A dY A^T, V their products R with U^T, and xt the sum of
 * the tiles' B R B^T (the forward's transforms transposed). */

/* U[xi][c][o] = (G g G^T)[xi] for the kernel g = w[o, c]. */
static void W(filter)(const ag_conv_geom *g, const WT *restrict w, bool trans, WT *restrict U)
{
    int64_t C = g->C, O = g->O;
    for (int64_t o = 0; o < O; o++)
        for (int64_t c = 0; c < C; c++) {
            const WT *k = w + (o * C + c) * 9;
            WT t[4][3], u[4][4];
            for (int j = 0; j < 3; j++) {
                t[0][j] = k[j];
                t[1][j] = (WT)0.5 * (k[j] + k[3 + j] + k[6 + j]);
                t[2][j] = (WT)0.5 * (k[j] - k[3 + j] + k[6 + j]);
                t[3][j] = k[6 + j];
            }
            for (int i = 0; i < 4; i++) {
                u[i][0] = t[i][0];
                u[i][1] = (WT)0.5 * (t[i][0] + t[i][1] + t[i][2]);
                u[i][2] = (WT)0.5 * (t[i][0] - t[i][1] + t[i][2]);
                u[i][3] = t[i][2];
            }
            for (int xi = 0; xi < 16; xi++)
                U[trans ? (xi * O + o) * C + c : (xi * C + c) * O + o] = u[xi / 4][xi % 4];
        }
}

/* xt = sample x [C, H, W] zero-padded to [Hp, Wp] (ph, pw before),
 * channel-last. */
static void W(layout)(const ag_conv_geom *g, const wino_sizes *z, const WT *restrict x,
                      WT *restrict xt)
{
    int64_t C = g->C;
    memset(xt, 0, (size_t)(z->Hp * z->Wp * C) * sizeof(WT));
    for (int64_t c = 0; c < C; c++)
        for (int64_t h = 0; h < g->H; h++)
            for (int64_t w = 0; w < g->W; w++)
                xt[((h + g->ph) * z->Wp + w + g->pw) * C + c] = x[(c * g->H + h) * g->W + w];
}

/* V[xi][t][c] = (B^T d B)[xi] for each tile t = t0 + a tw + b of a sample
 * and channel c, d its 4x4 input tile in xt. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void W(in_tiles)(const ag_conv_geom *g, const wino_sizes *z, const WT *restrict xt,
                        WT *restrict V, int64_t t0)
{
    int64_t C = g->C, vs = z->grp * z->T1 * C; /* V's stride between xi */
    for (int64_t a = 0; a < z->th; a++)
        for (int64_t b = 0; b < z->tw; b++) {
            const WT *d = xt + (2 * a * z->Wp + 2 * b) * C;
            WT *v = V + (t0 + a * z->tw + b) * C;
            int64_t rs = z->Wp * C; /* a row of xt */
            AG_SIMD for (int64_t c = 0; c < C; c++) {
                WT t[4][4];
                for (int j = 0; j < 4; j++) {
                    WT d0 = d[j * C + c], d1 = d[rs + j * C + c];
                    WT d2 = d[2 * rs + j * C + c], d3 = d[3 * rs + j * C + c];
                    t[0][j] = d0 - d2;
                    t[1][j] = d1 + d2;
                    t[2][j] = d2 - d1;
                    t[3][j] = d1 - d3;
                }
                for (int i = 0; i < 4; i++) {
                    v[(4 * i + 0) * vs + c] = t[i][0] - t[i][2];
                    v[(4 * i + 1) * vs + c] = t[i][1] + t[i][2];
                    v[(4 * i + 2) * vs + c] = t[i][2] - t[i][1];
                    v[(4 * i + 3) * vs + c] = t[i][1] - t[i][3];
                }
            }
        }
}

/* yt of one sample = A^T M A for its tiles t0 + (a tw + b), channel-last. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void W(out_tiles)(const ag_conv_geom *g, const wino_sizes *z, const WT *restrict M,
                         WT *restrict yt, int64_t t0)
{
    int64_t O = g->O, ms = z->grp * z->T1 * O, ys = 2 * z->tw * O; /* a row of yt */
    for (int64_t a = 0; a < z->th; a++)
        for (int64_t b = 0; b < z->tw; b++) {
            const WT *m = M + (t0 + a * z->tw + b) * O;
            WT *y = yt + (2 * a * 2 * z->tw + 2 * b) * O;
            AG_SIMD for (int64_t o = 0; o < O; o++) {
                WT s[2][4];
                for (int j = 0; j < 4; j++) {
                    WT m0 = m[j * ms + o], m1 = m[(4 + j) * ms + o];
                    WT m2 = m[(8 + j) * ms + o], m3 = m[(12 + j) * ms + o];
                    s[0][j] = m0 + m1 + m2;
                    s[1][j] = m1 - m2 - m3;
                }
                for (int r = 0; r < 2; r++) {
                    y[r * ys + o] = s[r][0] + s[r][1] + s[r][2];
                    y[r * ys + O + o] = s[r][1] - s[r][2] - s[r][3];
                }
            }
        }
}

/* y[n] (+)= yt moved back to [O, Ho, Wo] (+ b) */
static void W(store)(const ag_conv_geom *g, const wino_sizes *z, const WT *restrict yt,
                     const WT *restrict bias, WT *restrict y, bool acc)
{
    int64_t O = g->O, Wt = 2 * z->tw;
    for (int64_t o = 0; o < O; o++) {
        WT bo = bias ? bias[o] : 0;
        WT *yo = y + o * g->Ho * g->Wo;
        for (int64_t h = 0; h < g->Ho; h++)
            for (int64_t w = 0; w < g->Wo; w++) {
                WT v = yt[(h * Wt + w) * O + o] + bo;
                yo[h * g->Wo + w] = acc ? yo[h * g->Wo + w] + v : v;
            }
    }
}

/* A chunk's scratch, carved into its buffers. */
typedef struct {
    WT *xt, *V, *M, *yt;
} W(bufs);

static W(bufs) W(carve)(const wino_sizes *z, char *slot)
{
    return (W(bufs)){(WT *)(void *)slot, (WT *)(void *)(slot + z->xt),
                     (WT *)(void *)(slot + z->xt + z->v),
                     (WT *)(void *)(slot + z->xt + z->v + z->m)};
}

/* The 16 products: out[xi] (Tn x K2) = in[xi] (Tn x K1) times U[xi]: C x
 * O, or with tu O x C (the filter transform laid out transposed, so the
 * GEMM packs it by plain copies: a transposing pack of it in every
 * product was 4% of the input gradient); in and out xi blocks is and os
 * apart. */
static void W(products)(const ag_conv_geom *g, int64_t Tn, const WT *in, int64_t is,
                        const WT *U, bool tu, WT *out, int64_t os)
{
    int64_t K1 = tu ? g->O : g->C, K2 = tu ? g->C : g->O;
    for (int xi = 0; xi < 16; xi++)
        ag_gemm_dt(sizeof(WT) == 8 ? AG_F64 : AG_F32, false, false, Tn, K2, K1, in + xi * is,
                   K1, U + xi * g->C * g->O, K2, 0.0, out + xi * os, K2);
}

/* Samples [n0, n1) of the chunk whose scratch is slot. */
static void W(chunk)(const ag_conv_geom *g, const wino_sizes *z, const WT *x, const WT *U,
                     const WT *bias, WT *y, bool acc, char *slot, int64_t n0, int64_t n1)
{
    W(bufs) f = W(carve)(z, slot);
    WT *xt = f.xt, *V = f.V, *M = f.M, *yt = f.yt;
    int64_t C = g->C, O = g->O, Tn = (n1 - n0) * z->T1;
    for (int64_t n = n0; n < n1; n++) {
        W(layout)(g, z, x + n * C * g->H * g->W, xt);
        W(in_tiles)(g, z, xt, V, (n - n0) * z->T1);
    }
    W(products)(g, Tn, V, z->grp * z->T1 * C, U, false, M, z->grp * z->T1 * O);
    for (int64_t n = n0; n < n1; n++) {
        W(out_tiles)(g, z, M, yt, (n - n0) * z->T1);
        W(store)(g, z, yt, bias, y + n * O * g->Ho * g->Wo, acc);
    }
}

/* yt = sample dy [O, Ho, Wo] channel-last, zero-padded to [2 th, 2 tw]. */
static void W(dy_layout)(const ag_conv_geom *g, const wino_sizes *z, const WT *restrict dy,
                         WT *restrict yt)
{
    int64_t O = g->O, Wt = 2 * z->tw;
    memset(yt, 0, (size_t)(4 * z->T1 * O) * sizeof(WT));
    for (int64_t o = 0; o < O; o++)
        for (int64_t h = 0; h < g->Ho; h++)
            for (int64_t w = 0; w < g->Wo; w++)
                yt[(h * Wt + w) * O + o] = dy[(o * g->Ho + h) * g->Wo + w];
}

/* Q[xi][t][o] = (A dY A^T)[xi] for each 2x2 tile dY of yt, t = t0 + a tw
 * + b: the output transform's adjoint. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void W(dy_tiles)(const ag_conv_geom *g, const wino_sizes *z, const WT *restrict yt,
                        WT *restrict Q, int64_t t0)
{
    int64_t O = g->O, qs = z->grp * z->T1 * O, ys = 2 * z->tw * O;
    for (int64_t a = 0; a < z->th; a++)
        for (int64_t b = 0; b < z->tw; b++) {
            const WT *d = yt + (2 * a * 2 * z->tw + 2 * b) * O;
            WT *q = Q + (t0 + a * z->tw + b) * O;
            AG_SIMD for (int64_t o = 0; o < O; o++) {
                WT d00 = d[o], d01 = d[O + o], d10 = d[ys + o], d11 = d[ys + O + o];
                WT p[4][2] = {{d00, d01}, {d00 + d10, d01 + d11}, {d00 - d10, d01 - d11},
                              {-d10, -d11}};
                for (int i = 0; i < 4; i++) {
                    q[(4 * i + 0) * qs + o] = p[i][0];
                    q[(4 * i + 1) * qs + o] = p[i][0] + p[i][1];
                    q[(4 * i + 2) * qs + o] = p[i][0] - p[i][1];
                    q[(4 * i + 3) * qs + o] = -p[i][1];
                }
            }
        }
}

/* xt[4x4 input tile of t] += B R[., t, c] B^T for each tile t = t0 + a tw
 * + b and channel c: the input transform's adjoint (tiles overlap by 2,
 * so each adds onto its neighbours' sums, in tile order). */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void W(in_tiles_adj)(const ag_conv_geom *g, const wino_sizes *z, const WT *restrict R,
                            WT *restrict xt, int64_t t0)
{
    int64_t C = g->C, vs = z->grp * z->T1 * C, rs = z->Wp * C;
    for (int64_t a = 0; a < z->th; a++)
        for (int64_t b = 0; b < z->tw; b++) {
            const WT *r = R + (t0 + a * z->tw + b) * C;
            WT *d = xt + (2 * a * z->Wp + 2 * b) * C;
            AG_SIMD for (int64_t c = 0; c < C; c++) {
                WT m[4][4], zr[4][4];
                for (int xi = 0; xi < 16; xi++)
                    m[xi / 4][xi % 4] = r[xi * vs + c];
                for (int j = 0; j < 4; j++) {
                    zr[0][j] = m[0][j];
                    zr[1][j] = m[1][j] - m[2][j] + m[3][j];
                    zr[2][j] = m[1][j] + m[2][j] - m[0][j];
                    zr[3][j] = -m[3][j];
                }
                for (int i = 0; i < 4; i++) {
                    WT *di = d + i * rs + c;
                    di[0] += zr[i][0];
                    di[C] += zr[i][1] - zr[i][2] + zr[i][3];
                    di[2 * C] += zr[i][1] + zr[i][2] - zr[i][0];
                    di[3 * C] += -zr[i][3];
                }
            }
        }
}

/* dx[n] += xt without its padding, back to [C, H, W]. */
static void W(layout_adj)(const ag_conv_geom *g, const wino_sizes *z, const WT *restrict xt,
                          WT *restrict dx)
{
    int64_t C = g->C;
    for (int64_t c = 0; c < C; c++)
        for (int64_t h = 0; h < g->H; h++)
            for (int64_t w = 0; w < g->W; w++)
                dx[(c * g->H + h) * g->W + w] += xt[((h + g->ph) * z->Wp + w + g->pw) * C + c];
}

/* dx += the input gradient of samples [n0, n1) for dy, through U. */
static void W(dx_group)(const ag_conv_geom *g, const wino_sizes *z, const WT *dy, const WT *U,
                        WT *dx, char *slot, int64_t n0, int64_t n1)
{
    W(bufs) f = W(carve)(z, slot);
    WT *xt = f.xt, *R = f.V, *Q = f.M, *yt = f.yt;
    int64_t C = g->C, O = g->O, Tn = (n1 - n0) * z->T1;
    for (int64_t n = n0; n < n1; n++) {
        W(dy_layout)(g, z, dy + n * O * g->Ho * g->Wo, yt);
        W(dy_tiles)(g, z, yt, Q, (n - n0) * z->T1);
    }
    W(products)(g, Tn, Q, z->grp * z->T1 * O, U, true, R, z->grp * z->T1 * C);
    for (int64_t n = n0; n < n1; n++) {
        memset(xt, 0, (size_t)(z->Hp * z->Wp * C) * sizeof(WT));
        W(in_tiles_adj)(g, z, R, xt, (n - n0) * z->T1);
        W(layout_adj)(g, z, xt, dx + n * C * g->H * g->W);
    }
}
