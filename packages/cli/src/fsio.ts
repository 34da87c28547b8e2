import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { KwError } from '@kernelwarehouse/core';

/**
 * Write a file atomically: into a temporary file beside it, then rename over the target, so a
 * crash, a full disk or a read-only folder never leaves a half-written file. Errors become
 * KwError('IO_ERROR') naming the path and the reason.
 */
export function writeFileAtomic(path: string, bytes: Uint8Array | string): void {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    writeFileSync(tmp, bytes);
    renameSync(tmp, path);
  } catch (e) {
    try {
      rmSync(tmp, { force: true });
    } catch {
      // the temporary file could not even be created there
    }
    const err = e as NodeJS.ErrnoException;
    const why =
      err.code === 'ENOSPC'
        ? 'the disk is full'
        : err.code === 'EACCES' || err.code === 'EROFS' || err.code === 'EPERM'
          ? 'the folder is not writable'
          : err.code === 'ENOENT'
            ? 'the folder does not exist'
            : err.message;
    throw new KwError('IO_ERROR', `cannot write ${path}: ${why}; nothing was written`, {
      path,
      code: err.code,
    });
  }
}

/** Read a file; a missing or unreadable file is KwError('IO_ERROR') naming it. */
export function readFileBytes(path: string): Uint8Array {
  try {
    return new Uint8Array(readFileSync(path));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new KwError(
      'IO_ERROR',
      `cannot read ${path}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`,
      { path, code: err.code },
    );
  }
}
