// Sizes on the command line: layout.ts's one syntax (64M, 1G, 65536K or
// plain bytes) for every flag, each bounded by what takes it, and the bound's
// reason said in the refusal.
import { LOW_RESERVED, MAX_GUEST_RAM, MAX_RAM_ALLOCATION, MiB, parseSize, sizeText } from '../memory/layout.js';
import { UsageError } from './args.js';

interface Bound {
  bytes: bigint;
  why: string;
}

export interface SizeRange {
  min?: Bound;
  max?: Bound;
  /** The size must be a multiple of this. */
  unit?: Bound;
  /** A plain number is refused: the flag once counted KiB or MiB, so a bare 2048 would now silently mean bytes. */
  suffixed?: string;
}

const GUEST_MIN: Bound = {
  bytes: LOW_RESERVED,
  why: 'the least a guest boots with: the first MiB holds the boot tables and the BIOS area, and the payload loads above it',
};

/** pinion run --memory: the boot RAM, one allocation. */
export const BOOT_RAM: SizeRange = {
  min: GUEST_MIN,
  max: { bytes: MAX_RAM_ALLOCATION, why: 'the most RAM a guest boots with: it is one allocation, viewed as one typed array' },
};

/** pinion memlock plan --vm RAM: all of a VM's RAM, boot RAM and added regions. */
export const VM_RAM: SizeRange = {
  min: GUEST_MIN,
  max: { bytes: MAX_GUEST_RAM, why: "the most RAM a guest's memory map holds: RAM stays below the 64-bit BARs at 256 GiB" },
};

/** pinion rig --memory: L1's RAM, given to QEMU in MiB. */
export const L1_RAM: SizeRange = {
  min: { bytes: MiB, why: 'the least QEMU gives L1' },
  unit: { bytes: MiB, why: "QEMU's -m counts MiB" },
};

const RLIMIT_MAX: Bound = { bytes: (1n << 64n) - 1n, why: 'the most an rlimit holds' };
/** pinion open --memlock: RLIMIT_MEMLOCK in bytes, set by prlimit. */
export const MEMLOCK: SizeRange = { max: RLIMIT_MAX };
/** pinion rig --memlock: RLIMIT_MEMLOCK set in L1 by ulimit -l. */
export const MEMLOCK_KIB: SizeRange = {
  max: RLIMIT_MAX,
  unit: { bytes: 1024n, why: 'ulimit -l counts KiB' },
  suffixed: 'it counted KiB before sizes had units',
};

/** `text` as a byte count inside `range`; `what` names it in the refusal (--memory, --vm 4G:1: RAM). */
export function sizeValue(text: string, what: string, range: SizeRange): bigint {
  let bytes: bigint;
  try {
    bytes = parseSize(text, what);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { min, max, unit, suffixed } = range;
  if (suffixed && /^\d+$/.test(text.trim()))
    throw new UsageError(`${what} ${text} needs a unit (e.g. ${text}K or ${text}M): a plain number would be bytes, and ${suffixed}`);
  if (min && bytes < min.bytes) throw new UsageError(`${what} ${text} is below ${sizeText(min.bytes)}, ${min.why}`);
  if (max && bytes > max.bytes) throw new UsageError(`${what} ${text} is over ${sizeText(max.bytes)}, ${max.why}`);
  if (unit && bytes % unit.bytes !== 0n)
    throw new UsageError(
      `${what} ${text} is not a multiple of ${sizeText(unit.bytes)} (${unit.why}); e.g. ${sizeText(bytes - (bytes % unit.bytes) + unit.bytes)}`,
    );
  return bytes;
}
