// The one summary table of every bench/results/*.json in the schema of
// bench/method.ts: every cell of every run, with its estimate, interval,
// rounds and noise-bound flag, then each run's counts and claims (a claim
// "all cells >= X" counts a cell only when its interval's lower bound clears
// X), and the targets a run lists in extra.targets (crossing.ts). bench/run.sh
// ends with it. Files in an earlier format are named, not summarised: they
// hold no raw rounds to recompute from.
// Usage: node dist/bench/report.js [RESULTS_DIR]
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseResults, summaryTable, METHOD, type Run } from './method.js';
import { REMAP_SCHEMA, type RemapResults } from './remap-record.js';

const dir = process.argv[2] ?? 'bench/results';
const runs: Run[] = [];
const earlier: string[] = [];
const remaps: RemapResults[] = [];
/** npm run update-proof's runs (scripts/update-proof.mjs): a record per path, not a ratio. */
interface UpdateRun {
  kernel: string;
  iommu: string;
  summary: {
    updates: number;
    handedOver: number;
    pauseMs: { median: number; p90: number; max: number; min: number } | null;
    /** The same pauses clocked by the guest (absent in runs before it did). */
    guestPauseMs?: { median: number; p90: number; max: number; min: number } | null;
    guestClocked?: number;
    frames: { sent: number; received?: number; lost?: number };
    heartbeats: { raised?: number; delivered?: number };
    dmarFaults?: number;
    stopped?: string;
  };
}
const UPDATE_SCHEMA = 'pinion-update/1';
const updates: { commit: string; ramMiB: number; runs: UpdateRun[] }[] = [];
for (const f of readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .sort()) {
  const text = readFileSync(join(dir, f), 'utf8');
  const r = parseResults(text);
  if (r) runs.push(...r.runs);
  else {
    const j = JSON.parse(text) as { schema?: string };
    if (j.schema === REMAP_SCHEMA) remaps.push(j as RemapResults);
    else if (j.schema === UPDATE_SCHEMA) updates.push(j as (typeof updates)[number]);
    else earlier.push(f);
  }
}
console.log(`\n${METHOD.ratio}; estimate: ${METHOD.statistic}, ${METHOD.interval}; ${METHOD.order}.`);
console.log(`Pinion and reference columns: geometric mean of each side's per-round figures.\n`);
console.log(runs.length ? summaryTable(runs) : '(no results in this format yet)');
// Targets a benchmark checks beside its claims (crossing.ts: extra.targets), each with whether it holds.
const targets = runs.flatMap((r) =>
  (Array.isArray(r.extra?.targets) ? (r.extra.targets as { claim?: unknown; holds?: unknown }[]) : [])
    .filter((t) => typeof t.claim === 'string')
    .map((t) => `- ${r.benchmark} ${r.variant} target: ${String(t.claim)}: ${t.holds ? 'holds' : 'does not hold'}`),
);
if (targets.length) console.log(`\n${targets.join('\n')}`);
// remap.json is a record per change, not a ratio: each scenario's frames and the changes that lost any.
for (const s of remaps.flatMap((r) => r.scenarios)) {
  const lossy = s.changes.filter((c) => c.framesLost);
  console.log(
    `- remap ${s.kernel} ${s.iommu} ${s.accounting} (commit ${s.provenance.commit}): ${s.frames.sent} frames sent, ${s.frames.received ?? '?'} received, ${s.frames.lost ?? '?'} lost; ${s.changes.length} changes, ${lossy.length ? `frames lost across ${lossy.map((c) => `${c.name} (${c.framesLost})`).join(', ')}` : 'none lost a frame'}; ${s.dmarFaults} DMA faults in L1`,
  );
}
// update.json: each path's live updates in a row, the pause and what the stream lost.
for (const u of updates)
  for (const r of u.runs) {
    const s = r.summary;
    console.log(
      `- update ${r.kernel} ${r.iommu}, ${u.ramMiB} MiB (commit ${u.commit}): ${s.handedOver} of ${s.updates} handed over; pause median ${s.pauseMs?.median ?? '?'} ms, p90 ${s.pauseMs?.p90 ?? '?'}, max ${s.pauseMs?.max ?? '?'}${s.guestPauseMs ? `; the guest's own clock: median ${s.guestPauseMs.median} ms, max ${s.guestPauseMs.max} (${s.guestClocked} of ${s.handedOver})` : '; not clocked by the guest'}; ${s.frames.sent} frames sent, ${s.frames.received ?? '?'} received, ${s.frames.lost ?? '?'} lost; MSI-X heartbeats ${s.heartbeats.delivered ?? '?'} of ${s.heartbeats.raised ?? '?'} delivered; ${s.dmarFaults ?? '?'} DMA faults in L1${s.stopped ? `; the run ended early: ${s.stopped}` : ''}`,
    );
  }
if (earlier.length) console.log(`\nNot summarised, earlier format without raw rounds: ${earlier.join(', ')}`);
