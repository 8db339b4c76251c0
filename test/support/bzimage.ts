// A synthetic bzImage: a valid setup header and filler for the protected-mode
// kernel, for tests of the boot protocol checks and placement.
import { SETUP } from '../../src/vmm/bzimage.js';

/** A bzImage with a valid setup header and `kernelBytes` of protected-mode code. */
export function bzImage(
  o: {
    version?: number;
    xloadflags?: number;
    relocatable?: number;
    kernelBytes?: number;
    cut?: number;
    pref?: bigint;
    initSize?: number;
    /** The compressed kernel (payload_offset/payload_length), placed at the start of the protected-mode part. */
    payload?: Uint8Array;
  } = {},
): Buffer {
  const setupSects = 4;
  const kernelBytes = o.kernelBytes ?? Math.max(4096, Math.ceil((o.payload?.length ?? 0) / 16) * 16);
  const b = Buffer.alloc((setupSects + 1) * 512 + kernelBytes);
  b[SETUP.setup_sects] = setupSects;
  b.writeUInt32LE(kernelBytes / 16, SETUP.syssize);
  b.writeUInt16LE(0xaa55, SETUP.boot_flag);
  b[SETUP.jump] = 0xeb;
  b[SETUP.jump + 1] = 0x6a; // header ends at 0x26c
  b.writeUInt32LE(0x53726448, SETUP.header);
  b.writeUInt16LE(o.version ?? 0x020f, SETUP.version);
  b[SETUP.loadflags] = 0x01;
  b.writeUInt32LE(0x37ffffff, SETUP.initrd_addr_max);
  b.writeUInt32LE(0x200000, SETUP.kernel_alignment);
  b[SETUP.relocatable_kernel] = o.relocatable ?? 1;
  b.writeUInt16LE(o.xloadflags ?? 0x03, SETUP.xloadflags);
  b.writeUInt32LE(2048, SETUP.cmdline_size);
  b.writeBigUInt64LE(o.pref ?? 0x1000000n, SETUP.pref_address);
  b.writeUInt32LE(o.initSize ?? 8 * 1048576, SETUP.init_size);
  b.fill(0xcc, (setupSects + 1) * 512);
  if (o.payload) {
    b.set(o.payload, (setupSects + 1) * 512);
    b.writeUInt32LE(o.payload.length, SETUP.payload_length);
  }
  return o.cut ? b.subarray(0, o.cut) : b;
}
