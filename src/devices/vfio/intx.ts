// INTx of an assigned device: VFIO signals the level-triggered interrupt on
// an eventfd bound to an IOAPIC pin with KVM_IRQFD; when the guest EOIs, KVM
// signals the resample eventfd, which VFIO takes as "unmask" (the device line
// is masked by VFIO from assertion to EOI). No userspace hop either way.
// vfio-pci runs one interrupt type at a time: INTx is off while MSI or MSI-X is on.
import { closeFd, eventFd, ioctl } from '../../sys/libc.js';
import * as K from '../../sys/kvm.js';
import * as V from '../../sys/vfio.js';

export class Intx {
  private fds: { trigger: number; resample: number } | undefined;

  constructor(
    private readonly deviceFd: number,
    private readonly path: string,
    private readonly vmFd: number,
    /** The IOAPIC pin (= GSI) the device's INTx line is wired to. */
    readonly gsi: number,
  ) {}

  /** Whether VFIO offers INTx for the device (a function with no interrupt pin has none). */
  static offered(deviceFd: number, path: string): boolean {
    const b = V.vfio_irq_info.make(V.VFIO_PCI_INTX_IRQ_INDEX);
    ioctl(deviceFd, V.VFIO_DEVICE_GET_IRQ_INFO, b, 'VFIO_DEVICE_GET_IRQ_INFO(INTx)', { path });
    return V.vfio_irq_info.count(b) > 0;
  }

  get enabled(): boolean {
    return this.fds !== undefined;
  }

  enable(): void {
    if (this.fds) return;
    const trigger = eventFd();
    const resample = eventFd();
    try {
      ioctl(
        this.vmFd,
        K.KVM_IRQFD,
        K.kvm_irqfd(trigger, this.gsi, K.KVM_IRQFD_FLAG_RESAMPLE, resample),
        `KVM_IRQFD(resample, gsi ${this.gsi})`,
      );
      this.fds = { trigger, resample };
      this.set(V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_TRIGGER, [trigger], 'INTx trigger');
      this.set(V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_UNMASK, [resample], 'INTx unmask');
    } catch (e) {
      if (this.fds) this.disable();
      else {
        closeFd(trigger);
        closeFd(resample);
      }
      throw e;
    }
  }

  /**
   * A handed-over function's INTx taken here (the other process's trigger replaced by this one's), then
   * unmasked: vfio-pci masks the line from an assertion until an unmask, and the EOI that would send
   * it went to the other VM's resample eventfd.
   */
  takeOver(): void {
    if (this.fds) {
      this.set(V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_TRIGGER, [this.fds.trigger], 'INTx trigger');
      this.set(V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_UNMASK, [this.fds.resample], 'INTx unmask');
    } else this.enable();
    this.set(V.VFIO_IRQ_SET_DATA_NONE | V.VFIO_IRQ_SET_ACTION_UNMASK, [], 'INTx unmask now');
  }

  /** This VM lets INTx go to another process: its irqfd off and fds closed here, vfio-pci's INTx left on. */
  release(): void {
    if (!this.fds) return;
    const { trigger, resample } = this.fds;
    this.fds = undefined;
    try {
      ioctl(this.vmFd, K.KVM_IRQFD, K.kvm_irqfd(trigger, this.gsi, K.KVM_IRQFD_FLAG_DEASSIGN), `KVM_IRQFD(deassign gsi ${this.gsi})`);
    } finally {
      closeFd(trigger);
      closeFd(resample);
    }
  }

  disable(): void {
    if (!this.fds) return;
    const { trigger, resample } = this.fds;
    this.fds = undefined;
    try {
      this.set(V.VFIO_IRQ_SET_DATA_NONE | V.VFIO_IRQ_SET_ACTION_TRIGGER, [], 'INTx off');
    } finally {
      ioctl(this.vmFd, K.KVM_IRQFD, K.kvm_irqfd(trigger, this.gsi, K.KVM_IRQFD_FLAG_DEASSIGN), `KVM_IRQFD(deassign gsi ${this.gsi})`);
      closeFd(trigger);
      closeFd(resample);
    }
  }

  private set(flags: number, fds: number[], what: string): void {
    ioctl(
      this.deviceFd,
      V.VFIO_DEVICE_SET_IRQS,
      V.vfio_irq_set(flags, V.VFIO_PCI_INTX_IRQ_INDEX, 0, fds),
      `VFIO_DEVICE_SET_IRQS(${what})`,
      { path: this.path },
    );
  }
}
