// The rig boots both kernels and L1 offers what Pinion needs: /dev/kvm,
// /dev/iommu, /dev/vfio/vfio, an IOMMU group for the igb, and SR-IOV VFs that
// bind to vfio-pci and show up as cdevs. Also tells who serves the container.
import t from 'tap';
import { l1Json } from '../support/rig.js';
import type { l1Report } from '../../rig/l1/report.js';
import type { PciDevice } from '../../rig/l1/sysfs.js';

interface Probe {
  before: ReturnType<typeof l1Report>;
  pf: PciDevice | null;
  vfs: PciDevice[];
  groupNodes: boolean[];
  vfioDevices: string[];
}

for (const kernel of ['type1', 'compat'] as const) {
  t.test(`${kernel} kernel`, async (t) => {
    const { result: p, run } = await l1Json<Probe>(kernel, 'probe');
    t.equal(run.exitCode, 0, 'probe exits 0');
    t.comment(`L1 boot to command: ${run.bootMs} ms`);
    t.ok(p.before.devKvm, '/dev/kvm exists (nested SVM)');
    t.ok(p.before.devIommu, '/dev/iommu exists');
    t.ok(p.before.devVfioVfio, '/dev/vfio/vfio exists');
    t.equal(p.before.igb.length, 2, 'two igb NICs: the SR-IOV one and its peer');
    t.ok(
      p.before.igb.every((d) => d.iommuGroup !== null),
      'every igb has an IOMMU group',
    );
    t.ok(p.pf && p.pf.sriovTotalVfs >= 2, 'an igb PF offers SR-IOV VFs');
    t.equal(p.vfs.length, 2, 'two VFs created');
    for (const vf of p.vfs) {
      t.equal(vf.driver, 'vfio-pci', `${vf.bdf} bound to vfio-pci`);
      t.equal(vf.device, '0x10ca', `${vf.bdf} is an 82576 VF`);
      t.ok(vf.vfioCdev && p.vfioDevices.includes(vf.vfioCdev), `${vf.bdf} appears under /dev/vfio/devices (${vf.vfioCdev})`);
    }
    t.same(p.groupNodes, [true, true], 'each VF has its /dev/vfio/<group> node');
    t.not(p.vfs[0]?.iommuGroup, p.vfs[1]?.iommuGroup, 'each VF has its own group');

    // Who serves /dev/vfio/vfio is asked of the fd (only an iommufd answers
    // IOMMU_OPTION), and cross-checked against the running kernel's config.
    if (kernel === 'compat') {
      t.equal(p.before.containerServedBy, 'iommufd', 'compat: /dev/vfio/vfio is an iommufd');
      t.same([p.before.config.VFIO_CONTAINER, p.before.config.IOMMUFD_VFIO_CONTAINER], ['n', 'y']);
    } else {
      t.equal(p.before.containerServedBy, 'vfio-type1', "type1: /dev/vfio/vfio is VFIO's own container");
      t.same([p.before.config.VFIO_CONTAINER, p.before.config.IOMMUFD_VFIO_CONTAINER], ['y', 'n']);
    }
    t.equal(p.before.config.IOMMUFD_TEST, 'y', 'iommufd mock domain available');
  });
}
