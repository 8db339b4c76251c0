// What a PCI function offers the bus: its configuration space. Accesses are
// 1, 2 or 4 bytes, naturally aligned, at offsets below 4096.

export interface PciFunction {
  readonly name: string;
  configRead(offset: number, size: number): number;
  configWrite(offset: number, size: number, value: number): void;
}

// readLe and writeLe go through a 32-bit number: 1, 2 or 4 bytes only. MMIO data of 8 bytes is copied as bytes.

/** Little-endian read of `size` bytes at `offset` of a config-space image. */
export function readLe(b: Uint8Array, offset: number, size: number): number {
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = v * 256 + (b[offset + i] ?? 0xff);
  return v >>> 0;
}

export function writeLe(b: Uint8Array, offset: number, size: number, value: number): void {
  for (let i = 0; i < size; i++) b[offset + i] = (value >>> (8 * i)) & 0xff;
}
