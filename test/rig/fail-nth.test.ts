// Kernel fault injection over pin-core's sequences and the VMM's device
// attach (test/l1/fail-nth.ts), on both rig kernels: every injection point
// on the way is failed once, and each failure is a typed error or absorbed,
// leaves pin-core's table exact and nothing locked, pinned or open after
// close; L1's kernel logs no WARN or BUG (but one of the IRQ core's, told
// apart and counted) and the VF stays on vfio-pci.
import t from 'tap';
import { inRig, l1Script } from '../support/rig.js';
// Types only: the script itself runs in L1.
import type { Swept } from '../l1/fail-nth.js';

// The legacy container's VFIO_UPDATE_VADDR exists only on the type1 kernel (iommufd's compat container has none).
const COMMON = ['container', 'iommufd-mock', 'iommufd-vf', 'sync-plan', 'change-process', 'device-attach'];
const RUNS = { type1: [...COMMON, 'update-vaddr'], compat: COMMON };

for (const [kernel, SEQUENCES] of Object.entries(RUNS) as [keyof typeof RUNS, string[]][]) {
  t.test(`fail-nth over every sequence (${kernel} kernel)`, async (t) => {
    const run = await inRig(kernel, [process.execPath, l1Script('fail-nth'), ...SEQUENCES], {
      timeoutSec: 900,
      // Every device open and close resets the VF: hundreds of BAR unmaps and maps in one boot, which under
      // MTTCG made QEMU abort (iotlb_to_section) in one sweep of three.
      singleThreadTcg: true,
    });
    t.equal(run.exitCode, 0, run.stderr.toString().slice(-2000));
    const lines = run.stdout
      .toString()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Swept & { ms: number; kernelWarnings?: string[]; irqProcWarnings?: number; driver?: string });
    const last = lines.pop()!;
    t.same(
      lines.map((l) => l.sequence),
      SEQUENCES,
      'one result per sequence',
    );
    for (const s of lines) {
      t.comment(
        `${kernel} ${s.sequence}: ${s.points} injection points, ${s.failed} failed, ${s.absorbed} absorbed, ${(s.ms / 1000).toFixed(1)} s`,
      );
      t.ok(s.points >= 5, `${s.sequence}: ${s.points} injection points swept`);
      t.ok(s.failed > 0, `${s.sequence}: ${s.failed} of them failed the sequence`);
      t.same(s.problems, [], `${s.sequence}: every failure typed, the table exact, nothing left after close`);
      t.comment(`  errors: ${JSON.stringify(s.errors)}`);
    }
    // The hand-overs of a live update allocate nothing of their own: the kernel can fail them only by the
    // memlock charge (update-traffic's memlock case), never by an allocation.
    const handOver = (seq: string, op: RegExp) =>
      Object.keys(lines.find((l) => l.sequence === seq)?.errors ?? {}).filter((k) => op.test(k));
    if (SEQUENCES.includes('update-vaddr')) t.same(handOver('update-vaddr', /VADDR/), [], 'no injection point inside the VADDR hand-over');
    t.same(handOver('change-process', /CHANGE_PROCESS/), [], 'no injection point inside IOMMU_IOAS_CHANGE_PROCESS (one IOAS)');
    t.same(last.kernelWarnings, [], "no kernel WARN, BUG or oops in L1 but the IRQ core's /proc/irq entry WARN");
    t.comment(`the IRQ core's /proc/irq entry WARN (remove_proc_entry from unregister_irq_proc): ${last.irqProcWarnings} times`);
    t.equal(last.driver, 'vfio-pci', 'the VF is still on vfio-pci');
  });
}
