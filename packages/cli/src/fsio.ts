import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { KwError } from '@kernelwarehouse/core';

/**
 * The file-system calls {@link writeFileAtomic} makes; tests inject failing ones (a full disk)
 * without touching the real disk.
 */
export interface AtomicFs {
  /** `fs.openSync`. */
  openSync: (path: string, flags: string) => number;
  /** `fs.writeSync` of a whole buffer from offset 0; returns the bytes written. */
  writeSync: (fd: number, bytes: Uint8Array, offset: number, length: number) => number;
  /** `fs.fsyncSync`. */
  fsyncSync: (fd: number) => void;
  /** `fs.closeSync`. */
  closeSync: (fd: number) => void;
  /** `fs.renameSync`. */
  renameSync: (from: string, to: string) => void;
  /** `fs.rmSync(path, { force: true })`. */
  rmSync: (path: string) => void;
}

const realFs: AtomicFs = {
  openSync: (p, f) => fs.openSync(p, f),
  writeSync: (fd, b, o, l) => fs.writeSync(fd, b, o, l),
  fsyncSync: (fd) => fs.fsyncSync(fd),
  closeSync: (fd) => fs.closeSync(fd),
  renameSync: (a, b) => fs.renameSync(a, b),
  rmSync: (p) => fs.rmSync(p, { force: true }),
};

/** Why a write failed, in words, from a Node error code. */
function ioReason(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ENOSPC':
      return 'the disk is full';
    case 'EACCES':
    case 'EROFS':
    case 'EPERM':
      return 'the folder is not writable';
    case 'ENOENT':
      return 'the folder does not exist';
    case 'ENOTDIR':
      return 'a part of the path is a file, not a folder';
    default:
      return err.message;
  }
}

/**
 * Write a file atomically: into a temporary file beside it, flushed to disk (fsync), then
 * renamed over the target, so a crash, a kill, a full disk or a read-only folder never leaves a
 * half-written file: the target holds either its old or its new bytes. Errors become
 * KwError('IO_ERROR') naming the path and the reason. `fsImpl` replaces the file-system calls
 * (tests).
 *
 * @example
 * writeFileAtomic('runs/a/results.json', JSON.stringify(results));
 */
export function writeFileAtomic(
  path: string,
  bytes: Uint8Array | string,
  fsImpl: AtomicFs = realFs,
): void {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const data = typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes;
  let fd: number | undefined;
  try {
    fd = fsImpl.openSync(tmp, 'w');
    let off = 0;
    while (off < data.length) off += fsImpl.writeSync(fd, data, off, data.length - off);
    fsImpl.fsyncSync(fd);
    fsImpl.closeSync(fd);
    fd = undefined;
    fsImpl.renameSync(tmp, path);
  } catch (e) {
    try {
      if (fd !== undefined) fsImpl.closeSync(fd);
    } catch {
      // already closed or never opened
    }
    try {
      fsImpl.rmSync(tmp);
    } catch {
      // the temporary file could not even be created there
    }
    const err = e as NodeJS.ErrnoException;
    throw new KwError('IO_ERROR', `cannot write ${path}: ${ioReason(err)}; nothing was written`, {
      path,
      code: err.code,
    });
  }
  try {
    // make the rename itself durable (best effort: not every platform opens folders)
    const dfd = fs.openSync(dirname(path), 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch {
    // the file is written; only the folder entry's durability is unconfirmed
  }
}

/**
 * Create a folder (and its parents) for output; a path that cannot be a folder (read-only
 * parent, a file in the way) is KwError('IO_ERROR') naming it, before any work is done.
 */
export function makeDir(path: string): void {
  try {
    fs.mkdirSync(path, { recursive: true });
    fs.accessSync(path, fs.constants.W_OK);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new KwError('IO_ERROR', `cannot write to folder ${path}: ${ioReason(err)}`, {
      path,
      code: err.code,
    });
  }
}

/** Read a file; a missing or unreadable file is KwError('IO_ERROR') naming it. */
export function readFileBytes(path: string): Uint8Array {
  try {
    return new Uint8Array(fs.readFileSync(path));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new KwError(
      'IO_ERROR',
      `cannot read ${path}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`,
      { path, code: err.code },
    );
  }
}
