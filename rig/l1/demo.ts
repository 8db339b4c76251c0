// Runs inside L1 for `pinion demo`: the Linux guest image with an igb VF
// under Pinion (its console shown as it boots, links up, pings and runs
// iperf3 against L1), then the same under QEMU on the same VF, on both IOMMU
// paths, and the two side by side. Exits non-zero if any boot fell short.
import { peerUp, vfsForGuests, vmmArgv, type Vmm } from './linux-guest.js';
import type { IommuKind } from '../../src/devices/vfio/iommu.js';
import { assertL1TscRate } from './tsc-rate.js';
import { measuredBootWithRetry, type TrafficSample } from './guest-traffic.js';

const [kernel = '', initrd = ''] = process.argv.slice(2);
const PLAN = { pings: 20, iperfSec: 2, runs: ['tcp-g2h', 'tcp-h2g'] as const };
await assertL1TscRate();
const peer = peerUp();
const { pf, vfs } = vfsForGuests(1);
console.log(
  `igb PF ${pf} stays with L1's igb driver; its VF ${vfs[0]} is bound to vfio-pci. L1's peer igb is 192.0.2.1 on the QEMU-internal hub.`,
);
const rows: TrafficSample[] = [];
let ok = true;
for (const iommu of ['iommufd', 'legacy'] as IommuKind[]) {
  for (const vmm of ['pinion', 'qemu'] as Vmm[]) {
    const o = { vmm, iommu, kernel, initrd, device: vfs[0]! };
    const [cmd, args] = vmmArgv({ ...o, ip: '192.0.2.2/24' });
    console.log(
      `\n$ ${vmm === 'pinion' ? 'pinion' : cmd} ${(vmm === 'pinion' ? args.slice(1) : args).map((a) => (a.includes(' ') ? `'${a.replace(/pinion\.run=\S+/, 'pinion.run=…')}'` : a)).join(' ')}`,
    );
    // The first boot's console is shown as it comes; the rest only as their figures.
    const show = rows.length === 0 ? (l: string) => console.log(`  guest| ${l}`) : undefined;
    const { sample: s, failures } = await measuredBootWithRetry(o, PLAN, peer, show);
    if (failures.length) console.log(`  (the first boot fell short and was run again: ${failures[0]!.split('\n')[0]})`);
    console.log(
      `  ${vmm} (${iommu}): init after ${(s.initMs / 1000).toFixed(1)} s, ${s.pingLoss}, TCP ${s.mbps['tcp-g2h']} / ${s.mbps['tcp-h2g']} Mbit/s, exit ${s.status}`,
    );
    ok &&= s.status === 0 && /\b0% packet loss/.test(s.pingLoss);
    rows.push(s);
  }
}

const cols = [
  'VMM',
  'path',
  'boot to init s',
  'link up s',
  'RTT avg ms',
  'TCP guest->L1',
  'TCP L1->guest',
  'exits/1000 pkts',
  'to userspace',
  'RSS less RAM MiB',
  'VmLck+VmPin MiB',
];
const table = rows.map((s) => [
  s.vmm,
  s.iommu,
  (s.initMs / 1000).toFixed(1),
  (s.linkMs / 1000).toFixed(1),
  s.rttMs.avg.toFixed(2),
  `${s.mbps['tcp-g2h']} Mbit/s`,
  `${s.mbps['tcp-h2g']} Mbit/s`,
  s.exitsPer1000Packets.toFixed(0),
  s.userspaceExitsPer1000Packets.toFixed(1),
  (s.ownKiB / 1024).toFixed(0),
  ((s.vmLckKiB + s.vmPinKiB) / 1024).toFixed(0),
]);
const width = cols.map((c, i) => Math.max(c.length, ...table.map((r) => r[i]!.length)));
const fmt = (r: string[]): string => r.map((v, i) => v.padEnd(width[i]!)).join('  ');
console.log(
  `\nSide by side (one boot each, same VF, same kernel and initramfs; L1's clock):\n${fmt(cols)}\n${fmt(width.map((w) => '-'.repeat(w)))}\n${table.map(fmt).join('\n')}`,
);
console.log('Benchmarks over several alternating boots: npm run bench (bench/results/linux-guest.json).');
process.exit(ok ? 0 : 1);
