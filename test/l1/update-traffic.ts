// Runs in L1 as root: live updates of a VM with an assigned igb VF while its
// test guest streams frames (its stream mode). L1's peer igb sends a
// numbered frame every INTERVAL_MS (default 10: the guest's 128 RX
// descriptors hold 1.28 s of frames, several pauses' worth); meanwhile the
// control API hands the VM to a new Pinion process UPDATES times in a row, each update timed with its
// steps and the VmLck/VmPin of both processes. At the end: the frames the
// peer sent against those the guest received (bytes checked by the guest),
// L1's DMAR faults, and nothing left open or pinned once the last process
// has ended.
//
//   update-traffic.js legacy|iommufd [UPDATES] [FRAMES] [INTERVAL_MS] [FAULT,...] [RAM_MIB] [LIMIT_MIB]
//
// After the updates, one update per FAULT (PINION_UPDATE_FAULT of the new
// process: by default killed once it took the DMA space and interrupts,
// refusing the state, killed before the pause), each of which the old
// process must survive with the stream going on, then one more that works.
//
// The VMM runs as uid 1000 under an RLIMIT_MEMLOCK: RAM + 32 MiB on the
// legacy path (type1 charges each process, and moves the charge at the VADDR
// re-map), twice that on iommufd (per user: IOMMU_IOAS_CHANGE_PROCESS
// charges the new process before it uncharges the old). Prints one JSON
// object for test/rig/update-traffic.test.ts.
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { assignablePf } from '../../rig/l1/sysfs.js';
import { call } from '../../src/cli/ctl.js';
import type { UpdateReport } from '../../src/update/outgoing.js';
import { CLI, pinnedKiB, progress, vfioHolders } from './pinion.js';
import { dmarFaults, dmesg, MiB, netdev, Peer, sleep, StreamVm, streamVfs } from './stream-vm.js';

const [iommu = 'iommufd', updatesArg, framesArg, intervalArg, faultsArg, ramArg, limitArg] = process.argv.slice(2);
if (!['legacy', 'iommufd'].includes(iommu))
  throw new Error('usage: update-traffic.js legacy|iommufd [UPDATES] [FRAMES] [INTERVAL_MS] [FAULT,...] [RAM_MIB] [LIMIT_MIB]');
const UPDATES = Number(updatesArg ?? 5);
const FRAMES = Number(framesArg ?? 10000);
const INTERVAL_MS = Number(intervalArg ?? 10);
/** PINION_UPDATE_FAULT values (src/update/faults.ts) for the failing updates after the good ones. */
const FAULTS = (faultsArg ?? 'kill:restored,refuse:restore,kill:ready').split(',').filter(Boolean);
const RAM = Number(ramArg || 64) * MiB;
// LIMIT_MIB overrides it (a per-user limit too small for the update, which must be refused up front).
const LIMIT = limitArg ? Number(limitArg) * MiB : iommu === 'legacy' ? RAM + 32 * MiB : 2 * RAM + 32 * MiB;

const pf = assignablePf().bdf;
const [vf] = streamVfs(pf, 1);
// The PF answers its VFs' mailbox once its link is up.
const operstate = (): string => readFileSync(`/sys/bus/pci/devices/${pf}/net/${netdev(pf)}/operstate`, 'utf8').trim();
for (let t0 = Date.now(); operstate() !== 'up' && Date.now() - t0 < 30_000;) await sleep(200);
progress(`PF ${pf} link ${operstate()}`);
const peer = new Peer();
const dmesgBefore = dmesg().length;
const vm = new StreamVm({ name: 'update', iommu, how: 'user', vf: vf!.bdf, limit: LIMIT, memory: `${RAM / MiB}M`, heartbeat: true });
const out: Record<string, unknown> = {
  iommu,
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
const vmPid = async (): Promise<number> => ((await call(vm.socket, 'GET', '/api/v1/vm.info')).body as { pid: number }).pid;

/** One vm.update (with `to`, a new process that fails on purpose), and the guest's counters on each side. */
async function update(i: number, to?: string): Promise<Record<string, unknown> & { status?: number; to?: number }> {
  const before = { ...vm.counters(), ...heartbeats() };
  const gapsBefore = gapsFrom(0).length;
  const pidBefore = await vmPid();
  const t0 = Date.now();
  let r: { status: number; body: unknown };
  try {
    r = await call(vm.socket, 'PUT', '/api/v1/vm.update', to ? { to } : undefined);
  } catch (e) {
    return { i, error: (e as Error).message };
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
    ...(to ? { fault: to } : {}),
    status: r.status,
    ms: Date.now() - t0,
    ...b,
    pidBefore,
    pidAfter: await vmPid(),
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
// A new process that dies after it took the DMA space and the interrupts, or refuses the state: the old one takes them back.
const cli = `${process.execPath} ${CLI}`;
const faults: Record<string, unknown>[] = [];
for (const f of FAULTS) {
  if (peer.ended || updates.at(-1)?.status !== 200) break;
  faults.push(await update(faults.length, `env PINION_UPDATE_FAULT=${f} ${cli}`));
}
out.faults = faults;
// And after them an update that goes through.
if (FAULTS.length && !peer.ended) {
  const u = await update(UPDATES);
  out.afterFaults = u;
  if (u.status === 200) pid = u.to;
}
out.peerRunningAfterUpdates = !peer.ended;

const ticker = setInterval(() => progress(`waiting for the peer to end (guest ${JSON.stringify(vm.counters())})`), 10_000);
const peerMs = await peer.done;
clearInterval(ticker);
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
out.dmarFaults = dmarFaults(dmesg().slice(dmesgBefore - 1));
console.log(JSON.stringify(out));
