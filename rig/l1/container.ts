// Tells who serves /dev/vfio/vfio by asking the fd, not the config: an fd
// from iommufd's compat layer is an iommufd and answers IOMMU_IOAS_ALLOC;
// VFIO's own container passes unknown ioctls to its IOMMU driver, and with
// none set yet returns EINVAL (drivers/vfio/container.c, vfio_fops_unl_ioctl).
import { closeFd, ioctl, openPath } from '../../src/sys/libc.js';
import { VFIO_API_VERSION, VFIO_GET_API_VERSION } from '../../src/sys/vfio.js';
import { IOMMU_DESTROY, IOMMU_IOAS_ALLOC, iommu_destroy, iommu_ioas_alloc } from '../../src/sys/iommufd.js';
import { SysError } from '../../src/sys/errors.js';

export type ContainerServer = 'iommufd' | 'vfio-type1';

export function containerServedBy(path = '/dev/vfio/vfio'): ContainerServer {
  const fd = openPath(path);
  try {
    const v = ioctl(fd, VFIO_GET_API_VERSION, 0, 'VFIO_GET_API_VERSION', { path });
    if (v !== VFIO_API_VERSION) throw new Error(`${path}: unexpected VFIO API version ${v}`);
    const b = iommu_ioas_alloc.make();
    try {
      ioctl(fd, IOMMU_IOAS_ALLOC, b, 'IOMMU_IOAS_ALLOC', { path });
    } catch (e) {
      if (e instanceof SysError && (e.code === 'EINVAL' || e.code === 'ENOTTY')) return 'vfio-type1';
      throw e;
    }
    ioctl(fd, IOMMU_DESTROY, iommu_destroy(iommu_ioas_alloc.out_ioas_id(b)), 'IOMMU_DESTROY', { path });
    return 'iommufd';
  } finally {
    closeFd(fd);
  }
}
