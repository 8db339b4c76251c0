// What the benchmarks share: the statistic they report, and where a result
// file records the commit it measured.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The checkout's commit (short), for a result file. */
export function commitId(): string {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  return spawnSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
}
