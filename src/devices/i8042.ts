// The i8042 keyboard controller's one job in a VM: the reset line. Linux
// reboots by writing 0xfe (pulse reset) to its command port 0x64, after
// waiting for the input buffer to drain (status bit 1 clear: always here).
import type { BusDevice } from '../vmm/bus.js';

export const I8042_COMMAND = 0x64;
const CMD_RESET = 0xfe;

export class I8042 implements BusDevice {
  constructor(private readonly onReset: () => void) {}

  read(_offset: number, data: Uint8Array): void {
    data.fill(0); // no data, input buffer empty
  }

  write(_offset: number, data: Uint8Array): void {
    if (data[0] === CMD_RESET) this.onReset();
  }
}
