#!/usr/bin/python3
"""PyTorch reference fixtures for tapegrad's convolution and pooling ops.

    /usr/bin/python3 tests/reference/make_conv_fixtures.py [op ...]

Needs Debian's python3-torch (and numpy); CI does not run it: the files it
writes under tests/reference/conv/ are committed and read by
tests/test_ops_conv.c.  One file per op and dtype, <op>.<f64|f32>.safetensors,
laid out as make_fixtures.py's:

    caseK.in<i>    input i (the file's dtype)
    caseK.out      torch's output
    caseK.seed     random output gradient
    caseK.grad<i>  d(sum(out * seed)) / d in<i>
    __metadata__   op, dtype, cases, generator, and caseK.args: a JSON object
                   of the options (stride, padding, dilation, groups as lists
                   over H, W, or numbers for conv1d; kernel; out for the
                   adaptive pool; x_shape or w_shape for the gradient ops)

The gradient ops have no public function of their own; their cases are the
first derivatives, taken with create_graph, that tapegrad records as them:
    conv2d_input_grad(g, w)   d<conv2d(x, w), g>/dx   (x_shape in args)
    conv2d_weight_grad(x, g)  d<conv2d(x, w), g>/dw   (w_shape in args)
    avg_pool2d_grad(g)        d<avg_pool2d(x), g>/dx  (kernel, ... or out)
and their grad<i> are torch's second derivatives.  Inputs are drawn in
float64 from a generator seeded by the op name, then rounded to float32 for
the f32 file.  Max-pool inputs are uniform draws, so no window has a tie.
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

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'conv')


def uni(rng, shape):
    return rng.uniform(-1.0, 1.0, size=shape)


# ---- convolution ----------------------------------------------------------
# (x shape, w shape, stride, padding, dilation, groups, bias): stride 2,
# padding, dilation 2, groups and depthwise, odd sizes (rows and columns no
# window reaches), 1x1 kernels, one input channel into 16 (a small CNN
# first layer: the transposed weight gradient), and 3x3 kernels
# over 8+ channels in and out.
CONV2D = [
    ((2, 3, 7, 6), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ((2, 2, 9, 7), (3, 2, 3, 2), (2, 2), (0, 1), (1, 1), 1, False),
    ((1, 2, 9, 8), (2, 2, 3, 3), (1, 1), (2, 2), (2, 2), 1, True),
    ((2, 4, 6, 5), (6, 2, 3, 3), (2, 1), (1, 1), (1, 1), 2, True),
    ((2, 3, 7, 7), (3, 1, 3, 3), (2, 2), (1, 1), (1, 1), 3, False),
    ((2, 3, 5, 4), (5, 3, 1, 1), (1, 1), (0, 0), (1, 1), 1, True),
    ((1, 4, 5, 5), (2, 4, 1, 1), (2, 2), (1, 1), (1, 1), 1, False),
    ((3, 6, 8, 8), (4, 3, 5, 3), (1, 3), (2, 0), (1, 2), 2, True),
    ((1, 1, 14, 14), (16, 1, 3, 3), (1, 1), (0, 0), (1, 1), 1, True),
    ((2, 8, 7, 6), (8, 8, 3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ((3, 9, 6, 9), (10, 9, 3, 3), (1, 1), (0, 2), (1, 1), 1, False),
]

CONV1D = [
    ((2, 3, 11), (4, 3, 3), 2, 1, 1, 1, True),
    ((1, 4, 10), (4, 1, 3), 1, 2, 2, 4, False),
    ((2, 2, 7), (3, 2, 1), 1, 0, 1, 1, True),
]


def conv_args(s, p, d, g):
    return {'stride': list(s), 'padding': list(p), 'dilation': list(d), 'groups': g}


def conv2d_of(x, w, b, a):
    return F.conv2d(x, w, b, stride=a['stride'], padding=a['padding'],
                    dilation=a['dilation'], groups=a['groups'])


def conv2d(t, a):
    return conv2d_of(t[0], t[1], t[2] if len(t) > 2 else None, a)


def cases_conv2d(rng):
    out = []
    for xs, ws, s, p, d, g, bias in CONV2D:
        ins = [uni(rng, xs), uni(rng, ws)] + ([uni(rng, ws[:1])] if bias else [])
        out.append((ins, conv2d, conv_args(s, p, d, g)))
    return out


def cases_conv1d(rng):
    out = []
    for xs, ws, s, p, d, g, bias in CONV1D:
        ins = [uni(rng, xs), uni(rng, ws)] + ([uni(rng, ws[:1])] if bias else [])
        args = {'stride': s, 'padding': p, 'dilation': d, 'groups': g}
        out.append((ins, lambda t, a: F.conv1d(t[0], t[1], t[2] if len(t) > 2 else None,
                                               stride=a['stride'], padding=a['padding'],
                                               dilation=a['dilation'], groups=a['groups']),
                    args))
    return out


def out_hw(xs, ws, s, p, d):
    return [(xs[2 + i] + 2 * p[i] - d[i] * (ws[2 + i] - 1) - 1) // s[i] + 1 for i in range(2)]


def input_grad(t, a):
    """d<conv2d(x, w), g>/dx with create_graph: a function of g and w"""
    x0 = torch.zeros(a['x_shape'], dtype=t[0].dtype, requires_grad=True)
    y = conv2d_of(x0, t[1], None, a)
    return torch.autograd.grad(y, x0, t[0], create_graph=True)[0]


def weight_grad(t, a):
    """d<conv2d(x, w), g>/dw with create_graph: a function of x and g"""
    w0 = torch.zeros(a['w_shape'], dtype=t[0].dtype, requires_grad=True)
    y = conv2d_of(t[0], w0, None, a)
    return torch.autograd.grad(y, w0, t[1], create_graph=True)[0]


def cases_input_grad(rng):
    out = []
    for xs, ws, s, p, d, g, _ in CONV2D:
        gs = (xs[0], ws[0], *out_hw(xs, ws, s, p, d))
        args = dict(conv_args(s, p, d, g), x_shape=list(xs))
        out.append(([uni(rng, gs), uni(rng, ws)], input_grad, args))
    return out


def cases_weight_grad(rng):
    out = []
    for xs, ws, s, p, d, g, _ in CONV2D:
        gs = (xs[0], ws[0], *out_hw(xs, ws, s, p, d))
        args = dict(conv_args(s, p, d, g), w_shape=list(ws))
        out.append(([uni(rng, xs), uni(rng, gs)], weight_grad, args))
    return out


# ---- pooling --------------------------------------------------------------
# (x shape, kernel, stride (0: the kernel), padding): the CNN's 2x2, overlapping
# windows with padding, odd sizes, windows that leave a row out.
POOL = [
    ((2, 3, 8, 8), (2, 2), (0, 0), (0, 0)),
    ((1, 2, 9, 7), (3, 3), (2, 2), (1, 1)),
    ((2, 2, 7, 9), (3, 2), (1, 2), (1, 0)),
    ((1, 1, 5, 5), (2, 3), (1, 1), (1, 1)),
    ((2, 2, 7, 6), (2, 2), (3, 2), (0, 1)),
    ((1, 2, 26, 26), (2, 2), (0, 0), (0, 0)),
]
# (x shape, out): overlapping windows, global, larger than x, uneven
ADAPTIVE = [
    ((2, 3, 7, 9), (3, 4)),
    ((1, 2, 5, 5), (1, 1)),
    ((1, 2, 4, 6), (6, 4)),
    ((2, 2, 10, 7), (3, 7)),
]


def pool_args(k, s, p):
    return {'kernel': list(k), 'stride': list(s), 'padding': list(p)}


def stride_of(a):
    return [s or k for s, k in zip(a['stride'], a['kernel'])]


def max_pool(t, a):
    return F.max_pool2d(t[0], a['kernel'], stride_of(a), a['padding'])


def avg_pool(t, a):
    return F.avg_pool2d(t[0], a['kernel'], stride_of(a), a['padding'], count_include_pad=True)


def adaptive(t, a):
    return F.adaptive_avg_pool2d(t[0], a['out'])


def cases_pool(fn):
    def cases(rng):
        return [([uni(rng, xs)], fn, pool_args(k, s, p)) for xs, k, s, p in POOL]
    return cases


def cases_adaptive(rng):
    return [([uni(rng, xs)], adaptive, {'out': list(o)}) for xs, o in ADAPTIVE]


def avg_grad(t, a):
    """d<pool(x), g>/dx with create_graph, pool the fixed or adaptive average"""
    x0 = torch.zeros(a['x_shape'], dtype=t[0].dtype, requires_grad=True)
    y = adaptive([x0], a) if 'out' in a else avg_pool([x0], a)
    return torch.autograd.grad(y, x0, t[0], create_graph=True)[0]


def cases_avg_grad(rng):
    out = []
    for xs, k, s, p in POOL:
        a = dict(pool_args(k, s, p), x_shape=list(xs))
        ys = avg_pool([torch.zeros(xs, dtype=torch.float64)], a).shape
        out.append(([uni(rng, tuple(ys))], avg_grad, a))
    for xs, o in ADAPTIVE:
        out.append(([uni(rng, (xs[0], xs[1]) + o)], avg_grad, {'out': list(o),
                                                             'x_shape': list(xs)}))
    return out


OPS = {
    'conv2d': cases_conv2d,
    'conv1d': cases_conv1d,
    'conv2d_input_grad': cases_input_grad,
    'conv2d_weight_grad': cases_weight_grad,
    'max_pool2d': cases_pool(max_pool),
    'avg_pool2d': cases_pool(avg_pool),
    'adaptive_avg_pool2d': cases_adaptive,
    'avg_pool2d_grad': cases_avg_grad,
}


def write_op(name):
    crc = zlib.crc32(name.encode())
    cases = OPS[name](np.random.default_rng(crc))
    for dtype, tag, npdt in ((torch.float64, 'f64', np.float64),
                             (torch.float32, 'f32', np.float32)):
        tensors = {}
        meta = {'op': name, 'dtype': tag, 'cases': str(len(cases)),
                'generator': 'tests/reference/make_conv_fixtures.py, torch ' + torch.__version__}
        for k, (inputs, fn, args) in enumerate(cases):
            ins = [torch.tensor(x.astype(npdt), requires_grad=True) for x in inputs]
            out = fn(ins, args)
            srng = np.random.default_rng(crc + 1000 + k)
            seed = torch.tensor(srng.standard_normal(size=tuple(out.shape)).astype(npdt))
            grads = torch.autograd.grad(out, ins, grad_outputs=seed)
            p = 'case%d.' % k
            for i, x in enumerate(ins):
                tensors[p + 'in%d' % i] = x.detach().numpy()
                tensors[p + 'grad%d' % i] = grads[i].numpy()
            tensors[p + 'out'] = out.detach().numpy()
            tensors[p + 'seed'] = seed.numpy()
            meta[p + 'args'] = json.dumps(args, sort_keys=True)
        st.write(os.path.join(OUT_DIR, '%s.%s.safetensors' % (name, tag)), tensors, meta)


def main():
    torch.set_num_threads(1)
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
