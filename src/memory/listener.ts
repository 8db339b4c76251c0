// The memory listener: how KVM memslots and the DMA mapper follow the guest
// memory map. Within one transaction listeners see removals, then additions,
// then commit (as QEMU's MemoryListener), so a listener can batch work.

export interface MemoryRegion {
  name: string;
  /** Guest-physical start and size. */
  gpa: bigint;
  size: bigint;
  /** Host virtual address of the first byte. */
  hva: bigint;
  /** The file behind it, when there is one (memfd RAM): DMA can map it by fd. */
  file?: { fd: number; offset: bigint };
  /** RAM (guest memory, DMA-able) or a device's mmap'd BAR (guest-visible, not DMA-mapped by default). */
  kind: 'ram' | 'device';
  readonly?: boolean;
}

export interface MemoryListener {
  regionAdd(r: MemoryRegion): void;
  regionRemove(r: MemoryRegion): void;
  commit(): void;
}
