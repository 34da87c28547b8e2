/**
 * `kw train --jobs N`: the (method, seed) jobs of a run in N child processes at once (tfjs wasm
 * in Node trains on one thread). Each job is a complete one-method, one-seed run in
 * `RUN_DIR/jobs/job-<i>/`, started as `kw train --resume` of a checkpoint that holds its options,
 * so a child trains exactly what the same job trains in one process (same seed, same options).
 * The parent forwards the children's progress, collects their results and weights into the run
 * folder in the sequential order, and keeps its own checkpoint (the options and the finished
 * jobs) so `--resume RUN_DIR` restarts only the unfinished jobs, each from its own checkpoint.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KwError } from '@kernelwarehouse/core';
import type { CheckpointDir } from '@kernelwarehouse/tfjs';
import { checkpointDir, hasCheckpoint } from './checkpoint.js';
import { fsCall, pathExists, readFileBytes, removePath } from './fsio.js';
import type { Io } from './io.js';
import type { MethodChoice, RunOptions } from './train-options.js';
import type { TrainResult } from './train-report.js';
import type { TrainState } from './train-setup.js';

const KW_BIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'kw.js');

/** One (method, seed) job and the file stem of its weights in the run folder. */
export interface TrainJob {
  choice: MethodChoice;
  seed: number;
  slug: string;
}

/** The file stem of a variant's weights: `KW-1x`, `KW-1x-seed3` when the run has several seeds. */
export const slugOf = (label: string, seed: number, seeds: number) =>
  `${label.replace(/[^a-zA-Z0-9]+/g, '-').replace(/-$/, '')}${seeds > 1 ? `-seed${seed}` : ''}`;

/** The run's jobs in the sequential order: seed by seed, the methods in --methods order. */
export function listJobs(choices: MethodChoice[], opts: RunOptions): TrainJob[] {
  const jobs: TrainJob[] = [];
  for (let s = 0; s < opts.seeds; s++)
    for (const choice of choices)
      jobs.push({
        choice,
        seed: opts.seed + s,
        slug: slugOf(choice.label, opts.seed + s, opts.seeds),
      });
  return jobs;
}

/** The jobs, the finished ones, and how many run at once (`--jobs`, at most the unfinished). */
export function planJobs(
  choices: MethodChoice[],
  opts: RunOptions,
  resumed: TrainState | undefined,
  jobs: number,
) {
  const all = listJobs(choices, opts);
  const finished = resumed?.finished ?? [];
  const done = (j: TrainJob) =>
    finished.some((r) => r.method === j.choice.key && r.seed === j.seed);
  const parallel = Math.min(jobs, all.filter((j) => !done(j)).length);
  return { jobs: all, finished, parallel, resumed: resumed !== undefined };
}

export const shellQuote = (s: string) =>
  /^[\w./:=@-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;

/** Checkpoint statistics back from a child's results.json summary (count, mean, max kept). */
function checkpointEntries(
  c: { written: number; meanMs: number; maxMs: number; maxBytes: number } | null,
) {
  if (!c || c.written < 1) return [];
  const rest = c.written > 1 ? (c.meanMs * c.written - c.maxMs) / (c.written - 1) : 0;
  return Array.from({ length: c.written }, (_, k) => ({
    ms: k === 0 ? c.maxMs : rest,
    bytes: c.maxBytes,
  }));
}

/**
 * In a job's child process: call `stop` once the parent `kw train --jobs` is gone, even killed
 * with SIGKILL (the child then checkpoints and exits like on SIGTERM). Elsewhere a no-op.
 */
export function watchParent(stop: () => void): () => void {
  const parent = Number(process.env.KW_TRAIN_PARENT_PID);
  if (!parent || parent !== process.ppid) return () => {};
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    // the parent's end of the stderr pipe is closed: messages go nowhere, the checkpoint is written
    process.stderr.on('error', () => {});
    stop();
  }, 500);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * Train `jobs` in `parallel` child processes. Returns the results in job order, or 130 after
 * SIGINT/SIGTERM (forwarded to the children, which checkpoint and exit 130). A child that fails
 * stops the others (they checkpoint) and throws TRAIN_JOB_FAILED with the end of its stderr.
 */
export async function runJobs(p: {
  io: Io;
  out: string;
  opts: RunOptions;
  argv: string[];
  dirCk: CheckpointDir;
  finished: TrainResult[];
  jobs: TrainJob[];
  parallel: number;
  /** False: a fresh run, whose folder may hold no job of another run. */
  resumed: boolean;
}): Promise<{ results: TrainResult[]; checkpoints: { ms: number; bytes: number }[] } | 130> {
  const { io, out, opts, jobs } = p;
  const byJob: (TrainResult | undefined)[] = jobs.map(({ choice, seed }) =>
    p.finished.find((r) => r.method === choice.key && r.seed === seed),
  );
  const checkpoints: { ms: number; bytes: number }[] = [];
  const jobDir = (i: number) => join(out, 'jobs', `job-${i}`);
  const running = new Map<number, ChildProcess>();
  let stopSignal: string | undefined;
  let failure: KwError | undefined;
  const stopAll = (sig: NodeJS.Signals) => {
    for (const c of running.values()) c.kill(sig);
  };
  // the parent's checkpoint: the options and the finished jobs (what --resume RUN_DIR reads);
  // a write that fails stops the run like a failed job
  let saving = Promise.resolve();
  const save = () => {
    const finished = byJob.filter((r): r is TrainResult => r !== undefined);
    const state: TrainState = { options: opts, argv: p.argv, finished, job: null, current: null };
    saving = saving
      .then(async () => {
        await p.dirCk.write(state, {});
      })
      .catch((e) => {
        failure ??= e as KwError;
        stopAll('SIGTERM');
      });
    return saving;
  };
  if (!p.resumed) removePath(join(out, 'jobs'), { recursive: true });
  await save();
  if (failure) throw failure;
  const pending: number[] = [];
  for (const [i, { choice, seed }] of jobs.entries()) {
    if (byJob[i]) continue;
    const dir = jobDir(i);
    if (!hasCheckpoint(join(dir, 'checkpoint'))) {
      removePath(dir, { recursive: true });
      const options: RunOptions = { ...opts, methods: [choice.key], seed, seeds: 1 };
      const state: TrainState = { options, argv: [], finished: [], job: null, current: null };
      await checkpointDir(dir).write(state, {});
    }
    pending.push(i);
  }
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopSignal) {
      stopAll('SIGKILL'); // a second Ctrl-C: the children's last checkpoints stand
      process.exit(130);
    }
    stopSignal = sig;
    io.err(`\nkw train: ${sig}: each job finishes its step and writes a checkpoint\n`);
    stopAll(sig);
  };
  const onInt = () => onSignal('SIGINT');
  const onTerm = () => onSignal('SIGTERM');
  const onExit = () => stopAll('SIGKILL');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  process.on('exit', onExit);
  const tag = (i: number) =>
    `[${i + 1}/${jobs.length}${opts.seeds > 1 ? ` s${jobs[i]!.seed}` : ''}]`;

  const runOne = (i: number) =>
    new Promise<void>((resolve) => {
      const dir = jobDir(i);
      // its own process group: a terminal's Ctrl-C reaches the parent only, which forwards it once
      const child = spawn(process.execPath, [KW_BIN, 'train', '--resume', dir], {
        stdio: ['ignore', 'ignore', 'pipe'],
        detached: true,
        env: { ...process.env, KW_TRAIN_PARENT_PID: String(process.pid) },
      });
      running.set(i, child);
      const tail: string[] = [];
      let partial = '';
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (d: string) => {
        const lines = (partial + d).split('\n');
        partial = lines.pop()!;
        for (const l of lines) {
          tail.push(l);
          if (tail.length > 20) tail.shift();
          // progress lines; the run line, the backend and resume notes are the parent's to say
          if (l.trim() && !/^(kw train|resume with:|@kernelwarehouse\/tfjs: using)/.test(l))
            io.err(`${tag(i)} ${l.replace(/^\r/, '')}\n`);
        }
      });
      child.on('error', (e) => tail.push(String(e)));
      child.on('close', (code, signal) => {
        running.delete(i);
        if (partial) tail.push(partial);
        const resultsPath = join(dir, 'results.json');
        const complete = !hasCheckpoint(join(dir, 'checkpoint')) && pathExists(resultsPath);
        // exit 1 with results: ONNX disagreed with tfjs, which the parent reports at the end
        if ((code === 0 || code === 1) && complete) {
          try {
            const r = JSON.parse(new TextDecoder().decode(readFileBytes(resultsPath)));
            const j = jobs[i]!;
            const result = r.results[0] as TrainResult;
            const stem = slugOf(j.choice.label, j.seed, 1);
            for (const ext of ['safetensors', 'onnx']) {
              const from = join(dir, `${stem}.${ext}`);
              fsCall('move', from, () => renameSync(from, join(out, `${j.slug}.${ext}`)));
            }
            byJob[i] = { ...result, label: j.choice.label };
            checkpoints.push(...checkpointEntries(r.checkpoints));
            void save();
          } catch (e) {
            failure ??= e as KwError;
            stopAll('SIGTERM');
          }
        } else if (code !== 130 || !stopSignal) {
          if (!failure) {
            const j = jobs[i]!;
            failure = new KwError(
              'TRAIN_JOB_FAILED',
              `kw train --jobs: job ${i + 1}/${jobs.length} (${j.choice.key} seed ${j.seed}, ${dir}) ${signal ? `was killed by ${signal}` : `exited with status ${code}`}; the other jobs were stopped and no report was written. Its stderr ends:\n${tail.join('\n')}\nResume the run with: kw train --resume ${shellQuote(out)}`,
              { job: i, exitCode: code, path: dir },
            );
            stopAll('SIGTERM');
          }
        }
        resolve();
      });
    });

  try {
    const queue = [...pending];
    const lane = async () => {
      for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
        if (stopSignal || failure) return;
        await runOne(i);
      }
    };
    await Promise.all(Array.from({ length: Math.min(p.parallel, pending.length) }, lane));
    await saving;
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    process.off('exit', onExit);
  }
  if (failure) throw failure;
  if (stopSignal) {
    const done = byJob.filter(Boolean).length;
    io.err(
      `kw train: stopped (${stopSignal}) with ${done} of ${jobs.length} jobs done; checkpoints: ${join(out, 'checkpoint')} and ${join(out, 'jobs', 'job-*', 'checkpoint')}\nresume with: kw train --resume ${shellQuote(out)}\n`,
    );
    return 130;
  }
  return { results: byJob as TrainResult[], checkpoints };
}
