// MSI of an assigned device, virtualised: the single-vector capability the
// guest sees, and enabling it (GSI, irqfd, route, SET_IRQS) all or nothing;
// against a model of the irqfd and SET_IRQS calls.
import t from 'tap';
import { Msi, type MsiKernel, type MsiVector } from '../../src/devices/vfio/msi.js';
import { IrqRouting } from '../../src/vmm/irq.js';
import type { RoutingEntry } from '../../src/sys/kvm.js';

class Calls implements MsiKernel {
  readonly vectors: (MsiVector & { closed: boolean })[] = [];
  readonly sets: (number | null)[] = [];
  /** A kernel call to fail, once. */
  fail: 'vector' | 'setIrqs' | undefined;
  private nextFd = 100;

  vector(gsi: number): MsiVector {
    if (this.fail === 'vector') this.failed('KVM_IRQFD');
    const v = { fd: this.nextFd++, gsi, closed: false, close: () => void (v.closed = true) };
    this.vectors.push(v);
    return v;
  }

  setIrqs(fd: number | null): void {
    if (fd !== null && this.fail === 'setIrqs') this.failed('VFIO_DEVICE_SET_IRQS');
    this.sets.push(fd);
  }

  private failed(op: string): never {
    this.fail = undefined;
    throw new Error(`${op}: EINVAL`);
  }
}

const CAP = 0x50;

/** A 64-bit MSI capability with 8 vectors and per-vector masking, as the device has it. */
function msi(routeFails = () => false): { m: Msi; calls: Calls; tables: RoutingEntry[][] } {
  const raw = new Uint8Array(24);
  raw.set([0x05, 0x70, 0x86, 0x01]);
  const calls = new Calls();
  const tables: RoutingEntry[][] = [];
  const setRouting = (e: RoutingEntry[]): void => {
    if (routeFails()) throw new Error('KVM_SET_GSI_ROUTING: EINVAL');
    tables.push(e);
  };
  const m = new Msi(CAP, raw, -1, 'test', new IrqRouting(-1, setRouting), -1, calls);
  // The guest's message: address 0xfee01000, data 0x4041.
  [0x00, 0x10, 0xe0, 0xfe].forEach((b, i) => m.write(CAP + 4 + i, b));
  [0x41, 0x40].forEach((b, i) => m.write(CAP + 12 + i, b));
  return { m, calls, tables };
}

const msiRoutes = (tables: RoutingEntry[][]): RoutingEntry[] => tables.at(-1)?.filter((e) => e.type === 'msi') ?? [];

t.test('the guest sees one vector without per-vector masking; the enable bit reports its changes', async (t) => {
  const { m } = msi();
  t.equal(m.read(CAP + 2), 0x80, '64-bit, one vector, disabled');
  t.equal(m.read(CAP + 3), 0, 'no per-vector masking');
  t.equal(m.write(CAP + 2, 0x71), true, 'enable; the multiple message enable field stays 0');
  t.equal(m.read(CAP + 2), 0x81);
  t.equal(m.write(CAP + 2, 0x01), undefined, 'no change');
  t.equal(m.write(CAP + 2, 0x00), false);
});

t.test('enable: a GSI and an irqfd, routed by the message, handed to VFIO; disable undoes it', async (t) => {
  const { m, calls, tables } = msi();
  m.enable();
  t.ok(m.enabled);
  t.same(
    calls.vectors.map((v) => v.gsi),
    [24],
  );
  t.same(calls.sets, [100]);
  t.same(msiRoutes(tables), [{ gsi: 24, type: 'msi', addressLo: 0xfee01000, addressHi: 0, data: 0x4041 }]);
  m.enable();
  t.equal(calls.sets.length, 1, 'enabling twice wires once');
  m.disable();
  t.notOk(m.enabled);
  t.same(calls.sets, [100, null]);
  t.ok(calls.vectors[0]!.closed);
  t.same(msiRoutes(tables), []);
});

t.test('an enable that fails wires nothing: irqfd closed, GSI and route released, not enabled; a retry starts afresh', async (t) => {
  const cases = [
    ['vector', 'KVM_IRQFD', 'creating the irqfd'],
    ['route', 'KVM_SET_GSI_ROUTING', 'routing it'],
    ['setIrqs', 'VFIO_DEVICE_SET_IRQS', 'SET_IRQS'],
  ] as const;
  for (const [fail, op, what] of cases) {
    let routes = 0;
    const { m, calls, tables } = msi(() => fail === 'route' && ++routes === 1);
    if (fail !== 'route') calls.fail = fail;
    t.throws(() => m.enable(), new RegExp(`^${op}: EINVAL$`), `${what}: the error comes out as it is`);
    t.notOk(m.enabled, `${what}: not enabled`);
    t.ok(
      calls.vectors.every((v) => v.closed),
      `${what}: the irqfd, if made, is closed`,
    );
    t.same(calls.sets, [], `${what}: nothing reached VFIO`);
    t.same(msiRoutes(tables), [], `${what}: no MSI route left`);
    m.enable();
    t.ok(m.enabled);
    t.same(calls.vectors.at(-1)!.gsi, 24, `${what}: the same GSI, free again`);
    t.same(calls.sets, [calls.vectors.at(-1)!.fd]);
  }
});
