// Runs inside L1: one measured boot of the Linux guest under a VMM. The
// guest pings L1 and runs iperf3 against it (TCP and optionally UDP, each
// way); L1 reads the VM's KVM exit counters and the peer igb's packet
// counters around the iperf3 runs, and the VMM's memory while it runs. The
// side-by-side benchmark and the demo share it.
import { spawn, spawnSync } from 'node:child_process';
import { LinuxGuest, peerPackets, PEER_IP, statsDelta, type GuestOptions, type KvmStats, type Vmm } from './linux-guest.js';
import type { IommuKind } from '../../src/devices/vfio/iommu.js';

export const IPERF_RUNS = ['tcp-g2h', 'tcp-h2g', 'udp-g2h', 'udp-h2g'] as const;
export type IperfRun = (typeof IPERF_RUNS)[number];

export interface TrafficPlan {
  pings: number;
  iperfSec: number;
  runs: readonly IperfRun[];
}

export interface TrafficSample {
  vmm: Vmm;
  iommu: IommuKind;
  initMs: number;
  linkMs: number;
  rttMs: { min: number; avg: number; max: number };
  pingLoss: string;
  mbps: Partial<Record<IperfRun, number>>;
  packets: number;
  exits: KvmStats;
  /** KVM's counters from the VM's creation to the init marker. */
  bootExits: KvmStats;
  exitsPer1000Packets: number;
  userspaceExitsPer1000Packets: number;
  rssKiB: number;
  guestRamRssKiB: number;
  /** RSS less the guest RAM mapping's resident pages: what the VMM itself holds. */
  ownKiB: number;
  vmLckKiB: number;
  vmPinKiB: number;
  status: number | null;
}

const IPERF_ARGS: Record<IperfRun, string> = {
  'tcp-g2h': '',
  'tcp-h2g': '-R',
  'udp-g2h': '-u -b 2G -l 1400',
  'udp-h2g': '-u -b 2G -l 1400 -R',
};

/** The guest's part: pings, then the iperf3 runs between two markers L1 samples its counters at. */
export function trafficJob(p: TrafficPlan): string {
  return [
    `ping -c ${p.pings} -i 0.1 -W 2 ${PEER_IP} | tail -n 2 | sed 's/^/pinion-guest: ping /'`,
    'echo "pinion-guest: traffic-start"; sleep 1',
    // A connection that stalls for good (seen under both VMMs, TCP guest -> L1) would hold iperf3 forever.
    ...p.runs.map(
      (r) =>
        `timeout ${p.iperfSec + 20} iperf3 -c ${PEER_IP} -t ${p.iperfSec} -f m ${IPERF_ARGS[r]} 2>&1 | grep receiver | sed 's/^/pinion-guest: iperf ${r} /'`,
    ),
    'echo "pinion-guest: traffic-end"; sleep 1',
  ].join('\n');
}

/** An iperf3 server on L1's side of the hub, for a guest to run against. */
function iperfServer(): { stop(): void } {
  const p = spawn('iperf3', ['-s', '-B', PEER_IP], { stdio: 'ignore' });
  return { stop: () => void p.kill() };
}

/** Boots the guest with the traffic job and returns its figures; `echo` shows the guest's console lines as they come. */
export async function measuredBoot(
  o: Omit<GuestOptions, 'command' | 'ip'>,
  plan: TrafficPlan,
  peer: string,
  echo?: (line: string) => void,
): Promise<TrafficSample> {
  spawnSync('ip', ['neigh', 'flush', 'all']);
  // An iperf3 server of the boot's own: one left serving a guest that died mid-test turns the next one away.
  const server = iperfServer();
  try {
    return await measuredBootOn(o, plan, peer, echo);
  } finally {
    server.stop();
  }
}

async function measuredBootOn(
  o: Omit<GuestOptions, 'command' | 'ip'>,
  plan: TrafficPlan,
  peer: string,
  echo?: (line: string) => void,
): Promise<TrafficSample> {
  const g = new LinuxGuest({ ...o, ip: '192.0.2.2/24', command: trafficJob(plan), limitMs: o.limitMs ?? 180_000, onLine: echo });
  const fail = (what: string): never => {
    g.kill();
    throw new Error(`${o.vmm} ${o.iommu}: ${what}\nconsole:\n${g.console().slice(-3000)}\nstderr:\n${g.stderr.slice(-2000)}`);
  };
  const init = (await g.waitFor(/^pinion-guest: init at/)) ?? fail('no init marker');
  const bootExits = g.kvmStats();
  const link = (await g.waitFor(/^pinion-guest: link /)) ?? fail('no link line');
  (await g.waitFor(/^pinion-guest: traffic-start/)) ?? fail('no traffic-start');
  const [s0, p0] = [g.kvmStats(), peerPackets(peer)];
  (await g.waitFor(/^pinion-guest: traffic-end/)) ?? fail('no traffic-end');
  const [s1, p1] = [g.kvmStats(), peerPackets(peer)];
  const mem = g.memory();
  // The figures are in; a guest that does not get to power off within 60 s is ended (its status says so).
  const late = setTimeout(() => g.kill(), 60_000);
  const end = await g.done;
  clearTimeout(late);
  const ping = g.marked('ping');
  const rtt = /min\/avg\/max = ([\d.]+)\/([\d.]+)\/([\d.]+)/.exec(ping.join(' ')) ?? fail(`no ping summary: ${ping.join(' | ')}`);
  const mbps: TrafficSample['mbps'] = {};
  for (const r of plan.runs) {
    const l = g.marked(`iperf ${r}`)[0] ?? fail(`no iperf3 ${r} result`);
    mbps[r] = Number(/([\d.]+) Mbits\/sec/.exec(l)?.[1] ?? NaN);
  }
  const exits = statsDelta(s0, s1);
  const packets = p1 - p0;
  return {
    vmm: o.vmm,
    iommu: o.iommu,
    initMs: Math.round(init.at),
    linkMs: Math.round(link.at),
    rttMs: { min: Number(rtt[1]), avg: Number(rtt[2]), max: Number(rtt[3]) },
    pingLoss: ping.find((l) => /packet loss/.test(l)) ?? '',
    mbps,
    packets,
    exits,
    bootExits,
    exitsPer1000Packets: +((exits.exits * 1000) / packets).toFixed(1),
    userspaceExitsPer1000Packets: +(((exits.ioExits + exits.mmioExits) * 1000) / packets).toFixed(2),
    rssKiB: mem.rssKiB,
    guestRamRssKiB: mem.guestRamRssKiB,
    ownKiB: mem.rssKiB - mem.guestRamRssKiB,
    vmLckKiB: mem.vmLckKiB,
    vmPinKiB: mem.vmPinKiB,
    status: end.status,
  };
}

/** measuredBoot, once more from a fresh VMM when a boot falls short (the failure is kept, not hidden). */
export async function measuredBootWithRetry(
  o: Omit<GuestOptions, 'command' | 'ip'>,
  plan: TrafficPlan,
  peer: string,
  echo?: (line: string) => void,
): Promise<{ sample: TrafficSample; failures: string[] }> {
  const failures: string[] = [];
  for (;;) {
    try {
      return { sample: await measuredBoot(o, plan, peer, echo), failures };
    } catch (e) {
      failures.push((e as Error).message);
      process.stderr.write(
        `l1: ${o.vmm} ${o.iommu} boot failed, ${failures.length === 1 ? 'retrying once' : 'giving up'}: ${(e as Error).message.split('\n')[0]}\n`,
      );
      if (failures.length > 1) throw new Error(failures.join('\n---- run again:\n'));
    }
  }
}
