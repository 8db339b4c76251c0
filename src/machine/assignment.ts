// Assigned devices: the one IOMMU backend all of a VM's devices share
// (legacy container or iommufd, chosen here), each device opened onto bus 0,
// the pre-flight of what pinning guest RAM will cost, and the DMA listener
// that then maps all of RAM before the guest can reach a device.
import { existsSync } from 'node:fs';
import { BarAllocator } from '../devices/pci/bar-allocator.js';
import type { BarSpace } from '../devices/pci/bar-allocator.js';
import { AssignError, type HostDevice } from '../devices/vfio/host-device.js';
import type { IommuKind, VfioIommu } from '../devices/vfio/iommu.js';
import { IommufdIommu } from '../devices/vfio/iommufd-iommu.js';
import { LegacyIommu } from '../devices/vfio/legacy-iommu.js';
import { VfioPciDevice, type VmPlatform } from '../devices/vfio/pci-device.js';
import { preflight, remapBudget, type PreflightResult, type RemapBudget } from '../memlock/preflight.js';
import { DmaListener } from '../memory/dma-listener.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { AccountingMode, Caps, IommuPath, Region, SyncResult } from '../memory/pin-core.js';
import type { UndoStack } from '../sys/undo.js';
import { IrqRouting } from '../vmm/irq.js';
import { trace } from '../vmm/trace.js';
import type { Platform } from './platform.js';

/** fds of the IOMMU side opened by a privileged opener (pinion open), adopted instead of opening the nodes. */
export interface IommuFds {
  iommufd?: number;
  /** cdev fds by BDF. */
  devices?: Record<string, number>;
  container?: number;
  /** Group fds by group number. */
  groups?: Record<string, number>;
}

export interface AssignOptions {
  /** Which VFIO IOMMU path: auto prefers iommufd cdevs when the kernel has them. */
  iommu: 'auto' | IommuKind;
  fds?: IommuFds;
  /** The opener command to suggest when per-user accounting refuses. */
  openerHint: string;
}

/** An assigned device as the guest sees it, for reports. */
export interface AssignedDevice {
  bdf: string;
  group: string | null;
  slot: number;
  resettable: boolean;
  /** The IOAPIC pin of its INTx, if it has one. */
  intxGsi: number | undefined;
  /** Which interrupt the guest runs it with now (vfio-pci runs one type at a time), and MSI-X's table size. */
  interrupts: { active: 'intx' | 'msi' | 'msix' | 'none'; msixVectors: number };
  bars: { bar: number; space: BarSpace; address: bigint; size: bigint; mapped: bigint }[];
}

/** The VM's DMA space as it stands. */
export interface DmaState {
  iommu: IommuKind;
  caps: Caps;
  /** What the IOMMU maps now. */
  mapped: Region[];
  /** The last change of the map that went through. */
  last: SyncResult | undefined;
  /** What the space charges now. */
  held: bigint;
  /** The most it may charge during a change; null: no limit applies. */
  budget: RemapBudget | null;
  preflight: PreflightResult;
}

export class Assignment {
  private constructor(
    readonly kind: IommuKind,
    private readonly iommu: VfioIommu,
    private readonly devices: readonly VfioPciDevice[],
    private readonly dma: DmaListener,
    private readonly preflight: PreflightResult,
    private readonly acc: { path: IommuPath; mode: AccountingMode },
  ) {}

  /**
   * Every host device onto the platform's bus 0 through one IOMMU backend, and the pre-flight of what
   * pinning RAM will cost: everything that can refuse the VM, before any page is pinned. mapRam() then
   * maps RAM.
   */
  static open(
    hosts: readonly HostDevice[],
    o: AssignOptions,
    memory: GuestMemory,
    platform: Platform,
    vmFd: number,
    undo: UndoStack,
  ): Assignment {
    const kind = iommuKind(o, hosts);
    const iommu = undo.own(openIommu(kind, o.fds), (i) => i.close());
    trace(`IOMMU backend open (${kind})`);
    const env: VmPlatform = {
      memory,
      pio: platform.pio,
      mmio: platform.mmio,
      routing: new IrqRouting(vmFd),
      vmFd,
      bars: new BarAllocator(),
    };
    const devices = hosts.map((h) => {
      const slot = platform.pci.freeSlot();
      const dev = undo.own(VfioPciDevice.open(h, iommu, env, slot), (d) => d.close());
      platform.pci.add(slot << 3, dev);
      trace(`device ${h.bdf} open`);
      return dev;
    });
    // Refuse before the first page is pinned if the kernel would refuse part way.
    const acc = iommu.accounting();
    const ramBytes = memory
      .list()
      .filter((r) => r.kind === 'ram')
      .reduce((n, r) => n + r.size, 0n);
    const checked = preflight(acc.path, acc.mode, ramBytes, { openerHint: o.openerHint });
    const dma = new DmaListener(iommu.dma, () => remapBudget(acc.path, acc.mode));
    return new Assignment(kind, iommu, devices, dma, checked, acc);
  }

  /** All of RAM DMA-mapped, and the IOMMU following the memory map from here on. */
  mapRam(memory: GuestMemory, undo: UndoStack): void {
    // Off the map before the devices close and the backend unmaps everything; registered first, as a
    // refused pre-map leaves part of RAM mapped.
    undo.defer(() => memory.removeListener(this.dma));
    memory.addListener(this.dma);
  }

  describe(): AssignedDevice[] {
    return this.devices.map((d) => ({
      bdf: d.host.bdf,
      group: d.host.group,
      slot: d.slot,
      resettable: d.resettable,
      intxGsi: d.intxGsi,
      interrupts: d.interrupts,
      bars: d.describe(),
    }));
  }

  /** Why the devices cannot go to another process in a live update (the IOMMU backend says what its kernel path needs). */
  handoverRefusal(): string {
    const backend = this.iommu.handoverRefusal();
    if (backend) return backend;
    // Hook: the devices' part (config overlay, BARs, MSI-X, INTx, irqfds) and the backend's VADDR / CHANGE_PROCESS steps.
    return `hand-over of assigned devices (${this.devices.map((d) => d.host.bdf).join(', ')}) is not implemented yet; only VMs without --device can be updated live`;
  }

  /** What the IOMMU maps now, without the budget (which reads every process's charges in per-user mode). */
  dmaMappings(): DmaState['mapped'] {
    return this.dma.mapper.mapped();
  }

  dmaState(): DmaState {
    return {
      iommu: this.kind,
      caps: this.iommu.dma.caps,
      mapped: this.dma.mapper.mapped(),
      last: this.dma.last,
      held: this.dma.held,
      budget: remapBudget(this.acc.path, this.acc.mode),
      preflight: this.preflight,
    };
  }
}

function iommuKind(o: AssignOptions, hosts: readonly HostDevice[]): IommuKind {
  if (o.fds?.iommufd !== undefined) return 'iommufd';
  if (o.fds?.container !== undefined) return 'legacy';
  return chooseIommu(o.iommu, hosts);
}

function chooseIommu(want: 'auto' | IommuKind, hosts: readonly HostDevice[]): IommuKind {
  if (want === 'iommufd' && !existsSync('/dev/iommu'))
    throw new AssignError('--iommu iommufd: this kernel has no /dev/iommu (CONFIG_IOMMUFD); use --iommu legacy');
  if (want === 'legacy' && !existsSync('/dev/vfio/vfio'))
    throw new AssignError(
      '--iommu legacy: this kernel has no /dev/vfio/vfio (neither VFIO_CONTAINER nor IOMMUFD_VFIO_CONTAINER); use --iommu iommufd',
    );
  if (want !== 'auto') return want;
  return existsSync('/dev/iommu') && hosts.every((h) => h.cdev) ? 'iommufd' : 'legacy';
}

function openIommu(kind: IommuKind, fds: IommuFds | undefined): VfioIommu {
  return kind === 'iommufd' ? IommufdIommu.open({ fd: fds?.iommufd }, fds?.devices) : new LegacyIommu(fds?.container, fds?.groups);
}
