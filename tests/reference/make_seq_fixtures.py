#!/usr/bin/python3
"""Reference values of nn/'s recurrent layers, multi-head attention and GPT
from PyTorch, in f64.

    /usr/bin/python3 tests/reference/make_seq_fixtures.py

Writes tests/reference/seq/seq_f64.safetensors (committed, so CI needs no
PyTorch).  Per case P:
  P.<name>        the module's state_dict under tapegrad's names (a
                  non-strict nn_params_load fills a layer created as "P");
  P.x, P.h0, P.c0 inputs (MHA: P.q, P.k, P.v, P.mask; GPT: P.idx, P.target);
  P.y, P.hn, P.cn torch's outputs, with the initial states given;
  P.y0, P.hn0, P.cn0  the same from zero states (h0 / c0 left out);
  P.gy, P.ghn, P.gcn  seeds: the loss is sum(y gy) + sum(hn ghn) + sum(cn gcn);
  P.grad.<name>   d loss / d parameter, P.grad.x, P.grad.h0, P.grad.c0 (MHA:
                  P.grad.q/k/v) for the run with states.
Case ln is F.layer_norm (P.w, P.b; P.y_plain without them).  The GPT case
is bench/peers/charlm_torch.py's GPT (the PyTorch peer of
examples/charlm), so these values also show the peer is nn_gpt; its loss is
the mean cross-entropy of the logits against P.target.  Integer inputs are
stored as F64.

It also writes, in make_fixtures.py's layout and through its writer (so
tests/test_fixtures.c reads them with every other op), the table rows of
the fused primitives against the same math written in torch ops:
    tests/reference/ops/lstm_cell_c.<f64|f32>.safetensors  in0 gates [.., 4H],
        in1 c [.., H]; out c' (ag_lstm_cell's *c_next)
    tests/reference/ops/lstm_cell_h.<f64|f32>.safetensors  the same inputs;
        out h' (ag_lstm_cell's result)
    tests/reference/ops/gru_cell.<f64|f32>.safetensors  in0 gx, in1 gh [.., 3H],
        in2 h [.., H]; out h'
    tests/reference/ops/layer_norm.<f64|f32>.safetensors  in0 x, then w and b
        [D] as args has_w / has_b say; args eps; F.layer_norm over the last dim
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'bench', 'peers'))
import st  # noqa: E402
import charlm_torch  # noqa: E402
import make_fixtures as mf  # noqa: E402

OUT = os.path.join(HERE, 'seq')
T, N, IN, H = 5, 2, 3, 4


def np_of(t):
    return t.detach().cpu().numpy().copy()


def randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def put_state(out, prefix, module):
    for k, v in module.state_dict().items():
        out[prefix + '.' + k] = np_of(v)


def put_grads(out, prefix, module, named):
    for k, p in module.named_parameters():
        out[prefix + '.grad.' + k] = np_of(p.grad)
    for k, t in named.items():
        out[prefix + '.grad.' + k] = np_of(t.grad)


def recurrent_case(out, g, prefix, cls, layers, batch_first, lstm, **kw):
    m = cls(IN, H, layers, batch_first=batch_first, **kw).double()
    put_state(out, prefix, m)
    x = randn(g, *((N, T, IN) if batch_first else (T, N, IN))).requires_grad_()
    h0 = randn(g, layers, N, H).requires_grad_()
    c0 = randn(g, layers, N, H).requires_grad_()
    y, st_ = m(x, (h0, c0)) if lstm else m(x, h0)
    hn, cn = st_ if lstm else (st_, None)
    gy, ghn, gcn = randn(g, *y.shape), randn(g, *hn.shape), randn(g, *hn.shape)
    loss = (y * gy).sum() + (hn * ghn).sum() + ((cn * gcn).sum() if lstm else 0)
    loss.backward()
    named = {'x': x, 'h0': h0}
    if lstm:
        named['c0'] = c0
        out[prefix + '.c0'], out[prefix + '.cn'] = np_of(c0), np_of(cn)
        out[prefix + '.gcn'] = np_of(gcn)
    out[prefix + '.x'], out[prefix + '.h0'] = np_of(x), np_of(h0)
    out[prefix + '.y'], out[prefix + '.hn'] = np_of(y), np_of(hn)
    out[prefix + '.gy'], out[prefix + '.ghn'] = np_of(gy), np_of(ghn)
    put_grads(out, prefix, m, named)
    with torch.no_grad():
        y0, st0 = m(x)
    out[prefix + '.y0'] = np_of(y0)
    out[prefix + '.hn0'] = np_of(st0[0] if lstm else st0)
    if lstm:
        out[prefix + '.cn0'] = np_of(st0[1])


def mha_case(out, g, prefix, batch_first, self_attn):
    E, heads, L, S = 8, 2, 5, (5 if self_attn else 6)
    m = nn.MultiheadAttention(E, heads, batch_first=batch_first).double()
    with torch.no_grad():   # torch starts the biases at 0: make them count
        m.in_proj_bias.copy_(0.3 * randn(g, 3 * E))
        m.out_proj.bias.copy_(0.3 * randn(g, E))
    put_state(out, prefix, m)

    def seq(n):
        return randn(g, *((N, n, E) if batch_first else (n, N, E))).requires_grad_()

    q = seq(L)
    k, v = (q, q) if self_attn else (seq(S), seq(S))
    if self_attn:   # causal, as torch's triu(-inf, 1) float mask
        mask = torch.triu(torch.full((L, S), float('-inf'), dtype=torch.float64), 1)
    else:           # a general additive mask
        mask = randn(g, L, S)
    y = m(q, k, v, attn_mask=mask, need_weights=False)[0]
    gy = randn(g, *y.shape)
    (y * gy).sum().backward()
    out[prefix + '.q'], out[prefix + '.y'], out[prefix + '.gy'] = np_of(q), np_of(y), np_of(gy)
    named = {'q': q}
    if not self_attn:
        out[prefix + '.k'], out[prefix + '.v'] = np_of(k), np_of(v)
        out[prefix + '.mask'] = np_of(mask)
        named.update(k=k, v=v)
    put_grads(out, prefix, m, named)


def gpt_case(out, g, prefix):
    vocab, block, n, t = 11, 8, 2, 6
    m = charlm_torch.GPT(vocab, block=block, layers=2, heads=2, d=8).double()
    with torch.no_grad():   # biases and layer norms away from 0 and 1
        for k, p in m.named_parameters():
            if k.endswith('bias') or '.ln' in k or k.startswith('ln'):
                p.add_(0.2 * randn(g, *p.shape))
    put_state(out, prefix, m)
    idx = torch.randint(0, vocab, (n, t), generator=g)
    target = torch.randint(0, vocab, (n, t), generator=g)
    logits = m(idx)
    F.cross_entropy(logits.reshape(-1, vocab), target.reshape(-1)).backward()
    out[prefix + '.idx'] = idx.numpy().astype(np.float64)
    out[prefix + '.target'] = target.numpy().astype(np.float64)
    out[prefix + '.y'] = np_of(logits)
    put_grads(out, prefix, m, {})


def layer_norm_case(out, g, prefix):
    """F.layer_norm over the last dim (ag_layer_norm, the GPT's norms), with
    and without weight and bias."""
    x = randn(g, 3, 2, 5).requires_grad_()
    w = (1 + 0.3 * randn(g, 5)).requires_grad_()
    b = (0.3 * randn(g, 5)).requires_grad_()
    y = F.layer_norm(x, (5,), w, b, 1e-5)
    gy = randn(g, *y.shape)
    (y * gy).sum().backward()
    out[prefix + '.x'], out[prefix + '.w'], out[prefix + '.b'] = np_of(x), np_of(w), np_of(b)
    out[prefix + '.y'], out[prefix + '.gy'] = np_of(y), np_of(gy)
    for k, t in (('x', x), ('w', w), ('b', b)):
        out[prefix + '.grad.' + k] = np_of(t.grad)
    out[prefix + '.y_plain'] = np_of(F.layer_norm(x, (5,), None, None, 1e-5))


# ---- the fused primitives' table rows ------------------------------------------


def lstm_math(t):
    i, f, g, o = t[0].chunk(4, -1)
    c = torch.sigmoid(f) * t[1] + torch.sigmoid(i) * torch.tanh(g)
    return c, torch.sigmoid(o) * torch.tanh(c)


def gru_math(t):
    xr, xz, xn = t[0].chunk(3, -1)
    hr, hz, hn = t[1].chunk(3, -1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * t[2]


CELL_SHAPES = [((3,), 4), ((2, 3), 5), ((1,), 1), ((4, 1), 8)]   # (leading dims, H)


def cell_cases(rng, gates, n_gate_inputs, make):
    return [mf.Case([mf.uni(rng, lead + (gates * h,), -2.5, 2.5) for _ in range(n_gate_inputs)]
                    + [mf.uni(rng, lead + (h,), -1.5, 1.5)], make)
            for lead, h in CELL_SHAPES]


@mf.op('lstm_cell_c')
def _lstm_cell_c(rng):
    return cell_cases(rng, 4, 1, lambda t, a: lstm_math(t)[0])


@mf.op('lstm_cell_h')
def _lstm_cell_h(rng):
    return cell_cases(rng, 4, 1, lambda t, a: lstm_math(t)[1])


@mf.op('gru_cell')
def _gru_cell(rng):
    return cell_cases(rng, 3, 2, lambda t, a: gru_math(t))


def layer_norm(t, a):
    k = 1
    w = t[k] if a['has_w'] else None
    k += a['has_w']
    b = t[k] if a['has_b'] else None
    return F.layer_norm(t[0], t[0].shape[-1:], w, b, a['eps'])


@mf.op('layer_norm')
def _layer_norm(rng):
    specs = [((3, 5), True, True, 1e-5), ((2, 3, 8), True, True, 1e-5),
             ((4, 6), False, False, 1e-5), ((2, 7), True, False, 0.1),
             ((3, 128), True, True, 1e-5), ((5,), False, True, 1e-3)]
    out = []
    for shape, hw, hb, eps in specs:
        d = shape[-1]
        inputs = [mf.uni(rng, shape, -2, 3)]
        inputs += [mf.uni(rng, (d,), 0.5, 1.5)] if hw else []
        inputs += [mf.uni(rng, (d,), -1, 1)] if hb else []
        out.append(mf.Case(inputs, layer_norm, {'has_w': hw, 'has_b': hb, 'eps': eps}))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(2024)
    torch.manual_seed(2024)   # module initializers draw from the global generator
    out = {}
    for bf, tag in ((False, 'tm'), (True, 'bf')):
        recurrent_case(out, g, 'rnn_' + tag, nn.RNN, 2, bf, False)
        recurrent_case(out, g, 'lstm_' + tag, nn.LSTM, 2, bf, True)
        recurrent_case(out, g, 'gru_' + tag, nn.GRU, 2, bf, False)
    recurrent_case(out, g, 'rnn_relu', nn.RNN, 1, True, False, nonlinearity='relu')
    mha_case(out, g, 'mha_self', True, True)
    mha_case(out, g, 'mha_cross', False, False)
    gpt_case(out, g, 'gpt')
    layer_norm_case(out, g, 'ln')
    st.write(os.path.join(OUT, 'seq_f64.safetensors'), out,
             metadata={'producer': 'make_seq_fixtures.py', 'torch': torch.__version__})
    print('wrote', OUT, len(out), 'tensors')
    for name in ('lstm_cell_c', 'lstm_cell_h', 'gru_cell', 'layer_norm'):
        mf.write_op(name)
    print('wrote lstm_cell_c, lstm_cell_h, gru_cell, layer_norm x 2 dtypes to', mf.OUT_DIR)


if __name__ == '__main__':
    main()
