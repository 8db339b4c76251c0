// MSI-X of an assigned device, virtualised: the shadow table, per-vector and
// function masking done by detaching irqfds, the PBA, and the routes the
// table's messages become; against a model of eventfds and KVM irqfds.
import t from 'tap';
import { Msix, parseMsixCap, type MsixCap, type MsixKernel, type MsixVector } from '../../src/devices/vfio/msix.js';
import { PCI_MSIX_ENTRY_SIZE } from '../../src/sys/pci-regs.js';
import { IrqRouting } from '../../src/vmm/irq.js';
import type { RoutingEntry } from '../../src/sys/kvm.js';

/** Eventfd counters and irqfd bindings: a signal on an attached eventfd, or an attach with a count, injects its GSI. */
class Irqs implements MsixKernel {
  readonly count = new Map<number, bigint>();
  readonly vectors: (MsixVector & { closed: boolean })[] = [];
  /** GSIs injected into the guest, in order. */
  readonly injected: number[] = [];
  readonly sets: (number[] | null)[] = [];
  /** A kernel call to fail, once: creating the irqfd of vector `vector`, attaching any irqfd, or SET_IRQS. */
  fail: { vector: number } | 'attach' | 'setIrqs' | undefined;
  private nextFd = 100;

  vector(gsi: number): MsixVector {
    if (typeof this.fail === 'object' && this.fail.vector === this.vectors.length) this.failed('eventfd');
    return this.make(gsi, this.nextFd++);
  }

  adopt(gsi: number, fd: number): MsixVector {
    return this.make(gsi, fd);
  }

  private make(gsi: number, fd: number): MsixVector {
    const irqs = this;
    const v = {
      fd,
      gsi,
      attached: false,
      closed: false,
      attach() {
        if (irqs.fail === 'attach') irqs.failed('KVM_IRQFD');
        v.attached = true;
        irqs.kick(v.fd);
      },
      detach() {
        v.attached = false;
      },
      close() {
        v.attached = false;
        v.closed = true;
      },
    };
    this.vectors.push(v);
    return v;
  }

  take(fd: number): bigint {
    const n = this.count.get(fd) ?? 0n;
    this.count.set(fd, 0n);
    return n;
  }

  signal(fd: number): void {
    this.count.set(fd, (this.count.get(fd) ?? 0n) + 1n);
    this.kick(fd);
  }

  setIrqs(fds: number[] | null): void {
    if (fds && this.fail === 'setIrqs') this.failed('VFIO_DEVICE_SET_IRQS');
    this.sets.push(fds);
  }

  private failed(op: string): never {
    this.fail = undefined;
    throw new Error(`${op}: EINVAL`);
  }

  private kick(fd: number): void {
    // An eventfd may have an irqfd in each of two VMs (a live update): the attached one injects.
    const v = this.vectors.find((x) => x.fd === fd && !x.closed && x.attached);
    if (v && this.take(fd) > 0n) this.injected.push(v.gsi);
  }
}

const cap = (size: number): MsixCap => ({ cap: 0x70, size, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0x800 });

function msix(size = 4, routeFails = () => false): { m: Msix; irqs: Irqs; tables: RoutingEntry[][]; raise: (i: number) => void } {
  const irqs = new Irqs();
  const tables: RoutingEntry[][] = [];
  const setRouting = (e: RoutingEntry[]): void => {
    if (routeFails()) throw new Error('KVM_SET_GSI_ROUTING: EINVAL');
    tables.push(e);
  };
  const m = new Msix(cap(size), -1, 'test', new IrqRouting(-1, setRouting), -1, irqs);
  return { m, irqs, tables, raise: raiser(m, irqs) };
}

/** The device signalling vector i: its eventfd, wherever it is bound. */
const raiser =
  (m: Msix, irqs: Irqs) =>
  (i: number): void =>
    irqs.signal(m.vectorFd(i)!);

const dword = (v: number): Uint8Array => Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24);
const w32 = (m: Msix, off: number, v: number): void => m.writeTable(off, dword(v));
const ctrl = (i: number): number => i * PCI_MSIX_ENTRY_SIZE + 12;
const unmask = (m: Msix, i: number): void => w32(m, ctrl(i), 0);
const mask = (m: Msix, i: number): void => w32(m, ctrl(i), 1);

function read(m: Msix, where: 'table' | 'pba', off: number, size: number): bigint {
  const d = new Uint8Array(size);
  if (where === 'table') m.readTable(off, d);
  else m.readPba(off, d);
  const q = Buffer.alloc(8);
  q.set(d);
  return q.readBigUInt64LE(0);
}
const pba = (m: Msix): bigint => read(m, 'pba', 0, 4);

/** A table entry: message address and data, vector control. */
function entry(m: Msix, i: number, addressLo: number, data: number, control = 0): void {
  const e = new Uint8Array(16);
  const b = Buffer.from(e.buffer);
  b.writeUInt32LE(addressLo, 0);
  b.writeUInt32LE(data, 8);
  b.writeUInt32LE(control, 12);
  m.writeTable(i * 16, e.subarray(0, 8));
  m.writeTable(i * 16 + 8, e.subarray(8, 16));
}

t.test('the capability: table size, BIR and offsets', async (t) => {
  const regs = new Map([
    [0x72, 0x0040], // control: 65 vectors
    [0x74, 0x00002003], // table in BAR3 at 0x2000
    [0x78, 0x00003003], // PBA in BAR3 at 0x3000
  ]);
  const c = parseMsixCap((o) => regs.get(o) ?? 0, 0x70);
  t.same(c, { cap: 0x70, size: 65, tableBar: 3, tableOffset: 0x2000, pbaBar: 3, pbaOffset: 0x3000 });
  const m = new Msix(c, -1, 'test', new IrqRouting(-1, () => {}), -1, new Irqs());
  t.equal(m.table.length, 65 * 16);
  t.equal(m.pbaSize, 16, '65 vectors: two qwords of pending bits');
});

t.test('at reset every vector is masked and nothing is wired', async (t) => {
  const { m, irqs } = msix();
  for (let i = 0; i < 4; i++) {
    t.equal(read(m, 'table', ctrl(i), 4), 1n, `vector ${i} control: masked`);
    t.ok(m.masked(i));
  }
  t.notOk(m.enabled);
  t.same(irqs.sets, []);
});

t.test('table writes of 4 and 8 bytes; outside the table, writes are dropped and reads are 0', async (t) => {
  const { m } = msix(2);
  m.writeTable(16, Uint8Array.of(0x00, 0x10, 0xe0, 0xfe, 0x01, 0, 0, 0)); // entry 1 address, one qword
  w32(m, 24, 0x4041);
  t.equal(read(m, 'table', 16, 4), 0xfee01000n);
  t.equal(read(m, 'table', 20, 4), 1n, 'upper address');
  t.equal(read(m, 'table', 24, 4), 0x4041n);
  t.equal(read(m, 'table', 28, 4), 1n, 'vector control untouched: still masked');
  const before = Buffer.from(m.table);
  w32(m, 32, 0xdeadbeef);
  m.writeTable(28, new Uint8Array(8).fill(0xff));
  t.same(Buffer.from(m.table), before, 'a write at or across the end changes nothing');
  t.equal(read(m, 'table', 32, 4), 0n);
  t.equal(read(m, 'table', 28, 8), 0n, 'a read across the end');
});

t.test('8-byte reads of the table and the PBA', async (t) => {
  const { m, raise } = msix(33);
  m.writeTable(16, Uint8Array.of(0x00, 0x10, 0xe0, 0xfe, 0x01, 0, 0, 0));
  w32(m, 24, 0x4041);
  t.equal(read(m, 'table', 16, 8), 0x1_fee01000n, 'address, one qword');
  t.equal(read(m, 'table', 24, 8), 0x1_00004041n, 'data and vector control, one qword');
  m.enable();
  raise(32);
  t.equal(read(m, 'pba', 4, 4), 1n, 'vector 32: bit 0 of the second dword');
  t.equal(read(m, 'pba', 0, 8), 1n << 32n, 'and of the first qword');
  raise(1);
  t.equal(read(m, 'pba', 0, 8), (1n << 32n) | 0b10n, 'both dwords of a qword at once');
});

t.test('an 8-byte write of data and vector control, read back as a qword, routes and unmasks', async (t) => {
  const { m, irqs, tables } = msix(2);
  m.enable();
  // Data 0x4041; vector control unmasked, with bit 31 set to tell the halves apart.
  m.writeTable(16 + 8, Uint8Array.of(0x41, 0x40, 0, 0, 0, 0, 0, 0x80));
  t.equal(read(m, 'table', 24, 8), 0x80000000_00004041n);
  t.notOk(m.masked(1));
  t.ok(irqs.vectors[1]!.attached);
  t.same(
    tables.at(-1)!.find((e) => e.gsi === 25),
    { gsi: 25, type: 'msi', addressLo: 0, addressHi: 0, data: 0x4041 },
  );
});

t.test('enable: a GSI and irqfd per vector, routed by the table, handed to VFIO; masked vectors stay detached', async (t) => {
  const { m, irqs, tables } = msix(3);
  entry(m, 0, 0xfee00000, 0x30);
  entry(m, 1, 0xfee01000, 0x31);
  entry(m, 2, 0xfee02000, 0x32, 1);
  m.enable();
  t.ok(m.enabled);
  t.same(
    irqs.vectors.map((v) => v.gsi),
    [24, 25, 26],
  );
  t.same(irqs.sets, [[100, 101, 102]], 'one SET_IRQS with every eventfd');
  t.same(
    irqs.vectors.map((v) => v.attached),
    [true, true, false],
  );
  const routes = tables.at(-1)!.filter((e) => e.type === 'msi');
  t.same(routes, [
    { gsi: 24, type: 'msi', addressLo: 0xfee00000, addressHi: 0, data: 0x30 },
    { gsi: 25, type: 'msi', addressLo: 0xfee01000, addressHi: 0, data: 0x31 },
    { gsi: 26, type: 'msi', addressLo: 0xfee02000, addressHi: 0, data: 0x32 },
  ]);
  m.enable();
  t.equal(irqs.sets.length, 1, 'enabling twice wires once');
});

t.test('a table write while enabled re-routes that vector', async (t) => {
  const { m, tables } = msix(2);
  m.enable();
  const pushes = tables.length;
  w32(m, 16 + 8, 0x55);
  t.equal(tables.length, pushes + 1);
  t.same(
    tables.at(-1)!.find((e) => e.gsi === 25),
    { gsi: 25, type: 'msi', addressLo: 0, addressHi: 0, data: 0x55 },
  );
});

t.test('per-vector mask: a masked vector waits in the PBA and is delivered on unmask', async (t) => {
  const { m, irqs, raise } = msix();
  entry(m, 1, 0xfee00000, 0x31);
  m.enable();
  raise(1);
  t.same(irqs.injected, [25], 'unmasked: straight to the guest');
  t.equal(pba(m), 0n);
  mask(m, 1);
  t.ok(m.masked(1));
  t.notOk(irqs.vectors[1]!.attached, 'masking detaches the irqfd');
  raise(1);
  raise(1);
  t.same(irqs.injected, [25], 'nothing delivered while masked');
  t.equal(pba(m), 0b10n, 'pending bit of vector 1');
  t.equal(pba(m), 0b10n, 'a PBA read does not clear it');
  unmask(m, 1);
  t.same(irqs.injected, [25, 25], 'delivered once on unmask');
  t.equal(pba(m), 0n, 'and no longer pending');
  t.ok(irqs.vectors[1]!.attached);
});

t.test('unmasking a vector that was never signalled delivers nothing', async (t) => {
  const { m, irqs } = msix();
  m.enable();
  unmask(m, 2);
  t.ok(irqs.vectors[2]!.attached);
  t.same(irqs.injected, []);
});

t.test('function mask: holds every vector, and unmasking it leaves masked vectors masked', async (t) => {
  const { m, irqs, raise } = msix();
  m.enable();
  for (const i of [0, 1, 3]) unmask(m, i);
  m.setFunctionMask(true);
  t.ok([0, 1, 2, 3].every((i) => m.masked(i)));
  t.same(
    irqs.vectors.map((v) => v.attached),
    [false, false, false, false],
  );
  raise(0);
  raise(2);
  t.equal(pba(m), 0b101n, 'vector 2 is pending too: pending does not depend on why it is masked');
  m.setFunctionMask(false);
  t.same(irqs.injected, [24], 'vector 0 delivered; vector 2 still masked by its own bit');
  t.same(
    irqs.vectors.map((v) => v.attached),
    [true, true, false, true],
  );
  t.equal(pba(m), 0b100n);
  unmask(m, 2);
  t.same(irqs.injected, [24, 26]);
});

t.test('function mask set before enable: nothing is attached at enable', async (t) => {
  const { m, irqs, raise } = msix(2);
  unmask(m, 0);
  m.setFunctionMask(true);
  m.enable();
  t.same(
    irqs.vectors.map((v) => v.attached),
    [false, false],
  );
  raise(0);
  t.same(irqs.injected, []);
  m.setFunctionMask(false);
  t.same(irqs.injected, [24]);
});

t.test('the PBA of 65 vectors: vector 64 in the second qword; reads past it are 0', async (t) => {
  const { m, raise } = msix(65);
  m.enable();
  raise(64);
  raise(3);
  t.equal(read(m, 'pba', 0, 4), 0b1000n);
  t.equal(read(m, 'pba', 4, 4), 0n);
  t.equal(read(m, 'pba', 8, 4), 1n);
  t.equal(read(m, 'pba', 8, 1), 1n, 'a byte read');
  t.equal(read(m, 'pba', 8, 8), 1n, 'the second qword');
  t.equal(read(m, 'pba', 12, 8), 0n, 'a qword across the end');
  t.equal(read(m, 'pba', 16, 4), 0n, 'past the PBA');
});

t.test('disable: SET_IRQS off, irqfds closed, GSIs and routes released, pending dropped', async (t) => {
  const { m, irqs, tables, raise } = msix(2);
  entry(m, 0, 0xfee00000, 0x30, 1);
  m.enable();
  raise(0);
  t.equal(pba(m), 1n);
  m.disable();
  t.notOk(m.enabled);
  t.same(irqs.sets, [[100, 101], null]);
  t.ok(irqs.vectors.every((v) => v.closed));
  t.same(
    tables.at(-1)!.filter((e) => e.type === 'msi'),
    [],
    'no MSI route left',
  );
  t.equal(pba(m), 0n, 'nothing pending once off');
  t.equal(read(m, 'table', 8, 4), 0x30n, 'the table itself survives');
  m.enable();
  t.same(
    irqs.vectors
      .slice(2)
      .map((v) => v.gsi)
      .sort((a, b) => a - b),
    [24, 25],
    'the released GSIs come back',
  );
  t.equal(pba(m), 0n, 'the old signal was not carried over');
});

t.test('an enable that fails wires nothing: irqfds closed, GSIs and routes released, not enabled; a retry starts afresh', async (t) => {
  const cases = [
    [{ vector: 2 }, 'eventfd', 'creating the third irqfd'],
    ['route', 'KVM_SET_GSI_ROUTING', 'routing the second vector'],
    ['attach', 'KVM_IRQFD', 'attaching an unmasked vector'],
    ['setIrqs', 'VFIO_DEVICE_SET_IRQS', 'SET_IRQS'],
  ] as const;
  for (const [fail, op, what] of cases) {
    let routes = 0;
    const { m, irqs, tables, raise } = msix(3, () => fail === 'route' && ++routes === 2);
    entry(m, 0, 0xfee00000, 0x30);
    entry(m, 1, 0xfee01000, 0x31);
    if (fail !== 'route') irqs.fail = fail;
    t.throws(() => m.enable(), new RegExp(`^${op}: EINVAL$`), `${what}: the error comes out as it is`);
    t.notOk(m.enabled, `${what}: not enabled`);
    t.equal(m.vectorFd(0), undefined);
    t.ok(irqs.vectors.length > 0 && irqs.vectors.every((v) => v.closed && !v.attached), `${what}: every irqfd made is closed`);
    t.same(irqs.sets, [], `${what}: nothing reached VFIO`);
    t.same(tables.at(-1)?.filter((e) => e.type === 'msi') ?? [], [], `${what}: no MSI route left`);
    const made = irqs.vectors.length;
    m.enable();
    t.same(
      irqs.vectors
        .slice(made)
        .map((v) => v.gsi)
        .sort((a, b) => a - b),
      [24, 25, 26],
      `${what}: the same GSIs, free again`,
    );
    t.same(irqs.sets, [[...irqs.vectors.slice(made).map((v) => v.fd)]]);
    raise(0);
    t.same(irqs.injected, [irqs.vectors[made]!.gsi], `${what}: and it works`);
  }
});

t.test('a live update: frozen vectors hold what the device signals, and the next VM takes the eventfds, routes and masks', async (t) => {
  const { m, irqs, tables } = msix(3);
  const raise = raiser(m, irqs);
  for (let i = 0; i < 3; i++) entry(m, i, 0xfee00000, 0x40 + i, i === 2 ? 1 : 0);
  m.enable();
  raise(0);
  t.same(irqs.injected, [24], 'vector 0 runs');
  m.freeze();
  raise(0);
  raise(1);
  raise(2);
  t.same(irqs.injected, [24], 'frozen: nothing reaches this VM');
  const s = m.save();
  t.same(
    s.vectors.map((v) => v.gsi),
    [24, 25, 26],
  );
  t.notOk(s.functionMasked);

  // The next process: a fresh VM's routing, the same eventfds (the fake keeps their counters by fd).
  const next: RoutingEntry[][] = [];
  const n = new Msix(cap(3), -1, 'test', new IrqRouting(-1, (e) => void next.push(e)), -1, irqs);
  n.adopt(s);
  t.ok(n.enabled);
  t.same(irqs.injected, [24, 24, 25], 'the unmasked vectors deliver what they held as soon as they are taken');
  t.ok(n.masked(2), 'vector 2 stays masked');
  t.equal(pba(n), 4n, 'and shows pending');
  t.same(
    next
      .at(-1)!
      .filter((e) => e.type === 'msi')
      .map((e) => e.gsi),
    [24, 25, 26],
    'the same GSIs routed in the new VM',
  );
  t.equal(next.length, 1, 'in one KVM_SET_GSI_ROUTING (each waits for a grace period)');
  t.same(irqs.sets.length, 1, 'no VFIO_DEVICE_SET_IRQS in the new process: vfio-pci triggers the same eventfds');
  t.throws(() => n.adopt(s), /already on/);
  m.release();
  t.notOk(m.enabled, 'the old process lets its vectors go');
  t.equal(irqs.sets.length, 1, 'without turning the device off');
  void tables;
});

t.test('a live update that fails: thaw puts the old VM back on its vectors', async (t) => {
  const { m, irqs } = msix(2);
  const raise = raiser(m, irqs);
  entry(m, 0, 0xfee00000, 0x40);
  entry(m, 1, 0xfee00000, 0x41, 1);
  m.enable();
  m.freeze();
  raise(0);
  raise(1);
  t.same(irqs.injected, []);
  m.thaw();
  t.same(irqs.injected, [24], 'the unmasked vector delivers what it held; the masked one keeps it');
  t.equal(pba(m), 2n);
});
