/**
 * `kw train`'s set-up before any training: the options (fresh, from a preset, or from the
 * checkpoint of the run being resumed), the data, and the spec of every variant.
 */
import { join } from 'node:path';
import { KwError, type ModelSpec } from '@kernelwarehouse/core';
import type { CheckpointDir, TrainerState } from '@kernelwarehouse/tfjs';
import { createModel, getModel } from '@kernelwarehouse/zoo';
import { numberFlag, parseFlags } from './args.js';
import { checkpointDir, hasCheckpoint } from './checkpoint.js';
import { checkDataset, datasetDir, type ImageSet, loadIdxFolder } from './data.js';
import { listDir, pathExists, statPath } from './fsio.js';
import { UsageError } from './io.js';
import {
  checkSeeds,
  DEFAULTS,
  FLAG_OF,
  type MethodChoice,
  PRESETS,
  parseMethodChoice,
  type RunOptions,
  resolveOptions,
  TRAIN_FLAGS,
} from './train-options.js';
import type { TrainResult } from './train-report.js';

/** The JSON state of a `kw train` checkpoint: the run, the finished variants, the current one. */
export interface TrainState {
  options: RunOptions;
  argv: string[];
  finished: TrainResult[];
  job: { method: string; seed: number } | null;
  current: TrainerState | null;
}

/** A message without its `[CODE] ` prefix. */
export const strip = (e: unknown) => (e as Error).message.replace(/^\[\w+\] /, '');

/** The run folder `--resume` without a folder continues: the newest under runs/ with a checkpoint. */
function newestCheckpointedRun(): string {
  const dirs = pathExists('runs')
    ? listDir('runs')
        .map((d) => join('runs', d))
        .filter((d) => hasCheckpoint(join(d, 'checkpoint')))
    : [];
  if (!dirs.length)
    throw new UsageError(
      '--resume without a folder continues the newest run under runs/ with a checkpoint, and there is none; give --resume RUN_DIR',
    );
  const t = (d: string) => statPath(join(d, 'checkpoint', 'checkpoint.json'))?.mtimeMs ?? 0;
  return dirs.sort((a, b) => t(b) - t(a))[0]!;
}

/** Everything `kw train` knows before training. */
export interface TrainSetup {
  out: string;
  opts: RunOptions;
  dirCk: CheckpointDir;
  resumed?: { state: TrainState; blobs: Record<string, Uint8Array>; files: Record<string, string> };
  choices: MethodChoice[];
  specs: ModelSpec[];
  train: ImageSet;
  test: ImageSet;
  classes: number;
  /** `--jobs N` (not an option of the run: a resumed run may use another). */
  jobsFlag: number | undefined;
}

/** Parse the flags, read the checkpoint when resuming, load the data and build the specs. */
export async function setupRun(args: string[]): Promise<TrainSetup> {
  const flags = parseFlags(args, TRAIN_FLAGS);
  const v = flags.values as Record<string, string | undefined>;
  let base = DEFAULTS;
  if (v.preset !== undefined) {
    const p = PRESETS[v.preset];
    if (!p)
      throw new UsageError(
        `unknown preset "${v.preset}"; accepted: ${Object.keys(PRESETS).join(', ')}`,
      );
    base = { ...DEFAULTS, ...p };
  }
  let out: string;
  let opts: RunOptions;
  let resumed:
    | { state: TrainState; blobs: Record<string, Uint8Array>; files: Record<string, string> }
    | undefined;
  let dirCk: CheckpointDir;
  if (v.resume !== undefined) {
    out = v.resume || v.out || newestCheckpointedRun();
    if (v.resume && v.out && v.out !== v.resume)
      throw new UsageError(`--resume ${v.resume} and --out ${v.out} name different folders`);
    if (!hasCheckpoint(join(out, 'checkpoint')) && pathExists(join(out, 'results.json')))
      throw new KwError(
        'IO_ERROR',
        `the run in ${out} is complete (results.json is there, the checkpoint was removed); nothing to resume`,
        { path: out },
      );
    const dir = checkpointDir(out);
    dirCk = dir;
    const { manifest, blobs } = await dir.read<TrainState>();
    const state = manifest.state;
    if (!state || typeof state.options !== 'object' || !Array.isArray(state.finished))
      throw new KwError(
        'CHECKPOINT_INVALID',
        `checkpoint ${dir.manifestPath} holds no kw train run options`,
        { path: dir.manifestPath },
      );
    const saved = { ...DEFAULTS, ...state.options };
    const asked = resolveOptions(flags, v.preset !== undefined ? base : saved);
    const diffs = (Object.keys(FLAG_OF) as (keyof RunOptions)[]).filter(
      (k) => JSON.stringify(asked[k]) !== JSON.stringify(saved[k]),
    );
    if (diffs.length)
      throw new UsageError(
        `--resume keeps the options the run was started with; ${diffs.map((k) => `${FLAG_OF[k]} ${JSON.stringify(asked[k])} differs from the run's ${JSON.stringify(saved[k])}`).join(', ')} (drop ${diffs.length > 1 ? 'these flags' : 'the flag'})`,
      );
    opts = saved;
    resumed = {
      state,
      blobs,
      files: Object.fromEntries(
        Object.entries(manifest.files).map(([k, f]) => [k, join(dir.dir, f.file)]),
      ),
    };
    if (state.current && (!blobs.weights || !blobs.optimizer || !state.job))
      throw new KwError(
        'CHECKPOINT_INVALID',
        `checkpoint ${dir.manifestPath} names no weights or optimizer file for the unfinished variant`,
        { path: dir.manifestPath },
      );
  } else {
    opts = resolveOptions(flags, base);
    out =
      v.out ??
      join(
        'runs',
        `${opts.model}-${opts.dataset}-${new Date().toISOString().replace(/[:.]/g, '-')}`,
      );
    dirCk = checkpointDir(out);
  }
  checkSeeds(opts);
  const { trainSize, testSize } = opts;
  try {
    getModel(opts.model);
  } catch (e) {
    throw new UsageError(strip(e));
  }
  const choices = opts.methods.map(parseMethodChoice);
  const dir = datasetDir(opts.dataset, opts.dataDir ?? undefined);
  const train = loadIdxFolder(dir, 'train');
  const test = loadIdxFolder(dir, 't10k');
  if (trainSize > train.count || testSize > test.count)
    throw new UsageError(
      `--train-size/--test-size exceed the data set (${train.count} train, ${test.count} test images)`,
    );
  // the files: labels 0..K-1, every class in the training set, test labels among them
  const classes = checkDataset(train, test);
  // the part that is trained on: more than one class
  let first = -1;
  let mixed = false;
  for (let i = 0; i < trainSize && !mixed; i++) {
    if (first < 0) first = train.labels[i]!;
    else mixed = train.labels[i] !== first;
  }
  if (!mixed)
    throw new KwError(
      'DATA_INVALID',
      `the first ${trainSize} training images hold a single class (${first}); training needs at least 2 (raise --train-size)`,
      { label: first },
    );
  const specOf = (c: MethodChoice): ModelSpec => {
    try {
      return createModel(opts.model, {
        budget: c.budget,
        method: c.method,
        ...(c.kwStages ? { kwStages: c.kwStages } : {}),
        classes,
        inputShape: [1, train.height, train.width],
        width: opts.width ?? undefined,
      });
    } catch (e) {
      throw new UsageError(`${c.key} on ${opts.model}: ${strip(e)}`);
    }
  };
  const specs = choices.map(specOf);
  const jobsFlag = numberFlag(flags, TRAIN_FLAGS, 'jobs');
  return { out, opts, dirCk, resumed, choices, specs, train, test, classes, jobsFlag };
}
