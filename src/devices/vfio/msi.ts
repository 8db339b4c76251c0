// MSI of an assigned device, virtualised: the guest sees a single-vector
// capability (no per-vector masking) whose registers live here; when it sets
// the enable bit the vector gets an eventfd (VFIO_DEVICE_SET_IRQS, MSI index)
// bound to a GSI with KVM_IRQFD and routed by the address and data the guest
// wrote. VFIO programs the device's own MSI registers.
import { ioctl } from '../../sys/libc.js';
import * as V from '../../sys/vfio.js';
import { IrqFd, type IrqRouting } from '../../vmm/irq.js';
import { readLe, writeLe } from '../pci/function.js';
import {
  PCI_MSI_ADDRESS_HI,
  PCI_MSI_ADDRESS_LO,
  PCI_MSI_DATA_32,
  PCI_MSI_DATA_64,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_64BIT,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_MASKBIT,
  PCI_MSI_FLAGS_QMASK,
  PCI_MSI_FLAGS_QSIZE,
  PCI_MSI_MASK_32,
  PCI_MSI_MASK_64,
} from '../../sys/pci-regs.js';

/** The vector's irqfd, as Msi uses it. */
export type MsiVector = Pick<IrqFd, 'fd' | 'gsi' | 'close'>;

/** The kernel calls behind Msi, injectable so enabling and its undoing can be tested without KVM or VFIO. */
export interface MsiKernel {
  /** An irqfd for `gsi`, attached. */
  vector(gsi: number): MsiVector;
  /** VFIO_DEVICE_SET_IRQS on the MSI index: trigger this eventfd, or (null) none. */
  setIrqs(fd: number | null, what: string): void;
}

export function vfioMsiKernel(deviceFd: number, path: string, vmFd: number): MsiKernel {
  return {
    vector: (gsi) => IrqFd.create(vmFd, gsi),
    setIrqs: (fd, what) => {
      const data = fd === null ? V.VFIO_IRQ_SET_DATA_NONE : V.VFIO_IRQ_SET_DATA_EVENTFD;
      const set = V.vfio_irq_set(data | V.VFIO_IRQ_SET_ACTION_TRIGGER, V.VFIO_PCI_MSI_IRQ_INDEX, 0, fd === null ? [] : [fd]);
      ioctl(deviceFd, V.VFIO_DEVICE_SET_IRQS, set, what, { path });
    },
  };
}

export class Msi {
  /** The capability as the guest sees it: id, next, control, address (lo, hi), data, padding. */
  readonly regs: Uint8Array;
  readonly is64: boolean;
  private vector: MsiVector | undefined;

  constructor(
    readonly cap: number,
    device: Uint8Array,
    deviceFd: number,
    path: string,
    private readonly routing: IrqRouting,
    vmFd: number,
    private readonly kernel: MsiKernel = vfioMsiKernel(deviceFd, path, vmFd),
  ) {
    this.regs = new Uint8Array(this.length(device));
    this.regs.set(device.subarray(0, this.regs.length));
    const ctrl = readLe(this.regs, PCI_MSI_FLAGS, 2);
    this.is64 = (ctrl & PCI_MSI_FLAGS_64BIT) !== 0;
    // One vector, no per-vector masking: all Pinion wires.
    const hidden = PCI_MSI_FLAGS_QMASK | PCI_MSI_FLAGS_QSIZE | PCI_MSI_FLAGS_MASKBIT | PCI_MSI_FLAGS_ENABLE;
    writeLe(this.regs, PCI_MSI_FLAGS, 2, ctrl & ~hidden);
  }

  /** Without per-vector masking the capability ends where the mask register would be. */
  private length(device: Uint8Array): number {
    return readLe(device, PCI_MSI_FLAGS, 2) & PCI_MSI_FLAGS_64BIT ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32;
  }

  get enabled(): boolean {
    return this.vector !== undefined;
  }

  contains(offset: number): boolean {
    return offset >= this.cap + PCI_MSI_FLAGS && offset < this.cap + this.regs.length;
  }

  read(offset: number): number {
    return this.regs[offset - this.cap]!;
  }

  /** A byte write; returns the enable bit's new value when it changed. */
  write(offset: number, byte: number): boolean | undefined {
    const at = offset - this.cap;
    const was = (this.regs[PCI_MSI_FLAGS]! & PCI_MSI_FLAGS_ENABLE) !== 0;
    const enable = PCI_MSI_FLAGS_ENABLE;
    if (at === PCI_MSI_FLAGS) this.regs[at] = (this.regs[at]! & ~(enable | PCI_MSI_FLAGS_QSIZE)) | (byte & enable);
    else if (at >= PCI_MSI_ADDRESS_LO) this.regs[at] = byte;
    const now = (this.regs[PCI_MSI_FLAGS]! & PCI_MSI_FLAGS_ENABLE) !== 0;
    if (now && this.vector) this.route();
    return now !== was ? now : undefined;
  }

  /** The enable bit went to 1: wire the vector, or on a failure nothing (the error is rethrown). */
  enable(): void {
    if (this.vector) return;
    const gsi = this.routing.allocateGsi();
    try {
      this.vector = this.kernel.vector(gsi);
      this.route();
      this.kernel.setIrqs(this.vector.fd, 'VFIO_DEVICE_SET_IRQS(MSI, 1 vector)');
    } catch (e) {
      // All or nothing: a half-wired MSI would read as enabled and keep its GSI, route and irqfd.
      const v = this.vector;
      this.vector = undefined;
      try {
        v?.close();
      } catch {
        // The enable's failure is what the caller needs to see.
      }
      try {
        this.routing.releaseGsi(gsi);
      } catch {
        // As above.
      }
      throw e;
    }
  }

  disable(): void {
    const v = this.vector;
    if (!v) return;
    this.vector = undefined;
    try {
      this.kernel.setIrqs(null, 'VFIO_DEVICE_SET_IRQS(MSI off)');
    } finally {
      v.close();
      this.routing.releaseGsi(v.gsi);
    }
  }

  private route(): void {
    const data = readLe(this.regs, this.is64 ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32, 2);
    const addressHi = this.is64 ? readLe(this.regs, PCI_MSI_ADDRESS_HI, 4) : 0;
    this.routing.setMsi(this.vector!.gsi, { addressLo: readLe(this.regs, PCI_MSI_ADDRESS_LO, 4), addressHi, data });
  }
}
