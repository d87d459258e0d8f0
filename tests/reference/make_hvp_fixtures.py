#!/usr/bin/python3
"""PyTorch reference values of second and third derivatives, for
tests/test_grad2.c (ag_gradients, ag_hvp and friends).

    /usr/bin/python3 tests/reference/make_hvp_fixtures.py

Needs Debian's python3-torch (and numpy); CI does not run it: the files it
writes under tests/reference/hvp/ are committed.  Everything is float64.

mlp_tanh.safetensors, mlp_gelu.safetensors
    Hessian-vector product of the mean softmax cross-entropy of a
    784-256-128-10 MLP (tanh, or exact erf gelu, after the first two
    layers; PyTorch's layout, W [out, in]) on a batch of 16, with respect
    to all six weights and biases.  The parameters, inputs, labels and the
    direction v are not stored: both sides draw them from the counter-based
    generator below (GEN), so only torch's answers take room:
        hv.<p>          H v for parameter p (fc1.weight, fc1.bias, ...)
        loss            [1] the loss
        grad_norm.<p>   [1] ||d loss / d p||
        gv, vhv         [1] <grad, v> and <v, H v> over all parameters
        labels          [16] the drawn labels (as F64), a cross-check
        head.<name>     [4] the first 4 drawn values of each tensor, so a
                        generator that drifts is named, not guessed at
rosenbrock.safetensors
    extended Rosenbrock f(x) = sum_i 100 (x[2i+1] - x[2i]^2)^2 + (1 - x[2i])^2,
    n = 1000: x, v, f [1], grad, hv.
third_order.safetensors
    tanh.x, tanh.y, tanh.d1, tanh.d2, tanh.d3: elementwise d^k tanh / dx^k;
    a 1-16-16-1 tanh MLP with scalar input and output (weights mlp3.<p>,
    PyTorch layout) at points mlp3.x [9, 1]: mlp3.y, mlp3.d1, mlp3.d2,
    mlp3.d3 ([9, 1], d^k y / dx^k by create_graph=True repeated) and
    mlp3.d2_dw.<p>: d (sum_x d2y/dx2) / d p (the PINN pattern: a loss on
    a derivative, differentiated with respect to the parameters).

GEN (also in tests/test_grad2.c): value i (from 0) of stream s is
    z = splitmix64_mix(s * 0xD1B54A32D192ED03 + (i + 1) * 0x9E3779B97F4A7C15)
    u = (z >> 11) * 2^-53                      in [0, 1), exact
    value = scale * (2u - 1)                   in [-scale, scale)
(2u - 1 is exact or one rounding, then one multiply: the same bits in C
and numpy, contraction or not), and label i = z % 10.  Streams: 1..6 the
parameters in order (W scale 2/sqrt(in), b scale 0.5), 7 the inputs
(scale 1), 8 the labels, 9..14 v (scale 1).
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'hvp')
M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
STREAM = 0xD1B54A32D192ED03

SIZES = [784, 256, 128, 10]
BATCH = 16
PARAMS = ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias', 'fc3.weight', 'fc3.bias']


def gen_bits(stream, n):
    """the n raw 64-bit draws of a stream (numpy uint64 wraps mod 2^64)"""
    with np.errstate(over='ignore'):
        z = np.uint64((stream * STREAM) & M64) + \
            np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def gen_uniform(stream, shape, scale):
    n = int(np.prod(shape, dtype=np.int64))
    u = (gen_bits(stream, n) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return (scale * (2.0 * u - 1.0)).reshape(shape)


def mlp_inputs():
    """parameters, x, labels, v: named numpy arrays drawn from GEN"""
    params, v = {}, {}
    for l in range(3):
        fin, fout = SIZES[l], SIZES[l + 1]
        params['fc%d.weight' % (l + 1)] = gen_uniform(1 + 2 * l, (fout, fin), 2.0 / np.sqrt(fin))
        params['fc%d.bias' % (l + 1)] = gen_uniform(2 + 2 * l, (fout,), 0.5)
    for k, name in enumerate(PARAMS):
        v[name] = gen_uniform(9 + k, params[name].shape, 1.0)
    x = gen_uniform(7, (BATCH, SIZES[0]), 1.0)
    labels = (gen_bits(8, BATCH) % np.uint64(10)).astype(np.int64)
    return params, x, labels, v


def mlp_loss(act, x, labels):
    def f(*p):
        h = x
        for l in range(3):
            h = F.linear(h, p[2 * l], p[2 * l + 1])
            if l < 2:
                h = act(h)
        return F.cross_entropy(h, labels)
    return f


def write_mlp(tag, act):
    params, x, labels, v = mlp_inputs()
    tp = tuple(torch.from_numpy(params[n]) for n in PARAMS)
    tv = tuple(torch.from_numpy(v[n]) for n in PARAMS)
    f = mlp_loss(act, torch.from_numpy(x), torch.from_numpy(labels))
    loss, hv = torch.autograd.functional.hvp(f, tp, tv)
    # the same by plain double backward, as a cross-check of the reference
    ps = [p.clone().requires_grad_(True) for p in tp]
    g = torch.autograd.grad(f(*ps), ps, create_graph=True)
    hv2 = torch.autograd.grad(sum((gi * vi).sum() for gi, vi in zip(g, tv)), ps)
    for a, b in zip(hv, hv2):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15), 'hvp != double backward'
    out = {'loss': np.array([loss.item()]), 'labels': labels.astype(np.float64)}
    for name, h, gi in zip(PARAMS, hv, g):
        out['hv.' + name] = h.numpy()
        out['grad_norm.' + name] = np.array([gi.detach().norm().item()])
    out['gv'] = np.array([sum((gi.detach() * vi).sum().item() for gi, vi in zip(g, tv))])
    out['vhv'] = np.array([sum((h * vi).sum().item() for h, vi in zip(hv, tv))])
    for name in PARAMS:
        out['head.' + name] = params[name].reshape(-1)[:4].copy()
        out['head.v.' + name] = v[name].reshape(-1)[:4].copy()
    out['head.x'] = x.reshape(-1)[:4].copy()
    st.write(os.path.join(OUT, 'mlp_%s.safetensors' % tag), out, {
        'model': '784-256-128-10 %s MLP, mean cross-entropy, batch %d' % (tag, BATCH),
        'generator': 'tests/reference/make_hvp_fixtures.py, torch ' + torch.__version__})
    print('mlp_%s: loss %.6f, ||hv|| %.6g' % (tag, loss.item(),
                                             sum(h.norm() ** 2 for h in hv).sqrt().item()))


def rosenbrock(x):
    a, b = x[0::2], x[1::2]
    return (100 * (b - a * a) ** 2 + (1 - a) ** 2).sum()


def write_rosenbrock(n=1000):
    rng = np.random.default_rng(1000)
    x = torch.from_numpy(rng.uniform(-2.0, 2.0, size=n))
    v = torch.from_numpy(rng.standard_normal(size=n))
    f, hv = torch.autograd.functional.hvp(rosenbrock, x, v)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(rosenbrock(xg), xg)
    # analytic check: the Hessian is block diagonal with 2x2 blocks
    a, b, va, vb = x[0::2], x[1::2], v[0::2], v[1::2]
    haa, hab, hbb = 1200 * a * a - 400 * b + 2, -400 * a, torch.full_like(a, 200.0)
    want = torch.stack([haa * va + hab * vb, hab * va + hbb * vb], 1).reshape(-1)
    assert torch.allclose(hv, want, rtol=1e-12, atol=1e-9), 'rosenbrock hvp'
    st.write(os.path.join(OUT, 'rosenbrock.safetensors'),
             {'x': x.numpy(), 'v': v.numpy(), 'f': np.array([f.item()]),
              'grad': grad.numpy(), 'hv': hv.numpy()},
             {'n': str(n), 'generator': 'tests/reference/make_hvp_fixtures.py, torch '
              + torch.__version__})


def derivs(fn, x, order=3):
    """[y, dy/dx, ..., d^order y/dx^order] of an elementwise-in-batch fn"""
    x = x.clone().requires_grad_(True)
    out = [fn(x)]
    for _ in range(order):
        (d,) = torch.autograd.grad(out[-1].sum(), x, create_graph=True)
        out.append(d)
    return x, out


def write_third_order():
    out = {}
    x = torch.tensor([-2.5, -1.0, -0.3, 0.0, 0.4, 1.2, 3.0], dtype=torch.float64)
    _, ys = derivs(torch.tanh, x)
    t = torch.tanh(x)
    want = [t, 1 - t * t, -2 * t * (1 - t * t), (1 - t * t) * (6 * t * t - 2)]
    for k, (y, w) in enumerate(zip(ys, want)):
        assert torch.allclose(y, w, rtol=1e-13, atol=1e-15), 'tanh d%d' % k
    out['tanh.x'] = x.numpy()
    for k, y in enumerate(ys):
        out['tanh.' + ('y' if k == 0 else 'd%d' % k)] = y.detach().numpy()

    g = torch.Generator().manual_seed(3)
    sizes, p = [1, 16, 16, 1], []
    for l in range(3):
        w = torch.randn(sizes[l + 1], sizes[l], generator=g, dtype=torch.float64)
        p.append((w * (1.5 / np.sqrt(sizes[l]))).requires_grad_(True))
        p.append((0.5 * torch.randn(sizes[l + 1], generator=g,
                                    dtype=torch.float64)).requires_grad_(True))

    def mlp(x):
        h = torch.tanh(F.linear(x, p[0], p[1]))
        h = torch.tanh(F.linear(h, p[2], p[3]))
        return F.linear(h, p[4], p[5])
    xs = torch.linspace(-2.0, 2.0, 9, dtype=torch.float64).reshape(9, 1)
    _, ys = derivs(mlp, xs)
    # d2y/dx2 does not depend on the last bias: torch gives None, stored as 0
    d2w = torch.autograd.grad(ys[2].sum(), p, retain_graph=True, allow_unused=True)
    d2w = [torch.zeros_like(w) if d is None else d for w, d in zip(p, d2w)]
    out['mlp3.x'] = xs.numpy()
    for k, y in enumerate(ys):
        out['mlp3.' + ('y' if k == 0 else 'd%d' % k)] = y.detach().numpy()
    for name, w, d in zip(PARAMS, p, d2w):
        out['mlp3.' + name] = w.detach().numpy()
        out['mlp3.d2_dw.' + name] = d.numpy()
    st.write(os.path.join(OUT, 'third_order.safetensors'), out,
             {'generator': 'tests/reference/make_hvp_fixtures.py, torch ' + torch.__version__})


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    write_mlp('tanh', torch.tanh)
    write_mlp('gelu', F.gelu)
    write_rosenbrock()
    write_third_order()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print('wrote %s (%.2f MB)' % (OUT, total / 1e6))


if __name__ == '__main__':
    main()
