// The 16550's interrupt and input: THR-empty and received-data interrupts
// as Linux's 8250 driver expects them, gated by OUT2, shared by all threads.
import t from 'tap';
import { Serial16550 } from '../../src/devices/serial.js';
import { consoleLineStop } from '../../src/machine/devices.js';

const IER = 1,
  IIR = 2,
  MCR = 4,
  LSR = 5;

function uart(): { u: Serial16550; out: string[]; edges: boolean[]; r: (o: number) => number; w: (o: number, v: number) => void } {
  const out: string[] = [];
  const edges: boolean[] = [];
  const u = new Serial16550(
    Serial16550.newState(),
    (b) => void out.push(Buffer.from(b).toString()),
    (l) => void edges.push(l),
    true,
  );
  const r = (o: number): number => {
    const d = new Uint8Array(1);
    u.read(o, d);
    return d[0]!;
  };
  return { u, out, edges, r, w: (o, v) => u.write(o, Uint8Array.of(v)) };
}

t.test('THR empty: raised when enabled and after each byte, acknowledged by reading IIR', async (t) => {
  const { out, edges, r, w } = uart();
  w(MCR, 0x08); // OUT2
  t.equal(r(IIR) & 0x0f, 0x01, 'nothing pending');
  w(IER, 0x02);
  t.same(edges, [true], 'enabling THRI with THR empty raises the line');
  t.equal(r(IIR) & 0x0f, 0x02, 'IIR says THR empty');
  t.same(edges, [true, false], 'reading IIR acknowledged it: the line falls');
  t.equal(r(IIR) & 0x0f, 0x01);
  w(0, 0x41);
  t.same(out, ['A'], 'unbuffered: the byte is out at once');
  t.same(edges, [true, false, true], 'the byte went: THR empty again');
});

t.test('received data: LSR.DR, RDI interrupt ahead of THRI, read in order', async (t) => {
  const { u, edges, r, w } = uart();
  w(MCR, 0x08);
  t.equal(u.receive(Buffer.from('hi')), 2);
  t.equal(r(LSR) & 0x01, 1, 'data ready');
  t.same(edges, [], 'RDI not enabled yet');
  w(IER, 0x03);
  t.equal(r(IIR) & 0x0f, 0x04, 'received data outranks THR empty');
  t.equal(String.fromCharCode(r(0), r(0)), 'hi');
  t.equal(r(LSR) & 0x01, 0);
  t.equal(r(IIR) & 0x0f, 0x02, 'then THR empty');
  t.equal(r(IIR) & 0x0f, 0x01);
  t.same(edges, [true, false]);
});

t.test('OUT2 clear: interrupts pending but the line stays low', async (t) => {
  const { u, edges, r, w } = uart();
  w(IER, 0x01);
  u.receive(Buffer.from('x'));
  t.equal(r(IIR) & 0x0f, 0x04);
  t.same(edges, []);
  w(MCR, 0x08);
  t.same(edges, [true]);
});

t.test('input beyond the ring is left to the caller', async (t) => {
  const { u, r } = uart();
  t.equal(u.receive(Buffer.alloc(1500, 0x61)), 1024);
  r(0);
  t.equal(u.receive(Buffer.from('bc')), 1, 'one byte freed, one taken');
});

t.test('FCR "clear receive FIFO" drops what was typed before the driver opened the port', async (t) => {
  const { u, r, w } = uart();
  u.receive(Buffer.from('early'));
  w(IIR, 0x07); // FCR: enable, clear RX and TX
  t.equal(r(LSR) & 0x01, 0, 'nothing to read');
  u.receive(Buffer.from('z'));
  t.equal(r(0), 0x7a);
});

t.test('whole lines go to the watcher, carriage return dropped', async (t) => {
  const lines: string[] = [];
  const u = new Serial16550(
    Serial16550.newState(),
    () => {},
    () => {},
    true,
    (l) => void lines.push(l),
  );
  for (const c of Buffer.from('[ 1.0] Kernel panic - not syncing: x\r\npartial')) u.write(0, Uint8Array.of(c));
  t.same(lines, ['[ 1.0] Kernel panic - not syncing: x']);
});

t.test("a Linux guest's console lines that end the VM: a panic (with the line) and a power-down", async (t) => {
  const seen: string[] = [];
  const stops = {
    exit: () => seen.push('exit'),
    reset: () => seen.push('reset'),
    panic: (l: string) => seen.push(`panic ${l}`),
    poweroff: () => seen.push('poweroff'),
  };
  for (const l of [
    '[    2.5] Kernel panic - not syncing: No working init found.',
    '[   15.7] reboot: Power down',
    'reboot: Power down\r',
    '[    9.92] reboot: Power off not available: System halted instead',
    'echo reboot: Power down',
    '[ 1.0] reboot: Restarting system',
  ])
    consoleLineStop(l, stops);
  t.same(seen, ['panic Kernel panic - not syncing: No working init found.', 'poweroff', 'poweroff', 'poweroff']);
});

t.test('a console line whose bytes come from two vCPU threads is watched whole', async (t) => {
  const state = Serial16550.newState();
  const lines: string[] = [];
  const a = new Serial16550(
    state,
    () => {},
    () => {},
    true,
    (l) => lines.push(l),
  );
  const b = new Serial16550(
    state,
    () => {},
    () => {},
    true,
    (l) => lines.push(l),
  );
  const text = Buffer.from('[   21.7] reboot: Power off not available: System halted instead\r\n');
  text.forEach((c, i) => (i % 3 ? a : b).write(0, Uint8Array.of(c)));
  t.same(lines, ['[   21.7] reboot: Power off not available: System halted instead']);
});
