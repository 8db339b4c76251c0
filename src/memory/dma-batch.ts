// A DMA batch: map, unmap and copy records packed into one BigUint64Array
// (the layout is crates/pin-core/src/batch.rs's), so that DmaMapper.run
// crosses into pin-core once for all of them, with no object or BigInt per
// argument. Numbers are written as two 32-bit halves, so a caller holding
// Numbers allocates nothing; BigInts go in as they are.
import type { Prot, U64 } from './pin-core.js';

/** u64 words per record. */
export const WORDS = 4;
export const KIND = { map: 1, mapFile: 2, unmap: 3, copy: 4 } as const;
export const PROT_READ = 0x100;
export const PROT_WRITE = 0x200;

const RW: Prot = { read: true, write: true };
const MAX_U64 = (1n << 64n) - 1n;
const TWO_32 = 2 ** 32;

// The halves view assumes the low half first; pin-core runs on x86-64 only.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('DmaBatch needs a little-endian host');

export class DmaBatch {
  readonly words: BigUint64Array;
  /** The same memory as 32-bit halves, for Number arguments. */
  private readonly halves: Uint32Array;
  /** Records written so far; DmaMapper.run runs these. */
  count = 0;

  constructor(readonly capacity: number) {
    this.words = new BigUint64Array(capacity * WORDS);
    this.halves = new Uint32Array(this.words.buffer);
  }

  map(iova: U64, size: U64, vaddr: U64, prot: Prot = RW): this {
    const w = this.next();
    this.head(w, KIND.map | protBits(prot), 0);
    return this.args(w, iova, size, vaddr);
  }

  /** A map of `size` bytes of file `fd` from `offset` (IOMMU_IOAS_MAP_FILE; iommufd only). */
  mapFile(iova: U64, size: U64, fd: number, offset: U64, prot: Prot = RW): this {
    if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fff_ffff) throw new RangeError(`fd ${fd} is not a file descriptor`);
    const w = this.next();
    this.head(w, KIND.mapFile | protBits(prot), fd);
    return this.args(w, iova, size, offset);
  }

  unmap(iova: U64, size: U64): this {
    const w = this.next();
    this.head(w, KIND.unmap, 0);
    return this.args(w, iova, size, 0);
  }

  /** IOMMU_IOAS_COPY of the whole mapping at `srcIova` to `dstIova` (iommufd only). */
  copy(srcIova: U64, dstIova: U64, size: U64): this {
    const w = this.next();
    this.head(w, KIND.copy, 0);
    return this.args(w, dstIova, size, srcIova);
  }

  /** The bytes the kernel unmapped for record `i`, an unmap that ran. */
  unmapped(i: number): bigint {
    if (!(i >= 0 && i < this.count)) throw new RangeError(`record ${i} is not in the batch (${this.count} records)`);
    return this.words[i * WORDS + 3]!;
  }

  /** Empties the batch for reuse: the array stays. */
  clear(): this {
    this.count = 0;
    return this;
  }

  private next(): number {
    if (this.count >= this.capacity) throw new RangeError(`the DMA batch is full (${this.capacity} records)`);
    return this.count++ * WORDS;
  }

  private head(w: number, low: number, high: number): void {
    this.halves[2 * w] = low;
    this.halves[2 * w + 1] = high;
  }

  private args(w: number, iova: U64, size: U64, arg: U64): this {
    this.put(w + 1, iova, 'iova');
    this.put(w + 2, size, 'size');
    this.put(w + 3, arg, 'vaddr, offset or IOVA');
    return this;
  }

  private put(word: number, v: U64, what: string): void {
    if (typeof v === 'bigint') {
      // A BigUint64Array would take a negative or oversized BigInt modulo 2^64 without a word.
      if (v < 0n || v > MAX_U64) throw this.bad(what, v);
      this.words[word] = v;
    } else {
      if (!Number.isSafeInteger(v) || v < 0) throw this.bad(what, v);
      this.halves[2 * word] = v >>> 0;
      this.halves[2 * word + 1] = Math.floor(v / TWO_32);
    }
  }

  private bad(what: string, v: U64): RangeError {
    // The record was half written: drop it.
    this.count--;
    return new RangeError(`${what} ${v} is not a 64-bit unsigned integer (a Number must be a safe integer)`);
  }
}

function protBits(p: Prot): number {
  return (p.read ? PROT_READ : 0) | (p.write ? PROT_WRITE : 0);
}
