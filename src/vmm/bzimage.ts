// A Linux bzImage, as the x86 boot protocol describes it
// (Documentation/arch/x86/boot.rst): the real-mode setup sectors with the
// setup header at 0x1f1, then the protected-mode kernel. Pinion uses the
// 64-bit entry, so it needs protocol 2.12+ with XLF_KERNEL_64. The kernel
// is loaded at its preferred address, so a non-relocatable one runs too.
// Pure parsing and checks.
import { hex } from '../memory/layout.js';

export class KernelImageError extends Error {
  override readonly name = 'KernelImageError';
}

/** Setup header fields, by offset in the file (and in boot_params). */
export const SETUP = {
  setup_sects: 0x1f1,
  syssize: 0x1f4,
  boot_flag: 0x1fe,
  jump: 0x200, // 2-byte jump; its second byte + 0x202 is the header's end
  header: 0x202,
  version: 0x206,
  type_of_loader: 0x210,
  loadflags: 0x211,
  ramdisk_image: 0x218,
  ramdisk_size: 0x21c,
  heap_end_ptr: 0x224,
  cmd_line_ptr: 0x228,
  initrd_addr_max: 0x22c,
  kernel_alignment: 0x230,
  relocatable_kernel: 0x234,
  xloadflags: 0x236,
  cmdline_size: 0x238,
  payload_offset: 0x248,
  payload_length: 0x24c,
  pref_address: 0x258,
  init_size: 0x260,
} as const;

const HDRS = 0x53726448; // "HdrS"
const BOOT_FLAG = 0xaa55;
export const LOADED_HIGH = 0x01;
export const CAN_USE_HEAP = 0x80;
export const XLF_KERNEL_64 = 0x01;
const MIN_VERSION = 0x020c; // 2.12: xloadflags

export interface BzImage {
  /** The setup header bytes, [0x1f1, header end), to copy into boot_params. */
  setupHeader: Uint8Array;
  /** Where the protected-mode kernel lies in the file; loaded at `loadAddress`. */
  kernel: { offset: number; length: number };
  /** Where the compressed vmlinux inside it lies in the file (payload_offset, payload_length). */
  payload: { offset: number; length: number };
  version: number;
  /** Where the kernel wants to run (pref_address; aligned to kernel_alignment when relocatable). */
  loadAddress: bigint;
  relocatable: boolean;
  /** Memory the kernel needs from its load address during decompression (init_size). */
  initSize: bigint;
  /** Highest address an initrd may occupy (inclusive). */
  initrdAddrMax: bigint;
  /** Longest command line, without the NUL. */
  cmdlineMax: number;
}

/** The image from its first bytes (`head`: at least the setup header) and the file's size. */
export function parseBzImage(head: Uint8Array, name: string, fileSize = head.length): BzImage {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  const notBz = `${name} is not a Linux bzImage (no "HdrS" setup header at 0x202); give the kernel's arch/x86/boot/bzImage, not vmlinux or a compressed file`;
  if (b.length < 0x264 || b.readUInt32LE(SETUP.header) !== HDRS || b.readUInt16LE(SETUP.boot_flag) !== BOOT_FLAG)
    throw new KernelImageError(notBz);
  const version = b.readUInt16LE(SETUP.version);
  const v = `${version >> 8}.${(version & 0xff).toString().padStart(2, '0')}`;
  if (version < MIN_VERSION)
    throw new KernelImageError(`${name} speaks boot protocol ${v}; Pinion's 64-bit entry needs 2.12 or later (Linux 3.8+)`);
  const xloadflags = b.readUInt16LE(SETUP.xloadflags);
  if (!(xloadflags & XLF_KERNEL_64))
    throw new KernelImageError(
      `${name} has no 64-bit entry point (xloadflags ${hex(xloadflags)} lacks XLF_KERNEL_64); build an x86_64 kernel`,
    );
  if (!(b[SETUP.loadflags]! & LOADED_HIGH))
    throw new KernelImageError(`${name} does not load at 1 MiB (loadflags lacks LOADED_HIGH): a zImage, not a bzImage`);
  const setupSects = b[SETUP.setup_sects] || 4;
  const kernelOffset = (setupSects + 1) * 512;
  const kernelBytes = b.readUInt32LE(SETUP.syssize) * 16;
  if (fileSize < kernelOffset + kernelBytes) {
    throw new KernelImageError(
      `${name} is truncated: its header promises ${kernelOffset + kernelBytes} bytes, the file has ${fileSize}; copy the bzImage again`,
    );
  }
  const payloadAt = b.readUInt32LE(SETUP.payload_offset);
  const payloadLen = b.readUInt32LE(SETUP.payload_length);
  if (payloadAt + payloadLen > kernelBytes)
    throw new KernelImageError(
      `${name} is damaged: its compressed kernel (payload at ${hex(payloadAt)}, ${payloadLen} bytes) runs past the protected-mode part (${kernelBytes} bytes); copy the bzImage again`,
    );
  const headerEnd = 0x202 + b[SETUP.jump + 1]!;
  const relocatable = b[SETUP.relocatable_kernel] !== 0;
  const align = BigInt(b.readUInt32LE(SETUP.kernel_alignment)) || 0x200000n;
  let load = b.readBigUInt64LE(SETUP.pref_address);
  if (relocatable) {
    if (load < 0x100000n) load = 0x1000000n;
    load = ((load + align - 1n) / align) * align;
  } else if (load < 0x100000n) {
    throw new KernelImageError(`${name} is not relocatable and prefers ${hex(load)}, below 1 MiB where the VMM keeps boot structures`);
  }
  return {
    setupHeader: b.subarray(SETUP.setup_sects, headerEnd),
    kernel: { offset: kernelOffset, length: fileSize - kernelOffset },
    payload: { offset: kernelOffset + payloadAt, length: payloadLen },
    version,
    loadAddress: load,
    relocatable,
    initSize: BigInt(b.readUInt32LE(SETUP.init_size)),
    initrdAddrMax: BigInt(b.readUInt32LE(SETUP.initrd_addr_max)),
    cmdlineMax: b.readUInt32LE(SETUP.cmdline_size) || 255,
  };
}
