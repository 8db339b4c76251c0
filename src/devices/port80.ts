// Port 0x80, the POST-code port: writes are accepted and dropped (guests use
// it as an I/O delay, and the benchmark uses it as the cheapest exit).
import type { BusDevice } from '../vmm/bus.js';

export const PORT80 = 0x80;

export class Port80 implements BusDevice {
  last = 0;

  read(_offset: number, data: Uint8Array): void {
    data.fill(0);
    data[0] = this.last;
  }

  write(_offset: number, data: Uint8Array): void {
    this.last = data[0]!;
  }
}
