import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from '../src/index.js';

/** Run the kw command line in-process, capturing stdout and stderr. */
export async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

/** bin/kw.js: the built command line, as a user runs it. */
export const KW_BIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'kw.js');

/** A `kw train` child process: its stderr so far and its exit status (137 after SIGKILL). */
export interface TrainChild {
  child: ChildProcess;
  err: () => string;
  exit: Promise<number>;
}

/** Start `kw train ...args` as a child process (bin/kw.js, the built dist/). */
export function startTrain(args: string[], env: NodeJS.ProcessEnv = process.env): TrainChild {
  const child = spawn(process.execPath, [KW_BIN, 'train', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env,
  });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exit = new Promise<number>((res) =>
    child.on('exit', (code, sig) => res(code ?? (sig === 'SIGKILL' ? 137 : -1))),
  );
  return { child, err: () => err, exit };
}

/**
 * Wait until the child's stderr matches `pattern` `times` times (default once); fails when the
 * child exits first. No wall-clock limit (issue 15): on a loaded machine the child is slower, not
 * wrong.
 */
export async function waitFor(p: TrainChild, pattern: RegExp, times = 1): Promise<void> {
  let exited = false;
  void p.exit.then(() => {
    exited = true;
  });
  const all = new RegExp(
    pattern.source,
    pattern.flags.includes('g') ? pattern.flags : `${pattern.flags}g`,
  );
  const count = () => p.err().match(all)?.length ?? 0;
  while (count() < times) {
    if (exited)
      throw new Error(
        `the child exited before printing ${pattern}${times > 1 ? ` ${times} times` : ''}; stderr:\n${p.err()}`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}
