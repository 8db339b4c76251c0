// linux/kvm.h (x86_64): the ioctl numbers, capabilities, exit reasons and
// struct layouts Pinion uses, with the header's names. Offsets are bytes.
import { IO, IOR, IOW, IOWR } from './ioctl.js';

const KVMIO = 0xae;

// System ioctls (on /dev/kvm)
export const KVM_GET_API_VERSION = IO(KVMIO, 0x00);
export const KVM_CREATE_VM = IO(KVMIO, 0x01);
export const KVM_CHECK_EXTENSION = IO(KVMIO, 0x03);
export const KVM_GET_VCPU_MMAP_SIZE = IO(KVMIO, 0x04);
export const KVM_GET_SUPPORTED_CPUID = IOWR(KVMIO, 0x05, 8);
export const KVM_API_VERSION = 12;

// VM ioctls
export const KVM_CREATE_VCPU = IO(KVMIO, 0x41);
export const KVM_SET_USER_MEMORY_REGION = IOW(KVMIO, 0x46, 32);
export const KVM_SET_TSS_ADDR = IO(KVMIO, 0x47);
export const KVM_SET_IDENTITY_MAP_ADDR = IOW(KVMIO, 0x48, 8);
export const KVM_SET_USER_MEMORY_REGION2 = IOW(KVMIO, 0x49, 160);
export const KVM_CREATE_IRQCHIP = IO(KVMIO, 0x60);
export const KVM_IRQ_LINE = IOW(KVMIO, 0x61, 8);
export const KVM_SET_GSI_ROUTING = IOW(KVMIO, 0x6a, 8);
export const KVM_IRQFD = IOW(KVMIO, 0x76, 32);
export const KVM_CREATE_PIT2 = IOW(KVMIO, 0x77, 64);
export const KVM_IOEVENTFD = IOW(KVMIO, 0x79, 64);
export const KVM_SIGNAL_MSI = IOW(KVMIO, 0xa5, 32);

// vCPU ioctls
export const KVM_RUN = IO(KVMIO, 0x80);
export const KVM_GET_REGS = IOR(KVMIO, 0x81, 144);
export const KVM_SET_REGS = IOW(KVMIO, 0x82, 144);
export const KVM_GET_SREGS = IOR(KVMIO, 0x83, 312);
export const KVM_SET_SREGS = IOW(KVMIO, 0x84, 312);
export const KVM_SET_CPUID2 = IOW(KVMIO, 0x90, 8);
export const KVM_GET_MP_STATE = IOR(KVMIO, 0x98, 4);
export const KVM_SET_MP_STATE = IOW(KVMIO, 0x99, 4);

// Capabilities (KVM_CHECK_EXTENSION)
export const KVM_CAP_IRQCHIP = 0;
export const KVM_CAP_USER_MEMORY = 3;
export const KVM_CAP_SET_TSS_ADDR = 4;
export const KVM_CAP_NR_MEMSLOTS = 10;
export const KVM_CAP_IRQ_ROUTING = 25;
export const KVM_CAP_IRQFD = 32;
export const KVM_CAP_PIT2 = 33;
export const KVM_CAP_IOEVENTFD = 36;
export const KVM_CAP_SET_IDENTITY_MAP_ADDR = 37;
export const KVM_CAP_SIGNAL_MSI = 77;
export const KVM_CAP_IRQFD_RESAMPLE = 82;
export const KVM_CAP_IMMEDIATE_EXIT = 136;
export const KVM_CAP_USER_MEMORY2 = 231;

export const KVM_MP_STATE_RUNNABLE = 0;

// Exit reasons (kvm_run.exit_reason)
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_EXCEPTION = 1;
export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_FAIL_ENTRY = 9;
export const KVM_EXIT_INTR = 10;
export const KVM_EXIT_INTERNAL_ERROR = 17;
export const KVM_EXIT_SYSTEM_EVENT = 24;
export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;
export const KVM_INTERNAL_ERROR_EMULATION = 1;

export const EXIT_REASON_NAMES: Record<number, string> = {
  0: 'KVM_EXIT_UNKNOWN', 1: 'KVM_EXIT_EXCEPTION', 2: 'KVM_EXIT_IO', 3: 'KVM_EXIT_HYPERCALL', 4: 'KVM_EXIT_DEBUG',
  5: 'KVM_EXIT_HLT', 6: 'KVM_EXIT_MMIO', 7: 'KVM_EXIT_IRQ_WINDOW_OPEN', 8: 'KVM_EXIT_SHUTDOWN', 9: 'KVM_EXIT_FAIL_ENTRY',
  10: 'KVM_EXIT_INTR', 16: 'KVM_EXIT_NMI', 17: 'KVM_EXIT_INTERNAL_ERROR', 24: 'KVM_EXIT_SYSTEM_EVENT',
};

/** struct kvm_run: the fields read by the run loop. */
export const kvm_run = {
  immediate_exit: 1, // __u8
  exit_reason: 8, // __u32
  // union at 32
  io: { direction: 32, size: 33, port: 34, count: 36, data_offset: 40 },
  mmio: { phys_addr: 32, data: 40, len: 48, is_write: 52 },
  fail_entry: { hardware_entry_failure_reason: 32, cpu: 40 },
  internal: { suberror: 32, ndata: 36, data: 40 },
  system_event: { type: 32, ndata: 36, data: 40 },
} as const;

// kvm_userspace_memory_region.flags
export const KVM_MEM_READONLY = 1 << 1;

/** struct kvm_userspace_memory_region (v1). */
export function kvm_userspace_memory_region(slot: number, flags: number, guest_phys_addr: bigint, memory_size: bigint, userspace_addr: bigint): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE(slot, 0);
  b.writeUInt32LE(flags, 4);
  b.writeBigUInt64LE(guest_phys_addr, 8);
  b.writeBigUInt64LE(memory_size, 16);
  b.writeBigUInt64LE(userspace_addr, 24);
  return b;
}

/** struct kvm_userspace_memory_region2: v1's fields, then guest_memfd_offset, guest_memfd, pads. */
export function kvm_userspace_memory_region2(slot: number, flags: number, guest_phys_addr: bigint, memory_size: bigint, userspace_addr: bigint): Buffer {
  const b = Buffer.alloc(160);
  kvm_userspace_memory_region(slot, flags, guest_phys_addr, memory_size, userspace_addr).copy(b, 0);
  return b;
}

/** struct kvm_regs: 18 __u64 in this order. */
export const KVM_REGS_FIELDS = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const;
export type KvmRegs = Record<(typeof KVM_REGS_FIELDS)[number], bigint>;

export function encodeRegs(r: Partial<KvmRegs>): Buffer {
  const b = Buffer.alloc(144);
  KVM_REGS_FIELDS.forEach((f, i) => b.writeBigUInt64LE(r[f] ?? 0n, i * 8));
  return b;
}

export function decodeRegs(b: Buffer): KvmRegs {
  return Object.fromEntries(KVM_REGS_FIELDS.map((f, i) => [f, b.readBigUInt64LE(i * 8)])) as KvmRegs;
}

/** struct kvm_segment (24 bytes). */
export interface KvmSegment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

/** struct kvm_sregs (312 bytes): segments cs ds es fs gs ss tr ldt, then gdt, idt (kvm_dtable), control registers. */
export const kvm_sregs = {
  size: 312,
  segments: ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const,
  gdt: 192,
  idt: 208,
  cr0: 224,
  cr2: 232,
  cr3: 240,
  cr4: 248,
  cr8: 256,
  efer: 264,
  apic_base: 272,
} as const;
export type SegmentName = (typeof kvm_sregs.segments)[number];

export function writeSegment(b: Buffer, name: SegmentName, s: KvmSegment): void {
  const o = kvm_sregs.segments.indexOf(name) * 24;
  b.writeBigUInt64LE(s.base, o);
  b.writeUInt32LE(s.limit, o + 8);
  b.writeUInt16LE(s.selector, o + 12);
  [s.type, s.present, s.dpl, s.db, s.s, s.l, s.g, s.avl, s.unusable].forEach((v, i) => b.writeUInt8(v, o + 14 + i));
}

/** struct kvm_dtable: base, limit. */
export function writeDtable(b: Buffer, at: number, base: bigint, limit: number): void {
  b.writeBigUInt64LE(base, at);
  b.writeUInt16LE(limit, at + 8);
}

/** struct kvm_cpuid2 header (nent, padding) then struct kvm_cpuid_entry2[nent] of 40 bytes. */
export const kvm_cpuid_entry2 = { size: 40, function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24 } as const;
export const KVM_MAX_CPUID_ENTRIES = 256;
/** asm/kvm_para.h: the paravirt leaf and its feature bits (in EAX). */
export const KVM_CPUID_FEATURES = 0x40000001;
export const KVM_FEATURE_ASYNC_PF = 4;
export const KVM_FEATURE_ASYNC_PF_VMEXIT = 10;
export const KVM_FEATURE_ASYNC_PF_INT = 14;

/** struct kvm_pit_config: flags then 15 pad words. */
/** struct kvm_irq_level: irq (GSI), level. */
export function kvm_irq_level(irq: number, level: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(irq, 0);
  b.writeUInt32LE(level, 4);
  return b;
}

export function kvm_pit_config(flags: number): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32LE(flags, 0);
  return b;
}
export const KVM_PIT_SPEAKER_DUMMY = 1;

/** struct kvm_irqfd { __u32 fd; __u32 gsi; __u32 flags; __u32 resamplefd; __u8 pad[16]; } */
export const KVM_IRQFD_FLAG_DEASSIGN = 1 << 0;
export const KVM_IRQFD_FLAG_RESAMPLE = 1 << 1;
export function kvm_irqfd(fd: number, gsi: number, flags: number, resamplefd = 0): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE(fd, 0);
  b.writeUInt32LE(gsi, 4);
  b.writeUInt32LE(flags, 8);
  b.writeUInt32LE(resamplefd, 12);
  return b;
}

/** struct kvm_irq_routing { __u32 nr; __u32 flags; struct kvm_irq_routing_entry entries[]; }, entries of 48 bytes:
 * gsi, type, flags, pad, then the union (irqchip: irqchip, pin; msi: address_lo, address_hi, data, pad). */
export const KVM_IRQ_ROUTING_IRQCHIP = 1;
export const KVM_IRQ_ROUTING_MSI = 2;
export const KVM_IRQCHIP_PIC_MASTER = 0;
export const KVM_IRQCHIP_PIC_SLAVE = 1;
export const KVM_IRQCHIP_IOAPIC = 2;
export type RoutingEntry =
  | { gsi: number; type: 'irqchip'; irqchip: number; pin: number }
  | { gsi: number; type: 'msi'; addressLo: number; addressHi: number; data: number };
export function kvm_irq_routing(entries: RoutingEntry[]): Buffer {
  const b = Buffer.alloc(8 + entries.length * 48);
  b.writeUInt32LE(entries.length, 0);
  entries.forEach((e, i) => {
    const at = 8 + i * 48;
    b.writeUInt32LE(e.gsi, at);
    if (e.type === 'irqchip') {
      b.writeUInt32LE(KVM_IRQ_ROUTING_IRQCHIP, at + 4);
      b.writeUInt32LE(e.irqchip, at + 16);
      b.writeUInt32LE(e.pin, at + 20);
    } else {
      b.writeUInt32LE(KVM_IRQ_ROUTING_MSI, at + 4);
      b.writeUInt32LE(e.addressLo >>> 0, at + 16);
      b.writeUInt32LE(e.addressHi >>> 0, at + 20);
      b.writeUInt32LE(e.data >>> 0, at + 24);
    }
  });
  return b;
}
