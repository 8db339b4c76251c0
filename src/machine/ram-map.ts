// Guest RAM in the guest memory map: the one allocation, placed as its RAM
// ranges (below the PCI hole and above 4 GiB), with KVM's memslots following
// the map from here on.
import { availableParallelism } from 'node:os';
import { GuestRam, type RamBackend } from '../memory/guest-ram.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { RamRange } from '../memory/layout.js';
import type { MemoryRegion } from '../memory/listener.js';
import { pinCore } from '../memory/pin-core.js';
import type { UndoStack } from '../sys/undo.js';
import type { Vm } from '../vmm/vm.js';
import type { RegionImage } from './handover.js';

export interface RamSpec {
  size: bigint;
  backend: RamBackend;
  /** Where its pieces go (layout.ts's ramRanges of `size`). */
  ranges: RamRange[];
}

export function mapRam(memory: GuestMemory, vm: Vm, { size, backend, ranges }: RamSpec, undo: UndoStack): GuestRam {
  const ram = undo.own(GuestRam.allocate(size, backend, BigInt(pinCore.pageSize())), (r) => r.free());
  undo.defer(() => memory.removeListener(vm.memslots));
  memory.addListener(vm.memslots);
  const regions = ramRegions(ram, ranges);
  memory.update((u) => {
    for (const [i, region] of regions.entries()) {
      memory.setView(region, ram.view(ranges[i]!.offset, Number(region.size)));
      u.add(region);
    }
  });
  // Out of the map before the RAM is freed: the map's views of it must not outlive the mapping.
  undo.defer(() => {
    const still = regions.filter((r) => memory.list().includes(r));
    if (still.length) memory.update((u) => still.forEach((r) => u.remove(r.gpa)));
  });
  return ram;
}

/**
 * Guest RAM handed over by another process: each memfd mapped once, the
 * regions placed on them as they were. Returns the backings, which `undo`
 * frees unless `keep` says another owner took one (the API's own backings).
 */
export function adoptRam(
  memory: GuestMemory,
  vm: Vm,
  backingFds: readonly number[],
  images: readonly RegionImage[],
  keep: ReadonlySet<GuestRam>,
  undo: UndoStack,
): GuestRam[] {
  const page = BigInt(pinCore.pageSize());
  const rams = backingFds.map((fd) => undo.own(GuestRam.adopt(fd, page), (r) => keep.has(r) || r.free()));
  undo.defer(() => memory.removeListener(vm.memslots));
  memory.addListener(vm.memslots);
  const regions = images.map((i): [MemoryRegion, Uint8Array] => {
    const ram = rams[i.backing];
    if (!ram || i.offset + i.size > ram.size)
      throw new RangeError(`region ${i.name} lies outside its backing (${i.backing}: ${ram ? `${ram.size} bytes` : 'none'})`);
    const region: MemoryRegion = {
      name: i.name,
      gpa: i.gpa,
      size: i.size,
      hva: ram.vaddr + i.offset,
      file: { fd: ram.fd, offset: i.offset },
      kind: 'ram',
      ...(i.readonly ? { readonly: true } : {}),
    };
    return [region, ram.view(i.offset, Number(i.size))];
  });
  memory.update((u) => {
    for (const [r, view] of regions) {
      memory.setView(r, view);
      u.add(r);
    }
  });
  undo.defer(() => {
    const still = memory.list().filter((r) => regions.some(([x]) => x === r));
    if (still.length) memory.update((u) => still.forEach((r) => u.remove(r.gpa)));
  });
  return rams;
}

/**
 * With a device assigned all of RAM gets pinned anyway: faulting it in first, through the mapping and on
 * several threads, gives the pins (and KVM) whole huge pages where the backing has them, not the 4 KiB
 * pages a pin through the file would allocate one by one.
 */
export function prefaultRam(ram: GuestRam): void {
  pinCore.memPopulate(ram.vaddr, ram.size, Math.min(availableParallelism(), 4));
}

/** The regions of the guest memory map that put the pieces of one RAM allocation where `ranges` say. */
export function ramRegions(ram: GuestRam, ranges: readonly RamRange[]): MemoryRegion[] {
  return ranges.map((r, i) => ({
    name: i ? 'ram-high' : 'ram-low',
    gpa: r.gpa,
    size: r.size,
    hva: ram.vaddr + r.offset,
    file: ram.fd >= 0 ? { fd: ram.fd, offset: r.offset } : undefined,
    kind: 'ram',
  }));
}
