#!/usr/bin/python3
"""tapegrad -> PyTorch checkpoint interop for nn/, run by hand (not in CI).

    /usr/bin/python3 tests/reference/check_nn_interop.py [BUILD_DIR]

Needs Debian's python3-torch and a built tests/test_nn_io (BUILD_DIR
defaults to ./build).  It runs test_nn_io with TG_NN_INTEROP_DIR set, so
tapegrad writes, in F32 and F64, a checkpoint of the Net below
(model_<dt>.safetensors, saved by nn_params_save) and an input with
tapegrad's eval- and training-mode outputs (io_<dt>.safetensors).  Each
checkpoint is read with safetensors.torch.load_file when that package is
installed, else with the small reader below, loaded into torch's Net with
load_state_dict(strict=True), and the outputs compared (F64 1e-10, F32
1e-5 relative).  The other direction (a torch-written checkpoint loaded by
tapegrad) is a committed fixture checked by test_nn_io itself.
Exit status 0 and "nn interop OK" when everything agrees.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_nn_fixtures import Net  # noqa: E402

DTYPES = {'F32': (torch.float32, 4), 'F64': (torch.float64, 8)}


def load_file(path):
    """Minimal safetensors reader (F32/F64, little-endian host)."""
    try:
        from safetensors.torch import load_file as st_load
        return st_load(path)
    except ImportError:
        pass
    with open(path, 'rb') as f:
        blob = f.read()
    (n,) = struct.unpack('<Q', blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, e in header.items():
        if name == '__metadata__':
            continue
        dt, size = DTYPES[e['dtype']]
        b, end = e['data_offsets']
        count = 1
        for d in e['shape']:
            count *= d
        assert end - b == count * size, name
        t = torch.frombuffer(bytearray(data[b:end]), dtype=dt) if count else torch.zeros(0, dtype=dt)
        out[name] = t.reshape(e['shape'])
    return out


def check(tag, dtype, folder, rtol, atol):
    sd = load_file(os.path.join(folder, 'model_%s.safetensors' % tag))
    io = load_file(os.path.join(folder, 'io_%s.safetensors' % tag))
    net = Net().to(dtype)
    net.load_state_dict(sd, strict=True)   # num_batches_tracked is filled in
    worst = 0.0
    with torch.no_grad():
        net.eval()
        for key in ('y_eval', 'y_train'):
            if key == 'y_train':
                net.train()
            y = net(io['x'])
            ok = torch.allclose(y, io[key], rtol=rtol, atol=atol)
            err = ((y - io[key]).abs() / io[key].abs().clamp_min(1e-3)).max().item()
            worst = max(worst, err)
            print('%s %s: max rel err %.3g %s' % (tag, key, err, 'ok' if ok else 'MISMATCH'))
            if not ok:
                return False
    return True


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else 'build'
    exe = os.path.join(build, 'tests', 'test_nn_io')
    if not os.path.exists(exe):
        raise SystemExit('%s not found: build first (meson setup %s && ninja -C %s)'
                         % (exe, build, build))
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, TG_NN_INTEROP_DIR=folder)
        r = subprocess.run([exe], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout, r.stderr)
            raise SystemExit('test_nn_io failed')
        ok = check('f32', torch.float32, folder, 1e-5, 1e-6)
        ok = check('f64', torch.float64, folder, 1e-10, 1e-12) and ok
    if not ok:
        raise SystemExit('nn interop FAILED')
    print('nn interop OK')


if __name__ == '__main__':
    main()
