#!/usr/bin/python3
"""Loads a model saved by the Fashion-MNIST trainer (--save) into a PyTorch
module whose Linear layers are named fc1, fc2, ... (the CNN of --model cnn:
Conv2d conv1, conv2 and Linear fc1, fc2; a file with conv1.weight is taken
for one) and prints its test accuracy, which should equal the trainer's
final test accuracy (up to the last digit or so: PyTorch sums in another
order).  Run by hand:

    build-release/examples/fashion_mnist --save /tmp/fm.safetensors
    /usr/bin/python3 examples/fashion_mnist/check_torch_load.py /tmp/fm.safetensors
    build-release/examples/fashion_mnist --model cnn --save /tmp/cnn.safetensors
    /usr/bin/python3 examples/fashion_mnist/check_torch_load.py /tmp/cnn.safetensors

Uses the `safetensors` package when installed, else parses the file with
json + struct (8-byte little-endian header length, JSON header, raw data).
"""
import gzip
import json
import struct
import sys

import torch
import torch.nn.functional as F

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860405969887955, 0.3530242445149225


def read_safetensors(path):
    try:
        from safetensors.torch import load_file
        return load_file(path)
    except ImportError:
        pass
    dtypes = {"F32": torch.float32, "F64": torch.float64}
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        lo, hi = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[lo:hi]), dtype=dtypes[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out


def read_idx(path):
    with gzip.open(path, "rb") as f:
        blob = f.read()
    ndim = blob[3]
    shape = struct.unpack(">" + "I" * ndim, blob[4:4 + 4 * ndim])
    t = torch.frombuffer(bytearray(blob[4 + 4 * ndim:]), dtype=torch.uint8)
    return t.reshape(shape)


class MLP(torch.nn.Module):
    """784 -> widths... -> 10 with ReLU; layers fc1..fcN as the trainer names them."""

    def __init__(self, widths):
        super().__init__()
        self.n = len(widths) - 1
        for i in range(self.n):
            setattr(self, f"fc{i + 1}", torch.nn.Linear(widths[i], widths[i + 1]))

    def forward(self, x):
        for i in range(self.n):
            x = getattr(self, f"fc{i + 1}")(x)
            if i + 1 < self.n:
                x = torch.relu(x)
        return x


class CNN(torch.nn.Module):
    """The trainer's --model cnn (examples/fashion_mnist/model_cnn.c)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3)
        self.conv2 = torch.nn.Conv2d(32, 64, 3)
        self.fc1 = torch.nn.Linear(1600, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x.reshape(-1, 1, 28, 28))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} MODEL.safetensors")
    prefixes = ("fc", "conv")  # a checkpoint (PATH.ckpt) also holds optimizer state
    state = {k: v for k, v in read_safetensors(sys.argv[1]).items() if k.startswith(prefixes)}
    if "conv1.weight" in state:
        model, what = CNN(), "CNN"
    else:
        n = len([k for k in state if k.endswith(".weight")])
        widths = [state["fc1.weight"].shape[1]] + [state[f"fc{i}.weight"].shape[0]
                                                   for i in range(1, n + 1)]
        model, what = MLP(widths), f"{'-'.join(map(str, widths))} MLP"
    model.float().load_state_dict({k: v.float() for k, v in state.items()})  # strict
    images = read_idx(f"{DATA}/t10k-images-idx3-ubyte.gz").reshape(-1, 784)
    labels = read_idx(f"{DATA}/t10k-labels-idx1-ubyte.gz").long()
    x = ((images.float() / 255) - MEAN) / STD
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 1000]).argmax(dim=1) for i in range(0, len(x), 1000)])
    hits = int((pred == labels).sum())
    print(f"PyTorch {what}: test accuracy "
          f"{100 * hits / len(labels):.2f}% ({hits}/{len(labels)})")


if __name__ == "__main__":
    main()
