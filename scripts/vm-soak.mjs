#!/usr/bin/env node
// The start/stop soak: a VM with an assigned VF started and stopped N times in
// one L1 boot per kernel (test/l1/soak.ts says what each cycle does and
// checks), and its summary. Writes test/results/vm-soak-<kernel>.json.
// Usage: npm run soak -- --cycles N [--kernel type1|compat]
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { flag, rigCommand, treeCommit } from './run-args.mjs';

const root = new URL('..', import.meta.url).pathname;
const cycles = Number(flag('cycles', 42));
const kernels = (flag('kernel', 'type1 compat') ?? '').split(/[ ,]+/).filter(Boolean);
if (!Number.isInteger(cycles) || cycles < 1 || kernels.some((k) => !['type1', 'compat'].includes(k))) {
  console.error(
    'pinion soak: --cycles takes a whole number of cycles and --kernel type1 or compat; e.g. npm run soak -- --cycles 100 --kernel type1',
  );
  process.exit(2);
}
const dir = join(root, 'test/results');
mkdirSync(dir, { recursive: true });
// Provenance, taken before the runs: the tree they ran.
const commit = treeCommit(root);
let failed = 0;
for (const kernel of kernels) {
  const out = join(dir, `vm-soak-${kernel}.json`);
  // A cycle takes 4-12 s in L1; a VMM still running after 120 s ends its cycle.
  const timeout = String(Math.ceil(cycles * 20 + 300));
  const r = spawnSync(
    process.execPath,
    rigCommand(root, kernel, timeout, [
      '--rw',
      dir,
      '--',
      'env',
      `PINION_RIG_KERNEL=${kernel}`,
      process.execPath,
      join(root, 'dist/test/l1/soak.js'),
      String(cycles),
      out,
    ]),
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  if (r.status !== 0) {
    console.error(`pinion soak: the ${kernel} kernel's soak ended with status ${r.status}`);
    failed++;
    continue;
  }
  const result = JSON.parse(readFileSync(out, 'utf8'));
  result.commit = commit;
  result.host = { cpu: cpus()[0]?.model, count: cpus().length };
  writeFileSync(out, JSON.stringify(result, null, 1) + '\n');
  const { summary: s, failed: bad } = result;
  console.log(
    `${kernel}: ${s.passed} of ${s.cycles} cycles clean in ${s.seconds} s; L1's available memory ${Math.round(s.availDropKiB / 1024)} MiB lower, open files ${s.openFilesRise} more; ${out}`,
  );
  for (const c of bad) console.log(`  cycle ${c.i} (${c.path}, ${c.backend}, ${c.ending}): ${c.problems.join('; ')}`);
  if (bad.length) failed++;
}
process.exit(failed ? 1 : 0);
