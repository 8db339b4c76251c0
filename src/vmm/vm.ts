// A KVM virtual machine: the VM fd with KVM's x86 housekeeping pages, the
// in-kernel irqchip and PIT, the guest TSC rate, and memslots following the
// guest memory map.
//
// The TSC rate: without KVM_SET_TSC_KHZ a vCPU gets the rate KVM took when
// it loaded. On a host without constant TSC that is the early calibration;
// once the kernel's refined rate differs by more than KVM's 250 ppm, KVM
// asks for scaling, and a CPU without TSC scaling (KVM logs "user requested
// TSC rate below hardware speed") leaves the vCPU's TSC multiplier at 0:
// KVM's reads of the guest TSC stand still, kvm-clock goes wrong and a
// Linux guest's timers stop for good. KVM_SET_TSC_KHZ(0) on the VM, before
// its vCPUs exist, is the host's rate now, the one their TSCs run at (KVM
// takes it whether or not it reports KVM_CAP_VM_TSC_CONTROL, which says
// only that it can scale).
import { closeFd, ioctl } from '../sys/libc.js';
import * as K from '../sys/kvm.js';
import { SysError } from '../sys/errors.js';
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
      setHostTscRate(fd);
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

function setHostTscRate(vmFd: number): void {
  try {
    ioctl(vmFd, K.KVM_SET_TSC_KHZ, 0, 'KVM_SET_TSC_KHZ(0) (VM)');
  } catch (e) {
    // Kernels before 6.0 have no VM-wide rate; their vCPUs keep KVM's default.
    if (!(e instanceof SysError && e.code === 'ENOTTY')) throw e;
  }
}

function bigintBuf(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}
