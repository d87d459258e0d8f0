/* conv_direct_impl.h — the loops of conv_direct.c (which see), stamped
 * out per ISA: included with D(name), DVL (floats a vector), DOB (output
 * channels a pass), DATTR (the target attribute) and DFMA(a, b, c) (a b +
 * c, fused where the ISA has it: c_std=c11 turns GCC's contraction off)
 * defined, which it undefines at its end.  Widths and
 * blocks are the ISA's because the register file is: the 32 zmm registers
 * of AVX-512 hold the 18 accumulators of two channels' weight gradient,
 * AVX2's 16 ymm registers only one channel's 9, and at AVX-512's width
 * on AVX2 every vector took two registers and the sums spilled (the
 * weight gradient was 14% of a one-thread CNN step on Zen 3). */

typedef float D(vf) __attribute__((vector_size(DVL * sizeof(float))));
typedef int32_t D(vi) __attribute__((vector_size(DVL * sizeof(int32_t))));

AG_INLINE D(vf) D(load)(const float *p)
{
    D(vf) v;
    memcpy(&v, p, sizeof v);
    return v;
}

AG_INLINE void D(store)(float *p, D(vf) v)
{
    memcpy(p, &v, sizeof v);
}

/* s in every lane (s - 0 is s, -0 included, so this folds to a broadcast) */
AG_INLINE D(vf) D(splat)(float s)
{
    return s - (D(vf)){0};
}

/* First column of vector v of a row (the last one pulled back to end at
 * Wo), and how many vectors a row has. */
AG_INLINE int64_t D(col_of)(const ag_conv_geom *g, int64_t v)
{
    int64_t c = v * DVL;
    return c + DVL <= g->Wo ? c : g->Wo - DVL;
}

AG_INLINE int64_t D(row_vectors)(const ag_conv_geom *g)
{
    return (g->Wo + DVL - 1) / DVL;
}

/* Output channels o0 .. o0 + nb - 1 (nb <= DOB) of sample x: each vector
 * of x's 9 taps loaded once for all of them, each channel's sum in the
 * same order as alone (bias, then taps 0..8). */
DATTR AG_INLINE void D(forward_block)(const fwd_run *r, const float *x, float *y, int64_t o0, int nb)
{
    const ag_conv_geom *g = r->g;
    D(vf) wv[DOB][T], bias[DOB];
    for (int k = 0; k < nb; k++) {
        bias[k] = D(splat)(r->b ? r->b[o0 + k] : 0.0f);
        for (int t = 0; t < T; t++)
            wv[k][t] = D(splat)(r->w[(o0 + k) * T + t]);
    }
    int64_t P = g->Ho * g->Wo, nv = D(row_vectors)(g);
    for (int64_t oh = 0; oh < g->Ho; oh++)
        for (int64_t v = 0; v < nv; v++) {
            int64_t c = D(col_of)(g, v);
            const float *xs = x + oh * g->W + c;
            D(vf) xv[T], acc[DOB];
            for (int t = 0; t < T; t++)
                xv[t] = D(load)(xs + t / 3 * g->W + t % 3);
            for (int k = 0; k < nb; k++) {
                acc[k] = bias[k];
                for (int t = 0; t < T; t++)
                    acc[k] = DFMA(wv[k][t], xv[t], acc[k]);
                D(store)(y + (o0 + k) * P + oh * g->Wo + c, acc[k]);
            }
        }
}

/* y[n] = w * x[n] + b, DOB channels at a time: their weights in
 * registers, x[n] in L1 (on AVX-512 one channel at a time took ~23
 * cycles an output vector, before the FMAs: 9 loads, 9 multiplies, 9
 * adds and the addressing). */
DATTR static void D(forward_sample)(void *vr, int64_t n, int64_t chunk)
{
    (void)chunk;
    const fwd_run *r = vr;
    const ag_conv_geom *g = r->g;
    const float *x = r->x + n * g->H * g->W;
    float *y = r->y + n * g->O * g->Ho * g->Wo;
    int64_t o = 0;
    for (; o + DOB <= g->O; o += DOB)
        D(forward_block)(r, x, y, o, DOB);
    for (; o < g->O; o++)
        D(forward_block)(r, x, y, o, 1);
}

/* Lanes of vector v that no earlier vector of the row covered. */
AG_INLINE D(vi) D(fresh_lanes)(const ag_conv_geom *g, int64_t v)
{
    int64_t skip = v * DVL - D(col_of)(g, v);
    D(vi) m;
    for (int l = 0; l < DVL; l++)
        m[l] = l < skip ? 0 : -1;
    return m;
}

/* dw[o0 + k, t] (+)= sum over n, oh, ow of dy[n, o0 + k, oh, ow]
 * x[n, oh + i, ow + j] for k < nb, and db[o0 + k] += the sum of dy over
 * the same (when db; the pass over dy it would take alone cost 2.2% of a
 * CNN training step): per lane sums over each sample's rows, added up
 * over the samples in order, then the lanes in order, so each element is
 * one fixed sequence of operations whatever the thread count. */
DATTR AG_INLINE void D(dw_block)(const dw_run *r, int64_t o0, int nb)
{
    const ag_conv_geom *g = r->g;
    int64_t P = g->Ho * g->Wo, nv = D(row_vectors)(g);
    D(vi) tail = D(fresh_lanes)(g, nv - 1);
    D(vf) tot[DOB][T] = {{{0}}}, btot[DOB] = {{0}};
    for (int64_t n = 0; n < g->N; n++) {
        /* a sample's own sums first: rounding grows with the terms a
         * lane adds in one run */
        D(vf) acc[DOB][T] = {{{0}}}, bacc[DOB] = {{0}};
        for (int64_t oh = 0; oh < g->Ho; oh++)
            for (int64_t v = 0; v < nv; v++) {
                int64_t c = D(col_of)(g, v);
                D(vi) keep = v + 1 < nv ? (D(vi)){0} - 1 : tail;
                const float *xs = r->x + n * g->H * g->W + oh * g->W + c;
                D(vf) d[DOB];
                for (int k = 0; k < nb; k++) {
                    const float *dyk = r->dy + (n * g->O + o0 + k) * P + oh * g->Wo + c;
                    if (n + 1 < g->N) /* the next sample's plane: a jump the
                                       * prefetcher misses */
                        __builtin_prefetch(dyk + g->O * P);
                    d[k] = (D(vf))((D(vi))D(load)(dyk) & keep);
                    bacc[k] += d[k];
                }
                for (int t = 0; t < T; t++) {
                    D(vf) xv = D(load)(xs + t / 3 * g->W + t % 3);
                    for (int k = 0; k < nb; k++)
                        acc[k][t] = DFMA(d[k], xv, acc[k][t]);
                }
            }
        for (int k = 0; k < nb; k++) {
            for (int t = 0; t < T; t++)
                tot[k][t] += acc[k][t];
            btot[k] += bacc[k];
        }
    }
    for (int k = 0; k < nb; k++)
        for (int t = 0; t < T; t++) {
            float s = 0;
            for (int l = 0; l < DVL; l++)
                s += tot[k][t][l];
            float *d = r->dw + (o0 + k) * T + t;
            *d = r->acc ? *d + s : s;
        }
    for (int k = 0; k < nb && r->db; k++) {
        float s = 0;
        for (int l = 0; l < DVL; l++)
            s += btot[k][l];
        r->db[o0 + k] += s;
    }
}

/* Block blk: channels blk DOB .. (blk + 1) DOB - 1, the last block
 * possibly short. */
DATTR static void D(weight_grad_block)(void *vr, int64_t blk, int64_t chunk)
{
    (void)chunk;
    const dw_run *r = vr;
    int64_t o0 = blk * DOB;
    if (o0 + DOB <= r->g->O)
        D(dw_block)(r, o0, DOB);
    else
        for (int64_t o = o0; o < r->g->O; o++)
            D(dw_block)(r, o, 1);
}

#undef D
#undef DVL
#undef DOB
#undef DATTR
#undef DFMA
