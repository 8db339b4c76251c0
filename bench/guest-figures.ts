// The figures of one measured Linux guest boot (rig/l1/guest-traffic.ts), by
// name, with their units and which way is better: the cells of
// bench/linux-guest.ts.
import type { TrafficSample } from '../rig/l1/guest-traffic.js';
import type { Better } from './method.js';

export const FIGURES = [
  'initMs',
  'rttMinMs',
  'rttAvgMs',
  'rttMaxMs',
  'tcpG2hMbps',
  'tcpH2gMbps',
  'udpG2hMbps',
  'udpH2gMbps',
  'exitsPer1000Packets',
  'userspaceExitsPer1000Packets',
  'rssKiB',
  'ownKiB',
  'vmLckKiB',
  'vmPinKiB',
] as const;
export type Figure = (typeof FIGURES)[number];

export function sampleFigures(s: TrafficSample): Record<Figure, number> {
  return {
    initMs: s.initMs,
    rttMinMs: s.rttMs.min,
    rttAvgMs: s.rttMs.avg,
    rttMaxMs: s.rttMs.max,
    tcpG2hMbps: s.mbps['tcp-g2h']!,
    tcpH2gMbps: s.mbps['tcp-h2g']!,
    udpG2hMbps: s.mbps['udp-g2h']!,
    udpH2gMbps: s.mbps['udp-h2g']!,
    exitsPer1000Packets: s.exitsPer1000Packets,
    userspaceExitsPer1000Packets: s.userspaceExitsPer1000Packets,
    rssKiB: s.rssKiB,
    ownKiB: s.ownKiB,
    vmLckKiB: s.vmLckKiB,
    vmPinKiB: s.vmPinKiB,
  };
}

/** How each figure is shown and which way is better: times, exits and memory lower, throughput higher. */
export const FIGURE_INFO: Record<Figure, { label: string; unit: string; better: Better; scale: number }> = {
  initMs: { label: 'VMM start to guest init', unit: 's', better: 'lower', scale: 1 / 1000 },
  rttMinMs: { label: 'ping RTT min', unit: 'ms', better: 'lower', scale: 1 },
  rttAvgMs: { label: 'ping RTT avg', unit: 'ms', better: 'lower', scale: 1 },
  rttMaxMs: { label: 'ping RTT max', unit: 'ms', better: 'lower', scale: 1 },
  tcpG2hMbps: { label: 'TCP guest -> L1', unit: 'Mbit/s', better: 'higher', scale: 1 },
  tcpH2gMbps: { label: 'TCP L1 -> guest', unit: 'Mbit/s', better: 'higher', scale: 1 },
  udpG2hMbps: { label: 'UDP guest -> L1', unit: 'Mbit/s', better: 'higher', scale: 1 },
  udpH2gMbps: { label: 'UDP L1 -> guest', unit: 'Mbit/s', better: 'higher', scale: 1 },
  exitsPer1000Packets: { label: 'KVM exits / 1000 packets', unit: 'exits', better: 'lower', scale: 1 },
  userspaceExitsPer1000Packets: { label: 'exits to userspace / 1000 packets', unit: 'exits', better: 'lower', scale: 1 },
  rssKiB: { label: 'VMM RSS', unit: 'MiB', better: 'lower', scale: 1 / 1024 },
  ownKiB: { label: 'VMM RSS less guest RAM', unit: 'MiB', better: 'lower', scale: 1 / 1024 },
  vmLckKiB: { label: 'VmLck', unit: 'MiB', better: 'lower', scale: 1 / 1024 },
  vmPinKiB: { label: 'VmPin', unit: 'MiB', better: 'lower', scale: 1 / 1024 },
};
