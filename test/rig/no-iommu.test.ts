// A host with no IOMMU: L1 booted without the emulated Intel IOMMU. Assigning
// a device is refused in one line naming the fix, on every path, and nothing
// is left pinned; KVM itself still runs guests.
import t from 'tap';
import { l1Json } from '../support/rig.js';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}
interface Out {
  pf: string;
  groups: number;
  iommus: string[];
  vfioBind: string;
  driverAfterBind: string | null;
  cdevs: string[];
  runs: Record<'iommufd' | 'legacy' | 'auto', Run>;
  open: Run;
  pinnedAfter: number;
  withoutDevice: Run;
}

t.test('no IOMMU: assignment refused in one line on every path, and by pinion open', async (t) => {
  const { result: o, run } = await l1Json<Out>('type1', 'no-iommu', [], { iommu: false, timeoutSec: 300 });
  t.equal(run.exitCode, 0, 'the L1 script ran to the end');
  t.equal(o.groups, 0, 'L1 has no IOMMU groups');
  t.same(
    o.iommus.filter((n) => !n.startsWith('iommufd_selftest')),
    [],
    `and no hardware IOMMU in /sys/class/iommu (${o.iommus.join(', ')})`,
  );
  t.not(o.vfioBind, 'bound', `the kernel refuses to bind vfio-pci (${o.vfioBind})`);
  t.same(o.cdevs, [], 'so there is no VFIO cdev');
  for (const [iommu, r] of [...Object.entries(o.runs), ['open', o.open] as const]) {
    t.equal(r.status, 1, `${iommu}: exit 1`);
    t.equal(r.stderr.trim().split('\n').length, 1, `${iommu}: one line`);
    t.match(
      r.stderr,
      new RegExp(
        `^pinion: ${o.pf.replace(/[.]/g, '\\.')} has no IOMMU group: the host has no IOMMU enabled \\(/sys/class/iommu lists none\\); turn on VT-d or AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on\\n$`,
      ),
      `${iommu}: says why and how to fix it`,
    );
    t.equal(r.stdout, '', `${iommu}: the guest never ran`);
  }
  t.equal(o.pinnedAfter, 0, 'nothing pinned');
  t.equal(o.withoutDevice.status, 0, 'a VM with no device still runs');
  t.match(o.withoutDevice.stdout, /pinion-guest: exit 0/);
});
