// In L1: start and stop a VM with an assigned VF many times, and after each
// cycle check that nothing stayed behind. Cycle i takes its IOMMU path, RAM
// backend and ending from i, so every combination comes round: the guest's
// own exit after it drove the VF (its igb test), SIGTERM while it runs, and
// SIGKILL just after each start-up phase (the IOMMU backend open, the device
// open, the pre-flight, the prefault, the DMA map). The VMM runs as uid 1000
// under an RLIMIT_MEMLOCK of its RAM and a little more, so a charge that
// outlived its process (type1's per process, iommufd's per user) would refuse
// the next start. After each cycle: no process holds a VFIO or iommufd node,
// no memory is locked or pinned L1-wide, the huge pages are all free again,
// the VF is still bound to vfio-pci; and at the end L1's available memory
// and its open files are where they were.
// Usage (in L1, as root): node dist/test/l1/soak.js CYCLES [OUT_JSON]
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { assignablePf } from '../../rig/l1/sysfs.js';
import { CLI, GUEST, pinnedKiB, progress, vfioHolders } from './pinion.js';
import { Peer, reserveHugePages, streamVfs, UID } from './stream-vm.js';

const cycles = Number(process.argv[2] ?? 14);
const outFile = process.argv[3];
if (!Number.isInteger(cycles) || cycles < 1) throw new Error('usage: soak.js CYCLES [OUT_JSON]');

const MIB = 1024 * 1024;
const RAM_MIB = 64;
// RAM, and room for what a VMM locks besides (a few pages of its own); less than two guests' RAM.
const LIMIT = (RAM_MIB + 16) * MIB;
const PATHS = ['legacy', 'iommufd'] as const;
const BACKENDS = ['memfd', 'anon', 'hugetlb'] as const;
/** A trace phase to SIGKILL the VMM at, or how else the cycle ends. */
const ENDINGS = [
  'guest exit',
  'kill at IOMMU backend open',
  'kill at device open',
  'kill at devices open, pre-flight passed',
  'SIGTERM while running',
  'kill at RAM prefaulted',
  'kill at RAM DMA-mapped',
] as const;
type Ending = (typeof ENDINGS)[number];
/** The trace line (src/machine/machine.ts, assignment.ts) each kill waits for. */
const KILL_AT: Partial<Record<Ending, RegExp>> = {
  'kill at IOMMU backend open': /^IOMMU backend open/,
  'kill at device open': /^device \S+ open$/,
  'kill at devices open, pre-flight passed': /^devices open, pre-flight passed$/,
  'kill at RAM prefaulted': /^RAM prefaulted$/,
  'kill at RAM DMA-mapped': /^RAM DMA-mapped$/,
};
const CYCLE_MS = 120_000;

interface Cycle {
  i: number;
  path: string;
  backend: string;
  ending: Ending;
  /** The phase the VMM had reached when it ended, from its trace. */
  reached: string;
  status: number | null;
  signal: string | null;
  ms: number;
  ok: boolean;
  /** What was not back to baseline after it, or why the cycle failed; empty when all was. */
  problems: string[];
  stderrTail?: string;
}

const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', PINION_TRACE: '1' };

const meminfo = (key: string): number =>
  Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? NaN);
const openFiles = (): number => Number(readFileSync('/proc/sys/fs/file-nr', 'utf8').split(/\s+/)[0]);
const dropCaches = (): void => writeFileSync('/proc/sys/vm/drop_caches', '3');

const driverOf = (bdf: string): string => {
  try {
    return readlinkSync(`/sys/bus/pci/devices/${bdf}/driver`).split('/').pop()!;
  } catch {
    return 'none';
  }
};

function cycle(i: number, vf: string): Promise<Cycle> {
  const path = PATHS[i % PATHS.length]!;
  const backend = BACKENDS[Math.floor(i / PATHS.length) % BACKENDS.length]!;
  const ending = ENDINGS[i % ENDINGS.length]!;
  const guestCmd = ending === 'guest exit' ? 'igb' : 'tick';
  const args = [CLI, 'run', '--payload', GUEST, '--device', vf, '--iommu', path, '--memory', `${RAM_MIB}M`];
  args.push('--memory-backend', backend, '--cmdline', guestCmd);
  const cmd = ['prlimit', `--memlock=${LIMIT}:${LIMIT}`, 'setpriv', `--reuid=${UID}`, `--regid=${UID}`, '--clear-groups', '--'];
  const t0 = Date.now();
  const p = spawn(cmd[0]!, [...cmd.slice(1), process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stdout = '';
  let stderr = '';
  let reached = 'none';
  let sent = false;
  const send = (sig: NodeJS.Signals): void => {
    if (sent) return;
    sent = true;
    // The VMM is the wrappers' exec, so the signal reaches it.
    p.kill(sig);
  };
  const watch = (): void => {
    const phases = [...stderr.matchAll(/^pinion: trace \+\d+ ms (.*)$/gm)].map((m) => m[1]!);
    if (phases.length) reached = phases.at(-1)!;
    const at = KILL_AT[ending];
    if (at && phases.some((ph) => at.test(ph))) send('SIGKILL');
    if (ending === 'SIGTERM while running' && /tick/.test(stdout)) send('SIGTERM');
  };
  p.stdout!.on('data', (d: Buffer) => ((stdout += d.toString()), watch()));
  p.stderr!.on('data', (d: Buffer) => ((stderr += d.toString()), watch()));
  const timer = setTimeout(() => p.kill('SIGKILL'), CYCLE_MS);
  return new Promise<Cycle>((resolve) =>
    p.on('close', (status, signal) => {
      clearTimeout(timer);
      const problems: string[] = [];
      const ms = Date.now() - t0;
      if (ms >= CYCLE_MS) problems.push(`the VMM was still running after ${CYCLE_MS / 1000} s`);
      if (ending === 'guest exit' && (status !== 0 || !stdout.includes('pinion-guest: exit 0')))
        problems.push(`the guest did not drive the VF to its exit 0 (status ${status}, signal ${signal})`);
      if (ending === 'SIGTERM while running' && (!sent || signal !== null || status === null))
        problems.push(`SIGTERM while running: ${sent ? `ended with status ${status} signal ${signal}` : 'the guest never ticked'}`);
      if (KILL_AT[ending] && signal !== 'SIGKILL') problems.push(`not killed at its phase: status ${status}, signal ${signal}`);
      resolve({
        i,
        path,
        backend,
        ending,
        reached,
        status,
        signal,
        ms,
        ok: problems.length === 0,
        problems,
        stderrTail: stderr.slice(-600),
      });
    }),
  );
}

/** What is not as it was before the first cycle. */
function leftBehind(vf: string, base: { hugeFree: number; pinnedKiB: number }): string[] {
  const out: string[] = [];
  const holders = vfioHolders();
  if (holders.length) out.push(`VFIO/iommufd nodes still open: ${holders.join(', ')}`);
  const pinned = pinnedKiB();
  if (pinned !== base.pinnedKiB) out.push(`${pinned} KiB locked or pinned L1-wide, ${base.pinnedKiB} before`);
  const hugeFree = meminfo('HugePages_Free');
  if (hugeFree !== base.hugeFree) out.push(`${hugeFree} huge pages free, ${base.hugeFree} before`);
  const driver = driverOf(vf);
  if (driver !== 'vfio-pci') out.push(`the VF is bound to ${driver}`);
  return out;
}

const [vfDev] = streamVfs(assignablePf().bdf, 1);
const vf = vfDev!.bdf;
// The VF's igb test sends a frame to the wire: L1's peer is up to take it.
new Peer();
reserveHugePages(RAM_MIB / 2 + 8);
dropCaches();
const base = { hugeFree: meminfo('HugePages_Free'), pinnedKiB: pinnedKiB(), availKiB: meminfo('MemAvailable'), openFiles: openFiles() };
progress(`soak: ${cycles} cycles on ${vf}; before: ${JSON.stringify(base)}`);
const results: Cycle[] = [];
const trend: { after: number; availKiB: number; openFiles: number }[] = [];
const t0 = Date.now();
for (let i = 0; i < cycles; i++) {
  const c = await cycle(i, vf);
  // A SIGKILLed process's last references (its mm, its pins) may go a moment after its parent hears of it.
  let behind = leftBehind(vf, base);
  for (let k = 0; behind.length && k < 20; k++) {
    await new Promise((r) => setTimeout(r, 100));
    behind = leftBehind(vf, base);
  }
  c.problems.push(...behind);
  c.ok = c.problems.length === 0;
  if (c.ok) delete c.stderrTail;
  results.push(c);
  // L1's available memory now and then, caches dropped: a leak shows as a trend, not as one reading.
  if ((i + 1) % ENDINGS.length === 0) {
    dropCaches();
    trend.push({ after: i + 1, availKiB: meminfo('MemAvailable'), openFiles: openFiles() });
  }
  progress(`cycle ${i}: ${c.path} ${c.backend} ${c.ending}: reached '${c.reached}', ${c.ms} ms${c.ok ? '' : `; ${c.problems.join('; ')}`}`);
}
dropCaches();
const after = { availKiB: meminfo('MemAvailable'), openFiles: openFiles() };
const summary = {
  cycles,
  passed: results.filter((c) => c.ok).length,
  seconds: Math.round((Date.now() - t0) / 1000),
  before: base,
  after,
  availDropKiB: base.availKiB - after.availKiB,
  openFilesRise: after.openFiles - base.openFiles,
  trend,
  byEnding: Object.fromEntries(ENDINGS.map((e) => [e, results.filter((c) => c.ending === e && c.ok).length])),
};
const out = { summary, failed: results.filter((c) => !c.ok), cycles: results.map(({ stderrTail, ...c }) => (void stderrTail, c)) };
if (outFile)
  writeFileSync(
    outFile,
    JSON.stringify({ ...out, date: new Date().toISOString(), kernel: process.env.PINION_RIG_KERNEL ?? '' }, null, 1) + '\n',
  );
console.log(JSON.stringify(out));
process.exit(0);
