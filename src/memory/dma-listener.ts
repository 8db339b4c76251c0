// Keeps a DMA space in step with guest RAM: on every commit of the guest
// memory map, the IOMMU is brought to exactly the RAM regions (IOVA = GPA),
// by pin-core's planner. memfd RAM is mapped by file where the backend can
// (IOAS_MAP_FILE), so iommufd pins the file's pages, not a process's VMA.
import { DmaError, type DmaMapper } from './dma-mapper.js';
import type { MemoryListener, MemoryRegion } from './listener.js';
import type { Region, SyncResult } from './pin-core.js';

export class DmaListener implements MemoryListener {
  private readonly regions = new Set<MemoryRegion>();
  private readonly byFile: boolean;
  /** The last sync that went through. */
  last: SyncResult | undefined;
  /** What the space charges now: the last sync's final charge, even when that sync failed part way. */
  held = 0n;

  constructor(
    readonly mapper: DmaMapper,
    /** The most this space may have charged at any point of a change, asked at each commit; null: no limit applies. */
    private readonly budget: () => { bytes: bigint; why: string } | null = () => null,
  ) {
    this.byFile = mapper.caps.canMapFile;
  }

  regionAdd(r: MemoryRegion): void {
    if (r.kind === 'ram') this.regions.add(r);
  }

  regionRemove(r: MemoryRegion): void {
    this.regions.delete(r);
  }

  /** What the IOMMU must map for `regions` (the RAM among them), as commit() asks the mapper. */
  wanted(regions: Iterable<MemoryRegion>): Region[] {
    return [...regions]
      .filter((r) => r.kind === 'ram')
      .map((r) => ({
        iova: r.gpa,
        size: r.size,
        backing: this.byFile && r.file ? { fd: r.file.fd, offset: r.file.offset } : { vaddr: r.hva },
        prot: { read: true, write: !r.readonly },
      }));
  }

  commit(): void {
    const want = this.wanted(this.regions);
    // pin-core's planner takes the headroom above what the space holds now.
    // A change that cannot fit at any order is refused before anything is
    // unmapped, rather than by the kernel half-way.
    const cap = this.budget();
    const held = this.held;
    const headroom = cap === null ? null : cap.bytes > held ? cap.bytes - held : 0n;
    try {
      this.last = this.mapper.sync(want, headroom);
      this.held = this.last.finalCharged;
    } catch (e) {
      // A kernel error part way leaves the ops before it in place: the next headroom starts from what they charge.
      if (e instanceof DmaError && e.finalCharged !== undefined) this.held = e.finalCharged;
      if (e instanceof DmaError && cap && e.op === undefined && e.code === 'ENOMEM') {
        const why = `(this VM holds ${held / 1048576n} MiB; the limit is ${cap.why}); the DMA map is unchanged`;
        throw new DmaError(e.code, e.op, e.iova, e.size, e.path, `${e.message} ${why}`, e.finalCharged);
      }
      throw e;
    }
  }
}
