#!/usr/bin/env node
// Runs `pnpm run check` (or the command after `--`) while busy-loop worker processes keep every
// core loaded, to prove that no test depends on the machine's speed (issue 15). The workers are
// stopped at the end whatever happens: normal end, failure, Ctrl-C, SIGTERM; and each worker also
// exits by itself within half a second once this script is gone (even after a SIGKILL).
//
//   node scripts/check-under-load.mjs                 # load = 2 x cores, one check
//   node scripts/check-under-load.mjs --factor 3 --runs 3
//   node scripts/check-under-load.mjs -- npx vitest run   # any command, under the same load
//
// Turbo's cache is off for the runs (TURBO_FORCE=true): a test replayed from the cache proves
// nothing about speed. --cached keeps it on.
// Prints the load averages before and after and each run's wall time; exits with the first
// non-zero status of the runs (all runs are done, so every failure is seen).
import { spawn } from 'node:child_process';
import { availableParallelism, loadavg } from 'node:os';

const argv = process.argv.slice(2);
const dash = argv.indexOf('--');
const opts = dash < 0 ? argv : argv.slice(0, dash);
const flag = (name, fallback) => {
  const i = opts.indexOf(name);
  if (i < 0) return fallback;
  const v = Number(opts[i + 1]);
  if (!Number.isInteger(v) || v < (name === '--factor' ? 0 : 1)) {
    console.error(`${name} takes an integer (found ${JSON.stringify(opts[i + 1])})`);
    process.exit(2);
  }
  return v;
};
const factor = flag('--factor', 2);
const runs = flag('--runs', 1);
// the pnpm that runs this script (pnpm run check:load), else npx fetches the pinned one
// biome-ignore lint/suspicious/noUndeclaredEnvVars: a script run by hand, not a turbo task
const pnpm = process.env.npm_execpath;
const command =
  dash >= 0
    ? argv.slice(dash + 1)
    : pnpm && /pnpm/.test(pnpm)
      ? [process.execPath, pnpm, 'run', 'check']
      : ['npx', '-y', 'pnpm@10.34.9', 'run', 'check'];
if (command.length === 0) {
  console.error('nothing to run after --');
  process.exit(2);
}

const cores = availableParallelism();
const count = factor * cores;
// a worker spins and, every ~100 ms, checks that its parent is still alive
const WORKER = `const p=process.ppid;let t=Date.now();for(;;){if(Date.now()-t>100){t=Date.now();try{process.kill(p,0)}catch{process.exit(0)}if(process.ppid!==p)process.exit(0)}}`;
const workers = [];
for (let i = 0; i < count; i++)
  workers.push(spawn(process.execPath, ['-e', WORKER], { stdio: 'ignore' }));

let stopped = false;
function stopWorkers() {
  if (stopped) return;
  stopped = true;
  for (const w of workers) {
    try {
      if (w.exitCode === null) w.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.on('exit', stopWorkers);
let child;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    stopWorkers();
    if (child && child.exitCode === null) child.kill(sig);
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
  });
}

const load = () =>
  loadavg()
    .map((v) => v.toFixed(2))
    .join(', ');
console.log(
  `check-under-load: ${count} busy-loop workers (${factor} x ${cores} cores); load average before: ${load()}`,
);
console.log(`check-under-load: running ${command.join(' ')} ${runs} time(s)`);
let status = 0;
const times = [];
for (let r = 1; r <= runs; r++) {
  const t0 = performance.now();
  const code = await new Promise((resolve) => {
    child = spawn(command[0], command.slice(1), {
      stdio: 'inherit',
      env: opts.includes('--cached') ? process.env : { ...process.env, TURBO_FORCE: 'true' },
    });
    child.on('error', (e) => {
      console.error(`check-under-load: cannot start ${command[0]}: ${e.message}`);
      resolve(127);
    });
    child.on('exit', (c, sig) => resolve(c ?? (sig ? 128 : 1)));
  });
  const s = (performance.now() - t0) / 1000;
  times.push(s);
  console.log(
    `check-under-load: run ${r}/${runs} exited ${code} after ${s.toFixed(0)} s; load average now: ${load()}`,
  );
  if (code !== 0 && status === 0) status = code;
}
stopWorkers();
console.log(
  `check-under-load: ${runs} run(s), ${times.map((t) => `${t.toFixed(0)} s`).join(', ')}; ${status === 0 ? 'all passed' : `failed (first non-zero status ${status})`}`,
);
process.exit(status);
