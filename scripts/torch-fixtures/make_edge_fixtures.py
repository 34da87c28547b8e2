#!/usr/bin/python3
"""Write the small edge-case .pth fixtures of @kernelwarehouse/torch (each a few KB).

Usage (Debian's python3 with torch; the tests never need Python):

    /usr/bin/python3 scripts/torch-fixtures/make_edge_fixtures.py packages/torch/test/fixtures

Each file is what a real torch.save / torch.jit.save writes for a case the reader must handle
or refuse by name (see test/reader.test.ts):

- edge_torchscript.pth: torch.jit.save of a scripted nn.Linear (compressed code/ entries).
- edge_model_object.pth: a whole nn.Module beside a tensor at the root.
- edge_sparse_meta.pth: a state_dict with a sparse COO tensor and a meta tensor.
- edge_complex_optimizer.pth: a float32 state_dict plus a complex64 tensor in optimizer state.
- edge_proto2_builtins.pth: set / frozenset / bytearray / complex at the default protocol 2.
- edge_proto1_long.pth: protocol 1 (an int >= 2^31 uses the text LONG opcode).
- edge_uneven_storage.pth: a float32 view of a 10-byte uint8 storage.
"""
import os
import sys

import torch


def main(out):
    os.makedirs(out, exist_ok=True)
    p = lambda n: os.path.join(out, n)  # noqa: E731
    torch.manual_seed(0)

    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 3)), p('edge_torchscript.pth'))

    torch.save({'model': torch.nn.Linear(2, 2), 'best_acc': torch.tensor(93.5)},
               p('edge_model_object.pth'))

    torch.save({'fc.weight': torch.tensor([[1.0, 0, 0, 2], [0, 0, 3, 0], [0, 0, 0, 0]]).to_sparse(),
                'fc.bias': torch.tensor([1.0, 2.0, 3.0]),
                'emb.weight': torch.empty(5, 2, device='meta')},
               p('edge_sparse_meta.pth'))

    torch.save({'model': {'fc.weight': torch.arange(12, dtype=torch.float32).reshape(3, 4),
                          'fc.bias': torch.tensor([1.0, 2.0, 3.0])},
                'optimizer': {'state': {0: {'exp_avg': torch.zeros(2, dtype=torch.complex64)}}}},
               p('edge_complex_optimizer.pth'))

    torch.save({'w': torch.ones(2), 'tags': {1, 2}, 'frozen': frozenset(['a']),
                'buf': bytearray(b'xy'), 'z': 1 + 2j},
               p('edge_proto2_builtins.pth'))  # default pickle_protocol=2

    torch.save({'model': {'w': torch.tensor([1.5, -2.0])}, 'step': 2**31, 'neg': -(2**40)},
               p('edge_proto1_long.pth'), pickle_protocol=1)

    w = torch.arange(10, dtype=torch.uint8)[:8].view(torch.float32)  # a 10-byte FloatStorage
    torch.save({'w': w}, p('edge_uneven_storage.pth'))

    for n in sorted(os.listdir(out)):
        if n.startswith('edge_'):
            print(n, os.path.getsize(p(n)))


if __name__ == '__main__':
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, '..', '..', 'packages', 'torch', 'test', 'fixtures')
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(default))
