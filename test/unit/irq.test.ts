// The VM's interrupt routing: GSIs for MSI routes above the IOAPIC's pins,
// the whole table restated on every change, and the board's INTx swizzle.
import t from 'tap';
import { IrqRouting, intxPin } from '../../src/vmm/irq.js';
import * as K from '../../src/sys/kvm.js';

function routing(): { r: IrqRouting; tables: K.RoutingEntry[][] } {
  const tables: K.RoutingEntry[][] = [];
  return { r: new IrqRouting(-1, (e) => void tables.push(e)), tables };
}

const msiRoutes = (table: K.RoutingEntry[] | undefined): K.RoutingEntry[] => (table ?? []).filter((e) => e.type === 'msi');

t.test('INTx: slot and pin swizzled over IOAPIC pins 16-19', async (t) => {
  t.equal(intxPin(0, 1), 16, 'slot 0 INTA');
  t.equal(intxPin(1, 1), 17, 'slot 1 INTA');
  t.equal(intxPin(1, 4), 16, 'slot 1 INTD wraps');
  t.equal(intxPin(2, 1), intxPin(1, 2), 'the next slot INTA shares the previous slot INTB');
  for (let slot = 0; slot < 32; slot++) {
    const pins = [1, 2, 3, 4].map((p) => intxPin(slot, p));
    t.same(
      [...pins].sort((a, b) => a - b),
      [16, 17, 18, 19],
      `slot ${slot}: its four pins reach four different IOAPIC pins`,
    );
  }
});

t.test('GSIs: allocated from 24 up, released ones reused last-in first-out', async (t) => {
  const { r, tables } = routing();
  t.same([r.allocateGsi(), r.allocateGsi(), r.allocateGsi()], [24, 25, 26]);
  r.releaseGsi(25);
  r.releaseGsi(24);
  t.same(tables, [], 'a GSI without a route is released without a table push');
  t.equal(r.allocateGsi(), 24);
  t.equal(r.allocateGsi(), 25);
  t.equal(r.allocateGsi(), 27, 'then new ones again');
});

t.test('the table restates the PIC and IOAPIC pins, then every MSI route', async (t) => {
  const { r, tables } = routing();
  const gsi = r.allocateGsi();
  r.setMsi(gsi, { addressLo: 0xfee00000, addressHi: 0, data: 0x4041 });
  t.equal(tables.length, 1, 'one push per change');
  const table = tables[0]!;
  t.equal(table.length, 16 + 24 + 1);
  const chip = (g: number): string[] => table.flatMap((e) => (e.gsi === g && e.type === 'irqchip' ? [`${e.irqchip}:${e.pin}`] : []));
  t.same(chip(0), [`${K.KVM_IRQCHIP_PIC_MASTER}:0`, `${K.KVM_IRQCHIP_IOAPIC}:0`]);
  t.same(chip(10), [`${K.KVM_IRQCHIP_PIC_SLAVE}:2`, `${K.KVM_IRQCHIP_IOAPIC}:10`]);
  t.same(chip(16), [`${K.KVM_IRQCHIP_IOAPIC}:16`], 'above 15, IOAPIC only');
  t.same(chip(23), [`${K.KVM_IRQCHIP_IOAPIC}:23`]);
  t.same(chip(24), [], 'MSI GSIs are not irqchip pins');
  t.same(msiRoutes(table), [{ gsi: 24, type: 'msi', addressLo: 0xfee00000, addressHi: 0, data: 0x4041 }]);
});

t.test('MSI routes: rewritten in place, dropped with their GSI', async (t) => {
  const { r, tables } = routing();
  const [a, b] = [r.allocateGsi(), r.allocateGsi()];
  r.setMsi(a, { addressLo: 0xfee00000, addressHi: 0, data: 0x30 });
  r.setMsi(b, { addressLo: 0xfee01000, addressHi: 0, data: 0x31 });
  r.setMsi(a, { addressLo: 0xfee02000, addressHi: 0, data: 0x32 });
  t.same(msiRoutes(tables.at(-1)), [
    { gsi: a, type: 'msi', addressLo: 0xfee02000, addressHi: 0, data: 0x32 },
    { gsi: b, type: 'msi', addressLo: 0xfee01000, addressHi: 0, data: 0x31 },
  ]);
  r.releaseGsi(a);
  t.equal(tables.length, 4, 'releasing a routed GSI pushes the table without it');
  t.same(
    msiRoutes(tables.at(-1)).map((e) => e.gsi),
    [b],
  );
  t.equal(tables.at(-1)!.length, 16 + 24 + 1);
});

t.test('kvm_irq_routing: 48-byte entries after an 8-byte header', async (t) => {
  const b = K.kvm_irq_routing([
    { gsi: 10, type: 'irqchip', irqchip: K.KVM_IRQCHIP_PIC_SLAVE, pin: 2 },
    { gsi: 30, type: 'msi', addressLo: 0xfee00000, addressHi: 0x1, data: 0x80000041 },
  ]);
  t.equal(b.length, 8 + 2 * 48);
  t.equal(b.readUInt32LE(0), 2, 'nr');
  t.same([b.readUInt32LE(8), b.readUInt32LE(12), b.readUInt32LE(24), b.readUInt32LE(28)], [10, K.KVM_IRQ_ROUTING_IRQCHIP, 1, 2]);
  const m = 8 + 48;
  t.same([b.readUInt32LE(m), b.readUInt32LE(m + 4)], [30, K.KVM_IRQ_ROUTING_MSI]);
  const msi = [b.readUInt32LE(m + 16), b.readUInt32LE(m + 20), b.readUInt32LE(m + 24)];
  t.same(msi, [0xfee00000, 1, 0x80000041], 'address and data, unsigned');
});
