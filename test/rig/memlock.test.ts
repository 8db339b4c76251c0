// Locked-memory accounting with real kernels: two VMs of one user, each with
// its own VF and RLIMIT_MEMLOCK = RAM + 16 MiB. type1: both run. iommufd's
// default (per-user): the second is refused by Pinion's pre-flight with the
// precise line. Through the privileged opener (per-process): both run, as a
// plain uid with no capabilities. Two devices in one VM charge once; SIGKILL
// gives everything back.
import t from 'tap';
import { l1Json } from '../support/rig.js';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}
interface Charge {
  pid: number;
  vmLck: number;
  vmPin: number;
  capEff: string;
}
interface Out {
  type1: { started: boolean[]; charges: Charge[]; a: Run; b: Run; after: Charge[] };
  iommufdPerUser: {
    aStarted: boolean;
    aPid: number;
    refused: Run;
    chargesWithA: Charge[];
    killed: Run;
    afterKill: Charge[];
    bStarted: boolean;
    b: Run;
    after: Charge[];
  };
  opener: { started: boolean[]; charges: Charge[]; a: Run; b: Run; after: Charge[] };
  twoDevices: { started: boolean; charges: Charge[]; a: Run; after: Charge[] };
  openerLegacy: { started: boolean; charges: Charge[]; a: Run; after: Charge[] };
  status: {
    processes: { pid: number; uid: number; vmLckKiB: number; vmPinKiB: number; memlockSoftKiB: number }[];
    users: Record<string, { vmLckKiB: number; vmPinKiB: number; pids: number[] }>;
  };
}

const RAM_KIB = 65536;
const amounts = (cs: Charge[]): [number, number][] => cs.map((c) => [c.vmLck, c.vmPin]);

t.test('two VMs of one user, type1 kernel', async (t) => {
  const { result: o, run } = await l1Json<Out>('type1', 'memlock', [], { timeoutSec: 900 });
  t.equal(run.exitCode, 0, 'the L1 script ran to the end');

  t.test('type1: each VM charged to its own process; both run', async (t) => {
    t.same(o.type1.started, [true, true]);
    t.same(
      amounts(o.type1.charges),
      [
        [RAM_KIB, 0],
        [RAM_KIB, 0],
      ],
      'VmLck = RAM in each VMM',
    );
    for (const r of [o.type1.a, o.type1.b]) t.equal(r.status, 143, `stopped by SIGTERM (stderr: ${r.stderr.trim().split('\n').pop()})`);
    t.same(o.type1.after, [], 'nothing charged after');
  });

  t.test('iommufd per-user: the second VM is refused before it pins anything', async (t) => {
    const p = o.iommufdPerUser;
    t.ok(p.aStarted, 'the first VM runs');
    t.same(amounts(p.chargesWithA), [[0, RAM_KIB]], 'only the first VM holds pins (VmPin; user->locked_vm is not shown per process)');
    t.equal(p.refused.status, 1);
    t.equal(p.refused.stderr.trim().split('\n').length, 1, 'one line');
    t.match(
      p.refused.stderr,
      new RegExp(
        `^pinion: cannot pin 64 MiB of guest RAM for DMA \\(iommufd, per-user accounting\\): the kernel checks user 1000's total against this process's RLIMIT_MEMLOCK of 80 MiB, and user 1000 already holds 64 MiB \\(pid ${p.aPid}: 64 MiB\\); raise the limit to at least 128 MiB \\(prlimit --memlock=134217728\\), or run through the opener so each VM is charged on its own: pinion open --user 1000 --device 0000:01:10\\.2 -- pinion run `,
      ),
    );
    t.equal(p.refused.stdout, '', 'the guest never ran');
    t.equal(p.killed.status, 137, 'SIGKILL ends the first VMM');
    t.same(p.afterKill, [], 'and every counter is back to baseline');
    t.ok(p.bStarted, 'the second VM now fits');
    t.same(p.after, []);
  });

  t.test('through the opener: per-process accounting, both run unprivileged', async (t) => {
    const p = o.opener;
    t.same(p.started, [true, true]);
    t.same(
      amounts(p.charges),
      [
        [RAM_KIB, RAM_KIB],
        [RAM_KIB, RAM_KIB],
      ],
      'each VMM charged VmLck (its own limit) and VmPin',
    );
    t.ok(
      p.charges.every((c) => /^0+$/.test(c.capEff)),
      'the VMMs run with no capabilities',
    );
    const mine = o.status.processes.filter((x) => x.uid === 1000);
    t.same(
      mine.map((x) => [x.vmLckKiB, x.vmPinKiB, x.memlockSoftKiB]),
      [
        [RAM_KIB, RAM_KIB, 81920],
        [RAM_KIB, RAM_KIB, 81920],
      ],
      'pinion memlock status shows both VMMs with their limits',
    );
    t.same(o.status.users['1000'], { vmLckKiB: 2 * RAM_KIB, vmPinKiB: 2 * RAM_KIB, pids: mine.map((x) => x.pid) }, 'and the user total');
    for (const r of [p.a, p.b]) t.equal(r.status, 143, `stopped by SIGTERM (stderr: ${r.stderr.trim().split('\n').pop()})`);
    t.same(p.after, []);
  });

  t.test('the opener on the legacy path: container and group fds handed over', async (t) => {
    const p = o.openerLegacy;
    t.ok(p.started, `the VM runs (${p.a.stderr.trim().split('\n').pop()})`);
    t.same(amounts(p.charges), [[RAM_KIB, 0]], 'type1 charges the VMM process');
    t.ok(
      p.charges.every((c) => /^0+$/.test(c.capEff)),
      'with no capabilities',
    );
    t.match(p.a.stderr, /via the legacy container/);
    t.equal(p.a.status, 143);
    t.same(p.after, []);
  });

  t.test('two devices in one VM: one IOAS, RAM charged once', async (t) => {
    t.ok(o.twoDevices.started);
    t.same(amounts(o.twoDevices.charges), [[0, RAM_KIB]]);
    t.match(
      o.twoDevices.a.stderr,
      /assigned 0000:01:10\.0 at 00:01\.0 via iommufd[^\n]*\npinion: assigned 0000:01:10\.2 at 00:02\.0 via iommufd/,
    );
    t.same(o.twoDevices.after, []);
  });
});
