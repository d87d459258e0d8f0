#!/usr/bin/python3
"""Reference values of nn/'s layers, activations and losses from PyTorch.

    /usr/bin/python3 tests/reference/make_nn_fixtures.py

Writes, under tests/reference/nn/ (committed, so CI needs no PyTorch):
  layers_f64.safetensors, layers_f32.safetensors
      per case: the parameters under the names tapegrad's layers register
      (so a non-strict nn_params_load fills a layer), the inputs and
      torch's outputs computed in that dtype.  Integer labels and indices
      are stored as F64; 0-d results are stored as [1] (st.py).
  torch_model.safetensors, torch_model_io.safetensors
      a checkpoint written by PyTorch (the state_dict of Net below after a
      few training steps, num_batches_tracked left out: tapegrad keeps
      F32/F64 only, and torch's load_state_dict fills it in) and an input
      with the model's eval-mode output.
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'nn')


def np_of(t):
    return t.detach().cpu().numpy().copy()


def put_module(out, prefix, module):
    for k, v in module.state_dict().items():
        if not k.endswith('num_batches_tracked'):
            out[prefix + '.' + k] = np_of(v)


def layer_cases(out, dt, g):
    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dt)

    # linear, with and without bias, 2-D and 3-D input
    lin = nn.Linear(5, 3).to(dt)
    put_module(out, 'lin', lin)
    out['lin.x'] = np_of(randn(4, 5))
    out['lin.y'] = np_of(lin(torch.from_numpy(out['lin.x'])))
    out['lin.x3'] = np_of(randn(2, 4, 5))
    out['lin.y3'] = np_of(lin(torch.from_numpy(out['lin.x3'])))
    lin_nb = nn.Linear(5, 3, bias=False).to(dt)
    put_module(out, 'lin_nb', lin_nb)
    out['lin_nb.y'] = np_of(lin_nb(torch.from_numpy(out['lin.x'])))

    # MLP: Sequential(Linear, Tanh, Linear, Tanh, Linear)
    mlp = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh(),
                        nn.Linear(6, 3)).to(dt)
    put_module(out, 'mlp', mlp)
    out['mlp.y'] = np_of(mlp(torch.from_numpy(out['lin.x'])))

    # embedding
    emb = nn.Embedding(10, 4).to(dt)
    put_module(out, 'emb', emb)
    idx = torch.tensor([3, 0, 9, 3, 7, 1, 9])
    out['emb.idx'] = idx.numpy().astype(np.float64)
    out['emb.y'] = np_of(emb(idx))

    # layer norm over 1 and 2 trailing dims, non-trivial affine
    for name, shape, xshape in (('ln', [6], (3, 6)), ('ln2', [2, 3], (4, 2, 3))):
        ln = nn.LayerNorm(shape).to(dt)
        with torch.no_grad():
            ln.weight.copy_(1 + 0.5 * randn(*shape))
            ln.bias.copy_(0.5 * randn(*shape))
        put_module(out, name, ln)
        x = 2 * randn(*xshape) + 1
        out[name + '.x'] = np_of(x)
        out[name + '.y'] = np_of(ln(x))

    # batch norm 1d on [N, C] and [N, C, L]: a training step, then eval
    for name, c, xshape, eshape in (('bn', 4, (8, 4), (5, 4)), ('bn3', 3, (4, 3, 5), (2, 3, 5))):
        bn = nn.BatchNorm1d(c).to(dt)
        with torch.no_grad():
            bn.weight.copy_(1 + 0.5 * randn(c))
            bn.bias.copy_(0.5 * randn(c))
        put_module(out, name, bn)           # running stats as created: 0 and 1
        x = 3 * randn(*xshape) + 2
        bn.train()
        out[name + '.x'] = np_of(x)
        out[name + '.y_train'] = np_of(bn(x))
        out[name + '.running_mean_after'] = np_of(bn.running_mean)
        out[name + '.running_var_after'] = np_of(bn.running_var)
        bn.eval()
        xe = 3 * randn(*eshape) + 2
        out[name + '.x_eval'] = np_of(xe)
        out[name + '.y_eval'] = np_of(bn(xe))


def activation_cases(out, dt, g):
    x = (torch.rand(3, 7, generator=g, dtype=torch.float64) * 6 - 3).to(dt)
    out['act.x'] = np_of(x)
    out['act.relu'] = np_of(F.relu(x))
    out['act.leaky_relu'] = np_of(F.leaky_relu(x, 0.1))
    out['act.elu'] = np_of(F.elu(x, 1.3))
    out['act.gelu'] = np_of(F.gelu(x))
    out['act.gelu_tanh'] = np_of(F.gelu(x, approximate='tanh'))
    out['act.silu'] = np_of(F.silu(x))
    out['act.tanh'] = np_of(torch.tanh(x))
    out['act.sigmoid'] = np_of(torch.sigmoid(x))
    out['act.softplus'] = np_of(F.softplus(x))
    out['act.softplus_b2'] = np_of(F.softplus(x, beta=2.0))
    out['act.softmax'] = np_of(F.softmax(x, dim=1))
    out['act.log_softmax'] = np_of(F.log_softmax(x, dim=0))


def loss_cases(out, dt, g):
    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dt)

    inp, tgt = randn(4, 5), randn(4, 5)
    prob = torch.rand(4, 5, generator=g, dtype=torch.float64).to(dt)
    out['loss.input'], out['loss.target'], out['loss.prob'] = np_of(inp), np_of(tgt), np_of(prob)
    for red in ('mean', 'sum', 'none'):
        out['loss.mse.' + red] = np_of(F.mse_loss(inp, tgt, reduction=red))
        out['loss.l1.' + red] = np_of(F.l1_loss(inp, tgt, reduction=red))
        out['loss.smooth_l1.' + red] = np_of(F.smooth_l1_loss(inp, tgt, reduction=red, beta=0.5))
        out['loss.huber.' + red] = np_of(F.huber_loss(inp, tgt, reduction=red, delta=1.5))
        out['loss.bce.' + red] = np_of(
            F.binary_cross_entropy_with_logits(3 * inp, prob, reduction=red))

    logits = 2 * randn(6, 5)
    labels = torch.tensor([1, 4, 2, 0, 2, 3])
    out['ce.logits'] = np_of(logits)
    out['ce.labels'] = labels.numpy().astype(np.float64)
    out['ce.mean'] = np_of(F.cross_entropy(logits, labels))
    out['ce.smooth_sum'] = np_of(F.cross_entropy(logits, labels, label_smoothing=0.1,
                                                 reduction='sum'))
    out['ce.ignore2_none'] = np_of(F.cross_entropy(logits, labels, ignore_index=2,
                                                   reduction='none'))
    out['ce.ignore2_mean'] = np_of(F.cross_entropy(logits, labels, ignore_index=2))
    logp = F.log_softmax(logits, dim=1)
    out['nll.logp'] = np_of(logp)
    for red in ('mean', 'sum', 'none'):
        out['nll.' + red] = np_of(F.nll_loss(logp, labels, reduction=red))
        out['nll.ignore2_' + red] = np_of(F.nll_loss(logp, labels, ignore_index=2,
                                                     reduction=red))


class Net(nn.Module):
    """The model of the interop tests: fc1 -> bn1 -> gelu -> ln -> fc2."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.bn1 = nn.BatchNorm1d(8)
        self.ln = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.ln(F.gelu(self.bn1(self.fc1(x)))))


def torch_model(g):
    torch.manual_seed(5)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    for _ in range(3):   # moves every weight and the running statistics
        x = torch.randn(16, 6, generator=g)
        loss = F.cross_entropy(net(x), torch.randint(0, 3, (16,), generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x = torch.randn(5, 6, generator=g)
    sd = {k: np_of(v) for k, v in net.state_dict().items()
          if not k.endswith('num_batches_tracked')}
    st.write(os.path.join(OUT, 'torch_model.safetensors'), sd,
             metadata={'producer': 'torch ' + torch.__version__, 'step': '3'})
    st.write(os.path.join(OUT, 'torch_model_io.safetensors'),
             {'x': np_of(x), 'y': np_of(net(x))})


def main():
    os.makedirs(OUT, exist_ok=True)
    for dt, tag in ((torch.float64, 'f64'), (torch.float32, 'f32')):
        g = torch.Generator().manual_seed(1234)
        torch.manual_seed(1234)      # module initializers draw from the global generator
        out = {}
        layer_cases(out, dt, g)
        activation_cases(out, dt, g)
        loss_cases(out, dt, g)
        st.write(os.path.join(OUT, 'layers_%s.safetensors' % tag), out,
                 metadata={'producer': 'make_nn_fixtures.py', 'torch': torch.__version__})
    torch_model(torch.Generator().manual_seed(99))
    print('wrote', OUT)


if __name__ == '__main__':
    main()
