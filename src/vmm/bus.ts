// A device bus: address ranges (port I/O or MMIO) mapped to device handlers.
// Handlers see the offset into their range and the access bytes (1, 2, 4 or
// 8, little-endian), as rust-vmm's BusDevice. Unclaimed reads return all ones.

export interface BusDevice {
  read(offset: number, data: Uint8Array): void;
  write(offset: number, data: Uint8Array): void;
}

interface Range {
  base: number;
  end: number;
  name: string;
  dev: BusDevice;
}

export class Bus {
  private ranges: Range[] = [];
  private last: Range | undefined;
  /** Takes what no range claims (offset = absolute address); without it, reads are all ones. */
  private fallback: BusDevice | undefined;

  constructor(readonly name: 'pio' | 'mmio') {}

  register(base: number, len: number, dev: BusDevice, name: string): void {
    const end = base + len;
    const clash = this.ranges.find((r) => base < r.end && r.base < end);
    if (clash) throw new RangeError(`${name} at ${this.name} ${fmt(base)}+${fmt(len)} overlaps ${clash.name} at ${fmt(clash.base)}`);
    this.ranges.push({ base, end, name, dev });
    this.ranges.sort((a, b) => a.base - b.base);
  }

  setFallback(dev: BusDevice): void {
    this.fallback = dev;
  }

  unregister(base: number): void {
    this.ranges = this.ranges.filter((r) => r.base !== base);
    this.last = undefined;
  }

  private find(addr: number): Range | undefined {
    const l = this.last;
    if (l && addr >= l.base && addr < l.end) return l;
    for (const r of this.ranges) if (addr >= r.base && addr < r.end) return (this.last = r);
    return undefined;
  }

  /** False when no device claims the address (the data is then all ones). */
  read(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (!r) {
      if (this.fallback) this.fallback.read(addr, data);
      else data.fill(0xff);
      return false;
    }
    r.dev.read(addr - r.base, data);
    return true;
  }

  write(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (!r) {
      this.fallback?.write(addr, data);
      return false;
    }
    r.dev.write(addr - r.base, data);
    return true;
  }

  list(): { base: number; len: number; name: string }[] {
    return this.ranges.map((r) => ({ base: r.base, len: r.end - r.base, name: r.name }));
  }
}

/** The little-endian value of an access. */
export function le(data: Uint8Array): number {
  let v = 0;
  for (let i = Math.min(data.length, 4) - 1; i >= 0; i--) v = v * 256 + data[i]!;
  return v;
}

export function putLe(data: Uint8Array, v: number): void {
  for (let i = 0; i < data.length; i++) {
    data[i] = v & 0xff;
    v = Math.floor(v / 256);
  }
}

function fmt(n: number): string {
  return `0x${n.toString(16)}`;
}
