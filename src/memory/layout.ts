// The guest-physical address map: RAM from 0, a 32-bit hole below 4 GiB for
// PCI MMIO and the x86 fixed devices, and the rest of RAM above 4 GiB. Pure.

export const MiB = 1n << 20n;
export const GiB = 1n << 30n;

/** Where RAM below 4 GiB ends and the PCI MMIO hole starts (like QEMU q35 with large RAM). */
export const LOW_RAM_END = 3n * GiB;
export const HIGH_RAM_START = 4n * GiB;
/** RAM stays below 256 GiB, where 64-bit BARs start, inside the 512 GiB the boot page tables identity-map (vmm/boot.ts). */
export const RAM_CEILING = 256n * GiB;
/** All the RAM the map holds: [0, LOW_RAM_END) and [HIGH_RAM_START, RAM_CEILING), boot RAM and added regions together. */
export const MAX_GUEST_RAM = LOW_RAM_END + (RAM_CEILING - HIGH_RAM_START);
/** The VMM views each RAM allocation as one typed array: Node 20's V8 allows 2^32 bytes, and koffi aborts the process on a larger view. */
export const MAX_RAM_ALLOCATION = 4n * GiB;
/** The first MiB is the VMM's: boot tables, and for Linux the BIOS area; payloads load above it. */
export const LOW_RESERVED = MiB;

/** 32-bit PCI MMIO window: inside the hole, clear of the IOAPIC (0xfec00000), LAPIC and KVM's TSS pages. */
export const PCI_MMIO32 = { start: 0xc000_0000n, end: 0xfec0_0000n } as const;
/** KVM_SET_TSS_ADDR takes three pages, KVM_SET_IDENTITY_MAP_ADDR one, just below them. */
export const KVM_TSS_ADDR = 0xfffb_d000n;
export const KVM_IDENTITY_MAP_ADDR = 0xfffb_c000n;

export interface RamRange {
  /** Guest-physical start. */
  gpa: bigint;
  size: bigint;
  /** Offset of this range inside the one RAM allocation (and memfd). */
  offset: bigint;
}

/** RAM below `lowEnd` from 0, the rest from 4 GiB. A smaller `lowEnd` gives a small RAM both pieces (the crossing benchmark). */
export function ramRanges(size: bigint, lowEnd: bigint = LOW_RAM_END): RamRange[] {
  const low = size < lowEnd ? size : lowEnd;
  const ranges: RamRange[] = [{ gpa: 0n, size: low, offset: 0n }];
  if (size > low) ranges.push({ gpa: HIGH_RAM_START, size: size - low, offset: low });
  return ranges;
}

const UNITS = { '': 1n, K: 1n << 10n, M: MiB, G: GiB, T: 1n << 40n } as const;

/** Parses 64M, 1G, 512K or a byte count: the one syntax of sizes, on the command line and in the API. Throws with what was wrong. */
export function parseSize(text: string, what: string): bigint {
  const m = /^(\d+)([KMGT]?)$/i.exec(text.trim());
  if (!m) throw new RangeError(`${what} '${text}' is not a size; write it like 64M, 1G or 65536K`);
  return BigInt(m[1]!) * UNITS[m[2]!.toUpperCase() as keyof typeof UNITS];
}

/** A size as parseSize reads it back: the largest unit that divides it (4G, 64M, 65540K, 1000). */
export function sizeText(bytes: bigint): string {
  for (const u of ['T', 'G', 'M', 'K'] as const) if (bytes >= UNITS[u] && bytes % UNITS[u] === 0n) return `${bytes / UNITS[u]}${u}`;
  return `${bytes}`;
}

export function hex(n: bigint | number): string {
  return `0x${n.toString(16)}`;
}
