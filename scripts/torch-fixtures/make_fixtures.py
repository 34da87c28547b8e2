#!/usr/bin/python3
"""Write the PyTorch checkpoint fixtures of @kernelwarehouse/torch with the official code.

Usage (Debian's python3 with torch; the official repository checked out anywhere, never in
this repository):

    /usr/bin/python3 scripts/torch-fixtures/make_fixtures.py /tmp/KernelWarehouse \
        packages/torch/test/fixtures

    # the full-size Done-when checkpoints (not committed, hundreds of MB):
    /usr/bin/python3 scripts/torch-fixtures/make_fixtures.py /tmp/KernelWarehouse /tmp/kw-full --full

Every model comes from the official modules (models/kw_resnet.py, models/kw1d2x_mobilenetv2.py,
modules/kernel_warehouse.py). To keep the committed files small the ResNet is the official
KW_ResNet with its widths scaled by 1/8 (a subclass that only changes the channel counts), and
the MobileNetV2 is the official kw1d2x model at width_mult 0.1. Weights are random (seeded), BatchNorm
statistics are randomised so they matter, and each fixture comes with PyTorch's own outputs on a
fixed input (`<name>.io.safetensors`: `input`, `output`, and `output_ema` for checkpoints).

timm and tensorboardX, which the official files import but these paths do not use, are
replaced by small stand-ins; `save_model` from the official utils.py writes the checkpoint dict.
"""
import argparse
import copy
import json
import os
import struct
import sys
import types

import torch
import torch.nn as nn


def stub_modules():
    """Stand-ins for the imports of the official files that these fixtures do not exercise."""
    timm = types.ModuleType('timm')
    timm_models = types.ModuleType('timm.models')
    registry = types.ModuleType('timm.models.registry')
    registry.register_model = lambda f: f
    layers = types.ModuleType('timm.models.layers')

    class DropPath(nn.Module):  # only built with drop_path > 0, which these models never get
        def __init__(self, p=0.0):
            super().__init__()
            self.p = p

        def forward(self, x):
            return x

    layers.DropPath = DropPath
    layers.trunc_normal_ = nn.init.trunc_normal_
    timm_utils = types.ModuleType('timm.utils')

    def get_state_dict(model, unwrap_fn=None):  # timm: state_dict of the unwrapped (EMA) model
        return (model.module if hasattr(model, 'module') else model).state_dict()

    timm_utils.get_state_dict = get_state_dict
    timm.models = timm_models
    timm.utils = timm_utils
    timm_models.registry = registry
    timm_models.layers = layers
    tbx = types.ModuleType('tensorboardX')
    tbx.SummaryWriter = object
    for name, mod in [('timm', timm), ('timm.models', timm_models), ('timm.models.registry', registry),
                      ('timm.models.layers', layers), ('timm.utils', timm_utils), ('tensorboardX', tbx)]:
        sys.modules.setdefault(name, mod)


def write_safetensors(path, tensors):
    """A minimal safetensors writer (F32 only): 8-byte header length, JSON header, data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(t.shape), 'data_offsets': [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def smooth_input(n, size, gen):
    """Image-like inputs: random 9x9 fields upsampled (neighbouring pixels correlate, as in
    photographs; iid noise is averaged away by the first layers and leaves deep features
    nearly the same for every sample)."""
    low = torch.randn(n, 3, 9, 9, generator=gen)
    x = nn.functional.interpolate(low, size=(size, size), mode='bilinear', align_corners=False)
    return x + 0.1 * torch.randn(n, 3, size, size, generator=gen)


def randomise_bn(model, gen, size):
    """Realistic BatchNorm state: running statistics measured on random inputs of the fixture's
    size (as training leaves them, so every layer sees normalised activations and the output
    depends on the input), then random affine parameters."""
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(smooth_input(8, size, gen))
    for m in bns:
        n = m.num_features
        m.momentum = 0.1
        with torch.no_grad():
            # no channel's variance below the layer's median: channels ReLU leaves (nearly)
            # constant would otherwise be scaled up by 1/sqrt(var + eps) until the output hangs
            # on float32 rounding (PyTorch's own float32 and float64 outputs then differ by up
            # to 2e-3 on the MobileNetV2; with the floor, by 7e-6)
            m.running_var.clamp_(min=m.running_var.median().item())
            m.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
            m.bias.copy_(0.1 * torch.randn(n, generator=gen))
        m.num_batches_tracked.fill_(1234)
    model.eval()


def perturb(model, gen, scale=0.05):
    """A different set of weights with the same structure (stands in for an EMA copy)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=gen))


def narrow_kw_resnet(official, width, num_classes, **kw):
    """The official KW_ResNet with BasicBlocks [1, 1, 1, 1] (a ResNet-10) and every channel count
    scaled by `width`. (Attention sizes do not shrink with the width: a layer's cell count
    m stays the same, so the depth is what keeps the file small.)"""
    from models.kw_resnet import KW_ResNet, BasicBlock

    class NarrowKWResNet(KW_ResNet):
        scale = width

        def __init__(self, **kw):
            super().__init__(BasicBlock, [1, 1, 1, 1], num_classes=num_classes, dropout=0.0, **kw)
            c = round(64 * self.scale)
            self.conv1 = nn.Conv2d(3, c, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode='fan_out', nonlinearity='relu')
            self.bn1 = nn.BatchNorm2d(c)
            self.fc = nn.Linear(round(512 * self.scale) * BasicBlock.expansion, num_classes)

        def _make_layer(self, block, planes, blocks, stride=1, stage_idx=-1, **kw):
            if stage_idx == 0:
                self.inplanes = round(64 * self.scale)
            return super()._make_layer(block, round(planes * self.scale), blocks, stride, stage_idx, **kw)

    return NarrowKWResNet(**kw)


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def checkpoint_fixture(official, out, name, model, x, gen, full=False):
    """The official save_model layout: model, model_ema, optimizer, epoch, scaler, args."""
    import utils  # official utils.py

    # one optimizer step so the optimizer state holds tensors, as a real checkpoint does
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-5)
    model.train()
    model(x).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    size = int(x.shape[-1])
    randomise_bn(model, gen, size)
    ema = types.SimpleNamespace(module=copy.deepcopy(model))  # timm ModelEma keeps the copy in .module
    perturb(ema.module, gen)
    randomise_bn(ema.module, gen, size)
    scaler = utils.NativeScalerWithGradNormCount()
    scaler._scaler = types.SimpleNamespace(state_dict=lambda: {
        'scale': 65536.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 2000,
        '_growth_tracker': 17})
    # save_model writes <output_dir>/checkpoint-<epoch>.pth; a relative '.' keeps the pickled
    # args free of this machine's paths (and the fixture byte-identical on regeneration)
    here = os.getcwd()
    os.chdir(out)
    args = argparse.Namespace(model=name, batch_size=128, epochs=300, lr=4e-3, output_dir='.',
                              save_ckpt_num=3, save_ckpt_freq=1, temp_epoch=20, temp_init_value=1.0,
                              model_ema=True, model_ema_decay=0.9999, input_size=int(x.shape[-1]))
    utils.save_model(args=args, epoch=7, model=model, model_without_ddp=model, optimizer=optimizer,
                     loss_scaler=scaler, model_ema=ema)
    os.chdir(here)
    os.replace(os.path.join(out, 'checkpoint-7.pth'), os.path.join(out, f'{name}.pth'))
    write_safetensors(os.path.join(out, f'{name}.io.safetensors'), {
        'input': x, 'output': outputs(model, x), 'output_ema': outputs(ema.module, x)})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('official', help='path of an OSVAI/KernelWarehouse checkout')
    ap.add_argument('out', help='output folder')
    ap.add_argument('--full', action='store_true',
                    help='write the full-size Done-when checkpoints (KW ResNet18 1x, KW MobileNetV2-0.5 1/2x, 1000 classes, 96 px) instead')
    a = ap.parse_args()
    stub_modules()
    sys.path.insert(0, os.path.abspath(a.official))
    os.makedirs(a.out, exist_ok=True)
    a.out = os.path.abspath(a.out)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    from models.kw1d2x_mobilenetv2 import KW1d2x_MobileNetV2
    from models.kw_resnet import kw_resnet18

    if a.full:
        x = smooth_input(2, 96, gen)
        checkpoint_fixture(a.official, a.out, 'kw_resnet18_1x', kw_resnet18(num_classes=1000, dropout=0.0), x, gen)
        checkpoint_fixture(a.official, a.out, 'kw1d2x_mobilenetv2_050',
                           KW1d2x_MobileNetV2(num_classes=1000, width_mult=0.5, dropout=0.0), x, gen)
        return

    x = smooth_input(2, 72, gen)
    # 1. a training checkpoint written by the official save_model (narrow KW ResNet-10, 1x)
    checkpoint_fixture(a.official, a.out, 'kw_resnet10_w00625_1x_ckpt', narrow_kw_resnet(a.official, 0.0625, 10), x, gen)

    # 2. a bare float16 state_dict of the official kw1d2x MobileNetV2 (width_mult 0.1, 1/2x) whose
    #    conv weights are channels_last (non-contiguous); PyTorch's outputs are those of the
    #    float16-rounded weights evaluated in float32
    m = KW1d2x_MobileNetV2(num_classes=10, width_mult=0.1, dropout=0.0)
    randomise_bn(m, gen, 72)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.half().float())
    sd = m.state_dict()
    half = {}
    for k, v in sd.items():
        if v.is_floating_point():
            v = v.half()
            if v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        half[k] = v
    for k in half:
        if k.endswith('running_mean') or k.endswith('running_var'):
            sd[k].copy_(half[k].float())
    assert any(not v.is_contiguous() for v in half.values())
    torch.save(half, os.path.join(a.out, 'kw1d2x_mobilenetv2_w01_half_f16.pth'))
    write_safetensors(os.path.join(a.out, 'kw1d2x_mobilenetv2_w01_half_f16.io.safetensors'),
                      {'input': x, 'output': outputs(m, x)})

    # 3. a DDP state_dict ('module.' prefix) of the narrow ResNet (1x; at 1/2x the attention
    #    layers make it 3.5 MB) whose tensors are views into one shared storage at different
    #    offsets, plus transposed (non-contiguous) 2-D weights
    r = narrow_kw_resnet(a.official, 0.0625, 10)
    randomise_bn(r, gen, 72)
    ddp = nn.DataParallel(r)  # same `module.` naming as DistributedDataParallel
    sd = ddp.state_dict()
    floats = [k for k, v in sd.items() if v.is_floating_point()]
    flat = torch.cat([sd[k].reshape(-1) for k in floats])
    shared, at = {}, 0
    for k, v in sd.items():
        if v.is_floating_point():
            n = v.numel()
            view = flat[at:at + n].view(v.shape)
            at += n
            if v.dim() == 2:
                view = view.t().contiguous().t()  # same values, column-major strides
            shared[k] = view
        else:
            shared[k] = v
    assert all(k.startswith('module.') for k in shared)
    torch.save(shared, os.path.join(a.out, 'kw_resnet10_w00625_1x_ddp.pth'))
    write_safetensors(os.path.join(a.out, 'kw_resnet10_w00625_1x_ddp.io.safetensors'),
                      {'input': x, 'output': outputs(r, x)})

    # 4. every storage dtype the reader takes, with an offset, a transposed view and a shared storage
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6) / 8 - 1
    dtypes = {
        'f32': base.float(), 'f64': base, 'f16': base.half(), 'bf16': base.bfloat16(),
        'i64': (base * 8).long(), 'i32': (base * 8).int(), 'u8': (base * 8 + 8).to(torch.uint8),
        'bool': base > 0,
        'f32_t': base.float().t(), 'f32_slice': base.float()[1:3, 2:5],
        'f32_expand': torch.tensor([1.5, -2.0]).view(2, 1).expand(2, 3),
        'scalar': torch.tensor(3.25),
    }
    dtypes['f32_shared_a'] = dtypes['f32'][0]
    dtypes['f32_shared_b'] = dtypes['f32'][3]
    torch.save({'tensors': dtypes, 'epoch': 3, 'note': 'dtypes', 'nested': [1, (2.5, None), {'k': True}]},
               os.path.join(a.out, 'dtypes.pth'))
    with open(os.path.join(a.out, 'dtypes.json'), 'w') as f:
        json.dump({k: {'dtype': str(v.dtype), 'shape': list(v.shape),
                       'values': v.double().reshape(-1).tolist()} for k, v in dtypes.items()}, f)

    # 5. the legacy (non-zip) format, which must be refused by name
    torch.save({'w': torch.zeros(2)}, os.path.join(a.out, 'legacy.pth'), _use_new_zipfile_serialization=False)

    # 6. the tiny checkpoint the package README reads (shipped in the package as examples/)
    from collections import OrderedDict
    w = torch.tensor([[0.5, -1.0, 2.0], [0.25, 0.0, -0.75]])
    tiny = {'model': OrderedDict([('fc.weight', w), ('fc.bias', torch.tensor([0.1, -0.2]))]),
            'model_ema': OrderedDict([('fc.weight', w / 2), ('fc.bias', torch.tensor([0.05, -0.1]))]),
            'optimizer': {'state': {}, 'param_groups': [{'lr': 0.1, 'params': [0, 1]}]},
            'epoch': 3, 'args': argparse.Namespace(model='tiny', lr=0.1)}
    torch.save(tiny, os.path.join(a.out, 'tiny_checkpoint.pth'))

    # 7. a pickle that names os.system (it is never loaded by anything here; the reader must refuse it)
    class Evil:
        def __reduce__(self):
            return (os.system, ('echo this must never run',))

    torch.save({'model': {'w': torch.zeros(1)}, 'payload': Evil()}, os.path.join(a.out, 'hostile_os_system.pth'))
    print('wrote', sorted(os.listdir(a.out)))


if __name__ == '__main__':
    main()
