// Pinion and QEMU side by side in one L1 boot: the same bzImage, initramfs
// and VF, on the legacy container and on iommufd. Per boot: VMM process start
// to the guest's init (L1's clock), ping RTT to L1, iperf3 TCP and UDP each
// way, KVM exits per 1000 packets during iperf3 and how many reached
// userspace (KVM's debugfs counters for the VM, the same source for both
// VMMs), and the VMM's RSS, VmLck and VmPin. Method of bench/method.ts: a
// round boots each VMM once per path, in ABBA order per round; each figure
// is a cell with one pair per round, ratio = QEMU / Pinion for times, exits
// and memory and Pinion / QEMU for throughput. Boots are expensive, so rounds
// are capped (PINION_BENCH_ROUNDS, default 5) and most cells end noise-bound.
// A boot of each VMM on each path comes first and is not measured (warmUp).
// Usage (in L1, as root): node dist/bench/linux-guest.js KERNEL_VARIANT BZIMAGE INITRD OUT_JSON
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { GUEST_MEMORY_MIB, LinuxGuest, peerUp, vfsForGuests, type Vmm } from '../rig/l1/linux-guest.js';
import type { IommuKind } from '../src/devices/vfio/iommu.js';
import { IPERF_RUNS, measuredBootWithRetry, type TrafficSample } from '../rig/l1/guest-traffic.js';
import { assertL1TscRate } from '../rig/l1/tsc-rate.js';
import { FIGURE_INFO, FIGURES, sampleFigures } from './guest-figures.js';
import { inOrder, makeRun, provenance, runRounds, withRun, type Cell, type CellSpec, type RoundFigures, stopRule } from './method.js';

const [variant = 'type1', kernel = '', initrd = '', outFile = ''] = process.argv.slice(2);
const RULE = stopRule({ minRounds: 3, maxRounds: 5, maxSeconds: 2400 });
const PLAN = { pings: 100, iperfSec: 4, runs: IPERF_RUNS };
const PATHS: IommuKind[] = ['legacy', 'iommufd'];
const log = (s: string): void => void process.stderr.write(`bench ${(performance.now() / 1000).toFixed(0)}s: ${s}\n`);
type Sample = TrafficSample & { round: number };

if (!existsSync(kernel) || !existsSync(initrd)) throw new Error('usage: linux-guest.js KERNEL_VARIANT BZIMAGE INITRD OUT_JSON');
const tsc = await assertL1TscRate();
const peer = peerUp();
const { vfs } = vfsForGuests(1);
const samples: Sample[] = [];
const failedBoots: { vmm: Vmm; iommu: IommuKind; round: number; error: string }[] = [];

const SPECS: CellSpec[] = PATHS.flatMap((iommu) =>
  FIGURES.map((f) => ({
    name: `${iommu}: ${FIGURE_INFO[f].label}`,
    unit: FIGURE_INFO[f].unit,
    better: FIGURE_INFO[f].better,
    figure: `one boot's ${f}`,
  })),
);

/** One boot's figures, scaled to the cell's unit; undefined when the boot fell short twice. */
async function boot(vmm: Vmm, iommu: IommuKind, round: number): Promise<Record<string, number> | undefined> {
  log(`round ${round}: ${vmm} ${iommu}`);
  try {
    const r = await measuredBootWithRetry({ vmm, iommu, kernel, initrd, device: vfs[0]! }, PLAN, peer);
    samples.push({ ...r.sample, round });
    failedBoots.push(...r.failures.map((error) => ({ vmm, iommu, round, error })));
    const f = sampleFigures(r.sample);
    return Object.fromEntries(FIGURES.map((k) => [k, f[k] * FIGURE_INFO[k].scale]));
  } catch (e) {
    // Twice short: the round has no pair for this path, and says why.
    failedBoots.push({ vmm, iommu, round, error: (e as Error).message }, { vmm, iommu, round, error: 'retry failed too' });
    return undefined;
  }
}

async function round(k: number, order: 'AB' | 'BA'): Promise<RoundFigures> {
  const out: RoundFigures = {};
  for (const iommu of PATHS) {
    const [p, q] = await inOrder(
      order,
      () => boot('pinion', iommu, k),
      () => boot('qemu', iommu, k),
    );
    if (!p || !q) continue;
    for (const f of FIGURES)
      if (Number.isFinite(p[f]) && Number.isFinite(q[f])) out[`${iommu}: ${FIGURE_INFO[f].label}`] = { pinion: p[f]!, reference: q[f]! };
  }
  return out;
}

function write(cells: Cell[], complete: boolean): void {
  const run = makeRun({
    benchmark: 'linux-guest',
    variant,
    reference: `QEMU (${spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]}), the same bzImage, initramfs and VF, same L1 boot`,
    provenance: { ...provenance(), rigKernel: process.env.PINION_RIG_KERNEL_ID || basename(dirname(kernel)) },
    cells,
    extra: {
      complete,
      l1Tsc: tsc,
      warmUpInitMs,
      guest: { memoryMiB: GUEST_MEMORY_MIB, cpus: 2, vf: vfs[0], ...PLAN },
      samples,
      failedBoots,
    },
  });
  console.log(JSON.stringify(run.summary));
  if (outFile) writeFileSync(outFile, withRun(existsSync(outFile) ? readFileSync(outFile, 'utf8') : undefined, run));
}

/**
 * One boot of each VMM on each path before round 0, not measured: the first VMM into an L1 reads its binary,
 * node's modules and the guest image from the host's 9p share into L1's page cache, which a warm VMM then
 * finds there (a cold Pinion boot took 7.5 s to init, the next 4.7 s).
 */
async function warmUp(): Promise<number[]> {
  const initMs: number[] = [];
  for (const iommu of PATHS)
    for (const vmm of ['pinion', 'qemu'] as Vmm[]) {
      const g = new LinuxGuest({ vmm, iommu, kernel, initrd, device: vfs[0]!, ip: '192.0.2.2/24', command: 'true', limitMs: 120_000 });
      const init = await g.waitFor(/^pinion-guest: init at/);
      const end = await g.done;
      log(`warm-up: ${vmm} ${iommu} init after ${init ? (init.at / 1000).toFixed(1) : '-'} s, status ${end.status ?? end.signal}`);
      initMs.push(init?.at ?? NaN);
    }
  return initMs;
}
const warmUpInitMs = await warmUp();

// Each round's figures are kept as it ends: a rig that fails later leaves what was measured.
const cells = await runRounds(SPECS, RULE, round, { onRound: (_k, _o, c) => write(c, false) });
write(cells, true);
process.exit(0);
