/**
 * Every file-system call of the CLI goes through this file, so that each failure is one
 * KwError('IO_ERROR') naming the path and the reason in words (ENOTDIR, EROFS, ENOSPC, EACCES,
 * ...), reads are bounded (regular files only, at most the size their format allows), and writes
 * are all or nothing (temporary files renamed into place, removed on failure).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { basename, dirname, join, parse, resolve } from 'node:path';
import { KwError } from '@kernelwarehouse/core';

/**
 * The file-system calls `writeFileAtomic` and `writeFilesAtomic` make; tests inject
 * failing ones (a full disk, a read-only file system) without touching the real disk. The
 * optional ones default to the real calls.
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
  /** `fs.lstatSync(path, { throwIfNoEntry: false })`. */
  lstatSync?: (path: string) => fs.Stats | undefined;
  /** `fs.linkSync` (keeps the old file of a target while several are replaced). */
  linkSync?: (from: string, to: string) => void;
}

const realFs: Required<AtomicFs> = {
  openSync: (p, f) => fs.openSync(p, f),
  writeSync: (fd, b, o, l) => fs.writeSync(fd, b, o, l),
  fsyncSync: (fd) => fs.fsyncSync(fd),
  closeSync: (fd) => fs.closeSync(fd),
  renameSync: (a, b) => fs.renameSync(a, b),
  rmSync: (p) => fs.rmSync(p, { force: true }),
  lstatSync: (p) => fs.lstatSync(p, { throwIfNoEntry: false }),
  linkSync: (a, b) => fs.linkSync(a, b),
};

/** Why a file-system call failed, in words, from a Node error code. */
export function ioReason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOSPC':
      return 'the disk is full';
    case 'EDQUOT':
      return 'the disk quota is used up';
    case 'EROFS':
      return 'the file system is read-only';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ENOENT':
      return 'no such file or folder';
    case 'ENOTDIR':
      return 'a part of the path is a file, not a folder';
    case 'EISDIR':
      return 'it is a folder, not a file';
    case 'EEXIST':
      return 'a file is in the way';
    case 'ENAMETOOLONG':
      return 'the name is too long';
    case 'ELOOP':
      return 'too many symbolic links';
    case 'EMFILE':
    case 'ENFILE':
      return 'too many open files';
    case 'EBUSY':
    case 'ETXTBSY':
      return 'the file is busy';
    case 'EIO':
      return 'an input/output error of the device';
    case 'EXDEV':
      return 'it is on another file system';
    default:
      return e?.message ?? String(err);
  }
}

/** KwError('IO_ERROR'): "cannot <action> <path>: <reason><tail>". */
export function ioError(action: string, path: string, err: unknown, tail = ''): KwError {
  if (err instanceof KwError) return err;
  const code = (err as NodeJS.ErrnoException)?.code;
  return new KwError('IO_ERROR', `cannot ${action} ${path}: ${ioReason(err)}${tail}`, {
    path,
    code,
  });
}

/**
 * Run one file-system call; its error becomes KwError('IO_ERROR') naming the path.
 *
 * @example
 * const names = fsCall('list', dir, () => fs.readdirSync(dir));
 */
export function fsCall<T>(action: string, path: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw ioError(action, path, e);
  }
}

/** What kind of thing a stat describes, in words (for "is not a regular file" messages). */
function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

/** `fs.statSync` (links followed); undefined when the path does not exist. */
export function statPath(path: string): fs.Stats | undefined {
  try {
    return fs.statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw ioError('read', path, e);
  }
}

/** True when the path exists (a missing parent or a file in the way count as "does not"). */
export function pathExists(path: string): boolean {
  return statPath(path) !== undefined;
}

/** The names in a folder; an unreadable or missing folder is IO_ERROR naming it. */
export function listDir(path: string): string[] {
  return fsCall('list the folder', path, () => fs.readdirSync(path));
}

/** Remove a file or (with `recursive`) a folder; a missing path is not an error. */
export function removePath(path: string, options: { recursive?: boolean } = {}): void {
  fsCall('remove', path, () => fs.rmSync(path, { force: true, recursive: !!options.recursive }));
}

/**
 * Create a folder and its missing parents, one `mkdir` at a time (Node's recursive mkdir loops
 * forever under /proc), and check that it is writable. Returns the folders it created, outermost
 * first, so a failed command can remove them again (`removeCreatedDirs`). A path that
 * cannot be a folder (read-only file system, no permission, a file in the way) is
 * KwError('IO_ERROR') naming it, before any work is done.
 */
export function makeDir(path: string): string[] {
  const target = resolve(path);
  const missing: string[] = [];
  let p = target;
  const root = parse(target).root;
  for (;;) {
    const st = statPath(p);
    if (st) {
      if (!st.isDirectory())
        throw new KwError(
          'IO_ERROR',
          `cannot write to folder ${path}: a part of the path is ${st.isFile() ? 'a file' : kindOf(st)}, not a folder (${p})`,
          { path, code: 'ENOTDIR' },
        );
      break;
    }
    missing.unshift(p);
    if (p === root) break;
    p = dirname(p);
  }
  const created: string[] = [];
  for (const d of missing) {
    try {
      fs.mkdirSync(d);
      created.push(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST' && statPath(d)?.isDirectory()) continue;
      removeCreatedDirs(created);
      throw ioError('write to folder', path, e, d === target ? '' : ` (creating ${d})`);
    }
  }
  try {
    fs.accessSync(target, fs.constants.W_OK);
  } catch (e) {
    removeCreatedDirs(created);
    throw ioError('write to folder', path, e);
  }
  return created;
}

/** Remove folders `makeDir` created (innermost first, only while empty); best effort. */
export function removeCreatedDirs(created: readonly string[]): void {
  for (const d of [...created].reverse()) {
    try {
      fs.rmdirSync(d);
    } catch {
      return; // not empty (someone else wrote there) or already gone: leave the rest
    }
  }
}

/** Largest file `readFileBytes` reads unless told otherwise: 2^31 - 1 bytes (2 GiB). */
export const MAX_READ_BYTES = 2 ** 31 - 1;

/**
 * Read a whole regular file. Devices (`/dev/zero`), FIFOs, sockets and folders are refused
 * before anything is read (a FIFO would block, a device never ends), and so is a file larger
 * than `maxBytes`; the read never goes past the size found, however the file grows meanwhile.
 * Every failure is KwError('IO_ERROR') naming the path.
 *
 * @example
 * const bytes = readFileBytes('model.onnx', { maxBytes: 2 ** 31 - 1, what: 'an ONNX model' });
 */
export function readFileBytes(
  path: string,
  options: {
    /** Refuse files larger than this (default `MAX_READ_BYTES`). */
    maxBytes?: number;
    /** What the file is, for the message ("an ONNX model", "an IDX file"). */
    what?: string;
  } = {},
): Uint8Array {
  const maxBytes = options.maxBytes ?? MAX_READ_BYTES;
  const st = statPath(path);
  if (!st)
    throw new KwError('IO_ERROR', `cannot read ${path}: no such file`, { path, code: 'ENOENT' });
  const check = (s: fs.Stats) => {
    if (!s.isFile())
      throw new KwError('IO_ERROR', `cannot read ${path}: it is ${kindOf(s)}, not a regular file`, {
        path,
      });
    if (s.size > maxBytes)
      throw new KwError(
        'IO_ERROR',
        `cannot read ${path}: it has ${s.size} bytes, more than the ${maxBytes} ${options.what ?? 'a file here'} may have`,
        { path, expected: `<= ${maxBytes}`, actual: s.size },
      );
  };
  check(st);
  // O_NONBLOCK: if the path was swapped for a FIFO since the stat, opening it does not block
  const fd = fsCall('read', path, () =>
    fs.openSync(path, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0)),
  );
  try {
    const st2 = fsCall('read', path, () => fs.fstatSync(fd));
    check(st2);
    const out = new Uint8Array(st2.size);
    let off = 0;
    while (off < out.length) {
      const n = fsCall('read', path, () => fs.readSync(fd, out, off, out.length - off, off));
      if (n === 0) break; // the file shrank meanwhile
      off += n;
    }
    return off === out.length ? out : out.subarray(0, off);
  } finally {
    try {
      fs.closeSync(fd);
    } catch {
      // nothing to do
    }
  }
}

/** One file for `writeFilesAtomic`. */
export interface OutputFile {
  path: string;
  bytes: Uint8Array | string;
}

interface Plan {
  /** Path as given (for messages). */
  path: string;
  /** Where the bytes go (a symbolic link's target). */
  target: string;
  data: Uint8Array;
  /** A character device (/dev/null, /dev/full): written in place, never renamed over. */
  device: boolean;
  /** The target existed as a regular file. */
  existed: boolean;
  tmp?: string;
  backup?: string;
}

const tmpName = (target: string, kind: string) =>
  join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.${kind}`);

/**
 * Write several files all or nothing: each into a temporary file beside it (flushed to disk),
 * then all renamed into place. If any write fails, every temporary file is removed and the
 * targets keep their old bytes (or stay absent); if a rename fails, the targets already replaced
 * get their old files back. A character device (`/dev/null`, `/dev/full`) is written in place,
 * before any rename, never replaced by a regular file; FIFOs, sockets, block devices and folders
 * are refused; a symbolic link is written through. Errors are KwError('IO_ERROR') naming the
 * path and the reason, and saying that nothing was written.
 *
 * @example
 * writeFilesAtomic([{ path: 'a.onnx', bytes: onnx }, { path: 'a.safetensors', bytes: weights }]);
 */
export function writeFilesAtomic(files: readonly OutputFile[], fsImpl: AtomicFs = realFs): void {
  const f: Required<AtomicFs> = { ...realFs, ...fsImpl };
  const nothing = files.length > 1 ? '; none of the files was written' : '; nothing was written';
  const plans: Plan[] = [];
  const seen = new Map<string, string>();
  for (const { path, bytes } of files) {
    let target = path;
    let st: fs.Stats | undefined;
    try {
      st = f.lstatSync(path);
      if (st?.isSymbolicLink()) {
        target = fs.realpathSync(path);
        st = f.lstatSync(target);
      }
    } catch (e) {
      throw ioError('write', path, e, nothing);
    }
    if (st && !st.isFile() && !st.isCharacterDevice())
      throw new KwError(
        'IO_ERROR',
        `cannot write ${path}: it is ${kindOf(st)}, not a regular file${nothing}`,
        { path },
      );
    const key = resolve(target);
    const other = seen.get(key);
    if (other !== undefined)
      throw new KwError(
        'ARGUMENT_INVALID',
        `${other} and ${path} are the same file; give each output its own path`,
        { path },
      );
    seen.set(key, path);
    plans.push({
      path,
      target,
      data: typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes,
      device: !!st?.isCharacterDevice(),
      existed: !!st?.isFile(),
    });
  }
  const writeAll = (p: string, target: string, data: Uint8Array, flags: string) => {
    let fd: number | undefined;
    try {
      fd = f.openSync(target, flags);
      let off = 0;
      while (off < data.length) off += f.writeSync(fd, data, off, data.length - off);
      if (flags !== 'w') f.fsyncSync(fd);
      f.closeSync(fd);
      fd = undefined;
    } catch (e) {
      try {
        if (fd !== undefined) f.closeSync(fd);
      } catch {
        // already closed
      }
      throw ioError('write', p, e, nothing);
    }
  };
  const removeTemps = () => {
    for (const p of plans) {
      if (!p.tmp) continue;
      try {
        f.rmSync(p.tmp);
      } catch {
        // the temporary file could not even be created there
      }
    }
  };
  try {
    // 1. every regular file into its temporary file
    for (const p of plans) {
      if (p.device) continue;
      p.tmp = tmpName(p.target, 'tmp');
      writeAll(p.path, p.tmp, p.data, 'wx');
    }
    // 2. devices, in place (cannot be undone, so before any rename)
    for (const p of plans) if (p.device) writeAll(p.path, p.target, p.data, 'w');
  } catch (e) {
    removeTemps();
    throw e;
  }
  // 3. renames; with several files, keep each old file (a hard link) until all are in place
  const done: Plan[] = [];
  try {
    for (const p of plans) {
      if (p.device) continue;
      if (plans.length > 1 && p.existed) {
        const backup = tmpName(p.target, 'old');
        try {
          f.linkSync(p.target, backup);
        } catch {
          fs.copyFileSync(p.target, backup); // a file system without hard links
        }
        p.backup = backup;
      }
      f.renameSync(p.tmp!, p.target);
      p.tmp = undefined;
      done.push(p);
    }
  } catch (e) {
    const failed = plans.find((p) => p.tmp !== undefined && !p.device);
    for (const p of done.reverse()) {
      try {
        if (p.backup) f.renameSync(p.backup, p.target);
        else f.rmSync(p.target);
        p.backup = undefined;
      } catch {
        // best effort: the message below still says what failed
      }
    }
    for (const p of plans)
      if (p.backup)
        try {
          f.rmSync(p.backup);
        } catch {
          // best effort
        }
    removeTemps();
    throw ioError('write', failed?.path ?? plans[0]!.path, e, nothing);
  }
  for (const p of plans)
    if (p.backup)
      try {
        f.rmSync(p.backup);
      } catch {
        // the new files are in place; a stray old copy is harmless
      }
  // make the renames themselves durable (best effort: not every platform opens folders)
  for (const d of new Set(plans.filter((p) => !p.device).map((p) => dirname(p.target)))) {
    try {
      const dfd = fs.openSync(d, 'r');
      try {
        fs.fsyncSync(dfd);
      } finally {
        fs.closeSync(dfd);
      }
    } catch {
      // the files are written; only the folder entry's durability is unconfirmed
    }
  }
}

/**
 * Write a file atomically: into a temporary file beside it, flushed to disk (fsync), then
 * renamed over the target, so a crash, a kill, a full disk or a read-only folder never leaves a
 * half-written file: the target holds either its old or its new bytes. A character device is
 * written in place (never replaced by a regular file). Errors become KwError('IO_ERROR') naming
 * the path and the reason. `fsImpl` replaces the file-system calls (tests).
 *
 * @example
 * writeFileAtomic('runs/a/results.json', JSON.stringify(results));
 */
export function writeFileAtomic(
  path: string,
  bytes: Uint8Array | string,
  fsImpl: AtomicFs = realFs,
): void {
  writeFilesAtomic([{ path, bytes }], fsImpl);
}

/**
 * The outputs of one command, all or nothing: the folders are created first (and removed again
 * if anything fails), then every file goes through `writeFilesAtomic`.
 *
 * @example
 * writeOutputs([{ path: 'repo/m/1/model.onnx', bytes }, { path: 'repo/m/config.pbtxt', bytes: text }], ['repo/m/1']);
 */
export function writeOutputs(files: readonly OutputFile[], dirs: readonly string[] = []): void {
  const created: string[] = [];
  try {
    for (const d of dirs) created.push(...makeDir(d));
    writeFilesAtomic(files);
  } catch (e) {
    removeCreatedDirs(created);
    throw e;
  }
}

/**
 * Check a name that becomes one path component (a folder or file name made from a model or run
 * name): letters, digits, `_`, `.`, `-`, at most 255 characters, not `.` or `..`, so the path
 * stays inside the folder it is joined to. Throws KwError('ARGUMENT_INVALID') naming `what`.
 *
 * @example
 * join(repo, checkPathName(name, '--triton-name'));
 */
export function checkPathName(name: string, what: string): string {
  if (
    typeof name !== 'string' ||
    name.length === 0 ||
    name.length > 255 ||
    !/^[A-Za-z0-9_.-]+$/.test(name) ||
    name === '.' ||
    name === '..'
  )
    throw new KwError(
      'ARGUMENT_INVALID',
      `${what} must be letters, digits, '_', '.', '-' (not "." or "..", at most 255 characters) to stay inside its folder; found ${JSON.stringify(String(name)).slice(0, 120)}`,
      { field: what, found: name },
    );
  return name;
}
