// Interrupt plumbing of a VM: the GSI routing table (the in-kernel PIC and
// IOAPIC pins, plus one MSI route per device vector) and irqfds, so a VFIO
// eventfd injects straight into the guest with no userspace hop.
import { closeFd, EFD_NONBLOCK, eventFd, ioctl } from '../sys/libc.js';
import * as K from '../sys/kvm.js';

/** The board's INTx wiring: bus 0 slot `slot`, pin `pin` (1 = INTA) reaches this IOAPIC pin (GSI), swizzled as on QEMU's boards. */
export function intxPin(slot: number, pin: number): number {
  return 16 + ((slot + pin - 1) % 4);
}

/** GSIs below this are the IOAPIC's 24 pins; MSI routes are allocated above. */
const FIRST_MSI_GSI = 24;

export interface MsiMessage {
  addressLo: number;
  addressHi: number;
  data: number;
}

export class IrqRouting {
  private readonly msi = new Map<number, MsiMessage>();
  private nextGsi = FIRST_MSI_GSI;
  private readonly freed: number[] = [];

  constructor(
    vmFd: number,
    /** KVM_SET_GSI_ROUTING; tests look at the table instead. */
    private readonly setRouting = (entries: K.RoutingEntry[]): void =>
      void ioctl(vmFd, K.KVM_SET_GSI_ROUTING, K.kvm_irq_routing(entries), 'KVM_SET_GSI_ROUTING'),
  ) {}

  allocateGsi(): number {
    return this.freed.pop() ?? this.nextGsi++;
  }

  /** Takes `gsi` itself, as a handed-over VM's vectors keep theirs; refused if it is in use. */
  claimGsi(gsi: number): void {
    if (gsi < FIRST_MSI_GSI) throw new RangeError(`GSI ${gsi} is an IOAPIC pin, not an MSI route`);
    if (gsi >= this.nextGsi) {
      for (let g = this.nextGsi; g < gsi; g++) this.freed.push(g);
      this.nextGsi = gsi + 1;
      return;
    }
    const i = this.freed.indexOf(gsi);
    if (i < 0) throw new RangeError(`GSI ${gsi} is already in use`);
    this.freed.splice(i, 1);
  }

  releaseGsi(gsi: number): void {
    if (this.msi.delete(gsi)) this.commit();
    this.freed.push(gsi);
  }

  /** Routes `gsi` to an MSI message and pushes the whole table (KVM replaces it as one). */
  setMsi(gsi: number, m: MsiMessage): void {
    this.setMsis([[gsi, m]]);
  }

  /** Several routes in one push: each KVM_SET_GSI_ROUTING waits for an SRCU grace period, so a handed-over device's vectors go as one. */
  setMsis(routes: readonly (readonly [number, MsiMessage])[]): void {
    for (const [gsi, m] of routes) this.msi.set(gsi, m);
    if (routes.length) this.commit();
  }

  private commit(): void {
    // KVM_SET_GSI_ROUTING replaces the default table too, so the PIC and IOAPIC pins are restated (as KVM's default).
    const entries: K.RoutingEntry[] = [];
    for (let pin = 0; pin < 24; pin++) {
      if (pin < 16)
        entries.push({ gsi: pin, type: 'irqchip', irqchip: pin < 8 ? K.KVM_IRQCHIP_PIC_MASTER : K.KVM_IRQCHIP_PIC_SLAVE, pin: pin % 8 });
      entries.push({ gsi: pin, type: 'irqchip', irqchip: K.KVM_IRQCHIP_IOAPIC, pin });
    }
    for (const [gsi, m] of this.msi) entries.push({ gsi, type: 'msi', ...m });
    this.setRouting(entries);
  }
}

/**
 * An eventfd bound to a GSI with KVM_IRQFD: a write to it raises the GSI in
 * the guest. Detached (a masked MSI-X vector), writes only add up in the
 * eventfd's counter; re-attaching injects at once if the counter is non-zero.
 */
export class IrqFd {
  private bound = false;

  private constructor(
    private readonly vmFd: number,
    readonly gsi: number,
    readonly fd: number,
  ) {}

  /** A new eventfd for `gsi`, bound unless `attach` is false; nothing is left open if the bind fails. */
  static create(vmFd: number, gsi: number, { attach = true, nonBlocking = false } = {}): IrqFd {
    const irqfd = new IrqFd(vmFd, gsi, eventFd(nonBlocking ? EFD_NONBLOCK : 0));
    try {
      if (attach) irqfd.attach();
    } catch (e) {
      closeFd(irqfd.fd);
      throw e;
    }
    return irqfd;
  }

  /** An irqfd on an eventfd another process made (a live update), detached. */
  static adopt(vmFd: number, gsi: number, fd: number): IrqFd {
    return new IrqFd(vmFd, gsi, fd);
  }

  get attached(): boolean {
    return this.bound;
  }

  attach(): void {
    if (this.bound) return;
    ioctl(this.vmFd, K.KVM_IRQFD, K.kvm_irqfd(this.fd, this.gsi, 0), `KVM_IRQFD(gsi ${this.gsi})`);
    this.bound = true;
  }

  /** KVM waits for in-flight injections before it returns: none arrives after. */
  detach(): void {
    if (!this.bound) return;
    ioctl(this.vmFd, K.KVM_IRQFD, K.kvm_irqfd(this.fd, this.gsi, K.KVM_IRQFD_FLAG_DEASSIGN), `KVM_IRQFD(deassign gsi ${this.gsi})`);
    this.bound = false;
  }

  close(): void {
    try {
      this.detach();
    } finally {
      closeFd(this.fd);
    }
  }
}
