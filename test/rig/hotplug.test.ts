// The memory-hotplug mailbox against real nested KVM, no device: a test
// guest with a driver is told of RAM added below and above 4 GiB (it writes
// and reads back a pattern over each, so the memslots are really there),
// releases RAM before it is removed, keeps its boot RAM (a 409 after the
// bound, nothing changed), and exits after its last event; a guest without a
// driver is not told and nothing waits. The L1 side is test/l1/hotplug.ts.
import t from 'tap';
import { l1Json } from '../support/rig.js';
import type { ChangeResult, MemoryMapInfo, VmInfo } from '../../src/api/routes.js';

interface Call<T> {
  status: number;
  ms: number;
  body: T & { error?: string };
}
interface Out {
  claimed: boolean;
  withDriver: {
    steps: {
      infoBefore: Call<VmInfo>;
      addLow: Call<ChangeResult>;
      addHigh: Call<ChangeResult>;
      removeLow: Call<ChangeResult>;
      memoryBeforeSplit: Call<MemoryMapInfo>;
      splitBoot: Call<ChangeResult>;
      memoryAfterSplit: Call<MemoryMapInfo>;
      removeHigh: Call<ChangeResult>;
    };
    end: { status: number | null; stderr: string };
    console: string;
  };
  noDriver: { add: Call<ChangeResult>; remove: Call<ChangeResult>; info: Call<VmInfo>; end: { status: number | null } };
}

const lines = (console: string): string[] => console.split('\n').filter((l) => l.startsWith('pinion-guest: hotplug: '));

t.test('memory hotplug told to the test guest (type1 kernel, nested KVM)', async (t) => {
  const { result: o, run } = await l1Json<Out>('type1', 'hotplug', [], { timeoutSec: 600 });
  t.equal(run.exitCode, 0, 'the L1 script ran to the end');
  t.ok(o.claimed, 'the guest claimed the mailbox');
  const s = o.withDriver.steps;
  t.match(s.infoBefore.body.memory.hotplug, { port: '0x5f0', claimed: true, generation: 0 }, 'info says a driver holds it');

  for (const [k, gpa, size] of [
    ['addLow', '0x40000000', 1 << 20],
    ['addHigh', '0x100000000', 256 << 10],
  ] as const) {
    const r = s[k];
    t.equal(r.status, 200, `${k}: done`);
    t.match(
      r.body.guest,
      { told: true, acknowledged: true, events: [{ kind: 'added', gpa, size, outcome: 'acked' }] },
      `${k}: acknowledged`,
    );
    t.match(
      r.body.memory.regions.find((x) => x.gpa === gpa),
      { guest: 'acknowledged' },
    );
  }
  t.match(s.removeLow.body.guest, { acknowledged: true, events: [{ kind: 'remove-requested', gpa: '0x40000000', outcome: 'acked' }] });
  t.notOk(
    s.removeLow.body.memory.regions.some((x) => x.gpa === '0x40000000'),
    'removed once released',
  );

  t.equal(s.splitBoot.status, 409, 'the guest keeps its boot RAM: the split is refused');
  t.equal(s.splitBoot.body.error, 'vm.split-ram: the guest did not release ram-low [0x0, 0x4000000) in 10 s; nothing changed');
  t.ok(s.splitBoot.ms >= 10_000 && s.splitBoot.ms < 20_000, `after the 10 s bound (${s.splitBoot.ms} ms)`);
  t.same(s.memoryAfterSplit.body.regions, s.memoryBeforeSplit.body.regions, 'the map is unchanged');
  t.match(s.removeHigh.body.guest, { acknowledged: true });

  t.same(
    lines(o.withDriver.console),
    [
      'pinion-guest: hotplug: mailbox claimed, waiting for 5 event(s)',
      'pinion-guest: hotplug: added 0x40000000+0x100000: pattern ok',
      'pinion-guest: hotplug: added 0x100000000+0x40000: pattern ok',
      'pinion-guest: hotplug: released 0x40000000+0x100000',
      'pinion-guest: hotplug: not releasing 0x0+0x4000000: boot RAM holds this guest',
      'pinion-guest: hotplug: released 0x100000000+0x40000',
    ],
    "the guest's side: each pattern written and read back, each release",
  );
  t.equal(o.withDriver.end.status, 0, 'the guest exited 0 after its fifth event');

  const n = o.noDriver;
  for (const k of ['add', 'remove'] as const) {
    t.equal(n[k].status, 200, `no driver: ${k} done`);
    t.same(
      [n[k].body.guest.told, n[k].body.guest.note],
      [false, 'not told: no guest driver claimed the memory-hotplug mailbox (port 0x5f0)'],
      `no driver: ${k} not told`,
    );
    t.ok(n[k].ms < 5000, `no driver: ${k} waited on nothing (${n[k].ms} ms)`);
  }
  t.match(n.info.body.memory.hotplug, { claimed: false, generation: 0 });
  t.equal(n.end.status, 0, 'stopped through the API');
});
