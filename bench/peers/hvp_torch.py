"""PyTorch peer of bench/hvp.c: one gradient against one Hessian-vector
product of the 784-256-128-10 tanh MLP's mean cross-entropy, float32,
batch 128 of random inputs and labels.  Per repetition, from the forward
to the result:
  gradient: forward + loss.backward() (grads set to None, untimed);
  gradients: forward + torch.autograd.grad(loss, params);
  HVP: forward + g = torch.autograd.grad(loss, params, create_graph=True),
       then torch.autograd.grad(sum <g, v>, params): the standard double
       backward (reverse-over-reverse).
Prints medians: hvp_forward_ms, hvp_grad_ms, hvp_gradients_ms, hvp_hvp_ms,
hvp_over_grad (HVP / gradient, of the medians) and hvp_over_grad_paired
(the median of each repetition's ratio: steadier on a busy machine).
Usage: hvp_torch.py [REPEATS] [TORCH_THREADS] [BATCH]
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.Tanh(),
                                torch.nn.Linear(256, 128), torch.nn.Tanh(),
                                torch.nn.Linear(128, 10))
    params = list(model.parameters())
    v = [torch.randn_like(p) for p in params]
    x = torch.rand(batch, 784)
    y = torch.randint(0, 10, (batch,))

    def loss():
        return F.cross_entropy(model(x), y)

    fwd, grad, grads, hvp = [], [], [], []
    for r in range(reps + 3):  # 3 warm-up rounds
        t0 = time.perf_counter()
        loss()
        t1 = time.perf_counter()
        loss().backward()
        t2 = time.perf_counter()
        for p in params:
            p.grad = None
        t3 = time.perf_counter()
        torch.autograd.grad(loss(), params)
        t4 = time.perf_counter()
        g = torch.autograd.grad(loss(), params, create_graph=True)
        torch.autograd.grad(sum((gi * vi).sum() for gi, vi in zip(g, v)), params)
        t5 = time.perf_counter()
        if r >= 3:
            fwd.append(t1 - t0)
            grad.append(t2 - t1)
            grads.append(t4 - t3)
            hvp.append(t5 - t4)
    med = {k: statistics.median(s) * 1e3 for k, s in
           (('forward', fwd), ('grad', grad), ('gradients', grads), ('hvp', hvp))}
    for k in ('forward', 'grad', 'gradients', 'hvp'):
        print('hvp_%s_ms %.4f' % (k, med[k]))
    print('hvp_over_grad %.3f' % (med['hvp'] / med['grad']))
    print('hvp_over_grad_paired %.3f' % statistics.median(h / g for h, g in zip(hvp, grad)))


if __name__ == '__main__':
    main()
