// A vCPU: its fd, configured from the VMM thread (CPUID, registers, MP
// state), then run by exactly one thread with VcpuRunner.
import { closeFd, ioctl, mmapFd, MAP_SHARED, type MappedMemory } from '../sys/libc.js';
import * as K from '../sys/kvm.js';
import { SysError } from '../sys/errors.js';
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

  /**
   * Fills KVM's stage-2 page tables for [gpa, gpa + size) (KVM_PRE_FAULT_MEMORY), so the guest's first
   * touch of each page after a hand-over is not a fault into KVM; false where KVM cannot (before 6.10, no
   * TDP). Before the vCPU runs; the range must be in memslots.
   */
  preFault(gpa: bigint, size: bigint): boolean {
    if (!this.vm.kvm.checkExtension(K.KVM_CAP_PRE_FAULT_MEMORY)) return false;
    const b = Buffer.alloc(K.layout.kvm_pre_fault_memory.sizeof);
    const L = K.layout.kvm_pre_fault_memory;
    b.writeBigUInt64LE(gpa, L.gpa);
    b.writeBigUInt64LE(size, L.size);
    // KVM moves gpa and size on as it goes and stops early on a signal: go on from where it left.
    while (b.readBigUInt64LE(L.size) > 0n) {
      try {
        const at = b.readBigUInt64LE(L.gpa);
        ioctl(this.fd, K.KVM_PRE_FAULT_MEMORY, b, `KVM_PRE_FAULT_MEMORY at GPA 0x${at.toString(16)} (vCPU ${this.index})`, {
          size: b.readBigUInt64LE(L.size),
        });
      } catch (e) {
        if (e instanceof SysError && (e.code === 'EINTR' || e.code === 'EAGAIN')) continue;
        if (e instanceof SysError && e.code === 'EOPNOTSUPP') return false;
        throw e;
      }
    }
    return true;
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
