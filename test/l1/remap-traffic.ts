// Runs in L1 as root: memory changes through the control API while the test
// guest streams frames on an assigned igb VF (its stream mode). L1's peer
// igb sends a numbered frame every 5 ms; the guest checks each one, sends
// some of its own, and moves its RX DMA into every region it is told of.
// Each change is timed and recorded with its DMA ops, what the VM charged
// before it, at its peak and after, and the guest's counters on each side;
// one change does not fit the locked-memory budget. At the end: the frames
// the peer sent against those the guest received, and L1's DMAR faults.
//
//   remap-traffic.js legacy|iommufd user|opener [VF] [FRAMES]
//
// The VMM runs as uid 1000 under an RLIMIT_MEMLOCK of LIMIT: directly
// (user: type1 charges the process, iommufd the user), or through pinion
// open (opener: per-process accounting on iommufd). Without a VF one is made
// on the assignable PF. FRAMES (default 12000, a minute) bounds the peer:
// the changes must be done before it stops. Prints one JSON object for
// test/rig/remap-traffic.test.ts.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assignablePf, bindVfio, createVfs, peerPf } from '../../rig/l1/sysfs.js';
import type { ChangeResult, DmaInfo, MemoryMapInfo, VmInfo } from '../../src/api/routes.js';
import { call } from '../../src/cli/ctl.js';
import { hugePagesFree } from '../../src/memory/guest-ram.js';
import { CLI, GUEST, progress } from './pinion.js';
import { changeRecord, recordScenario } from '../../bench/remap-record.js';

const [iommu = 'iommufd', how = 'user', vfArg, framesArg] = process.argv.slice(2);
if (!['legacy', 'iommufd'].includes(iommu) || !['user', 'opener'].includes(how))
  throw new Error('usage: remap-traffic.js legacy|iommufd user|opener [VF] [FRAMES]');
const FRAMES = Number(framesArg ?? 12000);
const INTERVAL_MS = 5;
const UID = '1000';
const MiB = 1024 * 1024;
/** Boot RAM (64 MiB) and the regions below peak under 120 MiB; the refused change asks for 256 MiB more. */
const LIMIT = 160 * MiB;
const SENDER = fileURLToPath(new URL('../../../test/support/peer-send.py', import.meta.url));
// The VMM runs as another user: a plain environment, without the test runner's instrumentation.
const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const netdev = (bdf: string): string => readdirSync(`/sys/bus/pci/devices/${bdf}/net`)[0]!;

// The VF, and its PF with L1's igb up: the PF answers the VF's mailbox only while its netdev is up.
const pf = vfArg ? basename(readlinkSync(`/sys/bus/pci/devices/${vfArg}/physfn`)) : assignablePf().bdf;
spawnSync('ip', ['link', 'set', netdev(pf), 'up']);
const vf = bindVfio(vfArg ?? createVfs(pf, 1)[0]!);
for (const node of ['/dev/kvm', '/dev/iommu', '/dev/vfio/vfio', `/dev/vfio/${vf.iommuGroup}`, vf.vfioCdev ?? ''])
  if (node && existsSync(node)) chmodSync(node, 0o666);
const peerIf = netdev(peerPf().bdf);
spawnSync('ip', ['link', 'set', peerIf, 'up']);
const peerRx = (): number => Number(readFileSync(`/sys/class/net/${peerIf}/statistics/rx_packets`, 'utf8'));
// hugetlb for the replace when L1 can reserve the pages, else anon.
try {
  writeFileSync('/proc/sys/vm/nr_hugepages', '16');
} catch {
  // no huge pages here
}
const replaceWith = hugePagesFree() >= 8n ? 'hugetlb' : 'anon';
const dmesg = (): string[] => spawnSync('dmesg', { encoding: 'utf8' }).stdout.split('\n');
const dmesgBefore = dmesg().length;

const socket = `/tmp/pinion-traffic-${process.pid}.sock`;
const consolePath = `${socket}.console`;
rmSync(consolePath, { force: true });
const runArgs = [process.execPath, CLI, 'run', '--payload', GUEST, '--device', vf.bdf, '--iommu', iommu];
runArgs.push('--cmdline', 'stream', '--api-socket', socket, '--console', consolePath);
const cmd =
  how === 'opener'
    ? [process.execPath, CLI, 'open', '--user', UID, '--iommu', iommu, '--memlock', String(LIMIT), '--device', vf.bdf, '--', ...runArgs]
    : ['prlimit', `--memlock=${LIMIT}:${LIMIT}`, 'setpriv', `--reuid=${UID}`, `--regid=${UID}`, '--clear-groups', '--', ...runArgs];
progress(`${iommu} ${how}: ${cmd.join(' ')}`);
const vmm = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env });
let vmmStderr = '';
vmm.stderr.on('data', (d: Buffer) => (vmmStderr += d.toString()));
let vmmEnded = false;
const vmmEnd = new Promise<number | null>((r) => vmm.on('close', (code) => ((vmmEnded = true), r(code))));

const consoleText = (): string => (existsSync(consolePath) ? readFileSync(consolePath, 'utf8') : '');
async function until(what: () => boolean, ms: number): Promise<boolean> {
  const t0 = Date.now();
  while (!what()) {
    if (vmmEnded || Date.now() - t0 > ms) return what();
    await sleep(100);
  }
  return true;
}

export interface Counters {
  rx: number;
  lost: number;
  bad: number;
  tx: number;
  inregion: number;
}
/** The guest's last status line. */
function counters(): Counters | null {
  const all = [...consoleText().matchAll(/stream: rx=(\d+) lost=(\d+) bad=(\d+) tx=(\d+) inregion=(\d+)/g)];
  const m = all.at(-1);
  return m ? { rx: +m[1]!, lost: +m[2]!, bad: +m[3]!, tx: +m[4]!, inregion: +m[5]! } : null;
}

async function get<T>(verb: string): Promise<T> {
  return (await call(socket, 'GET', `/api/v1/vm.${verb}`)).body as T;
}

const out: Record<string, unknown> = { iommu, how, vf: vf.bdf, frames: FRAMES, intervalMs: INTERVAL_MS, limit: LIMIT, replaceWith };
if (!(await until(() => consoleText().includes('stream: ready'), 180_000))) {
  vmm.kill('SIGKILL');
  out.error = `the guest did not get its NIC going; VMM exit ${await vmmEnd}`;
  console.log(JSON.stringify({ ...out, vmmStderr, console: consoleText() }));
  process.exit(0);
}

// The peer starts once the guest's rings are up: frame 0 is the first it can receive.
const peerRxBefore = peerRx();
const peerT0 = Date.now();
const peer = spawn('python3', [SENDER, peerIf, String(INTERVAL_MS), String(FRAMES)], { stdio: 'ignore' });
let peerEnded = false;
const peerEnd = new Promise<number>((r) => peer.on('close', () => ((peerEnded = true), r(Date.now() - peerT0))));
out.flowing = await until(() => (counters()?.rx ?? 0) > 0, 30_000);

/** One memory change as test/rig/remap-traffic.test.ts reads it. */
export interface Change {
  name: string;
  verb: string;
  body: Record<string, string>;
  status: number;
  ms: number;
  done?: string;
  error?: string;
  guest?: ChangeResult['guest'];
  ops: string[];
  charged: { before: number; peak: number | null; after: number };
  mappings: { before: string[]; after: string[] };
  regions: { before: string[]; after: string[] };
  counters: { before: Counters | null; after: Counters | null };
  /** What the guest printed meanwhile about the regions: landed frames, releases. */
  guestLines: string[];
  state: string;
}

const mapping = (d: DmaInfo): string[] => (d.assigned ? d.mappings.map((m) => `${m.iova}+${m.size}`) : []);
const regions = (m: MemoryMapInfo): string[] => m.regions.map((r) => `${r.name} ${r.gpa}+${r.size} ${r.backend ?? '-'} ${r.guest ?? '-'}`);

async function change(name: string, verb: string, body: Record<string, string>): Promise<Change> {
  progress(`${name}: ${verb} ${JSON.stringify(body)} (guest ${JSON.stringify(counters())})`);
  const [dma0, mem0, c0, off] = [await get<DmaInfo>('dma'), await get<MemoryMapInfo>('memory'), counters(), consoleText().length];
  const t0 = Date.now();
  const r = await call(socket, 'PUT', `/api/v1/vm.${verb}`, body);
  const ms = Date.now() - t0;
  // The guest prints its counters about once a second (and after each event): a line from after the change.
  await sleep(2500);
  const [dma1, mem1, info] = [await get<DmaInfo>('dma'), await get<MemoryMapInfo>('memory'), await get<VmInfo>('info')];
  const b = r.body as ChangeResult & { error?: string };
  const charged = (d: DmaInfo): { held: number; lastPeak: number | null } => (d.assigned ? d.charged : { held: 0, lastPeak: null });
  return {
    name,
    verb,
    body,
    status: r.status,
    ms,
    done: b.done,
    error: b.error,
    guest: b.guest,
    ops: dma1.assigned ? dma1.lastOps : [],
    charged: { before: charged(dma0).held, peak: charged(dma1).lastPeak, after: charged(dma1).held },
    mappings: { before: mapping(dma0), after: mapping(dma1) },
    regions: { before: regions(mem0), after: regions(mem1) },
    counters: { before: c0, after: counters() },
    guestLines: consoleText()
      .slice(off)
      .split('\n')
      .filter((l) => /stream: (frame \d+ landed|released|not releasing|no frame landed|region |descriptor )/.test(l)),
    state: info.state,
  };
}

const changes: Change[] = [];
const steps: [string, string, Record<string, string>][] = [
  ['add', 'add-ram', { gpa: '0x40000000', size: '16M' }],
  ['grow', 'resize-ram', { gpa: '0x40000000', size: '32M' }],
  ['split', 'split-ram', { gpa: '0x40000000', at: '0x41000000' }],
  ['shrink', 'resize-ram', { gpa: '0x41000000', size: '8M' }],
  ['move', 'move-ram', { gpa: '0x41000000', to: '0x50000000' }],
  ['replace', 'replace-ram', { gpa: '0x40000000', backend: replaceWith }],
  ['overBudget', 'add-ram', { gpa: '0x60000000', size: '256M' }],
  ['removeMoved', 'remove-ram', { gpa: '0x50000000' }],
  ['remove', 'remove-ram', { gpa: '0x40000000' }],
];
for (const [name, verb, body] of steps) {
  if (vmmEnded) break;
  try {
    changes.push(await change(name, verb, body));
  } catch (e) {
    // The VMM went away mid-change: what is left to record is how it ended.
    out.changeError = `${name}: ${(e as Error).message}`;
    break;
  }
}
out.changes = changes;
out.peerRunningAfterChanges = !peerEnded;

// The peer ends with its stop frame; the guest then prints its totals and exits.
const ticker = setInterval(() => progress(`waiting for the peer to end (guest ${JSON.stringify(counters())})`), 10_000);
const peerMs = await peerEnd;
clearInterval(ticker);
if (!(await until(() => vmmEnded, 60_000))) {
  progress('the guest did not stop after the peer did; SIGTERM');
  vmm.kill('SIGTERM');
}
const status = await vmmEnd;
const doneLine = /stream: done (.*)/.exec(consoleText())?.[1];
const done = doneLine ? Object.fromEntries(doneLine.split(' ').map((kv) => [kv.split('=')[0]!, Number(kv.split('=')[1])])) : null;
out.frames = { sent: FRAMES, received: done?.rx ?? null, first: done?.first ?? null, last: done?.last ?? null, lost: done?.lost ?? null };
out.end = {
  status,
  vmmStderr,
  peerMs,
  peerRx: peerRx() - peerRxBefore,
  done,
  console: consoleText().split('\n').slice(-40).join('\n'),
};
out.dmarFaults = dmesg()
  .slice(dmesgBefore - 1)
  .filter((l) => /DMAR|DMA fault|iommu.*fault/i.test(l));
rmSync(consolePath, { force: true });
// bench/run.sh's remap entry keeps the scenario in bench/results/remap.json.
if (process.env.PINION_REMAP_RECORD)
  recordScenario(process.env.PINION_REMAP_RECORD, {
    kernel: process.env.PINION_RIG_KERNEL ?? 'type1',
    iommu,
    // The compat kernel's container is iommufd's, which charges the user as iommufd does.
    accounting:
      iommu === 'legacy'
        ? process.env.PINION_RIG_KERNEL === 'compat'
          ? 'per-user (iommufd compat container)'
          : 'per-process (type1)'
        : how === 'opener'
          ? 'per-process (pinion open)'
          : 'per-user',
    frames: out.frames as { sent: number; received: number | null; lost: number | null },
    dmarFaults: (out.dmarFaults as string[]).length,
    changes: changes.map(changeRecord),
  });
console.log(JSON.stringify(out));
