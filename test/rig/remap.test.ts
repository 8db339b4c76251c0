// A transient remap of VM1's memory while VM2 (same user) runs, on each
// accounting mode: the same backing moved to a new guest address, then a new
// larger backing in its place. The guest memory map is the one change; KVM
// memslots and the IOMMU follow through the listeners, within the budget the
// accounting model gives.
import t from 'tap';
import { l1Json } from '../support/rig.js';

interface Attempt {
  ok: boolean;
  ops?: string[];
  peakCharged?: number;
  error?: string;
  map: string[];
}
interface Scenario {
  vm1: { charged: { vmLckKiB: number; vmPinKiB: number }; move: Attempt; replace: Attempt; stillRunning: boolean; end: { kind: string } };
  vm1Stderr: string;
  vm2Status: number;
}
type Out = Record<'type1' | 'perUser' | 'perProcess', Scenario>;

const MiB = 1024 * 1024;
/** The DMA map as remap-vm.ts prints it: each region in its 2 MiB units (pin-core's granule.rs). */
const units = (gpa: number, size: number): string[] =>
  Array.from({ length: size / (2 * MiB) }, (_, i) => `0x${(gpa + i * 2 * MiB).toString(16)}+0x${(2 * MiB).toString(16)}`);
const times = (n: number, op: string): string[] => Array<string>(n).fill(op);

t.test('transient remap while another VM of the same user runs (type1 kernel)', async (t) => {
  const { result: o, run } = await l1Json<Out>('type1', 'remap', [], { timeoutSec: 900 });
  t.equal(run.exitCode, 0, 'the L1 script ran to the end');
  const old = [...units(0, 64 * MiB), ...units(0x8000_0000, 16 * MiB)];

  for (const [k, name] of [
    ['type1', 'type1 (limit 96 MiB)'],
    ['perProcess', 'iommufd per-process through pinion open (limit 96 MiB)'],
    ['perUser', 'iommufd per-user (limit 150 MiB, VM2 holds 64 MiB)'],
  ] as const) {
    t.test(name, async (t) => {
      const s = o[k];
      t.equal(s.vm1Stderr, '', 'VM1 reported nothing wrong');
      t.ok(s.vm1.move.ok, `moving the same backing succeeds (${s.vm1.move.ops?.join(', ')})`);
      t.same(s.vm1.move.map, old, 'the IOMMU maps RAM and the region at its new address');
      if (k === 'type1')
        t.same(
          [s.vm1.move.ops, s.vm1.move.peakCharged],
          [[...times(8, 'map'), ...times(8, 'unmap')], 96 * MiB],
          'type1 cannot copy: each unit mapped first, within the 96 MiB limit',
        );
      else
        t.same(
          [s.vm1.move.ops, s.vm1.move.peakCharged],
          [[...times(8, 'copy'), ...times(8, 'unmap')], 80 * MiB],
          'iommufd copies unit by unit: no second charge',
        );
      if (k === 'perUser') {
        t.notOk(s.vm1.replace.ok, 'a new, larger backing does not fit in what VM2 left');
        t.match(
          s.vm1.replace.error,
          /^DmaError: DMA plan refused: new memory map needs 0x1000000 more locked bytes, only 0x600000 available \(this VM holds 80 MiB; the limit is RLIMIT_MEMLOCK 150 MiB, checked against user 1000's total, of which other processes hold 64 MiB\); the DMA map is unchanged$/,
          'refused by the planner before anything was unmapped, with the numbers and the limit that decides',
        );
        t.same(s.vm1.replace.map, old, 'the old mapping stays');
      } else {
        t.ok(s.vm1.replace.ok, `a new, larger backing fits (${s.vm1.replace.ops?.join(', ')})`);
        t.same(s.vm1.replace.map, [...units(0, 64 * MiB), ...units(0x8000_0000, 32 * MiB)]);
        // The tail is new IOVA; each old unit goes just before its replacement, so at most 2 MiB is unmapped at a time.
        t.same(s.vm1.replace.ops, [...times(8, 'map'), ...Array.from({ length: 8 }, () => ['unmap', 'map']).flat()]);
      }
      t.ok(s.vm1.stillRunning, 'VM1 kept running through the remaps');
      t.equal(s.vm1.end.kind, 'stopped');
      t.equal(s.vm2Status, 143, 'VM2 ran until stopped');
    });
  }
  t.same(
    [o.perProcess.vm1.charged.vmLckKiB, o.perUser.vm1.charged.vmLckKiB, o.type1.vm1.charged.vmLckKiB],
    [80 * 1024, 0, 80 * 1024],
    'VM1 charged 80 MiB: VmLck per process, nothing per process under per-user',
  );
});
