import t from 'tap';
import { checkAssignable, normaliseBdf, type HostDevice } from '../../src/devices/vfio/host-device.js';
import { BarAllocator } from '../../src/devices/pci/bar-allocator.js';
import { PciConfigIo } from '../../src/devices/pci/config-io.js';
import { hostBridge } from '../../src/devices/pci/host-bridge.js';

const dev = (over: Partial<HostDevice>): HostDevice => ({
  bdf: '0000:01:00.0',
  driver: 'vfio-pci',
  group: '7',
  groupMembers: [{ bdf: '0000:01:00.0', driver: 'vfio-pci' }],
  cdev: '/dev/vfio/devices/vfio0',
  iommus: 1,
  ...over,
});

t.test('assignability: no IOMMU, wrong driver, group not viable', async (t) => {
  t.doesNotThrow(() => checkAssignable(dev({})));
  t.throws(
    () => checkAssignable(dev({ group: null, iommus: 0 })),
    /^0000:01:00\.0 has no IOMMU group: the host has no IOMMU enabled \(\/sys\/class\/iommu lists none\); turn on VT-d or AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on$/,
  );
  t.throws(
    () => checkAssignable(dev({ group: null })),
    /^0000:01:00\.0 has no IOMMU group: it sits behind none of the host's 1 IOMMU\(s\)/,
  );
  t.throws(
    () => checkAssignable(dev({ driver: 'igb' })),
    /bound to igb, not vfio-pci; bind it with: echo 0000:01:00\.0 > \/sys\/bus\/pci\/devices\/0000:01:00\.0\/driver\/unbind; echo vfio-pci > \/sys\/bus\/pci\/devices\/0000:01:00\.0\/driver_override; echo 0000:01:00\.0 > \/sys\/bus\/pci\/drivers_probe/,
  );
  t.throws(
    () =>
      checkAssignable(
        dev({
          groupMembers: [
            { bdf: '0000:01:00.0', driver: 'vfio-pci' },
            { bdf: '0000:01:00.1', driver: 'igb' },
            { bdf: '0000:00:1c.0', driver: 'pcieport' },
          ],
        }),
      ),
    /^IOMMU group 7 of 0000:01:00\.0 is not viable: 0000:01:00\.1 \(igb\) must be bound to vfio-pci or unbound too: echo 0000:01:00\.1 > \/sys\/bus\/pci\/devices\/0000:01:00\.1\/driver\/unbind$/,
  );
  t.equal(normaliseBdf('01:00.0'), '0000:01:00.0');
  t.throws(() => normaliseBdf('eth0'), /'eth0' is not a PCI address/);
});

t.test('BARs: aligned to size, 32-bit in the hole, 64-bit high, I/O from 0xc000', async (t) => {
  const a = new BarAllocator();
  t.equal(a.allocate('mem32', 0x20000n, 'x'), 0xc0000000n);
  t.equal(a.allocate('mem32', 0x4000n, 'x'), 0xc0020000n);
  t.equal(a.allocate('mem32', 0x20000n, 'x'), 0xc0040000n, 'realigned after a smaller BAR');
  t.equal(a.allocate('mem64', 0x4000n, 'x'), 0x4000000000n);
  t.equal(a.allocate('io', 0x20n, 'x'), 0xc000n);
  t.equal(a.allocate('io', 0x20n, 'x'), 0xc020n);
  t.throws(() => a.allocate('mem32', 0x3000n, 'dev BAR1'), /dev BAR1: BAR size 0x3000 is not a power of two/);
});

t.test('config mechanism #1 reaches bus 0 functions; absent ones read all ones', async (t) => {
  const io = new PciConfigIo();
  io.add(0, hostBridge());
  const w32 = (port: number, v: number): void =>
    io.write(port - 0xcf8, Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24));
  const r = (port: number, size: number): number => {
    const d = new Uint8Array(size);
    io.read(port - 0xcf8, d);
    return d.reduceRight((v, b) => v * 256 + b, 0);
  };
  w32(0xcf8, 0x80000000);
  t.equal(r(0xcfc, 4), 0x0d578086);
  t.equal(r(0xcfe, 2), 0x0d57, 'data window offsets select bytes');
  w32(0xcf8, 0x80000008);
  t.equal(r(0xcfc, 4) >>> 8, 0x060000, 'class: host bridge');
  w32(0xcf8, 0x80000800); // 00:01.0
  t.equal(r(0xcfc, 4), 0xffffffff);
  w32(0xcf8, 0x80010000); // bus 1
  t.equal(r(0xcfc, 4), 0xffffffff);
  t.throws(() => io.add(0, hostBridge()), /PCI slot 00:00\.0 is taken by host bridge/);
  t.equal(io.freeSlot(), 1);
});

t.test('MSI capability as the guest sees it: one vector, no masking, registers kept here', async (t) => {
  const { Msi } = await import('../../src/devices/vfio/msi.js');
  const dev = new Uint8Array(24);
  dev.set([0x05, 0x70, 0x86, 0x01]); // id MSI, next 0x70, control: 64-bit, 8 vectors capable, per-vector masking
  const msi = new Msi(0x50, dev, -1, 'test', {} as never, -1);
  t.ok(msi.is64);
  t.equal(msi.read(0x52) | (msi.read(0x53) << 8), 0x0080, 'control: 64-bit only (MMC 0, no mask bit, disabled)');
  t.notOk(msi.contains(0x51), 'id and next pointer pass through');
  t.ok(msi.contains(0x5f) && !msi.contains(0x60), 'address lo/hi, data and extended data after control');
  for (const [i, b] of [0x00, 0x00, 0xe0, 0xfe].entries()) t.equal(msi.write(0x54 + i, b), undefined);
  t.equal(msi.write(0x5c, 0x41), undefined, 'data');
  t.equal(msi.read(0x57), 0xfe);
  t.equal(msi.write(0x52, 0x71), true, 'enable bit set (multiple message enable ignored)');
  t.equal(msi.read(0x52), 0x81);
  t.equal(msi.write(0x52, 0x80), false, 'and cleared');
});
