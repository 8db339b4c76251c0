// One vCPU's state as KVM holds it, read out of one VM and written into
// another. A live update needs it because a KVM VM belongs to the process
// that made it: kvm_vm_ioctl and kvm_vcpu_ioctl answer EIO when
// current->mm is not the VM's (virt/kvm/kvm_main.c), so the new process
// makes its own VM and vCPUs and this state moves between them. The structs
// stay KVM's own bytes; only their sizes are checked.
import { bufferAddress, ioctl } from '../sys/libc.js';
import * as K from '../sys/kvm.js';
import type { Vcpu } from './vcpu.js';

/** MSR_IA32_TSC (asm/msr-index.h, not a uAPI header): carried as KVM_VCPU_TSC_OFFSET where the kernel has it. */
export const MSR_IA32_TSC = 0x10;

export interface VcpuState {
  regs: Buffer;
  sregs: Buffer;
  /** kvm_xsave, or KVM_GET_XSAVE2's longer form when KVM_CAP_XSAVE2 says so. */
  xsave: Buffer;
  xcrs: Buffer;
  debugregs: Buffer;
  lapic: Buffer;
  events: Buffer;
  mpState: number;
  msrs: { index: number; data: bigint }[];
  /**
   * The guest's TSC as an offset from the host's: the guest then sees the
   * pause as time that passed, as it would on one VM. Absent where the
   * kernel lacks KVM_VCPU_TSC_OFFSET; the TSC MSR is then among `msrs`.
   */
  tscOffset?: bigint;
  tscKhz: number;
}

/** The fixed sizes of each blob (xsave may be longer: KVM_CAP_XSAVE2). */
export const VCPU_BLOBS = {
  regs: K.layout.kvm_regs.sizeof,
  sregs: K.layout.kvm_sregs.sizeof,
  xsave: K.layout.kvm_xsave.sizeof,
  xcrs: K.layout.kvm_xcrs.sizeof,
  debugregs: K.layout.kvm_debugregs.sizeof,
  lapic: K.layout.kvm_lapic_state.sizeof,
  events: K.layout.kvm_vcpu_events.sizeof,
} as const;

/** Reads vCPU `v`'s state; it must be out of KVM_RUN (paused). `msrIndices` is the host's list (Kvm.msrIndexList). */
export function saveVcpu(v: Vcpu, msrIndices: readonly number[]): VcpuState {
  const get = (req: number, size: number, op: string): Buffer => {
    const b = Buffer.alloc(size);
    ioctl(v.fd, req, b, `${op} (vCPU ${v.index})`);
    return b;
  };
  const xsave2 = v.vm.kvm.checkExtension(K.KVM_CAP_XSAVE2);
  const tscOffset = tscOffsetAttr(v) ? getTscOffset(v) : undefined;
  const msrs = readMsrs(
    v,
    msrIndices.filter((i) => tscOffset === undefined || i !== MSR_IA32_TSC),
  );
  return {
    regs: get(K.KVM_GET_REGS, VCPU_BLOBS.regs, 'KVM_GET_REGS'),
    sregs: get(K.KVM_GET_SREGS, VCPU_BLOBS.sregs, 'KVM_GET_SREGS'),
    xsave:
      xsave2 > VCPU_BLOBS.xsave ? get(K.KVM_GET_XSAVE2, xsave2, 'KVM_GET_XSAVE2') : get(K.KVM_GET_XSAVE, VCPU_BLOBS.xsave, 'KVM_GET_XSAVE'),
    xcrs: get(K.KVM_GET_XCRS, VCPU_BLOBS.xcrs, 'KVM_GET_XCRS'),
    debugregs: get(K.KVM_GET_DEBUGREGS, VCPU_BLOBS.debugregs, 'KVM_GET_DEBUGREGS'),
    lapic: get(K.KVM_GET_LAPIC, VCPU_BLOBS.lapic, 'KVM_GET_LAPIC'),
    events: get(K.KVM_GET_VCPU_EVENTS, VCPU_BLOBS.events, 'KVM_GET_VCPU_EVENTS'),
    mpState: get(K.KVM_GET_MP_STATE, K.layout.kvm_mp_state.sizeof, 'KVM_GET_MP_STATE').readUInt32LE(0),
    msrs,
    tscOffset,
    tscKhz: ioctl(v.fd, K.KVM_GET_TSC_KHZ, 0, `KVM_GET_TSC_KHZ (vCPU ${v.index})`),
  };
}

/** The guest's TSC now (MSR_IA32_TSC through KVM_GET_MSRS), the vCPU out of KVM_RUN: where a guest that clocks itself finds the pause. */
export function guestTsc(v: Vcpu): bigint {
  const [m] = readMsrs(v, [MSR_IA32_TSC]);
  if (!m) throw new Error(`KVM_GET_MSRS (vCPU ${v.index}): MSR_IA32_TSC not read`);
  return m.data;
}

/**
 * Writes `s` into a fresh vCPU whose CPUID is already set. The order is
 * QEMU's and Firecracker's where it matters: special registers (EFER, APIC
 * base) before the LAPIC, the TSC offset before the MSRs (a TSC deadline is
 * armed against the guest's TSC as it is when written), the LAPIC before the
 * MSRs (the deadline MSR only takes in TSC-deadline mode), events last.
 */
export function restoreVcpu(v: Vcpu, s: VcpuState): void {
  const set = (req: number, b: Buffer, op: string): void => void ioctl(v.fd, req, b, `${op} (vCPU ${v.index})`);
  const khz = ioctl(v.fd, K.KVM_GET_TSC_KHZ, 0, `KVM_GET_TSC_KHZ (vCPU ${v.index})`);
  if (khz !== s.tscKhz) ioctl(v.fd, K.KVM_SET_TSC_KHZ, s.tscKhz, `KVM_SET_TSC_KHZ(${s.tscKhz}) (vCPU ${v.index})`);
  set(K.KVM_SET_SREGS, s.sregs, 'KVM_SET_SREGS');
  set(K.KVM_SET_REGS, s.regs, 'KVM_SET_REGS');
  set(K.KVM_SET_XSAVE, s.xsave, 'KVM_SET_XSAVE');
  set(K.KVM_SET_XCRS, s.xcrs, 'KVM_SET_XCRS');
  set(K.KVM_SET_DEBUGREGS, s.debugregs, 'KVM_SET_DEBUGREGS');
  if (s.tscOffset !== undefined) setTscOffset(v, s.tscOffset);
  set(K.KVM_SET_LAPIC, s.lapic, 'KVM_SET_LAPIC');
  writeMsrs(v, s.msrs);
  set(K.KVM_SET_MP_STATE, K.kvm_mp_state(s.mpState), 'KVM_SET_MP_STATE');
  // What GET reports as valid, plus the fields SET takes only when told (a pending NMI, the SIPI vector).
  const events = Buffer.from(s.events);
  const at = K.layout.kvm_vcpu_events.flags;
  events.writeUInt32LE((events.readUInt32LE(at) | K.KVM_VCPUEVENT_VALID_NMI_PENDING | K.KVM_VCPUEVENT_VALID_SIPI_VECTOR) >>> 0, at);
  set(K.KVM_SET_VCPU_EVENTS, events, 'KVM_SET_VCPU_EVENTS');
}

function tscAttr(value: Buffer): Buffer {
  const A = K.layout.kvm_device_attr;
  const b = Buffer.alloc(A.sizeof);
  b.writeUInt32LE(K.KVM_VCPU_TSC_CTRL, A.group);
  b.writeBigUInt64LE(BigInt(K.KVM_VCPU_TSC_OFFSET), A.attr);
  b.writeBigUInt64LE(bufferAddress(value), A.addr);
  return b;
}

function tscOffsetAttr(v: Vcpu): boolean {
  try {
    ioctl(v.fd, K.KVM_HAS_DEVICE_ATTR, tscAttr(Buffer.alloc(8)), 'KVM_HAS_DEVICE_ATTR');
    return true;
  } catch {
    return false;
  }
}

function getTscOffset(v: Vcpu): bigint {
  const value = Buffer.alloc(8);
  ioctl(v.fd, K.KVM_GET_DEVICE_ATTR, tscAttr(value), `KVM_GET_DEVICE_ATTR(TSC offset) (vCPU ${v.index})`);
  return value.readBigUInt64LE(0);
}

function setTscOffset(v: Vcpu, offset: bigint): void {
  const value = Buffer.alloc(8);
  value.writeBigUInt64LE(offset);
  ioctl(v.fd, K.KVM_SET_DEVICE_ATTR, tscAttr(value), `KVM_SET_DEVICE_ATTR(TSC offset) (vCPU ${v.index})`);
}

function msrBuffer(entries: readonly { index: number; data: bigint }[]): Buffer {
  const M = K.layout.kvm_msrs,
    E = K.layout.kvm_msr_entry;
  const b = Buffer.alloc(M.sizeof + entries.length * E.sizeof);
  b.writeUInt32LE(entries.length, M.nmsrs);
  entries.forEach((e, i) => {
    b.writeUInt32LE(e.index, M.sizeof + i * E.sizeof + E.index);
    b.writeBigUInt64LE(e.data, M.sizeof + i * E.sizeof + E.data);
  });
  return b;
}

/**
 * KVM_GET_MSRS of every index KVM lists. It stops at the first MSR this vCPU
 * cannot read (one the guest's CPUID does not offer): that one is left out
 * and the rest read on, as Firecracker does.
 */
function readMsrs(v: Vcpu, indices: readonly number[]): { index: number; data: bigint }[] {
  const out: { index: number; data: bigint }[] = [];
  let rest = indices.map((index) => ({ index, data: 0n }));
  while (rest.length) {
    const b = msrBuffer(rest);
    const n = ioctl(v.fd, K.KVM_GET_MSRS, b, `KVM_GET_MSRS (vCPU ${v.index})`);
    const E = K.layout.kvm_msr_entry;
    for (let i = 0; i < n; i++)
      out.push({ index: rest[i]!.index, data: b.readBigUInt64LE(K.layout.kvm_msrs.sizeof + i * E.sizeof + E.data) });
    rest = rest.slice(n + 1);
  }
  return out;
}

function writeMsrs(v: Vcpu, msrs: readonly { index: number; data: bigint }[]): void {
  if (!msrs.length) return;
  const n = ioctl(v.fd, K.KVM_SET_MSRS, msrBuffer(msrs), `KVM_SET_MSRS (vCPU ${v.index})`);
  if (n !== msrs.length)
    throw new Error(
      `KVM_SET_MSRS (vCPU ${v.index}) took ${n} of ${msrs.length} MSRs: MSR 0x${msrs[n]!.index.toString(16)} was refused (a CPUID that does not offer it?)`,
    );
}
