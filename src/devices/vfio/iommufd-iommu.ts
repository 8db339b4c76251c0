// The iommufd path: one iommufd and one IOAS per VM; each device's cdev binds
// to the iommufd and attaches to the IOAS (the kernel picks the hw pagetable).
import { DmaMapper } from '../../memory/dma-mapper.js';
import { pinCore, type AccountingMode, type IommuPath } from '../../memory/pin-core.js';
import { SysError } from '../../sys/errors.js';
import { VfioCdev } from './cdev.js';
import { AssignError, type HostDevice } from './host-device.js';
import type { IommuImage, OpenedDevice, VfioIommu } from './iommu.js';
import { closeFd } from '../../sys/libc.js';
import { holders } from './holders.js';

export class IommufdIommu implements VfioIommu {
  readonly kind = 'iommufd' as const;
  private mode: AccountingMode | undefined;
  private constructor(
    readonly dma: DmaMapper,
    private readonly deviceFds: Record<string, number>,
  ) {}

  /** `fd`: an iommufd opened (and perhaps set to per-process accounting) by a privileged opener. `deviceFds`: cdevs it opened, by BDF. */
  static open(opts: { path?: string; fd?: number } = {}, deviceFds: Record<string, number> = {}): IommufdIommu {
    return new IommufdIommu(DmaMapper.iommufd(opts), deviceFds);
  }

  /** The iommufd and IOAS another process set up (live update), its devices bound and attached. */
  static inherit(fd: number, ioasId: number): IommufdIommu {
    return new IommufdIommu(DmaMapper.inheritIommufd(fd, ioasId), {});
  }

  accounting(): { path: IommuPath; mode: AccountingMode } {
    // Set by the opener before this process had the fd, never here: read once.
    this.mode ??= pinCore.iommufdOption(this.dma.handle, 'rlimit_mode', null) === 1n ? 'per-process' : 'per-user';
    return { path: this.dma.caps.path, mode: this.mode };
  }

  openDevice(d: HostDevice): OpenedDevice {
    if (!d.cdev)
      throw new AssignError(
        `${d.bdf} has no VFIO cdev (/dev/vfio/devices/vfioN): this kernel lacks CONFIG_VFIO_DEVICE_CDEV; use --iommu legacy`,
      );
    const given = this.deviceFds[d.bdf];
    // A device another VMM holds fails to bind (EBUSY, or EINVAL once that one has bound it): say who.
    const held = given === undefined ? holders(d.cdev, `/dev/vfio/${d.group}`) : '';
    if (held) throw new AssignError(`${d.bdf} is in use by another process${held}`);
    let c: VfioCdev;
    try {
      c = given === undefined ? VfioCdev.bind(d.cdev, this.dma.fd) : VfioCdev.bindOpened(given, d.cdev, this.dma.fd);
    } catch (e) {
      if (e instanceof SysError && e.code === 'EBUSY') throw new AssignError(`${d.bdf} is in use by another process`);
      throw e;
    }
    try {
      c.attach(this.dma.ioasId);
    } catch (e) {
      c.close();
      throw e;
    }
    return { fd: c.fd, path: d.cdev, close: () => c.close() };
  }

  handoverRefusal(): string | undefined {
    // IOMMU_IOAS_CHANGE_PROCESS moves only mappings made by file (iommufd/ioas.c refuses user addresses).
    const byAddress = this.dma.mapped().find((m) => !('fd' in m.backing));
    if (byAddress)
      return `the IOAS maps 0x${byAddress.iova.toString(16)} by address, not by file, and IOMMU_IOAS_CHANGE_PROCESS moves only file mappings; use --memory-backend memfd`;
    return undefined;
  }

  handoverImage(): IommuImage {
    return { kind: 'iommufd', fd: this.dma.fd, ioas: this.dma.ioasId, groups: [] };
  }

  adoptDevice(d: HostDevice, fd: number): OpenedDevice {
    return { fd, path: d.cdev ?? d.bdf, close: () => closeFd(fd) };
  }

  letGo(): void {
    // The pins stay charged to this process until the next one takes them (CHANGE_PROCESS).
  }

  /**
   * Per user, the pins move here now, where a refusal can still hand them back. Per process they move
   * at settle(): charged to a process that then ends, they could not move back (its mm is gone, and
   * CHANGE_PROCESS uncharging it fails with EINVAL and a WARN, iommufd/pages.c update_mm_locked_vm).
   */
  takeOver(): void {
    if (this.accounting().mode === 'per-user') this.dma.changeProcess();
  }

  settle(): void {
    if (this.accounting().mode === 'per-process') this.dma.changeProcess();
  }

  close(): void {
    this.dma.close();
  }
}
