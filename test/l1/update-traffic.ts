// Runs in L1 as root: live updates of a VM with an assigned igb VF while its
// test guest streams frames (its stream mode). L1's peer igb sends a
// numbered frame every INTERVAL_MS (default 10: the guest's 128 RX
// descriptors hold 1.28 s of frames, several pauses' worth); meanwhile the
// control API hands the VM to a new Pinion process UPDATES times in a row, each update timed with its
// steps and the VmLck/VmPin of both processes; the stream stops 5 s after
// the last one (FRAMES only bounds it). At the end: the frames the
// peer sent against those the guest received (bytes checked by the guest),
// L1's DMAR faults, and nothing left open or pinned once the last process
// has ended.
//
//   update-traffic.js legacy|iommufd [UPDATES] [FRAMES] [INTERVAL_MS] [FAULT,...] [RAM_MIB] [LIMIT_MIB] [user|opener]
//
// After the updates, one update per FAULT (a PINION_UPDATE_FAULT of the new
// process, by default killed once it took the DMA space and interrupts,
// refusing the state, killed before the pause; or memlock:MIB, the new
// process under that RLIMIT_MEMLOCK; or unchecked:MIB, the same without its
// pre-flight, so the kernel refuses), each of which the old process must
// survive with the stream going on, then one more that works.
//
// The VMM runs as uid 1000 under an RLIMIT_MEMLOCK: RAM + 32 MiB on the
// legacy path (type1 charges each process, and moves the charge at the VADDR
// re-map), twice that on iommufd (per user: IOMMU_IOAS_CHANGE_PROCESS
// charges the new process before it uncharges the old). `opener`: the VM is
// started by pinion open, whose iommufd charges per process
// (IOMMU_OPTION_RLIMIT_MODE), so RAM + 32 MiB on iommufd too. Prints one JSON
// object for test/rig/update-traffic.test.ts.
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { assignablePf } from '../../rig/l1/sysfs.js';
import { call } from '../../src/cli/ctl.js';
import type { UpdateReport } from '../../src/update/outgoing.js';
import { CLI, pinnedKiB, progress, vfioHolders } from './pinion.js';
import { dmarFaults, dmesg, kernelWarnings, MiB, netdev, Peer, sleep, StreamVm, streamVfs } from './stream-vm.js';

const [iommu = 'iommufd', updatesArg, framesArg, intervalArg, faultsArg, ramArg, limitArg, howArg = 'user'] = process.argv.slice(2);
if (!['legacy', 'iommufd'].includes(iommu) || !['user', 'opener'].includes(howArg))
  throw new Error(
    'usage: update-traffic.js legacy|iommufd [UPDATES] [FRAMES] [INTERVAL_MS] [FAULT,...] [RAM_MIB] [LIMIT_MIB] [user|opener]',
  );
const how = howArg as 'user' | 'opener';
const UPDATES = Number(updatesArg ?? 5);
const FRAMES = Number(framesArg ?? 10000);
const INTERVAL_MS = Number(intervalArg ?? 10);
/** PINION_UPDATE_FAULT values (src/update/faults.ts) for the failing updates after the good ones. */
const FAULTS = (faultsArg ?? 'kill:restored,refuse:restore,kill:ready').split(',').filter(Boolean);
const RAM = Number(ramArg || 64) * MiB;
// LIMIT_MIB overrides it (a per-user limit too small for the update, which must be refused up front).
const perProcess = iommu === 'legacy' || how === 'opener';
const LIMIT = limitArg ? Number(limitArg) * MiB : perProcess ? RAM + 32 * MiB : 2 * RAM + 32 * MiB;

const pf = assignablePf().bdf;
const [vf] = streamVfs(pf, 1);
// The PF answers its VFs' mailbox once its link is up.
const operstate = (): string => readFileSync(`/sys/bus/pci/devices/${pf}/net/${netdev(pf)}/operstate`, 'utf8').trim();
for (let t0 = Date.now(); operstate() !== 'up' && Date.now() - t0 < 30_000;) await sleep(200);
progress(`PF ${pf} link ${operstate()}`);
const peer = new Peer();
const dmesgBefore = dmesg().length;
const vm = new StreamVm({ name: 'update', iommu, how, vf: vf!.bdf, limit: LIMIT, memory: `${RAM / MiB}M`, heartbeat: true });
const out: Record<string, unknown> = {
  iommu,
  how,
  vf: vf!.bdf,
  updates: UPDATES,
  frames: FRAMES,
  intervalMs: INTERVAL_MS,
  ram: RAM,
  limit: LIMIT,
};
const text = (): string => vm.consoleText();
const waitFor = async (ok: () => boolean, ms: number): Promise<boolean> => {
  const t0 = Date.now();
  while (!ok() && Date.now() - t0 < ms) await sleep(100);
  return ok();
};

if (!(await vm.ready(180_000))) {
  vm.kill();
  out.error = `the guest did not get its NIC going; VMM exit ${await vm.end}`;
  console.log(JSON.stringify({ ...out, vmmStderr: vm.stderr, console: text() }));
  process.exit(0);
}
peer.send(INTERVAL_MS, FRAMES);
out.flowing = await waitFor(() => (vm.counters()?.rx ?? 0) > 0, 30_000);

/** The guest's MSI-X heartbeats from its last status line: delivered and raised. */
const heartbeats = (): { irqs: number; raised: number } | null => {
  const m = [...text().matchAll(/stream: rx=\d+ .* irqs=(\d+) raised=(\d+)/g)].at(-1);
  return m ? { irqs: +m[1]!, raised: +m[2]! } : null;
};
/** The gaps the guest clocked (TSC ticks and the TSC at the end), from the `n`th on. */
const gapsFrom = (n: number): { ticks: bigint; end: bigint }[] =>
  [...text().matchAll(/stream: gap ticks=(\d+) end=(\d+)/g)].slice(n).map((m) => ({ ticks: BigInt(m[1]!), end: BigInt(m[2]!) }));
/**
 * The new process's command for `fault`: `memlock:MIB` starts it under an RLIMIT_MEMLOCK of MIB (its
 * own pre-flight must refuse before the pause); `unchecked:MIB` the same with no pre-flight, so the kernel's
 * charge refuses at restore; anything else is a PINION_UPDATE_FAULT (src/update/faults.ts).
 */
const newProcess = (fault: string): string => {
  const cli = `${process.execPath} ${CLI}`;
  const m = /^(memlock|unchecked):(\d+)$/.exec(fault);
  if (!m) return `env PINION_UPDATE_FAULT=${fault} ${cli}`;
  const limit = `prlimit --memlock=${Number(m[2]) * MiB}:${Number(m[2]) * MiB}`;
  return m[1] === 'memlock' ? `${limit} ${cli}` : `${limit} env PINION_UPDATE_FAULT=unchecked ${cli}`;
};
const vmPid = async (): Promise<number> => ((await call(vm.socket, 'GET', '/api/v1/vm.info')).body as { pid: number }).pid;

/** One vm.update (with `fault`, a new process that fails on purpose: newProcess), and the guest's counters on each side. */
async function update(i: number, fault?: string): Promise<Record<string, unknown> & { status?: number; to?: number }> {
  const to = fault === undefined ? undefined : newProcess(fault);
  const before = { ...vm.counters(), ...heartbeats() };
  const gapsBefore = gapsFrom(0).length;
  const t0 = Date.now();
  let r: { status: number; body: unknown };
  let pidBefore: number;
  try {
    pidBefore = await vmPid();
    r = await call(vm.socket, 'PUT', '/api/v1/vm.update', to ? { to } : undefined);
  } catch (e) {
    // The VM's process is gone (its socket with it): say so, and keep what it printed.
    return { i, ...(fault ? { fault } : {}), gone: (e as Error).message, peerEnded: peer.ended, vmmStderr: vm.stderr.slice(-4000) };
  }
  const b = r.body as UpdateReport & { error?: string };
  progress(`update ${i}${to ? ` (${to})` : ''}: ${r.status} ${b.error ?? `pid ${b.from} -> ${b.to}, pause ${b.pauseMs} ms`}`);
  // The guest prints its counters about once a second: one from after the update.
  await sleep(2500);
  const after = { ...vm.counters(), ...heartbeats() };
  // The pause as the guest's own clock saw it: the turn of its loop around the TSC the VMM read in the pause
  // (other gaps meanwhile are the guest's vCPU starved while the new process loads), in ms at its TSC rate.
  const gaps = gapsFrom(gapsBefore);
  const tsc = b.guestTsc ? BigInt(b.guestTsc) : undefined;
  const pause = tsc === undefined ? undefined : gaps.find((g) => g.end - g.ticks <= tsc && tsc <= g.end);
  const ms = (ticks: bigint): number => (b.tscKhz ? Math.round((Number(ticks) / b.tscKhz) * 10) / 10 : 0);
  const guestPauseMs = b.tscKhz && pause ? ms(pause.ticks) : null;
  // Split at the TSC read: how long the guest had been off its vCPU before the save, and how long after it until it ran.
  const guestSplit =
    tsc !== undefined && pause ? { beforeSaveMs: ms(tsc - (pause.end - pause.ticks)), afterSaveMs: ms(pause.end - tsc) } : null;
  return {
    i,
    ...(fault ? { fault } : {}),
    status: r.status,
    ms: Date.now() - t0,
    ...b,
    pidBefore,
    pidAfter: await vmPid().catch((e: Error) => `gone: ${e.message}`),
    counters: { before, after },
    guestGaps: gaps.map((g) => ms(g.ticks)),
    guestPauseMs,
    guestSplit,
  };
}

const updates: Record<string, unknown>[] = [];
let pid: number | undefined;
for (let i = 0; i < UPDATES && !peer.ended; i++) {
  const u = await update(i);
  updates.push(u);
  if (u.status !== 200) break;
  pid = u.to;
}
out.updateList = updates;
// New processes that fail on purpose: the old one takes the VM back each time.
const faults: Record<string, unknown>[] = [];
for (const f of FAULTS) {
  if (peer.ended || updates.at(-1)?.status !== 200) break;
  const u = await update(faults.length, f);
  faults.push(u);
  if (u.gone) break;
}
out.faults = faults;
// And after them an update that goes through.
if (FAULTS.length && !peer.ended && !faults.at(-1)?.gone) {
  const u = await update(UPDATES);
  out.afterFaults = u;
  if (u.status === 200) pid = u.to;
}
out.peerRunningAfterUpdates = !peer.ended;

// FRAMES bounds the stream; it stops 5 s after the updates (frames into the last process).
const peerMs = await peer.stop();
out.frames = peer.sent;
// The guest ends on the peer's stop frame; the last process then exits.
const done = await waitFor(() => /stream: done/.test(text()), 90_000);
const alive = (p: number): boolean => existsSync(`/proc/${p}`);
const lastGone = pid === undefined ? await vm.end.then(() => true) : await waitFor(() => !alive(pid!), 30_000);
if (!done || !lastGone) {
  vm.kill();
  if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
}
await sleep(500);
const doneLine = /stream: done (.*)/.exec(text())?.[1];
const totals = doneLine ? Object.fromEntries(doneLine.split(' ').map((kv) => [kv.split('=')[0]!, Number(kv.split('=')[1])])) : null;
out.end = {
  done,
  heartbeats: heartbeats(),
  lastGone,
  totals,
  peerMs,
  peerRx: peer.received(),
  vmmStderr: vm.stderr.slice(-4000),
  console: text().split('\n').slice(-30).join('\n'),
};
out.after = {
  pinnedKiB: pinnedKiB(),
  holders: vfioHolders(),
  driver: readlinkSync(`/sys/bus/pci/devices/${vf!.bdf}/driver`).split('/').pop(),
};
const log = dmesg().slice(dmesgBefore - 1);
out.dmarFaults = dmarFaults(log);
out.kernelWarnings = kernelWarnings(log);
console.log(JSON.stringify(out));
