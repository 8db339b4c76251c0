#!/usr/bin/env node
// Runs the whole rig test list N times (default 10) and reports, per round,
// tests passed and failed, L1 boots, and every stall the watchdog caught.
// Writes test/results/rig-soak.json. Usage: npm run rig:soak [-- --rounds N]
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { tapCounts } from './tap-summary.mjs';
import { flag } from './run-args.mjs';

const root = new URL('..', import.meta.url).pathname;
const rounds = Number(flag('rounds', 10));
const out = flag('out', join(root, 'test/results/rig-soak.json'));
const files = readdirSync(join(root, 'dist/test/rig'))
  .filter((f) => f.endsWith('.test.js'))
  .sort()
  .map((f) => join('dist/test/rig', f));
const work = mkdtempSync(join(tmpdir(), 'pinion-soak-'));
const lines = (p) =>
  existsSync(p)
    ? readFileSync(p, 'utf8')
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l))
    : [];

const result = {
  date: new Date().toISOString(),
  commit: execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim(),
  host: { cpu: cpus()[0]?.model, count: cpus().length },
  env: Object.fromEntries(Object.entries(process.env).filter(([k]) => /^PINION_RIG_/.test(k))),
  files: files.length,
  rounds: [],
};
for (let r = 1; r <= rounds; r++) {
  const bootLog = join(work, `boots-${r}.jsonl`);
  const stallLog = join(work, `stalls-${r}.jsonl`);
  const t0 = Date.now();
  const tapOut = await new Promise((resolve) => {
    let text = '';
    const p = spawn(
      process.execPath,
      [join(root, 'node_modules/tap/dist/esm/run.mjs'), '--reporter=tap', '--jobs=1', '--timeout=1800', ...files],
      {
        cwd: root,
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, PINION_RIG_BOOT_LOG: bootLog, PINION_RIG_STALL_LOG: stallLog },
      },
    );
    p.stdout.on('data', (d) => (text += d));
    p.on('close', () => resolve(text));
  });
  const summary = tapCounts(tapOut);
  const counts = summary ?? {};
  const boots = lines(bootLog);
  const round = {
    round: r,
    seconds: Math.round((Date.now() - t0) / 1000),
    passed: counts.pass ?? 0,
    failed: counts.fail ?? (summary ? 0 : 1),
    boots: boots.length,
    // The watchdog's own test stalls L1 on purpose (expected); every other stall counts.
    stalls: boots.filter((b) => b.outcome === 'stall' && !b.expected).map((b) => ({ kernel: b.kernel, reason: b.reason })),
    expectedStalls: boots.filter((b) => b.outcome === 'stall' && b.expected).length,
    crashes: boots.filter((b) => b.outcome === 'crash' && !b.expected).map((b) => ({ kernel: b.kernel, reason: b.reason })),
    retried: lines(stallLog).filter((s) => !/pinion-heartbeat\.pid/.test(s.command)).length,
    failures: [...tapOut.matchAll(/^\s*not ok \d+ - (.*)$/gm)].map((x) => x[1]).slice(0, 20),
  };
  result.rounds.push(round);
  console.log(
    `soak: round ${r}/${rounds}: ${round.passed} passed, ${round.failed} failed, ${round.boots} L1 boots, ${round.stalls.length} stall(s), ${round.crashes.length} QEMU crash(es), ${round.seconds} s`,
  );
  for (const s of round.stalls) console.log(`soak:   stall (${s.kernel}): ${s.reason}`);
  for (const s of round.crashes) console.log(`soak:   QEMU crash (${s.kernel}): ${s.reason}`);
  mkdirSync(join(out, '..'), { recursive: true });
  const sum = (k) => result.rounds.reduce((a, x) => a + (Array.isArray(x[k]) ? x[k].length : x[k]), 0);
  result.total = {
    rounds: result.rounds.length,
    passed: sum('passed'),
    failed: sum('failed'),
    boots: sum('boots'),
    stalls: sum('stalls'),
    crashes: sum('crashes'),
  };
  writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
}
rmSync(work, { recursive: true, force: true });
const t = result.total;
console.log(
  `soak: ${t.rounds} rounds, ${t.boots} L1 boots, ${t.stalls} stall(s) caught, ${t.crashes} QEMU crash(es); tests ${t.passed} passed, ${t.failed} failed`,
);
process.exit(t.failed > 0 ? 1 : 0);
