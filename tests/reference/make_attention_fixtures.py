#!/usr/bin/python3
"""PyTorch reference fixtures for tapegrad's attention and topk rows.

    /usr/bin/python3 tests/reference/make_attention_fixtures.py [op ...]

Needs Debian's python3-torch (1.13: no scaled_dot_product_attention, so the
reference is the attention written out).  Writes, in make_fixtures.py's
layout (documented there) and through its writer, so tests/test_fixtures.c
reads them with every other op:

    tests/reference/ops/attention.<f64|f32>.safetensors
        in0 q [..., Tq, D], in1 k [..., Tk, D], in2 v [..., Tk, Dv], in3 the
        additive mask when there is one (no gradient); args: causal, scale
        (0: 1/sqrt(D)).  out = softmax(q k^T * scale + mask + causal) v with
        causal = -inf where key j > query i (torch.tril(ones(Tq, Tk)), top
        left aligned, also for Tq != Tk).  Masks hold -inf entries but leave
        every row a key (a row that sees none is NaN in PyTorch, 0 in
        tapegrad: tests/test_ops_attention.c checks that one).
    tests/reference/ops/attention_qkv.<f64|f32>.safetensors
        in0 qkv [..., T, 3C] (q, k, v side by side, each H heads of width
        D = C / H), in1 the mask when there is one; args: heads, causal,
        scale.  out [..., T, C]: the attention above on the heads
        [..., H, T, D] of q, k, v, the heads merged back side by side.
    tests/reference/ops/topk.<f64|f32>.safetensors
        torch.topk(x, k, axis, largest, sorted=True) values (distinct
        inputs: the order is unique); args: k, axis, largest.
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402


def attention(t, a):
    q, k, v = t[0], t[1], t[2]
    scale = a['scale'] or 1.0 / math.sqrt(q.shape[-1])
    s = torch.matmul(q, k.transpose(-2, -1)) * scale
    if len(t) > 3:
        s = s + t[3]
    if a['causal']:
        tq, tk = s.shape[-2], s.shape[-1]
        keep = torch.tril(torch.ones(tq, tk, dtype=torch.bool))
        s = s.masked_fill(~keep, float('-inf'))
    return torch.matmul(torch.softmax(s, -1), v)


def mask(rng, shape, frac=0.25):
    """normal values, -inf at about frac of the places; column 0 is kept so
    that every row of the scores sees a key"""
    m = rng.standard_normal(size=shape)
    hide = rng.uniform(size=shape) < frac
    hide[..., 0] = False
    m[hide] = -np.inf
    return m


def padding(rng, batch, tk):
    """a key-padding mask (batch, 1, 1, Tk): the last keys of each batch
    hidden, a different number each"""
    m = np.zeros((batch, 1, 1, tk))
    for b in range(batch):
        m[b, ..., tk - 1 - b % (tk - 1):] = -np.inf
    return m


@mf.op('attention')
def _attention(rng):
    # (batch dims, Tq, Tk, D, Dv, causal, mask maker or None, scale)
    specs = [
        ((2,), 3, 5, 4, 3, False, None, 0.0),
        ((2, 2), 6, 6, 8, 4, True, None, 0.0),
        ((3,), 7, 4, 5, 2, True, None, 0.0),          # Tq > Tk
        ((2,), 3, 6, 4, 5, True, None, 0.0),          # Tq < Tk
        ((2, 3), 4, 5, 3, 3, False, lambda b, q, k: mask(rng, (q, k)), 0.5),
        ((2, 2), 5, 6, 4, 2, False, lambda b, q, k: padding(rng, b[0], k), 0.0),
        ((2, 2), 5, 5, 3, 3, True, lambda b, q, k: mask(rng, (b[0], 1, q, k)), 0.0),
        ((2,), 80, 80, 16, 8, True, None, 0.0),       # query blocks of 64 and 16
        ((), 5, 7, 3, 2, False, None, 1.3),           # no batch dims
        ((1,), 70, 130, 8, 4, False, lambda b, q, k: mask(rng, (q, k), 0.5), 0.0),
    ]
    out = []
    for batch, tq, tk, d, dv, causal, make_mask, scale in specs:
        b = tuple(batch)
        inputs = [mf.uni(rng, b + (tq, d), -1.5, 1.5), mf.uni(rng, b + (tk, d), -1.5, 1.5),
                  mf.uni(rng, b + (tk, dv))]
        diff = [True, True, True]
        if make_mask:
            inputs.append(make_mask(b, tq, tk))
            diff.append(False)
        out.append(mf.Case(inputs, attention, {'causal': causal, 'scale': scale}, diff))
    return out


def attention_qkv(t, a):
    qkv, h = t[0], a['heads']
    lead, T, C = qkv.shape[:-2], qkv.shape[-2], qkv.shape[-1] // 3

    def heads(x):
        return x.reshape(lead + (T, h, C // h)).transpose(-3, -2)
    q, k, v = (heads(x) for x in qkv.split(C, -1))
    o = attention([q, k, v] + list(t[1:]), a)
    return o.transpose(-3, -2).reshape(lead + (T, C))


@mf.op('attention_qkv')
def _attention_qkv(rng):
    # (leading dims, T, heads, D, causal, mask maker or None, scale)
    specs = [
        ((2,), 5, 2, 3, False, None, 0.0),
        ((3,), 6, 4, 2, True, None, 0.0),
        ((), 7, 1, 5, True, None, 0.9),
        ((2,), 5, 2, 4, False, lambda b, h, t: mask(rng, (t, t)), 0.0),
        ((2,), 6, 2, 2, False, lambda b, h, t: padding(rng, b[0], t), 0.0),
        ((2, 2), 4, 3, 2, True, lambda b, h, t: mask(rng, (b[1], h, t, t)), 0.0),
        ((1,), 70, 2, 8, True, None, 0.0),            # query blocks of 32 and 6
    ]
    out = []
    for batch, T, h, d, causal, make_mask, scale in specs:
        b = tuple(batch)
        inputs, diff = [mf.uni(rng, b + (T, 3 * h * d), -1.5, 1.5)], [True]
        if make_mask:
            inputs.append(make_mask(b, h, T))
            diff.append(False)
        out.append(mf.Case(inputs, attention_qkv,
                           {'heads': h, 'causal': causal, 'scale': scale}, diff))
    return out


@mf.op('topk')
def _topk(rng):
    specs = [((3, 5), 1, 2, True), ((2, 4, 3), 1, 3, False), ((6,), 0, 6, True),
             ((2, 3, 4), -1, 1, True), ((5, 2), 0, 4, False), ((4, 7), -1, 0, True)]
    return [mf.Case([mf.distinct(rng, s)],
                    lambda t, a: torch.topk(t[0], a['k'], a['axis'], a['largest'], True)[0],
                    {'axis': ax, 'k': k, 'largest': lg})
            for s, ax, k, lg in specs]


def main():
    os.makedirs(mf.OUT_DIR, exist_ok=True)
    names = sys.argv[1:] or ['attention', 'attention_qkv', 'topk']
    for name in names:
        mf.write_op(name)
    print('wrote %s x 2 dtypes to %s' % (', '.join(names), mf.OUT_DIR))


if __name__ == '__main__':
    main()
