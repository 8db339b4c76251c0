// Where a Linux kernel, its initrd, command line, boot_params ("zero page")
// and the MP table go in guest memory, and what the zero page says: the
// setup header from the bzImage plus what a boot loader fills in, and an
// e820 map that is the guest memory map (RAM below the PCI hole, RAM above
// 4 GiB, the BIOS area reserved, nothing claimed over the hole). Pure.
import { hex, MiB, type RamRange } from '../memory/layout.js';
import { BOOT } from './boot.js';
import { SETUP, type BzImage } from './bzimage.js';
import { mpTable } from './mptable.js';
import { segmentWrites, type ElfImage } from './elf.js';
import type { BootBytes } from './file-span.js';

export class LinuxBootError extends Error {
  override readonly name = 'LinuxBootError';
}

export const LINUX = {
  zeroPage: 0x7000n,
  /** Linux scans the last KiB of base memory and 0xf0000-0xfffff for the MP floating pointer. */
  mpTable: 0xf0000n,
  /** Base memory ends here; up to 1 MiB is the (reserved) BIOS area. */
  baseEnd: 0x9fc00n,
} as const;

/** boot_params offsets outside the setup header (arch/x86/include/uapi/asm/bootparam.h). */
const BP = { ext_ramdisk_image: 0x0c0, ext_ramdisk_size: 0x0c4, ext_cmd_line_ptr: 0x0c8, e820_entries: 0x1e8, e820_table: 0x2d0 } as const;
const E820_MAX = 128;
export const E820_RAM = 1;
export const E820_RESERVED = 2;

export interface E820Entry {
  addr: bigint;
  size: bigint;
  type: number;
}

export function e820Map(ranges: RamRange[]): E820Entry[] {
  const out: E820Entry[] = [];
  for (const r of ranges) {
    if (r.gpa === 0n) {
      out.push({ addr: 0n, size: LINUX.baseEnd, type: E820_RAM });
      out.push({ addr: LINUX.baseEnd, size: MiB - LINUX.baseEnd, type: E820_RESERVED });
      if (r.size > MiB) out.push({ addr: MiB, size: r.size - MiB, type: E820_RAM });
    } else {
      out.push({ addr: r.gpa, size: r.size, type: E820_RAM });
    }
  }
  return out;
}

export interface LinuxBootPlan {
  writes: [bigint, BootBytes][];
  /** The 64-bit entry: vmlinux's startup_64, or the bzImage's at load address + 0x200. */
  entry: bigint;
  zeroPage: bigint;
  e820: E820Entry[];
  initrd?: { gpa: bigint; size: bigint };
}

export interface LinuxBootInput {
  image: BzImage;
  ranges: RamRange[];
  cmdline: string;
  cpus: number;
  initrd?: BootBytes;
  /** The kernel already inflated (vmlinux.ts): loaded instead of the bzImage's decompressor. */
  vmlinux?: ElfImage;
  /** The bzImage's path (its kernel is read from there into guest RAM); the initrd's, and how --memory was written, for messages. */
  kernelName: string;
  initrdName?: string;
  memoryArg: string;
}

const PAGE = 0x1000n;
const mib = (n: bigint): string => `${(n + MiB - 1n) / MiB} MiB`;

export function linuxBoot(i: LinuxBootInput): LinuxBootPlan {
  const img = i.image;
  const lowEnd = i.ranges[0]!.size;
  const spans = [img.initSize, BigInt(img.kernel.length), i.vmlinux ? i.vmlinux.end - img.loadAddress : 0n];
  const kernelSpan = spans.reduce((a, b) => (b > a ? b : a));
  const kernelEnd = img.loadAddress + kernelSpan;
  if (kernelEnd > lowEnd) {
    throw new LinuxBootError(
      `kernel ${i.kernelName} needs guest RAM up to ${hex(kernelEnd)} (${mib(kernelEnd)}: loaded at ${hex(img.loadAddress)}, ${mib(kernelSpan)} while it unpacks) but --memory ${i.memoryArg} gives ${mib(lowEnd)}; raise --memory`,
    );
  }
  // The command line itself goes where bootWrites puts every command line.
  const clBytes = Buffer.byteLength(i.cmdline, 'utf8');
  const clMax = Math.min(img.cmdlineMax, BOOT.cmdlineMax);
  if (clBytes > clMax) throw new LinuxBootError(`--append is ${clBytes} bytes; this kernel takes at most ${clMax}`);

  let initrd: { gpa: bigint; size: bigint } | undefined;
  if (i.initrd) {
    const size = BigInt(i.initrd.length);
    // As high as the kernel allows, clear of the kernel while it unpacks.
    const limit = img.initrdAddrMax + 1n < lowEnd ? img.initrdAddrMax + 1n : lowEnd;
    const gpa = ((limit - size) / PAGE) * PAGE;
    if (size > limit || gpa < kernelEnd) {
      throw new LinuxBootError(
        `initrd ${i.initrdName ?? ''} (${mib(size)}) does not fit in guest RAM: it must lie between the kernel's end ${hex(kernelEnd)} and ${hex(limit)} (--memory ${i.memoryArg}); raise --memory to at least ${mib(kernelEnd + size + MiB)}`,
      );
    }
    initrd = { gpa, size };
  }

  const e820 = e820Map(i.ranges);
  if (e820.length > E820_MAX) throw new LinuxBootError(`the guest memory map has ${e820.length} ranges; boot_params holds ${E820_MAX}`);
  const zp = Buffer.alloc(0x1000);
  zp.set(img.setupHeader, SETUP.setup_sects);
  zp.writeUInt8(0xff, SETUP.type_of_loader); // undefined loader
  zp.writeUInt32LE(Number(BOOT.cmdline), SETUP.cmd_line_ptr);
  zp.writeUInt32LE(0, BP.ext_cmd_line_ptr);
  if (initrd) {
    zp.writeUInt32LE(Number(initrd.gpa & 0xffffffffn), SETUP.ramdisk_image);
    zp.writeUInt32LE(Number(initrd.size & 0xffffffffn), SETUP.ramdisk_size);
    zp.writeUInt32LE(Number(initrd.gpa >> 32n), BP.ext_ramdisk_image);
    zp.writeUInt32LE(Number(initrd.size >> 32n), BP.ext_ramdisk_size);
  }
  zp.writeUInt8(e820.length, BP.e820_entries);
  e820.forEach((e, n) => {
    const at = BP.e820_table + n * 20;
    zp.writeBigUInt64LE(e.addr, at);
    zp.writeBigUInt64LE(e.size, at + 8);
    zp.writeUInt32LE(e.type, at + 16);
  });

  const writes: [bigint, BootBytes][] = [
    [LINUX.zeroPage, zp],
    [LINUX.mpTable, mpTable(LINUX.mpTable, i.cpus)],
    ...(i.vmlinux ? segmentWrites(i.vmlinux) : [[img.loadAddress, { path: i.kernelName, ...img.kernel }] as [bigint, BootBytes]]),
  ];
  if (initrd) writes.push([initrd.gpa, i.initrd!]);
  const entry = i.vmlinux ? i.vmlinux.entry : img.loadAddress + 0x200n;
  return { writes, entry, zeroPage: LINUX.zeroPage, e820, initrd };
}
