// linux/kvm.h (x86_64): the ioctl numbers, capabilities, exit reasons and
// struct layouts Pinion uses, with the header's names. Offsets are bytes.
import { IO, IOR, IOW, IOWR } from './ioctl.js';
import type { Offsets } from './layout.js';

const KVMIO = 0xae;

/** struct kvm_regs: 18 __u64 in this order. */
export const KVM_REGS_FIELDS = [
  'rax',
  'rbx',
  'rcx',
  'rdx',
  'rsi',
  'rdi',
  'rsp',
  'rbp',
  'r8',
  'r9',
  'r10',
  'r11',
  'r12',
  'r13',
  'r14',
  'r15',
  'rip',
  'rflags',
] as const;
type KvmRegName = (typeof KVM_REGS_FIELDS)[number];
/** struct kvm_segment (24 bytes) at `at`. */
const segment = (at: number) => ({
  base: at,
  limit: at + 8,
  selector: at + 12,
  type: at + 14,
  present: at + 15,
  dpl: at + 16,
  db: at + 17,
  s: at + 18,
  l: at + 19,
  g: at + 20,
  avl: at + 21,
  unusable: at + 22,
});

/** Struct layouts (see layout.ts). */
export const layout = {
  kvm_run: {
    immediate_exit: 1, // __u8
    exit_reason: 8, // __u32
    // the exit union, at 32
    io: { direction: 32, size: 33, port: 34, count: 36, data_offset: 40 },
    mmio: { phys_addr: 32, data: 40, len: 48, is_write: 52 },
    fail_entry: { hardware_entry_failure_reason: 32, cpu: 40 },
    internal: { suberror: 32, ndata: 36, data: 40 },
    system_event: { type: 32, ndata: 36, data: 40 },
  },
  kvm_userspace_memory_region: { sizeof: 32, slot: 0, flags: 4, guest_phys_addr: 8, memory_size: 16, userspace_addr: 24 },
  // v1's fields, then guest_memfd_offset, guest_memfd and padding Pinion leaves zero.
  kvm_userspace_memory_region2: { sizeof: 160, slot: 0, flags: 4, guest_phys_addr: 8, memory_size: 16, userspace_addr: 24 },
  kvm_regs: { sizeof: 144, ...(Object.fromEntries(KVM_REGS_FIELDS.map((f, i) => [f, i * 8])) as Record<KvmRegName, number>) },
  kvm_sregs: {
    sizeof: 312,
    cs: segment(0),
    ds: segment(24),
    es: segment(48),
    fs: segment(72),
    gs: segment(96),
    ss: segment(120),
    tr: segment(144),
    ldt: segment(168),
    gdt: { base: 192, limit: 200 },
    idt: { base: 208, limit: 216 },
    cr0: 224,
    cr2: 232,
    cr3: 240,
    cr4: 248,
    cr8: 256,
    efer: 264,
    apic_base: 272,
  },
  kvm_mp_state: { sizeof: 4, mp_state: 0 },
  kvm_cpuid2: { sizeof: 8, nent: 0, entries: 8 },
  kvm_cpuid_entry2: { sizeof: 40, function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24 },
  kvm_irq_level: { sizeof: 8, irq: 0, level: 4 },
  kvm_pre_fault_memory: { sizeof: 64, gpa: 0, size: 8, flags: 16 },
  kvm_pit_config: { sizeof: 64, flags: 0 },
  kvm_irqfd: { sizeof: 32, fd: 0, gsi: 4, flags: 8, resamplefd: 12 },
  kvm_irq_routing: { sizeof: 8, nr: 0, flags: 4, entries: 8 },
  kvm_irq_routing_entry: {
    sizeof: 48,
    gsi: 0,
    type: 4,
    flags: 8,
    u: { irqchip: { irqchip: 16, pin: 20 }, msi: { address_lo: 16, address_hi: 20, data: 24 } },
  },
  // The state a live update carries from one VM to the next: opaque to Pinion except for these fields.
  kvm_msr_list: { sizeof: 4, nmsrs: 0 },
  kvm_msrs: { sizeof: 8, nmsrs: 0 },
  kvm_msr_entry: { sizeof: 16, index: 0, data: 8 },
  kvm_lapic_state: { sizeof: 1024 },
  kvm_xsave: { sizeof: 4096 },
  kvm_xcrs: { sizeof: 392, nr_xcrs: 0 },
  kvm_debugregs: { sizeof: 128 },
  kvm_vcpu_events: { sizeof: 64, flags: 20 },
  kvm_irqchip: { sizeof: 520, chip_id: 0, chip: 8 },
  kvm_pit_state2: { sizeof: 112, flags: 72 },
  kvm_clock_data: { sizeof: 48, clock: 0, flags: 8, realtime: 16, host_tsc: 24 },
  kvm_device_attr: { sizeof: 24, flags: 0, group: 4, attr: 8, addr: 16 },
} as const satisfies Record<string, Offsets>;
const L = layout;

// System ioctls (on /dev/kvm)
export const KVM_GET_API_VERSION = IO(KVMIO, 0x00);
export const KVM_CREATE_VM = IO(KVMIO, 0x01);
export const KVM_CHECK_EXTENSION = IO(KVMIO, 0x03);
export const KVM_GET_VCPU_MMAP_SIZE = IO(KVMIO, 0x04);
export const KVM_GET_SUPPORTED_CPUID = IOWR(KVMIO, 0x05, L.kvm_cpuid2.sizeof);
export const KVM_GET_MSR_INDEX_LIST = IOWR(KVMIO, 0x02, L.kvm_msr_list.sizeof);
export const KVM_API_VERSION = 12;

// VM ioctls
export const KVM_CREATE_VCPU = IO(KVMIO, 0x41);
export const KVM_SET_USER_MEMORY_REGION = IOW(KVMIO, 0x46, L.kvm_userspace_memory_region.sizeof);
export const KVM_SET_TSS_ADDR = IO(KVMIO, 0x47);
export const KVM_SET_IDENTITY_MAP_ADDR = IOW(KVMIO, 0x48, 8);
export const KVM_SET_USER_MEMORY_REGION2 = IOW(KVMIO, 0x49, L.kvm_userspace_memory_region2.sizeof);
export const KVM_CREATE_IRQCHIP = IO(KVMIO, 0x60);
export const KVM_IRQ_LINE = IOW(KVMIO, 0x61, L.kvm_irq_level.sizeof);
export const KVM_GET_IRQCHIP = IOWR(KVMIO, 0x62, L.kvm_irqchip.sizeof);
// _IOR although it writes: so the header has it.
export const KVM_SET_IRQCHIP = IOR(KVMIO, 0x63, L.kvm_irqchip.sizeof);
export const KVM_SET_GSI_ROUTING = IOW(KVMIO, 0x6a, L.kvm_irq_routing.sizeof);
export const KVM_IRQFD = IOW(KVMIO, 0x76, L.kvm_irqfd.sizeof);
export const KVM_CREATE_PIT2 = IOW(KVMIO, 0x77, L.kvm_pit_config.sizeof);
export const KVM_IOEVENTFD = IOW(KVMIO, 0x79, 64);
export const KVM_SET_CLOCK = IOW(KVMIO, 0x7b, L.kvm_clock_data.sizeof);
export const KVM_GET_CLOCK = IOR(KVMIO, 0x7c, L.kvm_clock_data.sizeof);
export const KVM_GET_PIT2 = IOR(KVMIO, 0x9f, L.kvm_pit_state2.sizeof);
export const KVM_SET_PIT2 = IOW(KVMIO, 0xa0, L.kvm_pit_state2.sizeof);
export const KVM_SIGNAL_MSI = IOW(KVMIO, 0xa5, 32);

// vCPU ioctls
export const KVM_RUN = IO(KVMIO, 0x80);
export const KVM_GET_REGS = IOR(KVMIO, 0x81, L.kvm_regs.sizeof);
export const KVM_SET_REGS = IOW(KVMIO, 0x82, L.kvm_regs.sizeof);
export const KVM_GET_SREGS = IOR(KVMIO, 0x83, L.kvm_sregs.sizeof);
export const KVM_SET_SREGS = IOW(KVMIO, 0x84, L.kvm_sregs.sizeof);
export const KVM_SET_CPUID2 = IOW(KVMIO, 0x90, L.kvm_cpuid2.sizeof);
export const KVM_GET_MP_STATE = IOR(KVMIO, 0x98, L.kvm_mp_state.sizeof);
export const KVM_SET_MP_STATE = IOW(KVMIO, 0x99, L.kvm_mp_state.sizeof);
export const KVM_GET_MSRS = IOWR(KVMIO, 0x88, L.kvm_msrs.sizeof);
export const KVM_SET_MSRS = IOW(KVMIO, 0x89, L.kvm_msrs.sizeof);
export const KVM_GET_LAPIC = IOR(KVMIO, 0x8e, L.kvm_lapic_state.sizeof);
export const KVM_SET_LAPIC = IOW(KVMIO, 0x8f, L.kvm_lapic_state.sizeof);
export const KVM_GET_VCPU_EVENTS = IOR(KVMIO, 0x9f, L.kvm_vcpu_events.sizeof);
export const KVM_SET_VCPU_EVENTS = IOW(KVMIO, 0xa0, L.kvm_vcpu_events.sizeof);
export const KVM_GET_DEBUGREGS = IOR(KVMIO, 0xa1, L.kvm_debugregs.sizeof);
export const KVM_SET_DEBUGREGS = IOW(KVMIO, 0xa2, L.kvm_debugregs.sizeof);
export const KVM_SET_TSC_KHZ = IO(KVMIO, 0xa2);
export const KVM_GET_TSC_KHZ = IO(KVMIO, 0xa3);
export const KVM_GET_XSAVE = IOR(KVMIO, 0xa4, L.kvm_xsave.sizeof);
export const KVM_SET_XSAVE = IOW(KVMIO, 0xa5, L.kvm_xsave.sizeof);
export const KVM_GET_XCRS = IOR(KVMIO, 0xa6, L.kvm_xcrs.sizeof);
export const KVM_SET_XCRS = IOW(KVMIO, 0xa7, L.kvm_xcrs.sizeof);
export const KVM_GET_XSAVE2 = IOR(KVMIO, 0xcf, L.kvm_xsave.sizeof);
export const KVM_PRE_FAULT_MEMORY = IOWR(KVMIO, 0xd5, L.kvm_pre_fault_memory.sizeof);
export const KVM_SET_DEVICE_ATTR = IOW(KVMIO, 0xe1, L.kvm_device_attr.sizeof);
export const KVM_GET_DEVICE_ATTR = IOW(KVMIO, 0xe2, L.kvm_device_attr.sizeof);
export const KVM_HAS_DEVICE_ATTR = IOW(KVMIO, 0xe3, L.kvm_device_attr.sizeof);

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
export const KVM_CAP_ADJUST_CLOCK = 39;
export const KVM_CAP_VCPU_EVENTS = 41;
export const KVM_CAP_DEBUGREGS = 50;
export const KVM_CAP_XSAVE = 55;
export const KVM_CAP_XCRS = 56;
export const KVM_CAP_GET_TSC_KHZ = 61;
export const KVM_CAP_SIGNAL_MSI = 77;
export const KVM_CAP_IRQFD_RESAMPLE = 82;
export const KVM_CAP_VCPU_ATTRIBUTES = 127;
export const KVM_CAP_IMMEDIATE_EXIT = 136;
export const KVM_CAP_XSAVE2 = 208;
export const KVM_CAP_USER_MEMORY2 = 231;
export const KVM_CAP_PRE_FAULT_MEMORY = 236;

export const KVM_MP_STATE_RUNNABLE = 0;

// kvm_vcpu_events.flags: on KVM_SET_VCPU_EVENTS, which optional fields to take.
export const KVM_VCPUEVENT_VALID_NMI_PENDING = 0x1;
export const KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x2;
// kvm_clock_data.flags: KVM_SET_CLOCK with REALTIME advances the clock by the real time since `realtime`.
export const KVM_CLOCK_REALTIME = 1 << 2;
// KVM_{GET,SET,HAS}_DEVICE_ATTR on a vCPU: the TSC offset from the host's TSC.
export const KVM_VCPU_TSC_CTRL = 0;
export const KVM_VCPU_TSC_OFFSET = 0;

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
  0: 'KVM_EXIT_UNKNOWN',
  1: 'KVM_EXIT_EXCEPTION',
  2: 'KVM_EXIT_IO',
  3: 'KVM_EXIT_HYPERCALL',
  4: 'KVM_EXIT_DEBUG',
  5: 'KVM_EXIT_HLT',
  6: 'KVM_EXIT_MMIO',
  7: 'KVM_EXIT_IRQ_WINDOW_OPEN',
  8: 'KVM_EXIT_SHUTDOWN',
  9: 'KVM_EXIT_FAIL_ENTRY',
  10: 'KVM_EXIT_INTR',
  16: 'KVM_EXIT_NMI',
  17: 'KVM_EXIT_INTERNAL_ERROR',
  24: 'KVM_EXIT_SYSTEM_EVENT',
};

/** The exit fields of struct kvm_run the run loop reads. */
export const kvm_run = L.kvm_run;

// kvm_userspace_memory_region.flags
export const KVM_MEM_READONLY = 1 << 1;

/** struct kvm_userspace_memory_region (v1). */
export function kvm_userspace_memory_region(slot: number, flags: number, gpa: bigint, size: bigint, hva: bigint): Buffer {
  return memoryRegion(L.kvm_userspace_memory_region, slot, flags, gpa, size, hva);
}

/** struct kvm_userspace_memory_region2: v1's fields, the guest_memfd ones left zero. */
export function kvm_userspace_memory_region2(slot: number, flags: number, gpa: bigint, size: bigint, hva: bigint): Buffer {
  return memoryRegion(L.kvm_userspace_memory_region2, slot, flags, gpa, size, hva);
}

type MemoryRegionLayout = typeof L.kvm_userspace_memory_region | typeof L.kvm_userspace_memory_region2;
function memoryRegion(R: MemoryRegionLayout, slot: number, flags: number, gpa: bigint, size: bigint, hva: bigint): Buffer {
  const b = Buffer.alloc(R.sizeof);
  b.writeUInt32LE(slot, R.slot);
  b.writeUInt32LE(flags, R.flags);
  b.writeBigUInt64LE(gpa, R.guest_phys_addr);
  b.writeBigUInt64LE(size, R.memory_size);
  b.writeBigUInt64LE(hva, R.userspace_addr);
  return b;
}

export type KvmRegs = Record<KvmRegName, bigint>;

export function encodeRegs(r: Partial<KvmRegs>): Buffer {
  const b = Buffer.alloc(L.kvm_regs.sizeof);
  KVM_REGS_FIELDS.forEach((f) => b.writeBigUInt64LE(r[f] ?? 0n, L.kvm_regs[f]));
  return b;
}

export function decodeRegs(b: Buffer): KvmRegs {
  return Object.fromEntries(KVM_REGS_FIELDS.map((f) => [f, b.readBigUInt64LE(L.kvm_regs[f])])) as KvmRegs;
}

/** struct kvm_segment. */
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

/** struct kvm_sregs: segments cs ds es fs gs ss tr ldt, then gdt, idt (kvm_dtable), control registers. */
export const kvm_sregs = L.kvm_sregs;
export type SegmentName = 'cs' | 'ds' | 'es' | 'fs' | 'gs' | 'ss' | 'tr' | 'ldt';

export function writeSegment(b: Buffer, name: SegmentName, s: KvmSegment): void {
  const o = kvm_sregs[name];
  b.writeBigUInt64LE(s.base, o.base);
  b.writeUInt32LE(s.limit, o.limit);
  b.writeUInt16LE(s.selector, o.selector);
  for (const f of ['type', 'present', 'dpl', 'db', 's', 'l', 'g', 'avl', 'unusable'] as const) b.writeUInt8(s[f], o[f]);
}

/** struct kvm_dtable: base, limit. */
export function writeDtable(b: Buffer, at: { base: number; limit: number }, base: bigint, limit: number): void {
  b.writeBigUInt64LE(base, at.base);
  b.writeUInt16LE(limit, at.limit);
}

/** struct kvm_mp_state. */
export function kvm_mp_state(mp_state: number): Buffer {
  const b = Buffer.alloc(L.kvm_mp_state.sizeof);
  b.writeUInt32LE(mp_state, L.kvm_mp_state.mp_state);
  return b;
}

/** struct kvm_cpuid2 header (nent, padding) then struct kvm_cpuid_entry2[nent]. */
export const kvm_cpuid2 = L.kvm_cpuid2;
export const kvm_cpuid_entry2 = L.kvm_cpuid_entry2;
/** asm/kvm_para.h: the paravirt leaf and its feature bits (in EAX). */
export const KVM_CPUID_FEATURES = 0x40000001;
export const KVM_FEATURE_ASYNC_PF = 4;
export const KVM_FEATURE_ASYNC_PF_VMEXIT = 10;
export const KVM_FEATURE_ASYNC_PF_INT = 14;

/** struct kvm_irq_level: irq (GSI), level. */
export function kvm_irq_level(irq: number, level: number): Buffer {
  const b = Buffer.alloc(L.kvm_irq_level.sizeof);
  b.writeUInt32LE(irq, L.kvm_irq_level.irq);
  b.writeUInt32LE(level, L.kvm_irq_level.level);
  return b;
}

/** struct kvm_pit_config: flags then pad words. */
export function kvm_pit_config(flags: number): Buffer {
  const b = Buffer.alloc(L.kvm_pit_config.sizeof);
  b.writeUInt32LE(flags, L.kvm_pit_config.flags);
  return b;
}
export const KVM_PIT_SPEAKER_DUMMY = 1;

/** struct kvm_irqfd { __u32 fd; __u32 gsi; __u32 flags; __u32 resamplefd; __u8 pad[16]; } */
export const KVM_IRQFD_FLAG_DEASSIGN = 1 << 0;
export const KVM_IRQFD_FLAG_RESAMPLE = 1 << 1;
export function kvm_irqfd(fd: number, gsi: number, flags: number, resamplefd = 0): Buffer {
  const b = Buffer.alloc(L.kvm_irqfd.sizeof);
  b.writeUInt32LE(fd, L.kvm_irqfd.fd);
  b.writeUInt32LE(gsi, L.kvm_irqfd.gsi);
  b.writeUInt32LE(flags, L.kvm_irqfd.flags);
  b.writeUInt32LE(resamplefd, L.kvm_irqfd.resamplefd);
  return b;
}

/** struct kvm_irq_routing { __u32 nr; __u32 flags; struct kvm_irq_routing_entry entries[]; }: each entry is
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
  const R = L.kvm_irq_routing,
    E = L.kvm_irq_routing_entry;
  const b = Buffer.alloc(R.entries + entries.length * E.sizeof);
  b.writeUInt32LE(entries.length, R.nr);
  entries.forEach((e, i) => {
    const at = R.entries + i * E.sizeof;
    b.writeUInt32LE(e.gsi, at + E.gsi);
    if (e.type === 'irqchip') {
      b.writeUInt32LE(KVM_IRQ_ROUTING_IRQCHIP, at + E.type);
      b.writeUInt32LE(e.irqchip, at + E.u.irqchip.irqchip);
      b.writeUInt32LE(e.pin, at + E.u.irqchip.pin);
    } else {
      b.writeUInt32LE(KVM_IRQ_ROUTING_MSI, at + E.type);
      b.writeUInt32LE(e.addressLo >>> 0, at + E.u.msi.address_lo);
      b.writeUInt32LE(e.addressHi >>> 0, at + E.u.msi.address_hi);
      b.writeUInt32LE(e.data >>> 0, at + E.u.msi.data);
    }
  });
  return b;
}
