// The board every VM has: the VMM thread's buses (devices with state, which
// vCPU threads reach through bus-rpc), PCI config mechanism #1 with the host
// bridge at 00:00.0, the memory-hotplug mailbox's VMM side, and the specs of
// the devices each vCPU thread builds for itself (console, debug exit, port
// 0x80, i8042, the mailbox's registers).
import { MemHotplug, MEM_HOTPLUG_LEN, MEM_HOTPLUG_PORT, type MemHotplugState } from '../devices/mem-hotplug.js';
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

/**
 * The board's own state, for a live update: the console UART, PCI's address
 * register, the host bridge's config space, the memory-hotplug mailbox.
 */
export interface PlatformState {
  serial: SerialState;
  pciAddress: number;
  hostBridge: number[];
  hotplug: MemHotplugState;
}

// Nothing here holds a kernel resource and nothing outside the machine holds these objects: they need no undo.
export class Platform {
  readonly pio = new Bus('pio');
  readonly mmio = new Bus('mmio');

  private constructor(
    readonly pci: PciConfigIo,
    /** The VMM thread's side of the mailbox: it posts and waits; vCPU threads serve the guest's polls over its state. */
    readonly hotplug: MemHotplug,
    readonly devices: readonly DeviceSpec[],
    private readonly bridge: ConfigSpace,
  ) {}

  static build(o: PlatformOptions): Platform {
    const pci = new PciConfigIo();
    const hotplug = new MemHotplug();
    const p = new Platform(pci, hotplug, standardDevices(o.consoleFd, o.vmFd, o.linux, pci.state, hotplug.state), hostBridge());
    pci.add(0, p.bridge);
    p.pio.register(PCI_CONFIG_ADDRESS, PCI_CONFIG_LEN, pci, 'pci config');
    p.pio.register(MEM_HOTPLUG_PORT, MEM_HOTPLUG_LEN, p.hotplug, 'mem hotplug');
    return p;
  }

  /** With the vCPUs paused. */
  save(): PlatformState {
    return {
      serial: Serial16550.save(this.serialSpec().state),
      pciAddress: this.pci.address,
      hostBridge: this.bridge.save(),
      hotplug: this.hotplug.save(),
    };
  }

  /** Into a fresh board, before its vCPUs run. */
  restore(s: PlatformState): void {
    Serial16550.restore(this.serialSpec().state, s.serial);
    this.pci.address = s.pciAddress;
    this.bridge.restore(s.hostBridge);
    this.hotplug.restore(s.hotplug);
  }

  private serialSpec(): Extract<DeviceSpec, { kind: 'serial' }> {
    const s = this.devices.find((d) => d.kind === 'serial');
    if (s?.kind !== 'serial') throw new Error('the board has no console UART');
    return s;
  }
}
