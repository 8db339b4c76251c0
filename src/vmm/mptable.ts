// The Intel MultiProcessor Specification 1.4 table, which tells Linux the
// vCPUs (local APIC ids), the IOAPIC and how every interrupt source is wired
// to it. Chosen over ACPI's MADT + _PRT because it states the board's PCI
// wiring as plain entries (no AML interpreter on our side), and Linux reads it
// whenever no MADT is present. Field names as in Linux's asm/mpspec_def.h.
// Pure: returns the bytes to place at `base`.
import { intxPin } from './irq.js';

export const LAPIC_BASE = 0xfee00000;
export const IOAPIC_BASE = 0xfec00000;
export const IOAPIC_PINS = 24;

const MP_PROCESSOR = 0,
  MP_BUS = 1,
  MP_IOAPIC = 2,
  MP_INTSRC = 3,
  MP_LINTSRC = 4;
const CPU_ENABLED = 1,
  CPU_BOOTPROCESSOR = 2;
const MP_IRQTYPE_INT = 0,
  MP_IRQTYPE_NMI = 1,
  MP_IRQTYPE_EXTINT = 3;
/** irqflag: polarity active low (3) and level trigger (3 << 2), as PCI INTx lines are. */
const MP_IRQ_PCI = 0x0f;
const BUS_PCI = 0,
  BUS_ISA = 1;

function checksum(b: Buffer): number {
  let s = 0;
  for (const x of b) s = (s + x) & 0xff;
  return (0x100 - s) & 0xff;
}

export function mpTable(base: bigint, cpus: number): Buffer {
  const entries: Buffer[] = [];
  for (let i = 0; i < cpus; i++) {
    const e = Buffer.alloc(20);
    e.writeUInt8(MP_PROCESSOR, 0);
    e.writeUInt8(i, 1); // apicid
    e.writeUInt8(0x14, 2); // apicver
    e.writeUInt8(CPU_ENABLED | (i === 0 ? CPU_BOOTPROCESSOR : 0), 3); // cpuflag
    e.writeUInt32LE(0x600, 4); // cpufeature: family 6
    e.writeUInt32LE(0x201, 8); // featureflag: FPU, APIC
    entries.push(e);
  }
  const bus = (id: number, type: string): Buffer => {
    const e = Buffer.alloc(8);
    e.writeUInt8(MP_BUS, 0);
    e.writeUInt8(id, 1);
    e.write(type.padEnd(6), 2, 'latin1');
    return e;
  };
  // Linux numbers PCI buses in the order the table lists them: this is bus 0.
  entries.push(bus(BUS_PCI, 'PCI'), bus(BUS_ISA, 'ISA'));
  const ioapicId = cpus;
  const ioapic = Buffer.alloc(8);
  ioapic.writeUInt8(MP_IOAPIC, 0);
  ioapic.writeUInt8(ioapicId, 1);
  ioapic.writeUInt8(0x11, 2); // apicver
  ioapic.writeUInt8(1, 3); // flags: usable
  ioapic.writeUInt32LE(IOAPIC_BASE, 4);
  entries.push(ioapic);
  const intsrc = (type: number, flags: number, srcbus: number, srcbusirq: number, dstirq: number): Buffer => {
    const e = Buffer.alloc(8);
    e.writeUInt8(MP_INTSRC, 0);
    e.writeUInt8(type, 1);
    e.writeUInt16LE(flags, 2);
    e.writeUInt8(srcbus, 4);
    e.writeUInt8(srcbusirq, 5);
    e.writeUInt8(ioapicId, 6);
    e.writeUInt8(dstirq, 7);
    return e;
  };
  // ISA IRQs on the IOAPIC pin of the same number, as KVM's default GSI routing has them (the PIT on GSI 0).
  for (let irq = 0; irq < 16; irq++) entries.push(intsrc(MP_IRQTYPE_INT, 0, BUS_ISA, irq, irq));
  // Every slot of bus 0, every pin: srcbusirq is (slot << 2) | (pin - 1).
  for (let slot = 1; slot < 32; slot++)
    for (let pin = 1; pin <= 4; pin++)
      entries.push(intsrc(MP_IRQTYPE_INT, MP_IRQ_PCI, BUS_PCI, (slot << 2) | (pin - 1), intxPin(slot, pin)));
  const lint = (type: number, lint: number): Buffer => {
    const e = Buffer.alloc(8);
    e.writeUInt8(MP_LINTSRC, 0);
    e.writeUInt8(type, 1);
    e.writeUInt16LE(0, 2);
    e.writeUInt8(BUS_ISA, 4);
    e.writeUInt8(0, 5);
    e.writeUInt8(0xff, 6); // every local APIC
    e.writeUInt8(lint, 7);
    return e;
  };
  entries.push(lint(MP_IRQTYPE_EXTINT, 0), lint(MP_IRQTYPE_NMI, 1));

  const body = Buffer.concat(entries);
  const header = Buffer.alloc(44);
  header.write('PCMP', 0, 'latin1');
  header.writeUInt16LE(44 + body.length, 4); // length
  header.writeUInt8(4, 6); // spec 1.4
  header.write('PINION  ', 8, 'latin1'); // oem
  header.write('PINION VMM  ', 16, 'latin1'); // productid
  header.writeUInt16LE(entries.length, 34); // oemcount: the number of entries
  header.writeUInt32LE(LAPIC_BASE, 36); // lapic
  const table = Buffer.concat([header, body]);
  table.writeUInt8(checksum(table), 7);

  // The floating pointer, then the table right after it.
  const mpf = Buffer.alloc(16);
  mpf.write('_MP_', 0, 'latin1');
  mpf.writeUInt32LE(Number(base) + 16, 4); // physptr
  mpf.writeUInt8(1, 8); // length in paragraphs
  mpf.writeUInt8(4, 9); // specification 1.4
  mpf.writeUInt8(checksum(mpf), 10);
  return Buffer.concat([mpf, table]);
}
