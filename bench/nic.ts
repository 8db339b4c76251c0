// One UDP echo round trip L1 -> guest -> L1 through an assigned igb VF per
// iteration: Pinion's Linux guest (VF 0) and QEMU's (VF 1, the same function
// of the same PF) run at once in one L1 boot, on the same path, one vCPU each. Method of
// bench/method.ts: ABBA rounds, each side's figure in a round mitata's p50
// over at least 200 echoes; ratio = QEMU time / Pinion time. Rounds are
// capped (PINION_BENCH_ROUNDS, PINION_BENCH_CELL_SECONDS). The guest image's
// udp-echo answers.
// Usage (in L1, as root): node dist/bench/nic.js KERNEL_VARIANT BZIMAGE INITRD OUT_JSON [legacy|iommufd]
import { measure } from 'mitata';
import { createSocket } from 'node:dgram';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { LinuxGuest, peerUp, PEER_IP, vfsForGuests, type Vmm } from '../rig/l1/linux-guest.js';
import type { IommuKind } from '../src/devices/vfio/iommu.js';
import { assertL1TscRate } from '../rig/l1/tsc-rate.js';
import { makeRun, provenance, runCell, withRun, stopRule } from './method.js';

const [variant = 'type1', kernel = '', initrd = '', outFile = '', iommu = 'iommufd'] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  IommuKind,
];
const RULE = stopRule({ minRounds: 4, maxRounds: 16, maxSeconds: 480 });
const TIMEOUT_MS = 1000;
const SERVING_MS = 180_000;
// Two guests at once in a 2-vCPU L1: with two vCPUs each they outnumber L1's CPUs two to one, and a loaded
// host then showed RCU stalls in them. One each, for both VMMs alike.
const GUEST_CPUS_EACH = 1;
const log = (s: string): void => void process.stderr.write(`nic ${(performance.now() / 1000).toFixed(0)}s: ${s}\n`);
if (!existsSync(kernel) || !existsSync(initrd)) throw new Error('usage: nic.js KERNEL_VARIANT BZIMAGE INITRD OUT_JSON [legacy|iommufd]');

const tsc = await assertL1TscRate();
peerUp();
const { vfs } = vfsForGuests(2);
const GUESTS: Record<Vmm, { device: string; ip: string }> = {
  pinion: { device: vfs[0]!, ip: '192.0.2.2' },
  qemu: { device: vfs[1]!, ip: '192.0.2.3' },
};
/** Nested KVM on TCG kills a boot now and then, under either VMM: a guest that ends before it serves is booted again, twice at most. */
async function serving(vmm: Vmm): Promise<{ g: LinuxGuest; ip: string }> {
  const { device, ip } = GUESTS[vmm];
  for (let attempt = 1; ; attempt++) {
    const g = new LinuxGuest({
      vmm,
      iommu,
      kernel,
      initrd,
      device,
      ip: `${ip}/24`,
      command: 'echo "pinion-guest: serving"; sleep 3600',
      cpus: GUEST_CPUS_EACH,
      limitMs: 1_800_000,
    });
    // A boot that has not served in 3 minutes is one that stopped (an L1 losing timer events stalls it for minutes).
    let slow: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((r) => (slow = setTimeout(() => (g.kill(), r(undefined)), SERVING_MS)));
    const up = await Promise.race([g.waitFor(/^pinion-guest: serving/), late]).finally(() => clearTimeout(slow));
    if (up) {
      log(`${vmm}'s guest serving`);
      return { g, ip };
    }
    const why = `${vmm}'s guest ended before it served (boot ${attempt}):\n${g.console().slice(-1500)}\n${g.stderr.slice(-500)}`;
    if (attempt === 3) throw new Error(why);
    log(why);
    await g.done;
  }
}
const guests: Record<Vmm, { g: LinuxGuest; ip: string }> = { pinion: await serving('pinion'), qemu: await serving('qemu') };
/** Guests booted again because they stopped answering, with what their console said last. */
const reboots: { vmm: Vmm; at: number; lastLines: string }[] = [];

// One socket; each iteration sends a datagram and waits for its echo.
const sock = createSocket('udp4');
await new Promise<void>((r) => sock.bind(0, PEER_IP, r));
let pending: ((m: Buffer) => void) | undefined;
sock.on('message', (m) => pending?.(m));
let lost = 0;
let seq = 0;
/** Echoes lost in a row: a guest that stopped answering (under either VMM now and then) is not timed at 1 s an echo. */
let lostInRow = 0;
const DEAD_AFTER = 5;
function echo(ip: string): Promise<void> {
  if (lostInRow >= DEAD_AFTER) return Promise.resolve();
  const payload = Buffer.alloc(64);
  payload.writeUInt32LE(++seq);
  return new Promise<void>((resolve) => {
    const t = setTimeout(() => ((pending = undefined), lost++, lostInRow++, resolve()), TIMEOUT_MS);
    pending = (m) => {
      if (m.readUInt32LE(0) !== seq) return;
      lostInRow = 0;
      clearTimeout(t);
      pending = undefined;
      resolve();
    };
    sock.send(payload, 7, ip);
  });
}
for (const { ip } of Object.values(guests)) for (let i = 0; i < 50; i++) await echo(ip);
lost = 0;

const detail: Record<Vmm, { p50: number; avg: number; p99: number; samples: number; lost: number }[]> = { pinion: [], qemu: [] };
async function side(vmm: Vmm): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    lostInRow = 0;
    const r = await sideOnce(vmm);
    if (lostInRow < DEAD_AFTER) return r;
    // The guest stopped answering: its figure this round is not an echo time. Boot it again and measure again.
    const lastLines = guests[vmm].g.console().split('\n').slice(-8).join('\n');
    reboots.push({ vmm, at: Math.round(performance.now() / 1000), lastLines });
    detail[vmm].pop();
    log(`${vmm}'s guest stopped answering (${DEAD_AFTER} echoes lost in a row); booting it again. Its console's last lines:\n${lastLines}`);
    guests[vmm].g.kill();
    await guests[vmm].g.done;
    if (attempt === 3) throw new Error(`${vmm}'s guest stopped answering three times`);
    guests[vmm] = await serving(vmm);
    lostInRow = 0;
    for (let i = 0; i < 20; i++) await echo(guests[vmm].ip);
  }
}
async function sideOnce(vmm: Vmm): Promise<number> {
  const lost0 = lost;
  const s = await measure(() => echo(guests[vmm].ip), { min_cpu_time: 2e9, min_samples: 200 });
  detail[vmm].push({
    p50: Math.round(s.p50),
    avg: Math.round(s.avg),
    p99: Math.round(s.p99),
    samples: s.samples.length,
    lost: lost - lost0,
  });
  log(`${vmm}: p50 ${(s.p50 / 1e3).toFixed(0)} us over ${s.samples.length}`);
  return s.p50 / 1e3;
}
const cell = await runCell(
  {
    name: 'UDP echo round trip, 64 bytes',
    unit: 'µs',
    better: 'lower',
    figure: "mitata's p50 over at least 200 echoes (2 s of CPU time), one echo in flight",
  },
  RULE,
  () => side('pinion'),
  () => side('qemu'),
);
for (const { g } of Object.values(guests)) g.kill();
await Promise.all(Object.values(guests).map(({ g }) => g.done));
sock.close();
console.log(JSON.stringify({ estimate: cell.estimate, ci: cell.ci, rounds: cell.rounds.length, noiseBound: cell.noiseBound, lost }));

const run = makeRun({
  benchmark: 'nic',
  variant: `${variant} ${iommu}`,
  reference: 'QEMU, its guest on VF 1 of the same PF at the same time, same path, same L1 boot',
  provenance: { ...provenance(), rigKernel: process.env.PINION_RIG_KERNEL_ID || basename(dirname(kernel)) },
  cells: [cell],
  extra: { iommu, l1Tsc: tsc, guestCpus: GUEST_CPUS_EACH, lost, timeoutMs: TIMEOUT_MS, rounds: detail, reboots },
});
if (outFile) writeFileSync(outFile, withRun(existsSync(outFile) ? readFileSync(outFile, 'utf8') : undefined, run));
process.exit(0);
