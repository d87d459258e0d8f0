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

/* U[xi][c][o] (U[xi][o][c] with trans) = (G g G^T)[xi] for the kernel
 * g = w[o, c]. */
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

/* dst = planes src [C, H, W] channel-last in a zeroed [rows, cols] grid
 * (rows x cols x C), plane (h, w) at (h + r0, w + c0). */
static void W(to_last)(const WT *restrict src, int64_t C, int64_t H, int64_t Wd,
                       WT *restrict dst, int64_t rows, int64_t cols, int64_t r0, int64_t c0)
{
    memset(dst, 0, (size_t)(rows * cols * C) * sizeof(WT));
    for (int64_t c = 0; c < C; c++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < Wd; w++)
                dst[((h + r0) * cols + w + c0) * C + c] = src[(c * H + h) * Wd + w];
}

/* dst [C, H, W] (+)= the channel-last grid src (cols wide) at (h + r0, w +
 * c0), the inverse of to_last. */
static void W(from_last)(const WT *restrict src, int64_t cols, int64_t r0, int64_t c0,
                         WT *restrict dst, int64_t C, int64_t H, int64_t Wd, bool acc)
{
    for (int64_t c = 0; c < C; c++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < Wd; w++) {
                WT v = src[((h + r0) * cols + w + c0) * C + c];
                WT *d = dst + (c * H + h) * Wd + w;
                *d = acc ? *d + v : v;
            }
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

/* y (+)= the forward (+ b) of samples [n0, n1), through U, in the chunk
 * scratch slot. */
static void W(fwd_group)(const ag_conv_geom *g, const wino_sizes *z, const WT *x, const WT *U,
                         const WT *bias, WT *y, bool acc, char *slot, int64_t n0, int64_t n1)
{
    W(bufs) f = W(carve)(z, slot);
    int64_t C = g->C, O = g->O, P = g->Ho * g->Wo, Tn = (n1 - n0) * z->T1;
    for (int64_t n = n0; n < n1; n++) {
        W(to_last)(x + n * C * g->H * g->W, C, g->H, g->W, f.xt, z->Hp, z->Wp, g->ph, g->pw);
        W(in_tiles)(g, z, f.xt, f.V, (n - n0) * z->T1);
    }
    W(products)(g, Tn, f.V, z->grp * z->T1 * C, U, false, f.M, z->grp * z->T1 * O);
    for (int64_t n = n0; n < n1; n++) {
        WT *yn = y + n * O * P;
        W(out_tiles)(g, z, f.M, f.yt, (n - n0) * z->T1);
        W(from_last)(f.yt, 2 * z->tw, 0, 0, yn, O, g->Ho, g->Wo, acc);
        for (int64_t o = 0; o < O && bias; o++)
            AG_SIMD for (int64_t i = 0; i < P; i++)
                yn[o * P + i] += bias[o];
    }
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

/* dx += the input gradient of samples [n0, n1) for dy, through U. */
static void W(dx_group)(const ag_conv_geom *g, const wino_sizes *z, const WT *dy, const WT *U,
                        WT *dx, char *slot, int64_t n0, int64_t n1)
{
    W(bufs) f = W(carve)(z, slot); /* V holds R, M holds Q */
    int64_t C = g->C, O = g->O, Tn = (n1 - n0) * z->T1;
    for (int64_t n = n0; n < n1; n++) {
        W(to_last)(dy + n * O * g->Ho * g->Wo, O, g->Ho, g->Wo, f.yt, 2 * z->th, 2 * z->tw, 0,
                   0);
        W(dy_tiles)(g, z, f.yt, f.M, (n - n0) * z->T1);
    }
    W(products)(g, Tn, f.M, z->grp * z->T1 * O, U, true, f.V, z->grp * z->T1 * C);
    for (int64_t n = n0; n < n1; n++) {
        memset(f.xt, 0, (size_t)(z->Hp * z->Wp * C) * sizeof(WT));
        W(in_tiles_adj)(g, z, f.V, f.xt, (n - n0) * z->T1);
        W(from_last)(f.xt, z->Wp, g->ph, g->pw, dx + n * C * g->H * g->W, C, g->H, g->W, true);
    }
}
