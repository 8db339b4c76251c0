// What the control API tells the guest of memory changes, against the real
// mailbox and a guest driver simulated on its ports (polling as the test
// guest does): nothing without a driver; releases asked for regions it
// knows, and a refusal when none comes in time; added regions acknowledged,
// or told with no ack; late acks; a VM that stops mid-wait.
import t from 'tap';
import { ApiError } from '../../src/api/errors.js';
import { GuestHotplug } from '../../src/api/guest-hotplug.js';
import { MEM_HOTPLUG_ID, MEM_HOTPLUG_REG as R, MemHotplug } from '../../src/devices/mem-hotplug.js';
import type { MemoryRegion } from '../../src/memory/listener.js';
import { HotplugDriver } from '../support/hotplug-driver.js';

const MiB = 1n << 20n;
const region = (name: string, gpa: bigint, size: bigint): MemoryRegion => ({ name, gpa, size, hva: 0n, kind: 'ram' });
const low = region('ram-low', 0n, 64n * MiB);
const added = region('ram@0x40000000', 0x4000_0000n, 16n * MiB);

t.test('no driver: nothing waits and the guest is not told', async (t) => {
  const g = new GuestHotplug(new MemHotplug(), [low]);
  const n = g.notice();
  t.same(await g.release('vm.remove-ram', [low], n), []);
  await g.announce([added], n);
  t.same(n.report(g.waitMs), {
    told: false,
    acknowledged: false,
    events: [],
    note: 'not told: no guest driver claimed the memory-hotplug mailbox (port 0x5f0)',
  });
  t.equal(g.view(low), 'boot');
  t.equal(g.view(added), 'not told');
  t.match(g.info(), { port: '0x5f0', claimed: false, generation: 0, pending: null });
});

t.test('a driver that answers: added regions acknowledged, known ones released before they go', async (t) => {
  const dev = new MemHotplug();
  const d = new HotplugDriver(dev);
  t.teardown(() => d.stop());
  const g = new GuestHotplug(dev, [low]);
  const n = g.notice();
  await g.announce([added], n);
  t.equal(g.view(added), 'acknowledged');
  t.same(d.seen, [{ kind: 1, gpa: 0x4000_0000, size: 0x100_0000 }], 'the driver read the event whole');
  const r = n.report(g.waitMs);
  t.match(r, { told: true, acknowledged: true, events: [{ kind: 'added', name: 'ram@0x40000000', gpa: '0x40000000', outcome: 'acked' }] });
  t.match(r.note, /^the guest acknowledged ram@0x40000000 \[0x40000000, 0x41000000\) in \d+ ms$/);

  const n2 = g.notice();
  const stranger = region('ram@0x50000000', 0x5000_0000n, MiB);
  t.same(await g.release('vm.remove-ram', [stranger], n2), [], 'a region the guest was never told of is not asked about');
  t.same(await g.release('vm.remove-ram', [added], n2), [added]);
  t.match(n2.report(g.waitMs).note, /^the guest released ram@0x40000000 \[0x40000000, 0x41000000\) in \d+ ms$/);
  t.equal(d.seen.at(-1)?.kind, 2, 'remove requested');
  g.forget([added]);
  t.match(g.info(), { claimed: true, generation: 2, acked: 2, pending: null });
});

t.test('no release in time: a 409 that says so, nothing changed; a late release still counts', async (t) => {
  const dev = new MemHotplug();
  const d = new HotplugDriver(dev);
  t.teardown(() => d.stop());
  const g = new GuestHotplug(dev, [low, added], 50);
  d.answer = () => false;
  const n = g.notice();
  const err = await g.release('vm.remove-ram', [added], n).catch((e: unknown) => e);
  t.ok(err instanceof ApiError);
  t.match(err, {
    status: 409,
    message: 'vm.remove-ram: the guest did not release ram@0x40000000 [0x40000000, 0x41000000) in 0.05 s; nothing changed',
  });
  t.match(g.info(), { pending: { kind: 'remove-requested', gpa: '0x40000000', size: 16 << 20 } });
  t.equal(g.view(added), 'boot', 'still known to the guest');
  d.put(R.ACK, dev.generation);
  t.equal(g.view(added), 'not told', 'released after all: a later change need not ask');
  t.same(await g.release('vm.remove-ram', [added], g.notice()), []);
});

t.test('no ack of an added region: told, and acknowledged once a late ack comes', async (t) => {
  const dev = new MemHotplug();
  const d = new HotplugDriver(dev);
  t.teardown(() => d.stop());
  const g = new GuestHotplug(dev, [low], 50);
  d.answer = () => false;
  const n = g.notice();
  await g.announce([added], n);
  const r = n.report(g.waitMs);
  t.match(r, { told: true, acknowledged: false, events: [{ outcome: 'timeout' }] });
  t.match(r.note, /^the guest was told of ram@0x40000000 \[0x40000000, 0x41000000\) \(added\) but gave no ack within 0.05 s$/);
  t.equal(g.view(added), 'told');
  d.put(R.ACK, dev.generation);
  t.equal(g.view(added), 'acknowledged');
});

t.test('a VM that stops, or a driver that lets go, ends the wait', async (t) => {
  const dev = new MemHotplug();
  const d = new HotplugDriver(dev);
  t.teardown(() => d.stop());
  const g = new GuestHotplug(dev, [low, added]);
  d.answer = () => false;
  const stopping = g.release('vm.resize-ram', [added], g.notice());
  setTimeout(() => g.cancel(), 20);
  await t.rejects(stopping, { status: 409, message: 'vm.resize-ram: the VM is stopping; nothing changed' });
  const after = g.notice();
  await g.announce([added], after);
  t.match(after.events, [{ outcome: 'closed' }], 'after the stop no wait starts');

  const g2 = new GuestHotplug(dev, [low, added]);
  const letGo = g2.release('vm.move-ram', [added], g.notice());
  setTimeout(() => d.put(R.ID, 0), 20);
  await t.rejects(letGo, {
    status: 409,
    message:
      "vm.move-ram: the guest's driver let go of the memory-hotplug mailbox instead of releasing ram@0x40000000 [0x40000000, 0x41000000); nothing changed",
  });
  const n = g2.notice();
  await g2.announce([added], n);
  t.same(n.events, [], 'no driver any more: nothing posted');
});
