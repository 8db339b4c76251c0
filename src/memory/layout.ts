// The guest-physical address map: RAM from 0, a 32-bit hole below 4 GiB for
// PCI MMIO and the x86 fixed devices, and the rest of RAM above 4 GiB. Pure.

export const MiB = 1n << 20n;
export const GiB = 1n << 30n;

/** Where RAM below 4 GiB ends and the PCI MMIO hole starts (like QEMU q35 with large RAM). */
export const LOW_RAM_END = 3n * GiB;
export const HIGH_RAM_START = 4n * GiB;

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

/** Parses 64M, 1G, 512K or a byte count. Throws with what was wrong. */
export function parseSize(text: string, what: string): bigint {
  const m = /^(\d+)([KMG]?)$/i.exec(text.trim());
  if (!m) throw new RangeError(`${what} '${text}' is not a size; write it like 64M, 1G or 65536K`);
  const unit = { '': 1n, K: 1n << 10n, M: MiB, G: GiB }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return BigInt(m[1]!) * unit;
}

export function hex(n: bigint | number): string {
  return `0x${n.toString(16)}`;
}
