// The figures of one measured Linux guest boot (rig/l1/guest-traffic.ts), by
// name: what bench/linux-guest.ts summarises and bench/report.ts prints.
import type { TrafficSample } from '../rig/l1/guest-traffic.js';

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
