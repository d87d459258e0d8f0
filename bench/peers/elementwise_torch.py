"""PyTorch peer of bench/elementwise.c: nanoseconds per element of each
transcendental op, forward only, f32, one thread (torch.set_num_threads(1)),
on a tensor of N elements spread evenly over the op's useful range (the
same ranges as the C side), output preallocated (out=) so the time is the
kernel's; median of REPEATS timed calls after a warm-up, each timed in the
thread's CPU time (time.thread_time_ns: a call preempted by another
process on a shared machine is not charged for the wait).
Usage: elementwise_torch.py [N] [REPEATS]
Prints "ew_<op>_ns <ns per element>" per op.
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

# op: (lo, hi, function(x, out)); the ranges match bench/elementwise.c
OPS = {
    'exp': (-10, 10, lambda x, o: torch.exp(x, out=o)),
    'log': (0.01, 100, lambda x, o: torch.log(x, out=o)),
    'tanh': (-5, 5, lambda x, o: torch.tanh(x, out=o)),
    'sigmoid': (-10, 10, lambda x, o: torch.sigmoid(x, out=o)),
    'erf': (-3, 3, lambda x, o: torch.erf(x, out=o)),
    'gelu': (-5, 5, lambda x, o: torch._C._nn.gelu(x, out=o)),
    'gelu_tanh': (-5, 5, lambda x, o: torch._C._nn.gelu(x, approximate='tanh', out=o)),
    'softplus': (-10, 10, lambda x, o: torch._C._nn.softplus(x, out=o)),
    'sin': (-10, 10, lambda x, o: torch.sin(x, out=o)),
    'cos': (-10, 10, lambda x, o: torch.cos(x, out=o)),
    'pow_scalar': (0.01, 10, lambda x, o: torch.pow(x, 2.5, out=o)),
    'pow': (0.01, 10, lambda x, o: torch.pow(x, x, out=o)),
}


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 20
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 21
    torch.set_num_threads(1)
    for name, (lo, hi, fn) in OPS.items():
        x = torch.linspace(lo, hi, n, dtype=torch.float32)
        o = torch.empty_like(x)
        fn(x, o)
        times = []
        for _ in range(reps):
            t0 = time.thread_time_ns()
            fn(x, o)
            times.append(time.thread_time_ns() - t0)
        print('ew_%s_ns %.4f' % (name, statistics.median(times) / n))


if __name__ == '__main__':
    main()
