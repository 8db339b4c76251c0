// The IOMMU side of VFIO, one per VM and shared by all its devices: the
// legacy container (groups -> container -> device fd) or iommufd (cdev ->
// BIND_IOMMUFD -> ATTACH to the VM's one IOAS). Device code sees only this.
import type { DmaMapper } from '../../memory/dma-mapper.js';
import type { AccountingMode, IommuPath } from '../../memory/pin-core.js';
import type { HostDevice } from './host-device.js';

/** How the VMM reaches the IOMMU (`--iommu`): VFIO's container and groups, or iommufd and device cdevs. What serves it is an IommuPath. */
export type IommuKind = 'legacy' | 'iommufd';

export interface OpenedDevice {
  /** The VFIO device fd (region, IRQ and reset ioctls). */
  fd: number;
  /** Where it came from, for messages. */
  path: string;
  close(): void;
}

/** What a live update passes of a DMA space: its fd (and IOAS), and on the legacy path the groups' fds. */
export interface IommuImage {
  kind: IommuKind;
  fd: number;
  ioas?: number;
  groups: { group: string; fd: number }[];
}

export interface VfioIommu {
  readonly kind: IommuKind;
  /** The DMA space every device of the VM shares; guest RAM is mapped here once. */
  readonly dma: DmaMapper;
  openDevice(d: HostDevice): OpenedDevice;
  /** How the kernel will charge what this backend pins (see pin-core's accounting model). */
  accounting(): { path: IommuPath; mode: AccountingMode };
  /**
   * Why this DMA space cannot be handed to another process (live update),
   * with what would make it possible; undefined when the kernel allows it
   * (type1: VFIO_DMA_UNMAP_FLAG_VADDR then MAP_FLAG_VADDR in the new
   * process; iommufd: RAM mapped by file, IOMMU_IOAS_CHANGE_PROCESS).
   */
  handoverRefusal(): string | undefined;
  handoverImage(): IommuImage;
  /** A device fd another process opened on this space (live update): already bound and attached. */
  adoptDevice(d: HostDevice, fd: number): OpenedDevice;
  /** In the old process, the vCPUs paused: the mappings readied for another process (type1: their vaddrs invalidated). */
  letGo(): void;
  /**
   * The mappings' user addresses and pin charges made this process's (type1: VADDR re-map to this
   * process's RAM; iommufd: IOMMU_IOAS_CHANGE_PROCESS). The new process's step, and the old one's way back.
   */
  takeOver(): void;
  /**
   * In the new process, past the point of no return (it owns the VM): what takeOver() leaves until
   * then because the old process could not undo it after this one ended.
   */
  settle(): void;
  close(): void;
}
