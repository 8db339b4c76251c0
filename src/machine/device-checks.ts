// The host devices to assign, checked in sysfs before anything is opened or
// pinned: bound to vfio-pci, behind an IOMMU, in a viable group, each once.
import { AssignError, checkAssignable, hostDevice, type HostDevice } from '../devices/vfio/host-device.js';

export function checkDevices(bdfs: readonly string[]): HostDevice[] {
  const hosts = bdfs.map((bdf) => hostDevice(bdf));
  hosts.forEach(checkAssignable);
  const dupe = hosts.find((h, i) => hosts.findIndex((x) => x.bdf === h.bdf) !== i);
  if (dupe) throw new AssignError(`${dupe.bdf} is given twice; each --device is one device`);
  return hosts;
}
