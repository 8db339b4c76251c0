// The legacy path owns each group's fd from open (or adoption) to close: a
// group that fails before joining the container is closed, and its error
// names the ioctl and the group. No VFIO here: /dev/null stands in for a group.
import t from 'tap';
import { fstatSync } from 'node:fs';
import { LegacyIommu } from '../../src/devices/vfio/legacy-iommu.js';
import type { HostDevice } from '../../src/devices/vfio/host-device.js';
import { openPath } from '../../src/sys/libc.js';

const dev: HostDevice = {
  bdf: '0000:01:00.0',
  driver: 'vfio-pci',
  group: '7',
  groupMembers: [{ bdf: '0000:01:00.0', driver: 'vfio-pci' }],
  cdev: null,
  iommus: 1,
};

t.test('an adopted group fd that is no group fails at GET_STATUS, named, and is closed', async (t) => {
  const fd = openPath('/dev/null');
  const iommu = new LegacyIommu(undefined, { '7': fd }, '/nonexistent/vfio');
  t.throws(() => iommu.openDevice(dev), { name: 'SysError', code: 'ENOTTY', op: 'VFIO_GROUP_GET_STATUS', ctx: { path: '/dev/vfio/7' } });
  t.throws(() => fstatSync(fd), { code: 'EBADF' }, 'the group fd was closed');
  t.throws(() => iommu.dma, /no group yet/, 'no container was opened');
  iommu.close();
});
