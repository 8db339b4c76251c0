// The DMA table of a VM with assigned devices as a live update carries it:
// each mapping the kernel holds, named by the RAM file behind it (an index
// of the hand-over's memfds and an offset into it) rather than by this
// process's addresses or fd numbers, so the next process can put its own
// mapping of the same file in the table. The kernel keeps the mappings
// themselves; nothing here maps.
import type { MemoryRegion } from '../memory/listener.js';
import type { Region } from '../memory/pin-core.js';

export interface DmaImage {
  iova: bigint;
  size: bigint;
  /** Index into the hand-over's RAM backings. */
  backing: number;
  /** Where in that file the mapping starts. */
  offset: bigint;
  /** Mapped by file (IOMMU_IOAS_MAP_FILE) rather than by user address. */
  byFile: boolean;
  write: boolean;
}

const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** The mapper's table named by file: `backingOf` gives a RAM file's index in the hand-over. */
export function dmaImage(mapped: readonly Region[], ram: readonly MemoryRegion[], backingOf: (fd: number) => number): DmaImage[] {
  return mapped.map((m) => {
    const at = `the DMA mapping ${hex(m.iova)}+${hex(m.size)}`;
    const common = { iova: m.iova, size: m.size, write: m.prot.write };
    if ('fd' in m.backing) return { ...common, backing: backingOf(m.backing.fd), offset: m.backing.offset, byFile: true };
    const v = m.backing.vaddr;
    const r = ram.find((x) => x.hva <= v && v + m.size <= x.hva + x.size);
    if (!r?.file) throw new Error(`${at} maps ${hex(v)}, which is in no RAM file of the guest memory map`);
    return { ...common, backing: backingOf(r.file.fd), offset: r.file.offset + (v - r.hva), byFile: false };
  });
}

/** The table again in the next process: its RAM regions, and its fd for each backing index. */
export function dmaRegions(image: readonly DmaImage[], ram: readonly MemoryRegion[], fdOf: (backing: number) => number): Region[] {
  return image.map((d) => {
    const fd = fdOf(d.backing);
    const prot = { read: true, write: d.write };
    if (d.byFile) return { iova: d.iova, size: d.size, backing: { fd, offset: d.offset }, prot };
    const r = ram.find((x) => x.file?.fd === fd && x.file.offset <= d.offset && d.offset + d.size <= x.file.offset + x.size);
    if (!r)
      throw new Error(
        `the DMA mapping ${hex(d.iova)}+${hex(d.size)} is at ${hex(d.offset)} of RAM file ${d.backing}, which no region of this memory map holds`,
      );
    return { iova: d.iova, size: d.size, backing: { vaddr: r.hva + (d.offset - r.file!.offset) }, prot };
  });
}
