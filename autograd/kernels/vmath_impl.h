/* vmath_impl.h — the array functions of vmath.h, written once and stamped
 * out per code path and dtype (vmath_avx512.c, vmath_avx2.c, vmath.c's
 * scalar double), so every path runs the same formulas; only the vector
 * vocabulary below differs.  Include it once per (path, dtype) with:
 *
 *   VM_T  float or double         VM_V  vector type     VM_N  lanes
 *   VM_M  mask type (a compare's result)                VM_F32  1 for float
 *   VM_NAME(f)   the name of function f in this instance
 *   VM_TABLE     the name of the table it defines (ag_vmath_float/double)
 *   V_LOAD(p) V_STORE(p, v) V_SET1(c)  V_ADD V_SUB V_MUL V_DIV (a, b)
 *   V_FMA(a, b, c) = a*b + c rounded once     V_NEG(a) V_ABS(a)
 *   V_MIN(a, b), V_MAX(a, b): b when either is NaN (x86 minps/maxps), so
 *     V_MIN(c, x) keeps a NaN x
 *   V_GE(a, b), V_LT(a, b): ordered compares -> VM_M;  V_SEL(m, a, b)
 *   f32 only: V_ROUND(a) to the nearest integer;  V_LDEXP(a, k): a 2^k
 *     for an integer-valued k in [-252, 254], rounded once (subnormals too)
 *   V_EXP V_LOG V_LOG1P V_TANH V_ERF V_ERFC V_SIN V_COS (a), V_POW(a, b):
 *     libm's functions, within 1 ulp (erfc 1.5)
 *
 * Every V_ and VM_ macro is forgotten at the end, ready for the next
 * instance. */

#define VM_ONE V_SET1((VM_T)1)
#define VM_ZERO V_SET1((VM_T)0)
/* The leading part of a constant given as hi + lo doubles, in VM_T, and
 * the rest of it (hi - (VM_T)hi carries float's lost bits). */
#define VM_HI(hi) V_SET1((VM_T)(hi))
#define VM_LO(hi, lo) V_SET1((VM_T)(((hi) - (double)(VM_T)(hi)) + (lo)))

/* 1/sqrt(2), 2 sqrt(2/pi) and 2 sqrt(2/pi) 0.044715 as hi + lo
 * (autograd/kernels/vmath_fit.py prints them) */
#define VM_RSQRT2 0.7071067811865476, -4.833646656726457e-17
#define VM_S1 1.5957691216057308, -9.96930880911092e-17
#define VM_S3 0.07135481627260025, -6.175149918155315e-19
#define VM_HI_(hi, lo) VM_HI(hi)
#define VM_LO_(hi, lo) VM_LO(hi, lo)
#define VM_HIOF(c) VM_HI_(c)
#define VM_LOOF(c) VM_LO_(c)

static inline VM_V VM_NAME(k_log)(VM_V x) { return V_LOG(x); }
static inline VM_V VM_NAME(k_tanh)(VM_V x) { return V_TANH(x); }
static inline VM_V VM_NAME(k_erf)(VM_V x) { return V_ERF(x); }
static inline VM_V VM_NAME(k_sin)(VM_V x) { return V_SIN(x); }
static inline VM_V VM_NAME(k_cos)(VM_V x) { return V_COS(x); }

#if VM_F32
/* e^(a + lo) for a <= 89 and |lo| << 1 (a correction to a), inlined: the
 * call into SLEEF would spill the caller's live vectors.  k = round(a /
 * ln 2), r = a - k ln 2 (two FMAs) + lo, e^r = 1 + r + r^2 P(r) with P a
 * degree-4 fit on |r| <= ln 2 / 2 (vmath_fit.py; 1e-8), then 2^k (V_LDEXP
 * scales by two halves of k, so 2^128 overflows to inf as it should).
 * Below -150 the result is 0 in f32 anyway; the clamp keeps k in
 * V_LDEXP's range.  A NaN stays NaN through the clamps and the sums. */
static inline VM_V VM_NAME(k_expneg)(VM_V a, VM_V lo)
{
    a = V_MAX(V_SET1(-150.0f), a);
    VM_V k = V_ROUND(V_MUL(a, V_SET1(1.442695041f)));
    VM_V r = V_FMA(k, V_SET1(-0.6931471824645996f), a);
    r = V_ADD(V_FMA(k, V_SET1(1.904654299957768e-09f), r), lo);
    VM_V p = V_SET1(1.392617612e-03f);
    p = V_FMA(p, r, V_SET1(8.363173075e-03f));
    p = V_FMA(p, r, V_SET1(4.166655466e-02f));
    p = V_FMA(p, r, V_SET1(1.666657703e-01f));
    p = V_FMA(p, r, V_SET1(5.000000000e-01f));
    return V_LDEXP(V_ADD(VM_ONE, V_FMA(V_MUL(r, r), p, r)), k);
}
/* e^x: the kernel above, x clamped to 89 (past 88.73 e^x overflows to
 * inf anyway): SLEEF's expf through a call a vector ran at 0.97-1.10 ns an
 * element on Zen 3 against PyTorch's 0.81, sigmoid's inlined e^-|x| with
 * its division at 0.82 */
static inline VM_V VM_NAME(k_exp)(VM_V x)
{
    return VM_NAME(k_expneg)(V_MIN(V_SET1(89.0f), x), VM_ZERO);
}
#else
/* e^(a + lo) = e^a (1 + lo), for a <= 0 (so e^a is finite) */
static inline VM_V VM_NAME(k_expneg)(VM_V a, VM_V lo)
{
    VM_V e = V_EXP(a);
    return V_FMA(e, lo, e);
}

static inline VM_V VM_NAME(k_exp)(VM_V x) { return V_EXP(x); }
#endif

/* 1 / (1 + e^-x) = (x >= 0 ? 1 : e) / (1 + e), e = e^-|x| <= 1: no
 * overflow, and a tiny result keeps its digits */
static inline VM_V VM_NAME(k_sigmoid)(VM_V x)
{
    VM_V e = VM_NAME(k_expneg)(V_NEG(V_ABS(x)), VM_ZERO);
    return V_DIV(V_SEL(V_GE(x, VM_ZERO), VM_ONE, e), V_ADD(VM_ONE, e));
}

/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|) */
static inline VM_V VM_NAME(k_softplus)(VM_V x)
{
    return V_ADD(V_MAX(x, VM_ZERO),
                 V_LOG1P(VM_NAME(k_expneg)(V_NEG(V_ABS(x)), VM_ZERO)));
}

/* gelu_tanh = x sigmoid(v), v = 2u = x (s1 + s3 x^2), since
 * (1 + tanh u) / 2 = sigmoid(2u), which does not cancel for x << 0.  e^-|v|
 * amplifies the rounding of v by |v| (up to ~100 before it underflows),
 * so v is formed as vh + vl from exact products (FMA) and a TwoSum, and
 * e^-|v| = e^(-|vh| -+ vl).  Past |x| = 12 (f32) or 24 (f64) the sigmoid
 * is 0 or 1 to the last bit; clamping there keeps x^3 finite. */
static inline VM_V VM_NAME(k_gelu_tanh)(VM_V x)
{
    VM_V c = V_SET1(VM_F32 ? (VM_T)12 : (VM_T)24);
    VM_V xc = V_MAX(V_NEG(c), V_MIN(c, x));
    VM_V s1h = VM_HIOF(VM_S1), s3h = VM_HIOF(VM_S3);
    VM_V h = V_MUL(xc, xc), l = V_FMA(xc, xc, V_NEG(h));       /* x^2 = h + l */
    VM_V ph = V_MUL(s3h, h), pl = V_FMA(s3h, h, V_NEG(ph));    /* s3 h = ph + pl */
    VM_V wh = V_ADD(s1h, ph), bb = V_SUB(wh, s1h);              /* s1 + ph = wh + we */
    VM_V we = V_ADD(V_SUB(s1h, V_SUB(wh, bb)), V_SUB(ph, bb));
    VM_V wl = V_ADD(V_ADD(we, pl),
                    V_FMA(s3h, l, V_FMA(VM_LOOF(VM_S3), h, VM_LOOF(VM_S1))));
    VM_V vh = V_MUL(xc, wh);
    VM_V vl = V_FMA(xc, wl, V_FMA(xc, wh, V_NEG(vh)));          /* v = vh + vl */
    VM_M pos = V_GE(vh, VM_ZERO);
    VM_V e = VM_NAME(k_expneg)(V_NEG(V_ABS(vh)), V_SEL(pos, V_NEG(vl), vl));
    return V_MUL(x, V_DIV(V_SEL(pos, VM_ONE, e), V_ADD(VM_ONE, e)));
}

#if VM_F32
/* Phi(x) in f32: q = Phi(-t) = e^(-t^2/2) z Q(s), t = min(|x|, 16) (q
 * underflows there), z = 1 / (1 + t), s = a z + b mapping z onto [-1, 1]
 * (Q's coefficients stay small: no cancellation in Horner's rule), Q of
 * degree 14 (vmath_fit.py; 1.3e-8); Phi = q for x < 0, else 1 - q, which
 * never cancels (q <= 1/2).  t^2 = h + l exactly, so e^(-t^2/2) =
 * e^(-h/2 - l/2) carries no rounding of t^2 (amplified by t^2/2, 128 at
 * the end).  z = 1/(1 + t) rather than 1/(1 + t/4): z's rounding then
 * moves q by at most about its own relative size. */
static inline VM_V VM_NAME(k_ncdf)(VM_V x)
{
    static const float q[] = {
        1.545083492e-04f, -1.916253476e-04f, -4.475373510e-04f, 8.344834460e-04f,
        -2.373169469e-04f, -2.491219959e-04f, 7.373981729e-04f, -2.456805857e-03f,
        4.771853443e-03f, -4.659467692e-03f, -3.970166602e-03f, 2.923750750e-02f,
        -6.432690978e-02f, 1.636531318e-02f, 5.244378912e-01f};
    VM_V t = V_MIN(V_SET1(16.0f), V_ABS(x));
    VM_V h = V_MUL(t, t), l = V_FMA(t, t, V_NEG(h));
    VM_V e = VM_NAME(k_expneg)(V_MUL(V_SET1(-0.5f), h), V_MUL(V_SET1(-0.5f), l));
    VM_V z = V_DIV(VM_ONE, V_ADD(VM_ONE, t));
    VM_V s = V_FMA(V_SET1(2.125f), z, V_SET1(-1.125f));
    /* Q(s) by a second-order Horner scheme (two chains in s^2, joined at
     * the end): 7 dependent FMAs deep instead of 14 */
    VM_V s2 = V_MUL(s, s), ra = V_SET1(q[0]), rb = V_SET1(q[1]);
    for (int i = 2; i < 14; i += 2) {
        ra = V_FMA(ra, s2, V_SET1(q[i]));
        rb = V_FMA(rb, s2, V_SET1(q[i + 1]));
    }
    ra = V_FMA(ra, s2, V_SET1(q[14]));
    VM_V r = V_FMA(rb, s, ra);
    VM_V qt = V_MUL(e, V_MUL(r, z));
    return V_SEL(V_GE(x, VM_ZERO), V_SUB(VM_ONE, qt), qt);
}
#else
/* Phi(x) = erfc(a) / 2, a = -x / sqrt 2.  erfc(b) for b = -x * hi(1/sqrt 2)
 * alone would carry b's rounding times erfc's condition 2 b^2 (50 ulp at
 * x = -10); with a = b + l (l from FMA),
 *   erfc(a) = erfc(b) - l 2/sqrt(pi) e^(-b^2).
 * x is clamped to 40, where Phi is 0 or 1. */
static inline VM_V VM_NAME(k_ncdf)(VM_V x)
{
    VM_V c = V_SET1(40.0), xc = V_MAX(V_NEG(c), V_MIN(c, x));
    VM_V b = V_MUL(xc, V_NEG(VM_HIOF(VM_RSQRT2)));
    VM_V l = V_NEG(V_FMA(xc, VM_LOOF(VM_RSQRT2), V_FMA(xc, VM_HIOF(VM_RSQRT2), b)));
    VM_V d = V_MUL(V_MUL(l, V_SET1(1.1283791670955126)), V_EXP(V_NEG(V_MUL(b, b))));
    return V_MUL(V_SET1(0.5), V_SUB(V_ERFC(b), d));
}
#endif

static inline VM_V VM_NAME(k_gelu)(VM_V x) { return V_MUL(x, VM_NAME(k_ncdf)(x)); }

/* y = K(x) over the array; the tail runs through a zero-padded vector */
#define VM_MAP(F)                                                             \
    static void VM_NAME(F)(const VM_T *x, VM_T *y, int64_t n)                 \
    {                                                                         \
        int64_t i = 0;                                                        \
        for (; i + VM_N <= n; i += VM_N)                                      \
            V_STORE(y + i, VM_NAME(k_##F)(V_LOAD(x + i)));                    \
        if (i < n) {                                                          \
            VM_T buf[VM_N] = {0};                                             \
            memcpy(buf, x + i, (size_t)(n - i) * sizeof(VM_T));               \
            V_STORE(buf, VM_NAME(k_##F)(V_LOAD(buf)));                        \
            memcpy(y + i, buf, (size_t)(n - i) * sizeof(VM_T));               \
        }                                                                     \
    }
VM_MAP(exp)
VM_MAP(log)
VM_MAP(tanh)
VM_MAP(sigmoid)
VM_MAP(softplus)
VM_MAP(erf)
VM_MAP(ncdf)
VM_MAP(gelu)
VM_MAP(gelu_tanh)
VM_MAP(sin)
VM_MAP(cos)
#undef VM_MAP

static void VM_NAME(powc)(const VM_T *x, VM_T c, VM_T *y, int64_t n)
{
    VM_V vc = V_SET1(c);
    int64_t i = 0;
    for (; i + VM_N <= n; i += VM_N)
        V_STORE(y + i, V_POW(V_LOAD(x + i), vc));
    if (i < n) {
        VM_T buf[VM_N] = {0};
        memcpy(buf, x + i, (size_t)(n - i) * sizeof(VM_T));
        V_STORE(buf, V_POW(V_LOAD(buf), vc));
        memcpy(y + i, buf, (size_t)(n - i) * sizeof(VM_T));
    }
}

static void VM_NAME(pow)(const VM_T *x, const VM_T *e, VM_T *y, int64_t n)
{
    int64_t i = 0;
    for (; i + VM_N <= n; i += VM_N)
        V_STORE(y + i, V_POW(V_LOAD(x + i), V_LOAD(e + i)));
    if (i < n) {
        VM_T bx[VM_N] = {0}, be[VM_N] = {0};
        memcpy(bx, x + i, (size_t)(n - i) * sizeof(VM_T));
        memcpy(be, e + i, (size_t)(n - i) * sizeof(VM_T));
        V_STORE(bx, V_POW(V_LOAD(bx), V_LOAD(be)));
        memcpy(y + i, bx, (size_t)(n - i) * sizeof(VM_T));
    }
}

#if VM_F32
static const ag_vmath_float VM_TABLE = {
#else
static const ag_vmath_double VM_TABLE = {
#endif
    .exp = VM_NAME(exp), .log = VM_NAME(log), .tanh = VM_NAME(tanh),
    .sigmoid = VM_NAME(sigmoid), .softplus = VM_NAME(softplus), .erf = VM_NAME(erf),
    .ncdf = VM_NAME(ncdf), .gelu = VM_NAME(gelu), .gelu_tanh = VM_NAME(gelu_tanh),
    .sin = VM_NAME(sin), .cos = VM_NAME(cos), .powc = VM_NAME(powc), .pow = VM_NAME(pow),
};

#undef VM_ONE
#undef VM_ZERO
#undef VM_HI
#undef VM_LO
#undef VM_RSQRT2
#undef VM_S1
#undef VM_S3
#undef VM_HI_
#undef VM_LO_
#undef VM_HIOF
#undef VM_LOOF
#undef VM_T
#undef VM_V
#undef VM_N
#undef VM_M
#undef VM_F32
#undef VM_NAME
#undef VM_TABLE
#undef V_LOAD
#undef V_STORE
#undef V_SET1
#undef V_ADD
#undef V_SUB
#undef V_MUL
#undef V_DIV
#undef V_FMA
#undef V_NEG
#undef V_ABS
#undef V_MIN
#undef V_MAX
#undef V_GE
#undef V_LT
#undef V_SEL
#undef V_ROUND
#undef V_LDEXP
#undef V_EXP
#undef V_LOG
#undef V_LOG1P
#undef V_TANH
#undef V_ERF
#undef V_ERFC
#undef V_SIN
#undef V_COS
#undef V_POW
