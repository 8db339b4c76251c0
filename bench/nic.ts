// One UDP echo round trip L1 -> guest -> L1 through an assigned igb VF per
// iteration: Pinion's Linux guest (VF 0) and QEMU's (VF 1, the same function
// of the same PF) run at once in one L1 boot, on the same path; mitata rounds
// alternate between them. The guest image's udp-echo answers.
// Usage (in L1, as root): node dist/bench/nic.js KERNEL_VARIANT BZIMAGE INITRD OUT_JSON [legacy|iommufd]
import { measure } from 'mitata';
import { createSocket } from 'node:dgram';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { LinuxGuest, peerUp, PEER_IP, vfsForGuests, type Vmm } from '../rig/l1/linux-guest.js';
import type { IommuKind } from '../src/devices/vfio/iommu.js';
import { commitId, median } from './stats.js';

const [variant = 'type1', kernel = '', initrd = '', outFile = '', iommu = 'iommufd'] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  IommuKind,
];
const ROUNDS = Number(process.env.PINION_BENCH_ROUNDS ?? 6);
const TIMEOUT_MS = 1000;
const log = (s: string): void => void process.stderr.write(`nic ${(performance.now() / 1000).toFixed(0)}s: ${s}\n`);
if (!existsSync(kernel) || !existsSync(initrd)) throw new Error('usage: nic.js KERNEL_VARIANT BZIMAGE INITRD OUT_JSON [legacy|iommufd]');

peerUp();
const { vfs } = vfsForGuests(2);
const guests: Record<Vmm, { g: LinuxGuest; ip: string }> = {
  pinion: {
    g: new LinuxGuest({
      vmm: 'pinion',
      iommu,
      kernel,
      initrd,
      device: vfs[0]!,
      ip: '192.0.2.2/24',
      command: 'echo "pinion-guest: serving"; sleep 3600',
      limitMs: 1_800_000,
    }),
    ip: '192.0.2.2',
  },
  qemu: {
    g: new LinuxGuest({
      vmm: 'qemu',
      iommu,
      kernel,
      initrd,
      device: vfs[1]!,
      ip: '192.0.2.3/24',
      command: 'echo "pinion-guest: serving"; sleep 3600',
      limitMs: 1_800_000,
    }),
    ip: '192.0.2.3',
  },
};
for (const [vmm, { g }] of Object.entries(guests)) {
  if (!(await g.waitFor(/^pinion-guest: serving/)))
    throw new Error(`${vmm}'s guest did not come up:\n${g.console().slice(-2000)}\n${g.stderr.slice(-1000)}`);
  log(`${vmm}'s guest serving`);
}

// One socket; each iteration sends a datagram and waits for its echo.
const sock = createSocket('udp4');
await new Promise<void>((r) => sock.bind(0, PEER_IP, r));
let pending: ((m: Buffer) => void) | undefined;
sock.on('message', (m) => pending?.(m));
let lost = 0;
let seq = 0;
function echo(ip: string): Promise<void> {
  const payload = Buffer.alloc(64);
  payload.writeUInt32LE(++seq);
  return new Promise<void>((resolve) => {
    const t = setTimeout(() => ((pending = undefined), lost++, resolve()), TIMEOUT_MS);
    pending = (m) => {
      if (m.readUInt32LE(0) !== seq) return;
      clearTimeout(t);
      pending = undefined;
      resolve();
    };
    sock.send(payload, 7, ip);
  });
}
for (const { ip } of Object.values(guests)) for (let i = 0; i < 50; i++) await echo(ip);
lost = 0;

const rounds: Record<Vmm, { p50: number; avg: number; p99: number; samples: number }[]> = { pinion: [], qemu: [] };
for (let r = 0; r < ROUNDS; r++) {
  const order: Vmm[] = r % 2 ? ['qemu', 'pinion'] : ['pinion', 'qemu'];
  for (const vmm of order) {
    const s = await measure(() => echo(guests[vmm].ip), { min_cpu_time: 2e9, min_samples: 200 });
    rounds[vmm].push({ p50: Math.round(s.p50), avg: Math.round(s.avg), p99: Math.round(s.p99), samples: s.samples.length });
    log(`round ${r} ${vmm}: p50 ${(s.p50 / 1e3).toFixed(0)} us over ${s.samples.length}`);
  }
}
for (const { g } of Object.values(guests)) g.kill();
await Promise.all(Object.values(guests).map(({ g }) => g.done));
sock.close();

const p = rounds.pinion.map((x) => x.p50);
const q = rounds.qemu.map((x) => x.p50);
const perRound = p.map((x, i) => +(x / q[i]!).toFixed(3));
const row = {
  pinionUs: +(median(p) / 1e3).toFixed(1),
  qemuUs: +(median(q) / 1e3).toFixed(1),
  ratio: +(median(p) / median(q)).toFixed(3),
  ratioInterval: [Math.min(...perRound), Math.max(...perRound)],
  lost,
};
console.log(JSON.stringify(row));
const section = {
  date: new Date().toISOString(),
  commit: commitId(),
  rigKernel: basename(dirname(kernel)),
  iommu,
  statistic: `UDP echo round trip (64 bytes) L1 -> guest -> L1; per round mitata's p50 (ns); figure = median of ${ROUNDS} rounds, order alternating; ratio = Pinion / QEMU, interval = min..max of the per-round ratios`,
  ...row,
  perRoundRatio: perRound,
  rounds,
};
if (outFile) {
  const all = existsSync(outFile) ? (JSON.parse(readFileSync(outFile, 'utf8')) as Record<string, unknown>) : {};
  all[`${variant}-${iommu}`] = section;
  writeFileSync(outFile, JSON.stringify(all, null, 2) + '\n');
}
process.exit(0);
