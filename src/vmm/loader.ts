// The payload: an ELF64 x86-64 executable whose PT_LOAD segments are copied
// to their physical addresses. Pure parsing and checks; the caller writes.
import { hex } from '../memory/layout.js';
import { BOOT } from './boot.js';

export class PayloadError extends Error {
  override readonly name = 'PayloadError';
}

export interface Segment {
  gpa: bigint;
  data: Uint8Array;
  /** Bytes in memory (data, then zeros). */
  memsz: bigint;
}

export interface Payload {
  entry: bigint;
  segments: Segment[];
  /** Highest guest-physical address used, exclusive. */
  end: bigint;
}

const PT_LOAD = 1;
const EM_X86_64 = 62;
const ET_EXEC = 2;

export function parseElf(file: Uint8Array, name: string): Payload {
  const b = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  const notElf = `payload ${name} is not an ELF64 x86-64 executable; build the test guest with: npm run build`;
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) throw new PayloadError(notElf);
  if (b.readUInt16LE(16) !== ET_EXEC || b.readUInt16LE(18) !== EM_X86_64) throw new PayloadError(notElf);
  const entry = b.readBigUInt64LE(24);
  const phoff = Number(b.readBigUInt64LE(32));
  const phentsize = b.readUInt16LE(54);
  const phnum = b.readUInt16LE(56);
  if (phoff + phnum * phentsize > b.length) throw new PayloadError(`payload ${name}: program headers run past the end of the file`);
  const segments: Segment[] = [];
  let end = 0n;
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (b.readUInt32LE(at) !== PT_LOAD) continue;
    const offset = Number(b.readBigUInt64LE(at + 8));
    const paddr = b.readBigUInt64LE(at + 24);
    const filesz = Number(b.readBigUInt64LE(at + 32));
    const memsz = b.readBigUInt64LE(at + 40);
    if (offset + filesz > b.length) throw new PayloadError(`payload ${name}: segment ${i} runs past the end of the file`);
    if (paddr < BOOT.payloadMin)
      throw new PayloadError(
        `payload ${name}: segment ${i} loads at ${hex(paddr)}, below ${hex(BOOT.payloadMin)} where the VMM keeps boot structures; link it at 1 MiB or above`,
      );
    segments.push({ gpa: paddr, data: b.subarray(offset, offset + filesz), memsz });
    if (paddr + memsz > end) end = paddr + memsz;
  }
  if (!segments.length) throw new PayloadError(`payload ${name} has no loadable segment`);
  return { entry, segments, end };
}

/** Throws unless every segment fits in RAM below `ramEnd`. */
export function checkFits(p: Payload, ramEnd: bigint, name: string, memoryArg: string): void {
  if (p.end > ramEnd) {
    const needMiB = (p.end + (1n << 20n) - 1n) >> 20n;
    throw new PayloadError(
      `payload ${name} needs guest RAM up to ${hex(p.end)} (${needMiB} MiB) but --memory ${memoryArg} gives ${hex(ramEnd)}; raise --memory`,
    );
  }
}
