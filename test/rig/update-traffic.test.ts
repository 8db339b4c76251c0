// Live update of a VM with an assigned igb VF while its test guest streams
// frames (test/l1/update-traffic.ts): the control API hands the VM to a new
// Pinion process several times in a row, on the legacy type1 path (VADDR
// invalidate, then re-map in the new process) and on iommufd (RAM mapped by
// file, IOMMU_IOAS_CHANGE_PROCESS in the new process). Each update answers
// with its pause; the charge moves to the new process and leaves the old
// one; no frame of the peer's is lost or wrong, the IOMMU logs no fault, and
// once the last process has ended nothing is open or pinned. The compat
// kernel's container cannot do it and the update is refused up front.
import t, { type Test } from 'tap';
import { l1Json } from '../support/rig.js';

interface Charge {
  at: string;
  pid: number;
  vmLckKiB: number;
  vmPinKiB: number;
}

interface Update {
  i: number;
  fault?: string;
  pidBefore?: number;
  pidAfter?: number;
  status?: number;
  error?: string;
  from?: number;
  to?: number;
  pauseMs?: number;
  /** The guest's gap around the TSC the VMM read in the pause, in ms; null if none. */
  guestPauseMs?: number | null;
  /** Every gap it clocked meanwhile, in ms. */
  guestGaps?: number[];
  guestSplit?: { beforeSaveMs: number; afterSaveMs: number } | null;
  steps?: { step: string; ms: number }[];
  charge?: Charge[];
  counters: { before: Counters; after: Counters };
  /** Set when the VM's socket was gone before this update: why, whether the peer had ended, what the VMM printed. */
  gone?: string;
  peerEnded?: boolean;
  vmmStderr?: string;
}

interface Counters {
  rx?: number;
  lost?: number;
  bad?: number;
  irqs?: number;
  raised?: number;
}

interface Out {
  iommu: string;
  ram: number;
  updates: number;
  error?: string;
  flowing: boolean;
  updateList: Update[];
  faults: Update[];
  afterFaults?: Update;
  peerRunningAfterUpdates: boolean;
  end: {
    done: boolean;
    lastGone: boolean;
    totals: Record<string, number> | null;
    peerMs: number;
    peerRx: number;
    vmmStderr: string;
    console: string;
  };
  after: { pinnedKiB: number; holders: string[]; driver: string };
  dmarFaults: string[];
  kernelWarnings: string[];
  frames: number;
}

const ALL_UPDATES = 4;
// Every fault point of the new process (src/update/faults.ts), in step order, killed and refused in turn.
// And one started under an RLIMIT_MEMLOCK that cannot hold the VM's RAM: its pre-flight refuses at prepare;
// then the same without its pre-flight, so the kernel's own charge refuses at restore (type1's VADDR re-map part
// way, iommufd's CHANGE_PROCESS) and the old process takes back what had moved.
const ALL_FAULTS = ['kill:start', 'refuse:prepare', 'kill:ready', 'refuse:restore', 'kill:restored', 'memlock:16', 'unchecked:16'];

/** Across an update (or a failed one): no frame lost, frames and MSI-X heartbeats still arriving. */
function flowed(t: Test, u: Update, what: string): void {
  const { before: b, after: a } = u.counters;
  t.equal(a.lost, b.lost, `${what}: no frame lost across it`);
  t.ok((a.rx ?? 0) > (b.rx ?? 0), `${what}: frames kept arriving`);
  t.ok((a.irqs ?? 0) > (b.irqs ?? 0), `${what}: MSI-X heartbeats kept arriving (${b.irqs} -> ${a.irqs})`);
}

t.test('live update refused up front when per-user iommufd accounting cannot hold the pins twice (type1 kernel)', async (t) => {
  // RAM + 32 MiB: the VM runs, but CHANGE_PROCESS would charge its 64 MiB again to the same user.
  const { result: o, run } = await l1Json<Out>('type1', 'update-traffic', ['iommufd', '1', '1000', '10', '', '64', '96'], {
    timeoutSec: 600,
  });
  t.equal(run.exitCode, 0, 'the L1 script ran to the end');
  t.equal(o.error, undefined, 'the guest got its VF going');
  const u = o.updateList[0];
  t.equal(u?.status, 409, 'refused');
  t.match(
    u?.error,
    /^live update refused: iommufd charges this VM's 64 MiB of pins to its user, and IOMMU_IOAS_CHANGE_PROCESS charges them to the new process before it uncharges this one: the update needs 128 MiB of the user's limit, and has 96 MiB \(.*\); raise RLIMIT_MEMLOCK \(prlimit --memlock\) or start the VM under pinion open \(per-process accounting\); the VM is untouched$/,
  );
  t.equal(u?.pidAfter, u?.pidBefore, 'the VM runs on in the same process');
  t.equal(o.end.totals?.lost, 0, 'no frame lost');
  t.equal(o.after.pinnedKiB, 0, 'nothing pinned afterwards');
});

// Per user on iommufd unless `opener`: pinion open's iommufd charges per process (IOMMU_OPTION_RLIMIT_MODE),
// where CHANGE_PROCESS moves the pins to the new process's own limit; two updates and one failure there.
for (const [kernel, iommu, how] of [
  ['type1', 'legacy', 'user'],
  ['type1', 'iommufd', 'user'],
  ['type1', 'iommufd', 'opener'],
  ['compat', 'iommufd', 'user'],
  ['compat', 'legacy', 'user'],
] as const) {
  const refused = kernel === 'compat' && iommu === 'legacy';
  const opener = how === 'opener';
  const UPDATES = opener ? 2 : ALL_UPDATES;
  const FAULTS = opener ? ['kill:restored'] : ALL_FAULTS;
  const name = `${iommu}${opener ? ' under pinion open (per process)' : ''} (${kernel} kernel)`;
  t.test(`live update under a frame stream: ${name}${refused ? ', refused' : ''}`, async (t) => {
    // 20 ms a frame: the guest's 128 RX descriptors hold 2.56 s. At 10 ms (1.28 s) a 513 ms pause in CI still
    // lost 4 frames, the guest's vCPU starved around it as well; 13000 frames (260 s) bound the stream, which the
    // L1 script stops 5 s after the last update.
    const frames = refused ? 1000 : opener ? 5000 : 13000;
    const args = [iommu, String(refused ? 1 : UPDATES), String(frames), '20', refused ? '' : FAULTS.join(','), '', '', how];
    const { result: o, run } = await l1Json<Out>(kernel, 'update-traffic', args, {
      timeoutSec: 900,
    });
    t.equal(run.exitCode, 0, 'the L1 script ran to the end');
    t.equal(o.error, undefined, 'the guest got its VF going');
    t.ok(o.flowing, 'frames reached the guest before the first update');
    const list = o.updateList;
    if (refused) {
      t.equal(list.length, 1);
      t.equal(list[0]!.status, 409, 'refused');
      t.match(
        list[0]!.error,
        /^live update refused: the DMA space is the iommufd compat container .*refuses VFIO_DMA_MAP_FLAG_VADDR; use --iommu iommufd.*; the VM is untouched$/,
      );
    } else {
      t.ok(o.peerRunningAfterUpdates, 'every update was made while the peer was still sending');
      t.equal(list.length, UPDATES, `${UPDATES} updates in a row`);
      const kib = o.ram / 1024;
      const field = iommu === 'legacy' ? 'vmLckKiB' : 'vmPinKiB';
      for (const u of list) {
        t.comment(
          `update ${u.i}: HTTP ${u.status} pid ${u.from} -> ${u.to}, pause ${u.pauseMs} ms [${(u.steps ?? []).map((s) => `${s.step} ${s.ms}`).join(', ')}]; ${(u.charge ?? []).map((c) => `${c.at} ${c.pid} VmLck ${c.vmLckKiB} VmPin ${c.vmPinKiB}`).join('; ')}`,
        );
        t.equal(u.status, 200, `update ${u.i}: ${u.error ?? 'handed over'}`);
        if (u.status !== 200) continue;
        t.not(u.to, u.from, `update ${u.i}: a new process runs the VM`);
        const at = (name: string): Charge | undefined => u.charge?.find((c) => c.at === name);
        t.ok((at('old: before')?.[field] ?? 0) >= kib, `update ${u.i}: the old process held the RAM's charge (${field})`);
        t.ok((at('new: running')?.[field] ?? 0) >= kib, `update ${u.i}: the new process holds it once it runs`);
        t.equal(at('old: handed over')?.[field], 0, `update ${u.i}: and the old one holds none`);
        flowed(t, u, `update ${u.i}`);
        // The guest's own clock of the pause, reported and not asserted: one update in CI showed no gap around the
        // pause at all (likely L1's TSC under TCG marked unstable, and KVM re-basing the vCPU's TSC when loaded).
        t.comment(
          `update ${u.i}: the guest's own clock: ${u.guestPauseMs === null ? 'no gap around the pause' : `a pause of ${u.guestPauseMs} ms, ${u.guestSplit?.beforeSaveMs} before the VMM's save and ${u.guestSplit?.afterSaveMs} after it`} (the VMM's pause ${u.pauseMs} ms; every gap it clocked: ${u.guestGaps?.join(', ')} ms)`,
        );
      }
      const pauses = list.map((u) => u.pauseMs ?? NaN);
      t.comment(`pauses (ms): ${pauses.join(', ')}`);
      // The new process fails after the good updates, at each of its steps.
      t.same(
        o.faults.map((f) => f.fault),
        FAULTS,
        'each failing update was tried',
      );
      for (const f of o.faults) {
        const what = `failing update (${f.fault})`;
        t.comment(`${what}: HTTP ${f.status}: ${f.error}`);
        if (f.gone) t.comment(`the VM's process was gone before it (${f.gone}); peer ended: ${f.peerEnded}; VMM stderr:\n${f.vmmStderr}`);
        t.equal(f.gone, undefined, `${what}: the VM's process was there to ask`);
        t.equal(f.status, 500, `${what}: answered 500`);
        t.match(f.error, new RegExp(`the VM runs on in pid ${f.pidBefore}$`), `${what}: rolled back`);
        if (f.fault?.startsWith('memlock:'))
          t.match(
            f.error,
            /^live update failed at prepare .*: cannot pin 64 MiB of guest RAM for DMA .*RLIMIT_MEMLOCK/,
            `${what}: the new process's own pre-flight refused before the pause`,
          );
        if (f.fault?.startsWith('unchecked:'))
          t.match(
            f.error,
            iommu === 'legacy'
              ? /refused at restore: VFIO_IOMMU_MAP_DMA\(VADDR\) failed: ENOMEM \(iova 0x[0-9a-f]+, size 0x[0-9a-f]+, path \/dev\/vfio\/vfio\)/
              : /refused at restore: IOMMU_IOAS_CHANGE_PROCESS failed: ENOMEM \(path \/dev\/iommu\)/,
            `${what}: the kernel's own charge refused the hand-over`,
          );
        t.equal(f.pidAfter, f.pidBefore, `${what}: the same process runs the VM`);
        flowed(t, f, what);
      }
      const a = o.afterFaults;
      t.equal(a?.status, 200, `and an update after them goes through: ${a?.error ?? `pid ${a?.from} -> ${a?.to}`}`);
      if (a) flowed(t, a, 'the update after the failures');
    }
    const d = o.end.totals;
    if (!refused) {
      t.ok((d?.irqs ?? 0) > 0, `the NIC's MSI-X heartbeat reached the guest ${d?.irqs} times`);
      t.ok(
        (d?.raised ?? 0) - (d?.irqs ?? 0) <= 1,
        `every heartbeat raised arrived (${d?.irqs} of ${d?.raised}; the last may be in flight)`,
      );
    }
    t.ok(o.end.done, 'the guest ended on the stop frame');
    t.ok(o.end.lastGone, 'the last VMM process exited');
    t.same(
      [d?.rx, d?.first, d?.last, d?.lost],
      [o.frames, 0, o.frames - 1, 0],
      `every one of the peer's ${o.frames} frames received, in order`,
    );
    t.equal(d?.bad, 0, 'no frame with wrong bytes');
    t.ok((d?.tx ?? 0) > 0 && d?.txerr === 0, `the guest sent ${d?.tx} frames`);
    t.ok(o.end.peerRx >= (d?.tx ?? 0), `the peer received them (${o.end.peerRx} frames)`);
    t.same(o.dmarFaults, [], 'no DMA fault logged in L1');
    t.same(o.kernelWarnings, [], 'no kernel WARN, BUG or oops in L1');
    t.equal(o.after.pinnedKiB, 0, 'nothing locked or pinned in L1 afterwards');
    t.same(o.after.holders, [], 'no VFIO or iommufd node open afterwards');
    t.equal(o.after.driver, 'vfio-pci', 'the VF is still on vfio-pci');
    if (!o.end.done || d?.lost !== 0) t.comment(`VMM stderr:\n${o.end.vmmStderr}\nconsole:\n${o.end.console}`);
  });
}
