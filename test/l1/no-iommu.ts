// Runs in L1 booted with no IOMMU (pinion rig --iommu off): what the kernel
// offers then, and what `pinion run --device` says on each path. Prints one
// JSON object; test/rig/no-iommu.test.ts asserts on it.
import { readdirSync } from 'node:fs';
import { assignablePf, bindVfio, iommuGroups, pciDevice, vfioDeviceNodes } from '../../rig/l1/sysfs.js';
import { pinnedKiB, run } from './pinion.js';

const pf = assignablePf().bdf;
const out: Record<string, unknown> = { pf, groups: iommuGroups().size, iommus: readdirSync('/sys/class/iommu') };
// The kernel's side: vfio-pci refuses a device with no IOMMU group.
try {
  bindVfio(pf);
  out.vfioBind = 'bound';
} catch (e) {
  out.vfioBind = (e as Error).message;
}
out.driverAfterBind = pciDevice(pf).driver;
out.cdevs = vfioDeviceNodes();
out.runs = Object.fromEntries((['iommufd', 'legacy', 'auto'] as const).map((iommu) => [iommu, run(['--device', pf, '--iommu', iommu, '--cmdline', 'exit=0'])]));
out.pinnedAfter = pinnedKiB();
out.withoutDevice = run(['--cmdline', 'exit=0']);
console.log(JSON.stringify(out));
