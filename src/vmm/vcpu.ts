// A vCPU: its fd, configured from the VMM thread (CPUID, registers, MP
// state), then run by exactly one thread with VcpuRunner.
import { closeFd, ioctl, mmapFd, MAP_SHARED, type MappedMemory } from '../sys/libc.js';
import * as K from '../sys/kvm.js';
import type { Vm } from './vm.js';

export class Vcpu {
  /** What setCpuid gave KVM: a live update hands it to the next VM without asking KVM, whose vCPU ioctls wait while KVM_RUN holds the vCPU. */
  private given: Buffer | undefined;

  private constructor(
    readonly vm: Vm,
    readonly index: number,
    readonly fd: number,
    /** This thread's view of kvm_run, to set immediate_exit when stopping. */
    private readonly run: MappedMemory,
  ) {}

  static create(vm: Vm, index: number): Vcpu {
    const fd = ioctl(vm.fd, K.KVM_CREATE_VCPU, index, `KVM_CREATE_VCPU(${index})`);
    try {
      return new Vcpu(vm, index, fd, mmapFd(vm.kvm.vcpuMmapSize, MAP_SHARED, fd, 0n, `vcpu${index} kvm_run`));
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  setCpuid(cpuid: Buffer): void {
    ioctl(this.fd, K.KVM_SET_CPUID2, cpuid, 'KVM_SET_CPUID2');
    this.given = Buffer.from(cpuid);
  }

  /** The CPUID the guest runs with (kvm_cpuid2 and its entries), as setCpuid gave it. */
  get cpuid(): Buffer {
    if (!this.given) throw new Error(`vCPU ${this.index} has no CPUID set`);
    return this.given;
  }

  getSregs(): Buffer {
    const b = Buffer.alloc(K.kvm_sregs.sizeof);
    ioctl(this.fd, K.KVM_GET_SREGS, b, 'KVM_GET_SREGS');
    return b;
  }

  setSregs(b: Buffer): void {
    ioctl(this.fd, K.KVM_SET_SREGS, b, 'KVM_SET_SREGS');
  }

  setRegs(r: Partial<K.KvmRegs>): void {
    ioctl(this.fd, K.KVM_SET_REGS, K.encodeRegs(r), 'KVM_SET_REGS');
  }

  /** With the in-kernel irqchip only the BSP starts runnable; the others wait for INIT/SIPI unless told. */
  setRunnable(): void {
    ioctl(this.fd, K.KVM_SET_MP_STATE, K.kvm_mp_state(K.KVM_MP_STATE_RUNNABLE), 'KVM_SET_MP_STATE');
  }

  /** Makes the next (or current, once kicked) KVM_RUN return at once. */
  requestImmediateExit(): void {
    this.run.bytes[K.kvm_run.immediate_exit] = 1;
  }

  close(): void {
    this.run.unmap();
    closeFd(this.fd);
  }
}
