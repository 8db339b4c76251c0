// Pinion and QEMU side by side in one L1 boot: the same bzImage, initramfs
// and VF, on the legacy container and on iommufd. Per boot: VMM process start
// to the guest's init (L1's clock), ping RTT to L1, iperf3 TCP and UDP each
// way, KVM exits per 1000 packets during iperf3 and how many reached
// userspace (KVM's debugfs counters for the VM, the same source for both
// VMMs), and the VMM's RSS, VmLck and VmPin. Rounds alternate the order.
// Usage (in L1, as root): node dist/bench/linux-guest.js KERNEL_VARIANT BZIMAGE INITRD OUT_JSON
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { GUEST_MEMORY_MIB, peerUp, vfsForGuests, type Vmm } from '../rig/l1/linux-guest.js';
import type { IommuKind } from '../src/devices/vfio/iommu.js';
import { IPERF_RUNS, measuredBootWithRetry, type TrafficSample } from '../rig/l1/guest-traffic.js';
import { commitId, median } from './stats.js';
import { FIGURES, sampleFigures } from './guest-figures.js';

const [variant = 'type1', kernel = '', initrd = '', outFile = ''] = process.argv.slice(2);
const ROUNDS = Number(process.env.PINION_BENCH_ROUNDS ?? 3);
const PLAN = { pings: 100, iperfSec: 4, runs: IPERF_RUNS };
const CONFIGS: { vmm: Vmm; iommu: IommuKind }[] = [
  { vmm: 'pinion', iommu: 'legacy' },
  { vmm: 'qemu', iommu: 'legacy' },
  { vmm: 'pinion', iommu: 'iommufd' },
  { vmm: 'qemu', iommu: 'iommufd' },
];
const log = (s: string): void => void process.stderr.write(`bench ${(performance.now() / 1000).toFixed(0)}s: ${s}\n`);
type Sample = TrafficSample & { round: number };

if (!existsSync(kernel) || !existsSync(initrd)) throw new Error('usage: linux-guest.js KERNEL_VARIANT BZIMAGE INITRD OUT_JSON');
const peer = peerUp();
const { vfs } = vfsForGuests(1);
function report(): void {
  // Medians per VMM and path; ratios Pinion / QEMU per path.
  type Figures = Record<string, number>;
  const figures = (s: Sample[]): Figures => Object.fromEntries(FIGURES.map((k) => [k, median(s.map((x) => sampleFigures(x)[k]))]));
  const summary: Record<string, { pinion: Figures; qemu: Figures; ratio: Figures }> = {};
  for (const iommu of ['legacy', 'iommufd'] as const) {
    const p = figures(samples.filter((s) => s.vmm === 'pinion' && s.iommu === iommu));
    const q = figures(samples.filter((s) => s.vmm === 'qemu' && s.iommu === iommu));
    const ratio = Object.fromEntries(Object.keys(p).map((k) => [k, q[k] ? +(p[k]! / q[k]!).toFixed(3) : NaN]));
    summary[iommu] = { pinion: p, qemu: q, ratio };
  }
  const section = {
    date: new Date().toISOString(),
    commit: commitId(),
    rigKernel: basename(dirname(kernel)),
    guest: { memoryMiB: GUEST_MEMORY_MIB, cpus: 2, vf: vfs[0], ...PLAN },
    qemu: spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0],
    statistic: `median over ${new Set(samples.map((x) => x.round)).size} of ${ROUNDS} rounds (one boot per VMM and path each), order alternating by round; ratio = Pinion / QEMU`,
    summary,
    samples,
    failedBoots,
  };
  console.log(JSON.stringify(summary));
  if (outFile) {
    const all = existsSync(outFile) ? (JSON.parse(readFileSync(outFile, 'utf8')) as Record<string, unknown>) : {};
    all[variant] = section;
    writeFileSync(outFile, JSON.stringify(all, null, 2) + '\n');
  }
}

const samples: Sample[] = [];
const failedBoots: { vmm: Vmm; iommu: IommuKind; round: number; error: string }[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 ? [...CONFIGS].reverse() : CONFIGS;
  for (const c of order) {
    log(`round ${round}: ${c.vmm} ${c.iommu}`);
    try {
      const r = await measuredBootWithRetry({ ...c, kernel, initrd, device: vfs[0]! }, PLAN, peer);
      samples.push({ ...r.sample, round });
      failedBoots.push(...r.failures.map((error) => ({ ...c, round, error })));
    } catch (e) {
      // Twice short: the round has no figure for this VMM and path, and says why.
      failedBoots.push({ ...c, round, error: (e as Error).message }, { ...c, round, error: 'retry failed too' });
    }
  }
  // Each round's figures are kept as it ends: a rig that fails later leaves what was measured.
  report();
}

report();
process.exit(0);
