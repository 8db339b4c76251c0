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

  /** The bytes as they are (a live update carries them). */
  save(): number[] {
    return [...this.bytes];
  }

  /** Takes the guest-writable bits of a saved image; the read-only ones stay this build's. */
  restore(image: readonly number[]): void {
    if (image.length !== this.bytes.length)
      throw new RangeError(`${this.name}: a config image of ${image.length} bytes, not ${this.bytes.length}`);
    image.forEach((v, i) => (this.bytes[i] = (this.bytes[i]! & ~this.wmask[i]!) | (v & this.wmask[i]!)));
  }

  set(offset: number, size: number, value: number, writable = 0): void {
    writeLe(this.bytes, offset, size, value);
    writeLe(this.wmask, offset, size, writable);
  }
}
