// Runs in L1: reports what the rig offers, then creates two VFs on the
// SR-IOV igb, binds them to vfio-pci and reports their VFIO nodes.
import { existsSync } from 'node:fs';
import { l1Report } from '../../rig/l1/report.js';
import { assignablePf, bindVfio, createVfs, vfioDeviceNodes } from '../../rig/l1/sysfs.js';

const before = l1Report();
const pf = assignablePf();
const vfs = createVfs(pf.bdf, 2).map((bdf) => bindVfio(bdf));
const groupNodes = vfs.map((v) => (v.iommuGroup ? existsSync(`/dev/vfio/${v.iommuGroup}`) : false));
console.log(JSON.stringify({ before, pf, vfs, groupNodes, vfioDevices: vfioDeviceNodes() }));
