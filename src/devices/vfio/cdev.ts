// A VFIO device opened through its cdev (/dev/vfio/devices/vfioN) and bound
// to an iommufd: the iommufd path. Binding charges nothing; attaching to an
// IOAS gives the device a domain, which is when iommufd pins what the IOAS
// already maps (and charges it).
import { closeFd, ioctl, openPath } from '../../sys/libc.js';
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_device_detach_iommufd_pt,
} from '../../sys/vfio.js';

export class VfioCdev {
  private constructor(
    readonly path: string,
    readonly fd: number,
    readonly devId: number,
  ) {}

  /** Opens the cdev and binds it to `iommufd` (the device is usable only after the bind). */
  static bind(path: string, iommufd: number): VfioCdev {
    return VfioCdev.bindOpened(openPath(path), path, iommufd);
  }

  /** Binds a cdev fd opened elsewhere (a privileged opener); takes ownership of it. */
  static bindOpened(fd: number, path: string, iommufd: number): VfioCdev {
    try {
      const b = vfio_device_bind_iommufd.make(iommufd);
      ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, b, 'VFIO_DEVICE_BIND_IOMMUFD', { path });
      return new VfioCdev(path, fd, vfio_device_bind_iommufd.out_devid(b));
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  /** Attaches to an IOAS (or HWPT); returns the hwpt id the kernel chose. */
  attach(ptId: number): number {
    const b = vfio_device_attach_iommufd_pt.make(ptId);
    ioctl(this.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, b, 'VFIO_DEVICE_ATTACH_IOMMUFD_PT', { path: this.path });
    return vfio_device_attach_iommufd_pt.pt_id(b);
  }

  detach(): void {
    ioctl(this.fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, vfio_device_detach_iommufd_pt(), 'VFIO_DEVICE_DETACH_IOMMUFD_PT', { path: this.path });
  }

  /** Closing unbinds (and detaches) the device. */
  close(): void {
    closeFd(this.fd);
  }
}
