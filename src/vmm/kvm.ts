// /dev/kvm: the API version and the capabilities Pinion needs, checked once
// with a message that names what is missing.
import { existsSync } from 'node:fs';
import { closeFd, ioctl, openPath } from '../sys/libc.js';
import { SysError } from '../sys/errors.js';
import * as K from '../sys/kvm.js';

// Room for every entry KVM_GET_SUPPORTED_CPUID can return: the kernel's own
// limit, KVM_MAX_CPUID_ENTRIES in asm/kvm_host.h (not a uAPI header).
const KVM_MAX_CPUID_ENTRIES = 256;

export class KvmUnavailable extends Error {
  override readonly name = 'KvmUnavailable';
}

const REQUIRED: [number, string][] = [
  [K.KVM_CAP_USER_MEMORY, 'KVM_CAP_USER_MEMORY'],
  [K.KVM_CAP_IRQCHIP, 'KVM_CAP_IRQCHIP'],
  [K.KVM_CAP_IRQFD, 'KVM_CAP_IRQFD'],
  [K.KVM_CAP_IOEVENTFD, 'KVM_CAP_IOEVENTFD'],
  [K.KVM_CAP_IRQ_ROUTING, 'KVM_CAP_IRQ_ROUTING'],
  [K.KVM_CAP_SIGNAL_MSI, 'KVM_CAP_SIGNAL_MSI'],
  [K.KVM_CAP_SET_TSS_ADDR, 'KVM_CAP_SET_TSS_ADDR'],
  [K.KVM_CAP_SET_IDENTITY_MAP_ADDR, 'KVM_CAP_SET_IDENTITY_MAP_ADDR'],
  [K.KVM_CAP_PIT2, 'KVM_CAP_PIT2'],
  [K.KVM_CAP_IMMEDIATE_EXIT, 'KVM_CAP_IMMEDIATE_EXIT'],
];

export class Kvm {
  private constructor(
    readonly fd: number,
    readonly path: string,
    /** KVM_SET_USER_MEMORY_REGION2 is there (else v1). */
    readonly memory2: boolean,
    readonly vcpuMmapSize: number,
  ) {}

  /** Opens /dev/kvm; KvmUnavailable when there is none or it lacks what Pinion needs. */
  static open(path = '/dev/kvm', hint = 'pinion rig -- pinion run ...', adoptFd?: number): Kvm {
    if (adoptFd === undefined && !existsSync(path))
      throw new KvmUnavailable(`no ${path} on this machine (KVM is not available here); run Pinion inside the test rig: ${hint}`);
    let fd: number;
    try {
      fd = adoptFd ?? openPath(path);
    } catch (e) {
      if (e instanceof SysError && (e.code === 'EACCES' || e.code === 'EPERM'))
        throw new KvmUnavailable(
          `cannot open ${path}: ${e.code}; add this user to the kvm group (sudo usermod -aG kvm $USER) or run as root`,
        );
      throw e;
    }
    try {
      const version = ioctl(fd, K.KVM_GET_API_VERSION, 0, 'KVM_GET_API_VERSION', { path });
      if (version !== K.KVM_API_VERSION) throw new KvmUnavailable(`${path} speaks KVM API ${version}, Pinion needs ${K.KVM_API_VERSION}`);
      const missing = REQUIRED.filter(([cap]) => ioctl(fd, K.KVM_CHECK_EXTENSION, cap, 'KVM_CHECK_EXTENSION', { path }) <= 0).map(
        ([, n]) => n,
      );
      if (missing.length)
        throw new KvmUnavailable(
          `${path} lacks ${missing.join(', ')}, which Pinion needs; use a kernel with KVM built with these (the rig kernel has them: pinion rig)`,
        );
      const memory2 = ioctl(fd, K.KVM_CHECK_EXTENSION, K.KVM_CAP_USER_MEMORY2, 'KVM_CHECK_EXTENSION', { path }) > 0;
      const mmapSize = ioctl(fd, K.KVM_GET_VCPU_MMAP_SIZE, 0, 'KVM_GET_VCPU_MMAP_SIZE', { path });
      return new Kvm(fd, path, memory2, mmapSize);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  checkExtension(cap: number): number {
    return ioctl(this.fd, K.KVM_CHECK_EXTENSION, cap, 'KVM_CHECK_EXTENSION', { path: this.path });
  }

  /** KVM_GET_SUPPORTED_CPUID: the raw kvm_cpuid2 buffer (header + entries). */
  supportedCpuid(): Buffer {
    const { entries, nent } = K.kvm_cpuid2;
    const b = Buffer.alloc(entries + KVM_MAX_CPUID_ENTRIES * K.kvm_cpuid_entry2.sizeof);
    b.writeUInt32LE(KVM_MAX_CPUID_ENTRIES, nent);
    ioctl(this.fd, K.KVM_GET_SUPPORTED_CPUID, b, 'KVM_GET_SUPPORTED_CPUID', { path: this.path });
    return b.subarray(0, entries + b.readUInt32LE(nent) * K.kvm_cpuid_entry2.sizeof);
  }

  /** KVM_GET_MSR_INDEX_LIST: the MSRs a vCPU's state includes (a first call with room for none learns how many). */
  msrIndexList(): number[] {
    const head = Buffer.alloc(K.layout.kvm_msr_list.sizeof);
    try {
      ioctl(this.fd, K.KVM_GET_MSR_INDEX_LIST, head, 'KVM_GET_MSR_INDEX_LIST', { path: this.path });
    } catch (e) {
      if (!(e instanceof SysError && e.code === 'E2BIG')) throw e;
    }
    const n = head.readUInt32LE(K.layout.kvm_msr_list.nmsrs);
    const b = Buffer.alloc(K.layout.kvm_msr_list.sizeof + 4 * n);
    b.writeUInt32LE(n, K.layout.kvm_msr_list.nmsrs);
    ioctl(this.fd, K.KVM_GET_MSR_INDEX_LIST, b, 'KVM_GET_MSR_INDEX_LIST', { path: this.path });
    return Array.from({ length: b.readUInt32LE(0) }, (_, i) => b.readUInt32LE(K.layout.kvm_msr_list.sizeof + 4 * i));
  }

  close(): void {
    closeFd(this.fd);
  }
}
