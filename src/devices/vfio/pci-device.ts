// An assigned PCI function: VFIO device fd from either IOMMU path, its config
// space with BARs, ROM and MSI-X virtualised and the rest passed through, its
// BARs mmap'd into the guest as memslots where VFIO allows, and the MSI-X
// table and PBA pages trapped. Reset at attach and at teardown.
import { ioctl, mmapFd, MAP_SHARED, type MappedMemory } from '../../sys/libc.js';
import * as V from '../../sys/vfio.js';
import type { Bus, BusDevice } from '../../vmm/bus.js';
import { intxPin, type IrqRouting } from '../../vmm/irq.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import type { MemoryRegion } from '../../memory/listener.js';
import type { BarAllocator, BarSpace } from '../pci/bar-allocator.js';
import { readLe, writeLe, type PciFunction } from '../pci/function.js';
import * as P from '../../sys/pci-regs.js';
import { Msix, parseMsixCap, type MsixCap } from './msix.js';
import { Intx } from './intx.js';
import { Msi } from './msi.js';
import { regionInfo, regionRead, regionWrite, type RegionInfo } from './region.js';
import type { HostDevice } from './host-device.js';
import type { OpenedDevice, VfioIommu } from './iommu.js';
import { UndoStack } from '../../sys/undo.js';
import type { AssignedState, BarAt } from './saved.js';

const PAGE = 0x1000;
// The MSI-X enable and function-mask bits live in Message Control's high byte.
const MSIX_FLAGS_HI = P.PCI_MSIX_FLAGS + 1;
const MSIX_ENABLE = P.PCI_MSIX_FLAGS_ENABLE >> 8,
  MSIX_MASKALL = P.PCI_MSIX_FLAGS_MASKALL >> 8;

/** The VM an assigned device registers on: its memory map, port and MMIO buses, interrupt routing, BAR allocator. */
export interface VmPlatform {
  memory: GuestMemory;
  pio: Bus;
  mmio: Bus;
  routing: IrqRouting;
  vmFd: number;
  bars: BarAllocator;
}

/** The kernel calls of an assigned device, injectable so its config-space and BAR logic can run against a model. */
export interface DeviceIo {
  /** VFIO_DEVICE_GET_INFO's flags. */
  flags(): number;
  /** VFIO_DEVICE_RESET. */
  reset(): void;
  regionInfo(index: number): RegionInfo;
  read(r: RegionInfo, at: number, data: Uint8Array): void;
  write(r: RegionInfo, at: number, data: Uint8Array): void;
  /** A shared mapping of `len` bytes at `offset` of region `r`. */
  mmap(r: RegionInfo, offset: number, len: number): MappedMemory;
  /** The function's INTx on IOAPIC pin `gsi`, if VFIO offers INTx for it. */
  intx(gsi: number): Intx | undefined;
  msi(at: number, raw: Uint8Array): Msi;
  msix(cap: MsixCap): Msix;
}

/** The real calls, through the VFIO device fd. */
export function vfioDeviceIo(opened: OpenedDevice, env: VmPlatform): DeviceIo {
  const { fd, path } = opened;
  return {
    flags: () => {
      const info = V.vfio_device_info.make();
      ioctl(fd, V.VFIO_DEVICE_GET_INFO, info, 'VFIO_DEVICE_GET_INFO', { path });
      return V.vfio_device_info.flags(info);
    },
    reset: () => void ioctl(fd, V.VFIO_DEVICE_RESET, 0, 'VFIO_DEVICE_RESET', { path }),
    regionInfo: (index) => regionInfo(fd, index, path),
    read: (r, at, data) => regionRead(fd, r, at, data, path),
    write: (r, at, data) => regionWrite(fd, r, at, data, path),
    mmap: (r, offset, len) => mmapFd(len, MAP_SHARED, fd, r.offset + BigInt(offset), path),
    intx: (gsi) => (Intx.offered(fd, path) ? new Intx(fd, path, env.vmFd, gsi) : undefined),
    msi: (at, raw) => new Msi(at, raw, fd, path, env.routing, env.vmFd),
    msix: (cap) => new Msix(cap, fd, path, env.routing, env.vmFd),
  };
}

/** The address bits of a BAR's low register: an I/O BAR's start at bit 2, a memory BAR's at bit 4. */
const addressMask = (space: BarSpace): number => (space === 'io' ? P.PCI_BASE_ADDRESS_IO_MASK : P.PCI_BASE_ADDRESS_MEM_MASK);

interface Bar {
  index: number;
  region: RegionInfo;
  space: BarSpace;
  /** Low flag bits of the BAR register (I/O, 64-bit, prefetchable). */
  flags: number;
  address: bigint;
  maps: { region: MemoryRegion; mem: MappedMemory }[];
  /** On its bus and in guest memory at `address`; false while the guest has it where it cannot be decoded. */
  placed: boolean;
}

export class VfioPciDevice implements PciFunction {
  readonly name: string;
  private readonly bars: Bar[] = [];
  private msix: Msix | undefined;
  private intx: Intx | undefined;
  private msi: Msi | undefined;
  /** Config-space bytes the guest sees instead of the device's (capability chain without MSI). */
  private readonly overlay = new Map<number, number>();
  private msixControl = 0;
  private closed = false;
  private undecodedSaid = false;
  /** Whether this process may reset the function and turn its interrupts off (not while another process has it). */
  private owner = true;

  private constructor(
    readonly host: HostDevice,
    private readonly env: VmPlatform,
    readonly slot: number,
    private readonly io: DeviceIo,
    /** VFIO_DEVICE_FLAGS_RESET: vfio-pci has a reset for it (FLR, PM, or a bus of its own); without, reset() does nothing, as QEMU. */
    readonly resettable: boolean,
    private readonly config: RegionInfo,
    /** The VFIO device fd. */
    readonly fd: number,
    /** What open set up, undone by close (or by open itself when a later step fails), last first. */
    private readonly teardown: UndoStack,
  ) {
    this.name = `vfio ${host.bdf}`;
  }

  /**
   * Opens the function through the VM's IOMMU backend, resets it, places its BARs (bus ranges and memslots)
   * and turns INTx on. A step that throws leaves nothing behind: what the steps before it set up is undone,
   * last first, and the error rethrown.
   */
  static open(host: HostDevice, iommu: VfioIommu, env: VmPlatform, slot: number, io = vfioDeviceIo): VfioPciDevice {
    return VfioPciDevice.build(host, () => iommu.openDevice(host), env, slot, io, false);
  }

  /**
   * A function another process hands over (live update), running: not reset, its interrupts left as
   * they are until restore() takes them, and this process touches nothing of the device at close
   * until claim() makes it the owner. Its BARs go where the guest had them when the hand-over was
   * written (`at.bars`), so the pause re-places only those it moved since.
   */
  static adopt(
    host: HostDevice,
    opened: OpenedDevice,
    env: VmPlatform,
    at: { slot: number; bars?: readonly BarAt[] },
    io = vfioDeviceIo,
  ): VfioPciDevice {
    return VfioPciDevice.build(host, () => opened, env, at.slot, io, true, at.bars);
  }

  private static build(
    host: HostDevice,
    open: () => OpenedDevice,
    env: VmPlatform,
    slot: number,
    io: typeof vfioDeviceIo,
    adopted: boolean,
    barsAt: readonly BarAt[] = [],
  ): VfioPciDevice {
    return UndoStack.build((undo) => {
      const opened = undo.own(open(), (o) => o.close());
      const dio = io(opened, env);
      const flags = dio.flags();
      if (!(flags & V.VFIO_DEVICE_FLAGS_PCI)) throw new Error(`${host.bdf} is not a PCI device to VFIO`);
      const config = dio.regionInfo(V.VFIO_PCI_CONFIG_REGION_INDEX);
      const dev = new VfioPciDevice(host, env, slot, dio, (flags & V.VFIO_DEVICE_FLAGS_RESET) !== 0, config, opened.fd, undo);
      dev.owner = !adopted;
      if (!adopted) dev.reset();
      // Leave the device quiet for the next user; one handed to another process is that one's.
      undo.defer(() => dev.owner && dev.reset());
      dev.buildCapabilities();
      for (let i = 0; i < 6; i++) {
        const bar = dev.probeBar(i);
        if (!bar) continue;
        const at = barsAt.find((b) => b.bar === i);
        if (at) bar.address = at.address;
        dev.bars.push(bar);
        if (bar.space === 'mem64') i++; // the upper half is the next register
      }
      for (const bar of dev.bars) {
        dev.place(bar);
        undo.defer(() => dev.unplace(bar));
      }
      // INTx on from the start, as on real hardware; swizzled over the IOAPIC's PCI pins 16-19 like a PC.
      const pin = dev.rawRead(P.PCI_INTERRUPT_PIN, 1);
      const intx = pin ? dio.intx(intxPin(slot, pin)) : undefined;
      if (intx) {
        dev.intx = intx;
        dev.overlay.set(P.PCI_INTERRUPT_LINE, intx.gsi);
        if (!adopted) intx.enable();
        undo.defer(() => (dev.owner ? intx.disable() : intx.release()));
      }
      // The guest turns MSI or MSI-X on later; at close they go off first, before the BARs they live in.
      undo.defer(() => dev.owner && dev.msi?.disable());
      undo.defer(() => (dev.owner ? dev.msix?.disable() : dev.msix?.release()));
      return dev;
    });
  }

  /** VFIO_DEVICE_RESET (function-level or bus reset, whatever vfio-pci can do for it). */
  reset(): void {
    if (!this.resettable) return;
    this.io.reset();
  }

  private rawRead(offset: number, size: number): number {
    const d = new Uint8Array(size);
    this.io.read(this.config, offset, d);
    return readLe(d, 0, size);
  }

  private rawWrite(offset: number, size: number, value: number): void {
    const d = new Uint8Array(size);
    writeLe(d, 0, size, value);
    this.io.write(this.config, offset, d);
  }

  /** Walks the capability list: MSI and MSI-X are virtualised, the rest passed through. */
  private buildCapabilities(): void {
    if (!(this.rawRead(P.PCI_STATUS, 2) & P.PCI_STATUS_CAP_LIST)) return;
    const caps: { at: number; id: number }[] = [];
    // A capability pointer's low two bits are reserved.
    const pointer = (at: number): number => this.rawRead(at, 1) & 0xfc;
    for (let at = pointer(P.PCI_CAPABILITY_LIST); at && caps.length < 48; at = pointer(at + P.PCI_CAP_LIST_NEXT)) {
      caps.push({ at, id: this.rawRead(at + P.PCI_CAP_LIST_ID, 1) });
    }
    const msi = caps.find((c) => c.id === P.PCI_CAP_ID_MSI);
    if (msi) {
      const raw = new Uint8Array(24);
      this.io.read(this.config, msi.at, raw);
      this.msi = this.io.msi(msi.at, raw);
    }
    const msix = caps.find((c) => c.id === P.PCI_CAP_ID_MSIX);
    if (msix) this.msix = this.io.msix(parseMsixCap((o, s) => this.rawRead(o, s), msix.at));
  }

  private probeBar(i: number): Bar | undefined {
    const region = this.io.regionInfo(V.VFIO_PCI_BAR0_REGION_INDEX + i);
    if (region.size === 0n) return undefined;
    const raw = this.rawRead(P.PCI_BASE_ADDRESS_0 + 4 * i, 4);
    const io = (raw & P.PCI_BASE_ADDRESS_SPACE_IO) !== 0;
    const flags = raw & ~addressMask(io ? 'io' : 'mem32');
    const space: BarSpace = io ? 'io' : flags & P.PCI_BASE_ADDRESS_MEM_TYPE_64 ? 'mem64' : 'mem32';
    const address = this.env.bars.allocate(space, region.size, `${this.host.bdf} BAR${i}`);
    return { index: i, region, space, flags, address, maps: [], placed: false };
  }

  /** Maps what VFIO lets us mmap as memslots and traps the rest (always the MSI-X table and PBA pages).
   * All or nothing: a failed mmap or memslot takes the bus range and the areas mapped before it back out. */
  private place(bar: Bar): void {
    const trapped = this.trappedPages(bar);
    const size = Number(bar.region.size);
    const handler: BusDevice = {
      read: (off, data) => this.barRead(bar, off, data),
      write: (off, data) => this.barWrite(bar, off, data),
    };
    this.busOf(bar).register(Number(bar.address), size, handler, `${this.name} BAR${bar.index}`);
    if (bar.space === 'io') {
      bar.placed = true;
      return;
    }
    try {
      for (const area of bar.region.mmapAreas) {
        // Each mmap-able area, minus the trapped pages inside it.
        let start = Number(area.offset);
        const end = Number(area.offset + area.size);
        for (const [ts, te] of trapped) {
          if (te <= start || ts >= end) continue;
          if (ts > start) this.mapArea(bar, start, ts - start);
          start = Math.max(start, te);
        }
        if (end > start) this.mapArea(bar, start, end - start);
      }
      bar.placed = true;
    } catch (e) {
      try {
        this.busOf(bar).unregister(Number(bar.address));
        this.unmapBar(bar);
      } catch {
        // The failed map is what the caller needs to see.
      }
      throw e;
    }
  }

  /** Takes a placed BAR off its bus and out of guest memory. */
  private unplace(bar: Bar): void {
    if (!bar.placed) return;
    bar.placed = false;
    this.busOf(bar).unregister(Number(bar.address));
    this.unmapBar(bar);
  }

  private busOf(bar: Bar): Bus {
    return bar.space === 'io' ? this.env.pio : this.env.mmio;
  }

  private trappedPages(bar: Bar): [number, number][] {
    const m = this.msix?.cap;
    const out: [number, number][] = [];
    if (!m) return out;
    const pageSpan = (off: number, len: number): [number, number] => [off & ~(PAGE - 1), (off + len + PAGE - 1) & ~(PAGE - 1)];
    if (m.tableBar === bar.index) out.push(pageSpan(m.tableOffset, m.size * P.PCI_MSIX_ENTRY_SIZE));
    if (m.pbaBar === bar.index) out.push(pageSpan(m.pbaOffset, Math.ceil(m.size / 64) * 8));
    return out.sort((a, b) => a[0] - b[0]);
  }

  private mapArea(bar: Bar, offset: number, len: number): void {
    if (offset % PAGE || len % PAGE) return; // a memslot needs whole pages; the rest stays trapped
    const mem = this.io.mmap(bar.region, offset, len);
    const region: MemoryRegion = {
      name: `${this.host.bdf} BAR${bar.index}+0x${offset.toString(16)}`,
      gpa: bar.address + BigInt(offset),
      size: BigInt(len),
      hva: mem.vaddr,
      kind: 'device',
    };
    try {
      this.env.memory.update((u) => u.add(region));
    } catch (e) {
      mem.unmap();
      throw e;
    }
    bar.maps.push({ region, mem });
  }

  private barRead(bar: Bar, off: number, data: Uint8Array): void {
    const m = this.msix;
    if (m && m.cap.tableBar === bar.index && off >= m.cap.tableOffset && off < m.cap.tableOffset + m.table.length)
      return m.readTable(off - m.cap.tableOffset, data);
    if (m && m.cap.pbaBar === bar.index && off >= m.cap.pbaOffset && off < m.cap.pbaOffset + m.pbaSize)
      return m.readPba(off - m.cap.pbaOffset, data);
    this.io.read(bar.region, off, data);
  }

  private barWrite(bar: Bar, off: number, data: Uint8Array): void {
    const m = this.msix;
    if (m && m.cap.tableBar === bar.index && off >= m.cap.tableOffset && off < m.cap.tableOffset + m.table.length)
      return m.writeTable(off - m.cap.tableOffset, data);
    if (m && m.cap.pbaBar === bar.index && off >= m.cap.pbaOffset && off < m.cap.pbaOffset + m.pbaSize) return; // read-only
    this.io.write(bar.region, off, data);
  }

  // --- configuration space as the guest sees it ---

  configRead(offset: number, size: number): number {
    const bar = this.barAt(offset);
    const byteMask = size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
    // `>>> 0`: the `&` makes bit 31 a sign; config reads are unsigned.
    if (bar) return ((this.barRegister(bar.bar, bar.high) >>> (8 * (offset & 3))) & byteMask) >>> 0;
    if (offset >= P.PCI_BASE_ADDRESS_0 && offset < P.PCI_BASE_ADDRESS_5 + 4) return 0; // unimplemented BAR slots
    if (offset >= P.PCI_ROM_ADDRESS && offset < P.PCI_ROM_ADDRESS + 4) return 0; // no option ROM for the guest
    const bytes = new Uint8Array(size);
    writeLe(bytes, 0, size, this.rawRead(offset, size));
    for (let i = 0; i < size; i++) {
      const o = this.overlay.get(offset + i);
      if (o !== undefined) bytes[i] = o;
      if (this.msi?.contains(offset + i)) bytes[i] = this.msi.read(offset + i);
      const m = this.msix?.cap;
      if (m && offset + i === m.cap + MSIX_FLAGS_HI) bytes[i] = (bytes[i]! & ~(MSIX_ENABLE | MSIX_MASKALL)) | this.msixControl;
    }
    return readLe(bytes, 0, size);
  }

  configWrite(offset: number, size: number, value: number): void {
    const bar = this.barAt(offset);
    if (bar) return this.writeBar(bar.bar, bar.high, offset, size, value);
    if (
      (offset >= P.PCI_BASE_ADDRESS_0 && offset < P.PCI_BASE_ADDRESS_5 + 4) ||
      (offset >= P.PCI_ROM_ADDRESS && offset < P.PCI_ROM_ADDRESS + 4)
    )
      return;
    const msi = this.msi;
    if (msi && msi.contains(offset)) {
      let turned: boolean | undefined;
      for (let i = 0; i < size; i++) turned = msi.write(offset + i, (value >>> (8 * i)) & 0xff) ?? turned;
      // vfio-pci runs one interrupt type at a time: INTx yields to MSI and comes back after it.
      if (turned === true) {
        this.instead(() => msi.enable());
      } else if (turned === false) {
        msi.disable();
        this.intxUnlessMsi();
      }
      return;
    }
    const m = this.msix?.cap;
    if (m && offset <= m.cap + MSIX_FLAGS_HI && offset + size > m.cap + MSIX_FLAGS_HI) {
      this.msixControl = (value >>> (8 * (m.cap + MSIX_FLAGS_HI - offset))) & (MSIX_ENABLE | MSIX_MASKALL);
      this.msix!.setFunctionMask((this.msixControl & MSIX_MASKALL) !== 0);
      // vfio-pci runs one interrupt type at a time: INTx yields to MSI-X and comes back after it.
      if (this.msixControl & MSIX_ENABLE) {
        this.instead(() => this.msix!.enable());
      } else {
        this.msix!.disable();
        this.intxUnlessMsi();
      }
      return;
    }
    this.rawWrite(offset, size, value);
  }

  /** Turns INTx off for MSI or MSI-X; if that enable fails (it then wires nothing), INTx is back as it was. */
  private instead(enable: () => void): void {
    const was = this.intx?.enabled ?? false;
    this.intx?.disable();
    try {
      enable();
    } catch (e) {
      try {
        if (was) this.intx!.enable();
      } catch {
        // The enable's failure is what the guest's write reports.
      }
      throw e;
    }
  }

  /** INTx back once neither MSI nor MSI-X runs, as QEMU: vfio-pci refuses INTx while either does. */
  private intxUnlessMsi(): void {
    if (!this.msi?.enabled && !this.msix?.enabled) this.intx?.enable();
  }

  private barAt(offset: number): { bar: Bar; high: boolean } | undefined {
    const reg = (offset - P.PCI_BASE_ADDRESS_0) >> 2;
    for (const bar of this.bars) {
      if (reg === bar.index) return { bar, high: false };
      if (bar.space === 'mem64' && reg === bar.index + 1) return { bar, high: true };
    }
    return undefined;
  }

  private sizing = new Set<string>();

  /** The register value: the address (or, after the guest wrote all ones, the size mask) with the type bits. */
  private barRegister(bar: Bar, high: boolean): number {
    const mask = ~(bar.region.size - 1n) & 0xffff_ffff_ffff_ffffn;
    const v = this.sizing.has(`${bar.index}${high}`) ? mask : bar.address;
    return high ? Number((v >> 32n) & 0xffffffffn) : (Number(v & 0xffffffffn) & addressMask(bar.space)) | bar.flags;
  }

  private writeBar(bar: Bar, high: boolean, offset: number, size: number, value: number): void {
    if (size !== 4 || offset & 3) return;
    const key = `${bar.index}${high}`;
    const mask = addressMask(bar.space);
    if (value >>> 0 === 0xffffffff || (!high && (value | ~mask) >>> 0 === 0xffffffff)) {
      this.sizing.add(key);
      return;
    }
    this.sizing.delete(key);
    const cur = bar.address;
    const next = high ? (BigInt(value >>> 0) << 32n) | (cur & 0xffffffffn) : (cur & ~0xffffffffn) | BigInt((value & mask) >>> 0);
    const aligned = next & ~(bar.region.size - 1n);
    if (aligned !== cur) this.move(bar, aligned);
  }

  /** The guest moved a BAR: memslots and trapped ranges follow. */
  private move(bar: Bar, to: bigint): void {
    this.unplace(bar);
    bar.address = to;
    try {
      this.place(bar);
    } catch (e) {
      // Over RAM, another BAR, an address KVM cannot slot: the guest's choice, not a reason to end the VM.
      // The BAR reads back what was written and decodes nowhere until moved again, as a BAR hidden by RAM.
      if (!this.undecodedSaid)
        console.error(
          `pinion: note: the guest moved ${this.name} BAR${bar.index} to 0x${to.toString(16)}, where it cannot be decoded (${(e as Error).message}); it decodes nowhere until moved again (not said again for this device)`,
        );
      this.undecodedSaid = true;
    }
  }

  private unmapBar(bar: Bar): void {
    if (bar.maps.length) this.env.memory.update((u) => bar.maps.forEach((m) => u.remove(m.region.gpa)));
    for (const m of bar.maps) m.mem.unmap();
    bar.maps = [];
  }

  /** Where each BAR is now, for the process a live update hands the function to. */
  barsAt(): BarAt[] {
    return this.bars.map((b) => ({ bar: b.index, address: b.address }));
  }

  /** What the guest sees, for reports: BAR addresses and sizes. */
  describe(): { bar: number; space: BarSpace; address: bigint; size: bigint; mapped: bigint }[] {
    return this.bars.map((b) => ({
      bar: b.index,
      space: b.space,
      address: b.address,
      size: b.region.size,
      mapped: b.maps.reduce((n, m) => n + m.region.size, 0n),
    }));
  }

  /** The IOAPIC pin INTx is wired to while MSI and MSI-X are off, if the function has INTx. */
  get intxGsi(): number | undefined {
    return this.intx?.gsi;
  }

  /** The interrupt the guest runs the function with now, for reports. */
  get interrupts(): { active: 'intx' | 'msi' | 'msix' | 'none'; msixVectors: number } {
    const active = this.msix?.enabled ? 'msix' : this.msi?.enabled ? 'msi' : this.intx?.enabled ? 'intx' : 'none';
    return { active, msixVectors: this.msix?.cap.size ?? 0 };
  }

  get msixVectorsWired(): number {
    return this.msix?.enabled ? this.msix.cap.size : 0;
  }

  // --- live update ---

  /** Why this function cannot go to another process now, or undefined. */
  handoverRefusal(): string | undefined {
    if (this.msi?.enabled) return `the guest runs ${this.host.bdf} on MSI, which a live update does not carry (MSI-X and INTx it does)`;
    return undefined;
  }

  /** What Pinion holds of the function (eventfds as this process's fds); with the vCPUs paused. */
  save(): AssignedState {
    const why = this.handoverRefusal();
    if (why) throw new Error(why);
    // One read of the device's own bytes (a config read each dword is a syscall each, inside the pause).
    const config = Buffer.alloc(256);
    this.io.read(this.config, 0, config);
    const m = this.msix?.save();
    return {
      bdf: this.host.bdf,
      slot: this.slot,
      config,
      bars: this.barsAt(),
      ...(m
        ? {
            msix: {
              enabled: (this.msixControl & MSIX_ENABLE) !== 0,
              masked: (this.msixControl & MSIX_MASKALL) !== 0,
              table: Buffer.from(m.table),
              pending: m.pending,
            },
          }
        : {}),
      irqs: (m?.vectors ?? []).map((v, i) => ({ gsi: v.gsi, eventfd: v.fd, msi: this.msix!.message(i) })),
      intx: this.intx?.enabled ?? false,
    };
  }

  /** The wired MSI-X vectors' eventfds (vfio-pci triggers them). */
  eventfds(): number[] {
    return this.msix?.save().vectors.map((v) => v.fd) ?? [];
  }

  /** Before save(): nothing the device signals reaches this VM any more (it waits in the eventfds). */
  freeze(): void {
    this.msix?.freeze();
  }

  /** After a failed hand-over: this VM's interrupts back (INTx taken back from the other process if it took it). */
  thaw(): void {
    this.msix?.thaw();
    if (this.intx?.enabled) this.intx.takeOver();
  }

  /** The function now runs in another process: from here this one lets go of it without touching the device. */
  release(): void {
    this.owner = false;
    this.msix?.release();
    this.intx?.release();
  }

  /** In the process a function was handed to: the guest's BAR placement and interrupts as the other process left them. */
  restore(s: AssignedState): void {
    if (s.bdf !== this.host.bdf || s.slot !== this.slot)
      throw new Error(`the state is of ${s.bdf} in slot ${s.slot}, this is ${this.host.bdf} in slot ${this.slot}`);
    const saved = s.bars.map((b) => b.bar).join(',');
    if (saved !== this.bars.map((b) => b.index).join(','))
      throw new Error(`${this.host.bdf}: the state has BARs ${saved}, the function ${this.bars.map((b) => b.index).join(',')}`);
    for (const b of s.bars) {
      const bar = this.bars.find((x) => x.index === b.bar)!;
      if (bar.address === b.address) continue;
      this.unplace(bar);
      bar.address = b.address;
      this.place(bar);
    }
    if (s.msix && this.msix) {
      this.msixControl = (s.msix.enabled ? MSIX_ENABLE : 0) | (s.msix.masked ? MSIX_MASKALL : 0);
      this.msix.adopt({
        functionMasked: s.msix.masked,
        table: s.msix.table,
        pending: s.msix.pending,
        vectors: s.msix.enabled ? s.irqs.map((i) => ({ gsi: i.gsi, fd: i.eventfd })) : [],
      });
    } else if (s.msix || s.irqs.length) throw new Error(`${this.host.bdf}: the state has MSI-X, the function has none`);
    if (s.intx) {
      if (!this.intx) throw new Error(`${this.host.bdf}: the state has INTx on, the function has none`);
      this.intx.takeOver();
    }
  }

  /** The hand-over is done: this process owns the function, and resets it when it closes. */
  claim(): void {
    this.owner = true;
  }

  /** Interrupts off, BARs off the buses and out of guest memory, the device reset, its fd closed; once. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.teardown.release();
  }
}
