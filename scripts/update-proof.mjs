#!/usr/bin/env node
// Live update under traffic, the long run: a VM with an assigned VF and
// RAM_MIB of RAM (default 256) handed to a new Pinion process UPDATES times
// in a row (default 20) while its test guest streams frames and counts the
// NIC's MSI-X heartbeats (test/l1/update-traffic.ts), on each kernel path
// that can do it: type1 legacy, type1 iommufd, compat iommufd. One L1 boot
// each. Writes bench/results/update.json: each run's updates (pause,
// steps, charges), frames and heartbeats, and a summary.
// Usage: npm run update-proof -- [--updates N] [--ram MIB]
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { flag, rigCommand, treeCommit } from './run-args.mjs';

const root = new URL('..', import.meta.url).pathname;
const updates = Number(flag('updates', 20));
const ram = Number(flag('ram', 256));
if (!Number.isInteger(updates) || updates < 1 || !Number.isInteger(ram) || ram < 64) {
  console.error(
    'pinion update-proof: --updates takes a whole number and --ram MiB (at least 64); e.g. npm run update-proof -- --updates 20 --ram 256',
  );
  process.exit(2);
}
const commit = treeCommit(root);
// 10 ms a frame (the guest's 128 RX descriptors hold 1.28 s); an update takes ~15 s in L1, so the peer sends for all of them.
// An update takes 17-20 s in the rig (the new process's prepare most of it): the peer outlasts them all.
const frames = Math.ceil(((updates + 2) * 22_000) / 10);
const runs = [];
let failed = 0;
for (const [kernel, iommu] of [
  ['type1', 'legacy'],
  ['type1', 'iommufd'],
  ['compat', 'iommufd'],
]) {
  const script = join(root, 'dist/test/l1/update-traffic.js');
  const r = spawnSync(
    process.execPath,
    rigCommand(root, kernel, Math.ceil(frames / 100) + 600, [
      '--',
      process.execPath,
      script,
      iommu,
      String(updates),
      String(frames),
      '10',
      '',
      String(ram),
    ]),
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 },
  );
  let out;
  try {
    out = JSON.parse(r.stdout.trim().split('\n').at(-1));
  } catch {
    console.error(`pinion update-proof: ${kernel} ${iommu}: the L1 script printed no result (exit ${r.status})`);
    failed++;
    continue;
  }
  const list = out.updateList ?? [];
  const ok = list.filter((u) => u.status === 200);
  const pauses = ok.map((u) => u.pauseMs);
  const quantiles = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
    return s.length ? { median: q(0.5), p90: q(0.9), max: s.at(-1), min: s[0] } : null;
  };
  const guest = ok.map((u) => u.guestPauseMs).filter((g) => typeof g === 'number');
  const t = out.end?.totals ?? {};
  const summary = {
    updates: list.length,
    handedOver: ok.length,
    pauseMs: quantiles(pauses),
    // The same pauses as the guest's own clock saw them (its TSC, at the vCPU's rate): the longest turn of its loop.
    guestPauseMs: quantiles(guest),
    guestClocked: guest.length,
    frames: { sent: frames, received: t.rx, lost: t.lost, bad: t.bad },
    heartbeats: { raised: t.raised, delivered: t.irqs },
    dmarFaults: out.dmarFaults?.length,
    after: out.after,
    // A guest that ended before the peer did: the VMM's line saying why.
    ...(out.end?.done
      ? {}
      : { stopped: /pinion: guest stopped: [^\n]*/.exec(out.end?.vmmStderr ?? '')?.[0] ?? 'the guest did not end on the stop frame' }),
  };
  runs.push({ kernel, iommu, summary, run: out });
  const good = ok.length === updates && t.lost === 0 && t.rx === frames && t.bad === 0 && out.dmarFaults?.length === 0;
  if (!good) failed++;
  console.log(
    `${kernel} ${iommu}: ${ok.length}/${updates} handed over; pause median ${summary.pauseMs?.median} ms (p90 ${summary.pauseMs?.p90}, max ${summary.pauseMs?.max}); the guest's clock: median ${summary.guestPauseMs?.median} ms, max ${summary.guestPauseMs?.max} (${guest.length} clocked); frames ${t.rx}/${frames}, lost ${t.lost}; heartbeats ${t.irqs}/${t.raised}`,
  );
}
const dir = join(root, 'bench/results');
mkdirSync(dir, { recursive: true });
writeFileSync(
  join(dir, 'update.json'),
  JSON.stringify(
    {
      commit,
      date: new Date().toISOString(),
      host: { cpu: cpus()[0]?.model, count: cpus().length },
      updates,
      ramMiB: ram,
      frames,
      intervalMs: 10,
      runs,
    },
    null,
    1,
  ) + '\n',
);
process.exit(failed ? 1 : 0);
