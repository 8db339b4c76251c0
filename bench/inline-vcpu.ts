// A vCPU's loop run on the calling thread instead of its worker, for
// benchmarks that time one exit at a time (pio.ts): the same devices a vCPU
// thread builds, with the VMM thread's buses behind them directly (no
// bus-rpc hop, since this is the VMM thread).
import { buildBuses } from '../src/machine/devices.js';
import type { Machine } from '../src/machine/machine.js';
import type { Bus, BusDevice } from '../src/vmm/bus.js';
import { STOP_REASON, VcpuRunner } from '../src/vmm/run-loop.js';

/** vCPU `i`'s loop over `m`, which must never run(); close the runner before the machine. */
export function inlineRunner(m: Machine, i: number): { runner: VcpuRunner; flush(): void } {
  const seat = m.vcpuSeat(i);
  const buses = buildBuses([...seat.devices], {
    exit: (status) => void runner.requestStop(STOP_REASON.guestExit, status),
    reset: () => void runner.requestStop(STOP_REASON.guestReset),
    panic: () => void runner.requestStop(STOP_REASON.guestPanic),
    poweroff: () => void runner.requestStop(STOP_REASON.guestPoweroff),
  });
  buses.pio.setFallback(directTo(seat.pio));
  buses.mmio.setFallback(directTo(seat.mmio));
  const runner: VcpuRunner = VcpuRunner.open(seat.fd, i, seat.mmapSize, buses.pio, buses.mmio, new Int32Array(seat.control));
  return { runner, flush: buses.flush };
}

function directTo(bus: Bus): BusDevice {
  return { read: (addr, data) => void bus.read(addr, data), write: (addr, data) => void bus.write(addr, data) };
}
