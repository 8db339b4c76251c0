// Debug exit port: a guest ends the VM with an exit status by writing it
// (any width) to the port; the status is the low byte. Like QEMU's
// isa-debug-exit at 0xf4, but without its (value << 1) | 1 encoding.
import { le, type BusDevice } from '../vmm/bus.js';

export const DEBUG_EXIT_PORT = 0xf4;
export const DEBUG_EXIT_LEN = 4;

export class DebugExit implements BusDevice {
  constructor(private readonly onExit: (status: number) => void) {}

  read(_offset: number, data: Uint8Array): void {
    data.fill(0xff);
  }

  write(_offset: number, data: Uint8Array): void {
    this.onExit(le(data) & 0xff);
  }
}
