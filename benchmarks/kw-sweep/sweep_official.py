#!/usr/bin/env python3
"""Sweep of the main job's setting with the OFFICIAL KernelWarehouse modules (issue 14).

Builds the project's `resnet8_cifar` (28x28x1 input, 10 classes, width multiplier w) from the
official OSVAI/KernelWarehouse `Warehouse_Manager` / `KWConv2d` with the project's placement and
warehouse groups (stage0 = layer1.0.conv1/conv2 + layer2.0.conv1 + layer2.0.downsample,
stage1 = layer2.0.conv2 + layer3.0.conv1 + layer3.0.downsample, stage2 = layer3.0.conv2; the stem
and fc plain), trains it on MNIST / Fashion-MNIST read from IDX files and appends one JSON line per
(setting, seed) to --out.

The official code is not part of this repository: give the path of a checkout with --official
(e.g. `git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/kw-official`).

Usage:
  /usr/bin/python3 sweep_official.py --official /tmp/kw-official --data DIR --check
  /usr/bin/python3 sweep_official.py --official /tmp/kw-official --data DIR --grid NAME --out res.jsonl [--workers N] [--device cuda]
  /usr/bin/python3 sweep_official.py ... --one '{"variant":"kw","budget":1,...}'
"""
import argparse
import gzip
import itertools
import json
import math
import os
import sys
import time

import numpy as np

HIDDEN_FLOOR_DEFAULT = 16


def load_official(path, hidden_floor=HIDDEN_FLOOR_DEFAULT):
    """Import the official modules/kernel_warehouse.py; the hidden-size floor (16 in the official
    code) is the only thing changed, and only when hidden_floor != 16."""
    import types
    src = open(os.path.join(path, 'modules', 'kernel_warehouse.py')).read()
    needle = 'hidden_planes = max(int(in_planes * reduction), 16)'
    assert needle in src, 'unexpected official code: hidden size line not found'
    if hidden_floor != 16:
        src = src.replace(needle, f'hidden_planes = max(int(in_planes * reduction), {int(hidden_floor)})')
    mod = types.ModuleType('kernel_warehouse_official')
    mod.__file__ = os.path.join(path, 'modules', 'kernel_warehouse.py')
    exec(compile(src, mod.__file__, 'exec'), mod.__dict__)
    return mod


def read_idx(path):
    raw = open(path, 'rb').read()
    if path.endswith('.gz'):
        raw = gzip.decompress(raw)
    assert raw[0] == 0 and raw[1] == 0 and raw[2] == 8, path
    nd = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(nd)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


def find(d, stem):
    for f in (stem, stem + '.gz'):
        if os.path.exists(os.path.join(d, f)):
            return os.path.join(d, f)
    raise FileNotFoundError(f'{stem}[.gz] in {d}')


def load_data(d):
    xs = {}
    for split in ('train', 't10k'):
        x = read_idx(find(d, f'{split}-images-idx3-ubyte'))
        y = read_idx(find(d, f'{split}-labels-idx1-ubyte'))
        xs[split] = (x, y)
    return xs


# ---------------------------------------------------------------- network

def build(cfg, kwmod):
    """The project's resnet8_cifar at width w on 1x28x28, plain or with KW warehouses.

    cfg keys: variant 'plain'|'kw', width, budget, cell (cell in/out ratio; default 0.5 below 1x,
    1 otherwise as the official ResNet configs), reduction, convert (list of warehouse stages that
    are KW; others plain), ds ('kw' = strided 1x1 downsamples in their warehouse as the official
    code and the project, 'plain')."""
    import torch.nn as nn
    w = cfg.get('width', 1)
    planes = [max(1, round(c * w)) for c in (16, 32, 64)]
    kw = cfg['variant'] == 'kw'
    b = cfg.get('budget', 1)
    cell = cfg.get('cell', 0.5 if b < 1 else 1)
    convert = set(cfg.get('convert', [0, 1, 2]))
    ds_kw = cfg.get('ds', 'kw') == 'kw'
    red = cfg.get('reduction', 1 / 16)
    if kw:
        wm = kwmod.Warehouse_Manager(reduction=red, cell_num_ratio=b, cell_inplane_ratio=cell,
                                     cell_outplane_ratio=cell, sharing_range=('layer', 'conv'))
    else:
        wm = None

    def conv(cin, cout, k, stride, stage, is_ds=False):
        if kw and stage is not None and stage in convert and (ds_kw or not is_ds):
            return wm.reserve(cin, cout, kernel_size=k, stride=stride, padding=(k - 1) // 2,
                              warehouse_name=f'stage{stage}_layer0_conv0', enabled=True, bias=False)
        return nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=False)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, stage):
            super().__init__()
            first_stage = max(stage - 1, 0)
            self.conv1 = conv(cin, cout, 3, stride, first_stage)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = conv(cout, cout, 3, 1, stage)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(
                    conv(cin, cout, 1, stride, stage - 1 if stride != 1 else None, is_ds=True),
                    nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            idt = x if self.downsample is None else self.downsample(x)
            return self.relu(idt + y)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, planes[0], 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes[0])
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = nn.Sequential(Block(planes[0], planes[0], 1, 0))
            self.layer2 = nn.Sequential(Block(planes[0], planes[1], 2, 1))
            self.layer3 = nn.Sequential(Block(planes[1], planes[2], 2, 2))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(planes[2], 10)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
            if kw:
                self.warehouse_manager = wm
                wm.store()
                wm.allocate(self)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(self.avgpool(x).flatten(1))

        def set_tau(self, t):
            for m in self.modules():
                if hasattr(m, 'update_temperature'):
                    m.update_temperature(t)

    return Net()


def n_params(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


# ---------------------------------------------------------------- training

def epoch_order(n, seed, epoch):
    return np.random.default_rng([seed, epoch]).permutation(n)


def recalibrate_bn(net, xtr, batch, passes, seed, torch):
    """Reset every BatchNorm's running statistics and re-estimate them as the plain average over
    `passes` training batches in train mode (as the project's recalibrateBatchNorm)."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    order = epoch_order(xtr.shape[0], seed + 7919, 0)
    with torch.no_grad():
        for i in range(passes):
            idx = order[(i * batch) % len(order):][:batch]
            if len(idx) < 2:
                break
            net(xtr[torch.as_tensor(idx, device=xtr.device)])
    for m, s in zip(bns, saved):
        m.momentum = s


def evaluate(net, xte, yte, torch):
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, xte.shape[0], 1000):
            correct += (net(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
    net.train()
    return correct / xte.shape[0]


def run_one(cfg, seed, data_cache, kwmods, official, device, torch):
    ds = cfg.get('dataset', 'mnist')
    xtr_all, ytr_all, xte_all, yte_all = data_cache[ds]
    ntr, nte = cfg.get('train', 2000), cfg.get('test', 2000)
    xtr, ytr = xtr_all[:ntr], ytr_all[:ntr]
    xte, yte = xte_all[:nte], yte_all[:nte]
    floor = cfg.get('floor', 16)
    if floor not in kwmods:
        kwmods[floor] = load_official(official, floor)
    torch.manual_seed(seed)
    net = build(cfg, kwmods[floor]).to(device)
    params = n_params(net)
    batch = cfg.get('batch', 64)
    spe = math.ceil(ntr / batch)
    total = cfg['steps'] if 'steps' in cfg else int(round(cfg.get('epochs', 2) * spe))
    tau_steps = int(round(cfg.get('tau', 0.5) * total))
    lr = cfg.get('lr', 0.005)
    opt_name = cfg.get('opt', 'adam')
    wd = cfg.get('wd', 0.0 if opt_name == 'adam' else 1e-4)
    if opt_name == 'adam':
        opt = torch.optim.Adam(net.parameters(), lr=lr, eps=1e-7, weight_decay=wd)
    elif opt_name == 'adamw':
        opt = torch.optim.AdamW(net.parameters(), lr=lr, eps=1e-7, weight_decay=wd)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    sched = cfg.get('sched', 'const')
    evals = sorted(set(int(s) for s in cfg.get('eval_at', []) if 0 < int(s) < total)) + [total]
    bn_passes = cfg.get('bn_passes', 32)
    curve = []
    net.train()
    t0 = time.time()
    eval_secs = 0.0
    step = 0
    epoch = 0
    loss_sum, loss_n = 0.0, 0
    while step < total:
        order = epoch_order(ntr, seed, epoch)
        for i in range(spe):
            if step >= total:
                break
            tau = max(0.0, (tau_steps - step) / tau_steps) if tau_steps > 0 else 0.0
            if cfg['variant'] == 'kw':
                net.set_tau(tau)
            if sched == 'cosine':
                for g in opt.param_groups:
                    g['lr'] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            idx = torch.as_tensor(order[i * batch:(i + 1) * batch], device=device)
            x, y = xtr[idx], ytr[idx]
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.item() if (step % 10 == 0 or step == total) else 0.0
            if step in evals:
                te0 = time.time()
                state = None
                if step != total:  # keep the training-time running stats for continuing
                    state = {k: v.clone() for k, v in net.state_dict().items() if 'running' in k or 'num_batches' in k}
                if bn_passes > 0:
                    recalibrate_bn(net, xtr, batch, bn_passes, seed, torch)
                acc = evaluate(net, xte, yte, torch)
                if state is not None:
                    net.load_state_dict(state, strict=False)
                curve.append({'step': step, 'acc': acc, 'tau': tau, 'loss': loss.item()})
                eval_secs += time.time() - te0
        epoch += 1
    secs = time.time() - t0
    return {
        'cfg': cfg, 'seed': seed, 'params': params, 'acc': curve[-1]['acc'], 'steps': total,
        'final_loss': curve[-1]['loss'], 'curve': curve, 'seconds': round(secs - eval_secs, 2),
        'eval_seconds': round(eval_secs, 2),
        'ms_per_step': round(1000 * (secs - eval_secs) / total, 2), 'device': str(device),
    }


# ---------------------------------------------------------------- grids

def variants(kind):
    """Named sets of (name, cfg-fragment) model variants."""
    V = {
        'plain': {'variant': 'plain'},
        'kw1x': {'variant': 'kw', 'budget': 1},
        'kw1/2x': {'variant': 'kw', 'budget': 0.5},
        'kw1/4x': {'variant': 'kw', 'budget': 0.25},
        # only the widest warehouse (layer3.0.conv2) converted
        'kw1x@s2': {'variant': 'kw', 'budget': 1, 'convert': [2]},
        'kw1/2x@s2': {'variant': 'kw', 'budget': 0.5, 'convert': [2]},
        'kw1/4x@s2': {'variant': 'kw', 'budget': 0.25, 'convert': [2]},
        # stages 1 and 2 converted
        'kw1x@s12': {'variant': 'kw', 'budget': 1, 'convert': [1, 2]},
        'kw1/2x@s12': {'variant': 'kw', 'budget': 0.5, 'convert': [1, 2]},
        'kw1/4x@s12': {'variant': 'kw', 'budget': 0.25, 'convert': [1, 2]},
    }
    return [(k, dict(V[k])) for k in kind]


def grid(name):
    """Named grids: lists of cfg dicts (each gets a 'name')."""
    out = []

    def add(base, vs, **over):
        for vn, vc in variants(vs):
            c = dict(base)
            c.update(vc)
            c.update(over)
            c['name'] = vn
            out.append(c)

    allv = ['plain', 'kw1x', 'kw1/2x', 'kw1/4x', 'kw1x@s2', 'kw1/2x@s2', 'kw1/4x@s2',
            'kw1x@s12', 'kw1/2x@s12', 'kw1/4x@s12']
    if name == 'params':
        for w in (1, 1.5, 2, 3, 4):
            for fl in (16, 8, 4):
                add({'width': w, 'floor': fl}, allv)
    elif name == 'smoke':
        add({'train': 512, 'test': 500, 'epochs': 1, 'eval_at': [4]}, ['plain', 'kw1x', 'kw1/4x@s2'])
    elif name == 'g1':
        # the first broad sweep (width 1 unless said): 8 variants at each setting
        v8 = ['plain', 'kw1x', 'kw1/2x', 'kw1x@s2', 'kw1/2x@s2', 'kw1/4x@s2', 'kw1x@s12', 'kw1/4x@s12']
        ev = [50, 100, 150, 300, 600]
        v6 = ['plain', 'kw1x', 'kw1x@s2', 'kw1/2x@s2', 'kw1/4x@s2', 'kw1x@s12']
        # A. 300 steps of batch 64 (what tfjs affords on 2 cores in 10 min): data x lr x tau
        for ds, (ntr, ep), lr, tau in itertools.product(
                ('mnist', 'fashion'), ((9600, 2), (19200, 1)), (0.005, 0.02), (0.1, 0.5)):
            add({'dataset': ds, 'train': ntr, 'epochs': ep, 'lr': lr, 'tau': tau, 'eval_at': ev}, v8)
        # B. optimizers: official SGD 0.1 cosine wd 1e-4; Adam 0.02 cosine
        for ds in ('mnist', 'fashion'):
            add({'dataset': ds, 'train': 19200, 'epochs': 1, 'opt': 'sgd', 'lr': 0.1, 'sched': 'cosine',
                 'tau': 0.1, 'eval_at': ev}, v8)
            add({'dataset': ds, 'train': 19200, 'epochs': 1, 'lr': 0.02, 'sched': 'cosine',
                 'tau': 0.1, 'eval_at': ev}, v8)
        # C. steps: 150, 600, 1200 (1200 = 2 epochs of 38,400)
        for ds in ('mnist', 'fashion'):
            for ntr, ep in ((9600, 1), (38400, 1), (38400, 2)):
                add({'dataset': ds, 'train': ntr, 'epochs': ep, 'lr': 0.02, 'tau': 0.1, 'eval_at': ev}, v6)
        # D. batch 32, same images (600 steps)
        for ds, lr in itertools.product(('mnist', 'fashion'), (0.01, 0.02)):
            add({'dataset': ds, 'train': 19200, 'epochs': 1, 'batch': 32, 'lr': lr, 'tau': 0.1,
                 'eval_at': ev}, v8)
        # E. width 2 and F. hidden floor 4
        for ds in ('mnist', 'fashion'):
            add({'dataset': ds, 'width': 2, 'train': 19200, 'epochs': 1, 'lr': 0.02, 'tau': 0.1,
                 'eval_at': ev}, v6)
        add({'dataset': 'fashion', 'floor': 4, 'train': 19200, 'epochs': 1, 'lr': 0.02, 'tau': 0.1,
             'eval_at': ev}, v8)
    elif name == 'p1':
        # CPU phase 1 (seed 0): 250 steps of batch 64 on 16,000 distinct images (what tfjs
        # affords on 2 idle cores in 10 minutes), the setting's other factors varied
        v5 = ['plain', 'kw1x', 'kw1x@s2', 'kw1/4x@s2', 'kw1/2x@s2']
        base = {'train': 16000, 'test': 2000, 'epochs': 1, 'batch': 64, 'eval_at': [50, 100, 150, 200]}
        for ds, lr, tau in (('fashion', 0.02, 0.1), ('mnist', 0.02, 0.1), ('fashion', 0.005, 0.5),
                            ('fashion', 0.02, 1.0)):
            add(dict(base, dataset=ds, lr=lr, tau=tau), v5)
    elif name == 'p2':
        # CPU phase 2: MNIST, 400 steps of batch 64 on 25,600 distinct images (1 epoch), Adam 0.02,
        # tau 1 -> 0 over the first 10 % of the run
        add({'dataset': 'mnist', 'train': 25600, 'test': 2000, 'epochs': 1, 'batch': 64, 'lr': 0.02,
             'tau': 0.1, 'eval_at': [100, 200, 300]}, ['plain', 'kw1/4x@s2', 'kw1x@s2', 'kw1x'])
    elif name == 'p3':
        # CPU phase 3, the crossing in steps: as p2 for 800 steps (51,200 distinct images)
        add({'dataset': 'mnist', 'train': 51200, 'test': 2000, 'epochs': 1, 'batch': 64, 'lr': 0.02,
             'tau': 0.1, 'eval_at': [200, 400, 600]}, ['plain', 'kw1/4x@s2'])
    elif name == 'p4':
        # the recommended main-job setting: p2 cut to 350 steps (22,400 images once)
        add({'dataset': 'mnist', 'train': 22400, 'test': 2000, 'epochs': 1, 'batch': 64, 'lr': 0.02,
             'tau': 0.1, 'eval_at': [100, 200, 300]}, ['plain', 'kw1/4x@s2', 'kw1x@s2'])
    elif name == 'p5':
        # the main job's setting (350 steps) at 10 seeds, with a cosine lr and a longer tau, and
        # longer runs (700 and 1875 steps) to find where KW crosses plain (GPU: --device cuda)
        ev = [100, 200, 350, 500, 700, 1000, 1400]
        v5 = ['plain', 'kw1x', 'kw1x@s2', 'kw1/2x@s2', 'kw1/4x@s2']
        base = {'dataset': 'mnist', 'train': 22400, 'test': 2000, 'epochs': 1, 'batch': 64,
                'eval_at': [100, 200, 300]}
        add(dict(base, lr=0.02, tau=0.1), v5)
        add(dict(base, lr=0.02, tau=0.1, sched='cosine'), v5)
        add(dict(base, lr=0.01, tau=0.1, sched='cosine'), v5)
        add(dict(base, lr=0.02, tau=0.3, sched='cosine'), v5)
        add(dict(base, dataset='fashion', lr=0.02, tau=0.1, sched='cosine'), v5)
        add({'dataset': 'mnist', 'train': 44800, 'test': 2000, 'epochs': 1, 'batch': 64, 'lr': 0.02,
             'tau': 0.1, 'sched': 'cosine', 'eval_at': ev}, v5)
        add({'dataset': 'mnist', 'train': 60000, 'test': 2000, 'epochs': 2, 'batch': 64, 'lr': 0.02,
             'tau': 0.1, 'sched': 'cosine', 'eval_at': ev}, v5)
    else:
        raise SystemExit(f'unknown grid {name}')
    return out


# ---------------------------------------------------------------- driver

def worker(args, jobs, out_path, wid, nworkers):
    import torch
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data_cache = {}
    dirs = {'mnist': args.data, 'fashion': args.fashion}
    for k, d in dirs.items():
        if d and os.path.isdir(d):
            xs = load_data(d)
            (xtr, ytr), (xte, yte) = xs['train'], xs['t10k']
            f = lambda a: torch.as_tensor(a.astype(np.float32) / 255.0).unsqueeze(1).to(device)
            data_cache[k] = (f(xtr), torch.as_tensor(ytr.astype(np.int64)).to(device),
                             f(xte), torch.as_tensor(yte.astype(np.int64)).to(device))
    kwmods = {}
    for j, (cfg, seed) in enumerate(jobs):
        if j % nworkers != wid:
            continue
        if args.deadline and time.time() > args.deadline:
            print(f'[{wid}] deadline reached, {j} of {len(jobs)} jobs started', flush=True)
            break
        try:
            r = run_one(cfg, seed, data_cache, kwmods, args.official, device, torch)
        except Exception as e:  # record and go on
            r = {'cfg': cfg, 'seed': seed, 'error': repr(e)}
        with open(out_path, 'a') as fh:
            fh.write(json.dumps(r) + '\n')
        print(f"[{wid}] {cfg.get('name')} {cfg.get('dataset','mnist')} seed {seed}: "
              f"{r.get('acc', r.get('error'))} {r.get('seconds','')}s", flush=True)


def check_params(args):
    import torch
    kw = load_official(args.official)
    want = {'plain': 77754, 'kw1x': 123108, 'kw1/2x': 370394}
    ok = True
    for n, c in variants(['plain', 'kw1x', 'kw1/2x']):
        p = n_params(build(c, kw))
        print(f'{n:8s} {p:>9,d}  project {want[n]:>9,d}  {"ok" if p == want[n] else "DIFFERENT"}')
        ok &= p == want[n]
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--official', required=True)
    ap.add_argument('--data', help='MNIST IDX folder')
    ap.add_argument('--fashion', default='/usr/share/datasets/fashion-mnist')
    ap.add_argument('--grid')
    ap.add_argument('--one', help='one cfg as JSON')
    ap.add_argument('--seeds', default='0,1')
    ap.add_argument('--out', default='sweep.jsonl')
    ap.add_argument('--workers', type=int, default=1)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--budget-seconds', type=float, default=0,
                    help='start no new job after this many seconds (0: no limit)')
    ap.add_argument('--check', action='store_true', help='check parameter counts against the project')
    ap.add_argument('--params', action='store_true', help='print parameter counts of the grid, train nothing')
    a = ap.parse_args()
    if a.check:
        sys.exit(0 if check_params(a) else 1)
    cfgs = grid(a.grid) if a.grid else [json.loads(a.one)]
    if a.params:
        import torch
        mods = {}
        for c in cfgs:
            fl = c.get('floor', 16)
            mods.setdefault(fl, load_official(a.official, fl))
            try:
                p = n_params(build(c, mods[fl]))
            except AssertionError:
                p = 'tiling fails'
            print(json.dumps({'name': c['name'], 'width': c.get('width', 1), 'floor': fl, 'params': p}))
        return
    a.deadline = time.time() + a.budget_seconds if a.budget_seconds > 0 else 0
    seeds = [int(s) for s in a.seeds.split(',')]
    # seeds outer: a cut-short run still has every setting at the first seed
    jobs = [(c, s) for s in seeds for c in cfgs]
    if a.workers == 1:
        worker(a, jobs, a.out, 0, 1)
    else:
        import multiprocessing as mp
        ctx = mp.get_context('spawn')
        ps = [ctx.Process(target=worker, args=(a, jobs, a.out, i, a.workers)) for i in range(a.workers)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()


if __name__ == '__main__':
    main()
