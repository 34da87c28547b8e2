#!/usr/bin/env python3
"""PyTorch CPU side of the side-by-side benchmark (issue 16), run by ../pytorch-side-by-side.mjs.

Times, with the same thread count as the JS side and models interleaved round after round:
  * inference, ResNet18 / KW ResNet18 (1x, 1/2x, 1/4x) at 224x224, batch 1 and 8, built from the
    OFFICIAL OSVAI/KernelWarehouse code (models/resnet.py, models/kw_resnet.py with the settings
    of its configs/resnet18/*.json); eval mode, torch.no_grad;
  * one training step (forward, cross-entropy, backward, SGD update) of the main job's model:
    resnet8_cifar width 4 on 1x28x28, batch 32, plain and KW 1x / 1/2x, built by
    benchmarks/kw-sweep/sweep_official.py from the official modules.

The official code is not part of this repository: pass the path of a checkout (--official, or the
KW_OFFICIAL env var), e.g. `git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/kw-official`.
The official models import timm only for DropPath and register_model; when timm is missing a stub
stands in (DropPath is the identity at drop rate 0, and these benchmarks use rate 0).

Prints one JSON line: {"torch": version, "blas": ..., "threads": n, "rows": [...]}.
"""
import argparse
import json
import os
import sys
import time
import types


def stub_timm():
    try:
        import timm  # noqa: F401
        return False
    except ImportError:
        pass
    import torch.nn as nn

    class DropPath(nn.Module):
        def __init__(self, drop_prob=0.0):
            super().__init__()
            assert drop_prob == 0.0, 'the timm stub only stands in for DropPath at rate 0'

        def forward(self, x):
            return x

    timm = types.ModuleType('timm')
    models = types.ModuleType('timm.models')
    layers = types.ModuleType('timm.models.layers')
    registry = types.ModuleType('timm.models.registry')
    layers.DropPath = DropPath
    layers.trunc_normal_ = nn.init.trunc_normal_
    registry.register_model = lambda f: f
    timm.models = models
    models.layers = layers
    models.registry = registry
    for name, mod in [('timm', timm), ('timm.models', models), ('timm.models.layers', layers),
                      ('timm.models.registry', registry)]:
        sys.modules[name] = mod
    return True


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def interleaved(cases, rounds, warmup):
    """cases: [(name, fn)]; runs them round after round; returns {name: [ms...]}."""
    out = {name: [] for name, _ in cases}
    for r in range(warmup + rounds):
        for name, fn in cases:
            t0 = time.perf_counter()
            fn()
            dt = (time.perf_counter() - t0) * 1000
            if r >= warmup:
                out[name].append(dt)
    return out


BUDGETS = [('KW 1x', 'kw1x_resnet18'), ('KW 1/2x', 'kw1d2x_resnet18'), ('KW 1/4x', 'kw1d4x_resnet18')]


def inference(official, size, batches, rounds, warmup, torch):
    sys.path.insert(0, official)
    import models  # official package (models/__init__.py)
    nets = [('plain', models.resnet18(num_classes=1000))]
    for label, cfg_name in BUDGETS:
        cfg = json.load(open(os.path.join(official, 'configs', 'resnet18', cfg_name + '.json')))
        nets.append((label, models.kw_resnet18(
            num_classes=1000, dropout=0.0, drop_path_rate=0.0, reduction=cfg['reduction'],
            cell_num_ratio=cfg['cell_num_ratio'], cell_inplane_ratio=cfg['cell_inplane_ratio'],
            cell_outplane_ratio=cfg['cell_outplane_ratio'], sharing_range=('layer', 'conv'))))
    rows = []
    for _, net in nets:
        net.eval()
    for n in batches:
        x = torch.randn(n, 3, size, size)

        def run(net):
            def f():
                with torch.no_grad():
                    net(x)
            return f
        times = interleaved([(label, run(net)) for label, net in nets], rounds, warmup)
        base = median(times['plain'])
        for label, net in nets:
            ms = times[label]
            rows.append({'kind': 'inference', 'batch': n, 'model': label,
                         'params': sum(p.numel() for p in net.parameters()),
                         'median_ms': median(ms), 'ratio': median(ms) / base,
                         'ratios': [t / b for t, b in zip(ms, times['plain'])]})
    return rows


def training(official, rounds, warmup, torch):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, '..', 'kw-sweep'))
    import sweep_official as so
    kwmod = so.load_official(official)
    cfgs = [('plain', {'variant': 'plain', 'width': 4}),
            ('KW 1x', {'variant': 'kw', 'width': 4, 'budget': 1}),
            ('KW 1/2x', {'variant': 'kw', 'width': 4, 'budget': 0.5})]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    cases = []
    nets = {}
    for label, cfg in cfgs:
        torch.manual_seed(0)
        net = so.build(cfg, kwmod)
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        nets[label] = net

        def step(net=net, opt=opt):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
        cases.append((label, step))
    times = interleaved(cases, rounds, warmup)
    base = median(times['plain'])
    return [{'kind': 'train', 'batch': 32, 'model': label,
             'params': sum(p.numel() for p in nets[label].parameters()),
             'median_ms': median(times[label]), 'ratio': median(times[label]) / base,
             'ratios': [t / b for t, b in zip(times[label], times['plain'])]}
            for label, _ in cfgs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--official', default=os.environ.get('KW_OFFICIAL'))
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--batches', default='1,8')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--train-rounds', type=int, default=5)
    ap.add_argument('--what', default='inference,train')
    a = ap.parse_args()
    if not a.official or not os.path.isdir(os.path.join(a.official, 'modules')):
        sys.exit('give the official OSVAI/KernelWarehouse checkout: --official DIR or KW_OFFICIAL')
    import torch
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    stubbed = stub_timm()
    cfg = torch.__config__.show()
    blas = 'OpenBLAS' if 'openblas' in (os.environ.get('LD_PRELOAD', '') + cfg).lower() else 'see torch.__config__'
    rows = []
    what = a.what.split(',')
    if 'inference' in what:
        rows += inference(a.official, a.size, [int(b) for b in a.batches.split(',')], a.rounds, 1, torch)
    if 'train' in what:
        rows += training(a.official, a.train_rounds, 1, torch)
    print(json.dumps({'torch': torch.__version__, 'blas': blas, 'ld_preload': os.environ.get('LD_PRELOAD', ''),
                      'threads': a.threads, 'timm_stub': stubbed, 'rows': rows}))


if __name__ == '__main__':
    main()
