// The board every VM has: the VMM thread's buses (devices with state, which
// vCPU threads reach through bus-rpc), PCI config mechanism #1 with the host
// bridge at 00:00.0, and the specs of the devices each vCPU thread builds
// for itself (console, debug exit, port 0x80, i8042).
import { PciConfigIo, PCI_CONFIG_ADDRESS, PCI_CONFIG_LEN } from '../devices/pci/config-io.js';
import type { ConfigSpace } from '../devices/pci/config-space.js';
import { hostBridge } from '../devices/pci/host-bridge.js';
import { Serial16550, type SerialState } from '../devices/serial.js';
import { Bus } from '../vmm/bus.js';
import { standardDevices, type DeviceSpec } from './devices.js';

export interface PlatformOptions {
  /** Where the guest console goes. */
  consoleFd: number;
  vmFd: number;
  /** Linux's console is interactive (prompts end without a newline); the test guest's lines stay whole. */
  linux: boolean;
}

/** The board's own state, for a live update: the console UART, PCI's address register, the host bridge's config space. */
export interface PlatformState {
  serial: SerialState;
  pciAddress: number;
  hostBridge: number[];
}

// Nothing here holds a kernel resource and nothing outside the machine holds these objects: they need no undo.
export class Platform {
  readonly pio = new Bus('pio');
  readonly mmio = new Bus('mmio');

  private constructor(
    readonly pci: PciConfigIo,
    readonly devices: readonly DeviceSpec[],
    private readonly bridge: ConfigSpace,
  ) {}

  static build(o: PlatformOptions): Platform {
    const pci = new PciConfigIo();
    const p = new Platform(pci, standardDevices(o.consoleFd, o.vmFd, o.linux, pci.state), hostBridge());
    pci.add(0, p.bridge);
    p.pio.register(PCI_CONFIG_ADDRESS, PCI_CONFIG_LEN, pci, 'pci config');
    return p;
  }

  /** With the vCPUs paused. */
  save(): PlatformState {
    return { serial: Serial16550.save(this.serialSpec().state), pciAddress: this.pci.address, hostBridge: this.bridge.save() };
  }

  /** Into a fresh board, before its vCPUs run. */
  restore(s: PlatformState): void {
    Serial16550.restore(this.serialSpec().state, s.serial);
    this.pci.address = s.pciAddress;
    this.bridge.restore(s.hostBridge);
  }

  private serialSpec(): Extract<DeviceSpec, { kind: 'serial' }> {
    const s = this.devices.find((d) => d.kind === 'serial');
    if (s?.kind !== 'serial') throw new Error('the board has no console UART');
    return s;
  }
}
