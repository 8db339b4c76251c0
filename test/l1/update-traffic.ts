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
//   update-traffic.js legacy|iommufd [UPDATES] [FRAMES] [INTERVAL_MS]
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
import { pinnedKiB, progress, vfioHolders } from './pinion.js';
import { dmarFaults, dmesg, MiB, netdev, Peer, sleep, StreamVm, streamVfs } from './stream-vm.js';

const [iommu = 'iommufd', updatesArg, framesArg, intervalArg] = process.argv.slice(2);
if (!['legacy', 'iommufd'].includes(iommu)) throw new Error('usage: update-traffic.js legacy|iommufd [UPDATES] [FRAMES] [INTERVAL_MS]');
const UPDATES = Number(updatesArg ?? 5);
const FRAMES = Number(framesArg ?? 10000);
const INTERVAL_MS = Number(intervalArg ?? 10);
const RAM = 64 * MiB;
const LIMIT = iommu === 'legacy' ? RAM + 32 * MiB : 2 * RAM + 32 * MiB;

const pf = assignablePf().bdf;
const [vf] = streamVfs(pf, 1);
// The PF answers its VFs' mailbox once its link is up.
const operstate = (): string => readFileSync(`/sys/bus/pci/devices/${pf}/net/${netdev(pf)}/operstate`, 'utf8').trim();
for (let t0 = Date.now(); operstate() !== 'up' && Date.now() - t0 < 30_000;) await sleep(200);
progress(`PF ${pf} link ${operstate()}`);
const peer = new Peer();
const dmesgBefore = dmesg().length;
const vm = new StreamVm({ name: 'update', iommu, how: 'user', vf: vf!.bdf, limit: LIMIT, memory: '64M' });
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

const updates: Record<string, unknown>[] = [];
let pid: number | undefined;
for (let i = 0; i < UPDATES && !peer.ended; i++) {
  const before = vm.counters();
  const t0 = Date.now();
  let r: { status: number; body: unknown };
  try {
    r = await call(vm.socket, 'PUT', '/api/v1/vm.update');
  } catch (e) {
    updates.push({ i, error: (e as Error).message });
    break;
  }
  const b = r.body as UpdateReport & { error?: string };
  progress(`update ${i}: ${r.status} ${b.error ?? `pid ${b.from} -> ${b.to}, pause ${b.pauseMs} ms`}`);
  // The guest prints its counters about once a second: one from after the update.
  await sleep(2000);
  updates.push({ i, status: r.status, ms: Date.now() - t0, ...b, counters: { before, after: vm.counters() } });
  if (r.status !== 200) break;
  pid = b.to;
}
out.updateList = updates;
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
