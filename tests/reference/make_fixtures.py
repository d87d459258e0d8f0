#!/usr/bin/python3
"""PyTorch reference fixtures for every op of tapegrad's op table.

    /usr/bin/python3 tests/reference/make_fixtures.py [op ...]

Needs Debian's python3-torch (and numpy); CI does not run it: the files it
writes under tests/reference/ops/ are committed and read by
tests/test_fixtures.c.  One file per op and dtype, <op>.<f64|f32>.safetensors:

    caseK.in<i>    input i (the file's dtype)
    caseK.index    index tensor (gather), float64
    caseK.out      torch's output
    caseK.seed     random output gradient (absent when no gradient flows)
    caseK.grad<i>  d(sum(out * seed)) / d in<i>, for each differentiable input
    __metadata__   op, dtype, cases, generator, and caseK.args: a JSON object
                   of the op's arguments ("axis": "all" is AG_ALL,
                   "ignore": null is AG_CE_NO_IGNORE, "inf"/"-inf" strings
                   for infinite clamp bounds)

Inputs are drawn in float64 from a generator seeded by the op name and case
number, then rounded to float32 for the f32 file, so both files hold the same
cases.  Ranges keep clear of kinks (relu/abs at 0, clamp bounds, max ties)
and domain edges (log, sqrt, pow, div).  Names follow the op table
(autograd/ops_list.h); argument conventions follow autograd.h (ag_pad lists
dim 0 first, F.pad the last dim first: converted here).
"""
import json
import os
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ops')
OPS = {}


def op(name):
    def deco(fn):
        OPS[name] = fn
        return fn
    return deco


class Case:
    """inputs: float64 arrays; diff: which get gradients; fn(tensors, args)."""

    def __init__(self, inputs, fn, args=None, diff=None, index=None):
        self.inputs = inputs
        self.fn = fn
        self.args = args or {}
        self.diff = diff if diff is not None else [True] * len(inputs)
        self.index = index


def uni(rng, shape, lo=-2.0, hi=2.0):
    return rng.uniform(lo, hi, size=shape)


def signed(rng, shape, lo=0.1, hi=2.0):
    """magnitudes in [lo, hi] with random signs: clear of 0"""
    return rng.uniform(lo, hi, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def distinct(rng, shape, gap=0.05):
    """distinct values (no ties for max/min), spaced at least gap apart"""
    n = int(np.prod(shape, dtype=np.int64))
    v = (rng.permutation(n) - n / 2) * 0.1 + rng.uniform(0, gap, size=n)
    return v.reshape(shape)


def all_dims(x):
    return tuple(range(x.dim()))


def reduce_axis(x, args, fn):
    """fn(x, dims, keepdim) with AG_ALL meaning every dim"""
    axis = args['axis']
    dims = all_dims(x) if axis == 'all' else axis
    if axis == 'all' and x.dim() == 0:
        return fn(x.reshape(1), 0, False).reshape(())
    return fn(x, dims, args['keepdim'])


# ---- binary (broadcasting) ----------------------------------------------

BIN_SHAPES = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 3, 1), (2, 1, 4)),
              ((), (2, 3)), ((3, 1, 2), (4, 1)), ((5,), ())]


def binary(name, fn, gen_a, gen_b):
    def cases(rng):
        return [Case([gen_a(rng, sa), gen_b(rng, sb)], lambda t, a: fn(t[0], t[1]))
                for sa, sb in BIN_SHAPES]
    OPS[name] = cases


binary('add', torch.add, uni, uni)
binary('sub', torch.sub, uni, uni)
binary('mul', torch.mul, uni, uni)
binary('div', torch.div, uni, lambda r, s: signed(r, s, 0.5, 2.0))
binary('pow', torch.pow, lambda r, s: uni(r, s, 0.5, 2.0), uni)
binary('maximum', torch.maximum, uni, uni)
binary('minimum', torch.minimum, uni, uni)

# ---- unary ----------------------------------------------------------------

UN_SHAPES = [(2, 3, 4), (), (7,), (3, 1, 2)]


def unary(name, fn, gen, const=None):
    def cases(rng):
        out = []
        for s in UN_SHAPES:
            args = {} if const is None else {'c': const}
            out.append(Case([gen(rng, s)], lambda t, a: fn(t[0], a), args))
        return out
    OPS[name] = cases


pos = (lambda r, s: uni(r, s, 0.3, 2.5))
unary('neg', lambda x, a: -x, uni)
unary('exp', lambda x, a: torch.exp(x), uni)
unary('log', lambda x, a: torch.log(x), pos)
unary('sqrt', lambda x, a: torch.sqrt(x), pos)
unary('abs', lambda x, a: torch.abs(x), signed)
unary('sin', lambda x, a: torch.sin(x), lambda r, s: uni(r, s, -3, 3))
unary('cos', lambda x, a: torch.cos(x), lambda r, s: uni(r, s, -3, 3))
unary('tanh', lambda x, a: torch.tanh(x), uni)
unary('sigmoid', lambda x, a: torch.sigmoid(x), lambda r, s: uni(r, s, -4, 4))
unary('relu', lambda x, a: F.relu(x), signed)
unary('leaky_relu', lambda x, a: F.leaky_relu(x, a['c']), signed, 0.05)
unary('gelu', lambda x, a: F.gelu(x), lambda r, s: uni(r, s, -3, 3))
unary('gelu_tanh', lambda x, a: F.gelu(x, approximate='tanh'), lambda r, s: uni(r, s, -3, 3))
unary('softplus', lambda x, a: F.softplus(x), lambda r, s: uni(r, s, -4, 4))
unary('erf', lambda x, a: torch.erf(x), lambda r, s: uni(r, s, -2.5, 2.5))
unary('add_scalar', lambda x, a: x + a['c'], uni, 1.25)
unary('mul_scalar', lambda x, a: x * a['c'], uni, -0.75)
unary('pow_scalar', lambda x, a: torch.pow(x, a['c']), pos, 2.5)

# ---- reductions -------------------------------------------------------------

RED_CASES = [((3, 4), 0, False), ((3, 4), 1, True), ((2, 3, 4), -1, False),
             ((2, 3, 4), 1, True), ((2, 1, 3), 'all', False), ((2, 3), 'all', True),
             ((5,), 0, False)]


def reduction(name, fn, gen=uni, extra=None):
    def cases(rng):
        out = []
        for s, axis, keep in RED_CASES:
            args = {'axis': axis, 'keepdim': keep}
            if extra:
                args.update(extra)
            out.append(Case([gen(rng, s)], lambda t, a: reduce_axis(t[0], a, fn(a)), args))
        return out
    OPS[name] = cases


reduction('sum', lambda a: lambda x, d, k: torch.sum(x, d, keepdim=k))
reduction('mean', lambda a: lambda x, d, k: torch.mean(x, d, keepdim=k))
reduction('max', lambda a: lambda x, d, k: torch.amax(x, d, keepdim=k), distinct)
reduction('min', lambda a: lambda x, d, k: torch.amin(x, d, keepdim=k), distinct)
reduction('logsumexp', lambda a: lambda x, d, k: torch.logsumexp(x, d, keepdim=k))


@op('variance')
def _variance(rng):
    out = []
    for (s, axis, keep), corr in zip(RED_CASES, [1, 0, 1, 2, 1, 0, 1]):
        args = {'axis': axis, 'keepdim': keep, 'correction': corr}
        out.append(Case([uni(rng, s)], lambda t, a: reduce_axis(
            t[0], a, lambda x, d, k: torch.var(x, d, correction=a['correction'], keepdim=k)),
            args))
    return out


def _argmax(x, a):
    if a['axis'] == 'all':
        r = torch.argmax(x)
        return r.reshape([1] * x.dim()) if a['keepdim'] else r
    return torch.argmax(x, a['axis'], keepdim=a['keepdim'])


@op('argmax')
def _argmax_cases(rng):
    return [Case([distinct(rng, s)], lambda t, a: _argmax(t[0], a).to(t[0].dtype),
                 {'axis': axis, 'keepdim': keep}, diff=[False])
            for s, axis, keep in RED_CASES]

# ---- linear algebra ---------------------------------------------------------


@op('matmul')
def _matmul(rng):
    shapes = [((4,), (4,)), ((3, 4), (4,)), ((4,), (4, 5)), ((3, 4), (4, 5)),
              ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 2)),
              ((1, 1), (1, 6))]
    return [Case([uni(rng, sa), uni(rng, sb)], lambda t, a: torch.matmul(t[0], t[1]))
            for sa, sb in shapes]


@op('linear')
def _linear(rng):
    shapes = [((3, 4), True), ((4,), False), ((2, 3, 4), True)]
    out = []
    for sx, bias in shapes:
        ins = [uni(rng, sx), uni(rng, (5, 4))] + ([uni(rng, (5,))] if bias else [])
        out.append(Case(ins, lambda t, a: torch.nn.functional.linear(
            t[0], t[1], t[2] if len(t) > 2 else None)))
    return out

# ---- shape ------------------------------------------------------------------


@op('reshape')
def _reshape(rng):
    cases = [((2, 3, 4), [6, 4]), ((2, 3, 4), [4, -1]), ((6,), [1, 2, 1, 3]),
             ((2, 3), [6]), ((1,), [])]
    return [Case([uni(rng, s)], lambda t, a: t[0].reshape(a['shape']), {'shape': sh})
            for s, sh in cases]


@op('squeeze')
def _squeeze(rng):
    cases = [((2, 1, 3), 1), ((2, 1, 3), -2), ((1, 3, 1), 'all'), ((1, 1), 'all'),
             ((4, 1), -1)]

    def f(t, a):
        return t[0].squeeze() if a['axis'] == 'all' else t[0].squeeze(a['axis'])
    return [Case([uni(rng, s)], f, {'axis': ax}) for s, ax in cases]


@op('unsqueeze')
def _unsqueeze(rng):
    cases = [((2, 3), 0), ((2, 3), 2), ((2, 3), -1), ((2, 3), -3), ((), 0)]
    return [Case([uni(rng, s)], lambda t, a: t[0].unsqueeze(a['axis']), {'axis': ax})
            for s, ax in cases]


@op('transpose')
def _transpose(rng):
    cases = [((3, 4), 0, 1), ((2, 3, 4), 0, 2), ((2, 3, 4), -1, -2), ((2, 3, 4, 2), 1, 3),
             ((3, 4), 1, 1)]
    return [Case([uni(rng, s)], lambda t, a: t[0].transpose(a['d0'], a['d1']),
                 {'d0': d0, 'd1': d1}) for s, d0, d1 in cases]


@op('permute')
def _permute(rng):
    cases = [((2, 3, 4), [2, 0, 1]), ((2, 3, 4), [1, 0, 2]), ((2, 3, 4, 5), [3, 1, 0, 2]),
             ((3, 4), [1, 0])]
    return [Case([uni(rng, s)], lambda t, a: t[0].permute(*a['perm']).contiguous(),
                 {'perm': p}) for s, p in cases]


@op('expand')
def _expand(rng):
    cases = [((3, 1), [3, 4]), ((4,), [2, 3, 4]), ((1, 3, 1), [2, 3, 5]), ((), [2, 2]),
             ((2, 3), [2, 3])]
    return [Case([uni(rng, s)], lambda t, a: torch.broadcast_to(t[0], a['shape']),
                 {'shape': sh}) for s, sh in cases]


@op('sum_to')
def _sum_to(rng):
    cases = [((2, 3, 4), [3, 1]), ((2, 3, 4), []), ((2, 3, 4), [1, 4]),
             ((2, 1, 3), [1, 1, 3])]

    def f(t, a):
        return t[0].sum_to_size(a['shape']) if a['shape'] else t[0].sum()
    return [Case([uni(rng, s)], f, {'shape': sh}) for s, sh in cases]


@op('slice')
def _slice(rng):
    cases = [((6, 3), 0, 1, 5, 1), ((6, 3), 0, 0, 6, 2), ((2, 7), 1, -5, -1, 2),
             ((2, 3, 8), -1, 1, 8, 3), ((4,), 0, 2, 2, 1)]

    def f(t, a):
        x = t[0]
        ax = a['axis'] % x.dim()
        n = x.shape[ax]
        start, stop = a['start'], a['stop']
        start, stop = start + n if start < 0 else start, stop + n if stop < 0 else stop
        idx = [slice(None)] * x.dim()
        idx[ax] = slice(start, stop, a['step'])
        return x[tuple(idx)]
    return [Case([uni(rng, s)], f, {'axis': ax, 'start': b, 'stop': e, 'step': st_})
            for s, ax, b, e, st_ in cases]


@op('unslice')
def _unslice(rng):
    # torch's slice_backward: the input at start, start + step, ... of zeros
    cases = [((3, 2), 0, 5, 1, 1), ((4, 3), -1, 7, 0, 3), ((2, 2, 3), 1, 6, -5, 2),
             ((1,), 0, 4, 3, 5), ((2, 3), 1, 3, 0, 1)]

    def f(t, a):
        x = t[0]
        ax = a['axis'] % x.dim()
        shape = list(x.shape)
        shape[ax] = a['size']
        start = a['start'] + a['size'] if a['start'] < 0 else a['start']
        stop = start + (x.shape[ax] - 1) * a['step'] + 1
        return torch.slice_scatter(x.new_zeros(shape), x, ax, start, stop, a['step'])
    return [Case([uni(rng, s)], f, {'axis': ax, 'size': n, 'start': b, 'step': st_})
            for s, ax, n, b, st_ in cases]


@op('pad')
def _pad(rng):
    cases = [((2, 3), [1, 0, 2, 1], 0.0), ((2, 3, 4), [0, 0, 1, 1, 0, 2], 1.5),
             ((3,), [2, 3], -0.5), ((2, 2), [0, 0, 0, 0], 0.0)]

    def f(t, a):
        p = a['pad']
        tp = []
        for i in reversed(range(len(p) // 2)):  # F.pad: last dim first
            tp += [p[2 * i], p[2 * i + 1]]
        return F.pad(t[0], tp, mode='constant', value=a['value'])
    return [Case([uni(rng, s)], f, {'pad': p, 'value': v}) for s, p, v in cases]


@op('concat')
def _concat(rng):
    cases = [([(2, 3), (4, 3)], 0), ([(2, 3), (2, 1), (2, 4)], 1), ([(2, 3, 2)] * 2, -1),
             ([(5,)], 0), ([(1, 2, 3), (2, 2, 3), (3, 2, 3)], 0)]
    return [Case([uni(rng, s) for s in shapes], lambda t, a: torch.cat(t, a['axis']),
                 {'axis': ax, 'n': len(shapes)}) for shapes, ax in cases]


@op('stack')
def _stack(rng):
    cases = [((2, 3), 2, 0), ((2, 3), 3, 1), ((2, 3), 2, -1), ((4,), 1, 0), ((), 3, 0)]
    return [Case([uni(rng, s) for _ in range(n)], lambda t, a: torch.stack(t, a['axis']),
                 {'axis': ax, 'n': n}) for s, n, ax in cases]

# ---- indexing ---------------------------------------------------------------


@op('gather')
def _gather(rng):
    cases = [((3, 4), 1, (3, 5)), ((3, 4), 0, (2, 4)), ((2, 3, 4), -1, (2, 3, 6)),
             ((2, 3, 4), 1, (1, 2, 3)), ((5,), 0, (8,))]
    out = []
    for s, ax, ish in cases:
        idx = rng.integers(0, s[ax], size=ish).astype(np.float64)
        out.append(Case([uni(rng, s)],
                        lambda t, a, idx=idx: torch.gather(
                            t[0], a['axis'], torch.from_numpy(idx).long()),
                        {'axis': ax}, index=idx))
    return out


@op('index_select')
def _index_select(rng):
    cases = [((5, 3), 0, [4, 0, 0, 2, 4, 4]), ((2, 6), 1, [5, 1]),
             ((3, 2, 4), -1, [3, 3, 0]), ((4,), 0, [1, 1, 1]), ((3, 2), 0, [])]
    return [Case([uni(rng, s)],
                 lambda t, a: torch.index_select(t[0], a['axis'] % t[0].dim(),
                                                 torch.tensor(a['idx'], dtype=torch.long)),
                 {'axis': ax, 'idx': idx}) for s, ax, idx in cases]


@op('scatter_add')
def _scatter_add(rng):
    cases = [((3, 4), 1, (3, 5)), ((3, 4), 0, (2, 4)), ((2, 3, 4), -1, (2, 3, 6)),
             ((2, 3, 4), 1, (1, 2, 3)), ((5,), 0, (8,))]
    out = []
    for s, ax, ish in cases:
        idx = rng.integers(0, s[ax], size=ish).astype(np.float64)
        out.append(Case([uni(rng, s), uni(rng, ish)],
                        lambda t, a, idx=idx: torch.scatter_add(
                            t[0], a['axis'], torch.from_numpy(idx).long(), t[1]),
                        {'axis': ax}, index=idx))
    return out


@op('index_add')
def _index_add(rng):
    cases = [((5, 3), 0, [4, 0, 0, 2, 4, 4]), ((2, 6), 1, [5, 1]),
             ((3, 2, 4), -1, [3, 3, 0]), ((4,), 0, [1, 1, 1]), ((3, 2), 0, [])]
    out = []
    for s, ax, idx in cases:
        src = list(s)
        src[ax] = len(idx)
        out.append(Case([uni(rng, s), uni(rng, tuple(src))],
                        lambda t, a: torch.index_add(
                            t[0], a['axis'] % t[0].dim(),
                            torch.tensor(a['idx'], dtype=torch.long), t[1]),
                        {'axis': ax, 'idx': idx}))
    return out


@op('where')
def _where(rng):
    cases = [((2, 3), (2, 3), (2, 3)), ((2, 1), (2, 3), (3,)), ((3,), (2, 1), ()),
             ((2, 3, 4), (4,), (3, 1))]
    return [Case([rng.integers(0, 2, size=sc).astype(np.float64), uni(rng, sa), uni(rng, sb)],
                 lambda t, a: torch.where(t[0] != 0, t[1], t[2]), diff=[False, True, True])
            for sc, sa, sb in cases]


def _bound(v):
    return v if np.isfinite(v) else ('inf' if v > 0 else '-inf')


@op('clamp')
def _clamp(rng):
    cases = [((3, 4), -1.0, 0.5), ((2, 3, 2), -np.inf, 0.25), ((7,), -0.3, np.inf),
             ((), -1.0, 1.0)]
    out = []
    for s, lo, hi in cases:
        x = uni(rng, s)
        # keep clear of the bounds, where the one-sided derivatives differ
        for b in (lo, hi):
            x = np.where(np.abs(x - b) < 0.05, x + 0.1, x)
        out.append(Case([x], lambda t, a: torch.clamp(
            t[0], float(a['lo']), float(a['hi'])), {'lo': _bound(lo), 'hi': _bound(hi)}))
    return out

# ---- nn primitives ----------------------------------------------------------


@op('softmax')
def _softmax(rng):
    cases = [((3, 5), -1), ((3, 5), 0), ((2, 3, 4), 1), ((6,), 0), ((), 0), ((4, 10), 1)]
    return [Case([uni(rng, s, -3, 3)], lambda t, a: F.softmax(t[0], a['axis']),
                 {'axis': ax}) for s, ax in cases]


@op('log_softmax')
def _log_softmax(rng):
    cases = [((3, 5), -1), ((3, 5), 0), ((2, 3, 4), 1), ((6,), 0), ((), 0), ((4, 10), 1)]
    out = [Case([uni(rng, s, -3, 3)], lambda t, a: F.log_softmax(t[0], a['axis']),
                {'axis': ax}) for s, ax in cases]
    # extreme logits stay finite
    x = uni(rng, (2, 4), -3, 3)
    x[0, 1], x[1, 2], x[1, 3] = 1e4, -1e4, 50.0
    out.append(Case([x], lambda t, a: F.log_softmax(t[0], a['axis']), {'axis': 1}))
    return out


def _ce(t, a):
    ignore = -100 if a['ignore'] is None else a['ignore']
    red = {'mean': 'mean', 'sum': 'sum', 'none': 'none'}[a['reduction']]
    return F.cross_entropy(t[0], torch.tensor(a['labels'], dtype=torch.long),
                           ignore_index=ignore, reduction=red,
                           label_smoothing=a['smoothing'])


@op('cross_entropy_logits')
def _cross_entropy(rng):
    specs = [(4, 5, 'mean', None, 0.0, False), (5, 3, 'sum', None, 0.1, False),
             (6, 4, 'none', -100, 0.2, True), (6, 4, 'mean', -100, 0.15, True),
             (8, 10, 'mean', 3, 0.0, False), (16, 10, 'mean', None, 0.1, False)]
    out = []
    for n, c, red, ignore, eps, use_ignore in specs:
        labels = [int(v) for v in rng.integers(0, c, size=n)]
        if use_ignore:
            labels[1] = ignore
            labels[n - 2] = ignore
        args = {'labels': labels, 'reduction': red, 'ignore': ignore, 'smoothing': eps}
        out.append(Case([uni(rng, (n, c), -3, 3)], _ce, args))
    return out


@op('dropout')
def _dropout(rng):
    """torch's mask differs from ours: test_fixtures.c checks the mask-free
    properties (kept elements scaled by 1/(1-p), the rest 0; p = 0 and
    evaluation are the identity) against these."""
    cases = [((4, 25), 0.3, True), ((2, 3, 4), 0.5, True), ((5, 4), 0.0, True),
             ((5, 4), 0.4, False)]
    return [Case([uni(rng, s)], lambda t, a: F.dropout(t[0], a['p'], a['training']),
                 {'p': p, 'training': tr}) for s, p, tr in cases]

# ---- writing ----------------------------------------------------------------


def run_case(case, dtype, seed_np):
    ts = [torch.tensor(x, dtype=dtype, requires_grad=d) for x, d in zip(case.inputs, case.diff)]
    torch.manual_seed(0)
    out = case.fn(ts, case.args)
    grads = {}
    if out.requires_grad:
        seed = torch.tensor(seed_np(out.shape), dtype=dtype)
        want = [t for t, d in zip(ts, case.diff) if d]
        got = torch.autograd.grad(out, want, grad_outputs=seed, allow_unused=True)
        k = 0
        for i, d in enumerate(case.diff):
            if d:
                g = got[k]
                grads[i] = torch.zeros_like(ts[i]) if g is None else g
                k += 1
        grads['seed'] = seed
    return out.detach(), grads


def write_op(name):
    crc = zlib.crc32(name.encode())
    cases = OPS[name](np.random.default_rng(crc))
    for dtype, tag, npdt in ((torch.float64, 'f64', np.float64),
                             (torch.float32, 'f32', np.float32)):
        tensors, meta = {}, {'op': name, 'dtype': tag, 'cases': str(len(cases)),
                             'generator': 'tests/reference/make_fixtures.py, torch '
                             + torch.__version__}
        for k, case in enumerate(cases):
            srng = np.random.default_rng(crc + 1000 + k)
            seeds = {}

            def seed_np(shape):
                if 'v' not in seeds:
                    seeds['v'] = srng.standard_normal(size=tuple(shape)).astype(npdt)
                return seeds['v']
            inputs = [x.astype(npdt) for x in case.inputs]
            c2 = Case(inputs, case.fn, case.args, case.diff, case.index)
            out, grads = run_case(c2, dtype, seed_np)
            p = 'case%d.' % k
            for i, x in enumerate(inputs):
                tensors[p + 'in%d' % i] = np.asarray(x, dtype=npdt)
            if case.index is not None:
                tensors[p + 'index'] = case.index.astype(np.float64)
            tensors[p + 'out'] = out.numpy().astype(npdt)
            if 'seed' in grads:
                tensors[p + 'seed'] = grads.pop('seed').numpy().astype(npdt)
            for i, g in grads.items():
                tensors[p + 'grad%d' % i] = g.numpy().astype(npdt)
            meta[p + 'args'] = json.dumps(case.args, sort_keys=True)
        st.write(os.path.join(OUT_DIR, '%s.%s.safetensors' % (name, tag)), tensors, meta)


def main():
    names = sys.argv[1:] or sorted(OPS)
    unknown = [n for n in names if n not in OPS]
    if unknown:
        sys.exit('no fixture cases for: ' + ', '.join(unknown))
    os.makedirs(OUT_DIR, exist_ok=True)
    for name in names:
        write_op(name)
    print('wrote %d ops x 2 dtypes to %s' % (len(names), OUT_DIR))


if __name__ == '__main__':
    main()
