// Hostile files, paths and data for the CLI (issue 15): unbounded reads (devices, FIFOs, files
// beyond what the format allows), gzip that is not gzip or inflates past its header, file-system
// errors named as what they are, names that would leave their folder, outputs all or nothing,
// devices never replaced by rename, and data sets that are not a classification task.
import { execFileSync } from 'node:child_process';
import * as nodeFs from 'node:fs';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  type Stats,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { isKwError, type KwErrorCode } from '@kernelwarehouse/core';
import { describe, expect, it } from 'vitest';
import { run } from '../test/harness.js';
import { checkDataset, type ImageSet, loadIdxFolder, MAX_IDX_VALUES, readIdx } from './data.js';
import {
  type AtomicFs,
  checkPathName,
  makeDir,
  readFileBytes,
  writeFilesAtomic,
  writeOutputs,
} from './fsio.js';

const tmp = (name: string) => mkdtempSync(join(tmpdir(), `kw-hostile-${name}-`));
const isRoot = process.getuid?.() === 0;
const linux = process.platform === 'linux';

function expectKw(f: () => unknown, code: KwErrorCode, words: RegExp): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(isKwError(err, code), `expected ${code}, got ${String(err)}`).toBe(true);
  expect((err as Error).message).toMatch(words);
}

/** IDX bytes: magic 0,0,8,ndim, big-endian dims, then the values. */
function idx(dims: number[], values: Uint8Array | number[]): Uint8Array {
  const head = new Uint8Array(4 + 4 * dims.length);
  head.set([0, 0, 8, dims.length]);
  const dv = new DataView(head.buffer);
  dims.forEach((d, i) => {
    dv.setUint32(4 + 4 * i, d, false);
  });
  const out = new Uint8Array(head.length + values.length);
  out.set(head);
  out.set(values, head.length);
  return out;
}

/** An MNIST-named IDX folder with `n` 4x4 images per split and the given labels. */
function dataDir(trainLabels: number[], testLabels: number[]): string {
  const d = tmp('data');
  const write = (split: string, labels: number[]) => {
    writeFileSync(
      join(d, `${split}-images-idx3-ubyte`),
      idx([labels.length, 4, 4], new Uint8Array(labels.length * 16).fill(9)),
    );
    writeFileSync(join(d, `${split}-labels-idx1-ubyte`), idx([labels.length], labels));
  };
  write('train', trainLabels);
  write('t10k', testLabels);
  return d;
}

describe('unbounded reads: only regular files, at most what the format allows', () => {
  it.runIf(linux)(
    '/dev/zero as --weights or as an ONNX model is refused before reading',
    async () => {
      const out = join(tmp('zero'), 'a.onnx');
      const r1 = await run('export', 'resnet8_cifar', '--weights', '/dev/zero', '--out', out);
      expect(r1.code).toBe(1);
      expect(r1.err).toMatch(
        /IO_ERROR\] cannot read \/dev\/zero: it is a character device, not a regular file/,
      );
      expect(existsSync(out)).toBe(false);
      const r2 = await run('onnx-info', '/dev/zero');
      expect(r2.code).toBe(1);
      expect(r2.err).toMatch(/\/dev\/zero: it is a character device/);
    },
  );

  it.runIf(linux)('a FIFO with no writer is refused, not waited on', async () => {
    const fifo = join(tmp('fifo'), 'model.onnx');
    execFileSync('mkfifo', [fifo]);
    const r = await run('onnx-info', fifo);
    expect(r.err).toMatch(/it is a FIFO \(named pipe\), not a regular file/);
    expectKw(() => readIdx(fifo), 'IO_ERROR', /FIFO/);
  });

  it('a folder, a missing file and a file over the cap are IO_ERROR naming the path', () => {
    const d = tmp('read');
    const f = join(d, 'big.bin');
    writeFileSync(f, new Uint8Array(1000));
    expectKw(() => readFileBytes(d), 'IO_ERROR', /it is a folder, not a regular file/);
    expectKw(() => readFileBytes(join(d, 'nope')), 'IO_ERROR', /nope: no such file/);
    expectKw(
      () => readFileBytes(join(f, 'under-a-file')),
      'IO_ERROR',
      /under-a-file: no such file/,
    );
    expectKw(
      () => readFileBytes(f, { maxBytes: 999, what: 'a test file' }),
      'IO_ERROR',
      /has 1000 bytes, more than the 999 a test file may have/,
    );
    expect(readFileBytes(f, { maxBytes: 1000 }).length).toBe(1000);
  });
});

describe('gzip and IDX: inflate no more than the header needs', () => {
  const d = tmp('gz');
  const good = idx([3, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

  it('a valid .gz IDX (also in several gzip members) reads as the plain file', () => {
    writeFileSync(join(d, 'ok.gz'), gzipSync(good));
    writeFileSync(join(d, 'ok'), good);
    expect(readIdx(join(d, 'ok.gz'))).toEqual(readIdx(join(d, 'ok')));
    expect(readIdx(join(d, 'ok')).dims).toEqual([3, 2, 2]);
    writeFileSync(
      join(d, 'two.gz'),
      Buffer.concat([gzipSync(good.subarray(0, 10)), gzipSync(good.subarray(10))]),
    );
    expect(readIdx(join(d, 'two.gz')).data).toEqual(readIdx(join(d, 'ok.gz')).data);
  });

  const cases: [string, () => Uint8Array, RegExp][] = [
    ['not gzip at all', () => good, /named \.gz but not gzip data/],
    [
      'gzip magic, then garbage',
      () => Uint8Array.from([0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
      /not a valid gzip file/,
    ],
    [
      'truncated gzip',
      () => gzipSync(good).subarray(0, 25),
      /not a valid gzip file|truncated IDX header|file holds/,
    ],
    [
      'a bomb: header says 12 values, 50 MB of zeros follow',
      () => gzipSync(Buffer.concat([good, Buffer.alloc(50e6)])),
      /inflates to more than the 28 bytes its IDX header \[3, 2, 2\] needs/,
    ],
    [
      'a header claiming more than 2^30 values',
      () => gzipSync(idx([60000, 280, 280], [])),
      new RegExp(`more than the ${MAX_IDX_VALUES} this reader takes`),
    ],
    [
      'gzip of a non-IDX file',
      () => gzipSync(Buffer.from('hello world')),
      /not an unsigned-byte IDX file/,
    ],
    [
      'fewer values than the header says',
      () => gzipSync(good.subarray(0, 20)),
      /header says 12 values, file holds 4/,
    ],
  ];
  for (const [label, bytes, words] of cases) {
    it(label, () => {
      const f = join(d, `${label.replace(/\W+/g, '_')}.gz`);
      writeFileSync(f, bytes());
      expectKw(() => readIdx(f), 'IO_ERROR', words);
    });
  }

  it('a plain IDX file whose header claims more than it holds, or more than 2^30', () => {
    writeFileSync(join(d, 'short'), good.subarray(0, 20));
    expectKw(() => readIdx(join(d, 'short')), 'IO_ERROR', /header says 12 values, file holds 4/);
    writeFileSync(join(d, 'huge'), idx([2 ** 16, 2 ** 15], []));
    expectKw(() => readIdx(join(d, 'huge')), 'IO_ERROR', /2147483648 values, more than/);
  });
});

describe('data sets that are not a classification task: DATA_INVALID at load time', () => {
  const set = (labels: ArrayLike<number>, path = 'train-labels'): ImageSet => ({
    images: new Uint8Array(0),
    labels: Uint8Array.from(labels),
    count: labels.length,
    height: 1,
    width: 1,
    labelsPath: path,
  });
  const digits = Array.from({ length: 40 }, (_, i) => i % 10);

  it('MNIST-like labels give K = 10', () => {
    expect(checkDataset(set(digits), set([3, 9, 0], 'test'))).toBe(10);
  });

  it('a stray label 255 among 0..9: classes 10..254 never occur', () => {
    expectKw(
      () => checkDataset(set([...digits, 255]), set([1])),
      'DATA_INVALID',
      /train-labels: labels must be 0..K-1 .*label 255 \(index 40\) makes K = 256, but 245 class\(es\) never occur: 10, 11/,
    );
  });

  it('a test label the training set never had', () => {
    expectKw(
      () => checkDataset(set(digits), set([1, 2, 10], 'test-labels')),
      'DATA_INVALID',
      /test-labels: label 10 at index 2 is a class the training set does not have \(its labels are 0..9\)/,
    );
  });

  it('a single class, and no labels at all', () => {
    expectKw(() => checkDataset(set([0, 0, 0]), set([0])), 'DATA_INVALID', /at least 2 classes/);
    expectKw(() => checkDataset(set([]), set([0])), 'DATA_INVALID', /no labels/);
  });

  it('500,000 labels are checked without Math.max(...labels) (which overflows the stack)', () => {
    const many = Uint8Array.from({ length: 500_000 }, (_, i) => i % 7);
    expect(checkDataset(set(many), set(many.subarray(0, 1000)))).toBe(7);
    expect(() => Math.max(...many)).toThrow(RangeError); // what this replaces
  });

  it('kw train on a single-class folder: exit 1 naming the file, no run folder left', async () => {
    const d = dataDir(Array(64).fill(3), Array(16).fill(3));
    expect(loadIdxFolder(d, 'train').labelsPath).toBe(join(d, 'train-labels-idx1-ubyte'));
    const out = join(tmp('run'), 'run');
    const r = await run(
      'train',
      '--data-dir',
      d,
      '--train-size',
      '32',
      '--test-size',
      '16',
      '--epochs',
      '1',
      '--out',
      out,
    );
    expect(r.code, r.err).toBe(1);
    expect(r.err).toMatch(/DATA_INVALID\] .*train-labels-idx1-ubyte: labels must be 0..K-1/);
    expect(existsSync(out)).toBe(false);
  });
});

describe('file-system errors are IO_ERROR naming the path and the reason', () => {
  /** An fs whose `at` call fails with `code` (the others succeed without touching the disk). */
  const failing = (at: keyof AtomicFs, code: string): AtomicFs => {
    const fs: AtomicFs = {
      openSync: () => 7,
      writeSync: (_fd, _b, _o, l) => l,
      fsyncSync: () => {},
      closeSync: () => {},
      renameSync: () => {},
      rmSync: () => {},
    };
    (fs as unknown as Record<string, unknown>)[at] = () => {
      throw Object.assign(new Error(code), { code });
    };
    return fs;
  };

  it.each([
    ['EROFS', 'the file system is read-only'],
    ['EACCES', 'permission denied'],
    ['EPERM', 'permission denied'],
    ['ENOSPC', 'the disk is full'],
    ['ENOTDIR', 'a part of the path is a file, not a folder'],
    ['ENOENT', 'no such file or folder'],
    ['EIO', 'an input/output error of the device'],
  ])('%s on open: "%s"', (code, words) => {
    const target = join(tmp('fs'), 'a.onnx');
    expectKw(
      () => writeFilesAtomic([{ path: target, bytes: 'x' }], failing('openSync', code)),
      'IO_ERROR',
      new RegExp(`cannot write ${target}: ${words}; nothing was written`),
    );
  });

  it('a read-only folder is reported as read-only, not as missing', () => {
    const d = tmp('ro');
    expectKw(
      () =>
        writeFilesAtomic([{ path: join(d, 'a.onnx'), bytes: 'x' }], failing('openSync', 'EROFS')),
      'IO_ERROR',
      /read-only/,
    );
  });

  it('real ENOTDIR: an output, a folder and a Triton repository under a file', async () => {
    const d = tmp('notdir');
    const file = join(d, 'file');
    writeFileSync(file, 'x');
    expectKw(
      () => makeDir(join(file, 'sub')),
      'IO_ERROR',
      /a part of the path is a file, not a folder \(.*\/file\)/,
    );
    const r = await run('export', 'resnet8_cifar', '--triton-repo', join(file, 'repo'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /IO_ERROR\] cannot write to folder .*file\/repo\/resnet8_cifar.*\/1: a part of the path is a file, not a folder/,
    );
    expect(readdirSync(d)).toEqual(['file']);
  });

  it.runIf(linux)(
    "a --triton-repo under /proc fails at once (Node's recursive mkdir loops there)",
    async () => {
      const r = await run('export', 'resnet8_cifar', '--triton-repo', '/proc/kw-hostile-test/repo');
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/IO_ERROR\] cannot write to folder \/proc\/kw-hostile-test/);
    },
  );

  it.runIf(!isRoot)('an unwritable folder (not root) is "permission denied"', () => {
    const d = tmp('perm');
    execFileSync('chmod', ['555', d]);
    expectKw(() => makeDir(join(d, 'x')), 'IO_ERROR', /permission denied/);
    expectKw(
      () => writeFilesAtomic([{ path: join(d, 'a.onnx'), bytes: 'x' }]),
      'IO_ERROR',
      /permission denied; nothing was written/,
    );
  });
});

describe('names that become paths stay inside their folder', () => {
  it.each([['..'], ['.'], ['a/b'], ['../../etc'], [''], ['x'.repeat(256)], ['a\u0000b']])(
    'refuses %j',
    (name) => {
      expectKw(() => checkPathName(name, 'name'), 'ARGUMENT_INVALID', /not "\." or "\.\."/);
    },
  );

  it('kw export --triton-name .. writes nothing outside (or inside) the repository', async () => {
    const parent = tmp('triton');
    const repo = join(parent, 'repo');
    for (const name of ['..', '.', '../x']) {
      const r = await run('export', 'resnet8_cifar', '--triton-repo', repo, '--triton-name', name);
      expect(r.code, r.err).toBe(2);
      expect(r.err).toMatch(/--triton-name must be/);
    }
    expect(readdirSync(parent)).toEqual([]);
  });
});

describe('outputs all or nothing', () => {
  it('kw export --out a.onnx --weights-out <bad path>: no a.onnx, no temporary file', async () => {
    const d = tmp('aon');
    const onnx = join(d, 'a.onnx');
    for (const bad of [join(d, 'missing', 'w.safetensors'), d, join(onnx, 'w')]) {
      const r = await run('export', 'resnet8_cifar', '--out', onnx, '--weights-out', bad);
      expect(r.code, r.err).toBe(1);
      expect(r.err).toMatch(/IO_ERROR.*none of the files was written/);
      expect(readdirSync(d)).toEqual([]);
    }
  });

  it('an existing a.onnx keeps its bytes when the second output fails', async () => {
    const d = tmp('keep');
    const onnx = join(d, 'a.onnx');
    writeFileSync(onnx, 'old model');
    const r = await run(
      'export',
      'resnet8_cifar',
      '--out',
      onnx,
      '--weights-out',
      join(d, 'no', 'w'),
    );
    expect(r.code).toBe(1);
    expect(readFileSync(onnx, 'utf8')).toBe('old model');
    expect(readdirSync(d)).toEqual(['a.onnx']);
  });

  it('--triton-repo with a bad --weights-out leaves no repository folders behind', async () => {
    const d = tmp('repo');
    const repo = join(d, 'repo');
    const r = await run(
      'export',
      'resnet8_cifar',
      '--triton-repo',
      repo,
      '--weights-out',
      join(d, 'x', 'w'),
    );
    expect(r.code).toBe(1);
    expect(readdirSync(d)).toEqual([]);
  });

  it('the same file as two outputs is refused before anything is written', () => {
    const d = tmp('same');
    expectKw(
      () =>
        writeFilesAtomic([
          { path: join(d, 'a'), bytes: '1' },
          { path: join(d, '.', 'a'), bytes: '2' },
        ]),
      'ARGUMENT_INVALID',
      /are the same file/,
    );
    expect(readdirSync(d)).toEqual([]);
  });

  it('a rename that fails half way puts the files already replaced back', () => {
    const d = tmp('rollback');
    const a = join(d, 'a');
    const b = join(d, 'b');
    writeFileSync(a, 'old a');
    let renames = 0;
    const real = (p: string, q: string) => {
      // the real rename for everything but the second target's
      if (q === b && ++renames === 1) throw Object.assign(new Error('EIO'), { code: 'EIO' });
      nodeFs.renameSync(p, q);
    };
    const fs: AtomicFs = {
      openSync: (p, f) => nodeFs.openSync(p, f),
      writeSync: (fd, bytes, o, l) => nodeFs.writeSync(fd, bytes, o, l),
      fsyncSync: (fd) => nodeFs.fsyncSync(fd),
      closeSync: (fd) => nodeFs.closeSync(fd),
      renameSync: real,
      rmSync: (p) => nodeFs.rmSync(p, { force: true }),
    };
    expectKw(
      () =>
        writeFilesAtomic(
          [
            { path: a, bytes: 'new a' },
            { path: b, bytes: 'new b' },
          ],
          fs,
        ),
      'IO_ERROR',
      /cannot write .*\/b: an input\/output error of the device; none of the files was written/,
    );
    expect(readFileSync(a, 'utf8')).toBe('old a');
    expect(readdirSync(d)).toEqual(['a']);
    // and without a failure both land, with no stray files
    writeFilesAtomic([
      { path: a, bytes: 'new a' },
      { path: b, bytes: 'new b' },
    ]);
    expect([readFileSync(a, 'utf8'), readFileSync(b, 'utf8')]).toEqual(['new a', 'new b']);
    expect(readdirSync(d).sort()).toEqual(['a', 'b']);
  });

  it('a character device is written in place and never renamed over', () => {
    const d = tmp('dev');
    const dev = join(d, 'fake-device');
    const calls: string[] = [];
    const fakeDevice = {
      isSymbolicLink: () => false,
      isFile: () => false,
      isCharacterDevice: () => true,
    } as Stats;
    const log = (c: string) => {
      calls.push(c);
    };
    const fs: AtomicFs = {
      openSync: (p, f) => {
        log(`open ${p} ${f}`);
        return 7;
      },
      writeSync: (_fd, _b, _o, l) => {
        log('write');
        return l;
      },
      fsyncSync: () => log('fsync'),
      closeSync: () => log('close'),
      renameSync: (p, q) => log(`rename ${p} ${q}`),
      rmSync: (p) => log(`rm ${p}`),
      lstatSync: (p) => (p === dev ? fakeDevice : undefined),
    };
    writeFilesAtomic([{ path: dev, bytes: 'x' }], fs);
    expect(calls).toEqual([`open ${dev} w`, 'write', 'close']);
  });

  // Not as root: were this ever to regress, root's rename would replace the real /dev/full. The
  // logic is covered above with a fake device; run as root by hand it passes too (issue 15 note).
  it.runIf(linux && !isRoot)(
    '/dev/full: "the disk is full", and it stays a character device',
    async () => {
      const r = await run('export', 'resnet8_cifar', '--out', '/dev/full');
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/cannot write \/dev\/full: the disk is full/);
      expect(lstatSync('/dev/full').isCharacterDevice()).toBe(true);
      const n = await run('export', 'resnet8_cifar', '--out', '/dev/null');
      expect(n.code, n.err).toBe(0);
      expect(statSync('/dev/null').isCharacterDevice()).toBe(true);
    },
  );

  it('FIFOs, sockets and folders as outputs are refused with nothing written', () => {
    const d = tmp('outdir');
    mkdirSync(join(d, 'sub'));
    expectKw(
      () =>
        writeOutputs([
          { path: join(d, 'a'), bytes: '1' },
          { path: join(d, 'sub'), bytes: '2' },
        ]),
      'IO_ERROR',
      /sub: it is a folder, not a regular file; none of the files was written/,
    );
    expect(readdirSync(d)).toEqual(['sub']);
  });
});
