// The board every machine starts from: the host bridge found by a bus scan
// through the VMM thread's port bus, and the device specs vCPU threads build
// from, sharing the PCI mechanism's state.
import t from 'tap';
import { Platform } from '../../src/machine/platform.js';
import { le } from '../../src/vmm/bus.js';

const bytes = (v: number): Uint8Array => Uint8Array.from({ length: 4 }, (_, i) => (v >>> (8 * i)) & 0xff);

t.test('the host bridge answers at 00:00.0 on the port bus; an empty slot reads all ones', async (t) => {
  const p = Platform.build({ consoleFd: 1, vmFd: -1, linux: false });
  const id = (dev: number): number => {
    p.pio.write(0xcf8, bytes(0x80000000 | (dev << 11)));
    const d = new Uint8Array(4);
    p.pio.read(0xcfc, d);
    return le(d);
  };
  t.equal(id(0), 0x0d578086);
  t.equal(id(1), 0xffffffff);
  t.equal(p.pci.freeSlot(), 1, 'assigned devices go after it');
  t.same(p.mmio.list(), []);
});

t.test('the specs vCPU threads build from share the PCI state and say which console', async (t) => {
  const p = Platform.build({ consoleFd: 5, vmFd: 9, linux: true });
  const pci = p.devices.find((d) => d.kind === 'pci-config');
  t.equal(pci?.kind === 'pci-config' && pci.state, p.pci.state);
  const hp = p.devices.find((d) => d.kind === 'mem-hotplug');
  t.equal(hp?.kind === 'mem-hotplug' && hp.state, p.hotplug.state, 'the mailbox too');
  const serial = p.devices.find((d) => d.kind === 'serial');
  t.match(serial, { kind: 'serial', fd: 5, vmFd: 9, linux: true });
  t.same(
    p.devices.map((d) => d.kind),
    ['pci-config', 'mem-hotplug', 'serial', 'debug-exit', 'port80', 'i8042'],
  );
});
