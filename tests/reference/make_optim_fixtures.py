#!/usr/bin/python3
"""Reference trajectories for optim/ from torch.optim (run with Debian's python3-torch).

    /usr/bin/python3 tests/reference/make_optim_fixtures.py

Writes into tests/reference/optim/:
  trajectories.safetensors  for every optimizer configuration, 100 steps on
      (a) a quadratic 0.5 x^T A x - b^T x (f64, x of 6 elements) and
      (b) an MLP 4-8-3 with tanh and MSE on 16 fixed samples (f64):
      the initial parameters and the parameters after the steps in RECORD.
      A configuration is described in the file itself (metadata "configs",
      "kind.<cfg>" and tensor "cfg.<cfg>.opts" with the options in the order
      of the C opts struct), so the C test needs no list of its own.
  schedules.safetensors     for each schedule, get_last_lr() after
      construction and after each of 200 steps (201 values), and the
      optimizer's momentum / beta1 alongside (one-cycle cycles it).
  clip.safetensors          gradients before and after clip_grad_norm_ /
      clip_grad_value_, and the returned total norms.
Seeds are fixed; the files are small and committed.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'optim')
STEPS = 100
RECORD = [1, 2, 3, 10, 25, 50, 75, 100]

torch.set_num_threads(1)

# ---- problems ---------------------------------------------------------------


def quadratic(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a = m @ m.T / 6 + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x = torch.randn(6, generator=g, dtype=torch.float64)
    data = {'A': a.to(dtype), 'b': b.to(dtype)}
    params = {'x': x.to(dtype)}

    def loss(p):
        xx = p['x']
        return 0.5 * (xx @ data['A'] @ xx) - data['b'] @ xx
    return data, params, loss


def mlp():
    g = torch.Generator().manual_seed(2)
    d = torch.float64
    data = {'X': torch.randn(16, 4, generator=g, dtype=d),
            'T': torch.randn(16, 3, generator=g, dtype=d)}
    params = {'w1': torch.randn(4, 8, generator=g, dtype=d) * 0.5,
              'b1': torch.randn(8, generator=g, dtype=d) * 0.1,
              'w2': torch.randn(8, 3, generator=g, dtype=d) * 0.5,
              'b2': torch.randn(3, generator=g, dtype=d) * 0.1}

    def loss(p):
        h = torch.tanh(data['X'] @ p['w1'] + p['b1'])
        y = h @ p['w2'] + p['b2']
        r = y - data['T']
        return (r * r).mean()
    return data, params, loss


# ---- optimizer configurations ----------------------------------------------
# (name, kind, options in C struct order)
#   sgd:     lr, momentum, dampening, weight_decay, nesterov
#   adam(w): lr, beta1, beta2, eps, weight_decay, amsgrad
#   rmsprop: lr, alpha, eps, weight_decay, momentum, centered
#   adagrad: lr, lr_decay, weight_decay, eps, initial_accumulator_value
CONFIGS = [
    ('sgd_plain', 'sgd', [0.05, 0, 0, 0, 0]),
    ('sgd_momentum', 'sgd', [0.05, 0.9, 0, 0, 0]),
    ('sgd_dampening', 'sgd', [0.05, 0.9, 0.3, 0, 0]),
    ('sgd_nesterov', 'sgd', [0.05, 0.9, 0, 0, 1]),
    ('sgd_weight_decay', 'sgd', [0.05, 0.5, 0, 0.1, 0]),
    ('sgd_nesterov_wd', 'sgd', [0.03, 0.8, 0, 0.05, 1]),
    ('adam_default', 'adam', [0.01, 0.9, 0.999, 1e-8, 0, 0]),
    ('adam_amsgrad', 'adam', [0.01, 0.9, 0.999, 1e-8, 0, 1]),
    ('adam_weight_decay', 'adam', [0.01, 0.9, 0.999, 1e-8, 0.1, 0]),
    ('adam_betas', 'adam', [0.01, 0.5, 0.95, 1e-6, 0, 0]),
    ('adam_beta1_zero', 'adam', [0.01, 0.0, 0.99, 1e-8, 0.01, 1]),
    ('adamw_default', 'adamw', [0.01, 0.9, 0.999, 1e-8, 0.01, 0]),
    ('adamw_amsgrad', 'adamw', [0.01, 0.9, 0.999, 1e-8, 0.1, 1]),
    ('adamw_betas', 'adamw', [0.02, 0.8, 0.95, 1e-7, 0.3, 0]),
    ('rmsprop_default', 'rmsprop', [0.01, 0.99, 1e-8, 0, 0, 0]),
    ('rmsprop_centered', 'rmsprop', [0.01, 0.99, 1e-8, 0, 0, 1]),
    ('rmsprop_momentum', 'rmsprop', [0.005, 0.99, 1e-8, 0, 0.9, 0]),
    ('rmsprop_all', 'rmsprop', [0.003, 0.9, 1e-3, 0.1, 0.5, 1]),
    ('rmsprop_weight_decay', 'rmsprop', [0.005, 0.95, 1e-8, 0.05, 0, 0]),
    ('adagrad_default', 'adagrad', [0.1, 0, 0, 1e-10, 0]),
    ('adagrad_lr_decay', 'adagrad', [0.1, 0.01, 0, 1e-10, 0]),
    ('adagrad_weight_decay', 'adagrad', [0.1, 0, 0.1, 1e-10, 0]),
    ('adagrad_initial_acc', 'adagrad', [0.1, 0, 0, 1e-6, 0.5]),
    ('adagrad_all', 'adagrad', [0.2, 0.05, 0.02, 1e-8, 0.1]),
]


def make_optimizer(kind, o, params):
    if kind == 'sgd':
        return torch.optim.SGD(params, lr=o[0], momentum=o[1], dampening=o[2],
                               weight_decay=o[3], nesterov=bool(o[4]), foreach=False)
    if kind in ('adam', 'adamw'):
        cls = torch.optim.Adam if kind == 'adam' else torch.optim.AdamW
        return cls(params, lr=o[0], betas=(o[1], o[2]), eps=o[3], weight_decay=o[4],
                   amsgrad=bool(o[5]), foreach=False)
    if kind == 'rmsprop':
        return torch.optim.RMSprop(params, lr=o[0], alpha=o[1], eps=o[2], weight_decay=o[3],
                                   momentum=o[4], centered=bool(o[5]), foreach=False)
    if kind == 'adagrad':
        return torch.optim.Adagrad(params, lr=o[0], lr_decay=o[1], weight_decay=o[2], eps=o[3],
                                   initial_accumulator_value=o[4], foreach=False)
    raise ValueError(kind)


def trajectory(problem, kind, opts, dtype=torch.float64, noise=0.0):
    data, params, loss_fn = problem() if dtype == torch.float64 else problem(dtype)
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = make_optimizer(kind, opts, list(p.values()))
    g = torch.Generator().manual_seed(9)
    rec = {}
    for step in range(1, STEPS + 1):
        opt.zero_grad()
        loss_fn(p).backward()
        if noise:
            for v in p.values():
                v.grad.mul_(1 + noise * torch.randn(v.shape, generator=g, dtype=v.dtype))
        opt.step()
        if step in RECORD:
            for k, v in p.items():
                rec['%s.step%d' % (k, step)] = v.detach().numpy().copy()
    return data, params, rec


def check_conditioning(name, pname, problem, kind, opts, rec):
    """The C test compares at 1e-10 relative, and tapegrad's forward and
    backward round differently from PyTorch's (summation order).  A run
    whose trajectory an ulp-sized change of the gradients moves by more
    than 1e-12 tests chaos, not the optimizer: refuse to write it."""
    _, _, other = trajectory(problem, kind, opts, noise=1e-15)
    worst = max(np.max(np.abs(rec[k] - other[k]) / np.maximum(np.abs(rec[k]), 1e-3))
                for k in rec)
    if worst > 1e-12:
        raise SystemExit('%s on %s is ill-conditioned (a 1e-15 gradient change moves it '
                         'by %.1e): pick other options' % (name, pname, worst))


def write_trajectories():
    tensors, meta = {}, {}
    for pname, problem in (('quad', quadratic), ('mlp', mlp)):
        data, params, _ = problem()
        for k, v in data.items():
            tensors['%s.data.%s' % (pname, k)] = v.numpy()
        for k, v in params.items():
            tensors['%s.init.%s' % (pname, k)] = v.numpy()
        meta['params.' + pname] = ','.join(params.keys())
    names = []
    for name, kind, opts in CONFIGS:
        names.append(name)
        meta['kind.' + name] = kind
        tensors['cfg.%s.opts' % name] = np.array(opts, dtype=np.float64)
        for pname, problem in (('quad', quadratic), ('mlp', mlp)):
            _, _, rec = trajectory(problem, kind, opts)
            check_conditioning(name, pname, problem, kind, opts, rec)
            for k, v in rec.items():
                tensors['%s.%s.%s' % (name, pname, k)] = v
    # One f32 run: tapegrad computes in double and rounds on store, PyTorch
    # rounds every operation, so this is compared loosely.
    data, params, rec = trajectory(quadratic, 'adam', [0.01, 0.9, 0.999, 1e-8, 0, 0],
                                   torch.float32)
    for k, v in rec.items():
        tensors['f32.quad.%s' % k] = v
    meta['configs'] = ','.join(names)
    meta['steps'] = ','.join(str(s) for s in RECORD)
    st.write(os.path.join(OUT, 'trajectories.safetensors'), tensors, meta)


# ---- schedules --------------------------------------------------------------

SCHED_STEPS = 200


def sched_run(name, make_opt, make_sched):
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = make_opt([p])
    sched = make_sched(opt)
    lrs, moms = [sched.get_last_lr()[0]], [momentum_of(opt)]
    for _ in range(SCHED_STEPS):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
        moms.append(momentum_of(opt))
        assert lrs[-1] == opt.param_groups[0]['lr']
    return {'sched.%s.lr' % name: np.array(lrs, dtype=np.float64),
            'sched.%s.momentum' % name: np.array(moms, dtype=np.float64)}


def momentum_of(opt):
    g = opt.param_groups[0]
    if 'betas' in g:
        return g['betas'][0]
    return g.get('momentum', 0.0)


def sgd(lr=0.1, momentum=0.9):
    return lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum)


def adam(lr=0.01):
    return lambda ps: torch.optim.Adam(ps, lr=lr)


def adagrad(lr=0.05):
    return lambda ps: torch.optim.Adagrad(ps, lr=lr)


S = torch.optim.lr_scheduler


def warmup(start, steps, then):
    def make(opt):
        first = S.LinearLR(opt, start_factor=start, end_factor=1.0, total_iters=steps)
        second = then(opt)
        return S.SequentialLR(opt, [first, second], milestones=[steps])
    return make


# Names and arguments mirror the table in tests/test_optim.c.
SCHEDULES = [
    ('step', sgd(), lambda o: S.StepLR(o, step_size=30, gamma=0.1)),
    ('step_gamma', adam(), lambda o: S.StepLR(o, step_size=7, gamma=0.9)),
    ('multistep', sgd(), lambda o: S.MultiStepLR(o, milestones=[30, 80, 80, 150], gamma=0.5)),
    ('exponential', sgd(), lambda o: S.ExponentialLR(o, gamma=0.97)),
    ('cosine', sgd(), lambda o: S.CosineAnnealingLR(o, T_max=50, eta_min=0.001)),
    ('cosine_long', adam(), lambda o: S.CosineAnnealingLR(o, T_max=200)),
    ('cosine_odd', sgd(0.3), lambda o: S.CosineAnnealingLR(o, T_max=7, eta_min=0.01)),
    ('linear', sgd(), lambda o: S.LinearLR(o, start_factor=0.25, end_factor=1.0,
                                           total_iters=40)),
    ('linear_down', adam(), lambda o: S.LinearLR(o, start_factor=1.0, end_factor=0.1,
                                                 total_iters=150)),
    ('warmup_cosine', sgd(), warmup(0.1, 10, lambda o: S.CosineAnnealingLR(o, T_max=190,
                                                                          eta_min=1e-4))),
    ('warmup_step', adam(), warmup(0.01, 20, lambda o: S.StepLR(o, step_size=50, gamma=0.5))),
    ('warmup_exponential', sgd(), warmup(0.5, 5, lambda o: S.ExponentialLR(o, gamma=0.98))),
    ('warmup_multistep', sgd(), warmup(0.2, 15, lambda o: S.MultiStepLR(o, [0, 40, 100], 0.3))),
    ('warmup_onecycle', sgd(), warmup(0.5, 5, lambda o: S.OneCycleLR(o, max_lr=0.2,
                                                                    total_steps=195))),
    ('onecycle', sgd(), lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=200)),
    ('onecycle_adam', adam(), lambda o: S.OneCycleLR(o, max_lr=0.01, total_steps=250,
                                                     pct_start=0.25, anneal_strategy='linear',
                                                     three_phase=True, div_factor=10.0,
                                                     final_div_factor=100.0,
                                                     base_momentum=0.8, max_momentum=0.9)),
    ('onecycle_nomom', adagrad(), lambda o: S.OneCycleLR(o, max_lr=0.5, total_steps=200,
                                                         cycle_momentum=False)),
]


def write_schedules():
    tensors = {}
    for name, make_opt, make_sched in SCHEDULES:
        tensors.update(sched_run(name, make_opt, make_sched))
    st.write(os.path.join(OUT, 'schedules.safetensors'), tensors,
             {'schedules': ','.join(s[0] for s in SCHEDULES)})


# ---- clipping ---------------------------------------------------------------

CLIP_NORM_CASES = [  # name, max_norm, norm_type
    ('l2', 1.0, 2.0),
    ('l2_noclip', 100.0, 2.0),
    ('l1', 2.0, 1.0),
    ('inf', 0.5, float('inf')),
    ('p3', 1.5, 3.0),
]


def write_clip():
    g = torch.Generator().manual_seed(3)
    shapes = [(3, 4), (5,), (2, 2, 3)]
    grads = [torch.randn(*s, generator=g, dtype=torch.float64) * 2 for s in shapes]
    tensors = {'clip.grad%d' % i: gr.numpy() for i, gr in enumerate(grads)}
    for name, max_norm, p in CLIP_NORM_CASES:
        ps = [torch.zeros_like(gr, requires_grad=True) for gr in grads]
        for q, gr in zip(ps, grads):
            q.grad = gr.clone()
        total = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type=p)
        tensors['clip.%s.total' % name] = np.array([total.item()])
        tensors['clip.%s.args' % name] = np.array([max_norm, p])
        for i, q in enumerate(ps):
            tensors['clip.%s.out%d' % (name, i)] = q.grad.numpy()
    ps = [torch.zeros_like(gr, requires_grad=True) for gr in grads]
    for q, gr in zip(ps, grads):
        q.grad = gr.clone()
    torch.nn.utils.clip_grad_value_(ps, 0.75)
    for i, q in enumerate(ps):
        tensors['clip.value.out%d' % i] = q.grad.numpy()
    st.write(os.path.join(OUT, 'clip.safetensors'), tensors,
             {'norm_cases': ','.join(c[0] for c in CLIP_NORM_CASES), 'count': str(len(grads)),
              'clip_value': '0.75'})


def main():
    os.makedirs(OUT, exist_ok=True)
    write_trajectories()
    write_schedules()
    write_clip()


if __name__ == '__main__':
    main()
