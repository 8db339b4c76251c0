// bench/results/remap.json: what each memory change of the traffic scenario
// (test/l1/remap-traffic.ts) did to the frame stream, per kernel, path and
// accounting mode. Not a ratio against a reference: a record, one entry per
// change, with the time the change took, the frames the guest received and
// lost across it, its DMA ops, and the DMA outage on the changed range.
// The outage is not timed op by op: it is 0 when every op on the range maps
// (or copies) before any unmap of it, else at most the change's own time.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { provenance, type Provenance } from './method.js';

export const REMAP_SCHEMA = 'pinion-remap/1';

export interface ChangeRecord {
  name: string;
  verb: string;
  body: Record<string, string>;
  status: number;
  ms: number;
  framesReceived: number | null;
  framesLost: number | null;
  ops: number;
  /** null: the change made no op (refused, or nothing to remap). */
  outage: { ms: 0 } | { atMostMs: number } | null;
  charged: { before: number; peak: number | null; after: number };
  guest: string | null;
}

export interface ScenarioRecord {
  kernel: string;
  iommu: string;
  accounting: string;
  provenance: Provenance;
  frames: { sent: number; received: number | null; lost: number | null };
  dmarFaults: number;
  changes: ChangeRecord[];
}

export interface RemapResults {
  schema: typeof REMAP_SCHEMA;
  scenarios: ScenarioRecord[];
}

interface Counters {
  rx: number;
  lost: number;
}
export interface ChangeSeen {
  name: string;
  verb: string;
  body: Record<string, string>;
  status: number;
  ms: number;
  ops: string[];
  charged: { before: number; peak: number | null; after: number };
  counters: { before: Counters | null; after: Counters | null };
  guest?: { note?: string } | null;
}

/** 0 when nothing on the range is unmapped before it is mapped again (make-before-break, a copy, no unmap); else the change's time bounds it. */
export function outageOf(ops: string[], ms: number): ChangeRecord['outage'] {
  if (!ops.length) return null;
  const firstUnmap = ops.findIndex((o) => o.startsWith('unmap'));
  const lastMap = ops.reduce((last, o, i) => (/^(map|copy)/.test(o) ? i : last), -1);
  return firstUnmap >= 0 && lastMap > firstUnmap ? { atMostMs: ms } : { ms: 0 };
}

export function changeRecord(c: ChangeSeen): ChangeRecord {
  const { before, after } = c.counters;
  return {
    name: c.name,
    verb: c.verb,
    body: c.body,
    status: c.status,
    ms: c.ms,
    framesReceived: before && after ? after.rx - before.rx : null,
    framesLost: before && after ? after.lost - before.lost : null,
    // A refused change made no op; the DMA report's last ops are then an earlier change's.
    ops: c.status === 200 ? c.ops.length : 0,
    outage: c.status === 200 ? outageOf(c.ops, c.ms) : null,
    charged: c.charged,
    guest: c.guest?.note ?? null,
  };
}

/** Adds `s` to the file, replacing the entry of the same kernel, path and accounting. */
export function recordScenario(file: string, s: Omit<ScenarioRecord, 'provenance'>): void {
  const old: RemapResults = existsSync(file)
    ? (JSON.parse(readFileSync(file, 'utf8')) as RemapResults)
    : { schema: REMAP_SCHEMA, scenarios: [] };
  const key = (x: Omit<ScenarioRecord, 'provenance'>): string => `${x.kernel} ${x.iommu} ${x.accounting}`;
  const scenarios = old.scenarios.filter((x) => key(x) !== key(s));
  scenarios.push({ ...s, provenance: provenance() });
  writeFileSync(file, `${JSON.stringify({ schema: REMAP_SCHEMA, scenarios }, null, 1)}\n`);
}
