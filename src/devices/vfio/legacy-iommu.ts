// The legacy path: one container (/dev/vfio/vfio) per VM; each device's group
// joins it, the first one lets the container take an IOMMU type (type1v2,
// else type1), and the device fd comes from its group.
import { DmaMapper } from '../../memory/dma-mapper.js';
import type { IommuPath } from '../../memory/pin-core.js';
import { SysError } from '../../sys/errors.js';
import { closeFd } from '../../sys/libc.js';
import { VfioGroup } from './group.js';
import { AssignError, type HostDevice } from './host-device.js';
import type { IommuImage, OpenedDevice, VfioIommu } from './iommu.js';
import { holders } from './holders.js';

export class LegacyIommu implements VfioIommu {
  readonly kind = 'legacy' as const;
  private mapper: DmaMapper | undefined;
  /** Groups stay in the container until it closes: the last one leaving would drop its IOMMU type. */
  private readonly groups = new Map<string, VfioGroup>();

  /** `containerFd` and `groupFds` (by group number): opened by a privileged opener, adopted here. */
  constructor(
    private readonly containerFd?: number,
    private readonly groupFds: Record<string, number> = {},
    private readonly containerPath = '/dev/vfio/vfio',
  ) {}

  /** The container and groups another process set up (live update): the IOMMU type is set, the groups are in. */
  static inherit(containerFd: number, groups: { group: string; fd: number }[]): LegacyIommu {
    const l = new LegacyIommu();
    try {
      for (const g of groups) l.groups.set(`/dev/vfio/${g.group}`, VfioGroup.adopt(`/dev/vfio/${g.group}`, g.fd));
      l.mapper = DmaMapper.inheritLegacy(containerFd);
    } catch (e) {
      l.close();
      throw e;
    }
    return l;
  }

  get dma(): DmaMapper {
    if (!this.mapper) throw new Error('the container has no group yet: open a device first');
    return this.mapper;
  }

  openDevice(d: HostDevice): OpenedDevice {
    const path = `/dev/vfio/${d.group}`;
    let g = this.groups.get(path);
    if (!g) {
      let group: VfioGroup;
      try {
        const given = d.group ? this.groupFds[d.group] : undefined;
        group = given === undefined ? VfioGroup.open(path) : VfioGroup.adopt(path, given);
      } catch (e) {
        if (e instanceof SysError && e.code === 'EBUSY')
          throw new AssignError(`${d.bdf} is in use: its group ${path} is open in another process${holders(path)}`);
        throw e;
      }
      try {
        if (!group.status().viable)
          throw new AssignError(
            `IOMMU group ${d.group} of ${d.bdf} is not viable: every device in it must be bound to vfio-pci (members: ${d.groupMembers.map((m) => `${m.bdf} (${m.driver ?? 'no driver'})`).join(', ')})`,
          );
        if (!this.mapper)
          this.mapper = DmaMapper.legacy((c) => group.joinContainer(c), {
            containerPath: this.containerPath,
            containerFd: this.containerFd,
          });
        else group.joinContainer(this.mapper.fd);
      } catch (e) {
        group.close();
        throw e;
      }
      g = group;
      this.groups.set(path, g);
    }
    const fd = g.deviceFd(d.bdf);
    return { fd, path, close: () => closeFd(fd) };
  }

  accounting(): { path: IommuPath; mode: 'per-process' } {
    return { path: this.dma.caps.path, mode: 'per-process' };
  }

  handoverRefusal(): string | undefined {
    const caps = this.dma.caps;
    // The compat container refuses the VADDR flags (EINVAL; conformance.expected.ts) and offers no CHANGE_PROCESS.
    if (caps.path === 'compat')
      return 'the DMA space is the iommufd compat container (/dev/vfio/vfio served by iommufd), which refuses VFIO_DMA_MAP_FLAG_VADDR; use --iommu iommufd (device cdevs), or a kernel with CONFIG_VFIO_CONTAINER';
    if (!caps.updateVaddr)
      return `the ${caps.containerType ?? 'type1'} container lacks VFIO_UPDATE_VADDR; use --iommu iommufd, or a kernel whose type1 has it (Linux 5.12+)`;
    return undefined;
  }

  handoverImage(): IommuImage {
    return {
      kind: 'legacy',
      fd: this.dma.fd,
      groups: [...this.groups.values()].map((g) => ({ group: g.path.replace('/dev/vfio/', ''), fd: g.fd })),
    };
  }

  adoptDevice(d: HostDevice, fd: number): OpenedDevice {
    const path = `/dev/vfio/${d.group}`;
    if (!this.groups.has(path)) throw new AssignError(`${d.bdf}: its group ${path} was not handed over with it`);
    return { fd, path, close: () => closeFd(fd) };
  }

  letGo(): void {
    this.dma.invalidateVaddrs();
  }

  takeOver(): void {
    this.dma.setVaddrs();
  }

  settle(): void {
    // The VADDR re-map moved everything at takeOver().
  }

  close(): void {
    this.mapper?.close();
    this.mapper = undefined;
    for (const group of this.groups.values()) group.close();
    this.groups.clear();
  }
}
