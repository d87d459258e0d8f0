"""Per-op overhead of PyTorch on one-element tensors: the 1000-step chain
y = tanh(y * 1.0001 + 0.1), forward + backward, ns per op (3 ops a step).
Prints one line: "chain_ns_per_op <median>".  Usage: chain_torch.py [repeats]
"""
import statistics
import sys
import time

import torch

torch.set_num_threads(1)
repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 30
y0 = torch.tensor([0.5], requires_grad=True)
times = []
for r in range(repeats + 3):
    t0 = time.perf_counter()
    y = y0
    for _ in range(1000):
        y = torch.tanh(y * 1.0001 + 0.1)
    y.backward()
    y0.grad = None
    if r >= 3:
        times.append((time.perf_counter() - t0) / 3000 * 1e9)
print("chain_ns_per_op %.2f" % statistics.median(times))
