// `kw train --jobs N`: the (method, seed) jobs in child processes give the run folder one process
// gives; an interrupted parallel run resumes; a failing child stops the run with its stderr.
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { run, startTrain, waitFor } from '../test/harness.js';

const TINY = [
  '--methods',
  'plain,kw:1x',
  '--train-size',
  '64',
  '--test-size',
  '32',
  '--batch',
  '16',
  '--epochs',
  '1',
  '--width',
  '0.5',
  '--bn-passes',
  '2',
];
// no wall-clock limit on a loaded machine (issue 15): generous vitest timeouts only
const LONG = 10 * 60_000;

const tmp = (name: string) => join(mkdtempSync(join(tmpdir(), `kw-jobs-${name}-`)), 'run');

interface Result {
  method: string;
  seed: number;
  params: number;
  testAccuracy: number;
  finalLoss: number;
  onnxAgreement: number;
  curve: unknown[];
}
const results = (dir: string): Result[] =>
  JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')).results;
/** What must not depend on --jobs (times do). */
const same = (r: Result) => ({
  method: r.method,
  seed: r.seed,
  params: r.params,
  testAccuracy: r.testAccuracy,
  finalLoss: r.finalLoss,
  onnxAgreement: r.onnxAgreement,
  curve: r.curve,
});

describe('kw train --jobs', () => {
  it(
    '--jobs 2 writes the results, weights and report of --jobs 1, in the same order',
    async () => {
      const one = tmp('one');
      const two = tmp('two');
      const a = await run('train', ...TINY, '--seeds', '2', '--jobs', '1', '--out', one);
      expect(a.code, a.err).toBe(0);
      const b = await run('train', ...TINY, '--seeds', '2', '--jobs', '2', '--out', two);
      expect(b.code, b.err).toBe(0);
      // each job's progress comes back tagged with its place in the run
      expect(b.err).toMatch(/\[2\/4 s0\] KW 1x\s+epoch 1\/1/);
      expect(results(one).map((r) => `${r.method} ${r.seed}`)).toEqual([
        'plain 0',
        'kw:1x 0',
        'plain 1',
        'kw:1x 1',
      ]);
      // tolerance 0: each job trains with the same seed and options in its own process, and tfjs
      // wasm is deterministic on one machine
      expect(results(two).map(same)).toEqual(results(one).map(same));
      const files = readdirSync(one).sort();
      expect(readdirSync(two).sort()).toEqual(files);
      for (const f of files.filter((f) => /\.(safetensors|onnx)$/.test(f)))
        expect(Buffer.compare(readFileSync(join(one, f)), readFileSync(join(two, f))), f).toBe(0);
      expect(files).toContain('KW-1x-seed1.onnx');
      // the run is complete: no checkpoint and no job folders are left
      expect(existsSync(join(two, 'checkpoint'))).toBe(false);
      expect(existsSync(join(two, 'jobs'))).toBe(false);
      expect(readFileSync(join(two, 'report.md'), 'utf8')).toContain('--jobs 2');
    },
    LONG,
  );

  it(
    'SIGINT stops every job at a checkpoint (exit 130); --resume finishes with the results of --jobs 1',
    async () => {
      const out = tmp('sigint');
      // 12 steps per epoch, 2 epochs
      const args = [
        ...TINY.map((a, i) =>
          TINY[i - 1] === '--train-size' ? '192' : TINY[i - 1] === '--epochs' ? '2' : a,
        ),
        '--checkpoint-every',
        '2',
        '--seeds',
        '1',
      ];
      const p = startTrain([...args, '--jobs', '2', '--out', out]);
      await waitFor(p, /\[2\/2\] KW 1x\s+epoch 1\/2 .*\(checkpoint\)/);
      p.child.kill('SIGINT');
      expect(await p.exit, p.err()).toBe(130);
      expect(p.err()).toMatch(/stopped \(SIGINT\) with [01] of 2 jobs done/);
      expect(p.err()).toContain(`resume with: kw train --resume ${out}`);
      expect(existsSync(join(out, 'results.json'))).toBe(false);
      // KW 1x stopped mid-run: its own checkpoint is there
      expect(existsSync(join(out, 'jobs', 'job-1', 'checkpoint', 'checkpoint.json'))).toBe(true);

      // --jobs is not an option of the run: with --jobs 1 the jobs go on from their checkpoints,
      // one child process at a time
      const r = startTrain(['--resume', out, '--jobs', '1']);
      expect(await r.exit, r.err()).toBe(0);
      expect(r.err()).toMatch(/\[2\/2\] KW 1x\s+epoch 2\/2/);
      // KW 1x went on from its checkpoint (after step 2 at least): step 2 is not trained again
      expect(r.err()).not.toMatch(/\[2\/2\] KW 1x\s+epoch 1\/2 \[[#.]+\] 2\/12 /);

      const straight = tmp('straight');
      const s = await run('train', ...args, '--jobs', '1', '--out', straight);
      expect(s.code, s.err).toBe(0);
      expect(results(out).map(same)).toEqual(results(straight).map(same));
      expect(existsSync(join(out, 'jobs'))).toBe(false);
    },
    LONG,
  );

  it(
    'a failing child stops the run with TRAIN_JOB_FAILED and its stderr, and writes no report',
    async () => {
      const out = tmp('fail');
      // the child training job 1 (KW 1x) dies at start; the parent and job 0 run normally
      const hook = join(dirname(out), 'fail-job-1.mjs');
      writeFileSync(
        hook,
        `if (process.argv.some((a) => /job-1$/.test(a))) {\n  process.stderr.write('injected failure of job 1\\n');\n  process.exit(3);\n}\n`,
      );
      const env = { ...process.env, NODE_OPTIONS: `--import ${pathToFileURL(hook).href}` };
      const p = startTrain([...TINY, '--seeds', '1', '--jobs', '2', '--out', out], env);
      expect(await p.exit, p.err()).toBe(1);
      expect(p.err()).toMatch(
        /\[TRAIN_JOB_FAILED\] kw train --jobs: job 2\/2 \(kw:1x seed 0, .*job-1\) exited with status 3/,
      );
      expect(p.err()).toContain('injected failure of job 1');
      for (const f of ['results.json', 'report.md', 'loss.svg'])
        expect(existsSync(join(out, f)), f).toBe(false);
      expect(existsSync(join(out, 'checkpoint', 'checkpoint.json'))).toBe(true);

      // without the failure the run resumes and completes
      const r = startTrain(['--resume', out, '--jobs', '2']);
      expect(await r.exit, r.err()).toBe(0);
      expect(results(out).map((x) => x.method)).toEqual(['plain', 'kw:1x']);
    },
    LONG,
  );
});
