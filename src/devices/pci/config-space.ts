// An emulated function's configuration space: the bytes plus a mask of the
// bits the guest may write (QEMU's config/wmask). Read-only bits stay put.
import { readLe, writeLe, type PciFunction } from './function.js';

export class ConfigSpace implements PciFunction {
  readonly bytes = new Uint8Array(256);
  readonly wmask = new Uint8Array(256);

  constructor(readonly name: string) {}

  configRead(offset: number, size: number): number {
    return offset + size <= this.bytes.length ? readLe(this.bytes, offset, size) : 0xffffffff >>> (32 - 8 * size);
  }

  configWrite(offset: number, size: number, value: number): void {
    for (let i = 0; i < size && offset + i < this.bytes.length; i++) {
      const m = this.wmask[offset + i]!;
      const v = (value >>> (8 * i)) & 0xff;
      this.bytes[offset + i] = (this.bytes[offset + i]! & ~m) | (v & m);
    }
  }

  set(offset: number, size: number, value: number, writable = 0): void {
    writeLe(this.bytes, offset, size, value);
    writeLe(this.wmask, offset, size, writable);
  }
}
