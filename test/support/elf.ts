// A minimal ELF64 x86-64 executable with the given PT_LOAD segments, for the
// payload loader's and the kernel unpacker's tests.

export function elf(entry: bigint, segs: { paddr: bigint; data: number[]; memsz?: number }[]): Uint8Array {
  const phoff = 64;
  const dataOff = phoff + segs.length * 56;
  const total = dataOff + segs.reduce((n, s) => n + s.data.length, 0);
  const b = Buffer.alloc(total);
  b.writeUInt32BE(0x7f454c46, 0);
  b[4] = 2; // ELFCLASS64
  b[5] = 1; // little-endian
  b[6] = 1;
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(62, 18); // EM_X86_64
  b.writeBigUInt64LE(entry, 24);
  b.writeBigUInt64LE(BigInt(phoff), 32);
  b.writeUInt16LE(56, 54);
  b.writeUInt16LE(segs.length, 56);
  let off = dataOff;
  segs.forEach((s, i) => {
    const at = phoff + i * 56;
    b.writeUInt32LE(1, at); // PT_LOAD
    b.writeBigUInt64LE(BigInt(off), at + 8);
    b.writeBigUInt64LE(s.paddr, at + 16);
    b.writeBigUInt64LE(s.paddr, at + 24);
    b.writeBigUInt64LE(BigInt(s.data.length), at + 32);
    b.writeBigUInt64LE(BigInt(s.memsz ?? s.data.length), at + 40);
    Buffer.from(s.data).copy(b, off);
    off += s.data.length;
  });
  return b;
}
