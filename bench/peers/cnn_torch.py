"""PyTorch peer of bench/cnn.c: the Fashion-MNIST CNN of `fashion_mnist
--model cnn` -- conv(1->32, 3x3) relu maxpool2 conv(32->64, 3x3) relu
maxpool2 flatten linear(1600->128) relu linear(128->10) -- batch 64,
Adam(lr 1e-3), inputs normalized as the trainer does ((x/255 - mean) /
std); with SCHEDULE cosine the learning rate follows a per-batch cosine
over all EPOCHS down to 0 (torch's CosineAnnealingLR, as the trainer's
--schedule cosine).  Seconds per training epoch (evaluation excluded), test
accuracy after the last epoch, peak RSS.
Usage: cnn_torch.py EPOCHS [TORCH_THREADS] [SCHEDULE]   (defaults 2, 2, none;
PyTorch's best two-core setting for this model is 2 intra-op threads with
OMP_NUM_THREADS=2 and OPENBLAS_NUM_THREADS=1 in the environment)
Prints "cnn_epoch_s <median>", "test_acc <last>", "peak_rss_mb <n>".
"""
import gzip
import math
import resource
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = '/usr/share/datasets/fashion-mnist'
MEAN, STD = 0.2860405969887955, 0.3530242445149225
BATCH = 64


def idx(name):
    with gzip.open('%s/%s' % (DATA, name), 'rb') as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack('>' + 'I' * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


class CNN(nn.Module):
    """The trainer's CNN, with its parameter names (conv1, conv2, fc1, fc2)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.fc1 = nn.Linear(1600, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def images(name):
    x = torch.from_numpy(idx(name).copy()).float().div_(255).sub_(MEAN).div_(STD)
    return x.reshape(-1, 1, 28, 28)


def main():
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    cosine = len(sys.argv) > 3 and sys.argv[3] == 'cosine'
    torch.manual_seed(0)
    xtr, xte = images('train-images-idx3-ubyte.gz'), images('t10k-images-idx3-ubyte.gz')
    ytr = torch.from_numpy(idx('train-labels-idx1-ubyte.gz').astype(np.int64))
    yte = torch.from_numpy(idx('t10k-labels-idx1-ubyte.gz').astype(np.int64))
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = epochs * math.ceil(len(ytr) / BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    times = []
    for _ in range(epochs):
        perm = torch.randperm(len(ytr))
        model.train()
        t0 = time.perf_counter()
        for i in range(0, len(ytr), BATCH):
            b = perm[i:i + BATCH]
            loss = F.cross_entropy(model(xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched:
                sched.step()
        times.append(time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            hits = sum(int((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum())
                       for i in range(0, len(yte), 1000))
        print('epoch %d: %.2f s, test accuracy %.4f' % (len(times), times[-1],
                                                        hits / len(yte)), file=sys.stderr)
    print('cnn_epoch_s %.4f' % statistics.median(times))
    print('test_acc %.4f' % (hits / len(yte)))
    print('peak_rss_mb %.1f' % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


if __name__ == '__main__':
    main()
