// Memory changes of a running VM while its test guest streams frames on an
// assigned igb VF (test/l1/remap-traffic.ts), on the legacy type1 path and
// on iommufd: the guest is told of each new region and the NIC's DMA lands
// in it with the right bytes; a region goes only once the guest released
// it; each change's DMA ops and charges add up; one change over the
// locked-memory budget is refused and changes nothing; and through it all
// no frame of the peer's is lost or wrong, and the IOMMU logs no fault.
import t from 'tap';
import type { Change } from '../l1/stream-vm.js';
import { checkChangeRun } from '../support/changes.js';
import { l1Json } from '../support/rig.js';

interface Out {
  iommu: string;
  how: string;
  frames: { sent: number; received: number | null; first: number | null; last: number | null; lost: number | null };
  limit: number;
  replaceWith: string;
  error?: string;
  changeError?: string;
  flowing: boolean;
  changes: Change[];
  peerRunningAfterChanges: boolean;
  end: {
    status: number | null;
    vmmStderr: string;
    peerMs: number;
    peerRx: number;
    done: Record<string, number> | null;
    console: string;
  };
  dmarFaults: string[];
}

const MiB = 1024 * 1024;

/** Each op ("map 0x.. +0x..", "unmap ..", "copy 0x.. -> 0x.. +0x..") of kind `kind` (any if unset) lies inside one of `ranges`. */
function opsWithin(ops: string[], ranges: [number, number][], kind?: string): boolean {
  return ops.every((op) => {
    const m = /^(\w+) (0x[0-9a-f]+)(?: -> (0x[0-9a-f]+))? \+(0x[0-9a-f]+)$/.exec(op);
    if (!m || (kind && m[1] !== kind)) return false;
    const size = Number(m[4]);
    return [m[2], m[3]]
      .filter((a): a is string => !!a)
      .every((a) => ranges.some(([lo, n]) => Number(a) >= lo && Number(a) + size <= lo + n));
  });
}

/** Bytes of `mappings` ("0x..+N") inside [gpa, gpa + size). */
function mappedIn(mappings: string[], gpa: number, size: number): number {
  return mappings
    .map((m) => m.split('+').map(Number) as [number, number])
    .filter(([iova, n]) => iova >= gpa && iova + n <= gpa + size)
    .reduce((sum, [, n]) => sum + n, 0);
}
const G = 0x40000000;

/** The frames the guest says landed in [gpa, gpa + size), and whether each had the right bytes. */
function landed(c: Change, gpa: number, size: number): { ok: number; bad: number } {
  let ok = 0;
  let bad = 0;
  for (const l of c.guestLines) {
    const m = /stream: frame \d+ landed in (0x[0-9a-f]+): bytes (ok|BAD)/.exec(l);
    if (!m || Number(m[1]) < gpa || Number(m[1]) >= gpa + size) continue;
    if (m[2] === 'ok') ok++;
    else bad++;
  }
  return { ok, bad };
}

// Per-user and per-process accounting on the type1 kernel; the compat kernel's iommufd beside it.
for (const [kernel, iommu, how] of [
  ['type1', 'legacy', 'user'],
  ['type1', 'iommufd', 'user'],
  ['type1', 'iommufd', 'opener'],
  ['compat', 'iommufd', 'user'],
] as const) {
  t.test(
    `memory changes under a frame stream: ${iommu}, ${how === 'user' ? 'uid 1000 under RLIMIT_MEMLOCK' : 'through pinion open (per-process)'} (${kernel} kernel)`,
    async (t) => {
      const { result: o, run } = await l1Json<Out>(kernel, 'remap-traffic', [iommu, how], { timeoutSec: 1200 });
      checkChangeRun(t, run.exitCode, o, ['add', 'grow', 'split', 'shrink', 'move', 'replace', 'overBudget', 'removeMoved', 'remove'], {
        guests: 'the guest',
        answerer: 'the VMM',
      });
      const by = Object.fromEntries(o.changes.map((c) => [c.name, c]));

      for (const c of o.changes) {
        t.comment(
          `${c.name}: HTTP ${c.status} in ${c.ms} ms; ops [${c.ops.join(', ')}]; charged ${c.charged.before / MiB} -> peak ${(c.charged.peak ?? 0) / MiB} -> ${c.charged.after / MiB} MiB; guest rx ${c.counters.before?.rx}->${c.counters.after?.rx} lost ${c.counters.before?.lost}->${c.counters.after?.lost}`,
        );
        t.equal(c.state, 'running', `${c.name}: the VM runs on`);
        t.equal(c.counters.after?.lost, c.counters.before?.lost, `${c.name}: no frame lost across it`);
        t.equal(c.counters.after?.bad, 0, `${c.name}: no frame with wrong bytes`);
        t.ok((c.counters.after?.rx ?? 0) > (c.counters.before?.rx ?? 0), `${c.name}: frames kept arriving`);
        if (c.name === 'overBudget') continue;
        t.equal(c.status, 200, `${c.name}: ${c.done ?? c.error}`);
        t.ok(c.guest?.acknowledged, `${c.name}: ${c.guest?.note}`);
        t.ok(c.charged.peak === null || c.charged.peak <= o.limit, `${c.name}: the peak stays within RLIMIT_MEMLOCK`);
        t.notOk(
          c.guestLines.some((l) => /no frame landed|BAD|not releasing|descriptor /.test(l)),
          `${c.name}: the guest moved its DMA and let go cleanly`,
        );
        if (iommu === 'legacy')
          t.notOk(
            c.ops.some((op) => op.startsWith('copy')),
            `${c.name}: type1 has no copy`,
          );
      }

      // The guest saw the NIC's DMA land in each new region, the first buffer at its start and the next at its end.
      const regionsOf: Record<string, [number, number][]> = {
        add: [[G, 16 * MiB]],
        grow: [[G, 32 * MiB]],
        split: [
          [G, 16 * MiB],
          [G + 16 * MiB, 16 * MiB],
        ],
        shrink: [[G + 16 * MiB, 8 * MiB]],
        move: [[0x50000000, 8 * MiB]],
        replace: [[G, 16 * MiB]],
      };
      for (const [name, list] of Object.entries(regionsOf))
        for (const [gpa, size] of list) {
          const l = landed(by[name]!, gpa, size);
          t.ok(l.ok >= 2 && l.bad === 0, `${name}: ${l.ok} frames landed in [0x${gpa.toString(16)}, +${size / MiB} MiB) with their bytes`);
        }

      // RAM is mapped in 2 MiB units (granule.rs): ops and mappings are checked by the range they cover.
      t.ok(opsWithin(by.add!.ops, [[G, 16 * MiB]], 'map'), `add: only maps, inside the new region (${by.add!.ops.length})`);
      t.equal(mappedIn(by.add!.mappings.after, G, 16 * MiB), 16 * MiB, 'add: the new region is mapped whole');
      t.equal(by.add!.charged.after - by.add!.charged.before, 16 * MiB, 'add: 16 MiB more charged');
      t.equal(by.grow!.charged.after - by.grow!.charged.before, 16 * MiB, 'grow: 16 MiB more');
      t.ok(
        opsWithin(by.grow!.ops, [[G + 16 * MiB, 16 * MiB]], 'map'),
        `grow: in place, only maps of the new 16 MiB (${by.grow!.ops.join(', ')})`,
      );
      t.same(
        by.grow!.mappings.after.filter((m) => mappedIn([m], G, 16 * MiB) > 0),
        by.grow!.mappings.before.filter((m) => mappedIn([m], G, 16 * MiB) > 0),
        'grow: what the region held stays mapped as it was',
      );
      t.equal(mappedIn(by.grow!.mappings.after, G, 32 * MiB), 32 * MiB, 'grow: mapped whole');
      t.equal(by.split!.charged.after, by.split!.charged.before, 'split: the same pages, charged once');
      t.same(by.split!.mappings.after, by.split!.mappings.before, 'split: no mapping unmapped or made (the units stay)');
      t.equal(by.shrink!.charged.before - by.shrink!.charged.after, 8 * MiB, 'shrink: 8 MiB less');
      t.ok(
        opsWithin(by.shrink!.ops, [[G + 24 * MiB, 8 * MiB]], 'unmap'),
        `shrink: only unmaps, inside the cut-off 8 MiB (${by.shrink!.ops.join(', ')})`,
      );
      t.equal(mappedIn(by.shrink!.mappings.after, G + 16 * MiB, 8 * MiB), 8 * MiB, 'shrink: what is left stays mapped');
      t.equal(by.move!.charged.after, by.move!.charged.before, 'move: the same pages');
      t.ok(
        opsWithin(by.move!.ops, [
          [G + 16 * MiB, 8 * MiB],
          [0x50000000, 8 * MiB],
        ]),
        'move: ops only on the old and the new range',
      );
      t.equal(mappedIn(by.move!.mappings.after, 0x50000000, 8 * MiB), 8 * MiB, 'move: mapped at its new address');
      t.equal(mappedIn(by.move!.mappings.after, G + 16 * MiB, 8 * MiB), 0, 'move: and no more at the old one');
      t.equal(by.replace!.charged.after, by.replace!.charged.before, `replace (${o.replaceWith}): as many pages`);
      t.ok(
        by.replace!.regions.after.some((r) => r.startsWith(`ram@0x40000000 0x40000000+${16 * MiB} ${o.replaceWith} `)),
        'replace: the new backend',
      );

      const ob = by.overBudget!;
      t.equal(ob.status, 409, `over the budget: refused (${ob.error})`);
      t.match(ob.error, /locked|RLIMIT_MEMLOCK|budget/, 'with the numbers and the limit');
      t.same(ob.mappings.after, ob.mappings.before, 'over the budget: the DMA map is unchanged');
      t.same(ob.regions.after, ob.regions.before, 'and the memory map');
      t.equal(ob.charged.after, ob.charged.before, 'and the charge');
      t.notOk(ob.guest, 'nothing was told to the guest');

      for (const [name, gpa, size] of [
        ['removeMoved', '0x50000000', 8 * MiB],
        ['remove', '0x40000000', 16 * MiB],
      ] as const) {
        const c = by[name]!;
        t.match(c.guest?.events, [{ kind: 'remove-requested', gpa, size, outcome: 'acked' }], `${name}: released by the guest first`);
        t.ok(
          c.guestLines.some((l) => l.endsWith(`stream: released ${gpa}+0x${size.toString(16)}`)),
          `${name}: the guest says so`,
        );
        t.equal(c.charged.before - c.charged.after, size, `${name}: its charge given back`);
        t.notOk(
          c.regions.after.some((r) => r.includes(` ${gpa}+`)),
          `${name}: gone from the map`,
        );
      }
      t.same(by.remove!.mappings.after, by.add!.mappings.before, 'the DMA map ends as it began');

      const f = o.frames;
      t.same(
        [f.received, f.first, f.last, f.lost],
        [f.sent, 0, f.sent - 1, 0],
        `every one of the peer's ${f.sent} frames received, in order`,
      );
      t.equal(o.end.done?.bad, 0, 'no frame with wrong bytes');
      t.equal(o.end.done?.landfail, 0, 'no region where frames did not land');
      t.ok((o.end.done?.inregion ?? 0) > 0, `${o.end.done?.inregion} frames received in added regions`);
      t.ok((o.end.done?.tx ?? 0) > 0 && o.end.done?.txerr === 0, `the guest sent ${o.end.done?.tx} frames`);
      t.ok(o.end.peerRx >= (o.end.done?.tx ?? 0), `the peer received them (${o.end.peerRx} frames)`);
      t.equal(o.end.status, 0, 'the guest exited 0 after the stop frame');
      t.same(o.dmarFaults, [], 'no DMA fault logged in L1');
      t.comment(`peer: ${f.sent} frames in ${o.end.peerMs} ms`);
    },
  );
}
