/**
 * Training checkpoints of `kw train`: a folder `<run>/checkpoint/` holding tensor files of one
 * generation and one manifest, `checkpoint.json`, written last. Every file is written atomically
 * (temporary file, fsync, rename); the manifest names the generation's files with their size and
 * SHA-256, and files of older generations are deleted only after the new manifest is in place.
 * A kill at any moment therefore leaves either the old or the new complete checkpoint.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { KwError, readSafetensors, writeSafetensors } from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { makeDir, readFileBytes, writeFileAtomic } from './fsio.js';

/** The manifest's file name inside the checkpoint folder. */
export const MANIFEST = 'checkpoint.json';
/** The manifest's `format` value. */
export const CHECKPOINT_FORMAT = 'kw-train-checkpoint';
/** The manifest's `version` this release reads and writes. */
export const CHECKPOINT_VERSION = 1;

/** One tensor file a manifest references. */
export interface CheckpointFile {
  /** File name inside the checkpoint folder. */
  file: string;
  /** Size in bytes. */
  bytes: number;
  /** SHA-256 of the bytes, hex. */
  sha256: string;
}

/** The manifest: JSON state plus the tensor files it references. */
export interface CheckpointManifest<S> {
  /** Always {@link CHECKPOINT_FORMAT}. */
  format: string;
  /** Always {@link CHECKPOINT_VERSION}. */
  version: number;
  /** Increases by one with every checkpoint written to the folder. */
  generation: number;
  /** When it was written (ISO time). */
  writtenAt: string;
  /** The caller's JSON state. */
  state: S;
  /** Tensor files by role (for example `weights`, `optimizer`). */
  files: Record<string, CheckpointFile>;
}

/** What {@link writeCheckpoint} reports: the manifest path, total bytes and milliseconds. */
export interface CheckpointWrite {
  /** Path of the manifest just written. */
  path: string;
  /** Bytes written (manifest and tensor files). */
  bytes: number;
  /** Generation number written. */
  generation: number;
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/**
 * Write one checkpoint generation into `dir`: the tensor files first, then the manifest, then
 * delete what older generations left. `generation` must exceed the previous one.
 *
 * @example
 * writeCheckpoint('runs/a/checkpoint', 3, { epoch: 1 }, { weights: bytes });
 */
export function writeCheckpoint<S>(
  dir: string,
  generation: number,
  state: S,
  blobs: Record<string, Uint8Array>,
): CheckpointWrite {
  makeDir(dir);
  const files: Record<string, CheckpointFile> = {};
  let bytes = 0;
  for (const [role, data] of Object.entries(blobs)) {
    const file = `g${generation}.${role}.safetensors`;
    writeFileAtomic(join(dir, file), data);
    files[role] = { file, bytes: data.length, sha256: sha256(data) };
    bytes += data.length;
  }
  const manifest: CheckpointManifest<S> = {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    generation,
    writtenAt: new Date().toISOString(),
    state,
    files,
  };
  const json = `${JSON.stringify(manifest)}\n`;
  const path = join(dir, MANIFEST);
  writeFileAtomic(path, json);
  bytes += json.length;
  const keep = new Set([MANIFEST, ...Object.values(files).map((f) => f.file)]);
  for (const f of readdirSync(dir)) {
    if (!keep.has(f) && (/^g\d+\./.test(f) || f.endsWith('.tmp'))) {
      rmSync(join(dir, f), { force: true });
    }
  }
  return { path, bytes, generation };
}

/** True when `dir` holds a checkpoint manifest. */
export function hasCheckpoint(dir: string): boolean {
  return existsSync(join(dir, MANIFEST));
}

/**
 * Read the checkpoint in `dir`: the manifest and every tensor file it references, each checked
 * against its recorded size and SHA-256. A missing, truncated or corrupt file is
 * KwError('IO_ERROR') naming the file.
 */
export function readCheckpoint<S>(dir: string): {
  manifest: CheckpointManifest<S>;
  blobs: Record<string, Uint8Array>;
} {
  const path = join(dir, MANIFEST);
  if (!existsSync(path)) {
    throw new KwError('IO_ERROR', `no checkpoint to resume: ${path} does not exist`, { path });
  }
  const text = new TextDecoder().decode(readFileBytes(path));
  let manifest: CheckpointManifest<S>;
  try {
    manifest = JSON.parse(text);
  } catch (e) {
    throw new KwError(
      'IO_ERROR',
      `checkpoint ${path} is corrupt: not valid JSON (${(e as Error).message})`,
      { path },
    );
  }
  if (
    typeof manifest !== 'object' ||
    manifest === null ||
    manifest.format !== CHECKPOINT_FORMAT ||
    typeof manifest.files !== 'object' ||
    manifest.files === null ||
    typeof manifest.state !== 'object'
  ) {
    throw new KwError('IO_ERROR', `checkpoint ${path} is corrupt: not a kw train checkpoint`, {
      path,
    });
  }
  if (manifest.version !== CHECKPOINT_VERSION) {
    throw new KwError(
      'IO_ERROR',
      `checkpoint ${path} has version ${manifest.version}; this release reads version ${CHECKPOINT_VERSION}`,
      { path },
    );
  }
  const blobs: Record<string, Uint8Array> = {};
  for (const [role, f] of Object.entries(manifest.files)) {
    const fp = join(dir, String(f.file));
    const data = readFileBytes(fp);
    if (data.length !== f.bytes) {
      throw new KwError(
        'IO_ERROR',
        `checkpoint file ${fp} is corrupt: ${data.length} bytes, the manifest says ${f.bytes} (truncated?)`,
        { path: fp, expected: f.bytes, actual: data.length },
      );
    }
    if (sha256(data) !== f.sha256) {
      throw new KwError(
        'IO_ERROR',
        `checkpoint file ${fp} is corrupt: its SHA-256 differs from the manifest's`,
        { path: fp },
      );
    }
    blobs[role] = data;
  }
  return { manifest, blobs };
}

interface AdamInternals {
  accBeta1: tf.Variable;
  accBeta2: tf.Variable;
}

/**
 * The state of a tfjs optimizer (`getWeights()`: step count and, for Adam, both moments of
 * every variable in order) as safetensors bytes. Adam's running powers beta^t are stored as
 * they are, so a restored optimizer continues bit-identically.
 */
export async function saveOptimizerState(optimizer: tf.Optimizer): Promise<Uint8Array> {
  const named = await optimizer.getWeights();
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  named.forEach((w, i) => {
    out.set(`${String(i).padStart(5, '0')}:${w.name}`, {
      shape: [...w.tensor.shape],
      data: Float32Array.from(w.tensor.dataSync() as ArrayLike<number>),
    });
  });
  const adam = optimizer as unknown as Partial<AdamInternals>;
  if (adam.accBeta1 && adam.accBeta2) {
    out.set('accBeta1', { shape: [], data: adam.accBeta1.dataSync() as Float32Array });
    out.set('accBeta2', { shape: [], data: adam.accBeta2.dataSync() as Float32Array });
  }
  return writeSafetensors(out, { optimizer: optimizer.getClassName() });
}

/**
 * Restore {@link saveOptimizerState} bytes into a fresh optimizer of the same class built for
 * the same model. `file` names the source in errors.
 */
export async function loadOptimizerState(
  optimizer: tf.Optimizer,
  bytes: Uint8Array,
  file: string,
): Promise<void> {
  let parsed: ReturnType<typeof readSafetensors>;
  try {
    parsed = readSafetensors(bytes);
  } catch (e) {
    throw new KwError('IO_ERROR', `checkpoint file ${file} is corrupt: ${(e as Error).message}`, {
      path: file,
    });
  }
  const cls = parsed.metadata?.optimizer;
  if (cls !== optimizer.getClassName()) {
    throw new KwError(
      'IO_ERROR',
      `checkpoint file ${file} holds ${cls ?? 'no'} optimizer state; the run uses ${optimizer.getClassName()}`,
      { path: file },
    );
  }
  const names = [...parsed.tensors.keys()].filter((n) => /^\d{5}:/.test(n)).sort();
  if (names.length <= 1) return; // no step taken yet: nothing beyond the zero step count
  const weights = names.map((n) => {
    const t = parsed.tensors.get(n)!;
    const data = t.data as Float32Array;
    return {
      name: n.slice(6),
      tensor: n.slice(6) === 'iter' ? tf.scalar(data[0]!, 'int32') : tf.tensor(data, [...t.shape]),
    };
  });
  await optimizer.setWeights(weights);
  tf.dispose(weights.map((w) => w.tensor));
  const adam = optimizer as unknown as Partial<AdamInternals>;
  const b1 = parsed.tensors.get('accBeta1');
  const b2 = parsed.tensors.get('accBeta2');
  if (adam.accBeta1 && adam.accBeta2 && b1 && b2) {
    tf.tidy(() => {
      adam.accBeta1!.assign(tf.scalar((b1.data as Float32Array)[0]!));
      adam.accBeta2!.assign(tf.scalar((b2.data as Float32Array)[0]!));
    });
  }
}
