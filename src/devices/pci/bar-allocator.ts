// Where BARs go: 32-bit memory BARs inside the PCI hole below 4 GiB, 64-bit
// ones in a window above RAM, I/O BARs from 0xc000; each aligned to its
// size, as firmware would place them. Pure.
import { PCI_MMIO32, RAM_CEILING } from '../../memory/layout.js';

/** 64-bit BARs go at 256 GiB: above any RAM Pinion gives a guest, inside its 512 GiB identity map. */
export const PCI_MMIO64 = { start: RAM_CEILING, end: 0x80_0000_0000n } as const;
export const PCI_IO = { start: 0xc000n, end: 0x10000n } as const;

export type BarSpace = 'io' | 'mem32' | 'mem64';

export class BarAllocator {
  private next: Record<BarSpace, bigint> = { io: PCI_IO.start, mem32: PCI_MMIO32.start, mem64: PCI_MMIO64.start };
  private readonly end: Record<BarSpace, bigint> = { io: PCI_IO.end, mem32: PCI_MMIO32.end, mem64: PCI_MMIO64.end };

  allocate(space: BarSpace, size: bigint, what: string): bigint {
    if (size <= 0n || (size & (size - 1n)) !== 0n) throw new RangeError(`${what}: BAR size 0x${size.toString(16)} is not a power of two`);
    // Memory BARs get at least a page so each can be its own memslot.
    const align = space === 'io' ? size : size < 0x1000n ? 0x1000n : size;
    const at = (this.next[space] + align - 1n) & ~(align - 1n);
    if (at + size > this.end[space]) throw new RangeError(`${what}: no room for a 0x${size.toString(16)}-byte ${space} BAR`);
    this.next[space] = at + (space === 'io' ? size : align);
    return at;
  }
}
