// Linux boot protocol pieces: the bzImage header checks, where kernel,
// initrd and boot_params go, the e820 map, and the MP table.
import t from 'tap';
import { KernelImageError, parseBzImage, SETUP } from '../../src/vmm/bzimage.js';
import { bzImage } from '../support/bzimage.js';
import { e820Map, E820_RAM, E820_RESERVED, LINUX, LinuxBootError, linuxBoot } from '../../src/vmm/linux-boot.js';
import { mpTable } from '../../src/vmm/mptable.js';
import { intxPin } from '../../src/vmm/irq.js';
import { GiB, MiB, ramRanges } from '../../src/memory/layout.js';

t.test('bzImage: header fields, and each bad image refused with what to do', async (t) => {
  const img = parseBzImage(bzImage(), 'bz');
  t.equal(img.loadAddress, 0x1000000n);
  t.equal(img.initSize, 8n * MiB);
  t.equal(img.kernel.length, 4096);
  t.equal(img.setupHeader.length, 0x26c - 0x1f1, 'the header up to the end its jump gives');
  t.equal(img.cmdlineMax, 2048);
  t.throws(
    () => parseBzImage(Buffer.from('{"name": "not a kernel"}'), 'package.json'),
    new KernelImageError(
      'package.json is not a Linux bzImage (no "HdrS" setup header at 0x202); give the kernel\'s arch/x86/boot/bzImage, not vmlinux or a compressed file',
    ),
  );
  t.throws(
    () => parseBzImage(bzImage({ version: 0x020a }), 'old'),
    /old speaks boot protocol 2\.10; Pinion's 64-bit entry needs 2\.12 or later/,
  );
  t.throws(() => parseBzImage(bzImage({ xloadflags: 0 }), 'k32'), /k32 has no 64-bit entry point \(xloadflags 0x0 lacks XLF_KERNEL_64\)/);
  t.throws(
    () => parseBzImage(bzImage({ cut: 3000 }), 'cut'),
    /cut is truncated: its header promises 6656 bytes, the file has 3000; copy the bzImage again/,
  );
  t.equal(
    parseBzImage(bzImage({ relocatable: 0, pref: 0x1000000n }), 'fixed').loadAddress,
    0x1000000n,
    'a non-relocatable kernel runs at its own address',
  );
  t.equal(
    parseBzImage(bzImage({ pref: 0x1100000n }), 'odd').loadAddress,
    0x1200000n,
    'a relocatable one is aligned up to kernel_alignment',
  );
});

t.test('e820: the guest memory map, the BIOS area reserved, nothing over the PCI hole', async (t) => {
  t.same(e820Map(ramRanges(256n * MiB)), [
    { addr: 0n, size: 0x9fc00n, type: E820_RAM },
    { addr: 0x9fc00n, size: 0x100000n - 0x9fc00n, type: E820_RESERVED },
    { addr: MiB, size: 255n * MiB, type: E820_RAM },
  ]);
  const big = e820Map(ramRanges(4n * GiB));
  t.same(
    big.slice(2),
    [
      { addr: MiB, size: 3n * GiB - MiB, type: E820_RAM },
      { addr: 4n * GiB, size: GiB, type: E820_RAM },
    ],
    'RAM ends at 3 GiB and resumes at 4 GiB',
  );
});

t.test('placement: kernel at its address, initrd as high as allowed, boot_params filled', async (t) => {
  const image = parseBzImage(bzImage(), 'bz');
  const initrd = Buffer.alloc(3 * 1048576 + 5, 7);
  const p = linuxBoot({
    image,
    ranges: ramRanges(256n * MiB),
    cmdline: 'console=ttyS0',
    cpus: 2,
    initrd,
    kernelName: 'bz',
    initrdName: 'rd',
    memoryArg: '256M',
  });
  t.equal(p.entry, 0x1000200n, '64-bit entry at load + 0x200');
  t.equal(p.zeroPage, LINUX.zeroPage);
  t.same(p.initrd, { gpa: ((256n * MiB - 3n * MiB - 5n) / 4096n) * 4096n, size: 3n * MiB + 5n });
  const zp = Buffer.from(p.writes.find(([g]) => g === LINUX.zeroPage)![1] as Uint8Array);
  t.equal(zp.readUInt32LE(SETUP.header), 0x53726448, 'setup header copied');
  t.equal(zp[SETUP.type_of_loader], 0xff);
  t.equal(zp.readUInt32LE(SETUP.cmd_line_ptr), 0x20000);
  t.equal(BigInt(zp.readUInt32LE(SETUP.ramdisk_image)), p.initrd!.gpa);
  t.equal(zp.readUInt32LE(SETUP.ramdisk_size), 3 * 1048576 + 5);
  t.equal(zp[0x1e8], 3, 'e820_entries');
  t.equal(zp.readBigUInt64LE(0x2d0 + 2 * 20 + 8), 255n * MiB, 'third e820 entry: RAM from 1 MiB');
  t.same(
    p.writes.find(([g]) => g === 0x1000000n)![1],
    { path: 'bz', offset: 5 * 512, length: 4096 },
    'the kernel at its load address, read there from the file',
  );
});

t.test('placement: what does not fit is refused with the memory it needs', async (t) => {
  const image = parseBzImage(bzImage({ initSize: 40 * 1048576 }), 'bz');
  const base = { image, cpus: 1, cmdline: '', kernelName: 'bz', initrdName: 'rd' };
  t.throws(
    () => linuxBoot({ ...base, ranges: ramRanges(32n * MiB), memoryArg: '32M' }),
    new LinuxBootError(
      'kernel bz needs guest RAM up to 0x3800000 (56 MiB: loaded at 0x1000000, 40 MiB while it unpacks) but --memory 32M gives 32 MiB; raise --memory',
    ),
  );
  t.throws(
    () => linuxBoot({ ...base, ranges: ramRanges(64n * MiB), memoryArg: '64M', initrd: Buffer.alloc(16 * 1048576) }),
    /^initrd rd \(16 MiB\) does not fit in guest RAM: it must lie between the kernel's end 0x3800000 and 0x4000000 \(--memory 64M\); raise --memory to at least 73 MiB$/,
  );
  t.throws(
    () => linuxBoot({ ...base, ranges: ramRanges(64n * MiB), memoryArg: '64M', cmdline: 'x'.repeat(2049) }),
    /--append is 2049 bytes; this kernel takes at most 2048/,
  );
});

t.test('MP table: floating pointer and table checksums, every CPU, the IOAPIC, ISA and PCI wiring', async (t) => {
  const base = 0xf0000n;
  const b = mpTable(base, 3);
  const sum = (x: Buffer): number => x.reduce((a, v) => (a + v) & 0xff, 0);
  t.equal(b.subarray(0, 4).toString('latin1'), '_MP_');
  t.equal(sum(b.subarray(0, 16)), 0, 'floating pointer sums to 0');
  t.equal(b.readUInt32LE(4), 0xf0010, 'points at the table right after it');
  const table = b.subarray(16);
  t.equal(table.subarray(0, 4).toString('latin1'), 'PCMP');
  t.equal(table.readUInt16LE(4), table.length, 'base table length');
  t.equal(sum(table), 0, 'table sums to 0');
  const count = table.readUInt16LE(34);
  const entries: Buffer[] = [];
  let at = 44;
  for (let i = 0; i < count; i++) {
    const len = table[at] === 0 ? 20 : 8;
    entries.push(table.subarray(at, at + len));
    at += len;
  }
  t.equal(at, table.length, 'entries fill the table exactly');
  const cpus = entries.filter((e) => e[0] === 0);
  t.same(
    cpus.map((e) => [e[1], e[3]]),
    [
      [0, 3],
      [1, 1],
      [2, 1],
    ],
    'APIC ids 0-2, the first one the boot CPU',
  );
  const ioapic = entries.find((e) => e[0] === 2)!;
  t.same([ioapic[1], ioapic.readUInt32LE(4)], [3, 0xfec00000], 'IOAPIC after the CPUs, at 0xfec00000');
  const intsrc = entries.filter((e) => e[0] === 3);
  t.equal(intsrc.filter((e) => e[4] === 1).length, 16, 'ISA IRQs 0-15');
  const pci = intsrc.filter((e) => e[4] === 0);
  t.equal(pci.length, 31 * 4, 'every slot and pin of bus 0');
  const slot3pinB = pci.find((e) => e[5] === ((3 << 2) | 1))!;
  t.equal(slot3pinB[7], intxPin(3, 2), 'slot 3 INTB on the pin the VFIO INTx wiring uses');
  t.equal(slot3pinB.readUInt16LE(2), 0x0f, 'level, active low');
  t.same(
    entries.filter((e) => e[0] === 4).map((e) => [e[1], e[7]]),
    [
      [3, 0],
      [1, 1],
    ],
    'ExtINT on LINT0, NMI on LINT1',
  );
});
