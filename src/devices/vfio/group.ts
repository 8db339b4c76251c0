// A VFIO group (/dev/vfio/N): the legacy path's unit of ownership. A group
// can join a container only when viable (every device in it bound to a VFIO
// driver or none); the container then owns the group's DMA mappings.
// The group's whole life is here, not in pin-core: its refusals need the sysfs view (members, holders) only TypeScript has.
import { closeFd, ioctl, openPath } from '../../sys/libc.js';
import {
  VFIO_GROUP_FLAGS_CONTAINER_SET,
  VFIO_GROUP_FLAGS_VIABLE,
  VFIO_GROUP_GET_DEVICE_FD,
  VFIO_GROUP_GET_STATUS,
  VFIO_GROUP_SET_CONTAINER,
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

  /** VFIO_GROUP_SET_CONTAINER: joins the container (pin-core's, by its fd). Closing the group leaves it. */
  joinContainer(containerFd: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(containerFd);
    ioctl(this.fd, VFIO_GROUP_SET_CONTAINER, b, 'VFIO_GROUP_SET_CONTAINER', { path: this.path });
  }

  /** Opens a device of the group (needs the group in a container with an IOMMU set).
   * Under iommufd's compat container this is when the device gets a domain. */
  deviceFd(bdf: string): number {
    return ioctl(this.fd, VFIO_GROUP_GET_DEVICE_FD, deviceName(bdf), 'VFIO_GROUP_GET_DEVICE_FD', { path: this.path });
  }

  /** The kernel unsets the container on the last close (no VFIO_GROUP_UNSET_CONTAINER, which fails while a device fd is open). */
  close(): void {
    closeFd(this.fd);
  }
}
