// MSI-X of an assigned device, virtualised: the guest's table writes land in
// a shadow table; when the guest enables MSI-X every vector gets an eventfd
// (VFIO_DEVICE_SET_IRQS) bound to its own GSI (KVM_IRQFD), and the GSI's route
// follows what the guest wrote in the table. Interrupts then go device ->
// eventfd -> KVM -> guest without passing through Pinion.
// Masking (a vector's mask bit, or the function mask) is done here, as QEMU
// does, since vfio-pci cannot mask one MSI-X vector: a masked vector's irqfd
// is detached, so what the device signals waits in the eventfd; it shows as
// the vector's bit in the virtual PBA, and is delivered when unmasked.
import { eventFdSignal, eventFdTake, ioctl } from '../../sys/libc.js';
import * as V from '../../sys/vfio.js';
import { IrqFd, type IrqRouting, type MsiMessage } from '../../vmm/irq.js';
import { readLe } from '../pci/function.js';
import {
  PCI_MSIX_ENTRY_CTRL_MASKBIT,
  PCI_MSIX_ENTRY_DATA,
  PCI_MSIX_ENTRY_LOWER_ADDR,
  PCI_MSIX_ENTRY_SIZE,
  PCI_MSIX_ENTRY_UPPER_ADDR,
  PCI_MSIX_ENTRY_VECTOR_CTRL,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_QSIZE,
  PCI_MSIX_PBA,
  PCI_MSIX_PBA_BIR,
  PCI_MSIX_TABLE,
  PCI_MSIX_TABLE_BIR,
} from '../../sys/pci-regs.js';

export interface MsixCap {
  /** Offset of the capability in config space. */
  cap: number;
  size: number;
  tableBar: number;
  tableOffset: number;
  pbaBar: number;
  pbaOffset: number;
}

/** Reads the MSI-X capability at `cap` (Message Control, Table, PBA registers). */
export function parseMsixCap(read: (off: number, size: number) => number, cap: number): MsixCap {
  const ctrl = read(cap + PCI_MSIX_FLAGS, 2);
  const table = read(cap + PCI_MSIX_TABLE, 4);
  const pba = read(cap + PCI_MSIX_PBA, 4);
  const size = (ctrl & PCI_MSIX_FLAGS_QSIZE) + 1;
  const tableBar = table & PCI_MSIX_TABLE_BIR,
    pbaBar = pba & PCI_MSIX_PBA_BIR;
  return { cap, size, tableBar, tableOffset: table & ~PCI_MSIX_TABLE_BIR, pbaBar, pbaOffset: pba & ~PCI_MSIX_PBA_BIR };
}

/** A vector's irqfd, as Msix uses it. */
export type MsixVector = Pick<IrqFd, 'fd' | 'gsi' | 'attached' | 'attach' | 'detach' | 'close'>;

/** The kernel calls behind Msix, injectable so the masking logic can be tested without KVM or VFIO. */
export interface MsixKernel {
  /** A detached, non-blocking irqfd for `gsi`. */
  vector(gsi: number): MsixVector;
  /** A detached irqfd for `gsi` on eventfd `fd`, which another process made (a live update). */
  adopt(gsi: number, fd: number): MsixVector;
  /** Reads and clears an eventfd's counter: 0 when nothing was signalled. */
  take(fd: number): bigint;
  signal(fd: number): void;
  /** VFIO_DEVICE_SET_IRQS on the MSI-X index: trigger these eventfds, or (null) none. */
  setIrqs(fds: number[] | null, what: string): void;
}

export function vfioMsixKernel(deviceFd: number, path: string, vmFd: number): MsixKernel {
  return {
    vector: (gsi) => IrqFd.create(vmFd, gsi, { attach: false, nonBlocking: true }),
    adopt: (gsi, fd) => IrqFd.adopt(vmFd, gsi, fd),
    take: eventFdTake,
    signal: eventFdSignal,
    setIrqs: (fds, what) => {
      const data = fds ? V.VFIO_IRQ_SET_DATA_EVENTFD : V.VFIO_IRQ_SET_DATA_NONE;
      const set = V.vfio_irq_set(data | V.VFIO_IRQ_SET_ACTION_TRIGGER, V.VFIO_PCI_MSIX_IRQ_INDEX, 0, fds ?? []);
      ioctl(deviceFd, V.VFIO_DEVICE_SET_IRQS, set, what, { path });
    },
  };
}

/** What a live update carries of MSI-X: vfio-pci goes on triggering the same eventfds, so they travel too. */
export interface MsixSaved {
  functionMasked: boolean;
  /** The shadow table as the guest wrote it. */
  table: Uint8Array;
  /** Vectors signalled while masked whose signal a PBA read already took out of the eventfd. */
  pending: boolean[];
  /** Each vector's GSI and eventfd (this process's fd), when MSI-X is on. */
  vectors: { gsi: number; fd: number }[];
}

/**
 * An MMIO read of `data.length` bytes at `offset` of `src`, or zeros when it does not fit: copied byte for
 * byte, since a qword (the PBA's natural access) does not survive readLe's 32-bit number.
 */
function copyOut(src: Uint8Array, offset: number, data: Uint8Array): void {
  if (offset + data.length <= src.length) data.set(src.subarray(offset, offset + data.length));
  else data.fill(0);
}

export class Msix {
  readonly table: Uint8Array;
  private vectors: MsixVector[] = [];
  private functionMasked = false;
  /** Signalled while masked, and already taken out of the eventfd by a PBA read. */
  private readonly pending: boolean[];

  constructor(
    readonly cap: MsixCap,
    deviceFd: number,
    path: string,
    private readonly routing: IrqRouting,
    vmFd: number,
    private readonly kernel: MsixKernel = vfioMsixKernel(deviceFd, path, vmFd),
  ) {
    this.table = new Uint8Array(cap.size * PCI_MSIX_ENTRY_SIZE);
    // Every vector masked at reset.
    for (let i = 0; i < cap.size; i++) this.table[i * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL] = PCI_MSIX_ENTRY_CTRL_MASKBIT;
    this.pending = new Array<boolean>(cap.size).fill(false);
  }

  /** Bytes of the PBA (one bit per vector, in whole qwords). */
  get pbaSize(): number {
    return Math.ceil(this.cap.size / 64) * 8;
  }

  masked(i: number): boolean {
    return this.functionMasked || (this.table[i * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL]! & PCI_MSIX_ENTRY_CTRL_MASKBIT) !== 0;
  }

  get enabled(): boolean {
    return this.vectors.length > 0;
  }

  /** The eventfd of vector `i` (tests write it to inject by hand). */
  vectorFd(i: number): number | undefined {
    return this.vectors[i]?.fd;
  }

  readTable(offset: number, data: Uint8Array): void {
    copyOut(this.table, offset, data);
  }

  writeTable(offset: number, data: Uint8Array): void {
    if (offset + data.length > this.table.length) return;
    this.table.set(data, offset);
    const entry = Math.floor(offset / PCI_MSIX_ENTRY_SIZE);
    if (this.enabled) {
      this.route(entry);
      this.syncMask(entry);
    }
  }

  /** Message Control's function mask bit. */
  setFunctionMask(on: boolean): void {
    if (on === this.functionMasked) return;
    this.functionMasked = on;
    if (this.enabled) for (let i = 0; i < this.cap.size; i++) this.syncMask(i);
  }

  readPba(offset: number, data: Uint8Array): void {
    const bytes = new Uint8Array(this.pbaSize);
    for (let i = 0; i < this.cap.size; i++) {
      const v = this.vectors[i];
      if (v && !v.attached && this.kernel.take(v.fd) > 0n) this.pending[i] = true;
      if (this.pending[i]) bytes[i >> 3]! |= 1 << (i & 7);
    }
    copyOut(bytes, offset, data);
  }

  /** Message Control's enable bit went to 1: wire every vector, or on a failure none (the error is rethrown). */
  enable(): void {
    if (this.enabled) return;
    const gsis: number[] = [];
    try {
      for (let i = 0; i < this.cap.size; i++) {
        gsis.push(this.routing.allocateGsi());
        this.vectors.push(this.kernel.vector(gsis[i]!));
      }
      for (let i = 0; i < this.cap.size; i++) {
        this.route(i);
        this.syncMask(i);
      }
      this.kernel.setIrqs(
        this.vectors.map((v) => v.fd),
        `VFIO_DEVICE_SET_IRQS(MSI-X, ${this.cap.size} vectors)`,
      );
    } catch (e) {
      // All or nothing: a half-wired MSI-X would read as enabled and keep GSIs, routes and irqfds.
      for (const v of this.vectors) {
        try {
          v.close();
        } catch {
          // The enable's failure is what the caller needs to see.
        }
      }
      this.vectors = [];
      this.pending.fill(false);
      for (const gsi of gsis) {
        try {
          this.routing.releaseGsi(gsi);
        } catch {
          // As above.
        }
      }
      throw e;
    }
  }

  disable(): void {
    if (!this.enabled) return;
    this.kernel.setIrqs(null, 'VFIO_DEVICE_SET_IRQS(MSI-X off)');
    for (const v of this.vectors) {
      v.close();
      this.routing.releaseGsi(v.gsi);
    }
    this.vectors = [];
    this.pending.fill(false);
  }

  save(): MsixSaved {
    return {
      functionMasked: this.functionMasked,
      table: Uint8Array.from(this.table),
      pending: [...this.pending],
      vectors: this.vectors.map((v) => ({ gsi: v.gsi, fd: v.fd })),
    };
  }

  /**
   * Every irqfd off this VM, so nothing is injected into it once its state is read: what the device
   * signals meanwhile waits in the eventfds for the VM that takes them. thaw() undoes it.
   */
  freeze(): void {
    for (const v of this.vectors) v.detach();
  }

  /** After a freeze: the unmasked vectors' irqfds back on, and what they held delivered. */
  thaw(): void {
    for (let i = 0; i < this.vectors.length; i++) this.syncMask(i);
  }

  /** This VM lets the vectors go to another process: irqfds off and fds closed here, the device's MSI-X left on. */
  release(): void {
    for (const v of this.vectors) v.close();
    this.vectors = [];
  }

  /** Takes over MSI-X as another process left it: the same eventfds and GSIs, routed and masked as the guest had them. */
  adopt(s: MsixSaved): void {
    if (this.enabled) throw new Error('MSI-X is already on here');
    if (s.table.length !== this.table.length || s.pending.length !== this.cap.size)
      throw new RangeError(`the saved MSI-X table has ${s.table.length / PCI_MSIX_ENTRY_SIZE} vectors, this function ${this.cap.size}`);
    if (s.vectors.length && s.vectors.length !== this.cap.size)
      throw new RangeError(`${s.vectors.length} saved MSI-X vectors, this function has ${this.cap.size}`);
    this.table.set(s.table);
    this.functionMasked = s.functionMasked;
    s.pending.forEach((p, i) => (this.pending[i] = p));
    for (const v of s.vectors) {
      this.routing.claimGsi(v.gsi);
      this.vectors.push(this.kernel.adopt(v.gsi, v.fd));
    }
    this.routing.setMsis(this.vectors.map((v, i) => [v.gsi, this.message(i)] as const));
    for (let i = 0; i < this.vectors.length; i++) this.syncMask(i);
  }

  /** Detaches a masked vector's irqfd; re-attaches an unmasked one and delivers what it held. */
  private syncMask(i: number): void {
    const v = this.vectors[i];
    if (!v) return;
    if (this.masked(i)) return v.detach();
    if (v.attached) return;
    const held = this.kernel.take(v.fd) > 0n || this.pending[i];
    this.pending[i] = false;
    v.attach();
    if (held) this.kernel.signal(v.fd);
  }

  /** Vector `i`'s message as the guest wrote it in the table. */
  message(i: number): MsiMessage {
    const at = i * PCI_MSIX_ENTRY_SIZE;
    return {
      addressLo: readLe(this.table, at + PCI_MSIX_ENTRY_LOWER_ADDR, 4),
      addressHi: readLe(this.table, at + PCI_MSIX_ENTRY_UPPER_ADDR, 4),
      data: readLe(this.table, at + PCI_MSIX_ENTRY_DATA, 4),
    };
  }

  private route(i: number): void {
    const v = this.vectors[i];
    if (v) this.routing.setMsi(v.gsi, this.message(i));
  }
}
