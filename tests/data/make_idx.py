#!/usr/bin/env python3
"""Writes the IDX fixtures of tests/test_data.c into tests/data/idx/.

Plain python3 (struct + gzip), deterministic output (gzip mtime 0), so
running it again reproduces the committed files byte for byte:

    python3 tests/data/make_idx.py

IDX: 00 00 <type> <ndim>, ndim big-endian u32 dims, big-endian elements.
The values below are repeated in tests/test_data.c.
"""
import gzip
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "idx")

# type name -> (code, struct format, values of a [2, 3] array)
TYPES = {
    "u8": (0x08, "B", [0, 1, 127, 128, 254, 255]),
    "i8": (0x09, "b", [-128, -1, 0, 1, 100, 127]),
    "i16": (0x0B, "h", [-32768, -1, 0, 1, 258, 32767]),
    "i32": (0x0C, "i", [-2147483648, -1, 0, 1, 16909060, 2147483647]),
    "f32": (0x0D, "f", [-1.5, 0.0, 0.1, 3.25, 1e30, -2.5e-3]),
    "f64": (0x0E, "d", [-1.5, 0.0, 0.1, 3.25, 1e300, -2.5e-3]),
}


def header(code, dims, ndim=None):
    ndim = len(dims) if ndim is None else ndim
    return bytes([0, 0, code, ndim]) + b"".join(struct.pack(">I", d) for d in dims)


def idx(code, fmt, dims, values):
    return header(code, dims) + b"".join(struct.pack(">" + fmt, v) for v in values)


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def write(name, data):
    path = os.path.join(OUT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def u8(dims, values):
    return idx(0x08, "B", dims, values)


def valid():
    for name, (code, fmt, values) in TYPES.items():
        data = idx(code, fmt, [2, 3], values)
        write(f"valid_{name}.idx", data)
        write(f"valid_{name}.idx.gz", gz(data))
    write("valid_8d.idx", u8([1, 1, 1, 1, 1, 1, 2, 2], [1, 2, 3, 4]))
    write("valid_empty.idx", u8([3, 0], []))


def malformed():
    write("empty.idx", b"")
    write("short_magic.idx", b"\x00\x00")
    write("bad_magic.idx", bytes([0x01, 0x02, 0x08, 0x01]) + struct.pack(">I", 1) + b"\x07")
    write("bad_type.idx", header(0x0A, [2]) + b"\x01\x02")
    write("zero_dims.idx", header(0x08, [], ndim=0) + b"\x01")
    write("too_many_dims.idx", header(0x08, [1] * 9) + b"\x01")
    write("truncated_header.idx", header(0x08, [28], ndim=3))
    write("truncated_data.idx", header(0x08, [10]) + bytes(range(5)))
    write("truncated_data.idx.gz", gz(header(0x08, [10]) + bytes(range(5))))
    write("truncated_elem.idx", header(0x0C, [4]) + bytes(15))
    write("trailing.idx", u8([3], [1, 2, 3]) + b"\x04")
    write("trailing.idx.gz", gz(u8([3], [1, 2, 3]) + b"junk"))
    write("overflow.idx", header(0x08, [0xFFFFFFFF] * 3))
    write("too_big.idx", header(0x0E, [65536, 4096]))  # 2 GiB of f64
    write("huge_truncated.idx", header(0x08, [1 << 30]) + bytes(10))  # 1 GiB promised
    # gzip damage: flipped deflate bytes, a wrong CRC, a cut stream, a bad header
    payload = u8([40, 100], [(i * 37 + i // 7) % 256 for i in range(4000)])
    good = bytearray(gz(payload))
    bad = bytearray(good)
    for i in range(len(bad) // 2, len(bad) // 2 + 8):
        bad[i] ^= 0xA5
    write("corrupt.idx.gz", bytes(bad))
    crc = bytearray(good)
    crc[-8] ^= 0xFF
    write("bad_crc.idx.gz", bytes(crc))
    write("cut.idx.gz", bytes(good[: len(good) // 2]))
    write("bad_gzip_header.idx.gz", b"\x1f\x8b\x07\x00" + bytes(20))


def datasets():
    images = list(range(30))  # [5, 2, 3]
    write("ds_images.idx", u8([5, 2, 3], images))
    write("ds_labels.idx", u8([5], [0, 1, 2, 1, 0]))
    write("ds_labels_i32.idx.gz", gz(idx(0x0C, "i", [5], [3, 1, 2, 1, 0])))
    write("ds_labels_short.idx", u8([4], [0, 1, 2, 1]))
    write("ds_labels_range.idx", u8([5], [0, 1, 10, 1, 0]))
    write("ds_labels_neg.idx", idx(0x09, "b", [5], [0, 1, -1, 1, 0]))
    write("ds_labels_2d.idx", u8([5, 1], [0, 1, 2, 1, 0]))
    write("ds_labels_f32.idx", idx(0x0D, "f", [5], [0, 1, 2, 1, 0]))
    write("ds_images_1d.idx", u8([5], [0, 1, 2, 3, 4]))
    write("ds_images_i16.idx", idx(0x0B, "h", [5, 2], list(range(10))))

    def mnist(folder, prefix, n, n_labels=None, gz_images=True):
        pix = [(i * 7 + j) % 256 for i in range(n) for j in range(784)]
        im = u8([n, 28, 28], pix)
        lb = u8([n if n_labels is None else n_labels],
                [i % 10 for i in range(n if n_labels is None else n_labels)])
        if gz_images:
            write(f"{folder}/{prefix}-images-idx3-ubyte.gz", gz(im))
        else:
            write(f"{folder}/{prefix}-images-idx3-ubyte", im)
        write(f"{folder}/{prefix}-labels-idx1-ubyte.gz", gz(lb))

    mnist("mnist_mini", "train", 12)
    mnist("mnist_mini", "t10k", 5, gz_images=False)  # the plain-name fallback
    mnist("mnist_badcount", "train", 3, n_labels=4)


if __name__ == "__main__":
    valid()
    malformed()
    datasets()
