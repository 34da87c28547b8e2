import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { isKwError } from '@kernelwarehouse/core';
import { canonicalJson, sha256Hex } from '@kernelwarehouse/tfjs';
import { describe, expect, it } from 'vitest';
import { run, startTrain, waitFor } from '../test/harness.js';
import { readCheckpoint } from './checkpoint.js';
import { type AtomicFs, writeFileAtomic } from './fsio.js';

// 6 steps per epoch, 2 epochs, 2 variants: a few seconds per run on wasm; one process (the
// checkpoint of an in-process job; src/jobs.test.ts interrupts and resumes --jobs 2)
const TINY = [
  '--jobs',
  '1',
  '--seeds',
  '1',
  '--methods',
  'plain,kw:1x',
  '--train-size',
  '192',
  '--test-size',
  '64',
  '--epochs',
  '2',
  '--batch',
  '32',
];

const tmp = (name: string) => join(mkdtempSync(join(tmpdir(), `kw-${name}-`)), 'run');

describe('kw train checkpoints and --resume', () => {
  it('SIGINT mid-epoch exits 130 with a checkpoint; --resume finishes bit-identical to an uninterrupted run (wasm)', async () => {
    const out = tmp('sigint');
    const p = startTrain([...TINY, '--checkpoint-every', '2', '--out', out]);
    // the KW variant has written a mid-epoch checkpoint: interrupt it
    await waitFor(p, /KW 1x\s+epoch 1\/2 \[#+\.+\] 2\/6 .*\(checkpoint\)/);
    p.child.kill('SIGINT');
    expect(await p.exit, p.err()).toBe(130);
    // where the stop lands depends on how soon this process sees the line (a busy machine: later)
    const next = /stopped \(SIGINT\) in kw:1x seed 0 \(next: epoch (\d) step (\d)\/6\)/.exec(
      p.err(),
    );
    expect(next, p.err()).not.toBeNull();
    expect(p.err()).toContain(`resume with: kw train --resume ${out}`);
    const { manifest } = await readCheckpoint<{
      finished: { method: string }[];
      job: { method: string; seed: number };
      options: { checkpointEvery: number };
      current: { epoch: number; step: number; curve: unknown[] };
    }>(join(out, 'checkpoint'));
    expect(manifest.state.finished.map((r) => r.method)).toEqual(['plain']);
    expect(manifest.state.job).toEqual({ method: 'kw:1x', seed: 0 });
    // --checkpoint-every is part of what is resumed
    expect(manifest.state.options.checkpointEvery).toBe(2);
    // after the checkpoint at step 2 it waited for, before the variant's end (12 steps)
    const { epoch, step } = manifest.state.current;
    expect([epoch + 1, step + 1]).toEqual([Number(next![1]), Number(next![2])]);
    expect(epoch * 6 + step).toBeGreaterThanOrEqual(3);
    expect(epoch * 6 + step).toBeLessThan(12);
    expect(manifest.state.current.curve).toHaveLength(epoch * 6 + step);
    expect(existsSync(join(out, 'KW-1x.safetensors'))).toBe(false);

    // flags that contradict the saved options are refused
    const bad = await run('train', '--resume', out, '--epochs', '3');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--epochs 3 differs from the run's 2/);
    const every = await run('train', '--resume', out, '--checkpoint-every', '5');
    expect(every.code).toBe(2);
    expect(every.err).toMatch(/--checkpoint-every 5 differs from the run's 2/);

    const resumed = await run('train', '--resume', out, ...TINY, '--checkpoint-every', '2');
    expect(resumed.code, resumed.err).toBe(0);
    expect(resumed.err).toContain(
      `1 variant(s) done, kw:1x seed 0 continues at epoch ${epoch + 1} step ${step + 1}`,
    );
    // the resumed run retrained only the rest of KW 1x
    expect(resumed.err).not.toMatch(/plain\s+epoch/);
    expect(existsSync(join(out, 'checkpoint'))).toBe(false);

    const straight = tmp('straight');
    const r = await run('train', ...TINY, '--out', straight);
    expect(r.code, r.err).toBe(0);
    for (const f of ['plain.safetensors', 'KW-1x.safetensors']) {
      // tolerance: 0 (bit-identical). Weight init, the per-epoch shuffle, tau and the Adam state
      // (moments, step count and its beta powers) are restored exactly, and tfjs wasm is
      // deterministic on one machine.
      expect(Buffer.compare(readFileSync(join(out, f)), readFileSync(join(straight, f))), f).toBe(
        0,
      );
    }
    const a = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    const b = JSON.parse(readFileSync(join(straight, 'results.json'), 'utf8'));
    expect(a.results.map((x: { curve: unknown }) => x.curve)).toEqual(
      b.results.map((x: { curve: unknown }) => x.curve),
    );
  });

  it('SIGKILL at random moments never leaves a checkpoint that does not load', async () => {
    const out = tmp('sigkill');
    let generations = 0;
    for (let k = 0; k < 4; k++) {
      const args = k === 0 ? [...TINY, '--out', out] : ['--resume', out];
      const p = startTrain([...args, '--checkpoint-every', '1']);
      // wait until this process has written two checkpoints of its own (so the generation must
      // have grown, however slow the machine), then kill after a random delay within one
      // checkpoint interval, as measured (within writes or not). A fixed delay would let a fast
      // machine finish the run's 24 steps before the fourth kill.
      await waitFor(p, /\(checkpoint\)/);
      const t0 = performance.now();
      await waitFor(p, /\(checkpoint\)/, 2);
      const interval = performance.now() - t0;
      await new Promise((r) => setTimeout(r, Math.random() * interval));
      p.child.kill('SIGKILL');
      await p.exit;
      const ck = await readCheckpoint<{ current: unknown }>(join(out, 'checkpoint'));
      expect(ck.manifest.generation).toBeGreaterThan(generations);
      generations = ck.manifest.generation;
      // no file of another generation is needed; stray temp files may remain from the kill
      for (const f of readdirSync(join(out, 'checkpoint')))
        expect(f === 'checkpoint.json' || /^g\d+\.|\.tmp$/.test(f), f).toBe(true);
    }
    const done = await run('train', '--resume', out);
    expect(done.code, done.err).toBe(0);
    expect(existsSync(join(out, 'results.json'))).toBe(true);
  });

  it('a truncated or corrupted checkpoint gives an error naming the file', async () => {
    const out = tmp('corrupt');
    const p = startTrain([...TINY, '--checkpoint-every', '2', '--out', out]);
    await waitFor(p, /plain\s+epoch 1\/2 .* 2\/6 .*\(checkpoint\)/);
    p.child.kill('SIGINT');
    expect(await p.exit).toBe(130);
    const dir = join(out, 'checkpoint');
    const manifest = JSON.parse(readFileSync(join(dir, 'checkpoint.json'), 'utf8'));
    const weights = join(dir, manifest.files.weights.file);
    const bytes = readFileSync(weights);
    const good = readFileSync(join(dir, 'checkpoint.json'));

    truncateSync(weights, 1000);
    let r = await run('train', '--resume', out);
    expect(r.code).toBe(1);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toContain(`checkpoint file ${weights} is corrupt: 1000 bytes`);

    const flipped = Buffer.from(bytes);
    flipped[flipped.length - 5] ^= 0xff;
    writeFileSync(weights, flipped);
    r = await run('train', '--resume', out);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`checkpoint file ${weights} is corrupt: its SHA-256 differs`);

    writeFileSync(weights, bytes);
    writeFileSync(join(dir, 'checkpoint.json'), '{"format": "kw-train-chec');
    r = await run('train', '--resume', out);
    expect(r.code).toBe(1);
    expect(r.err).toContain(
      `checkpoint ${join(dir, 'checkpoint.json')} is corrupt: not valid JSON`,
    );

    // an edit that keeps valid JSON (a finished variant's accuracy, the step, the lr) is refused
    for (const edit of [
      (m: Record<string, any>) => (m.state.current.step += 1),
      (m: Record<string, any>) => (m.state.options.lr = 0.05),
      (m: Record<string, any>) => (m.state.options.checkpointEvery = 50),
    ]) {
      writeFileSync(join(dir, 'checkpoint.json'), good);
      const m = JSON.parse(good.toString('utf8'));
      edit(m);
      writeFileSync(join(dir, 'checkpoint.json'), JSON.stringify(m));
      r = await run('train', '--resume', out);
      expect(r.code).toBe(1);
      expect(r.err).toContain(
        `kw train: [CHECKPOINT_INVALID] checkpoint ${join(dir, 'checkpoint.json')} was modified after it was written`,
      );
    }
    // a file name leaving the folder is refused by name, even under a matching hash
    const m = JSON.parse(good.toString('utf8'));
    m.files.weights.file = '../../etc/hostname';
    const { manifestSha256: _, ...body } = m;
    m.manifestSha256 = await sha256Hex(canonicalJson(body));
    writeFileSync(join(dir, 'checkpoint.json'), JSON.stringify(m));
    r = await run('train', '--resume', out);
    expect(r.code).toBe(1);
    expect(r.err).toContain(
      `[CHECKPOINT_INVALID] checkpoint ${join(dir, 'checkpoint.json')} names the file "../../etc/hostname", which is not a plain file name inside the checkpoint folder; refused before opening it`,
    );
    writeFileSync(join(dir, 'checkpoint.json'), good);

    const empty = mkdtempSync(join(tmpdir(), 'kw-empty-'));
    r = await run('train', '--resume', empty);
    expect(r.code).toBe(1);
    expect(r.err).toContain(
      `no checkpoint to resume: ${join(empty, 'checkpoint', 'checkpoint.json')}`,
    );
  });

  it('an output folder that cannot be written gives one clear line, exit 1, and no files', async () => {
    const root = mkdtempSync(join(tmpdir(), 'kw-ro-'));
    let out: string;
    if (process.getuid?.() === 0) {
      // root ignores chmod: a regular file in the path makes it unwritable for anyone (ENOTDIR)
      writeFileSync(join(root, 'file'), 'x');
      out = join(root, 'file', 'sub');
    } else {
      mkdirSync(join(root, 'ro'));
      chmodSync(join(root, 'ro'), 0o555);
      out = join(root, 'ro', 'run');
    }
    const r = await run('train', ...TINY, '--out', out);
    expect(r.code).toBe(1);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(
      new RegExp(
        `^kw train: \\[IO_ERROR\\] cannot write to folder ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: (permission denied|a part of the path is a file, not a folder)`,
      ),
    );
    expect(existsSync(out)).toBe(false);
  });

  it('unknown --methods and bad --preset are usage errors', async () => {
    for (const [argv, pattern] of [
      [['train', '--methods', 'plain,foo'], /bad method "foo" in --methods; accepted: plain, kw:B/],
      [['train', '--methods', 'kw:abc'], /bad method "kw:abc"/],
      [['train', '--methods', 'plain', '--budgets', '1x'], /give --methods or --budgets/],
      [['train', '--preset', 'huge'], /unknown preset "huge"; accepted: paper-direction/],
      [['train', '--seeds', '0'], /--seeds must be an integer in \[1, 1000\]; found "0"/],
      [
        ['train', '--checkpoint-every', '-1'],
        /\[ARGUMENT_INVALID\] --checkpoint-every must be an integer in \[0, 1000000000\]; found "-1"/,
      ],
    ] as [string[], RegExp][]) {
      const r = await run(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err).toMatch(pattern);
    }
  });
});

describe('writeFileAtomic', () => {
  const failing = (at: keyof AtomicFs, code: string): AtomicFs & { removed: string[] } => {
    const fs = {
      removed: [] as string[],
      openSync: () => 7,
      writeSync: (_fd: number, _b: Uint8Array, _o: number, l: number) => l,
      fsyncSync: () => {},
      closeSync: () => {},
      renameSync: () => {},
      rmSync: (p: string) => {
        fs.removed.push(p);
      },
    };
    (fs as Record<string, unknown>)[at] = () => {
      throw Object.assign(new Error(`${code}: injected`), { code });
    };
    return fs;
  };

  it('a full disk (ENOSPC in write or fsync) leaves the target as it was and names it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kw-fsio-'));
    const target = join(dir, 'results.json');
    writeFileSync(target, 'old');
    for (const at of ['writeSync', 'fsyncSync'] as const) {
      const fs = failing(at, 'ENOSPC');
      let err: unknown;
      try {
        writeFileAtomic(target, 'new bytes', fs);
      } catch (e) {
        err = e;
      }
      expect(isKwError(err, 'IO_ERROR')).toBe(true);
      expect((err as Error).message).toBe(
        `[IO_ERROR] cannot write ${target}: the disk is full; nothing was written`,
      );
      // the temporary file beside the target was removed, the target untouched
      expect(fs.removed).toHaveLength(1);
      expect(dirname(fs.removed[0]!)).toBe(dir);
      expect(readFileSync(target, 'utf8')).toBe('old');
    }
  });

  it('writes, fsyncs and renames on the real disk, leaving no temporary file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kw-fsio-'));
    writeFileAtomic(join(dir, 'a.bin'), new Uint8Array([1, 2, 3]));
    expect([...readFileSync(join(dir, 'a.bin'))]).toEqual([1, 2, 3]);
    expect(readdirSync(dir)).toEqual(['a.bin']);
  });
});
