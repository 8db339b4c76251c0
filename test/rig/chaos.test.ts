// Hostile guests (the test guest's chaos mode, test/l1/chaos.ts): 20 seeds,
// one VM each on an igb VF, alternating iommufd and the legacy container,
// each writing all over config space, moving BARs onto RAM, each other and
// the MSI window, filling the MSI-X table with garbage, hammering trapped
// ranges and unclaimed ports, pointing the NIC's rings at unmapped, MMIO and
// out-of-range IOVAs and storming interrupts. Pinion keeps running (and
// stops cleanly when told, its guest still going) or stops with one line;
// nothing stays pinned;
// each next VM finds the function usable; a second VM on another VF keeps
// its traffic; L1's kernel logs no warning.
// L1 runs on one TCG thread, as for the two-VM test (README, Two VMs of
// one user).
import t from 'tap';
import type { SeedRun } from '../l1/chaos.js';
import type { Run } from '../l1/pinion.js';
import type { StreamFrames } from '../l1/stream-vm.js';
import { l1Json } from '../support/rig.js';

interface Out {
  seeds: SeedRun[];
  error?: string;
  baseline: number;
  after: Run;
  bystander: { frames: StreamFrames; status: number | null; done: Record<string, number> | null; console: string; vmmStderr: string };
  kernelWarnings: string[];
  dmarFaults: number;
  pinnedEnd: number;
  peerMs: number;
}

t.test('hostile guests on an assigned VF, 20 seeds, a bystander VM streaming beside them (type1 kernel)', async (t) => {
  const { result: o, run } = await l1Json<Out>('type1', 'chaos', ['20', '1'], { timeoutSec: 1500, singleThreadTcg: true });
  t.equal(run.exitCode, 0, 'the L1 script ran to the end');
  t.equal(o.error, undefined, 'the bystander got its VF going');
  t.equal(o.seeds.length, 20, '20 seeds');
  for (const s of o.seeds) {
    const lines = s.stderr.trim() ? s.stderr.trim().split('\n') : [];
    const how = s.stopped ? 'still running at the limit, then SIGTERM' : (s.done ?? `exit ${s.status ?? s.signal}`);
    t.comment(`seed ${s.seed}: ${how} in ${s.ms} ms; ${lines.at(-1) ?? '(no stderr)'}`);
    t.ok(s.nicUp, `seed ${s.seed}: the guest brought the NIC up first (the VM before left the function usable)`);
    t.equal(s.signal, null, `seed ${s.seed}: Pinion exited by itself (${s.signal ?? 'no signal'})`);
    t.notOk(
      lines.some((l) => /^\s+at |FATAL|Error: |node:internal|napi_/.test(l)),
      `seed ${s.seed}: no stack trace or abort on stderr`,
    );
    t.ok(
      lines.every((l) => l.startsWith('pinion: ')),
      `seed ${s.seed}: every stderr line is one of Pinion's own`,
    );
    // A SIGTERM that came as the guest got to the end finds the VM ended: absorbed, the guest's 0 stands.
    if (s.stopped && !(s.done && s.status === 0)) {
      // No vCPU held by the VMM: the guest's loop never waits, so a quiet guest is a stuck vCPU.
      t.ok(
        s.ops >= 100 && (s.quietMs ?? Infinity) < 15_000,
        `seed ${s.seed}: still going at the limit (ops=${s.ops}, its last ops line ${s.quietMs} ms before SIGTERM)`,
      );
      t.equal(lines.at(-1), 'pinion: VM stopped: signal SIGTERM', `seed ${s.seed}: SIGTERM stops the VM, said in one line`);
      t.equal(s.status, 143, `seed ${s.seed}: with 143`);
    } else if (s.done)
      t.equal(s.status, 0, `seed ${s.seed}: the guest got to the end and exited 0${s.stopped ? ' (the SIGTERM at its end absorbed)' : ''}`);
    else
      t.ok(
        /^pinion: guest /.test(lines.at(-1) ?? '') || /^pinion-guest: exit \d+$/m.test(s.stdoutTail),
        `seed ${s.seed}: the guest's end said in one line (${lines.at(-1) ?? s.stdoutTail.split('\n').at(-1)})`,
      );
    t.equal(s.pinnedAfter, o.baseline, `seed ${s.seed}: nothing left pinned (L1-wide VmLck+VmPin back to the bystander's)`);
  }
  t.comment(
    `${o.seeds.filter((s) => s.done).length} of 20 seeds got to the end of their acts; ${o.seeds.reduce((n, s) => n + Number(/ ops=(\d+)/.exec(s.done ?? '')?.[1] ?? s.ops), 0)} acts in all`,
  );
  t.equal(o.after.status, 0, `after them, the VF test passes on the same VF: ${o.after.stderr.trim().split('\n').at(-1)}`);
  t.ok(
    o.seeds.every((s) => s.peerRunning),
    'the peer was sending to the bystander through every seed',
  );
  const f = o.bystander.frames;
  t.same([f.received, f.lost], [f.sent, 0], `the bystander received every one of the peer's ${f.sent} frames`);
  t.equal(o.bystander.done?.bad, 0, 'with their bytes');
  t.equal(o.bystander.status, 0, 'and exited 0 after the stop frame', {
    diagnostic: o.bystander.status !== 0,
    ctx: `console:\n${o.bystander.console}\nstderr:\n${o.bystander.vmmStderr.split('\n').slice(-12).join('\n')}`,
  });
  t.same(o.kernelWarnings, [], "no warning, BUG or oops in L1's log");
  t.comment(`${o.dmarFaults} IOMMU fault lines in L1's log (the rings pointed at unmapped IOVAs)`);
  t.equal(o.pinnedEnd, 0, 'nothing pinned in L1 at the end');
});
