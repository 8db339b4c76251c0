// MSI-X of an assigned device, virtualised: the guest's table writes land in
// a shadow table; when the guest enables MSI-X every vector gets an eventfd
// (VFIO_DEVICE_SET_IRQS) bound to its own GSI (KVM_IRQFD), and the GSI's route
// follows what the guest wrote in the table. Interrupts then go device ->
// eventfd -> KVM -> guest without passing through Pinion.
import { ioctl } from '../../sys/libc.js';
import * as V from '../../sys/vfio.js';
import { IrqFd, type IrqRouting } from '../../vmm/irq.js';
import { readLe, writeLe } from '../pci/function.js';

export const PCI_MSIX_ENTRY_SIZE = 16;
const VECTOR_CTRL = 12;
const MASKBIT = 1;

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
  const ctrl = read(cap + 2, 2);
  const table = read(cap + 4, 4);
  const pba = read(cap + 8, 4);
  return { cap, size: (ctrl & 0x7ff) + 1, tableBar: table & 7, tableOffset: table & ~7, pbaBar: pba & 7, pbaOffset: pba & ~7 };
}

export class Msix {
  readonly table: Uint8Array;
  private vectors: IrqFd[] = [];

  constructor(
    readonly cap: MsixCap,
    private readonly deviceFd: number,
    private readonly path: string,
    private readonly routing: IrqRouting,
    private readonly vmFd: number,
  ) {
    this.table = new Uint8Array(cap.size * PCI_MSIX_ENTRY_SIZE);
    for (let i = 0; i < cap.size; i++) this.table[i * PCI_MSIX_ENTRY_SIZE + VECTOR_CTRL] = MASKBIT; // masked at reset
  }

  get enabled(): boolean {
    return this.vectors.length > 0;
  }

  /** The eventfd of vector `i` (tests write it to inject by hand). */
  vectorFd(i: number): number | undefined {
    return this.vectors[i]?.fd;
  }

  readTable(offset: number, data: Uint8Array): void {
    const v = offset + data.length <= this.table.length ? readLe(this.table, offset, data.length) : 0;
    writeLe(data, 0, data.length, v);
  }

  writeTable(offset: number, data: Uint8Array): void {
    if (offset + data.length > this.table.length) return;
    this.table.set(data, offset);
    const entry = Math.floor(offset / PCI_MSIX_ENTRY_SIZE);
    if (this.enabled) this.route(entry);
  }

  /** Message Control's enable bit went to 1: wire every vector. */
  enable(): void {
    if (this.enabled) return;
    for (let i = 0; i < this.cap.size; i++) this.vectors.push(new IrqFd(this.vmFd, this.routing.allocateGsi()));
    for (let i = 0; i < this.cap.size; i++) this.route(i);
    const set = V.vfio_irq_set(V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_TRIGGER, V.VFIO_PCI_MSIX_IRQ_INDEX, 0, this.vectors.map((v) => v.fd));
    ioctl(this.deviceFd, V.VFIO_DEVICE_SET_IRQS, set, `VFIO_DEVICE_SET_IRQS(MSI-X, ${this.cap.size} vectors)`, { path: this.path });
  }

  disable(): void {
    if (!this.enabled) return;
    const set = V.vfio_irq_set(V.VFIO_IRQ_SET_DATA_NONE | V.VFIO_IRQ_SET_ACTION_TRIGGER, V.VFIO_PCI_MSIX_IRQ_INDEX, 0, []);
    ioctl(this.deviceFd, V.VFIO_DEVICE_SET_IRQS, set, 'VFIO_DEVICE_SET_IRQS(MSI-X off)', { path: this.path });
    for (const v of this.vectors) {
      v.close();
      this.routing.releaseGsi(v.gsi);
    }
    this.vectors = [];
  }

  private route(i: number): void {
    const at = i * PCI_MSIX_ENTRY_SIZE;
    const v = this.vectors[i];
    if (!v) return;
    // Per-vector masking is not forwarded to the device: a masked entry still delivers (no guest here masks one).
    this.routing.setMsi(v.gsi, { addressLo: readLe(this.table, at, 4), addressHi: readLe(this.table, at + 4, 4), data: readLe(this.table, at + 8, 4) });
  }
}
