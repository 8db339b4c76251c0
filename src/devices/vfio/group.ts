// A VFIO group (/dev/vfio/N): the legacy path's unit of ownership. A group
// can join a container only when viable (every device in it bound to a VFIO
// driver or none); the container then owns the group's DMA mappings.
import { closeFd, ioctl, openPath } from '../../sys/libc.js';
import {
  VFIO_GROUP_FLAGS_CONTAINER_SET,
  VFIO_GROUP_FLAGS_VIABLE,
  VFIO_GROUP_GET_DEVICE_FD,
  VFIO_GROUP_GET_STATUS,
  deviceName,
  vfio_group_status,
} from '../../sys/vfio.js';

export interface GroupStatus {
  viable: boolean;
  containerSet: boolean;
}

export class VfioGroup {
  private constructor(
    readonly path: string,
    readonly fd: number,
  ) {}

  static open(path: string): VfioGroup {
    return new VfioGroup(path, openPath(path));
  }

  /** A group fd opened elsewhere (a privileged opener); takes ownership of it. */
  static adopt(path: string, fd: number): VfioGroup {
    return new VfioGroup(path, fd);
  }

  status(): GroupStatus {
    const b = vfio_group_status.make();
    ioctl(this.fd, VFIO_GROUP_GET_STATUS, b, 'VFIO_GROUP_GET_STATUS', { path: this.path });
    const f = vfio_group_status.flags(b);
    return { viable: (f & VFIO_GROUP_FLAGS_VIABLE) !== 0, containerSet: (f & VFIO_GROUP_FLAGS_CONTAINER_SET) !== 0 };
  }

  /** Opens a device of the group (needs the group in a container with an IOMMU set).
   * Under iommufd's compat container this is when the device gets a domain. */
  deviceFd(bdf: string): number {
    return ioctl(this.fd, VFIO_GROUP_GET_DEVICE_FD, deviceName(bdf), 'VFIO_GROUP_GET_DEVICE_FD', { path: this.path });
  }

  close(): void {
    closeFd(this.fd);
  }
}
