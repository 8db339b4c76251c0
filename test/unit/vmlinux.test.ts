// The kernel unpacker: a gzip payload inflated and entered at vmlinux's
// startup_64; every other case left to the bzImage's own decompressor, or
// refused with what to do.
import t from 'tap';
import { gzipSync } from 'node:zlib';
import { parseBzImage, type BzImage } from '../../src/vmm/bzimage.js';
import { linuxBoot } from '../../src/vmm/linux-boot.js';
import { payloadFormat, unpackKernel } from '../../src/vmm/vmlinux.js';
import { MiB, ramRanges } from '../../src/memory/layout.js';
import { bzImage } from '../support/bzimage.js';
import { elf } from '../support/elf.js';

const vmlinux = (at = 0x1000000n): Uint8Array =>
  elf(at + 0x40n, [
    { paddr: at, data: [0x48, 0x31, 0xc0, 0xf4], memsz: 0x2000 },
    { paddr: at + 0x200000n, data: [1, 2, 3], memsz: 0x10000 },
  ]);

/** The image and its payload's bytes, as planBoot reads them from the file. */
function parsed(file: Buffer, name: string): [BzImage, Buffer, string] {
  const image = parseBzImage(file, name);
  return [image, file.subarray(image.payload.offset, image.payload.offset + image.payload.length), name];
}

t.test('a gzip payload is inflated and entered at its ELF entry', async (t) => {
  const [image, payload] = parsed(bzImage({ relocatable: 0, payload: gzipSync(vmlinux()) }), 'bz');
  t.equal(payloadFormat(payload), 'gzip');
  const u = unpackKernel(image, payload, 'bz');
  if (!('vmlinux' in u)) throw new Error(u.why);
  t.equal(u.vmlinux.entry, 0x1000040n);
  const p = linuxBoot({
    image,
    ranges: ramRanges(64n * MiB),
    cmdline: '',
    cpus: 1,
    vmlinux: u.vmlinux,
    kernelName: 'bz',
    memoryArg: '64M',
  });
  t.equal(p.entry, 0x1000040n, 'startup_64, not the decompressor at load + 0x200');
  const at = new Map(p.writes.map(([g, d]) => [g, d as Uint8Array]));
  t.same([...at.get(0x1000000n)!], [0x48, 0x31, 0xc0, 0xf4], 'segments at their physical addresses');
  t.same([...at.get(0x1200000n)!], [1, 2, 3]);
  t.equal(at.get(0x1200003n)!.length, 0x10000 - 3, 'and the rest of each segment zeroed');
  t.notOk(
    p.writes.some(([g]) => g === image.loadAddress && !(at.get(g) instanceof Uint8Array)),
    'the decompressor itself is not loaded',
  );
});

t.test('what the guest decompresses itself, and what is refused', async (t) => {
  t.same(unpackKernel(...parsed(bzImage({ payload: Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0]) }), 'z')), {
    why: 'its kernel is zstd-compressed; Pinion inflates gzip only',
  });
  t.same(unpackKernel(...parsed(bzImage({ payload: gzipSync(vmlinux(0x2000000n)) }), 'm')), {
    why: 'its vmlinux is linked at 0x2000000, not at its load address 0x1000000',
  });
  const bad = gzipSync(vmlinux());
  bad[bad.length - 6]! ^= 0xff; // the CRC
  t.throws(
    () => unpackKernel(...parsed(bzImage({ payload: bad }), 'crc')),
    /^crc: its gzip-compressed kernel does not inflate \(.+\); copy the bzImage again$/,
  );
  t.throws(
    () => unpackKernel(...parsed(bzImage({ payload: gzipSync(Buffer.from('not an elf')) }), 'x')),
    /x: the kernel inside it is not an ELF64 x86-64 executable; copy the bzImage again/,
  );
  const long = bzImage({ payload: gzipSync(vmlinux()) });
  long.writeUInt32LE(1 << 20, 0x24c);
  t.throws(() => parseBzImage(long, 'long'), /long is damaged: its compressed kernel \(payload at 0x0, 1048576 bytes\) runs past/);
});
