import t from 'tap';
import { parseElf, checkFits } from '../../src/vmm/loader.js';
import { elf } from '../support/elf.js';
import { BOOT, bootWrites, entryRegs, longModeSregs } from '../../src/vmm/boot.js';
import { cpuidReg, vcpuCpuid } from '../../src/vmm/cpuid.js';
import { Bus, le } from '../../src/vmm/bus.js';
import { Serial16550 } from '../../src/devices/serial.js';
import { DebugExit } from '../../src/devices/debug-exit.js';
import { kvm_sregs } from '../../src/sys/kvm.js';

/** A minimal ELF64 x86-64 executable with the given PT_LOAD segments. */

t.test('ELF payload: segments, entry and end', async (t) => {
  const p = parseElf(elf(0x100010n, [{ paddr: 0x100000n, data: [0xf4, 0x90], memsz: 0x3000 }]), 'g.elf');
  t.equal(p.entry, 0x100010n);
  t.equal(p.segments.length, 1);
  t.same([...p.segments[0]!.data], [0xf4, 0x90]);
  t.equal(p.end, 0x103000n);
  t.doesNotThrow(() => checkFits(p, 0x103000n, 'g.elf', '1M'));
  t.throws(
    () => checkFits(p, 0x102000n, 'g.elf', '1M'),
    /payload g.elf needs guest RAM up to 0x103000 \(2 MiB\) but --memory 1M gives 0x102000; raise --memory/,
  );
});

t.test('non-ELF, wrong machine, low segments and truncation are refused by name', async (t) => {
  t.throws(() => parseElf(Buffer.from('#!/bin/sh\n'), 'x.sh'), /payload x.sh is not an ELF64 x86-64 executable/);
  const arm = Buffer.from(elf(0x100000n, [{ paddr: 0x100000n, data: [0] }]));
  arm.writeUInt16LE(183, 18);
  t.throws(() => parseElf(arm, 'arm.elf'), /not an ELF64 x86-64/);
  t.throws(() => parseElf(elf(0x7c00n, [{ paddr: 0x7c00n, data: [0] }]), 'low.elf'), /segment 0 loads at 0x7c00, below 0x100000/);
  const cut = elf(0x100000n, [{ paddr: 0x100000n, data: [1, 2, 3, 4] }]).subarray(0, 64 + 56 + 2);
  t.throws(() => parseElf(cut, 'cut.elf'), /payload cut.elf has segment 0 running past the end of the file/);
});

t.test('boot structures: identity map of 512 GiB (2 MiB pages below 4 GiB), GDT, command line', async (t) => {
  const w = new Map(bootWrites('exit=7').map(([gpa, b]) => [gpa, Buffer.from(b)]));
  t.equal(w.get(BOOT.pml4)!.readBigUInt64LE(0), BOOT.pdpt | 3n);
  t.equal(w.get(BOOT.pdpt)!.readBigUInt64LE(3 * 8), (BOOT.pd + 0x3000n) | 3n);
  t.equal(w.get(BOOT.pdpt)!.readBigUInt64LE(4 * 8), (4n << 30n) | 0x83n, '4 GiB and up: 1 GiB pages');
  t.equal(w.get(BOOT.pdpt)!.readBigUInt64LE(511 * 8), (511n << 30n) | 0x83n);
  const pds = w.get(BOOT.pd)!;
  t.equal(pds.readBigUInt64LE(0), 0x83n);
  t.equal(pds.readBigUInt64LE(2047 * 8), (2047n << 21n) | 0x83n, 'last PDE maps 0xffe00000');
  t.equal(w.get(BOOT.gdt)!.readBigUInt64LE(8), 0x00af9b000000ffffn, '64-bit code segment');
  t.equal(w.get(BOOT.cmdline)!.toString(), 'exit=7\0');
  t.throws(() => bootWrites('x'.repeat(5000)), /command line is 5000 bytes; at most 4095/);
});

t.test('long-mode sregs and entry registers follow the contract', async (t) => {
  const s = longModeSregs(Buffer.alloc(kvm_sregs.sizeof));
  t.equal(s.readBigUInt64LE(kvm_sregs.cr3), BOOT.pml4);
  t.equal(s.readBigUInt64LE(kvm_sregs.efer), 0x500n);
  t.equal(s.readBigUInt64LE(kvm_sregs.cr0) & 0x80000001n, 0x80000001n, 'PE and PG');
  t.equal(s.readUInt16LE(12), 0x08, 'CS selector');
  t.equal(s.readUInt8(14 + 5), 1, 'CS.L');
  t.equal(s.readUInt16LE(kvm_sregs.gdt.limit), 31, 'GDT limit');
  const r = entryRegs(0x100000n, 1, 2, 64n << 20n);
  t.same([r.rip, r.rdi, r.rsi, r.rdx, r.rcx, r.rflags], [0x100000n, 1n, BOOT.cmdline, 2n, 64n << 20n, 2n]);
});

t.test('CPUID: each vCPU gets its own APIC ID, features unchanged', async (t) => {
  const sup = Buffer.alloc(8 + 3 * 40);
  sup.writeUInt32LE(3, 0);
  const put = (i: number, fn: number, ebx: number, edx: number): void => {
    sup.writeUInt32LE(fn, 8 + i * 40);
    sup.writeUInt32LE(ebx, 8 + i * 40 + 16);
    sup.writeUInt32LE(edx, 8 + i * 40 + 24);
  };
  put(0, 0, 0x68747541, 0);
  put(1, 1, 0x00000800, 0x178bfbff);
  put(2, 0xb, 0, 0);
  const c1 = vcpuCpuid(sup, 1, 2);
  t.equal(cpuidReg(c1, 1, 0, 'ebx')! >>> 24, 1);
  t.equal((cpuidReg(c1, 1, 0, 'ebx')! >>> 16) & 0xff, 2);
  t.equal(cpuidReg(c1, 1, 0, 'ebx')! & 0xffff, 0x800, 'low EBX bits kept');
  t.equal(cpuidReg(c1, 0xb, 0, 'edx'), 1);
  t.equal(cpuidReg(c1, 0, 0, 'ebx'), 0x68747541);
  t.equal(cpuidReg(sup, 1, 0, 'ebx'), 0x800, 'the supported list is not modified');
});

t.test('CPUID: no nested virtualization (VMX, SVM), every other feature bit kept', async (t) => {
  const sup = Buffer.alloc(8 + 2 * 40);
  sup.writeUInt32LE(2, 0);
  sup.writeUInt32LE(1, 8);
  sup.writeUInt32LE(0xffffffff, 8 + 20); // ECX
  sup.writeUInt32LE(0x80000001, 8 + 40);
  sup.writeUInt32LE(0xffffffff, 8 + 40 + 20);
  const c = vcpuCpuid(sup, 0, 1);
  t.equal(cpuidReg(c, 1, 0, 'ecx'), (0xffffffff & ~(1 << 5)) >>> 0, 'CPUID.1:ECX without VMX');
  t.equal(cpuidReg(c, 0x80000001, 0, 'ecx'), (0xffffffff & ~(1 << 2)) >>> 0, 'CPUID.80000001h:ECX without SVM');
});

t.test('CPUID: the KVM paravirt leaf keeps kvm-clock and the rest, without async page faults', async (t) => {
  const sup = Buffer.alloc(8 + 40);
  sup.writeUInt32LE(1, 0);
  sup.writeUInt32LE(0x40000001, 8);
  const all = 0x01ffffff; // KVM_FEATURE_CLOCKSOURCE (0) .. MIGRATION_CONTROL (17) and the stable bit (24)
  sup.writeUInt32LE(all, 8 + 12);
  const eax = cpuidReg(vcpuCpuid(sup, 0, 1), 0x40000001, 0, 'eax')!;
  t.equal(eax & ((1 << 4) | (1 << 10) | (1 << 14)), 0, 'ASYNC_PF, ASYNC_PF_VMEXIT and ASYNC_PF_INT hidden');
  t.equal(eax, (all & ~((1 << 4) | (1 << 10) | (1 << 14))) >>> 0, 'every other feature kept (kvm-clock, PV EOI, steal time, ...)');
});

t.test('bus: ranges dispatch by offset, overlaps refused, unclaimed reads are all ones', async (t) => {
  const bus = new Bus('pio');
  const seen: string[] = [];
  bus.register(0x3f8, 8, { read: (o, d) => d.fill(o), write: (o, d) => void seen.push(`${o}:${le(d)}`) }, 'uart');
  t.throws(() => bus.register(0x3ff, 2, { read: () => {}, write: () => {} }, 'other'), /other at pio 0x3ff\+0x2 overlaps uart at 0x3f8/);
  const d = new Uint8Array(1);
  t.equal(bus.read(0x3fd, d), true);
  t.equal(d[0], 5);
  bus.write(0x3f9, Uint8Array.of(0x34, 0x12));
  t.same(seen, [`1:${0x1234}`]);
  const d4 = new Uint8Array(4);
  t.equal(bus.read(0xcfc, d4), false);
  t.same([...d4], [0xff, 0xff, 0xff, 0xff]);
});

t.test('16550: divisor latch, scratch register, line-buffered output', async (t) => {
  const out: string[] = [];
  const state = Serial16550.newState();
  const a = new Serial16550(state, (b) => void out.push(Buffer.from(b).toString()));
  const b = new Serial16550(state, (x) => void out.push(Buffer.from(x).toString()));
  const w = (u: Serial16550, o: number, v: number): void => u.write(o, Uint8Array.of(v));
  const r = (u: Serial16550, o: number): number => {
    const d = new Uint8Array(1);
    u.read(o, d);
    return d[0]!;
  };
  w(a, 3, 0x80); // DLAB
  w(a, 0, 0x01);
  w(a, 1, 0x00);
  t.equal(r(b, 0), 1, 'divisor seen from the other vCPU');
  w(a, 3, 0x03);
  w(a, 7, 0x5a);
  t.equal(r(b, 7), 0x5a, 'scratch register is shared');
  t.equal(r(a, 5) & 0x60, 0x60, 'transmitter always empty');
  for (const c of Buffer.from('hi\n')) w(a, 0, c);
  w(b, 0, 0x78);
  t.same(out, ['hi\n']);
  b.flush();
  t.same(out, ['hi\n', 'x']);
});

t.test('debug exit reports the low byte of any width', async (t) => {
  const codes: number[] = [];
  const d = new DebugExit((c) => codes.push(c));
  d.write(0, Uint8Array.of(7));
  d.write(0, Uint8Array.of(0x2a, 0x01, 0, 0));
  t.same(codes, [7, 0x2a]);
});
