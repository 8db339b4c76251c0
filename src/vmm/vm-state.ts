// The VM-wide state KVM holds beside the vCPUs: the in-kernel PICs and
// IOAPIC (pins, masks, what is pending), the PIT, and the kvm-clock. Read
// out of one VM and written into a fresh one (see vcpu-state.ts for why a
// live update needs a fresh VM); the structs stay KVM's own bytes.
import { ioctl } from '../sys/libc.js';
import * as K from '../sys/kvm.js';
import type { Vm } from './vm.js';

export interface VmState {
  /** kvm_irqchip of the PIC master, the PIC slave, then the IOAPIC. */
  irqchips: Buffer[];
  pit: Buffer;
  clock: Buffer;
}

export const IRQCHIPS = [K.KVM_IRQCHIP_PIC_MASTER, K.KVM_IRQCHIP_PIC_SLAVE, K.KVM_IRQCHIP_IOAPIC] as const;

export const VM_BLOBS = {
  irqchip: K.layout.kvm_irqchip.sizeof,
  pit: K.layout.kvm_pit_state2.sizeof,
  clock: K.layout.kvm_clock_data.sizeof,
} as const;

/** Reads the VM's state; every vCPU must be out of KVM_RUN. */
export function saveVm(vm: Vm): VmState {
  const irqchips = IRQCHIPS.map((chip) => {
    const b = Buffer.alloc(VM_BLOBS.irqchip);
    b.writeUInt32LE(chip, K.layout.kvm_irqchip.chip_id);
    ioctl(vm.fd, K.KVM_GET_IRQCHIP, b, `KVM_GET_IRQCHIP(${chip})`);
    return b;
  });
  const pit = Buffer.alloc(VM_BLOBS.pit);
  ioctl(vm.fd, K.KVM_GET_PIT2, pit, 'KVM_GET_PIT2');
  const clock = Buffer.alloc(VM_BLOBS.clock);
  ioctl(vm.fd, K.KVM_GET_CLOCK, clock, 'KVM_GET_CLOCK');
  return { irqchips, pit, clock };
}

/**
 * Writes `s` into a fresh VM, before its vCPUs run. The clock goes last and
 * as KVM_GET_CLOCK gave it: with KVM_CLOCK_REALTIME in its flags KVM
 * advances it by the real time since it was read, so kvm-clock guests see
 * the pause as time that passed (Documentation/virt/kvm/api.rst, KVM_SET_CLOCK).
 */
export function restoreVm(vm: Vm, s: VmState): void {
  s.irqchips.forEach((b, i) => {
    const chip = b.readUInt32LE(K.layout.kvm_irqchip.chip_id);
    if (chip !== IRQCHIPS[i]) throw new RangeError(`irqchip ${i} of the record is chip ${chip}, not ${IRQCHIPS[i]}`);
    ioctl(vm.fd, K.KVM_SET_IRQCHIP, b, `KVM_SET_IRQCHIP(${chip})`);
  });
  ioctl(vm.fd, K.KVM_SET_PIT2, s.pit, 'KVM_SET_PIT2');
  const clock = Buffer.from(s.clock);
  // Only REALTIME is a request on SET; the other flags GET reports are not inputs.
  const F = K.layout.kvm_clock_data.flags;
  clock.writeUInt32LE(clock.readUInt32LE(F) & K.KVM_CLOCK_REALTIME, F);
  ioctl(vm.fd, K.KVM_SET_CLOCK, clock, 'KVM_SET_CLOCK');
}
