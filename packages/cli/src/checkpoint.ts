/**
 * `kw train`'s checkpoints: the library's {@link CheckpointDir} (manifest with its own hash,
 * tensor files with theirs, names kept inside the folder) over the CLI's file-system wrapper,
 * whose errors name the path (`IO_ERROR`).
 */
import { join } from 'node:path';
import { CheckpointDir, type CheckpointFs, type CheckpointManifest } from '@kernelwarehouse/tfjs';
import {
  listDir,
  makeDir,
  pathExists,
  readFileBytes,
  removePath,
  writeFileAtomic,
} from './fsio.js';

export {
  CHECKPOINT_FORMAT,
  CHECKPOINT_MANIFEST as MANIFEST,
  CHECKPOINT_VERSION,
  type CheckpointFile,
  type CheckpointManifest,
  type CheckpointWrite,
} from '@kernelwarehouse/tfjs';

/** The CLI's file system for checkpoints (atomic writes; errors name the path). */
export const cliCheckpointFs: CheckpointFs = {
  readFile: (p) => readFileBytes(p),
  writeFileAtomic: (p, d) => writeFileAtomic(p, d),
  exists: (p) => pathExists(p),
  list: (d) => listDir(d),
  remove: (p) => removePath(p),
  makeDir: (d) => {
    makeDir(d);
  },
};

/** The checkpoint folder of a run folder. */
export function checkpointDir(runDir: string): CheckpointDir {
  return new CheckpointDir(join(runDir, 'checkpoint'), cliCheckpointFs);
}

/** True when `dir` holds a checkpoint manifest. */
export function hasCheckpoint(dir: string): boolean {
  return pathExists(join(dir, 'checkpoint.json'));
}

/**
 * Read and verify the checkpoint in `dir` (see {@link CheckpointDir.read}).
 *
 * @example
 * const { manifest, blobs } = await readCheckpoint('runs/a/checkpoint');
 */
export function readCheckpoint<S>(
  dir: string,
): Promise<{ manifest: CheckpointManifest<S>; blobs: Record<string, Uint8Array> }> {
  return new CheckpointDir(dir, cliCheckpointFs).read<S>();
}
