// MachineControl's memory changes and what the guest is told of them, on a
// stand-in machine with no KVM: a real memory map and real backings, the
// real hotplug mailbox with a guest driver simulated on its ports, and a
// listener that can refuse the next update as the DMA planner would. The
// order checked: release, the update, then the announcement; a refusal at
// either end leaves the map, and the guest's view of it, as they were. And
// what a live update carries of it to the next process's MachineControl.
import t from 'tap';
import { ApiError } from '../../src/api/errors.js';
import { MachineControl } from '../../src/api/vm-control.js';
import { MEM_HOTPLUG_ID, MEM_HOTPLUG_REG as R, MemHotplug } from '../../src/devices/mem-hotplug.js';
import type { Machine } from '../../src/machine/machine.js';
import { DmaError } from '../../src/memory/dma-mapper.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { GuestRam } from '../../src/memory/guest-ram.js';
import type { MemoryListener, MemoryRegion } from '../../src/memory/listener.js';
import { pinCore } from '../../src/memory/pin-core.js';
import { HotplugDriver } from '../support/hotplug-driver.js';

const MiB = 1n << 20n;

/** Refuses the next commit it is asked to, as the DMA planner does over the budget; records the ones it took. */
class Listener implements MemoryListener {
  refuseNext = false;
  commits = 0;
  regionAdd(): void {}
  regionRemove(): void {}
  commit(): void {
    if (this.refuseNext) {
      this.refuseNext = false;
      throw new DmaError(
        'ENOMEM',
        undefined,
        undefined,
        undefined,
        undefined,
        'DMA plan refused: over the budget; the DMA map is unchanged',
      );
    }
    this.commits++;
  }
}

function machine(): {
  m: Machine;
  memory: GuestMemory;
  listener: Listener;
  hotplug: MemHotplug;
  paused: () => boolean;
  pauses: () => number;
  free: () => void;
} {
  const page = BigInt(pinCore.pageSize());
  const memory = new GuestMemory();
  const listener = new Listener();
  memory.addListener(listener);
  const ram = GuestRam.allocate(4n * MiB, 'memfd', page);
  const low: MemoryRegion = { name: 'ram-low', gpa: 0n, size: ram.size, hva: ram.vaddr, file: { fd: ram.fd, offset: 0n }, kind: 'ram' };
  memory.update((u) => {
    memory.setView(low, ram.view(0n, Number(ram.size)));
    u.add(low);
  });
  const hotplug = new MemHotplug();
  let pausing = false;
  let pauses = 0;
  const m = {
    memory,
    hotplug,
    config: { backend: 'memfd', cmdline: 'hotplug', payload: 'guest.elf' },
    get pausing() {
      return pausing;
    },
    vcpuStates: () => [pausing ? 'paused' : 'running'],
    pause: async () => void ((pausing = true), pauses++),
    resume: () => void (pausing = false),
    stop: () => undefined,
    assignedDevices: () => [],
    dmaState: () => undefined,
    dmaMappings: () => [],
  } as unknown as Machine;
  return { m, memory, listener, hotplug, paused: () => pausing, pauses: () => pauses, free: () => ram.free() };
}

const names = (mem: GuestMemory): string[] => mem.list().map((r) => `${r.name} 0x${r.gpa.toString(16)}+0x${r.size.toString(16)}`);

t.test('no driver: changes are made at once, and say the guest was not told', async (t) => {
  const { m, memory, free } = machine();
  const c = new MachineControl(m);
  t.teardown(() => (c.close(), free()));
  const r = await c.changeMemory({ verb: 'add-ram', gpa: 0x4000_0000n, size: MiB, backend: 'memfd' });
  t.match(r.guest, { told: false, acknowledged: false, note: /^not told: no guest driver/ });
  t.match(c.memory().regions, [
    { name: 'ram-low', guest: 'boot' },
    { name: 'ram@0x40000000', guest: 'not told' },
  ]);
  await c.changeMemory({ verb: 'remove-ram', gpa: 0x4000_0000n });
  t.same(names(memory), ['ram-low 0x0+0x400000']);
  t.match(c.info().memory.hotplug, { claimed: false, generation: 0 });
});

t.test('a driver that answers: released before, told after, for every verb', async (t) => {
  const { m, memory, hotplug, free } = machine();
  const d = new HotplugDriver(hotplug);
  const c = new MachineControl(m);
  t.teardown(() => (d.stop(), c.close(), free()));
  const add = await c.changeMemory({ verb: 'add-ram', gpa: 0x4000_0000n, size: 2n * MiB, backend: 'memfd' });
  t.match(add.guest, { told: true, acknowledged: true, events: [{ kind: 'added', gpa: '0x40000000', outcome: 'acked' }] });
  const split = await c.changeMemory({ verb: 'split-ram', gpa: 0x4000_0000n, at: 0x4010_0000n });
  t.match(split.guest.events, [
    { kind: 'remove-requested', gpa: '0x40000000', size: 2 << 20 },
    { kind: 'added', gpa: '0x40000000', size: 1 << 20 },
    { kind: 'added', gpa: '0x40100000', size: 1 << 20 },
  ]);
  await c.changeMemory({ verb: 'move-ram', gpa: 0x4010_0000n, to: 0x5000_0000n });
  await c.changeMemory({ verb: 'remove-ram', gpa: 0x5000_0000n });
  t.same(d.seenText(), [
    'added 0x40000000+0x200000',
    'remove 0x40000000+0x200000',
    'added 0x40000000+0x100000',
    'added 0x40100000+0x100000',
    'remove 0x40100000+0x100000',
    'added 0x50000000+0x100000',
    'remove 0x50000000+0x100000',
  ]);
  t.same(names(memory), ['ram-low 0x0+0x400000', 'ram@0x40000000 0x40000000+0x100000']);
  t.match(c.memory().regions, [{ guest: 'boot' }, { guest: 'acknowledged' }]);
  t.match(c.memory().changes.at(-1), { summary: /^removed ram@0x50000000/, guest: /^the guest released ram@0x50000000/ });
});

t.test('no release in time: a 409, nothing changed, the memory map and the backings as they were', async (t) => {
  const { m, memory, listener, hotplug, free } = machine();
  const d = new HotplugDriver(hotplug);
  const c = new MachineControl(m, 50);
  t.teardown(() => (d.stop(), c.close(), free()));
  await c.changeMemory({ verb: 'add-ram', gpa: 0x4000_0000n, size: MiB, backend: 'memfd' });
  d.answer = () => false;
  const commits = listener.commits;
  const err = await c.changeMemory({ verb: 'remove-ram', gpa: 0x4000_0000n }).catch((e: unknown) => e);
  t.ok(err instanceof ApiError);
  t.match(err, {
    status: 409,
    message: 'vm.remove-ram: the guest did not release ram@0x40000000 [0x40000000, 0x40100000) in 0.05 s; nothing changed',
  });
  t.equal(listener.commits, commits, 'no update was made');
  t.same(names(memory), ['ram-low 0x0+0x400000', 'ram@0x40000000 0x40000000+0x100000']);
  t.equal(c.memory().changes.length, 1, 'and none logged');
});

t.test('a change refused after the guest released: it is told of the region again', async (t) => {
  const { m, memory, listener, hotplug, free } = machine();
  const d = new HotplugDriver(hotplug);
  const c = new MachineControl(m);
  t.teardown(() => (d.stop(), c.close(), free()));
  await c.changeMemory({ verb: 'add-ram', gpa: 0x4000_0000n, size: MiB, backend: 'memfd' });
  listener.refuseNext = true;
  await t.rejects(c.changeMemory({ verb: 'move-ram', gpa: 0x4000_0000n, to: 0x5000_0000n }), {
    status: 409,
    message:
      'vm.move-ram: DMA plan refused: over the budget; the DMA map is unchanged; the guest had released ram@0x40000000 and was told of it again',
  });
  t.same(d.seenText().slice(1), ['remove 0x40000000+0x100000', 'added 0x40000000+0x100000']);
  t.same(names(memory), ['ram-low 0x0+0x400000', 'ram@0x40000000 0x40000000+0x100000']);
  t.match(c.memory().regions, [{}, { guest: 'acknowledged' }], 'the guest knows it again');
});

t.test('paused by the user with a driver present: refused at once, since the guest could not answer', async (t) => {
  const { m, hotplug, free } = machine();
  const d = new HotplugDriver(hotplug);
  const c = new MachineControl(m);
  t.teardown(() => (d.stop(), c.close(), free()));
  await c.pause();
  const t0 = Date.now();
  await t.rejects(c.changeMemory({ verb: 'add-ram', gpa: 0x4000_0000n, size: MiB, backend: 'memfd' }), {
    status: 409,
    message: /^vm\.add-ram: the VM is paused \(vm\.pause\) and its guest has a memory-hotplug driver/,
  });
  t.ok(Date.now() - t0 < 1000, 'without waiting');
  t.same(d.seenText(), []);
});

t.test('the VM ends mid-wait: the change answers at once', async (t) => {
  const { m, hotplug, free } = machine();
  const d = new HotplugDriver(hotplug);
  const c = new MachineControl(m);
  t.teardown(() => (d.stop(), c.close(), free()));
  d.answer = () => false;
  const adding = c.changeMemory({ verb: 'add-ram', gpa: 0x4000_0000n, size: MiB, backend: 'memfd' });
  setTimeout(() => c.ended(), 30);
  const r = await adding;
  t.match(r.guest, { told: true, acknowledged: false, events: [{ outcome: 'closed' }] }, 'made, and the guest was told as the VM closed');
  await t.rejects(c.changeMemory({ verb: 'remove-ram', gpa: 0x4000_0000n }), { status: 409, message: 'vm.remove-ram: the VM is stopping' });
});

t.test('RAM only added that the DMA budget cannot hold is refused before a backing is allocated', async (t) => {
  const { m, memory, free } = machine();
  (m as { dmaState: () => unknown }).dmaState = () => ({ held: 8n * MiB, budget: { bytes: 10n * MiB, why: 'the test limit' } });
  const c = new MachineControl(m);
  t.teardown(() => (c.close(), free()));
  await t.rejects(c.changeMemory({ verb: 'add-ram', gpa: 0x4000_0000n, size: 4n * MiB, backend: 'memfd' }), {
    status: 409,
    message:
      'vm.add-ram: DMA plan refused: new memory map needs 0x400000 more locked bytes, only 0x200000 available (this VM holds 8 MiB; the limit is the test limit); nothing changed',
  });
  t.same(names(memory), ['ram-low 0x0+0x400000'], 'the map is as it was');
  await c.changeMemory({ verb: 'add-ram', gpa: 0x4000_0000n, size: 2n * MiB, backend: 'memfd' });
  t.same(names(memory), ['ram-low 0x0+0x400000', 'ram@0x40000000 0x40000000+0x200000'], 'what fits is added');
});

t.test('a copy holds the vCPUs, unless the guest released the region it copies', async (t) => {
  for (const driver of [false, true]) {
    const { m, hotplug, pauses, free } = machine();
    const d = driver ? new HotplugDriver(hotplug) : undefined;
    const c = new MachineControl(m);
    await c.changeMemory({ verb: 'add-ram', gpa: 0x4000_0000n, size: 2n * MiB, backend: 'memfd' });
    await c.changeMemory({ verb: 'replace-ram', gpa: 0x4000_0000n, backend: 'anon' });
    t.equal(pauses(), driver ? 0 : 1, driver ? 'released by its driver: no hold' : 'no driver: held for the copy');
    d?.stop();
    c.close();
    free();
  }
});

t.test('a change that takes a region away holds the vCPUs while its memslot is swapped, unless the guest released it', async (t) => {
  const { m, pauses, free } = machine();
  const c = new MachineControl(m);
  await c.changeMemory({ verb: 'add-ram', gpa: 0x4000_0000n, size: 2n * MiB, backend: 'memfd' });
  t.equal(pauses(), 0, 'only added: no slot goes, no hold');
  await c.changeMemory({ verb: 'split-ram', gpa: 0n, at: 2n * MiB });
  t.equal(pauses(), 1, 'a split of RAM the guest runs from: held');
  await c.changeMemory({ verb: 'remove-ram', gpa: 0x4000_0000n });
  t.equal(pauses(), 2, 'a removal the guest was not asked about: held');
  c.close();
  free();

  const w = machine();
  const d = new HotplugDriver(w.hotplug);
  const c2 = new MachineControl(w.m);
  await c2.changeMemory({ verb: 'add-ram', gpa: 0x4000_0000n, size: 2n * MiB, backend: 'memfd' });
  await c2.changeMemory({ verb: 'remove-ram', gpa: 0x4000_0000n });
  t.equal(w.pauses(), 0, 'released by its driver first: no hold');
  d.stop();
  c2.close();
  w.free();
});

t.test("a live update carries what the guest was told: each region's view, the change log, the event awaiting its ack", async (t) => {
  for (const lateAck of [true, false]) {
    const { m, hotplug, free } = machine();
    const d = new HotplugDriver(hotplug);
    const c = new MachineControl(m, 50);
    await c.changeMemory({ verb: 'add-ram', gpa: 0x4000_0000n, size: MiB, backend: 'memfd' });
    d.answer = () => false;
    await c.changeMemory({ verb: 'add-ram', gpa: 0x5000_0000n, size: MiB, backend: 'memfd' });
    const record = c.controlRecord();
    t.match(record.regions, [{ guest: 'boot' }, { guest: 'acknowledged' }, { guest: 'told' }]);
    t.same(record.posted, { generation: 2, gpa: 0x5000_0000n, kind: 'added' });
    t.match(record.log, [{ guest: /^the guest acknowledged ram@0x40000000/ }, { guest: /gave no ack within 0\.05 s$/ }]);
    // The guest runs until the pause: its ack may land after the record was written, and is in the mailbox's state.
    if (lateAck) d.put(R.ACK, 2);
    d.stop();
    const state = hotplug.save();
    c.ended();

    // The new process: the same map, a fresh mailbox with the old one's registers.
    const next = new MemHotplug();
    next.restore(state);
    Object.assign(m, { hotplug: next, takeBacking: () => undefined });
    const c2 = new MachineControl(m, 50, record);
    t.match(
      c2.memory().regions,
      [{ guest: 'boot' }, { guest: 'acknowledged' }, { guest: lateAck ? 'acknowledged' : 'told' }],
      lateAck ? 'an ack written before the pause counts' : 'still awaited',
    );
    t.same(
      c2.memory().changes.map((e) => e.guest),
      record.log.map((e) => e.guest),
    );
    t.match(c2.info().memory.hotplug, { claimed: true, generation: 2, acked: lateAck ? 2 : 1 });
    // The guest's driver goes on against the new process's mailbox: an ack that comes now counts too.
    const d2 = new HotplugDriver(next);
    for (let i = 0; i < 1000 && c2.memory().regions.at(2)?.guest !== 'acknowledged'; i++) await new Promise((r) => setTimeout(r, 1));
    t.match(c2.memory().regions.at(2), { guest: 'acknowledged' }, 'the event the old process awaited is acked here');
    const r = await c2.changeMemory({ verb: 'add-ram', gpa: 0x6000_0000n, size: MiB, backend: 'memfd' });
    t.match(r.guest.events, [{ generation: 3, outcome: 'acked' }], 'and the next event follows it');
    d2.stop();
    c2.close();
    c.close();
    free();
  }
});

t.test('RAM the API added grows in place: the same address and file, its bytes kept; a refused grow gives the tail back', async (t) => {
  const { m, memory, listener, free } = machine();
  const c = new MachineControl(m);
  t.teardown(() => (c.close(), free()));
  const G = 0x4000_0000n;
  await c.changeMemory({ verb: 'add-ram', gpa: G, size: 2n * MiB, backend: 'memfd' });
  const before = memory.list().find((r) => r.gpa === G)!;
  memory.bytes(G, 2 * 1024 * 1024).fill(0x3c);
  const grow = await c.changeMemory({ verb: 'resize-ram', gpa: G, size: 6n * MiB });
  t.match(grow.done, /^grew ram@0x40000000 at 0x40000000 from 2 MiB to 6 MiB in place$/);
  const after = memory.list().find((r) => r.gpa === G)!;
  t.same([after.hva, after.file, after.size], [before.hva, before.file, 6n * MiB], 'the same address and file offset, longer');
  t.ok(
    memory.bytes(G, 2 * 1024 * 1024).every((b) => b === 0x3c),
    'what it held is still there',
  );
  t.ok(
    memory.bytes(G + 2n * MiB, 4 * 1024 * 1024).every((b) => b === 0),
    'the rest is new, zero',
  );

  listener.refuseNext = true;
  const refused = await c.changeMemory({ verb: 'resize-ram', gpa: G, size: 8n * MiB }).catch((e: ApiError) => e);
  t.match(refused, { status: 409, message: /over the budget/ }, 'a grow the planner refuses: a 409');
  t.same(names(memory), ['ram-low 0x0+0x400000', 'ram@0x40000000 0x40000000+0x600000'], 'refused: the map as it was');
  const again = await c.changeMemory({ verb: 'resize-ram', gpa: G, size: 8n * MiB });
  t.match(again.done, / in place$/, 'and the room is still there');

  await c.changeMemory({ verb: 'split-ram', gpa: G, at: G + 2n * MiB });
  const low = await c.changeMemory({ verb: 'resize-ram', gpa: G, size: 4n * MiB }).catch((e: ApiError) => e);
  t.match(low, { status: 409 }, 'the lower half cannot grow into its neighbour');
  const high = await c.changeMemory({ verb: 'resize-ram', gpa: G + 2n * MiB, size: 8n * MiB });
  t.match(high.done, / in place$/, 'the upper half, at the end of the backing, grows in place');
});
