#!/usr/bin/python3
"""Loads a model saved by charlm (--save) into the PyTorch peer's model
(bench/peers/charlm_torch.py: the same names and layouts) with a strict
load_state_dict, evaluates it on the same held-out windows of the same text,
and compares the validation loss with the one charlm computed and stored in
the file's metadata.  Exit status 0 when they agree within 1e-5 (nats per
character), 1 otherwise.

    build-release/examples/charlm --model lstm --steps 300 --save /tmp/lstm.safetensors
    /usr/bin/python3 examples/charlm/check_torch_load.py /tmp/lstm.safetensors [--data FILE]
"""
import argparse
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                                'bench', 'peers'))
import charlm_torch  # noqa: E402

TOL = 1e-5


def read_safetensors(path):
    """The tensors and the metadata of a safetensors file (json + struct)."""
    dtypes = {'F32': torch.float32, 'F64': torch.float64}
    with open(path, 'rb') as f:
        blob = f.read()
    (n,) = struct.unpack('<Q', blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop('__metadata__', {})
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        lo, hi = info['data_offsets']
        t = torch.frombuffer(bytearray(data[lo:hi]), dtype=dtypes[info['dtype']])
        out[name] = t.reshape(info['shape']).clone()
    return out, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('model')
    ap.add_argument('--data', default=charlm_torch.DATA)
    a = ap.parse_args()
    state, meta = read_safetensors(a.model)
    kind, seq = meta['model'], int(meta['seq'])
    ids, vocab, split = charlm_torch.load_text(a.data)
    text_vocab = sorted(set(open(a.data, 'rb').read()))
    if bytes(text_vocab).hex() != meta['vocab_hex']:
        sys.exit('check_torch_load: %s is not the text the model was trained on' % a.data)
    model = charlm_torch.make_model(kind, vocab, seq)
    model.load_state_dict(state, strict=True)
    ours = float(meta['val_loss'])
    theirs = charlm_torch.evaluate(model, ids[split:], seq, int(meta['eval_windows']))
    diff = abs(ours - theirs)
    print('%s after step %s: validation loss (nats/char) charlm %.9f, PyTorch %.9f, '
          '|diff| %.3g (tolerance %g)' % (kind, meta['step'], ours, theirs, diff, TOL))
    sys.exit(0 if diff <= TOL else 1)


if __name__ == '__main__':
    main()
