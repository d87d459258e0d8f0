"""PyTorch peer of bench/conv.c: the convolution and pooling layers of the
Fashion-MNIST CNN (batch 64, float32: conv 1->32 3x3, max pool 2, conv
32->64 3x3, max pool 2), each forward + backward alone, then the whole
model's forward + backward (each layer's loss is sum(layer(x) * g) for a
fixed random g; the model: relu, linear 1600->128, relu, linear 128->10,
cross-entropy).  The image needs no gradient, later inputs do.  Milliseconds
per batch, the median of REPEATS runs of 10 batches each; with one thread
the clock is the process's CPU time (as bench_conv's), else wall time.
Usage: conv_torch.py [REPEATS] [TORCH_THREADS]   (defaults 15, 2; run with
OMP_NUM_THREADS set to the same count)
Prints "<name>_ms <value>" lines, as bench_conv.
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

BATCH, INNER = 64, 10


def rnd(shape, a, grad):
    return ((torch.rand(shape) * 2 - 1) * a).requires_grad_(grad)


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    x1 = rnd((BATCH, 1, 28, 28), 1, False)
    w1, b1 = rnd((32, 1, 3, 3), 1 / 3, True), rnd((32,), 1 / 3, True)
    p1 = rnd((BATCH, 32, 26, 26), 1, True)
    x2 = rnd((BATCH, 32, 13, 13), 1, True)
    w2, b2 = rnd((64, 32, 3, 3), 1 / 17, True), rnd((64,), 1 / 17, True)
    p2 = rnd((BATCH, 64, 11, 11), 1, True)
    fw1, fb1 = rnd((128, 1600), 1 / 40, True), rnd((128,), 1 / 40, True)
    fw2, fb2 = rnd((10, 128), 1 / 11, True), rnd((10,), 1 / 11, True)
    g1, gp1 = rnd((BATCH, 32, 26, 26), 1, False), rnd((BATCH, 32, 13, 13), 1, False)
    g2, gp2 = rnd((BATCH, 64, 11, 11), 1, False), rnd((BATCH, 64, 5, 5), 1, False)
    labels = torch.arange(BATCH) % 10

    def model():
        h = F.max_pool2d(F.relu(F.conv2d(x1, w1, b1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, w2, b2)), 2).reshape(BATCH, 1600)
        h = F.relu(F.linear(h, fw1, fb1))
        return F.cross_entropy(F.linear(h, fw2, fb2), labels), None

    layers = [
        ('conv1', lambda: (F.conv2d(x1, w1, b1), g1)),
        ('pool1', lambda: (F.max_pool2d(p1, 2), gp1)),
        ('conv2', lambda: (F.conv2d(x2, w2, b2), g2)),
        ('pool2', lambda: (F.max_pool2d(p2, 2), gp2)),
        ('model', model),
    ]
    clock = time.process_time if threads == 1 else time.perf_counter
    print('threads %d' % threads)
    params = [w1, b1, p1, x2, w2, b2, p2, fw1, fb1, fw2, fb2]
    for name, fn in layers:
        ms = []
        for r in range(repeats + 1):
            t0 = clock()
            for _ in range(INNER):
                y, g = fn()
                (y if g is None else (y * g).sum()).backward()
                for p in params:
                    p.grad = None
            if r:
                ms.append((clock() - t0) * 1e3 / INNER)
        print('%s_ms %.4f' % (name, statistics.median(ms)))


if __name__ == '__main__':
    main()
