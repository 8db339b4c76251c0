// Assigned devices: the one IOMMU backend all of a VM's devices share
// (legacy container or iommufd, chosen here), each device opened onto bus 0,
// the pre-flight of what pinning guest RAM will cost, and the DMA listener
// that then maps all of RAM before the guest can reach a device.
import { existsSync } from 'node:fs';
import { BarAllocator } from '../devices/pci/bar-allocator.js';
import type { BarSpace } from '../devices/pci/bar-allocator.js';
import { AssignError, type HostDevice } from '../devices/vfio/host-device.js';
import type { IommuImage, IommuKind, VfioIommu } from '../devices/vfio/iommu.js';
import type { AssignedState, BarAt } from '../devices/vfio/saved.js';
import { dmaImage, dmaRegions, type DmaImage } from './dma-handover.js';
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

/** What a live update passes of the assigned devices: the DMA space, each device's fd, slot and BARs, the DMA table, the wired eventfds. */
export interface DevicesImage {
  iommu: IommuImage;
  /** Each device's fd, slot, and BARs where the guest had them when the image was taken. */
  list: { bdf: string; fd: number; slot: number; bars: BarAt[] }[];
  dma: DmaImage[];
  /** The MSI-X vectors' eventfds (vfio-pci triggers them; the next VM's irqfds take them). */
  eventfds: number[];
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
    const env = vmPlatform(memory, platform, vmFd);
    const devices = hosts.map((h) => {
      const slot = platform.pci.freeSlot();
      const dev = undo.own(VfioPciDevice.open(h, iommu, env, slot), (d) => d.close());
      platform.pci.add(slot << 3, dev);
      trace(`device ${h.bdf} open`);
      return dev;
    });
    // Refuse before the first page is pinned if the kernel would refuse part way.
    return Assignment.checked(kind, iommu, devices, memory, o.openerHint);
  }

  /** The assignment with its pre-flight (what pinning all of RAM costs, refused here if the kernel would refuse) and its DMA listener. */
  private static checked(
    kind: IommuKind,
    iommu: VfioIommu,
    devices: VfioPciDevice[],
    memory: GuestMemory,
    openerHint: string,
    enforce = true,
  ): Assignment {
    const acc = iommu.accounting();
    const ramBytes = memory
      .list()
      .filter((r) => r.kind === 'ram')
      .reduce((n, r) => n + r.size, 0n);
    const checked = preflight(acc.path, acc.mode, ramBytes, { openerHint, enforce });
    const dma = new DmaListener(iommu.dma, () => remapBudget(acc.path, acc.mode));
    return new Assignment(kind, iommu, devices, dma, checked, acc);
  }

  /**
   * The devices another process hands over (live update): its DMA space and device fds taken as they
   * are (nothing reset, bound, attached or mapped), the DMA table seeded with what the kernel maps,
   * named by this process's RAM. restore() then takes the mappings and interrupts, with the guest paused.
   */
  static adopt(
    hosts: readonly HostDevice[],
    image: DevicesImage,
    memory: GuestMemory,
    platform: Platform,
    vmFd: number,
    backingFd: (backing: number) => number,
    undo: UndoStack,
    enforcePreflight = true,
  ): Assignment {
    const { iommu: im } = image;
    const iommu = undo.own(
      im.kind === 'iommufd' ? IommufdIommu.inherit(im.fd, im.ioas ?? -1) : LegacyIommu.inherit(im.fd, im.groups),
      (i) => i.close(),
    );
    const env = vmPlatform(memory, platform, vmFd);
    const devices = image.list.map((d) => {
      const h = hosts.find((x) => x.bdf === d.bdf);
      if (!h) throw new AssignError(`the hand-over has ${d.bdf}, which this VM's config does not assign`);
      const dev = undo.own(VfioPciDevice.adopt(h, iommu.adoptDevice(h, d.fd), env, d), (x) => x.close());
      platform.pci.add(d.slot << 3, dev);
      return dev;
    });
    iommu.dma.seed(
      dmaRegions(
        image.dma,
        memory.list().filter((r) => r.kind === 'ram'),
        backingFd,
      ),
    );
    return Assignment.checked(
      im.kind,
      iommu,
      devices,
      memory,
      'pinion open --user <uid> --device <BDF> -- pinion run ...',
      enforcePreflight,
    );
  }

  /** What the next process needs of the devices before the pause; RAM files by index (`backingOf`). */
  handoverImage(memory: GuestMemory, backingOf: (fd: number) => number): DevicesImage {
    const ram = memory.list().filter((r) => r.kind === 'ram');
    return {
      iommu: this.iommu.handoverImage(),
      list: this.devices.map((d) => ({ bdf: d.host.bdf, fd: d.fd, slot: d.slot, bars: d.barsAt() })),
      dma: dmaImage(this.dma.mapper.mapped(), ram, backingOf),
      eventfds: this.devices.flatMap((d) => d.eventfds()),
    };
  }

  /** With the vCPUs paused: no interrupt reaches this VM any more, and the DMA space is ready to go (type1: vaddrs invalidated). */
  freeze(): void {
    for (const d of this.devices) d.freeze();
    this.iommu.letGo();
  }

  save(): AssignedState[] {
    return this.devices.map((d) => d.save());
  }

  /** A hand-over that failed: the DMA space and the interrupts this VM's again (the interrupts even if the DMA space fails). */
  thaw(): void {
    try {
      this.iommu.takeOver();
    } finally {
      for (const d of this.devices) d.thaw();
    }
  }

  /** The devices run in another process now: this one closes without touching them. */
  release(): void {
    for (const d of this.devices) d.release();
  }

  /** In the new process, paused: the DMA space's mappings and charges taken, then each function's BARs and interrupts. */
  restore(states: readonly AssignedState[], mark: (part: string) => void = () => {}): void {
    if (states.length !== this.devices.length || states.some((s, i) => s.bdf !== this.devices[i]!.host.bdf))
      throw new Error(
        `the state has devices ${states.map((s) => s.bdf).join(', ') || 'none'}, the hand-over ${this.devices.map((d) => d.host.bdf).join(', ')}`,
      );
    this.iommu.takeOver();
    mark('dma');
    states.forEach((s, i) => this.devices[i]!.restore(s));
    mark('devices');
  }

  /**
   * The hand-over is done: the devices are this process's, reset when it closes, and the DMA space
   * settled here. Past the point of no return nothing may throw: a charge that cannot move is said.
   */
  claim(): void {
    for (const d of this.devices) d.claim();
    try {
      this.iommu.settle();
    } catch (e) {
      console.error(`pinion: the VM runs here, but its pins stay charged to the process before: ${(e as Error).message}`);
    }
  }

  /** The listener on a handed-over table: its first commit must find nothing to do, as the kernel already maps all of it. */
  adoptRam(memory: GuestMemory, undo: UndoStack): void {
    // Planned, not run: the other process's guest is using these mappings.
    const ops = this.dma.mapper.plan(this.dma.wanted(memory.list())).ops;
    if (ops.length)
      throw new Error(
        `the handed-over DMA table does not match the memory map: taking it would take ${ops.length} ops (${ops.map((o) => o.op).join(', ')}); nothing was issued`,
      );
    this.mapRam(memory, undo);
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
  handoverRefusal(): string | undefined {
    return this.iommu.handoverRefusal() ?? this.devices.map((d) => d.handoverRefusal()).find((w) => w) ?? this.updateChargeRefusal();
  }

  /**
   * Per user, IOMMU_IOAS_CHANGE_PROCESS charges the pins to the new process before it uncharges the old
   * one (iommufd/ioas.c), so the user's limit must hold this VM's pins twice for a moment.
   */
  private updateChargeRefusal(): string | undefined {
    if (this.acc.path !== 'iommufd' || this.acc.mode !== 'per-user') return undefined;
    const b = remapBudget(this.acc.path, this.acc.mode);
    const need = 2n * this.dma.held;
    if (!b || b.bytes >= need) return undefined;
    const mib = (n: bigint): string => `${n / 1048576n} MiB`;
    return `iommufd charges this VM's ${mib(this.dma.held)} of pins to its user, and IOMMU_IOAS_CHANGE_PROCESS charges them to the new process before it uncharges this one: the update needs ${mib(need)} of the user's limit, and has ${mib(b.bytes)} (${b.why}); raise RLIMIT_MEMLOCK (prlimit --memlock) or start the VM under pinion open (per-process accounting)`;
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

function vmPlatform(memory: GuestMemory, platform: Platform, vmFd: number): VmPlatform {
  return { memory, pio: platform.pio, mmio: platform.mmio, routing: new IrqRouting(vmFd), vmFd, bars: new BarAllocator() };
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
