// Kernel ABI values pinned to the numbers in the uAPI headers, and the error
// shape every kernel failure carries.
import t from 'tap';
import { IOMMU_DESTROY, IOMMU_IOAS_ALLOC, IOMMU_IOAS_MAP } from '../../src/sys/iommufd.js';
import { VFIO_CHECK_EXTENSION, VFIO_GET_API_VERSION, VFIO_SET_IOMMU } from '../../src/sys/vfio.js';
import { SysError } from '../../src/sys/errors.js';
import { ioctl, openPath } from '../../src/sys/libc.js';

t.test('ioctl numbers match linux/vfio.h and linux/iommufd.h', async (t) => {
  t.equal(VFIO_GET_API_VERSION, 15204);
  t.equal(VFIO_CHECK_EXTENSION, 15205);
  t.equal(VFIO_SET_IOMMU, 15206);
  t.equal(IOMMU_DESTROY, 15232);
  t.equal(IOMMU_IOAS_ALLOC, 15233);
  t.equal(IOMMU_IOAS_MAP, 15237);
});

t.test('SysError keeps errno name, operation, path, IOVA and size', async (t) => {
  const e = new SysError(12, 'IOMMU_IOAS_MAP', { path: '/dev/iommu', iova: 0x100000n, size: 0x2000n });
  t.equal(e.code, 'ENOMEM');
  t.equal(e.message, 'IOMMU_IOAS_MAP failed: ENOMEM (path /dev/iommu, iova 0x100000, size 0x2000)');
});

t.test('a real failing syscall comes back as SysError with the errno name', async (t) => {
  t.throws(() => openPath('/nonexistent/pinion'), {
    name: 'SysError',
    code: 'ENOENT',
    message: /open failed: ENOENT \(path \/nonexistent\/pinion\)/,
  });
  const fd = openPath('/dev/null');
  t.throws(() => ioctl(fd, VFIO_GET_API_VERSION, 0, 'VFIO_GET_API_VERSION', { path: '/dev/null' }), { code: 'ENOTTY' });
});
