// Accesses a vCPU thread forwards to the VMM thread, where devices with
// state of their own live (PCI config space, VFIO BARs, MSI-X tables): the
// vCPU thread writes the request into its shared slot, posts a message and
// waits; the VMM thread answers on its event loop. Devices on the VMM thread
// therefore never run concurrently, like devices under QEMU's big lock.
import type { Bus, BusDevice } from './bus.js';

// Int32 words of a slot, then the access bytes at DATA.
const STATE = 0,
  BUS = 1,
  WRITE = 2,
  SIZE = 3,
  ADDR_LO = 4,
  ADDR_HI = 5;
const DATA = 32;
const IDLE = 0,
  PENDING = 1,
  DONE = 2;
export const RPC_SLOT_BYTES = 48;

/** The vCPU-thread side: a bus fallback that hands the access to the VMM thread. */
export class RpcClient {
  private readonly words: Int32Array;
  private readonly bytes: Uint8Array;

  constructor(
    slot: SharedArrayBuffer,
    private readonly notify: () => void,
  ) {
    this.words = new Int32Array(slot, 0, 8);
    this.bytes = new Uint8Array(slot, DATA, 8);
  }

  /** A BusDevice for `bus` whose offsets are absolute addresses. */
  device(bus: 'pio' | 'mmio'): BusDevice {
    const b = bus === 'pio' ? 0 : 1;
    return {
      read: (addr, data) => this.call(b, addr, data, false),
      write: (addr, data) => this.call(b, addr, data, true),
    };
  }

  private call(bus: number, addr: number, data: Uint8Array, write: boolean): void {
    const w = this.words;
    w[BUS] = bus;
    w[WRITE] = write ? 1 : 0;
    w[SIZE] = data.length;
    w[ADDR_LO] = addr % 0x1_0000_0000;
    w[ADDR_HI] = Math.floor(addr / 0x1_0000_0000);
    if (write) this.bytes.set(data);
    Atomics.store(w, STATE, PENDING);
    this.notify();
    while (Atomics.load(w, STATE) === PENDING) Atomics.wait(w, STATE, PENDING);
    if (!write) data.set(this.bytes.subarray(0, data.length));
    Atomics.store(w, STATE, IDLE);
  }
}

/** The VMM-thread side: serves one pending request of a slot on the given buses. */
export function serveRpc(slot: SharedArrayBuffer, pio: Bus, mmio: Bus): void {
  const w = new Int32Array(slot, 0, 8);
  if (Atomics.load(w, STATE) !== PENDING) return;
  const data = new Uint8Array(slot, DATA, w[SIZE]!);
  const addr = (w[ADDR_HI]! >>> 0) * 0x1_0000_0000 + (w[ADDR_LO]! >>> 0);
  const bus = w[BUS] === 0 ? pio : mmio;
  if (w[WRITE]) bus.write(addr, data);
  else bus.read(addr, data);
  Atomics.store(w, STATE, DONE);
  Atomics.notify(w, STATE);
}

export function newRpcSlot(): SharedArrayBuffer {
  return new SharedArrayBuffer(RPC_SLOT_BYTES);
}
