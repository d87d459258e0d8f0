#!/usr/bin/python3
"""Reference values of nn/'s convolution layers, pooling, batch_norm2d and a
small CNN from PyTorch, in float64.

    /usr/bin/python3 tests/reference/make_cnn_fixtures.py

Writes tests/reference/cnn/cnn_f64.safetensors (committed, so CI needs no
PyTorch).  Per case NAME: the parameters under the names tapegrad's layers
register (NAME.weight, NAME.bias, ...: a non-strict nn_params_load fills a
layer), the input NAME.x, torch's output NAME.y, an output gradient NAME.g
and the gradients of sum(y * g): NAME.dx, NAME.dweight, NAME.dbias.  Batch
norm adds its running statistics after one training step and an
evaluation-mode output; num_batches_tracked is stored as F64 (tapegrad keeps
F32/F64 only).  Labels are stored as F64.  Read by tests/test_nn_conv.c.
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cnn')
DT = torch.float64


def np_of(t):
    return t.detach().cpu().numpy().copy()


def put_state(out, name, module):
    for k, v in module.state_dict().items():
        out[name + '.' + k] = np_of(v).astype(np.float64)


def put_grads(out, name, x, y, g, module=None):
    """g and the gradients of sum(y * g) w.r.t. x and the module's parameters."""
    out[name + '.y'] = np_of(y)
    out[name + '.g'] = np_of(g)
    (y * g).sum().backward()
    out[name + '.dx'] = np_of(x.grad)
    for k, p in (module.named_parameters() if module else ()):
        out[name + '.d' + k] = np_of(p.grad)


def conv_cases(out, g):
    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=DT)

    cases = (
        # name, module, input shape
        ('c2', nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
         (2, 3, 7, 6)),
        ('c2g', nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False), (2, 4, 5, 5)),
        ('c2s', nn.Conv2d(1, 5, 3), (3, 1, 6, 6)),
        ('c1', nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=2), (2, 3, 9)),
        ('c1g', nn.Conv1d(4, 2, 2, groups=2), (3, 4, 5)),
    )
    for name, mod, shape in cases:
        mod = mod.to(DT)
        put_state(out, name, mod)
        x = randn(*shape).requires_grad_()
        out[name + '.x'] = np_of(x)
        y = mod(x)
        put_grads(out, name, x, y, randn(*y.shape), mod)


def pool_cases(out, g):
    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=DT)

    cases = (
        ('mp', lambda x: F.max_pool2d(x, 2), (2, 3, 6, 7)),
        ('mp2', lambda x: F.max_pool2d(x, (3, 2), stride=(2, 1), padding=(1, 1)), (2, 2, 7, 5)),
        ('ap', lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), (2, 3, 7, 6)),
        ('ap2', lambda x: F.avg_pool2d(x, (2, 3), stride=(1, 2)), (1, 2, 5, 7)),
    )
    for name, fn, shape in cases:
        x = randn(*shape).requires_grad_()
        out[name + '.x'] = np_of(x)
        y = fn(x)
        put_grads(out, name, x, y, randn(*y.shape))


def batch_norm_cases(out, g):
    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=DT)

    for name, momentum in (('bn', 0.1), ('bn_m', 0.3)):
        bn = nn.BatchNorm2d(3, momentum=momentum).to(DT)
        with torch.no_grad():
            bn.weight.copy_(1 + 0.5 * randn(3))
            bn.bias.copy_(0.5 * randn(3))
        put_state(out, name, bn)              # running stats as created: 0, 1, 0 batches
        bn.train()
        x = (3 * randn(4, 3, 5, 4) + 2).requires_grad_()
        out[name + '.x'] = np_of(x)
        y = bn(x)
        put_grads(out, name, x, y, randn(*y.shape), bn)
        out[name + '.running_mean_after'] = np_of(bn.running_mean)
        out[name + '.running_var_after'] = np_of(bn.running_var)
        out[name + '.num_batches_tracked_after'] = np_of(bn.num_batches_tracked).astype(
            np.float64)
        bn.eval()
        xe = 3 * randn(2, 3, 4, 3) + 2
        out[name + '.x_eval'] = np_of(xe)
        out[name + '.y_eval'] = np_of(bn(xe))


class CNN(nn.Module):
    """The trainer's CNN (examples/fashion_mnist/model_cnn.c) with narrower
    layers (4 and 8 channels, 16 hidden instead of 32, 64 and 128), so the
    fixture stays small."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 8, 3)
        self.fc1 = nn.Linear(8 * 5 * 5, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def cnn_case(out, g):
    model = CNN().to(DT)
    put_state(out, 'cnn', model)
    x = torch.randn(3, 1, 28, 28, generator=g, dtype=DT)
    labels = torch.tensor([3, 9, 0])
    loss = F.cross_entropy(model(x), labels)
    loss.backward()
    out['cnn.x'] = np_of(x)
    out['cnn.labels'] = labels.numpy().astype(np.float64)
    out['cnn.loss'] = np_of(loss).reshape(1)
    for k, p in model.named_parameters():
        out['cnn.d' + k] = np_of(p.grad)


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(14)
    out = {}
    conv_cases(out, g)
    pool_cases(out, g)
    batch_norm_cases(out, g)
    cnn_case(out, g)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, 'cnn_f64.safetensors')
    st.write(path, out, {'torch': torch.__version__})
    print('wrote %s (%d tensors)' % (path, len(out)))


if __name__ == '__main__':
    main()
