// The kernel inside a bzImage: its protected-mode part is a decompressor and
// a compressed vmlinux (payload_offset/payload_length in the setup header).
// Pinion can inflate a gzip payload itself and enter vmlinux's startup_64
// with boot_params, as a 64-bit boot loader may (arch/x86/kernel/head_64.S),
// and as Firecracker and cloud-hypervisor boot an uncompressed kernel: the
// guest then skips copying and inflating itself. Not the default: in the rig
// Node's inflate on the VMM thread costs what the guest's own decompressor
// does. Other compressions, or a kernel not where its ELF was linked, are
// left to the bzImage's own decompressor. Pure.
import { gunzipSync } from 'node:zlib';
import { hex } from '../memory/layout.js';
import { KernelImageError, type BzImage } from './bzimage.js';
import { readElf, type ElfImage } from './elf.js';

/** Who decompresses the kernel: the bzImage's own decompressor, or Pinion (gzip payloads; others fall back to the kernel's). */
export type Decompress = 'vmm' | 'kernel';
export const DECOMPRESS: readonly Decompress[] = ['kernel', 'vmm'];

export type Unpacked = { vmlinux: ElfImage } | { why: string };

/** The payload's compression, from its magic bytes (as lib/decompress.c tells them apart). */
export function payloadFormat(p: Uint8Array): string {
  const m = (...b: number[]): boolean => b.every((x, i) => p[i] === x);
  if (m(0x1f, 0x8b)) return 'gzip';
  if (m(0x28, 0xb5, 0x2f, 0xfd)) return 'zstd';
  if (m(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return 'xz';
  if (m(0x5d, 0x00, 0x00)) return 'lzma';
  if (m(0x02, 0x21, 0x4c, 0x18)) return 'lz4';
  if (m(0x89, 0x4c, 0x5a, 0x4f)) return 'lzo';
  if (m(0x42, 0x5a, 0x68)) return 'bzip2';
  if (m(0x7f, 0x45, 0x4c, 0x46)) return 'none';
  return 'unknown';
}

/** vmlinux from the bzImage's `payload` bytes, ready to load at its physical addresses, or why the guest decompresses it itself. */
export function unpackKernel(img: BzImage, payload: Uint8Array, name: string): Unpacked {
  const format = payloadFormat(payload);
  let elf: Uint8Array;
  if (format === 'gzip') {
    try {
      elf = gunzipSync(payload);
    } catch (e) {
      throw new KernelImageError(`${name}: its gzip-compressed kernel does not inflate (${(e as Error).message}); copy the bzImage again`);
    }
  } else if (format === 'none') {
    elf = payload;
  } else {
    return { why: `its kernel is ${format}-compressed; Pinion inflates gzip only` };
  }
  const vmlinux = readElf(elf);
  if ('bad' in vmlinux) throw new KernelImageError(`${name}: the kernel inside it ${vmlinux.bad}; copy the bzImage again`);
  const first = vmlinux.segments.reduce((a, s) => (s.gpa < a ? s.gpa : a), vmlinux.segments[0]!.gpa);
  // A kernel linked elsewhere would need the relocations only its decompressor applies.
  if (first !== img.loadAddress) return { why: `its vmlinux is linked at ${hex(first)}, not at its load address ${hex(img.loadAddress)}` };
  if (!vmlinux.segments.some((s) => vmlinux.entry >= s.gpa && vmlinux.entry < s.gpa + s.memsz))
    throw new KernelImageError(`${name}: the kernel's entry ${hex(vmlinux.entry)} lies outside its segments; copy the bzImage again`);
  return { vmlinux };
}
