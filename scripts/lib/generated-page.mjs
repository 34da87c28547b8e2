// Shared by the scripts that generate docs pages: write the page, or with --check exit 1 when the
// committed page differs from what the code generates now.
import { readFileSync, writeFileSync } from 'node:fs';

/** @param {URL} target @param {string} page @param {string} regenerate the command that rewrites it */
export function writeOrCheck(target, page, regenerate) {
  const name = target.pathname.split('/docs/').pop();
  if (process.argv.includes('--check')) {
    let old = '';
    try {
      old = readFileSync(target, 'utf8');
    } catch {}
    if (old !== page) {
      console.error(`docs/${name} is out of date: run ${regenerate}`);
      process.exit(1);
    }
    console.log(`docs/${name} is up to date`);
  } else {
    writeFileSync(target, page);
    console.log(`wrote docs/${name}`);
  }
}
