// PCI configuration mechanism #1: the address register at 0xcf8 and the data
// window at 0xcfc-0xcff, routing to the functions on bus 0. The address
// register and which devfns exist live in shared memory, so each vCPU thread
// answers the address writes and the bus scan's reads of empty slots itself
// (PciConfigFront); only accesses to a function that exists reach the VMM
// thread, where the functions' state is.
import { le, putLe, type BusDevice } from '../../vmm/bus.js';
import type { PciFunction } from './function.js';

export const PCI_CONFIG_ADDRESS = 0xcf8;
export const PCI_CONFIG_LEN = 8;

/** Int32 words of the shared state: the address register, then a bitmap of the 256 devfns of bus 0. */
const ADDRESS = 0,
  PRESENT = 1,
  STATE_WORDS = 1 + 256 / 32;

/** The function the address register selects: its devfn, or -1 (disabled, another bus, or nothing there). */
function selected(words: Int32Array): number {
  const a = Atomics.load(words, ADDRESS);
  if (!(a & 0x80000000) || ((a >>> 16) & 0xff) !== 0) return -1;
  const devfn = (a >>> 8) & 0xff;
  return Atomics.load(words, PRESENT + (devfn >> 5)) & (1 << (devfn & 31)) ? devfn : -1;
}

function addressAccess(words: Int32Array, offset: number, data: Uint8Array, write: boolean): void {
  if (write) {
    if (offset === 0 && data.length === 4) Atomics.store(words, ADDRESS, le(data) | 0);
  } else putLe(data, offset === 0 && data.length === 4 ? Atomics.load(words, ADDRESS) >>> 0 : 0xffffffff);
}

export class PciConfigIo implements BusDevice {
  readonly state = new SharedArrayBuffer(STATE_WORDS * 4);
  private readonly words = new Int32Array(this.state);
  /** Functions by devfn (device << 3 | function) on bus 0. */
  private readonly functions = new Map<number, PciFunction>();

  add(devfn: number, f: PciFunction): void {
    if (this.functions.has(devfn))
      throw new RangeError(
        `PCI slot 00:${(devfn >> 3).toString(16).padStart(2, '0')}.${devfn & 7} is taken by ${this.functions.get(devfn)!.name}`,
      );
    this.functions.set(devfn, f);
    Atomics.or(this.words, PRESENT + (devfn >> 5), 1 << (devfn & 31));
  }

  /** The address register as the guest last wrote it (a live update carries it; each function carries its own state). */
  get address(): number {
    return Atomics.load(this.words, ADDRESS) >>> 0;
  }

  set address(v: number) {
    Atomics.store(this.words, ADDRESS, v | 0);
  }

  /** The first free device number (function 0), for placing a new device. */
  freeSlot(): number {
    for (let dev = 1; dev < 32; dev++) if (!this.functions.has(dev << 3)) return dev;
    throw new RangeError('PCI bus 0 is full (32 devices)');
  }

  read(offset: number, data: Uint8Array): void {
    if (offset < 4) return addressAccess(this.words, offset, data, false);
    const f = this.functions.get(selected(this.words));
    putLe(data, f ? f.configRead(this.register(offset), data.length) : 0xffffffff);
  }

  write(offset: number, data: Uint8Array): void {
    if (offset < 4) return addressAccess(this.words, offset, data, true);
    this.functions.get(selected(this.words))?.configWrite(this.register(offset), data.length, le(data));
  }

  private register(offset: number): number {
    return (Atomics.load(this.words, ADDRESS) & 0xfc) + (offset - 4);
  }
}

/** Mechanism #1 on a vCPU thread, over PciConfigIo's shared state; data accesses to a function go to `vmm`
 * (the VMM thread's bus, at the port's own address). */
export class PciConfigFront implements BusDevice {
  private readonly words: Int32Array;

  constructor(
    state: SharedArrayBuffer,
    private readonly vmm: BusDevice,
  ) {
    this.words = new Int32Array(state);
  }

  read(offset: number, data: Uint8Array): void {
    if (offset < 4) return addressAccess(this.words, offset, data, false);
    if (selected(this.words) < 0) return putLe(data, 0xffffffff);
    this.vmm.read(PCI_CONFIG_ADDRESS + offset, data);
  }

  write(offset: number, data: Uint8Array): void {
    if (offset < 4) return addressAccess(this.words, offset, data, true);
    if (selected(this.words) >= 0) this.vmm.write(PCI_CONFIG_ADDRESS + offset, data);
  }
}
