// Memory changes asked for through the API, checked at the edge: a verb's
// body parsed into a change, then planned against the current guest memory
// map (alignment, overlap, the PCI hole, the 64-bit BAR window) and the DMA
// mappings that serve it (a change may begin and end only on their edges).
// Pure: the VM only sees plans that fit the map; what the kernel and the DMA
// budget decide comes after, in one GuestMemory.update.
import { PCI_MMIO64 } from '../devices/pci/bar-allocator.js';
import type { RamBackend } from '../memory/guest-ram.js';
import { HIGH_RAM_START, hex, LOW_RAM_END, MAX_RAM_ALLOCATION, MiB, parseSize } from '../memory/layout.js';
import { ApiError } from './errors.js';

const BACKENDS: readonly RamBackend[] = ['memfd', 'anon', 'hugetlb'];
const HUGE_2M = 2n * MiB;

export type MemoryChange =
  | { verb: 'add-ram'; gpa: bigint; size: bigint; backend: RamBackend }
  | { verb: 'remove-ram'; gpa: bigint }
  | { verb: 'resize-ram'; gpa: bigint; size: bigint }
  | { verb: 'split-ram'; gpa: bigint; at: bigint }
  | { verb: 'move-ram'; gpa: bigint; to: bigint }
  | { verb: 'replace-ram'; gpa: bigint; backend: RamBackend };
export type MemoryVerb = MemoryChange['verb'];

/** Each verb's body fields; the first ones are required, `backend` of add-ram is not. */
export const MEMORY_VERBS: Record<MemoryVerb, readonly string[]> = {
  'add-ram': ['gpa', 'size', 'backend'],
  'remove-ram': ['gpa'],
  'resize-ram': ['gpa', 'size'],
  'split-ram': ['gpa', 'at'],
  'move-ram': ['gpa', 'to'],
  'replace-ram': ['gpa', 'backend'],
};

/** One entry of the map as the planner sees it. */
export interface MapEntry {
  name: string;
  gpa: bigint;
  size: bigint;
  kind: 'ram' | 'device';
  /** What backs a RAM region (its alignment follows). */
  backend?: RamBackend;
  /** The size a RAM region can grow to in place: its backing has room after it (GuestRam.grow). */
  growsInPlaceTo?: bigint;
}

export interface MapLimits {
  pageSize: bigint;
  /** Ranges no RAM may enter. */
  holes: readonly { name: string; start: bigint; end: bigint }[];
  /** RAM ends below this (where 64-bit BARs go). */
  ramCeiling: bigint;
  /** The largest region the VMM can view as one typed array. */
  maxRegion: bigint;
}

/**
 * What the IOMMU maps now, IOVA = GPA (DmaMapper.mapped()); empty with no device assigned. pin-core's
 * granule.rs places the edges between these mappings; they are read back here, never worked out again.
 */
export type DmaMappings = readonly { iova: bigint; size: bigint }[];

export const DEFAULT_HOLES = [{ name: 'the PCI hole', start: LOW_RAM_END, end: HIGH_RAM_START }] as const;

export function mapLimits(pageSize: bigint): MapLimits {
  return { pageSize, holes: DEFAULT_HOLES, ramCeiling: PCI_MMIO64.start, maxRegion: MAX_RAM_ALLOCATION };
}

/** Where a planned region's bytes come from. */
export type PlannedBacking =
  /** A fresh allocation, with the first `copy.bytes` copied from the region at `copy.from` before the swap. */
  | { kind: 'new'; backend: RamBackend; copy?: { from: bigint; bytes: bigint } }
  /** The backing of the region at `of`, grown in place: its bytes stay where they are, the rest is new. */
  | { kind: 'grown'; of: bigint }
  /** The same backing as the region at `of`, from `offset` into it. */
  | { kind: 'same'; of: bigint; offset: bigint };

export interface PlannedRegion {
  gpa: bigint;
  size: bigint;
  backing: PlannedBacking;
}

/** One GuestMemory.update: regions out (by start), regions in. */
export interface MemoryPlan {
  change: MemoryChange;
  remove: bigint[];
  add: PlannedRegion[];
  summary: string;
}

/** The body of `vm.<verb>` as a change; a 400 with what is wrong otherwise. */
export function parseChange(verb: MemoryVerb, body: unknown): MemoryChange {
  const fields = MEMORY_VERBS[verb];
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new ApiError(400, `vm.${verb} takes a JSON object with ${fields.join(', ')}`);
  const o = body as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!fields.includes(k)) throw new ApiError(400, `vm.${verb}: unknown field '${k}'; it takes ${fields.join(', ')}`);
  const need = (k: string): unknown => {
    if (o[k] === undefined) throw new ApiError(400, `vm.${verb} needs '${k}'`);
    return o[k];
  };
  const gpa = byteCount(verb, 'gpa', need('gpa'));
  switch (verb) {
    case 'add-ram':
      return { verb, gpa, size: byteCount(verb, 'size', need('size')), backend: backend(verb, o.backend ?? 'memfd') };
    case 'remove-ram':
      return { verb, gpa };
    case 'resize-ram':
      return { verb, gpa, size: byteCount(verb, 'size', need('size')) };
    case 'split-ram':
      return { verb, gpa, at: byteCount(verb, 'at', need('at')) };
    case 'move-ram':
      return { verb, gpa, to: byteCount(verb, 'to', need('to')) };
    case 'replace-ram':
      return { verb, gpa, backend: backend(verb, need('backend')) };
  }
}

/** A whole number of bytes: a JSON number, or a string in hex (0x...), decimal, or a size (16M, 1G). */
export function byteCount(verb: string, field: string, v: unknown): bigint {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === 'string') {
    if (/^0x[0-9a-f]+$/i.test(v)) return BigInt(v);
    try {
      return parseSize(v, field);
    } catch {
      // the line below says what is accepted
    }
  }
  throw new ApiError(
    400,
    `vm.${verb}: '${field}' must be a byte count or address (a number, "0x40000000", "16M"), got ${JSON.stringify(v)}`,
  );
}

function backend(verb: string, v: unknown): RamBackend {
  if (typeof v === 'string' && (BACKENDS as readonly string[]).includes(v)) return v as RamBackend;
  throw new ApiError(400, `vm.${verb}: 'backend' must be one of ${BACKENDS.join(', ')}, got ${JSON.stringify(v)}`);
}

const range = (gpa: bigint, size: bigint): string => `[${hex(gpa)}, ${hex(gpa + size)})`;
const mib = (b: bigint): string => (b % MiB === 0n ? `${b / MiB} MiB` : `${b / 1024n} KiB`);

/** The alignment RAM on `backend` needs: a page, or a 2 MiB huge page. */
export function alignmentOf(backend: RamBackend | undefined, l: MapLimits): bigint {
  return backend === 'hugetlb' ? HUGE_2M : l.pageSize;
}

function aligned(verb: string, what: string, v: bigint, align: bigint): void {
  if (v % align !== 0n)
    throw new ApiError(
      400,
      `vm.${verb}: ${what} ${hex(v)} is not a multiple of ${align === HUGE_2M ? '2 MiB (hugetlb RAM)' : `the ${align}-byte page size`}; e.g. ${hex(v - (v % align))} or ${hex(v - (v % align) + align)}`,
    );
}

/** [gpa, gpa+size) must be a non-empty range clear of the holes, below the ceiling and of every entry but `except`. */
function placeable(verb: string, gpa: bigint, size: bigint, map: readonly MapEntry[], l: MapLimits, except: readonly bigint[]): void {
  if (size <= 0n) throw new ApiError(400, `vm.${verb}: a region needs a size above 0`);
  if (size > l.maxRegion) throw new ApiError(400, `vm.${verb}: ${mib(size)} is over the ${mib(l.maxRegion)} a region may have`);
  if (gpa + size > l.ramCeiling)
    throw new ApiError(409, `vm.${verb}: ${range(gpa, size)} ends above ${hex(l.ramCeiling)}, where 64-bit BARs go; RAM stays below it`);
  for (const h of l.holes)
    if (gpa < h.end && h.start < gpa + size)
      throw new ApiError(409, `vm.${verb}: ${range(gpa, size)} reaches into ${h.name} ${range(h.start, h.end - h.start)}`);
  for (const r of map)
    if (!except.includes(r.gpa) && gpa < r.gpa + r.size && r.gpa < gpa + size)
      throw new ApiError(409, `vm.${verb}: ${range(gpa, size)} overlaps ${r.name} ${range(r.gpa, r.size)}`);
}

const dmaAround = (dma: DmaMappings, p: bigint) => dma.find((m) => m.iova < p && p < m.iova + m.size);

/**
 * A point the client chose (a split, a shrink's new end) must fall between DMA mappings: the kernel unmaps
 * only whole ones, so a later change there would unmap memory that did not change with it.
 */
function onDmaEdge(verb: string, what: string, point: bigint, r: MapEntry, dma: DmaMappings): void {
  const m = dmaAround(dma, point);
  if (!m) return;
  const granule = dma.filter((x) => x.iova < r.gpa + r.size && r.gpa < x.iova + x.size).reduce((g, x) => (x.size > g ? x.size : g), 0n);
  throw new ApiError(
    400,
    `vm.${verb}: ${what} ${hex(point)} is inside the DMA mapping ${range(m.iova, m.size)} of ${r.name}, and the IOMMU cannot cut a mapping: ${r.name}'s DMA granule is ${mib(granule)}, so e.g. ${hex(m.iova)} or ${hex(m.iova + m.size)}`,
  );
}

/** A region changed whole must not share a DMA mapping with a neighbour, as when the planner merged them to fit the entry limit. */
function ownDmaMappings(verb: string, r: MapEntry, dma: DmaMappings): void {
  for (const p of [r.gpa, r.gpa + r.size]) {
    const m = dmaAround(dma, p);
    if (m)
      throw new ApiError(
        409,
        `vm.${verb}: ${r.name} ${range(r.gpa, r.size)} shares the DMA mapping ${range(m.iova, m.size)} with its neighbour (merged to fit the entry limit), which the IOMMU unmaps only whole, so it cannot change alone`,
      );
  }
}

function ramAt(verb: string, gpa: bigint, map: readonly MapEntry[]): MapEntry {
  const r = map.find((x) => x.gpa === gpa);
  if (!r) {
    const inside = map.find((x) => gpa > x.gpa && gpa < x.gpa + x.size);
    throw new ApiError(
      404,
      `vm.${verb}: no region starts at ${hex(gpa)}${inside ? ` (it is inside ${inside.name}, which starts at ${hex(inside.gpa)})` : ''}`,
    );
  }
  if (r.kind !== 'ram')
    throw new ApiError(409, `vm.${verb}: ${r.name} at ${hex(gpa)} is a device BAR, which the guest places; only RAM changes here`);
  return r;
}

/** The one update that makes `c` on `map`, or a 4xx saying why it cannot be made. */
export function planChange(c: MemoryChange, map: readonly MapEntry[], l: MapLimits, dma: DmaMappings = []): MemoryPlan {
  const v = c.verb;
  switch (c.verb) {
    case 'add-ram': {
      const a = alignmentOf(c.backend, l);
      aligned(v, 'gpa', c.gpa, a);
      aligned(v, 'size', c.size, a);
      placeable(v, c.gpa, c.size, map, l, []);
      const add = [{ gpa: c.gpa, size: c.size, backing: { kind: 'new', backend: c.backend } } as const];
      return { change: c, remove: [], add, summary: `added ${mib(c.size)} of ${c.backend} RAM at ${range(c.gpa, c.size)}` };
    }
    case 'remove-ram': {
      const r = ramAt(v, c.gpa, map);
      if (map.filter((x) => x.kind === 'ram').length === 1) throw new ApiError(409, `vm.${v}: ${r.name} is the guest's only RAM`);
      ownDmaMappings(v, r, dma);
      return { change: c, remove: [r.gpa], add: [], summary: `removed ${r.name} ${range(r.gpa, r.size)}` };
    }
    case 'resize-ram': {
      const r = ramAt(v, c.gpa, map);
      aligned(v, 'size', c.size, alignmentOf(r.backend, l));
      if (c.size === r.size) throw new ApiError(400, `vm.${v}: ${r.name} already has ${mib(r.size)}`);
      placeable(v, r.gpa, c.size, map, l, [r.gpa]);
      ownDmaMappings(v, r, dma);
      if (c.size < r.size) onDmaEdge(v, 'the new end', r.gpa + c.size, r, dma);
      // Growing where the backing has room after the region makes it longer in place: what the region
      // held stays mapped and only the new tail is mapped; otherwise a larger backing gets the old bytes.
      // Shrinking keeps the backing (its tail is freed with it).
      const inPlace = c.size > r.size && r.growsInPlaceTo !== undefined && c.size <= r.growsInPlaceTo;
      const backing: PlannedBacking =
        c.size < r.size
          ? { kind: 'same', of: r.gpa, offset: 0n }
          : inPlace
            ? { kind: 'grown', of: r.gpa }
            : { kind: 'new', backend: r.backend ?? 'memfd', copy: { from: r.gpa, bytes: r.size } };
      return {
        change: c,
        remove: [r.gpa],
        add: [{ gpa: r.gpa, size: c.size, backing }],
        summary: `${c.size > r.size ? 'grew' : 'shrank'} ${r.name} at ${hex(r.gpa)} from ${mib(r.size)} to ${mib(c.size)}${inPlace ? ' in place' : ''}`,
      };
    }
    case 'split-ram': {
      const r = ramAt(v, c.gpa, map);
      if (c.at <= r.gpa || c.at >= r.gpa + r.size)
        throw new ApiError(400, `vm.${v}: ${hex(c.at)} is not inside ${r.name} ${range(r.gpa, r.size)}, so it cannot split it`);
      aligned(v, 'at', c.at, alignmentOf(r.backend, l));
      // Nothing is remapped now, but a later change to either half begins or ends here.
      onDmaEdge(v, 'at', c.at, r, dma);
      const low = c.at - r.gpa;
      return {
        change: c,
        remove: [r.gpa],
        add: [
          { gpa: r.gpa, size: low, backing: { kind: 'same', of: r.gpa, offset: 0n } },
          { gpa: c.at, size: r.size - low, backing: { kind: 'same', of: r.gpa, offset: low } },
        ],
        summary: `split ${r.name} ${range(r.gpa, r.size)} at ${hex(c.at)}`,
      };
    }
    case 'move-ram': {
      const r = ramAt(v, c.gpa, map);
      aligned(v, 'to', c.to, alignmentOf(r.backend, l));
      if (c.to === r.gpa) throw new ApiError(400, `vm.${v}: ${r.name} is already at ${hex(r.gpa)}`);
      placeable(v, c.to, r.size, map, l, [r.gpa]);
      ownDmaMappings(v, r, dma);
      return {
        change: c,
        remove: [r.gpa],
        add: [{ gpa: c.to, size: r.size, backing: { kind: 'same', of: r.gpa, offset: 0n } }],
        summary: `moved ${r.name} (${mib(r.size)}) from ${hex(r.gpa)} to ${hex(c.to)}`,
      };
    }
    case 'replace-ram': {
      const r = ramAt(v, c.gpa, map);
      const a = alignmentOf(c.backend, l);
      aligned(v, 'gpa', r.gpa, a);
      aligned(v, 'size', r.size, a);
      if (r.size > l.maxRegion) throw new ApiError(400, `vm.${v}: ${mib(r.size)} is over the ${mib(l.maxRegion)} a region may have`);
      ownDmaMappings(v, r, dma);
      return {
        change: c,
        remove: [r.gpa],
        add: [{ gpa: r.gpa, size: r.size, backing: { kind: 'new', backend: c.backend, copy: { from: r.gpa, bytes: r.size } } }],
        summary: `replaced the ${r.backend ?? 'unknown'} backing of ${r.name} ${range(r.gpa, r.size)} with ${c.backend}, contents copied`,
      };
    }
  }
}
