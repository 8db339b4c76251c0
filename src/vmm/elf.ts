// ELF64 x86-64 executables: the entry point and the PT_LOAD segments by
// physical address. Shared by the test guest's payload and a kernel's
// vmlinux; each caller words its own errors. Pure.

export interface Segment {
  gpa: bigint;
  data: Uint8Array;
  /** Bytes in memory (data, then zeros). */
  memsz: bigint;
}

export interface ElfImage {
  entry: bigint;
  segments: Segment[];
  /** Highest guest-physical address used, exclusive. */
  end: bigint;
}

const PT_LOAD = 1;
const EM_X86_64 = 62;
const ET_EXEC = 2;

/** The image, or why it is not one (a phrase to put after the file's name). */
export function readElf(file: Uint8Array): ElfImage | { bad: string } {
  const b = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) return { bad: 'is not an ELF64 x86-64 executable' };
  if (b.readUInt16LE(16) !== ET_EXEC || b.readUInt16LE(18) !== EM_X86_64) return { bad: 'is not an ELF64 x86-64 executable' };
  const entry = b.readBigUInt64LE(24);
  const phoff = Number(b.readBigUInt64LE(32));
  const phentsize = b.readUInt16LE(54);
  const phnum = b.readUInt16LE(56);
  if (phoff + phnum * phentsize > b.length) return { bad: 'has program headers that run past the end of the file' };
  const segments: Segment[] = [];
  let end = 0n;
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (b.readUInt32LE(at) !== PT_LOAD) continue;
    const offset = Number(b.readBigUInt64LE(at + 8));
    const paddr = b.readBigUInt64LE(at + 24);
    const filesz = Number(b.readBigUInt64LE(at + 32));
    const memsz = b.readBigUInt64LE(at + 40);
    if (offset + filesz > b.length) return { bad: `has segment ${i} running past the end of the file` };
    segments.push({ gpa: paddr, data: b.subarray(offset, offset + filesz), memsz });
    if (paddr + memsz > end) end = paddr + memsz;
  }
  if (!segments.length) return { bad: 'has no loadable segment' };
  return { entry, segments, end };
}

/** The writes that put an image in guest memory: each segment's data, then its zeros. */
export function segmentWrites(image: ElfImage): [bigint, Uint8Array][] {
  const writes: [bigint, Uint8Array][] = [];
  for (const s of image.segments) {
    writes.push([s.gpa, s.data]);
    const rest = s.memsz - BigInt(s.data.length);
    if (rest > 0n) writes.push([s.gpa + BigInt(s.data.length), new Uint8Array(Number(rest))]);
  }
  return writes;
}
