// The board every VM has: the VMM thread's buses (devices with state, which
// vCPU threads reach through bus-rpc), PCI config mechanism #1 with the host
// bridge at 00:00.0, the memory-hotplug mailbox, and the specs of the devices
// each vCPU thread builds for itself (console, debug exit, port 0x80, i8042).
import { MemHotplug, MEM_HOTPLUG_LEN, MEM_HOTPLUG_PORT } from '../devices/mem-hotplug.js';
import { PciConfigIo, PCI_CONFIG_ADDRESS, PCI_CONFIG_LEN } from '../devices/pci/config-io.js';
import { hostBridge } from '../devices/pci/host-bridge.js';
import { Bus } from '../vmm/bus.js';
import { standardDevices, type DeviceSpec } from './devices.js';

export interface PlatformOptions {
  /** Where the guest console goes. */
  consoleFd: number;
  vmFd: number;
  /** Linux's console is interactive (prompts end without a newline); the test guest's lines stay whole. */
  linux: boolean;
}

// Nothing here holds a kernel resource and nothing outside the machine holds these objects: they need no undo.
export class Platform {
  readonly pio = new Bus('pio');
  readonly mmio = new Bus('mmio');
  /** Rarely polled, and what the control API waits on: on the VMM thread, reached through the RPC fallback. */
  readonly hotplug = new MemHotplug();

  private constructor(
    readonly pci: PciConfigIo,
    readonly devices: readonly DeviceSpec[],
  ) {}

  static build(o: PlatformOptions): Platform {
    const pci = new PciConfigIo();
    const p = new Platform(pci, standardDevices(o.consoleFd, o.vmFd, o.linux, pci.state));
    pci.add(0, hostBridge());
    p.pio.register(PCI_CONFIG_ADDRESS, PCI_CONFIG_LEN, pci, 'pci config');
    p.pio.register(MEM_HOTPLUG_PORT, MEM_HOTPLUG_LEN, p.hotplug, 'mem hotplug');
    return p;
  }
}
