// Runs in L1 booted with no IOMMU (pinion rig --iommu off): what the kernel
// offers then, and what `pinion run --device` says on each path. Prints one
// JSON object; test/rig/no-iommu.test.ts asserts on it.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { assignablePf, bindVfio, iommuGroups, pciDevice, vfioDeviceNodes } from '../../rig/l1/sysfs.js';
import { CLI, pinnedKiB, run } from './pinion.js';

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
out.runs = Object.fromEntries(
  (['iommufd', 'legacy', 'auto'] as const).map((iommu) => [iommu, run(['--device', pf, '--iommu', iommu, '--cmdline', 'exit=0'])]),
);
{
  const r = spawnSync(process.execPath, [CLI, 'open', '--user', '1000', '--device', pf, '--', 'true'], { encoding: 'utf8' });
  out.open = { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
out.pinnedAfter = pinnedKiB();
out.withoutDevice = run(['--cmdline', 'exit=0']);
console.log(JSON.stringify(out));
