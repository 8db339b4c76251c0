// Config mechanism #1 and an emulated function's config space: what the
// address register selects, and which bits a guest may change.
import t from 'tap';
import { ConfigSpace } from '../../src/devices/pci/config-space.js';
import { PciConfigFront, PciConfigIo } from '../../src/devices/pci/config-io.js';
import { hostBridge } from '../../src/devices/pci/host-bridge.js';
import { le } from '../../src/vmm/bus.js';

const bytes = (v: number, n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (v >>> (8 * i)) & 0xff);

type Port = { r: (port: number, size: number) => number; w: (port: number, size: number, v: number) => void };

function mech1(): Port & { io: PciConfigIo; f: ConfigSpace } {
  const io = new PciConfigIo();
  const f = new ConfigSpace('f');
  f.set(0, 4, 0x12345678);
  f.set(0x40, 4, 0, 0xffffffff);
  io.add((2 << 3) | 1, f); // 00:02.1
  const r = (port: number, size: number): number => {
    const d = new Uint8Array(size);
    io.read(port - 0xcf8, d);
    return le(d);
  };
  return { io, f, r, w: (port, size, v) => io.write(port - 0xcf8, bytes(v, size)) };
}

t.test('the address register: a dword, read back as written; narrower accesses do not touch it', async (t) => {
  const { r, w } = mech1();
  w(0xcf8, 4, 0x80001140);
  t.equal(r(0xcf8, 4), 0x80001140);
  w(0xcf8, 1, 0);
  w(0xcf9, 1, 0x06);
  t.equal(r(0xcf8, 4), 0x80001140, 'byte writes (0xcf9 is the reset port on a PC) leave it');
  t.equal(r(0xcf8, 2), 0xffff, 'a word read of it is all ones');
});

t.test('the data window: device, function and register select; bits 0-1 of the address are ignored', async (t) => {
  const { r, w, f } = mech1();
  w(0xcf8, 4, 0x80001100 | 0x40 | 0x3);
  w(0xcfc, 4, 0xdeadbeef);
  t.equal(f.configRead(0x40, 4), 0xdeadbeef);
  w(0xcf8, 4, 0x80001100);
  t.equal(r(0xcfc, 4), 0x12345678);
  t.equal(r(0xcfe, 2), 0x1234, 'offset 2 in the window');
  t.equal(r(0xcff, 1), 0x12);
  w(0xcf8, 4, 0x80001000); // 00:02.0
  t.equal(r(0xcfc, 4), 0xffffffff, 'another function of the same device is absent');
});

t.test('with the enable bit clear or another bus, reads are all ones and writes are dropped', async (t) => {
  const { r, w, f } = mech1();
  w(0xcf8, 4, 0x00001140);
  t.equal(r(0xcfc, 4), 0xffffffff);
  w(0xcfc, 4, 1);
  w(0xcf8, 4, 0x80011140);
  t.equal(r(0xcfc, 4), 0xffffffff);
  w(0xcfc, 4, 2);
  t.equal(f.configRead(0x40, 4), 0, 'neither write landed');
});

t.test('an emulated function: only write-mask bits change; beyond 256 bytes reads all ones', async (t) => {
  const hb = hostBridge();
  hb.configWrite(0x04, 2, 0xffff);
  t.equal(hb.configRead(0x04, 2), 0x0007, 'command: I/O, memory, bus master only');
  hb.configWrite(0x00, 4, 0);
  t.equal(hb.configRead(0x00, 4), 0x0d578086, 'IDs are read-only');
  const c = new ConfigSpace('c');
  c.set(0x10, 4, 0x0000000c, 0xffffc000);
  c.configWrite(0x10, 4, 0xffffffff);
  t.equal(c.configRead(0x10, 4), 0xffffc00c, 'a BAR-like register keeps its type bits');
  t.equal(c.configRead(0x100, 4), 0xffffffff, 'no extended config space');
  t.equal(c.configRead(0x100, 2), 0xffff);
  c.set(0xfe, 2, 0, 0xffff);
  c.configWrite(0xfe, 4, 0x12345678);
  t.equal(c.configRead(0xfe, 2), 0x5678, 'a write running past the end keeps its bytes inside');
});

t.test('a vCPU thread front: address writes and empty slots answered from shared state, the rest forwarded', async (t) => {
  const { io, f } = mech1();
  const forwarded: string[] = [];
  // The VMM thread's side, as the RPC would reach it: the port's own address.
  const vmm = {
    read: (port: number, d: Uint8Array) => (forwarded.push(`r ${port.toString(16)}/${d.length}`), io.read(port - 0xcf8, d)),
    write: (port: number, d: Uint8Array) => (forwarded.push(`w ${port.toString(16)}/${d.length}`), io.write(port - 0xcf8, d)),
  };
  const front = new PciConfigFront(io.state, vmm);
  const r = (port: number, size: number): number => {
    const d = new Uint8Array(size);
    front.read(port - 0xcf8, d);
    return le(d);
  };
  const w = (port: number, size: number, v: number): void => front.write(port - 0xcf8, bytes(v, size));
  w(0xcf8, 4, 0x80001100);
  t.equal(r(0xcf8, 4), 0x80001100, 'the address reads back on the front');
  t.same(forwarded, [], 'address accesses stay on the vCPU thread');
  t.equal(r(0xcfc, 4), 0x12345678, 'a present function is read on the VMM thread');
  t.same(forwarded, ['r cfc/4'], 'through one forwarded access');
  w(0xcf8, 4, 0x80001800); // 00:03.0, empty
  t.equal(r(0xcfc, 4), 0xffffffff, 'an empty slot reads all ones');
  w(0xcfc, 4, 0);
  t.same(forwarded, ['r cfc/4'], 'and neither its read nor its write leaves the vCPU thread');
  w(0xcf8, 4, 0x80011100); // bus 1
  t.equal(r(0xcfc, 2), 0xffff, 'another bus reads all ones');
  w(0xcf8, 4, 0x80001140);
  w(0xcfc, 4, 0xcafef00d);
  t.equal(f.configRead(0x40, 4), 0xcafef00d, 'a write to a present function lands, at the register the shared address selects');
  const io2 = new PciConfigIo();
  const f2 = new ConfigSpace('late');
  f2.set(0, 4, 0xabcd1234);
  const front2 = new PciConfigFront(io2.state, { read: (p, d) => io2.read(p - 0xcf8, d), write: (p, d) => io2.write(p - 0xcf8, d) });
  io2.add(5 << 3, f2);
  front2.write(0, bytes(0x80002800, 4));
  const d = new Uint8Array(4);
  front2.read(4, d);
  t.equal(le(d), 0xabcd1234, 'a function added after the front was made is seen by it');
});
