/**
 * Training checkpoints: a folder holding the tensor files of one generation and one manifest,
 * `checkpoint.json`, written last. Every file is written atomically by the injected file
 * system (temporary file, fsync, rename); the manifest names the generation's files with their
 * size and SHA-256 and carries its own SHA-256 over a canonical form of everything else, so an
 * edit of the manifest (even one that keeps valid JSON) is refused on resume. Files of older
 * generations are deleted only after the new manifest is in place: a kill at any moment leaves
 * either the old or the new complete checkpoint.
 *
 * The file system is injected ({@link CheckpointFs}); {@link nodeCheckpointFs} is the Node one.
 * Hashes use Web Crypto (`globalThis.crypto.subtle`, in browsers and Node >= 20).
 */
import { KwError, readSafetensors, writeSafetensors } from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';

/** The manifest's file name inside the checkpoint folder. */
export const CHECKPOINT_MANIFEST = 'checkpoint.json';
/** The manifest's `format` value. */
export const CHECKPOINT_FORMAT = 'kw-train-checkpoint';
/** The manifest's `version` this release reads and writes (2: the manifest carries its own hash). */
export const CHECKPOINT_VERSION = 2;

/**
 * The file operations a checkpoint needs; each may be sync or async. Paths are joined with `/`.
 * `writeFileAtomic` must leave either the old or the new content (temporary file + rename).
 */
export interface CheckpointFs {
  /** Read a whole file; a missing file throws. */
  readFile(path: string): Uint8Array | Promise<Uint8Array>;
  /** Replace a file atomically. */
  writeFileAtomic(path: string, data: Uint8Array): void | Promise<void>;
  /** True when the path exists. */
  exists(path: string): boolean | Promise<boolean>;
  /** Names in a folder. */
  list(dir: string): string[] | Promise<string[]>;
  /** Delete a file (no error when it is gone). */
  remove(path: string): void | Promise<void>;
  /** Create a folder and its parents. */
  makeDir(dir: string): void | Promise<void>;
}

/** One tensor file a manifest references. */
export interface CheckpointFile {
  /** File name inside the checkpoint folder (no separators, never `.` or `..`). */
  file: string;
  /** Size in bytes. */
  bytes: number;
  /** SHA-256 of the bytes, hex. */
  sha256: string;
}

/** The manifest: JSON state plus the tensor files it references, with its own hash. */
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
  /** SHA-256 (hex) of {@link canonicalJson} of the manifest without this field. */
  manifestSha256: string;
}

/** What {@link CheckpointDir.write} reports. */
export interface CheckpointWrite {
  /** Path of the manifest just written. */
  path: string;
  /** Bytes written (manifest and tensor files). */
  bytes: number;
  /** Generation number written. */
  generation: number;
}

/** The platform's text codecs (browsers and Node; the build has no DOM or Node types). */
const g = globalThis as unknown as {
  TextEncoder: new () => { encode(s: string): Uint8Array };
  TextDecoder: new () => { decode(b: Uint8Array): string };
};
const utf8 = (s: string) => new g.TextEncoder().encode(s);
const fromUtf8 = (b: Uint8Array) => new g.TextDecoder().decode(b);

const hex = (b: ArrayBuffer) =>
  Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, '0')).join('');

/** SHA-256 of bytes (or of a string's UTF-8), hex, by Web Crypto. */
export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === 'string' ? utf8(data) : data;
  const subtle = (
    globalThis as {
      crypto?: { subtle?: { digest(alg: string, data: Uint8Array): Promise<ArrayBuffer> } };
    }
  ).crypto?.subtle;
  if (!subtle)
    throw new KwError(
      'BACKEND_UNAVAILABLE',
      'checkpoints need Web Crypto (globalThis.crypto.subtle: browsers, Node >= 20)',
    );
  return hex(await subtle.digest('SHA-256', bytes));
}

/**
 * The canonical JSON of a value: object keys sorted, no whitespace, numbers as
 * `JSON.stringify` writes them (so parsing and re-serialising gives the same text).
 *
 * @example
 * canonicalJson({ b: 1, a: [2, { d: 3, c: 4 }] }); // '{"a":[2,{"c":4,"d":3}],"b":1}'
 */
export function canonicalJson(value: unknown): string {
  // iterative, so a deeply nested (hostile) manifest cannot overflow the stack
  const out: string[] = [];
  const stack: unknown[] = [value];
  while (stack.length) {
    const v = stack.pop();
    if (v instanceof Literal) {
      out.push(v.text);
    } else if (v === null || typeof v !== 'object') {
      out.push(v === undefined ? 'null' : JSON.stringify(v));
    } else if (Array.isArray(v)) {
      const items: unknown[] = [new Literal('[')];
      v.forEach((x, i) => {
        if (i) items.push(new Literal(','));
        items.push(x);
      });
      items.push(new Literal(']'));
      for (let i = items.length - 1; i >= 0; i--) stack.push(items[i]);
    } else {
      const o = v as Record<string, unknown>;
      const keys = Object.keys(o)
        .filter((k) => o[k] !== undefined)
        .sort();
      const items: unknown[] = [new Literal('{')];
      keys.forEach((k, i) => {
        items.push(new Literal(`${i ? ',' : ''}${JSON.stringify(k)}:`));
        items.push(o[k]);
      });
      items.push(new Literal('}'));
      for (let i = items.length - 1; i >= 0; i--) stack.push(items[i]);
    }
  }
  return out.join('');
}

/** A piece of JSON text already written (for {@link canonicalJson}). */
class Literal {
  constructor(readonly text: string) {}
}

const SAFE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/** A file name from a manifest: refused (by name, before anything is opened) unless it stays in the folder. */
function checkFileName(name: unknown, manifestPath: string): string {
  if (typeof name !== 'string' || !SAFE_NAME.test(name) || name === '.' || name === '..')
    throw new KwError(
      'CHECKPOINT_INVALID',
      `checkpoint ${manifestPath} names the file ${JSON.stringify(name)}, which is not a plain file name inside the checkpoint folder; refused before opening it`,
      { path: manifestPath, file: String(name) },
    );
  return name;
}

const join = (dir: string, name: string) =>
  dir.endsWith('/') ? `${dir}${name}` : `${dir}/${name}`;

/**
 * A checkpoint folder over an injected file system: {@link CheckpointDir.write} writes one
 * generation, {@link CheckpointDir.read} reads and verifies the newest.
 *
 * @example
 * const ck = new CheckpointDir('runs/a/checkpoint', await nodeCheckpointFs());
 * await ck.write({ epoch: 1 }, { weights: bytes });
 * const { manifest, blobs } = await ck.read();
 */
export class CheckpointDir {
  /** The generation last written or read (0: none yet). */
  generation = 0;

  constructor(
    /** The folder. */
    readonly dir: string,
    /** Its file system. */
    readonly fs: CheckpointFs,
  ) {}

  /** Path of the manifest. */
  get manifestPath(): string {
    return join(this.dir, CHECKPOINT_MANIFEST);
  }

  /** True when the folder holds a manifest. */
  async exists(): Promise<boolean> {
    return await this.fs.exists(this.manifestPath);
  }

  /**
   * Write one generation: the tensor files first, then the manifest (with its own hash), then
   * delete what older generations left.
   */
  async write<S>(state: S, blobs: Record<string, Uint8Array>): Promise<CheckpointWrite> {
    await this.fs.makeDir(this.dir);
    const generation = ++this.generation;
    const files: Record<string, CheckpointFile> = {};
    let bytes = 0;
    for (const [role, data] of Object.entries(blobs)) {
      const file = checkFileName(`g${generation}.${role}.safetensors`, this.manifestPath);
      await this.fs.writeFileAtomic(join(this.dir, file), data);
      files[role] = { file, bytes: data.length, sha256: await sha256Hex(data) };
      bytes += data.length;
    }
    // the JSON round trip first: the hash covers exactly what a reader will parse
    const body = JSON.parse(
      JSON.stringify({
        format: CHECKPOINT_FORMAT,
        version: CHECKPOINT_VERSION,
        generation,
        writtenAt: new Date().toISOString(),
        state,
        files,
      }),
    ) as Omit<CheckpointManifest<S>, 'manifestSha256'>;
    const manifest: CheckpointManifest<S> = {
      ...body,
      manifestSha256: await sha256Hex(canonicalJson(body)),
    };
    const json = utf8(`${JSON.stringify(manifest)}\n`);
    await this.fs.writeFileAtomic(this.manifestPath, json);
    bytes += json.length;
    const keep = new Set([CHECKPOINT_MANIFEST, ...Object.values(files).map((f) => f.file)]);
    for (const f of await this.fs.list(this.dir)) {
      if (!keep.has(f) && (/^g\d+\./.test(f) || f.endsWith('.tmp')))
        await this.fs.remove(join(this.dir, f));
    }
    return { path: this.manifestPath, bytes, generation };
  }

  /**
   * Read the checkpoint: the manifest (its own hash verified) and every tensor file it
   * references (names checked to stay in the folder, then size and SHA-256). A missing,
   * truncated or corrupt file is KwError('IO_ERROR') naming the file; an edited manifest or a
   * file name leaving the folder is KwError('CHECKPOINT_INVALID').
   */
  async read<S>(): Promise<{ manifest: CheckpointManifest<S>; blobs: Record<string, Uint8Array> }> {
    const path = this.manifestPath;
    if (!(await this.fs.exists(path)))
      throw new KwError('IO_ERROR', `no checkpoint to resume: ${path} does not exist`, { path });
    const text = fromUtf8(await this.fs.readFile(path));
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
      Array.isArray(manifest) ||
      manifest.format !== CHECKPOINT_FORMAT
    )
      throw new KwError('IO_ERROR', `checkpoint ${path} is corrupt: not a kw train checkpoint`, {
        path,
      });
    if (manifest.version !== CHECKPOINT_VERSION)
      throw new KwError(
        'CHECKPOINT_INVALID',
        `checkpoint ${path} has version ${JSON.stringify(manifest.version)}; this release reads version ${CHECKPOINT_VERSION}`,
        { path },
      );
    const { manifestSha256, ...body } = manifest;
    if (
      typeof manifestSha256 !== 'string' ||
      (await sha256Hex(canonicalJson(body))) !== manifestSha256
    )
      throw new KwError(
        'CHECKPOINT_INVALID',
        `checkpoint ${path} was modified after it was written: its content does not match its manifestSha256; refusing to resume from it`,
        { path },
      );
    if (
      typeof manifest.files !== 'object' ||
      manifest.files === null ||
      typeof manifest.state !== 'object' ||
      !Number.isInteger(manifest.generation)
    )
      throw new KwError('IO_ERROR', `checkpoint ${path} is corrupt: not a kw train checkpoint`, {
        path,
      });
    // every name is checked before any file is opened
    const entries = Object.entries(manifest.files).map(
      ([role, f]) => [role, f, checkFileName(f?.file, path)] as const,
    );
    const blobs: Record<string, Uint8Array> = {};
    for (const [role, f, name] of entries) {
      const fp = join(this.dir, name);
      let data: Uint8Array;
      try {
        data = await this.fs.readFile(fp);
      } catch (e) {
        throw new KwError(
          'IO_ERROR',
          `checkpoint file ${fp} cannot be read: ${(e as Error).message.replace(/^\[\w+\] /, '')}`,
          {
            path: fp,
          },
        );
      }
      if (data.length !== f.bytes)
        throw new KwError(
          'IO_ERROR',
          `checkpoint file ${fp} is corrupt: ${data.length} bytes, the manifest says ${f.bytes} (truncated?)`,
          { path: fp, expected: f.bytes, actual: data.length },
        );
      if ((await sha256Hex(data)) !== f.sha256)
        throw new KwError(
          'IO_ERROR',
          `checkpoint file ${fp} is corrupt: its SHA-256 differs from the manifest's`,
          { path: fp },
        );
      blobs[role] = data;
    }
    this.generation = manifest.generation;
    return { manifest, blobs };
  }

  /** Delete the folder's checkpoint files (the run is complete). */
  async clear(): Promise<void> {
    if (!(await this.fs.exists(this.dir))) return;
    for (const f of await this.fs.list(this.dir))
      if (f === CHECKPOINT_MANIFEST || /^g\d+\./.test(f) || f.endsWith('.tmp'))
        await this.fs.remove(join(this.dir, f));
  }
}

/**
 * The Node file system for checkpoints (`node:fs`, loaded on first use so browsers never see
 * it): atomic writes by temporary file, fsync and rename.
 *
 * @example
 * const ck = new CheckpointDir('ckpt', await nodeCheckpointFs());
 */
export async function nodeCheckpointFs(): Promise<CheckpointFs> {
  // a computed name: bundlers for browsers leave it alone, and the build needs no Node types
  const name = 'node:fs';
  const fs = (await import(name)) as NodeFs;
  return {
    readFile: (p) => new Uint8Array(fs.readFileSync(p)),
    writeFileAtomic: (p, data) => {
      const tmp = `${p}.${Math.random().toString(36).slice(2)}.tmp`;
      const fd = fs.openSync(tmp, 'w');
      try {
        fs.writeSync(fd, data);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, p);
    },
    exists: (p) => fs.existsSync(p),
    list: (d) => fs.readdirSync(d),
    remove: (p) => fs.rmSync(p, { force: true }),
    makeDir: (d) => {
      fs.mkdirSync(d, { recursive: true });
    },
  };
}

/** The few `node:fs` calls {@link nodeCheckpointFs} makes. */
interface NodeFs {
  readFileSync(p: string): Uint8Array;
  openSync(p: string, flags: string): number;
  writeSync(fd: number, d: Uint8Array): number;
  fsyncSync(fd: number): void;
  closeSync(fd: number): void;
  renameSync(a: string, b: string): void;
  existsSync(p: string): boolean;
  readdirSync(p: string): string[];
  rmSync(p: string, o: { force: boolean }): void;
  mkdirSync(p: string, o: { recursive: boolean }): unknown;
}

interface AdamInternals {
  accBeta1: tf.Variable;
  accBeta2: tf.Variable;
}

/**
 * The state of a tfjs optimizer (`getWeights()`: step count and, for Adam, both moments of
 * every variable in order; for momentum SGD the velocities) as safetensors bytes. Adam's
 * running powers beta^t are stored as they are, so a restored optimizer continues
 * bit-identically.
 *
 * @example
 * const bytes = await saveOptimizerState(optimizer);
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
 *
 * @example
 * await loadOptimizerState(tf.train.adam(0.005), bytes, 'g3.optimizer.safetensors');
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
  if (cls !== optimizer.getClassName())
    throw new KwError(
      'IO_ERROR',
      `checkpoint file ${file} holds ${cls ?? 'no'} optimizer state; the run uses ${optimizer.getClassName()}`,
      { path: file },
    );
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
