// The memory-hotplug mailbox as a guest driver sees it through its ports:
// the ID, the claim, events and their registers, acks (stale ones dropped),
// odd accesses, and the VMM's bounded waits for an ack; served by a vCPU
// thread's mailbox over the same state, in a worker, while the VMM thread
// is busy.
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { HOTPLUG_KIND, MEM_HOTPLUG_ID, MEM_HOTPLUG_REG as R, MemHotplug } from '../../src/devices/mem-hotplug.js';
import { Platform } from '../../src/machine/platform.js';
import { le } from '../../src/vmm/bus.js';

const word = (v: number): Uint8Array => Uint8Array.from({ length: 4 }, (_, i) => (v >>> (8 * i)) & 0xff);
const rd = (d: MemHotplug, reg: number, width = 4): number => {
  const b = new Uint8Array(width);
  d.read(reg, b);
  return le(b) >>> 0;
};
const wr = (d: MemHotplug, reg: number, v: number): void => d.write(reg, word(v));
/** What a driver reads for the posted event, all registers. */
const event = (d: MemHotplug): number[] => [R.GEN, R.KIND, R.GPA_LO, R.GPA_HI, R.SIZE_LO, R.SIZE_HI, R.ACK].map((r) => rd(d, r));

t.test('unclaimed: the ID reads back, nothing is posted, waits end at once', async (t) => {
  const d = new MemHotplug();
  t.equal(rd(d, R.ID), MEM_HOTPLUG_ID);
  t.equal(rd(d, R.ID), 0x50484d50, '"PMHP" in memory order');
  t.notOk(d.claimed);
  t.same(event(d), [0, HOTPLUG_KIND.none, 0, 0, 0, 0, 0], 'no event yet');
  t.throws(() => d.post('added', 1n << 32n, 16n << 20n), /no guest driver holds the mailbox/);
  t.equal(await d.waitAck(1, 10_000), 'let go', 'no driver: nothing to wait for');
  wr(d, R.ID, 0x12345678);
  t.notOk(d.claimed, 'a wrong magic does not claim');
});

t.test('claimed: an event in the registers, acked by its generation', async (t) => {
  const d = new MemHotplug();
  wr(d, R.ID, MEM_HOTPLUG_ID);
  t.ok(d.claimed);
  const e = d.post('added', 0x1_4000_0000n, 0x1_0000_0000n);
  t.same(e, { generation: 1, kind: 'added', gpa: 0x1_4000_0000n, size: 0x1_0000_0000n });
  t.same(event(d), [1, 1, 0x4000_0000, 1, 0, 1, 0], 'GPA and size split in 32-bit halves (4 GiB: SIZE_LO 0)');
  t.same(d.pending, e);
  const waiting = d.waitAck(1, 10_000);
  wr(d, R.ACK, 1);
  t.equal(await waiting, 'acked');
  t.equal(rd(d, R.ACK), 1);
  t.equal(d.pending, undefined, 'nothing pending once acked');
  t.equal(await d.waitAck(1, 10_000), 'acked', 'an ack already in answers at once');

  d.post('remove-requested', 0x1_4000_0000n, 0x1000n);
  t.same(event(d).slice(0, 2), [2, HOTPLUG_KIND['remove-requested']]);
  wr(d, R.ACK, 1);
  wr(d, R.ACK, 7);
  t.equal(d.staleAcks, 2, 'acks of another generation are dropped and counted');
  t.equal(rd(d, R.ACK), 1);
  t.ok(d.pending);
});

t.test('only 32-bit accesses at 4-byte offsets', async (t) => {
  const d = new MemHotplug();
  t.equal(rd(d, R.ID, 1), 0xff, 'a byte read is all ones');
  t.equal(rd(d, R.ID, 2), 0xffff);
  t.equal(rd(d, 0x02), 0xffffffff, 'an unaligned one too');
  d.write(R.ID, word(MEM_HOTPLUG_ID).subarray(0, 2));
  t.notOk(d.claimed, 'a 16-bit write is dropped');
});

t.test('waits: time out, end when the driver lets go or the VM closes', async (t) => {
  const d = new MemHotplug();
  wr(d, R.ID, MEM_HOTPLUG_ID);
  const g = d.post('remove-requested', 0x4000_0000n, 0x100_0000n).generation;
  const t0 = Date.now();
  t.equal(await d.waitAck(g, 50), 'timeout');
  t.ok(Date.now() - t0 >= 45, 'after the bound');

  const late = d.waitAck(g, 10_000);
  wr(d, R.ID, 0);
  t.equal(await late, 'let go', 'the driver let go of the mailbox');
  t.notOk(d.claimed);

  wr(d, R.ID, MEM_HOTPLUG_ID);
  const g2 = d.post('added', 0x4000_0000n, 0x100_0000n).generation;
  t.equal(g2, g + 1, 'generations go on across a claim');
  const closing = d.waitAck(g2, 10_000);
  d.close();
  t.equal(await closing, 'closed');

  const seen: (number | null)[] = [];
  const off = d.subscribe((a) => seen.push(a));
  wr(d, R.ACK, g2);
  wr(d, R.ACK, g2);
  off();
  wr(d, R.ID, 0);
  t.same(seen, [g2], 'subscribers see each ack once, until they unsubscribe');
});

t.test('a register read waits out an event being written (SEQ odd)', async (t) => {
  const d = new MemHotplug();
  const words = new Int32Array(d.state);
  Atomics.store(words, 0, 1);
  const w = new Worker(
    `const { workerData } = require('node:worker_threads');
     const words = new Int32Array(workerData);
     Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
     Atomics.store(words, 0, 2);`,
    { eval: true, workerData: d.state },
  );
  const t0 = Date.now();
  t.equal(rd(d, R.GEN), 0, 'read once the writer is done');
  t.ok(Date.now() - t0 >= 50, 'not before');
  await w.terminate();
});

t.test('a driver reading the event as a seqlock sees one event whole', async (t) => {
  const d = new MemHotplug();
  wr(d, R.ID, MEM_HOTPLUG_ID);
  d.post('added', 0x4000_0000n, 0x100_0000n);
  // The VMM posts between two of the driver's reads: GEN read again tells it to start over.
  const gen = rd(d, R.GEN);
  const lo = rd(d, R.GPA_LO);
  d.post('remove-requested', 0x5000_0000n, 0x80_0000n);
  t.not(rd(d, R.GEN), gen, 'GEN moved: the fields read so far are of the old event');
  t.equal(lo, 0x4000_0000);
  t.same(event(d).slice(0, 5), [2, 2, 0x5000_0000, 0, 0x80_0000]);
});

t.test("a vCPU thread's mailbox over the same state: the guest's writes reach the VMM's waits and subscribers", async (t) => {
  const vmm = new MemHotplug();
  const vcpu = new MemHotplug(vmm.state);
  wr(vcpu, R.ID, MEM_HOTPLUG_ID);
  t.ok(vmm.claimed, 'the claim is in the shared registers');
  const e = vmm.post('added', 0x1_4000_0000n, 0x200_0000n);
  t.same(event(vcpu), [1, 1, 0x4000_0000, 1, 0x200_0000, 0, 0], 'the vCPU side reads the event whole');
  const seen: (number | null)[] = [];
  const off = vmm.subscribe((a) => seen.push(a));
  const waiting = vmm.waitAck(e.generation, 10_000);
  wr(vcpu, R.ACK, e.generation);
  t.same(seen, [], 'not told synchronously: the write was served elsewhere');
  t.equal(await waiting, 'acked', 'the wait ends through the write counter');
  const letGo = vmm.waitAck(vmm.post('remove-requested', 0x1_4000_0000n, 0x200_0000n).generation, 10_000);
  wr(vcpu, R.ID, 0);
  t.equal(await letGo, 'let go');
  off();
  t.same(seen, [e.generation, null], 'the subscriber heard the ack and the let-go, once each');
  t.same(vmm.save(), {
    claimed: false,
    last: { generation: 2, kind: 'remove-requested', gpa: 0x1_4000_0000n, size: 0x200_0000n },
    acked: 1,
    staleAcks: 0,
  });
  const fresh = new MemHotplug();
  fresh.restore(vmm.save());
  t.same(fresh.save(), vmm.save(), 'restored whole into a fresh mailbox');
});

t.test('a guest polling from a worker is served while the VMM thread is busy, and its ack ends the wait', async (t) => {
  const vmm = new MemHotplug();
  const url = new URL('../../src/devices/mem-hotplug.js', import.meta.url).href;
  // The worker is the vCPU thread: it claims, waits for an event, reads it and acks it, counting its reads.
  const w = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     import(workerData.url).then(({ MemHotplug, MEM_HOTPLUG_ID, MEM_HOTPLUG_REG: R }) => {
       const d = new MemHotplug(workerData.state);
       const b = new Uint8Array(4);
       const put = (v) => { for (let i = 0; i < 4; i++) b[i] = (v >>> (8 * i)) & 0xff; };
       const get = () => (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
       put(MEM_HOTPLUG_ID); d.write(R.ID, b);
       let polls = 0;
       for (;;) { d.read(R.GEN, b); polls++; if (get()) break; }
       d.read(R.GPA_HI, b); const hi = get();
       put(1); d.write(R.ACK, b);
       parentPort.postMessage({ polls, hi });
     });`,
    { eval: true, workerData: { url, state: vmm.state } },
  );
  const done = new Promise<{ polls: number; hi: number }>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  while (!vmm.claimed) await new Promise((r) => setTimeout(r, 1));
  const g = vmm.post('added', 0x2_0000_0000n, 0x100_0000n).generation;
  const waiting = vmm.waitAck(g, 10_000);
  // A VMM thread busy for 200 ms (pinning a region): the worker's polls go on without it.
  const t0 = Date.now();
  while (Date.now() - t0 < 200);
  t.equal(await waiting, 'acked', 'the ack written in the worker ended the wait');
  const r = await done;
  t.equal(r.hi, 2, 'the worker read the event');
  t.ok(r.polls >= 1);
  await w.terminate();
});

t.test('the platform has it on the VMM thread bus at 0x5f0-0x60f (for a loop run inline)', async (t) => {
  const p = Platform.build({ consoleFd: 1, vmFd: -1, linux: false });
  t.match(
    p.pio.list().find((r) => r.name === 'mem hotplug'),
    { base: 0x5f0, len: 0x20 },
  );
  const b = new Uint8Array(4);
  p.pio.read(0x5f0, b);
  t.equal(le(b), MEM_HOTPLUG_ID);
  p.pio.write(0x5f0, word(MEM_HOTPLUG_ID));
  t.ok(p.hotplug.claimed, 'a claim through the bus reaches the platform device');
});
