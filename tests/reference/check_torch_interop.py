#!/usr/bin/python3
"""PyTorch <-> tapegrad safetensors interop check, run by hand (not in CI).

    /usr/bin/python3 tests/reference/check_torch_interop.py [BUILD_DIR]

Needs Debian's python3-torch and a built tests/test_safetensors (BUILD_DIR
defaults to ./build).  It
  1. writes torch_written.safetensors from torch tensors, with the
     `safetensors` package when installed, else with the writer below, which
     lays the file out as safetensors.torch.save_file does;
  2. runs test_safetensors with TG_ST_INTEROP_DIR set: tapegrad loads that
     file, checks every value, and writes tapegrad_written.safetensors;
  3. reads tapegrad's file with safetensors.torch.load_file when installed,
     else with the reader below, which applies the reference implementation's
     checks (header length cap, JSON object without duplicate keys, known
     dtypes, shape/offset agreement, offsets tiling the data exactly), and
     compares it bit for bit with what tapegrad should have written.
Exit status 0 and "interop OK" when both directions agree.
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import torch

MAX_HEADER = 100_000_000
DTYPES = {'F64': (torch.float64, 8), 'F32': (torch.float32, 4), 'F16': (torch.float16, 2),
          'BF16': (torch.bfloat16, 2), 'I64': (torch.int64, 8), 'I32': (torch.int32, 4),
          'I16': (torch.int16, 2), 'I8': (torch.int8, 1), 'U8': (torch.uint8, 1),
          'BOOL': (torch.bool, 1)}
NAMES = {v[0]: k for k, v in DTYPES.items()}


def raw_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.numel() == 0:
        return b''
    if sys.byteorder != 'little':
        raise SystemExit('this checker assumes a little-endian host')
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def save_file(tensors, path, metadata=None):
    """Layout of safetensors.torch.save_file: data sorted by dtype size
    (largest first) then name, __metadata__ first, header padded to 8."""
    order = sorted(tensors, key=lambda k: (-DTYPES[NAMES[tensors[k].dtype]][1], k))
    header, blobs, off = {}, [], 0
    if metadata:
        header['__metadata__'] = metadata
    for name in order:
        t = tensors[name]
        raw = raw_bytes(t)
        header[name] = {'dtype': NAMES[t.dtype], 'shape': list(t.shape),
                        'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError('duplicate keys in the header')
    return dict(pairs)


def load_file(path):
    """Returns ({name: tensor}, metadata), refusing what the reference refuses."""
    with open(path, 'rb') as f:
        buf = f.read()
    if len(buf) < 8:
        raise ValueError('file too short')
    (n,) = struct.unpack('<Q', buf[:8])
    if n > MAX_HEADER or 8 + n > len(buf):
        raise ValueError('bad header length %d' % n)
    head = buf[8:8 + n]
    if not head.startswith(b'{'):
        raise ValueError('header does not start with {')
    header = json.loads(head.decode('utf-8'), object_pairs_hook=_no_duplicates)
    if not isinstance(header, dict):
        raise ValueError('header is not an object')
    metadata = header.pop('__metadata__', None)
    if metadata is not None and not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError('metadata values must be strings')
    data = buf[8 + n:]
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]['data_offsets']))
    at, out = 0, {}
    for name, e in entries:
        dtype, size = DTYPES[e['dtype']]
        shape = e['shape']
        begin, end = e['data_offsets']
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError('%s: bad shape %r' % (name, shape))
        if begin != at or end < begin:
            raise ValueError('%s: offsets %r do not follow on from %d' % (name, [begin, end], at))
        if end - begin != math.prod(shape) * size:
            raise ValueError('%s: offsets %r disagree with shape %r' % (name, [begin, end], shape))
        chunk = data[begin:end]
        if len(chunk) != end - begin:
            raise ValueError('%s: data truncated' % name)
        if end == begin:
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            out[name] = torch.frombuffer(bytearray(chunk), dtype=dtype).reshape(shape)
        at = end
    if at != len(data):
        raise ValueError('%d data bytes, tensors cover %d' % (len(data), at))
    return out, metadata or {}


def torch_side():
    w = (torch.arange(12, dtype=torch.float64) * 0.25 - 1).float().reshape(3, 4)
    b = 1.0 / (torch.arange(4, dtype=torch.float64) + 1)
    return {'fc1.weight': w, 'fc1.bias': b, 'scale': torch.tensor(2.5, dtype=torch.float32),
            'empty': torch.empty(0, 5, dtype=torch.float32)}


def tapegrad_side():
    """What test_safetensors_torch_interop writes (its ramp: i * scale - 1)."""
    def ramp(n, scale):
        return torch.tensor([i * scale - 1.0 for i in range(n)], dtype=torch.float64)
    return {'x': ramp(24, 0.5).float().reshape(2, 3, 4), 'y': ramp(5, 1.0 / 3),
            'z': torch.tensor(3.141592653589793, dtype=torch.float64),
            'empty': torch.empty(3, 0, dtype=torch.float32)}, {'writer': 'tapegrad',
                                                               'note': 'caf\u00e9'}


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else 'build'
    exe = os.path.join(build, 'tests', 'test_safetensors')
    if not os.access(exe, os.X_OK):
        raise SystemExit('%s not found: build the project first (or pass BUILD_DIR)' % exe)
    try:
        import safetensors
        import safetensors.torch as st_torch

        def reader(p):
            with safetensors.safe_open(p, framework='pt') as f:
                return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
        writer, how = st_torch.save_file, 'the safetensors package'
    except ImportError:
        writer, reader, how = save_file, load_file, 'the built-in reader/writer'
    print('using %s, torch %s' % (how, torch.__version__))
    with tempfile.TemporaryDirectory() as d:
        writer(torch_side(), os.path.join(d, 'torch_written.safetensors'), metadata={'format': 'pt'})
        env = dict(os.environ, TG_ST_INTEROP_DIR=d, TG_TEST_FILTER='test_safetensors_torch_interop')
        r = subprocess.run([exe], env=env, capture_output=True, text=True)
        print(r.stdout.strip())
        if r.returncode != 0 or 'OK ] test_safetensors_torch_interop' not in r.stdout:
            print(r.stderr)
            raise SystemExit('tapegrad did not load the torch-written file')
        got, meta = reader(os.path.join(d, 'tapegrad_written.safetensors'))
    want, want_meta = tapegrad_side()
    bad = []
    if set(got) != set(want):
        bad.append('names %s != %s' % (sorted(got), sorted(want)))
    for k in want:
        if k in got:
            g, w = got[k], want[k]
            if g.dtype != w.dtype or g.shape != w.shape or not torch.equal(g, w):
                bad.append('%s: got %s %s, want %s %s' % (k, g.dtype, list(g.shape), w.dtype,
                                                          list(w.shape)))
    if meta != want_meta:
        bad.append('metadata %r != %r' % (meta, want_meta))
    if bad:
        raise SystemExit('interop FAILED:\n  ' + '\n  '.join(bad))
    print('interop OK: tapegrad read the torch file, torch read the tapegrad file bit for bit')


if __name__ == '__main__':
    main()
