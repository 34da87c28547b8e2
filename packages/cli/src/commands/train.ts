import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { countParams, KwError, type ModelSpec } from '@kernelwarehouse/core';
import {
  buildModel,
  chooseBackend,
  setWasmWinograd,
  Trainer,
  type TrainerState,
  watchWasmFailures,
} from '@kernelwarehouse/tfjs';
import * as tf from '@tensorflow/tfjs';
import type { ImageSet } from '../data.js';
import { makeDir, pathExists, removePath } from '../fsio.js';
import { type Io, UsageError } from '../io.js';
import { Progress } from '../progress.js';
import { planJobs, runJobs, shellQuote, slugOf, watchParent } from '../train-jobs.js';
import type { MethodChoice } from '../train-options.js';
import {
  exportAndCheck,
  runConfig,
  runLine,
  type TrainResult,
  writeReport,
} from '../train-report.js';
import { setupRun, strip, type TrainState } from '../train-setup.js';

export { DEFAULTS, PRESETS, type RunOptions } from '../train-options.js';
export type { TrainResult } from '../train-report.js';

/** Images in [0, 1]: NHWC for tfjs, NCHW for ONNX, and the labels. */
function tensors(set: ImageSet, n: number) {
  const hw = set.height * set.width;
  const px = new Float32Array(n * hw);
  for (let i = 0; i < px.length; i++) px[i] = set.images[i]! / 255;
  return {
    x: tf.tensor4d(px, [n, set.height, set.width, 1]),
    nchw: px,
    labels: Int32Array.from(set.labels.subarray(0, n)),
  };
}

/**
 * `kw train` (flags: `kw train --help`): trains the plain backbone and the chosen variants on
 * real data with the Trainer of @kernelwarehouse/tfjs, exports each to ONNX, checks ONNX against
 * tfjs, and writes a run folder. Checkpoints go to `RUN_DIR/checkpoint/` at every epoch end,
 * every N steps and on SIGINT/SIGTERM (exit code 130); `--resume` continues from the last one.
 */
export async function trainCommand(args: string[], io: Io): Promise<number> {
  const { out, opts, dirCk, resumed, choices, specs, train, test, classes, jobsFlag } =
    await setupRun(args);
  const { epochs, trainSize, testSize, batch, seeds } = opts;
  makeDir(out);
  // before any shard worker starts: relaxed SIMD's V8 flag is process-wide
  await chooseBackend({
    force: opts.backend,
    report: (l) => io.err(`${l}\n`),
    fusedMultiplyAdd: opts.fma !== 'off',
  });
  // shard workers and --jobs' child processes take it too (the Trainer's requests; --resume)
  setWasmWinograd(opts.winograd !== 'off');
  // every method must be trainable by tfjs before any training starts
  for (const [i, c] of choices.entries()) {
    if (c.method === undefined) continue;
    try {
      buildModel(specs[i]!).dispose();
    } catch (e) {
      throw new UsageError(`method "${c.key}" cannot be trained with tfjs: ${strip(e)}`);
    }
  }
  const stepsPerEpoch = Math.ceil(trainSize / batch);
  io.err(runLine(opts, choices, train, tf.getBackend()));
  if (resumed) {
    const { job, current, finished } = resumed.state;
    io.err(
      `kw train: resuming ${out}: ${finished.length} variant(s) done${job && current ? `, ${job.method} seed ${job.seed} continues at epoch ${current.epoch + 1} step ${current.step + 1}` : ''}\n`,
    );
  }

  const argv = resumed?.state.argv ?? args;
  const finish = (results: TrainResult[], checkpoints: { ms: number; bytes: number }[]) => {
    const command = `kw train ${argv.join(' ')}${resumed ? ' (interrupted and resumed)' : ''}`;
    const config = runConfig(opts, tf.getBackend());
    writeReport({ io, out, opts, choices, results, config, checkpoints, command });
    // the run is complete: its checkpoints are no longer needed
    removePath(join(out, 'checkpoint'), { recursive: true });
    removePath(join(out, 'jobs'), { recursive: true });
    const bad = results.filter((r) => r.onnxAgreement < 0.999 || !(r.onnxMaxRelError < 1e-4));
    if (!bad.length) return 0;
    const which = bad.map((r) => `${r.label} seed ${r.seed}`).join(', ');
    io.err(`kw train: ONNX disagrees with tfjs for ${which}\n`);
    return 1;
  };
  // --jobs N: the (method, seed) jobs in N child processes; a run stopped inside an in-process
  // job resumes in process, one with job folders in child processes (their checkpoints)
  const shards = opts.shards ?? 1;
  const plan = planJobs(
    choices,
    opts,
    resumed?.state,
    jobsFlag ?? Math.max(1, Math.floor(availableParallelism() / shards)),
  );
  if (
    !resumed?.state.current &&
    (plan.parallel > 1 || (resumed && pathExists(join(out, 'jobs'))))
  ) {
    const r = await runJobs({ io, out, opts, argv, dirCk, ...plan });
    return r === 130 ? 130 : finish(r.results, r.checkpoints);
  }
  const tr = tensors(train, trainSize);
  const te = tensors(test, testSize);

  // Ctrl-C / SIGTERM: finish the step, write a checkpoint, exit 130
  let stopSignal: string | undefined;
  const onSignal = (sig: string) => {
    if (stopSignal) process.exit(130); // a second Ctrl-C: the last checkpoint stands
    stopSignal = sig;
    io.err(`\nkw train: ${sig}: finishing the current step, then writing a checkpoint\n`);
  };
  const onInt = () => onSignal('SIGINT');
  const onTerm = () => onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  const unwatch = watchParent(() => onSignal('SIGTERM'));
  const results: TrainResult[] = resumed ? [...resumed.state.finished] : [];
  const checkpoints: { ms: number; bytes: number }[] = [];
  const jobs: { choice: MethodChoice; spec: ModelSpec; seed: number }[] = [];
  for (let s = 0; s < seeds; s++)
    for (const [i, choice] of choices.entries())
      jobs.push({ choice, spec: specs[i]!, seed: opts.seed + s });
  const done = (j: (typeof jobs)[number]) =>
    results.some((r) => r.method === j.choice.key && r.seed === j.seed);
  let current = -1;
  const progress = new Progress(
    io,
    Boolean((process.stderr as { isTTY?: boolean }).isTTY),
    () => jobs.slice(current + 1).filter((j) => !done(j)).length * epochs * trainSize,
  );
  const interrupted = (where: string) => {
    io.err(
      `kw train: stopped (${stopSignal}) ${where}; checkpoint: ${join(out, 'checkpoint', 'checkpoint.json')}\nresume with: kw train --resume ${shellQuote(out)}\n`,
    );
    return 130;
  };
  // tfjs wasm reports a failed XNNPACK op (out of memory near the 4 GB heap) only on stderr and
  // goes on with the op's output uncomputed: stop instead of training on garbage
  const watch = watchWasmFailures();
  try {
    for (const [j, { choice, spec, seed }] of jobs.entries()) {
      current = j;
      if (done(jobs[j]!)) continue;
      const tag = `${choice.label}${seeds > 1 ? ` s${seed}` : ''}`.padEnd(8);
      const verify = (where: string) => {
        try {
          watch.check(`${tag.trim()} ${where}`);
        } catch (e) {
          throw new KwError(
            'BACKEND_FAILED',
            `${strip(e)}. Nothing from this step was kept; a fresh process starts with an empty heap: kw train --resume ${shellQuote(out)} continues from the last checkpoint`,
          );
        }
      };
      const state = (cur: TrainerState | null): Omit<TrainState, 'current'> => ({
        options: opts,
        argv,
        finished: results,
        job: cur ? { method: choice.key, seed } : null,
      });
      const trainer: Trainer = new Trainer({
        spec,
        seed,
        epochs,
        batchSize: batch,
        bnPasses: opts.bnPasses,
        optimizer: {
          name: opts.optimizer,
          lr: opts.lr,
          schedule: opts.schedule,
          momentum: opts.momentum,
          weightDecay: opts.weightDecay ?? undefined,
        },
        kwTemperature:
          opts.tempEpochs !== null ? { epochs: opts.tempEpochs } : { fraction: opts.tauFraction },
        methodTemperature: opts.methodTempEpochs !== null ? { epochs: opts.methodTempEpochs } : {},
        checkpoint: { dir: dirCk, every: opts.checkpointEvery, extra: () => state(trainer.state) },
        shards,
        shardWorkers: shards > 1,
        onEvent: (e) => progress.event({ ...e, batch }),
        shouldStop: () => stopSignal !== undefined,
        verify,
      });
      try {
        const cur = resumed?.state;
        if (cur?.current && cur.job?.method === choice.key && cur.job.seed === seed)
          await trainer.restore(
            {
              state: cur.current,
              weights: resumed!.blobs.weights!,
              optimizer: resumed!.blobs.optimizer!,
            },
            resumed!.files,
          );
        progress.begin(tag);
        if ((await trainer.fit({ x: tr.x, labels: tr.labels })).stopped) {
          const s = trainer.state;
          return interrupted(
            `in ${choice.key} seed ${seed} (next: epoch ${s.epoch + 1} step ${s.step + 1}/${stepsPerEpoch})`,
          );
        }
        checkpoints.push(...trainer.checkpoints);
        trainer.recalibrate(tr.x);
        const { accuracy, logits } = await trainer.evaluate({ x: te.x, labels: te.labels });
        progress.event({ phase: 'export', epoch: epochs - 1, epochs, done: 0, total: 1 });
        const slug = slugOf(choice.label, seed, seeds);
        const onnx = await exportAndCheck(
          spec,
          trainer.exportWeights(),
          out,
          slug,
          { nchw: te.nchw, count: testSize, height: test.height, width: test.width },
          logits,
          classes,
        );
        progress.end();
        const s = trainer.state;
        results.push({
          method: choice.key,
          label: choice.label,
          budget: choice.budget,
          seed,
          params: countParams(spec),
          testAccuracy: accuracy,
          ...onnx,
          trainSeconds: s.trainSeconds,
          imagesPerSecond: (epochs * trainSize) / s.trainSeconds,
          finalLoss: s.lastLoss,
          curve: s.curve,
        });
      } finally {
        progress.end();
        trainer.dispose();
      }
      const t = performance.now();
      const w = await dirCk.write({ ...state(null), current: null }, {});
      checkpoints.push({ ms: performance.now() - t, bytes: w.bytes });
      if (stopSignal) return interrupted(`after ${choice.key} seed ${seed}`);
    }
  } finally {
    watch.stop();
    unwatch();
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    // a failed wasm kernel can leave the backend unusable: never let this cleanup hide the error
    try {
      tf.dispose([tr.x, te.x]);
    } catch {}
  }
  return finish(results, checkpoints);
}
