// An assigned function's configuration space as the guest sees it, through
// config mechanism #1: BAR placement and size probes, BAR moves with their
// memslots and traps, the ROM and empty BAR slots, capabilities passed
// through or virtualised, the interrupt type switching; against a model
// device standing in for the VFIO fd.
import t from 'tap';
import type { MemoryRegion } from '../../src/memory/listener.js';
import { VfioPciDevice, type VmPlatform, type DeviceIo } from '../../src/devices/vfio/pci-device.js';
import type { HostDevice } from '../../src/devices/vfio/host-device.js';
import type { VfioIommu } from '../../src/devices/vfio/iommu.js';
import type { RegionInfo } from '../../src/devices/vfio/region.js';
import { Intx } from '../../src/devices/vfio/intx.js';
import { Msi } from '../../src/devices/vfio/msi.js';
import { Msix, type MsixCap, type MsixKernel } from '../../src/devices/vfio/msix.js';
import { BarAllocator } from '../../src/devices/pci/bar-allocator.js';
import { PciConfigIo } from '../../src/devices/pci/config-io.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Bus, le } from '../../src/vmm/bus.js';
import { IrqRouting } from '../../src/vmm/irq.js';
import * as V from '../../src/sys/vfio.js';
import type { MappedMemory } from '../../src/sys/libc.js';

const SLOT = 3;
const GSI = 19; // slot 3 INTA

class SpyIntx extends Intx {
  private on = false;
  constructor(
    gsi: number,
    private readonly log: string[],
    private readonly fails = false,
  ) {
    super(-1, 'model', -1, gsi);
  }
  override get enabled(): boolean {
    return this.on;
  }
  override enable(): void {
    if (this.fails) throw new Error('VFIO_DEVICE_SET_IRQS(INTx trigger): EINVAL');
    this.log.push('intx on');
    this.on = true;
  }
  override disable(): void {
    this.log.push('intx off');
    this.on = false;
  }
  override takeOver(): void {
    this.log.push('intx taken');
    this.on = true;
  }
  override release(): void {
    if (this.on) this.log.push('intx released');
    this.on = false;
  }
}

class SpyMsi extends Msi {
  private on = false;
  constructor(
    at: number,
    raw: Uint8Array,
    private readonly log: string[],
    private readonly fails: () => boolean,
  ) {
    super(at, raw, -1, 'model', new IrqRouting(-1, () => {}), -1);
  }
  override get enabled(): boolean {
    return this.on;
  }
  override enable(): void {
    if (this.fails()) throw new Error('VFIO_DEVICE_SET_IRQS(MSI, 1 vector): EINVAL');
    this.log.push('msi on');
    this.on = true;
  }
  override disable(): void {
    this.log.push('msi off');
    this.on = false;
  }
}

interface BarSpec {
  size: bigint;
  mmap?: boolean;
}

const hex = (n: number | bigint): string => `0x${n.toString(16)}`;

/** The device behind the fd: its config space bytes, its regions, and a log of what reached it. */
class Model implements DeviceIo {
  readonly config: Buffer;
  readonly log: string[] = [];
  /** Make the next MSI or MSI-X enable fail at SET_IRQS. */
  fail: 'msi' | 'msix' | undefined;
  /** Make opening fail: the mmap of this BAR, or turning INTx on. */
  failOpen: { mmapBar: number } | 'intx' | undefined;
  private readonly regions = new Map<number, RegionInfo>();
  private readonly routing = new IrqRouting(-1, () => {});

  constructor(
    config: Buffer,
    bars: (BarSpec | undefined)[],
    private readonly deviceFlags = V.VFIO_DEVICE_FLAGS_PCI | V.VFIO_DEVICE_FLAGS_RESET,
  ) {
    this.config = Buffer.from(config);
    bars.forEach((b, index) => {
      if (!b) return;
      const mmapAreas = b.mmap ? [{ offset: 0n, size: b.size }] : [];
      const flags = b.mmap ? V.VFIO_REGION_INFO_FLAG_MMAP : 0;
      this.regions.set(index, { index, size: b.size, offset: BigInt(index) << 40n, flags, mmapAreas, msixMappable: false });
    });
    const cfg = V.VFIO_PCI_CONFIG_REGION_INDEX;
    this.regions.set(cfg, { index: cfg, size: 256n, offset: 7n << 40n, flags: 0, mmapAreas: [], msixMappable: false });
  }

  flags(): number {
    return this.deviceFlags;
  }
  reset(): void {
    this.log.push('reset');
  }
  regionInfo(index: number): RegionInfo {
    return this.regions.get(index) ?? { index, size: 0n, offset: 0n, flags: 0, mmapAreas: [], msixMappable: false };
  }
  read(r: RegionInfo, at: number, data: Uint8Array): void {
    if (r.index === V.VFIO_PCI_CONFIG_REGION_INDEX) return void data.set(this.config.subarray(at, at + data.length));
    this.log.push(`read BAR${r.index}+${hex(at)}`);
    data.fill(0xab);
  }
  write(r: RegionInfo, at: number, data: Uint8Array): void {
    if (r.index === V.VFIO_PCI_CONFIG_REGION_INDEX) {
      this.config.set(data, at);
      this.log.push(`config ${hex(at)}=${hex(le(data))}`);
      return;
    }
    this.log.push(`write BAR${r.index}+${hex(at)}`);
  }
  mmap(r: RegionInfo, offset: number, len: number): MappedMemory {
    const what = `BAR${r.index}+${hex(offset)}`;
    if (typeof this.failOpen === 'object' && this.failOpen.mmapBar === r.index) throw new Error(`mmap ${what}: ENOMEM`);
    this.log.push(`mmap ${what} ${hex(len)}`);
    const vaddr = 0x7f00_0000_0000n + (BigInt(r.index) << 32n) + BigInt(offset);
    return { vaddr, bytes: new Uint8Array(0), advise: () => undefined, unmap: () => void this.log.push(`munmap ${what}`) };
  }
  intx(gsi: number): Intx | undefined {
    return new SpyIntx(gsi, this.log, this.failOpen === 'intx');
  }
  msi(at: number, raw: Uint8Array): Msi {
    return new SpyMsi(at, raw, this.log, () => this.failing('msi'));
  }
  msix(cap: MsixCap): Msix {
    const log = this.log;
    let fd = 100;
    const kernel: MsixKernel = {
      vector: (gsi) => ({ fd: fd++, gsi, attached: false, attach() {}, detach() {}, close() {} }),
      adopt: (gsi, vfd) => ({ fd: vfd, gsi, attached: false, attach() {}, detach() {}, close() {} }),
      take: () => 0n,
      signal: () => {},
      setIrqs: (fds) => {
        if (fds && this.failing('msix')) throw new Error(`VFIO_DEVICE_SET_IRQS(MSI-X, ${fds.length} vectors): EINVAL`);
        log.push(fds ? `msix ${fds.length} vectors` : 'msix off');
      },
    };
    return new Msix(cap, -1, 'model', this.routing, -1, kernel);
  }
  private failing(what: 'msi' | 'msix'): boolean {
    if (this.fail !== what) return false;
    this.fail = undefined;
    return true;
  }
}

/** An igb-VF-like function: BAR0 32-bit 16 KiB with the MSI-X table and PBA, BAR1 I/O, BAR2 64-bit prefetchable. */
function config(): Buffer {
  const c = Buffer.alloc(256);
  c.writeUInt32LE(0x10ca8086, 0x00);
  c.writeUInt16LE(0x0010, 0x06); // status: capability list
  c.writeUInt32LE(0x00000000, 0x10);
  c.writeUInt32LE(0x00000001, 0x14); // I/O
  c.writeUInt32LE(0x0000000c, 0x18); // 64-bit, prefetchable
  c.writeUInt32LE(0xfffe0001, 0x30); // the device's own ROM BAR
  c[0x34] = 0x50;
  c[0x3c] = 0xff;
  c[0x3d] = 1; // INTA
  c.set([0x05, 0x70, 0x86, 0x01], 0x50); // MSI: 64-bit, 8 vectors, per-vector mask
  c.set([0x11, 0x90, 0x03, 0x00], 0x70); // MSI-X: 4 vectors
  c.writeUInt32LE(0x2000, 0x74); // table: BAR0 + 0x2000
  c.writeUInt32LE(0x3000, 0x78); // PBA: BAR0 + 0x3000
  c.set([0x01, 0x00, 0x03, 0x00], 0x90); // power management, end of the list
  return c;
}

const BARS: BarSpec[] = [{ size: 0x4000n, mmap: true }, { size: 0x20n }, { size: 0x10000n, mmap: true }];

const host: HostDevice = { bdf: '0000:01:00.0', driver: 'vfio-pci', group: '7', groupMembers: [], cdev: null, iommus: 1 };

function newEnv(): VmPlatform {
  return {
    memory: new GuestMemory(),
    pio: new Bus('pio'),
    mmio: new Bus('mmio'),
    routing: new IrqRouting(-1, () => {}),
    vmFd: -1,
    bars: new BarAllocator(),
  };
}

function attach(model = new Model(config(), BARS), env = newEnv()) {
  const iommu = { openDevice: () => ({ fd: -1, path: 'model', close: () => void model.log.push('close') }) } as unknown as VfioIommu;
  const dev = VfioPciDevice.open(host, iommu, env, SLOT, () => model);
  const io = new PciConfigIo();
  io.add(SLOT << 3, dev);
  const bytes = (v: number, n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (v >>> (8 * i)) & 0xff);
  const select = (off: number): void => io.write(0, bytes(0x80000000 | (SLOT << 11) | (off & 0xfc), 4));
  const r = (off: number, size = 4): number => {
    select(off);
    const d = new Uint8Array(size);
    io.read(4 + (off & 3), d);
    return le(d);
  };
  const w = (off: number, size: number, v: number): void => {
    select(off);
    io.write(4 + (off & 3), bytes(v, size));
  };
  const mmio = (addr: number, size = 4): number => {
    const d = new Uint8Array(size);
    env.mmio.read(addr, d);
    return le(d);
  };
  return { dev, model, env, r, w, mmio, log: model.log, bytes };
}

const deviceRegions = (env: VmPlatform): [bigint, bigint][] => env.memory.list().map((x) => [x.gpa, x.size]);

t.test('attach: reset, BARs placed by type and size, mmap around the MSI-X pages, INTx on', async (t) => {
  const { dev, env, log } = attach();
  t.same(
    dev.describe(),
    [
      { bar: 0, space: 'mem32', address: 0xc000_0000n, size: 0x4000n, mapped: 0x2000n },
      { bar: 1, space: 'io', address: 0xc000n, size: 0x20n, mapped: 0n },
      { bar: 2, space: 'mem64', address: 0x40_0000_0000n, size: 0x10000n, mapped: 0x10000n },
    ],
    'BAR3 is the upper half of BAR2; BAR4 and BAR5 are empty',
  );
  t.same(
    env.mmio.list().map((x) => [x.base, x.len]),
    [
      [0xc000_0000, 0x4000],
      [0x40_0000_0000, 0x10000],
    ],
    'whole BARs trapped under their memslots',
  );
  t.same(
    env.pio.list().map((x) => [x.base, x.len]),
    [[0xc000, 0x20]],
  );
  t.same(deviceRegions(env), [
    [0xc000_0000n, 0x2000n],
    [0x40_0000_0000n, 0x10000n],
  ]);
  t.same(log, ['reset', 'mmap BAR0+0x0 0x2000', 'mmap BAR2+0x0 0x10000', 'intx on']);
  t.ok(dev.resettable);
  t.equal(dev.intxGsi, GSI);
});

t.test('BAR registers: the placed address with the type bits; empty slots read 0', async (t) => {
  const { r } = attach();
  t.equal(r(0x10), 0xc000_0000);
  t.equal(r(0x14), 0xc001, 'I/O space bit');
  t.equal(r(0x18), 0x0000000c, '64-bit prefetchable, low half');
  t.equal(r(0x1c), 0x40, 'high half');
  t.equal(r(0x20), 0);
  t.equal(r(0x24), 0);
  t.equal(r(0x12, 2), 0xc000, 'a word of a BAR');
  t.equal(r(0x18, 1), 0x0c, 'a byte of a BAR');
});

t.test('BAR reads are unsigned when bit 31 is set, like every other config read', async (t) => {
  const { dev, w } = attach();
  t.equal(dev.configRead(0x10, 4), 0xc000_0000);
  t.equal(dev.configRead(0x12, 2), 0xc000);
  w(0x18, 4, 0xffffffff);
  t.equal(dev.configRead(0x18, 4), 0xffff000c, 'a size mask');
  t.equal(dev.configRead(0x00, 4), 0x10ca8086);
});

t.test('size probe of a 32-bit BAR: all ones reads back the size mask; the old value puts it back', async (t) => {
  const { r, w, log } = attach();
  const before = log.length;
  w(0x10, 4, 0xffffffff);
  t.equal(r(0x10), 0xffffc000, '16 KiB');
  t.equal(r(0x12, 2), 0xffff);
  w(0x10, 4, 0xc000_0000);
  t.equal(r(0x10), 0xc000_0000);
  w(0x10, 4, 0xfffffff0);
  t.equal(r(0x10), 0xffffc000, 'all ones above the type bits is a probe too');
  w(0x10, 4, 0xc000_0000);
  t.same(log.slice(before), [], 'nothing moved, nothing reached the device');
});

t.test('size probe of a 64-bit BAR: each half on its own', async (t) => {
  const { r, w, log } = attach();
  const before = log.length;
  w(0x18, 4, 0xffffffff);
  t.equal(r(0x18), 0xffff000c, '64 KiB, type bits kept');
  t.equal(r(0x1c), 0x40, 'the high half still reads its address');
  w(0x1c, 4, 0xffffffff);
  t.equal(r(0x1c), 0xffffffff, 'a BAR under 4 GiB in size: the high half of the mask is all ones');
  w(0x18, 4, 0x0000000c);
  w(0x1c, 4, 0x40);
  t.same([r(0x18), r(0x1c)], [0x0000000c, 0x40]);
  t.same(log.slice(before), []);
});

t.test('size probe of an I/O BAR', async (t) => {
  const { r, w } = attach();
  w(0x14, 4, 0xffffffff);
  const v = r(0x14);
  t.equal(v, 0xffffffe1);
  t.equal((~(v & ~0x3) >>> 0) + 1, 0x20, 'the size a guest computes');
  w(0x14, 4, 0xc001);
  t.equal(r(0x14), 0xc001);
});

t.test('BAR writes narrower than a dword are ignored, and no BAR write reaches the device', async (t) => {
  const { r, w, log, model } = attach();
  w(0x10, 2, 0xffff);
  w(0x12, 1, 0xd0);
  t.equal(r(0x10), 0xc000_0000);
  w(0x10, 4, 0xd000_0000);
  t.equal(model.config.readUInt32LE(0x10), 0, "the device's own register is untouched");
  t.notOk(log.some((l) => l.startsWith('config')));
});

t.test('moving a 32-bit BAR: trap, memslot and MSI-X table follow', async (t) => {
  const { dev, env, r, w, mmio, log } = attach();
  const before = log.length;
  w(0x10, 4, 0xd000_0000);
  t.equal(r(0x10), 0xd000_0000);
  t.equal(dev.describe()[0]!.address, 0xd000_0000n);
  t.same(log.slice(before), ['munmap BAR0+0x0', 'mmap BAR0+0x0 0x2000']);
  t.same(deviceRegions(env)[0], [0xd000_0000n, 0x2000n]);
  t.same(
    env.mmio.list().map((x) => x.base),
    [0xd000_0000, 0x40_0000_0000],
  );
  t.equal(mmio(0xd000_2000 + 12), 1, 'the MSI-X table at its new place: vector 0 masked');
  t.equal(mmio(0xc000_2000 + 12), 0xffffffff, 'nothing left at the old place');
  w(0x10, 4, 0xd000_1234);
  t.equal(r(0x10), 0xd000_0000, 'an unaligned address is aligned down to the BAR size');
  t.equal(log.length, before + 2, 'and that is no move');
});

t.test(
  'a BAR the guest moves where it cannot be decoded (onto another BAR, onto RAM): the VM runs on, it decodes nowhere until moved again',
  async (t) => {
    const env = newEnv();
    const ram: MemoryRegion = { name: 'ram-low', gpa: 0n, size: 0x400_0000n, hva: 0x7000_0000_0000n, kind: 'ram' };
    env.memory.update((u) => u.add(ram));
    const { dev, r, w, mmio } = attach(new Model(config(), BARS), env);
    const said: string[] = [];
    const error = console.error;
    console.error = (m: string) => void said.push(m);
    t.teardown(() => (console.error = error));
    w(0x18, 4, 0xc000_0000);
    w(0x1c, 4, 0);
    t.same([r(0x18), r(0x1c)], [0xc000_000c, 0], 'onto BAR0: the register reads back what was written');
    t.equal(dev.describe()[2]!.mapped, 0n, 'nothing of it mapped');
    t.equal(mmio(0xc000_2000 + 12), 1, "BAR0's MSI-X table is still BAR0's");
    t.equal(said.length, 1, 'said once');
    t.match(
      said[0],
      /^pinion: note: the guest moved vfio 0000:01:00\.0 BAR2 to 0xc0000000, where it cannot be decoded \(.*overlaps.*\); it decodes nowhere until moved again/,
    );
    w(0x10, 4, 0x0020_0000);
    t.equal(r(0x10), 0x0020_0000, 'BAR0 onto RAM: reads back');
    t.same(
      env.memory.list().map((x) => x.name),
      ['ram-low'],
      'RAM stays what the guest sees there; neither BAR is in guest memory',
    );
    t.equal(said.length, 1, 'not said again');
    w(0x10, 4, 0xd000_0000);
    w(0x18, 4, 0xe000_0000);
    t.same(
      dev.describe().map((b) => [b.address, b.mapped]),
      [
        [0xd000_0000n, 0x2000n],
        [0xc000n, 0n],
        [0xe000_0000n, 0x10000n],
      ],
      'moved again to free addresses: both decode there',
    );
    t.equal(mmio(0xd000_2000 + 12), 1, 'the MSI-X table at its new place');
  },
);

t.test('moving a 64-bit BAR by its high half, and an I/O BAR', async (t) => {
  const { dev, env, r, w } = attach();
  w(0x1c, 4, 0x50);
  t.same([r(0x18), r(0x1c)], [0x0000000c, 0x50]);
  t.equal(dev.describe()[2]!.address, 0x50_0000_0000n);
  t.same(deviceRegions(env)[1], [0x50_0000_0000n, 0x10000n]);
  w(0x14, 4, 0xc101);
  t.equal(r(0x14), 0xc101);
  t.same(
    env.pio.list().map((x) => x.base),
    [0xc100],
  );
});

t.test('the ROM reads 0 and ignores writes', async (t) => {
  const { r, w, model } = attach();
  t.equal(r(0x30), 0, 'no option ROM for the guest, though the device has one');
  w(0x30, 4, 0xffffffff);
  t.equal(r(0x30), 0, 'so a size probe finds none');
  t.equal(model.config.readUInt32LE(0x30), 0xfffe0001);
});

t.test('the rest of the header passes through: IDs, command register', async (t) => {
  const { r, w, log, model } = attach();
  t.equal(r(0x00), 0x10ca8086);
  w(0x04, 2, 0x0406);
  t.equal(log.at(-1), 'config 0x4=0x406', 'memory, bus master, INTx disable: to the device');
  t.equal(model.config.readUInt16LE(0x04), 0x0406);
  t.equal(r(0x04, 2), 0x0406);
});

t.test('interrupt line and pin: the line is the IOAPIC pin INTx is wired to', async (t) => {
  const { r, w } = attach();
  t.equal(r(0x3c, 2), (1 << 8) | GSI);
  w(0x3c, 1, 0x0b);
  t.equal(r(0x3c, 1), GSI, 'what the guest writes there does not change what it reads');
});

t.test("capabilities: the chain passes through, MSI is Pinion's, MSI-X control shows the guest's bits", async (t) => {
  const { dev, r, w, model } = attach();
  t.ok(r(0x06, 2) & 0x10, 'capability list');
  t.equal(r(0x34, 1), 0x50);
  t.equal(r(0x50), 0x0080_7005, 'MSI: one vector, no per-vector masking, 64-bit, disabled');
  t.equal(r(0x70), 0x0003_9011, 'MSI-X: 4 vectors, next 0x90');
  t.same([r(0x74), r(0x78)], [0x2000, 0x3000], 'table and PBA registers as the device has them');
  t.equal(r(0x90), 0x0003_0001, "other capabilities are the device's");
  w(0x54, 4, 0xfee0_0000);
  t.equal(r(0x54), 0xfee0_0000, 'MSI address kept here');
  t.equal(model.config.readUInt32LE(0x54), 0, 'not written to the device');
  w(0x72, 2, 0xc003);
  t.equal(r(0x72, 2), 0xc003, 'MSI-X enable and function mask read back');
  t.equal(r(0x70, 1), 0x11);
  t.equal(model.config[0x73], 0, 'MSI-X control is not written to the device');
  t.equal(dev.msixVectorsWired, 4);
});

t.test('MSI-X on turns INTx off; MSI-X off turns it back on', async (t) => {
  const { dev, w, log } = attach();
  const before = log.length;
  w(0x72, 2, 0x8000);
  t.same(log.slice(before), ['intx off', 'msix 4 vectors']);
  t.equal(dev.msixVectorsWired, 4);
  w(0x72, 2, 0x0000);
  t.same(log.slice(before + 2), ['msix off', 'intx on']);
  t.equal(dev.msixVectorsWired, 0);
});

t.test('MSI on turns INTx off; MSI off turns it back on', async (t) => {
  const { r, w, log } = attach();
  const before = log.length;
  w(0x52, 2, 0x0001);
  t.equal(r(0x52, 2), 0x0081);
  w(0x54, 4, 0xfee0_0000);
  t.same(log.slice(before), ['intx off', 'msi on'], 'an address write while on is no second enable');
  w(0x52, 2, 0x0000);
  t.same(log.slice(before + 2), ['msi off', 'intx on']);
});

t.test('with MSI on, a write to MSI-X control leaves INTx off; MSI off brings it back', async (t) => {
  const { w, log } = attach();
  w(0x52, 2, 0x0001);
  const before = log.length;
  w(0x72, 2, 0x4000);
  t.notOk(log.slice(before).includes('intx on'), 'INTx stays off');
  w(0x52, 2, 0x0000);
  t.same(log.slice(before), ['msi off', 'intx on']);
});

t.test('with MSI-X on, MSI off leaves INTx off; MSI-X off brings it back', async (t) => {
  const { w, log } = attach();
  w(0x72, 2, 0x8000);
  w(0x52, 2, 0x0001);
  const before = log.length;
  w(0x52, 2, 0x0000);
  t.same(log.slice(before), ['msi off'], 'INTx stays off');
  w(0x72, 2, 0x0000);
  t.same(log.slice(before), ['msi off', 'msix off', 'intx on']);
});

t.test('an MSI-X or MSI enable that fails: the error comes out of the config write, INTx is back on', async (t) => {
  const { dev, r, w, log, model } = attach();
  model.fail = 'msix';
  let before = log.length;
  t.throws(() => w(0x72, 2, 0x8000), /^VFIO_DEVICE_SET_IRQS\(MSI-X, 4 vectors\): EINVAL$/);
  t.same(log.slice(before), ['intx off', 'intx on']);
  t.equal(dev.msixVectorsWired, 0, 'no vector left wired');
  w(0x72, 2, 0x8000);
  t.equal(dev.msixVectorsWired, 4, 'the guest may try again');
  w(0x72, 2, 0x0000);
  model.fail = 'msi';
  before = log.length;
  t.throws(() => w(0x52, 2, 0x0001), /^VFIO_DEVICE_SET_IRQS\(MSI, 1 vector\): EINVAL$/);
  t.same(log.slice(before), ['intx off', 'intx on']);
  t.equal(r(0x52, 2), 0x0081, 'the guest still reads the enable bit it wrote');
});

t.test('a failed enable while INTx is off leaves it off', async (t) => {
  const { w, log, model } = attach();
  w(0x52, 2, 0x0001);
  model.fail = 'msix';
  const before = log.length;
  t.throws(() => w(0x72, 2, 0x8000), /EINVAL/);
  t.same(log.slice(before), ['intx off'], 'MSI had it off');
});

t.test('the MSI-X table and PBA are emulated; the rest of their pages goes to the device', async (t) => {
  const { env, mmio, log, bytes } = attach();
  const before = log.length;
  env.mmio.write(0xc000_2008, bytes(0x4041, 4));
  t.equal(mmio(0xc000_2008), 0x4041, 'vector 0 data, in the shadow table');
  env.mmio.write(0xc000_3000, bytes(0xffffffff, 4));
  t.equal(mmio(0xc000_3000), 0, 'the PBA is read-only');
  t.same(log.slice(before), [], 'neither reached the device');
  t.equal(mmio(0xc000_2100), 0xabababab);
  env.mmio.write(0xc000_3800, bytes(1, 4));
  t.same(log.slice(before), ['read BAR0+0x2100', 'write BAR0+0x3800']);
  const d = new Uint8Array(1);
  env.pio.read(0xc004, d);
  t.equal(log.at(-1), 'read BAR1+0x4', 'I/O BARs are trapped whole');
});

t.test('a device vfio-pci cannot reset is never reset; one that is not PCI is refused and closed', async (t) => {
  const { dev, log } = attach(new Model(config(), BARS, V.VFIO_DEVICE_FLAGS_PCI));
  t.notOk(dev.resettable);
  dev.close();
  t.notOk(log.includes('reset'));
  const model = new Model(config(), BARS, V.VFIO_DEVICE_FLAGS_RESET);
  t.throws(() => attach(model), /0000:01:00\.0 is not a PCI device to VFIO/);
  t.same(model.log, ['close']);
});

t.test('a function without an interrupt pin gets no INTx', async (t) => {
  const c = config();
  c[0x3d] = 0;
  const { dev, r } = attach(new Model(c, BARS));
  t.equal(dev.intxGsi, undefined);
  t.equal(r(0x3c, 1), 0xff, "the line register is the device's");
});

t.test('close: interrupts off, BARs gone from both buses and guest memory, reset, fd closed; once', async (t) => {
  const { dev, env, w, log } = attach();
  w(0x72, 2, 0x8000);
  const before = log.length;
  dev.close();
  t.same(log.slice(before), ['msix off', 'msi off', 'intx off', 'munmap BAR2+0x0', 'munmap BAR0+0x0', 'reset', 'close']);
  t.same([env.mmio.list(), env.pio.list(), env.memory.list()], [[], [], []]);
  dev.close();
  t.equal(log.length, before + 7);
});

t.test('an 8-byte I/O BAR at an address that is not 16-aligned', async (t) => {
  const c = config();
  c.writeUInt32LE(0x1, 0x10);
  c.writeUInt32LE(0x1, 0x14);
  c.writeUInt32LE(0, 0x18);
  c[0x34] = 0x90;
  const { dev, env, r, w } = attach(new Model(c, [{ size: 8n }, { size: 8n }]));
  t.same(
    dev.describe().map((b) => b.address),
    [0xc000n, 0xc008n],
  );
  t.equal(r(0x14), 0xc009, 'BAR1 reads where it is');
  w(0x10, 4, 0xffffffff);
  t.equal(r(0x10), 0xfffffff9, 'the size mask of 8 bytes');
  w(0x10, 4, 0xc001);
  w(0x14, 4, 0xc019);
  t.equal(r(0x14), 0xc019, 'the guest may place it off a 16-byte boundary');
  t.same(
    env.pio.list().map((x) => [x.base, x.len]),
    [
      [0xc000, 8],
      [0xc018, 8],
    ],
  );
});

t.test('an open that fails part way leaves nothing behind: mappings, memslots, bus ranges undone, then reset, fd closed', async (t) => {
  const model = new Model(config(), BARS);
  model.failOpen = { mmapBar: 2 };
  const env = newEnv();
  t.throws(() => attach(model, env), /^mmap BAR2\+0x0: ENOMEM$/);
  t.same(model.log, ['reset', 'mmap BAR0+0x0 0x2000', 'munmap BAR0+0x0', 'reset', 'close'], 'BAR1 (I/O) had only a bus range');
  t.same([env.mmio.list(), env.pio.list(), env.memory.list()], [[], [], []]);
});

t.test('an INTx that cannot be turned on at open: every BAR placed before it is undone', async (t) => {
  const model = new Model(config(), BARS);
  model.failOpen = 'intx';
  const env = newEnv();
  t.throws(() => attach(model, env), /^VFIO_DEVICE_SET_IRQS\(INTx trigger\): EINVAL$/);
  t.same(model.log.slice(3), ['munmap BAR2+0x0', 'munmap BAR0+0x0', 'reset', 'close']);
  t.same([env.mmio.list(), env.pio.list(), env.memory.list()], [[], [], []]);
});

t.test("a BAR that clashes with a range already on the bus: refused, the BARs before it undone, the bus's own range kept", async (t) => {
  const env = newEnv();
  const other = { read: () => {}, write: () => {} };
  env.pio.register(0xc000, 0x20, other, 'another device');
  const model = new Model(config(), BARS);
  t.throws(() => attach(model, env), /BAR1 at pio 0xc000\+0x20 overlaps another device/);
  t.same(model.log, ['reset', 'mmap BAR0+0x0 0x2000', 'munmap BAR0+0x0', 'reset', 'close']);
  t.same(
    env.pio.list().map((x) => x.name),
    ['another device'],
  );
  t.same([env.mmio.list(), env.memory.list()], [[], []]);
});

t.test('a memslot the guest memory map refuses (an overlap): the mmap behind it is undone too', async (t) => {
  const env = newEnv();
  env.memory.update((u) => u.add({ name: 'ram', gpa: 0x40_0000_0000n, size: 0x1000n, hva: 0x1000n, kind: 'ram' }));
  const model = new Model(config(), BARS);
  t.throws(() => attach(model, env), /overlaps ram|ram .* overlaps/);
  t.same(model.log, ['reset', 'mmap BAR0+0x0 0x2000', 'mmap BAR2+0x0 0x10000', 'munmap BAR2+0x0', 'munmap BAR0+0x0', 'reset', 'close']);
  t.same(
    env.memory.list().map((r) => r.name),
    ['ram'],
  );
  t.same([env.mmio.list(), env.pio.list()], [[], []]);
});

t.test(
  'a live update: the function saved with its BAR moves and MSI-X, adopted untouched, restored, and reset only by its owner',
  async (t) => {
    const a = attach();
    a.w(0x10, 4, 0xd000_0000); // the guest moves BAR0
    a.w(0x72, 2, 0x8000); // and turns MSI-X on
    a.dev.freeze();
    const s = a.dev.save();
    t.same(s.bars, [
      { bar: 0, address: 0xd000_0000n },
      { bar: 1, address: 0xc000n },
      { bar: 2, address: 0x40_0000_0000n },
    ]);
    t.same([s.msix?.enabled, s.msix?.masked, s.irqs.length, s.intx], [true, false, 4, false]);
    t.equal(s.config.readUInt32LE(0), 0x10ca8086, "the device's own config space");
    const before = a.log.length;
    a.dev.release();
    a.dev.close();
    t.same(
      a.log.slice(before),
      ['munmap BAR2+0x0', 'munmap BAR0+0x0', 'close'],
      'the old process lets go: its BAR mappings gone, no reset, and MSI-X left on in the device',
    );

    // The next process: the same function from a fresh model, adopted.
    const model = new Model(config(), BARS);
    const env = newEnv();
    const dev = VfioPciDevice.adopt(
      host,
      { fd: -1, path: 'model', close: () => void model.log.push('close') },
      env,
      { slot: SLOT },
      () => model,
    );
    t.notOk(model.log.includes('reset'), 'adopting does not reset the function');
    t.notOk(model.log.includes('intx on'), 'nor take its INTx while the other process runs the guest');
    dev.restore(s);
    t.equal(dev.describe()[0]!.address, 0xd000_0000n, 'BAR0 where the guest had it');
    t.ok(
      env.memory.list().some((r) => r.gpa === 0xd000_0000n),
      'its memslot there',
    );
    t.same(dev.interrupts, { active: 'msix', msixVectors: 4 });
    t.notOk(
      model.log.some((l) => l.startsWith('msix')),
      'no VFIO_DEVICE_SET_IRQS: vfio-pci triggers the eventfds it had',
    );
    t.throws(() => dev.restore({ ...s, bdf: '0000:02:00.0' }), /the state is of 0000:02:00.0 in slot 3, this is 0000:01:00.0 in slot 3/);
    const n = model.log.length;
    dev.close();
    t.notOk(model.log.slice(n).includes('reset'), 'closed before claim(): the device is still the other process’s');

    const m2 = new Model(config(), BARS);
    const e2 = newEnv();
    const d2 = VfioPciDevice.adopt(host, { fd: -1, path: 'model', close: () => {} }, e2, { slot: SLOT, bars: s.bars }, () => m2);
    t.ok(
      e2.memory.list().some((r) => r.gpa === 0xd000_0000n),
      'adopted with the BARs where the hand-over found them: BAR0 placed there before the pause',
    );
    const placed = m2.log.length;
    d2.restore({ ...s, msix: { ...s.msix!, enabled: false }, irqs: [], intx: true });
    t.notOk(
      m2.log.slice(placed).some((l) => /^(mmap|munmap) BAR/.test(l)),
      'and the restore, finding them there, maps nothing again',
    );
    t.ok(m2.log.includes('intx taken'), 'INTx on in the state: taken with eventfds of its own');
    d2.claim();
    d2.close();
    t.ok(m2.log.includes('reset'), 'once claimed, closing resets it');
  },
);

t.test('a function running on MSI is not handed over', async (t) => {
  const a = attach();
  a.w(0x52, 2, 0x0001); // MSI enable
  t.match(a.dev.handoverRefusal(), /runs 0000:01:00.0 on MSI, which a live update does not carry/);
  t.throws(() => a.dev.save(), /on MSI/);
});
