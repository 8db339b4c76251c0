// Direct 64-bit entry: the VMM builds what firmware and a boot loader would
// (GDT, identity page tables, command line) and starts every vCPU in long
// mode at the payload's entry. The contract, shared with guest/ and
// bench/ref/piobench.c:
//   GDT 0x500 (null, code 0x08, data 0x10, TSS 0x18); no IDT, so a guest
//   exception ends as a triple fault; PML4 0x9000, PDPT 0xa000, PDs
//   0xb000-0xefff mapping [0, 4 GiB) with 2 MiB pages, and [4 GiB, 512 GiB)
//   with 1 GiB pages (RAM above the hole, 64-bit BARs); command line 0x20000.
//   RDI = vCPU index, RSI = command line GPA, RDX = vCPU count, RCX = RAM size.
import { kvm_sregs as S, writeDtable, writeSegment, type KvmRegs, type KvmSegment } from '../sys/kvm.js';

export const BOOT = {
  gdt: 0x500n,
  pml4: 0x9000n,
  pdpt: 0xa000n,
  pd: 0xb000n,
  cmdline: 0x20000n,
  cmdlineMax: 4095,
  /** Payloads load at or above 1 MiB; below is the VMM's. */
  payloadMin: 0x100000n,
} as const;

const CODE64 = 0x00af9b000000ffffn,
  DATA = 0x00cf93000000ffffn,
  TSS = 0x008f8b000000ffffn;
/** The test guest's GDT, and the one Linux's 64-bit boot protocol asks for (__BOOT_CS 0x10, __BOOT_DS 0x18). */
export const GDT_LAYOUTS = {
  payload: { entries: [0n, CODE64, DATA, TSS], cs: 0x08, ds: 0x10, tr: 0x18 },
  linux: { entries: [0n, 0n, CODE64, DATA, TSS], cs: 0x10, ds: 0x18, tr: 0x20 },
} as const;
export type GdtLayout = keyof typeof GDT_LAYOUTS;

const CR0_PE = 1n,
  CR0_MP = 2n,
  CR0_ET = 0x10n,
  CR0_NE = 0x20n,
  CR0_WP = 0x10000n,
  CR0_PG = 0x80000000n;
const CR4_PAE = 1n << 5n,
  CR4_OSFXSR = 1n << 9n,
  CR4_OSXMMEXCPT = 1n << 10n;
const EFER_LME = 0x100n,
  EFER_LMA = 0x400n;

/** The boot structures in low memory, as [gpa, bytes] writes. */
export function bootWrites(cmdline: string, layout: GdtLayout = 'payload'): [bigint, Uint8Array][] {
  const entries = GDT_LAYOUTS[layout].entries;
  const gdt = Buffer.alloc(entries.length * 8);
  entries.forEach((d, i) => gdt.writeBigUInt64LE(d, i * 8));
  const pml4 = Buffer.alloc(0x1000);
  pml4.writeBigUInt64LE(BOOT.pdpt | 3n, 0);
  const pdpt = Buffer.alloc(0x1000);
  for (let i = 0n; i < 4n; i++) pdpt.writeBigUInt64LE((BOOT.pd + i * 0x1000n) | 3n, Number(i) * 8);
  for (let i = 4n; i < 512n; i++) pdpt.writeBigUInt64LE((i << 30n) | 0x83n, Number(i) * 8); // present, rw, 1 GiB
  const pds = Buffer.alloc(4 * 0x1000);
  for (let i = 0n; i < 2048n; i++) pds.writeBigUInt64LE((i << 21n) | 0x83n, Number(i) * 8); // present, rw, 2 MiB
  const cl = Buffer.from(cmdline + '\0', 'utf8');
  if (cl.length > BOOT.cmdlineMax + 1) throw new RangeError(`command line is ${cl.length - 1} bytes; at most ${BOOT.cmdlineMax}`);
  return [
    [BOOT.gdt, gdt],
    [BOOT.pml4, pml4],
    [BOOT.pdpt, pdpt],
    [BOOT.pd, pds],
    [BOOT.cmdline, cl],
  ];
}

function seg(selector: number, code: boolean): KvmSegment {
  return {
    base: 0n,
    limit: 0xffffffff,
    selector,
    type: code ? 11 : 3,
    present: 1,
    dpl: 0,
    db: code ? 0 : 1,
    s: 1,
    l: code ? 1 : 0,
    g: 1,
    avl: 0,
    unusable: 0,
  };
}

/** A system segment (TSS, LDT) as long mode wants it: present, 64 KiB, byte-granular. */
function systemSegment(selector: number, type: number): KvmSegment {
  return { base: 0n, limit: 0xffff, selector, type, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 };
}

/** kvm_sregs for long mode; `current` is what KVM_GET_SREGS returned (keeps apic_base and the rest). */
export function longModeSregs(current: Buffer, layout: GdtLayout = 'payload'): Buffer {
  const g = GDT_LAYOUTS[layout];
  const b = Buffer.from(current);
  writeSegment(b, 'cs', seg(g.cs, true));
  for (const s of ['ds', 'es', 'fs', 'gs', 'ss'] as const) writeSegment(b, s, seg(g.ds, false));
  writeSegment(b, 'tr', systemSegment(g.tr, 11));
  writeSegment(b, 'ldt', systemSegment(0, 2));
  writeDtable(b, S.gdt, BOOT.gdt, g.entries.length * 8 - 1);
  writeDtable(b, S.idt, 0n, 0);
  b.writeBigUInt64LE(CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG, S.cr0);
  b.writeBigUInt64LE(BOOT.pml4, S.cr3);
  b.writeBigUInt64LE(CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT, S.cr4);
  b.writeBigUInt64LE(EFER_LME | EFER_LMA, S.efer);
  return b;
}

export function entryRegs(entry: bigint, index: number, count: number, ramSize: bigint): Partial<KvmRegs> {
  return { rip: entry, rflags: 2n, rsp: 0n, rdi: BigInt(index), rsi: BOOT.cmdline, rdx: BigInt(count), rcx: ramSize };
}
