// Per-vCPU CPUID from KVM_GET_SUPPORTED_CPUID: the same features on every
// vCPU (less nested virtualization and async page faults), each with its own
// initial APIC ID. Pure (works on the kvm_cpuid2 buffer).
import {
  kvm_cpuid2 as C,
  kvm_cpuid_entry2 as E,
  KVM_CPUID_FEATURES,
  KVM_FEATURE_ASYNC_PF,
  KVM_FEATURE_ASYNC_PF_INT,
  KVM_FEATURE_ASYNC_PF_VMEXIT,
} from '../sys/kvm.js';

// Async page faults let a guest run other tasks while KVM faults in a page it
// has not got yet. A VM with assigned devices has all its RAM pinned, so they
// buy nothing; and a Linux 7.3 guest that enabled them died in the rig of a
// #PF recursion in __kvm_handle_async_pf during its first seconds.
const HIDDEN_PV_FEATURES = (1 << KVM_FEATURE_ASYNC_PF) | (1 << KVM_FEATURE_ASYNC_PF_VMEXIT) | (1 << KVM_FEATURE_ASYNC_PF_INT);

// No nested virtualization in the guest: a passthrough test guest has no use for it, and a Linux guest built
// with KVM (the rig's kernel is) spends its boot's longest initcall setting it up (svm_init: 1.3-2.8 s of a
// 4 s boot in the rig). CPUID.1:ECX.VMX[5] and CPUID.80000001h:ECX.SVM[2].
const CPUID1_ECX_VMX = 1 << 5;
const CPUID_EXT1_ECX_SVM = 1 << 2;

export function vcpuCpuid(supported: Buffer, index: number, count: number): Buffer {
  const b = Buffer.from(supported);
  const nent = b.readUInt32LE(C.nent);
  for (let i = 0; i < nent; i++) {
    const at = C.entries + i * E.sizeof;
    const fn = b.readUInt32LE(at + E.function);
    if (fn === 1) {
      // EBX[31:24] initial APIC ID, [23:16] logical processors per package; EDX bit 28 HTT with more than one.
      const ebx = b.readUInt32LE(at + E.ebx);
      b.writeUInt32LE(((ebx & 0x0000ffff) | (index << 24) | (count << 16)) >>> 0, at + E.ebx);
      const edx = b.readUInt32LE(at + E.edx);
      b.writeUInt32LE((count > 1 ? edx | (1 << 28) : edx & ~(1 << 28)) >>> 0, at + E.edx);
      b.writeUInt32LE((b.readUInt32LE(at + E.ecx) & ~CPUID1_ECX_VMX) >>> 0, at + E.ecx);
    } else if (fn === 0x80000001) {
      b.writeUInt32LE((b.readUInt32LE(at + E.ecx) & ~CPUID_EXT1_ECX_SVM) >>> 0, at + E.ecx);
    } else if (fn === 0xb || fn === 0x1f) {
      b.writeUInt32LE(index, at + E.edx); // x2APIC ID
    } else if (fn === KVM_CPUID_FEATURES) {
      b.writeUInt32LE((b.readUInt32LE(at + E.eax) & ~HIDDEN_PV_FEATURES) >>> 0, at + E.eax);
    }
  }
  return b;
}

/** The value of one CPUID leaf's register in a kvm_cpuid2 buffer (for tests and reports). */
export function cpuidReg(buf: Buffer, fn: number, index: number, reg: 'eax' | 'ebx' | 'ecx' | 'edx'): number | undefined {
  const nent = buf.readUInt32LE(C.nent);
  for (let i = 0; i < nent; i++) {
    const at = C.entries + i * E.sizeof;
    if (buf.readUInt32LE(at + E.function) === fn && buf.readUInt32LE(at + E.index) === index) return buf.readUInt32LE(at + E[reg]);
  }
  return undefined;
}
