"""PyTorch peer of the main job: the 784-256-128-10 ReLU MLP on
Fashion-MNIST, batch 128, Adam(lr 1e-3), seconds per training epoch
(evaluation excluded) and peak RSS.
Usage: mlp_torch.py EPOCHS [TORCH_THREADS]   (default 1: PyTorch's best
two-core setting here is 1 intra-op thread with OPENBLAS_NUM_THREADS=2 and
OMP_NUM_THREADS=1 in the environment; 2 intra-op threads ran 3x slower)
Prints "mlp_epoch_s <median>", "test_acc <last>", "peak_rss_mb <n>".
"""
import gzip
import resource
import statistics
import struct
import sys
import time

import numpy as np
import torch

DATA = '/usr/share/datasets/fashion-mnist'


def idx(name):
    with gzip.open('%s/%s' % (DATA, name), 'rb') as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack('>' + 'I' * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1  # see the docstring
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    xtr = torch.from_numpy(idx('train-images-idx3-ubyte.gz').reshape(-1, 784).copy())
    ytr = torch.from_numpy(idx('train-labels-idx1-ubyte.gz').astype(np.int64))
    xte = torch.from_numpy(idx('t10k-images-idx3-ubyte.gz').reshape(-1, 784).copy())
    yte = torch.from_numpy(idx('t10k-labels-idx1-ubyte.gz').astype(np.int64))
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for _ in range(epochs):
        perm = torch.randperm(60000)
        t0 = time.perf_counter()
        for i in range(0, 60000, 128):
            b = perm[i:i + 128]
            x = xtr[b].float() / 255.0
            loss = torch.nn.functional.cross_entropy(model(x), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
        with torch.no_grad():
            acc = (model(xte.float() / 255.0).argmax(1) == yte).float().mean().item()
    print('mlp_epoch_s %.4f' % statistics.median(times))
    print('test_acc %.4f' % acc)
    print('peak_rss_mb %.1f' % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


if __name__ == '__main__':
    main()
