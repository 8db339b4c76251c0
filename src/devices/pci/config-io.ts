// PCI configuration mechanism #1: the address register at 0xcf8 and the data
// window at 0xcfc-0xcff, routing to the functions on bus 0.
import { le, putLe, type BusDevice } from '../../vmm/bus.js';
import type { PciFunction } from './function.js';

export const PCI_CONFIG_ADDRESS = 0xcf8;
export const PCI_CONFIG_LEN = 8;

export class PciConfigIo implements BusDevice {
  private address = 0;
  /** Functions by devfn (device << 3 | function) on bus 0. */
  private readonly functions = new Map<number, PciFunction>();

  add(devfn: number, f: PciFunction): void {
    if (this.functions.has(devfn)) throw new RangeError(`PCI slot 00:${(devfn >> 3).toString(16).padStart(2, '0')}.${devfn & 7} is taken by ${this.functions.get(devfn)!.name}`);
    this.functions.set(devfn, f);
  }

  /** The first free device number (function 0), for placing a new device. */
  freeSlot(): number {
    for (let dev = 1; dev < 32; dev++) if (!this.functions.has(dev << 3)) return dev;
    throw new RangeError('PCI bus 0 is full (32 devices)');
  }

  read(offset: number, data: Uint8Array): void {
    if (offset < 4) {
      putLe(data, offset === 0 && data.length === 4 ? this.address : 0xffffffff);
      return;
    }
    const f = this.target();
    const reg = (this.address & 0xfc) + (offset - 4);
    putLe(data, f ? f.configRead(reg, data.length) : 0xffffffff);
  }

  write(offset: number, data: Uint8Array): void {
    if (offset < 4) {
      if (offset === 0 && data.length === 4) this.address = le(data) >>> 0;
      return;
    }
    const f = this.target();
    f?.configWrite((this.address & 0xfc) + (offset - 4), data.length, le(data));
  }

  private target(): PciFunction | undefined {
    const a = this.address;
    if (!(a & 0x80000000) || ((a >>> 16) & 0xff) !== 0) return undefined;
    return this.functions.get((a >>> 8) & 0xff);
  }
}
