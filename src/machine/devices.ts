// The devices every vCPU thread puts on its own buses (the hot, nearly
// stateless ones: console, debug exit, port 0x80). A spec is plain data
// (structured-cloneable) so each vCPU thread builds its own handlers over
// the same shared state; the VMM thread builds the specs.
import { writeSync } from 'node:fs';
import { Bus } from '../vmm/bus.js';
import type { RpcClient } from '../vmm/bus-rpc.js';
import { COM1, Serial16550, SERIAL_LEN } from '../devices/serial.js';
import { DEBUG_EXIT_LEN, DEBUG_EXIT_PORT, DebugExit } from '../devices/debug-exit.js';
import { PORT80, Port80 } from '../devices/port80.js';

export type DeviceSpec =
  | { kind: 'serial'; base: number; state: SharedArrayBuffer; fd: number }
  | { kind: 'debug-exit'; port: number }
  | { kind: 'port80'; port: number };

export function standardDevices(consoleFd: number): DeviceSpec[] {
  return [
    { kind: 'serial', base: COM1, state: Serial16550.newState(), fd: consoleFd },
    { kind: 'debug-exit', port: DEBUG_EXIT_PORT },
    { kind: 'port80', port: PORT80 },
  ];
}

export interface Buses {
  pio: Bus;
  mmio: Bus;
  /** Pushes out anything a device still buffers (console lines). */
  flush(): void;
}

/** The vCPU thread's buses: its own copies of the fast devices; everything else goes to the VMM thread through `rpc`. */
export function buildBuses(specs: DeviceSpec[], onGuestExit: (status: number) => void, rpc?: RpcClient): Buses {
  const pio = new Bus('pio');
  const mmio = new Bus('mmio');
  if (rpc) {
    pio.setFallback(rpc.device('pio'));
    mmio.setFallback(rpc.device('mmio'));
  }
  const flushers: (() => void)[] = [];
  for (const s of specs) {
    switch (s.kind) {
      case 'serial': {
        const uart = new Serial16550(s.state, (b) => void writeSync(s.fd, b));
        pio.register(s.base, SERIAL_LEN, uart, 'serial');
        flushers.push(() => uart.flush());
        break;
      }
      case 'debug-exit':
        pio.register(s.port, DEBUG_EXIT_LEN, new DebugExit(onGuestExit), 'debug-exit');
        break;
      case 'port80':
        pio.register(s.port, 1, new Port80(), 'port80');
        break;
    }
  }
  return { pio, mmio, flush: () => flushers.forEach((f) => f()) };
}
