// The payload: an ELF64 x86-64 executable whose PT_LOAD segments are copied
// to their physical addresses. Pure parsing and checks; the caller writes.
import { hex } from '../memory/layout.js';
import { BOOT } from './boot.js';
import { readElf, type ElfImage } from './elf.js';

export class PayloadError extends Error {
  override readonly name = 'PayloadError';
}

export type { Segment } from './elf.js';
export type Payload = ElfImage;

export function parseElf(file: Uint8Array, name: string): Payload {
  const image = readElf(file);
  if ('bad' in image) {
    const hint = image.bad.startsWith('is not') ? '; build the test guest with: npm run build' : '';
    throw new PayloadError(`payload ${name} ${image.bad}${hint}`);
  }
  image.segments.forEach((s, i) => {
    if (s.gpa < BOOT.payloadMin)
      throw new PayloadError(
        `payload ${name}: segment ${i} loads at ${hex(s.gpa)}, below ${hex(BOOT.payloadMin)} where the VMM keeps boot structures; link it at 1 MiB or above`,
      );
  });
  return image;
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
