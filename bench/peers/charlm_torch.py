"""PyTorch peer of examples/charlm: the same character-level language models
on the same text, split, batches and evaluation, so bits per character and
milliseconds per training step compare in one run.

  gpt:  nanoGPT's CPU "baby" config: 4 pre-LN blocks, 4 heads, d 128,
        block 64, batch 12, exact GELU, no dropout, AdamW(lr 1e-3, PyTorch's
        other defaults), gradient norm clipped to 1; nanoGPT's init (normal
        0.02, residual projections 0.02 / sqrt(2 layers), zero biases).
  lstm: embedding 64, nn.LSTM 1 layer hidden 256 (fused), seq 64, batch 32,
        Adam(lr 2e-3), clip 1; PyTorch's default init.
  gru:  the same with nn.GRU.

Parameter names are tapegrad's (tok_emb, pos_emb, blocks.I.ln1/attn/ln2/fc/
proj, ln_f, head; emb, rnn, head), so a checkpoint saved by charlm loads
with load_state_dict (examples/charlm/check_torch_load.py).

Usage: charlm_torch.py [--model gpt|lstm|gru] [--steps N] [--data FILE]
       [--seed N] [--eval-windows N] [--threads N]
Run with OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=2 (PyTorch's best two-core
setting here; bench/run sets them).  Prints "charlm_ms_per_step X" (training
wall time over the steps, evaluation excluded), "train_bpc X" (mean of the
last 50 steps) and "val_bpc X" after the last step.
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = '/var/cache/tapegrad/kjv.txt'
CONFIGS = {
    'gpt': dict(seq=64, batch=12, lr=1e-3),
    'lstm': dict(seq=64, batch=32, lr=2e-3),
    'gru': dict(seq=64, batch=32, lr=2e-3),
}
EVAL_BATCH = 32


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)

    def forward(self, x, mask):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab, block=64, layers=4, heads=4, d=128):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d)
        self.pos_emb = nn.Embedding(block, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        for name, p in self.named_parameters():
            if name.endswith('bias'):
                nn.init.zeros_(p)
            elif 'ln' not in name:
                resid = name.endswith('proj.weight')   # attn.out_proj, mlp proj
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers) if resid else 0.02)

    def forward(self, idx):
        t = idx.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(t))
        for b in self.blocks:
            x = b(x, mask)
        return self.head(self.ln_f(x))


class RNNLM(nn.Module):
    def __init__(self, vocab, cell, emb=64, hidden=256):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.rnn = (nn.LSTM if cell == 'lstm' else nn.GRU)(emb, hidden, 1, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, idx):
        return self.head(self.rnn(self.emb(idx))[0])


def make_model(kind, vocab, block=64):
    return GPT(vocab, block=block) if kind == 'gpt' else RNNLM(vocab, kind)


def load_text(path):
    """Bytes of the file as ids into its sorted set of distinct bytes, and
    the split point: the last 10% is held out (charlm's rule)."""
    raw = open(path, 'rb').read()
    vocab = sorted(set(raw))
    lut = torch.zeros(256, dtype=torch.long)
    lut[torch.tensor(vocab)] = torch.arange(len(vocab))
    ids = lut[torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()]
    return ids, len(vocab), len(raw) - len(raw) // 10


def eval_windows(n_val, seq, cap):
    """Start offsets (in the held-out part) of the evaluation windows: the
    non-overlapping windows of seq + 1 characters stepping seq, or cap of
    them evenly spaced (cap 0: all)."""
    n = (n_val - 1) // seq
    k = n if cap <= 0 or cap >= n else cap
    return [(i * n // k) * seq for i in range(k)]


@torch.no_grad()
def evaluate(model, val, seq, cap):
    """Mean cross-entropy in nats over every predicted character of the
    evaluation windows (each window starts from an empty context)."""
    model.eval()
    starts = eval_windows(len(val), seq, cap)
    total, count = 0.0, 0
    for i in range(0, len(starts), EVAL_BATCH):
        s = starts[i:i + EVAL_BATCH]
        x = torch.stack([val[o:o + seq] for o in s])
        y = torch.stack([val[o + 1:o + seq + 1] for o in s])
        logits = model(x)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(),
                                 y.reshape(-1), reduction='sum').item()
        count += y.numel()
    model.train()
    return total / count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', choices=sorted(CONFIGS), default='gpt')
    ap.add_argument('--steps', type=int, default=2000)
    ap.add_argument('--data', default=DATA)
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--eval-windows', type=int, default=512)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = CONFIGS[a.model]
    ids, vocab, split = load_text(a.data)
    train, val = ids[:split], ids[split:]
    model = make_model(a.model, vocab)
    if a.model == 'gpt':
        opt = torch.optim.AdamW(model.parameters(), lr=cfg['lr'])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg['lr'])
    seq, batch = cfg['seq'], cfg['batch']
    g = torch.Generator().manual_seed(a.seed)
    losses, seconds = [], 0.0
    for _ in range(a.steps):
        t0 = time.perf_counter()
        off = torch.randint(0, len(train) - seq - 1, (batch,), generator=g)
        x = torch.stack([train[o:o + seq] for o in off])
        y = torch.stack([train[o + 1:o + seq + 1] for o in off])
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seconds += time.perf_counter() - t0
        losses.append(loss.item())
    tail = losses[-50:]
    print('charlm_ms_per_step %.3f' % (1e3 * seconds / max(a.steps, 1)))
    print('train_bpc %.4f' % (sum(tail) / max(len(tail), 1) / math.log(2)))
    print('val_bpc %.4f' % (evaluate(model, val, seq, a.eval_windows) / math.log(2)))


if __name__ == '__main__':
    main()
