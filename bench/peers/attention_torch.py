"""PyTorch peer of bench/attention.c: causal attention written out
(softmax(q k^T / sqrt(d) + causal mask) v; torch 1.13 has no fused
scaled_dot_product_attention), float32, the GPT's shape: batch 12, 4
heads, T 64, head width 32.  Per repetition forward + backward into
q, k, v gradients (set to None, untimed); prints the median as
attn_torch_ms.
Usage: attention_torch.py [REPEATS] [TORCH_THREADS]
"""
import math
import statistics
import sys
import time

import torch


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    torch.manual_seed(0)
    b, h, t, d = 12, 4, 64, 32
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
    upper = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
    times = []
    for r in range(reps + 3):  # 3 warm-up rounds
        t0 = time.perf_counter()
        s = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d)
        o = torch.matmul(torch.softmax(s.masked_fill(upper, float('-inf')), -1), v)
        o.sum().backward()
        if r >= 3:
            times.append((time.perf_counter() - t0) * 1e3)
        for x in (q, k, v):
            x.grad = None
    print('attn_torch_ms %.4f' % statistics.median(times))


if __name__ == '__main__':
    main()
