// Prints the README's tables from bench/results/linux-guest.json and
// nic.json: every measured cell, with the statistic and the commit it came from.
// Usage: node dist/bench/report.js [RESULTS_DIR]
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TrafficSample } from '../rig/l1/guest-traffic.js';
import { sampleFigures, type Figure } from './guest-figures.js';

const dir = process.argv[2] ?? 'bench/results';
type Figures = Record<string, number>;
interface Section {
  commit: string;
  rigKernel: string;
  statistic: string;
  summary: Record<string, { pinion: Figures; qemu: Figures; ratio: Figures }>;
  failedBoots: { vmm: string; iommu: string; round: number; error: string }[];
  samples: TrafficSample[];
}

const ROWS: [Figure, string, (v: number) => string][] = [
  ['initMs', 'VMM start to guest init (s)', (v) => (v / 1000).toFixed(1)],
  ['rttAvgMs', 'ping RTT avg (ms)', (v) => v.toFixed(2)],
  ['rttMinMs', 'ping RTT min (ms)', (v) => v.toFixed(2)],
  ['rttMaxMs', 'ping RTT max (ms)', (v) => v.toFixed(1)],
  ['tcpG2hMbps', 'TCP guest -> L1 (Mbit/s)', (v) => v.toFixed(1)],
  ['tcpH2gMbps', 'TCP L1 -> guest (Mbit/s)', (v) => v.toFixed(1)],
  ['udpG2hMbps', 'UDP guest -> L1 (Mbit/s)', (v) => v.toFixed(1)],
  ['udpH2gMbps', 'UDP L1 -> guest (Mbit/s)', (v) => v.toFixed(1)],
  ['exitsPer1000Packets', 'KVM exits / 1000 packets', (v) => v.toFixed(0)],
  ['userspaceExitsPer1000Packets', '  of which to userspace', (v) => v.toFixed(2)],
  ['ownKiB', 'VMM RSS less guest RAM (MiB)', (v) => (v / 1024).toFixed(0)],
  ['vmLckKiB', 'VmLck (MiB)', (v) => (v / 1024).toFixed(0)],
  ['vmPinKiB', 'VmPin (MiB)', (v) => (v / 1024).toFixed(0)],
];

const lg = join(dir, 'linux-guest.json');
if (existsSync(lg)) {
  const all = JSON.parse(readFileSync(lg, 'utf8')) as Record<string, Section>;
  for (const [kernel, s] of Object.entries(all)) {
    console.log(`\n${kernel} kernel (${s.rigKernel}, commit ${s.commit}); ${s.statistic}; each cell: median (min-max over the boots):\n`);
    const paths = Object.keys(s.summary);
    console.log(`| | ${paths.map((p) => `Pinion ${p} | QEMU ${p} | ratio`).join(' | ')} |`);
    console.log(`|---|${paths.map(() => '---:|---:|---:').join('|')}|`);
    for (const [k, label, fmt] of ROWS) {
      const cells = paths.map((p) => {
        const x = s.summary[p]!;
        const r = x.ratio[k];
        const span = (vmm: string): string => {
          const v = s.samples.filter((b) => b.vmm === vmm && b.iommu === p).map((b) => sampleFigures(b)[k]);
          return v.length > 1 ? ` (${fmt(Math.min(...v))}-${fmt(Math.max(...v))})` : '';
        };
        return `${fmt(x.pinion[k]!)}${span('pinion')} | ${fmt(x.qemu[k]!)}${span('qemu')} | ${r === null || r === undefined || !Number.isFinite(r) ? '-' : r.toFixed(2)}`;
      });
      console.log(`| ${label} | ${cells.join(' | ')} |`);
    }
    const failed = s.failedBoots.filter((f) => f.error !== 'retry failed too');
    const twice = (f: Section['failedBoots'][number]): boolean =>
      s.failedBoots.some((g) => g.error === 'retry failed too' && g.vmm === f.vmm && g.iommu === f.iommu && g.round === f.round);
    const what = (f: Section['failedBoots'][number]): string =>
      `${f.vmm} ${f.iommu} round ${f.round} (${f.error.split('\n')[0]}${twice(f) ? '; short again, so that round has no figure for it' : ''})`;
    console.log(
      `\n${s.samples.length} boots measured; ${failed.length} fell short and were run again${failed.length ? `: ${failed.map(what).join('; ')}` : ''}.`,
    );
  }
}

const nic = join(dir, 'nic.json');
if (existsSync(nic)) {
  const all = JSON.parse(readFileSync(nic, 'utf8')) as Record<
    string,
    {
      commit: string;
      rigKernel: string;
      statistic: string;
      pinionUs: number;
      qemuUs: number;
      ratio: number;
      ratioInterval: [number, number];
      lost: number;
    }
  >;
  console.log(`\nUDP echo round trip through the VF (bench/nic.ts):\n`);
  console.log('| kernel, path | Pinion (µs) | QEMU (µs) | ratio | interval | lost | commit |');
  console.log('|---|---:|---:|---:|---|---:|---|');
  for (const [k, r] of Object.entries(all))
    console.log(
      `| ${k} | ${r.pinionUs} | ${r.qemuUs} | ${r.ratio.toFixed(2)} | ${r.ratioInterval.map((x) => x.toFixed(2)).join('–')} | ${r.lost} | ${r.commit} |`,
    );
  console.log(`\n${Object.values(all)[0]?.statistic ?? ''}`);
}
