// What the long-run scripts (soak.mjs, vm-soak.mjs, update-proof.mjs) share:
// their --name VALUE flags, and the commit of the tree they run, taken on
// this side before the runs (L1 has no git).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

/** The value after `--name` on the command line, or `dflt`. */
export function flag(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
}

/** HEAD's short hash, `-dirty` when the tree differs from it outside the results folders. */
export function treeCommit(root) {
  const git = (...a) => spawnSync('git', a, { cwd: root, encoding: 'utf8' });
  const dirty = git('diff', '--quiet', 'HEAD', '--', '.', ':!test/results', ':!bench/results').status !== 0;
  return git('rev-parse', '--short', 'HEAD').stdout.trim() + (dirty ? '-dirty' : '');
}

/** `pinion rig` on `kernel` with a timeout of `timeoutSec`, then `rest` (its own flags, `--`, the L1 command). */
export function rigCommand(root, kernel, timeoutSec, rest) {
  return [join(root, 'dist/bundle/pinion.js'), 'rig', '--kernel', kernel, '--timeout', String(timeoutSec), ...rest];
}
