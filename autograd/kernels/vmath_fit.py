"""vmath_fit.py — where the constants of autograd/kernels/vmath_impl.h come
from: the polynomials of the f32 kernels (Chebyshev fits, near minimax,
in exact arithmetic) and the constants carried as hi + lo doubles.  Plain
python3 with mpmath (Debian: python3-mpmath).

  Q: R(t) = Phi(-t) e^(t^2/2) on t in [0, 16], as z Q(s): z = 1 / (1 + t),
     s = a z + b mapping z's range [1/17, 1] onto [-1, 1] (so the
     coefficients stay small: no cancellation in Horner's rule), degree 14;
  P: e^r = 1 + r + r^2 P(r) on |r| <= ln 2 / 2, degree 4.
Prints the C literals, and each fit's largest relative error on a fine grid.
"""
import struct

import mpmath as mp

mp.mp.dps = 50


def fit(f, lo, hi, deg, rel):
    c = mp.chebyfit(f, [lo, hi], deg + 1)
    xs = [lo + (hi - lo) * i / 4000 for i in range(4001)]
    return c, max(abs(rel(x, mp.polyval(c, x)) - 1) for x in xs)


def split(v):
    hi = float(v)
    return '%r, %r' % (hi, float(v - mp.mpf(hi)))


def f32(v):
    return struct.unpack('f', struct.pack('f', float(v)))[0]


def main():
    R = lambda t: mp.ncdf(-t) * mp.exp(t * t / 2)
    z0, z1 = 1 / mp.mpf(17), mp.mpf(1)
    a, b = 2 / (z1 - z0), -(z1 + z0) / (z1 - z0)
    zof = lambda s: (s - b) / a
    fq = lambda s: R(1 / zof(s) - 1) / zof(s)
    q, eq = fit(fq, mp.mpf(-1), mp.mpf(1), 14, lambda s, v: v / fq(s))
    h = mp.log(2) / 2
    fp = lambda r: (mp.exp(r) - 1 - r) / r ** 2 if r != 0 else mp.mpf(1) / 2
    p, ep = fit(fp, -h, h, 4, lambda r, v: (1 + r + r * r * v) / mp.exp(r))
    lit = lambda cs: ', '.join('%.9ef' % float(c) for c in cs)
    print('s = a z + b: a = %r, b = %r' % (float(a), float(b)))
    print('Q (max rel err %.2g): %s' % (eq, lit(q)))
    print('P (max rel err %.2g): %s' % (ep, lit(p)))
    ln2 = mp.log(2)
    print('ln 2 = %r + %r (f32 hi)' % (f32(ln2), float(ln2 - mp.mpf(f32(ln2)))))
    print('1/sqrt 2:             ', split(1 / mp.sqrt(2)))
    s1 = 2 * mp.sqrt(2 / mp.pi)
    print('2 sqrt(2/pi):         ', split(s1))
    print('2 sqrt(2/pi) 0.044715:', split(s1 * mp.mpf('0.044715')))


if __name__ == '__main__':
    main()
