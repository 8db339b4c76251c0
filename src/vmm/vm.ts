// A KVM virtual machine: the VM fd with KVM's x86 housekeeping pages, the
// in-kernel irqchip and PIT, and memslots following the guest memory map.
import { closeFd, ioctl } from '../sys/libc.js';
import * as K from '../sys/kvm.js';
import type { Kvm } from './kvm.js';
import { KvmMemslots } from './memslots.js';
import { KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR } from '../memory/layout.js';

export class Vm {
  readonly memslots: KvmMemslots;

  private constructor(
    readonly kvm: Kvm,
    readonly fd: number,
  ) {
    this.memslots = new KvmMemslots(fd, kvm.memory2);
  }

  static create(kvm: Kvm): Vm {
    const fd = ioctl(kvm.fd, K.KVM_CREATE_VM, 0, 'KVM_CREATE_VM', { path: kvm.path });
    try {
      // Intel VMX needs both even when unused; set them so the VM is the same on either vendor.
      ioctl(fd, K.KVM_SET_IDENTITY_MAP_ADDR, bigintBuf(KVM_IDENTITY_MAP_ADDR), 'KVM_SET_IDENTITY_MAP_ADDR');
      ioctl(fd, K.KVM_SET_TSS_ADDR, Number(KVM_TSS_ADDR), 'KVM_SET_TSS_ADDR');
      ioctl(fd, K.KVM_CREATE_IRQCHIP, 0, 'KVM_CREATE_IRQCHIP');
      ioctl(fd, K.KVM_CREATE_PIT2, K.kvm_pit_config(K.KVM_PIT_SPEAKER_DUMMY), 'KVM_CREATE_PIT2');
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    return new Vm(kvm, fd);
  }

  close(): void {
    closeFd(this.fd);
  }
}

function bigintBuf(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}
