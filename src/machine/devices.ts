// The devices every vCPU thread puts on its own buses (the hot ones, whose
// state is shared memory or none: console, debug exit, port 0x80, the
// memory-hotplug mailbox). A spec is plain data
// (structured-cloneable) so each vCPU thread builds its own handlers over
// the same shared state; the VMM thread builds the specs.
import { writeSync } from 'node:fs';
import { ioctl } from '../sys/libc.js';
import { KVM_IRQ_LINE, kvm_irq_level } from '../sys/kvm.js';
import { Bus } from '../vmm/bus.js';
import type { RpcClient } from '../vmm/bus-rpc.js';
import { COM1, COM1_IRQ, Serial16550, SERIAL_LEN } from '../devices/serial.js';
import { DEBUG_EXIT_LEN, DEBUG_EXIT_PORT, DebugExit } from '../devices/debug-exit.js';
import { PORT80, Port80 } from '../devices/port80.js';
import { I8042, I8042_COMMAND } from '../devices/i8042.js';
import { PCI_CONFIG_ADDRESS, PCI_CONFIG_LEN, PciConfigFront } from '../devices/pci/config-io.js';
import { MEM_HOTPLUG_LEN, MEM_HOTPLUG_PORT, MemHotplug } from '../devices/mem-hotplug.js';

export type DeviceSpec =
  /** `vmFd` and `irq`: the UART's interrupt line (KVM_IRQ_LINE); `linux`: each byte goes out at once (an
   * interactive console) and a kernel panic line ends the VM. */
  | { kind: 'serial'; base: number; state: SharedArrayBuffer; fd: number; vmFd: number; irq: number; linux: boolean }
  | { kind: 'debug-exit'; port: number }
  | { kind: 'port80'; port: number }
  | { kind: 'i8042'; port: number }
  /** PCI config mechanism #1's address register and bus map (PciConfigIo's state). */
  | { kind: 'pci-config'; state: SharedArrayBuffer }
  /** The memory-hotplug mailbox's registers (MemHotplug's state). */
  | { kind: 'mem-hotplug'; state: SharedArrayBuffer };

export function standardDevices(
  consoleFd: number,
  vmFd: number,
  linux: boolean,
  pciState: SharedArrayBuffer,
  hotplugState: SharedArrayBuffer,
): DeviceSpec[] {
  return [
    { kind: 'pci-config', state: pciState },
    { kind: 'mem-hotplug', state: hotplugState },
    { kind: 'serial', base: COM1, state: Serial16550.newState(), fd: consoleFd, vmFd, irq: COM1_IRQ, linux },
    { kind: 'debug-exit', port: DEBUG_EXIT_PORT },
    { kind: 'port80', port: PORT80 },
    { kind: 'i8042', port: I8042_COMMAND },
  ];
}

export interface Buses {
  pio: Bus;
  mmio: Bus;
  /** Pushes out anything a device still buffers (console lines). */
  flush(): void;
}

/** The vCPU thread's buses: its own copies of the fast devices; everything else goes to the VMM thread through `rpc`. */
/** How a guest ends its VM from a device: the debug-exit port with a status, a reset, or, on its console, a kernel panic or a power-down. */
export interface GuestStops {
  exit(status: number): void;
  reset(): void;
  panic(line: string): void;
  poweroff(): void;
}

/** Linux prints these at emergency level (so even under `quiet`): the MP-table machine has no pvpanic device
 * and no ACPI power button, so the console line is how the guest says it. */
const PANIC_LINE = /Kernel panic - not syncing/;
// With no power-off method Linux says the second (7.x) or the first (older).
const POWER_DOWN_LINE = /^(\[[\s\d.]+\] )?reboot: (Power down|Power off not available: System halted instead)\r?$/;

/** What a console line of a Linux guest means for the VM. */
export function consoleLineStop(line: string, stops: GuestStops): void {
  if (PANIC_LINE.test(line)) stops.panic(line.replace(/^\[[\s\d.]+\] /, ''));
  else if (POWER_DOWN_LINE.test(line)) stops.poweroff();
}

export function buildBuses(specs: DeviceSpec[], stops: GuestStops, rpc?: RpcClient): Buses {
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
        const uart = serialOn(s, stops);
        pio.register(s.base, SERIAL_LEN, uart, 'serial');
        flushers.push(() => uart.flush());
        break;
      }
      case 'debug-exit':
        pio.register(s.port, DEBUG_EXIT_LEN, new DebugExit(stops.exit), 'debug-exit');
        break;
      case 'port80':
        pio.register(s.port, 1, new Port80(), 'port80');
        break;
      case 'i8042':
        pio.register(s.port, 1, new I8042(stops.reset), 'i8042');
        break;
      case 'pci-config':
        // Without a VMM thread to forward to (a loop run inline on it), the VMM's own PciConfigIo serves it.
        if (rpc) pio.register(PCI_CONFIG_ADDRESS, PCI_CONFIG_LEN, new PciConfigFront(s.state, rpc.device('pio')), 'pci config');
        break;
      case 'mem-hotplug':
        // Likewise: run inline, the VMM's own mailbox (the one that is told of writes at once) serves it.
        if (rpc) pio.register(MEM_HOTPLUG_PORT, MEM_HOTPLUG_LEN, new MemHotplug(s.state), 'mem hotplug');
        break;
    }
  }
  return { pio, mmio, flush: () => flushers.forEach((f) => f()) };
}

/** A UART over the spec's shared state, on the calling thread; its interrupt line is an IOAPIC/PIC pin of the VM. */
export function serialOn(s: Extract<DeviceSpec, { kind: 'serial' }>, stops?: GuestStops): Serial16550 {
  return new Serial16550(
    s.state,
    (b) => void writeSync(s.fd, b),
    (level) => void ioctl(s.vmFd, KVM_IRQ_LINE, kvm_irq_level(s.irq, level ? 1 : 0), `KVM_IRQ_LINE(${s.irq})`),
    s.linux,
    s.linux && stops ? (line) => consoleLineStop(line, stops) : undefined,
  );
}
