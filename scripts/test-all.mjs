#!/usr/bin/env node
// Runs every test runner (cargo test for pin-core, tap for unit and rig tests)
// and the lint checks (scripts/lint.mjs, one count per check), streams their
// output, and ends with one line: `N passed, N failed, N skipped`, counting
// cargo tests, tap assertions and lint checks (the line before it says which).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runLint } from './lint.mjs';
import { tapCounts } from './tap-summary.mjs';

const root = new URL('..', import.meta.url).pathname;
const totals = { passed: 0, failed: 0, skipped: 0 };
// What each count is made of, said before the totals line.
const counted = [];
const tally = (what, before) => counted.push(`${totals.passed + totals.failed + totals.skipped - before} ${what}`);
const sum = () => totals.passed + totals.failed + totals.skipped;
// Rig stalls caught and retried (test/support/rig.ts) are listed before the totals.
const stallDir = mkdtempSync(join(tmpdir(), 'pinion-stalls-'));
process.env.PINION_RIG_STALL_LOG = join(stallDir, 'stalls.jsonl');

function run(cmd, args, opts = {}) {
  return new Promise((resolve) => {
    let out = '';
    const p = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], ...opts });
    p.stdout.on('data', (d) => {
      out += d;
      process.stdout.write(d);
    });
    p.on('close', (code) => resolve({ code, out }));
  });
}

function files(dir) {
  const full = join(root, dir);
  try {
    return readdirSync(full, { recursive: true })
      .map(String)
      .filter((f) => f.endsWith('.test.js') && statSync(join(full, f)).isFile())
      .map((f) => join(dir, f))
      .sort();
  } catch {
    return [];
  }
}

async function cargo() {
  // --no-fail-fast: a failing test binary must not hide the ones after it.
  const { code, out } = await run('cargo', ['test', '--offline', '--quiet', '--no-fail-fast'], { cwd: join(root, 'crates/pin-core') });
  let failed = 0;
  for (const m of out.matchAll(/test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored/g)) {
    totals.passed += Number(m[1]);
    failed += Number(m[2]);
    totals.skipped += Number(m[3]);
  }
  // A binary that crashed or failed to build prints no result line of its own: a non-zero exit
  // with no failed test counted is still one failure.
  totals.failed += failed + (code !== 0 && failed === 0 ? 1 : 0);
}

async function tap(label, list, extra) {
  if (list.length === 0) {
    console.log(`# ${label}: no test files found`);
    totals.failed += 1;
    return;
  }
  const { code, out } = await run(process.execPath, [join(root, 'node_modules/tap/dist/esm/run.mjs'), '--reporter=tap', ...extra, ...list]);
  const counts = tapCounts(out);
  if (!counts) {
    console.log(`# ${label}: tap printed no summary (exit ${code})`);
    totals.failed += 1;
    return;
  }
  totals.passed += counts.pass ?? 0;
  totals.failed += counts.fail ?? 0;
  totals.skipped += (counts.skip ?? 0) + (counts.todo ?? 0);
  if (code !== 0 && !counts.fail) totals.failed += 1;
}

function lint() {
  const counts = runLint();
  for (const k of Object.keys(totals)) totals[k] += counts[k];
}

const only = process.argv[2]; // unit | rig | cargo | lint, or all
let before = sum();
if (!only || only === 'lint') (lint(), tally('lint checks', before));
before = sum();
if (!only || only === 'cargo') (await cargo(), tally('cargo tests (pin-core)', before));
before = sum();
if (!only || only === 'unit') (await tap('unit tests', files('dist/test/unit'), []), tally('tap assertions in unit tests', before));
before = sum();
// Rig tests boot QEMU under TCG: one file at a time on a 2-core machine.
if (!only || only === 'rig')
  (await tap('rig tests', files('dist/test/rig'), ['--jobs=1', '--timeout=1800']), tally('tap assertions in rig tests', before));

const stalls = existsSync(process.env.PINION_RIG_STALL_LOG)
  ? readFileSync(process.env.PINION_RIG_STALL_LOG, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
  : [];
rmSync(stallDir, { recursive: true, force: true });
if (stalls.length) {
  console.log(`# !!! ${stalls.length} rig failure(s) (L1 stalled or QEMU crashed) retried from a fresh boot:`);
  for (const s of stalls)
    console.log(`# !!!   ${s.at} ${s.kind} ${s.kernel}: ${s.reason} (${s.command.slice(0, 120)})${s.report ? `; report ${s.report}` : ''}`);
}
console.log(`# counted: ${counted.join(', ')} (a runner that failed to report counts as one failure)`);
console.log(`${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
process.exit(totals.failed > 0 ? 1 : 0);
