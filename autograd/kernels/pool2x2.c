/* pool2x2.c — max pooling over 2x2 windows at stride 2 (a CNN's pooling)
 * as vectors: the row kernel of ops_pool.c's max_pool2d for windows that
 * lie inside the input (conv_internal.h).
 *
 * A vector of VL outputs loads 2 VL columns of each of the two rows and
 * splits them into the windows' left and right columns; the four taps are
 * then compared lane by lane in tap order (0: top left, 1: top right,
 * 2: bottom left, 3: bottom right), a tap taking over when it is larger or
 * NaN, as the scalar loop and PyTorch do.  A row of n outputs is covered
 * by vectors at 0, VL, ... and one ending at n that may overlap the one
 * before it (its outputs are the same values, written twice), so nothing
 * past the row is read or written; rows of fewer than VL outputs take
 * half-width vectors, and rows of fewer than 4 the scalar loop.  The
 * scalar loop this replaces ran its 2x2 case mostly in the vector loop's
 * scalar epilogue (rows of 13 and 5 outputs in the CNN): 7.4% of a CNN
 * training step (perf, bench_cnn). */
#include "conv_internal.h"

#include "autograd_internal.h"

#include <string.h>

/* The vector helpers are always inlined, so the ABI GCC warns about
 * (vectors passed in registers the default target lacks) never applies. */
#pragma GCC diagnostic ignored "-Wpsabi"

/* VL outputs of type T (integer lanes I of T's width) from columns j:
 * the kernel body, stamped per type and width below. */
#define MAX2X2_CHUNK(NAME, T, I, VL, EVEN, ODD, IOTA)                         \
    typedef T NAME##_v __attribute__((vector_size(VL * sizeof(T))));          \
    typedef I NAME##_m __attribute__((vector_size(VL * sizeof(T))));          \
    typedef int64_t NAME##_l __attribute__((vector_size(VL * sizeof(int64_t)))); \
    AG_INLINE void NAME(const T *r0, const T *r1, T *y, int64_t *idx, int64_t j, \
                        int64_t base, int64_t W)                              \
    {                                                                         \
        NAME##_v a, b, tap[4];                                                \
        const NAME##_m even = EVEN, odd = ODD;                                \
        memcpy(&a, r0 + 2 * j, sizeof a);                                     \
        memcpy(&b, r0 + 2 * j + VL, sizeof b);                                \
        tap[0] = __builtin_shuffle(a, b, even);                               \
        tap[1] = __builtin_shuffle(a, b, odd);                                \
        memcpy(&a, r1 + 2 * j, sizeof a);                                     \
        memcpy(&b, r1 + 2 * j + VL, sizeof b);                                \
        tap[2] = __builtin_shuffle(a, b, even);                               \
        tap[3] = __builtin_shuffle(a, b, odd);                                \
        NAME##_v best = tap[0];                                               \
        NAME##_m at = {0};                                                    \
        for (int k = 1; k < 4; k++) {                                         \
            NAME##_m take = (tap[k] > best) | (tap[k] != tap[k]);             \
            best = (NAME##_v)(((NAME##_m)tap[k] & take) | ((NAME##_m)best & ~take)); \
            at = (at & ~take) | (((NAME##_m){0} + k) & take);                 \
        }                                                                     \
        memcpy(y + j, &best, sizeof best);                                    \
        NAME##_l col = (NAME##_l)IOTA * 2 + (base + 2 * j);                   \
        NAME##_l t = __builtin_convertvector(at, NAME##_l);                   \
        NAME##_l off = col + (t & 1) + (-(t >> 1) & W); /* no 64-bit multiply */ \
        memcpy(idx + j, &off, sizeof off);                                    \
    }

/* The gradient of VL outputs from j, g[j + l] for lanes l >= skip, into
 * the rows d0, d1: each lane's g to the tap idx names, 0 to the others,
 * then the taps interleaved back into 2 VL columns of each row, added to
 * them, or stored over them when !add (then every lane is stored: the
 * lanes below skip hold the values the vector before stored there).
 * The tap is found from idx's offset in its window, narrowed to I once:
 * four 64-bit compares and narrowings were most of the kernel on AVX2. */
#define BACK2X2_CHUNK(NAME, T, I, VL, LO, HI, IOTA)                           \
    AG_INLINE void NAME##_back(const T *g, const int64_t *idx, T *d0, T *d1, int64_t j, \
                               int64_t base, int64_t W, int skip, bool add)   \
    {                                                                         \
        NAME##_v gv, e[4];                                                    \
        NAME##_l iv;                                                          \
        memcpy(&gv, g + j, sizeof gv);                                        \
        memcpy(&iv, idx + j, sizeof iv);                                      \
        const NAME##_m lo = LO, hi = HI, lane = IOTA;                         \
        if (add)                                                              \
            gv = (NAME##_v)((NAME##_m)gv & (lane >= (NAME##_m){0} + skip));   \
        NAME##_l col = (NAME##_l)IOTA * 2 + (base + 2 * j);                   \
        NAME##_m off = __builtin_convertvector(iv - col, NAME##_m);           \
        const I tap[4] = {0, 1, (I)W, (I)W + 1};                              \
        for (int k = 0; k < 4; k++)                                           \
            e[k] = (NAME##_v)((NAME##_m)gv & (off == tap[k]));                \
        T *rows[2] = {d0 + 2 * j, d1 + 2 * j};                                \
        for (int r = 0; r < 2; r++) {                                         \
            NAME##_v a = __builtin_shuffle(e[2 * r], e[2 * r + 1], lo);       \
            NAME##_v b = __builtin_shuffle(e[2 * r], e[2 * r + 1], hi);       \
            if (add) {                                                        \
                NAME##_v a0, b0;                                              \
                memcpy(&a0, rows[r], sizeof a0);                              \
                memcpy(&b0, rows[r] + VL, sizeof b0);                         \
                a += a0;                                                      \
                b += b0;                                                      \
            }                                                                 \
            memcpy(rows[r], &a, sizeof a);                                    \
            memcpy(rows[r] + VL, &b, sizeof b);                               \
        }                                                                     \
    }

#define E8 {0, 2, 4, 6, 8, 10, 12, 14}
#define O8 {1, 3, 5, 7, 9, 11, 13, 15}
#define I8 {0, 1, 2, 3, 4, 5, 6, 7}
#define E4 {0, 2, 4, 6}
#define O4 {1, 3, 5, 7}
#define I4 {0, 1, 2, 3}
#define L8 {0, 8, 1, 9, 2, 10, 3, 11}
#define H8 {4, 12, 5, 13, 6, 14, 7, 15}
#define L4 {0, 4, 1, 5}
#define H4 {2, 6, 3, 7}
MAX2X2_CHUNK(f32_8, float, int32_t, 8, E8, O8, I8)
MAX2X2_CHUNK(f32_4, float, int32_t, 4, E4, O4, I4)
MAX2X2_CHUNK(f64_8, double, int64_t, 8, E8, O8, I8)
MAX2X2_CHUNK(f64_4, double, int64_t, 4, E4, O4, I4)
BACK2X2_CHUNK(f32_8, float, int32_t, 8, L8, H8, I8)
BACK2X2_CHUNK(f32_4, float, int32_t, 4, L4, H4, I4)
BACK2X2_CHUNK(f64_8, double, int64_t, 8, L8, H8, I8)
BACK2X2_CHUNK(f64_4, double, int64_t, 4, L4, H4, I4)

/* The scalar loop, for rows of fewer than 4 outputs. */
#define MAX2X2_SCALAR(NAME, T)                                                \
    AG_INLINE void NAME(const T *r0, const T *r1, T *y, int64_t *idx, int64_t n, \
                        int64_t base, int64_t W)                              \
    {                                                                         \
        for (int64_t j = 0; j < n; j++) {                                     \
            T v[4] = {r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]};    \
            T best = v[0];                                                    \
            int64_t at = 0;                                                   \
            for (int k = 1; k < 4; k++)                                       \
                if (v[k] > best || v[k] != v[k]) {                            \
                    best = v[k];                                              \
                    at = k;                                                   \
                }                                                             \
            y[j] = best;                                                      \
            idx[j] = base + 2 * j + at % 2 + at / 2 * W;                      \
        }                                                                     \
    }
MAX2X2_SCALAR(f32_1, float)
MAX2X2_SCALAR(f64_1, double)

#define BACK2X2_SCALAR(NAME, T)                                               \
    AG_INLINE void NAME##_back(const T *g, const int64_t *idx, T *d0, int64_t n, \
                               int64_t base, int64_t W, bool add)             \
    {                                                                         \
        if (!add)                                                             \
            for (int64_t j = 0; j < 2 * n; j++)                               \
                d0[j] = d0[W + j] = 0;                                        \
        for (int64_t j = 0; j < n; j++)                                       \
            d0[idx[j] - base] += g[j];                                        \
    }
BACK2X2_SCALAR(f32_1, float)
BACK2X2_SCALAR(f64_1, double)

/* The vectors that cover a row of n >= 4 outputs, one at a time: vl of
 * them (8, or 4 for a row of fewer than 8) from *at, the last vector
 * ending at n, of which *skip the vector before covered; false past the
 * last. */
typedef struct {
    int64_t n, next;
    int vl;
} row_cover;

AG_INLINE bool cover_next(row_cover *c, int64_t *at, int *skip)
{
    if (c->next >= c->n)
        return false;
    *at = c->next + c->vl <= c->n ? c->next : c->n - c->vl;
    *skip = (int)(c->next - *at);
    c->next = *at + c->vl;
    return true;
}

/* A row of n outputs: by vectors, the last one's outputs written twice
 * with the same values where it overlaps. */
#define MAX2X2_ROW(NAME, T, P)                                                \
    __attribute__((target_clones("avx512f", "avx2", "default")))            \
    void NAME(const T *r0, const T *r1, T *y, int64_t *idx, int64_t n, int64_t base, \
              int64_t W)                                                      \
    {                                                                         \
        row_cover c = {n, n < 4 ? n : 0, n < 8 ? 4 : 8};                      \
        int64_t at;                                                           \
        int skip;                                                             \
        (void)skip;                                                           \
        if (n < 4)                                                            \
            P##_1(r0, r1, y, idx, n, base, W);                                \
        while (cover_next(&c, &at, &skip)) {                                  \
            if (c.vl == 8)                                                    \
                P##_8(r0, r1, y, idx, at, base, W);                           \
            else                                                              \
                P##_4(r0, r1, y, idx, at, base, W);                           \
        }                                                                     \
    }
MAX2X2_ROW(ag_max2x2_row_f32, float, f32)
MAX2X2_ROW(ag_max2x2_row_f64, double, f64)

/* Its gradient by the same vectors, each skipping the lanes the one
 * before it added (or storing them again). */
#define BACK2X2_ROW(NAME, T, P)                                               \
    __attribute__((target_clones("avx512f", "avx2", "default")))            \
    void NAME(const T *g, const int64_t *idx, T *d0, int64_t n, int64_t base, int64_t W, \
              bool add)                                                       \
    {                                                                         \
        row_cover c = {n, n < 4 ? n : 0, n < 8 ? 4 : 8};                      \
        int64_t at;                                                           \
        int skip;                                                             \
        if (n < 4)                                                            \
            P##_1_back(g, idx, d0, n, base, W, add);                          \
        while (cover_next(&c, &at, &skip)) {                                  \
            if (c.vl == 8)                                                    \
                P##_8_back(g, idx, d0, d0 + W, at, base, W, skip, add);       \
            else                                                              \
                P##_4_back(g, idx, d0, d0 + W, at, base, W, skip, add);       \
        }                                                                     \
    }
BACK2X2_ROW(ag_max2x2_back_row_f32, float, f32)
BACK2X2_ROW(ag_max2x2_back_row_f64, double, f64)
