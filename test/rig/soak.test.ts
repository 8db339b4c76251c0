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
  summary: { cycles: number; passed: number; availDropKiB: number; openFilesRise: number; byEnding: Record<string, number> };
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
    // 8 cycles left L1 35 MiB lower (slab and page tables of a fresh boot settling); a leaked guest RAM a cycle would be 64 MiB each.
    t.ok(
      o.summary.availDropKiB < 96 * 1024,
      `L1's available memory at most 96 MiB lower after ${CYCLES} cycles (${Math.round(o.summary.availDropKiB / 1024)} MiB)`,
    );
    t.ok(o.summary.openFilesRise < 32, `L1's open files back near where they were (${o.summary.openFilesRise} more)`);
  });
}
