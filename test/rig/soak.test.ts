// A short start/stop soak on both kernels (test/l1/soak.ts; `npm run soak`
// runs a long one): 14 cycles, so each ending comes twice, on both paths and
// every RAM backend; after each, nothing the VMM had stays behind.
import t from 'tap';
import { l1Json } from '../support/rig.js';

interface Cycle {
  i: number;
  path: string;
  backend: string;
  ending: string;
  reached: string;
  ok: boolean;
  problems: string[];
  stderrTail?: string;
}
interface Out {
  summary: {
    cycles: number;
    passed: number;
    availDropKiB: number;
    openFilesRise: number;
    byEnding: Record<string, number>;
    trend: { after: number; availKiB: number }[];
    after: { availKiB: number };
  };
  failed: Cycle[];
  cycles: Cycle[];
}

const CYCLES = 14;

for (const kernel of ['type1', 'compat'] as const) {
  t.test(`${kernel} kernel: ${CYCLES} starts and stops with a VF`, async (t) => {
    const { result: o, run } = await l1Json<Out>(kernel, 'soak', [String(CYCLES)], { timeoutSec: 900 });
    t.equal(run.exitCode, 0, 'the L1 script ran to the end');
    t.equal(o.cycles.length, CYCLES, 'every cycle ran');
    for (const c of o.cycles) {
      const bad = o.failed.find((f) => f.i === c.i);
      t.ok(c.ok, `cycle ${c.i}, ${c.path}, ${c.backend} RAM, ${c.ending}: ended as it should, nothing left behind`, {
        problems: c.problems,
        reached: c.reached,
        stderr: bad?.stderrTail,
      });
    }
    for (const [ending, n] of Object.entries(o.summary.byEnding)) t.equal(n, 2, `${ending}: both cycles clean`);
    // A leaked guest RAM a cycle would be 64 MiB each: seven cycles between the two readings, 448 MiB. From
    // the boot's own baseline, a fresh L1 settling (slab, page tables) has taken 35-106 MiB over the first cycles.
    const [mid, end] = [o.summary.trend[0]!.availKiB, o.summary.after.availKiB];
    t.ok(
      mid - end < 64 * 1024,
      `L1's available memory at most 64 MiB lower from cycle 7 to cycle ${CYCLES} (${Math.round((mid - end) / 1024)} MiB)`,
    );
    t.ok(
      o.summary.availDropKiB < 160 * 1024,
      `and at most 160 MiB lower than before the first cycle (${Math.round(o.summary.availDropKiB / 1024)} MiB)`,
    );
    t.ok(o.summary.openFilesRise < 32, `L1's open files back near where they were (${o.summary.openFilesRise} more)`);
  });
}
