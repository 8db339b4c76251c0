// A real Linux guest drives the assigned NIC, on both kernels and both IOMMU
// paths, with an igb VF and then the PF: 2 vCPUs online on kvm-clock, its
// memory map, lspci with igbvf/igb bound, MSI-X counts rising under traffic,
// 20/20 pings to L1, a 4 MiB file over TCP each way with the same sha256,
// poweroff ending the VM with status 0, nothing left pinned.
import t from 'tap';
import { ensureGuestImage } from '../../rig/guest-image.js';
import type { TscCalibration } from '../../rig/l1/tsc-rate.js';
import { l1Json } from '../support/rig.js';

interface Boot {
  device: string;
  iommu: string;
  status: number | null;
  signal: string | null;
  stderr: string;
  initMs?: number;
  link?: string;
  cpus?: string;
  clocksource?: string;
  sleep3Ms?: number;
  iomem: string[];
  lspci: string[];
  msixBefore: string[];
  msixAfter: string[];
  ping: string[];
  g2hGuest?: string;
  g2hL1?: string;
  h2gGuest?: string;
  h2gL1: string;
  fetchError?: string;
  memory?: { rssKiB: number; guestRamHugeKiB: number; vmLckKiB: number; vmPinKiB: number };
  peerPackets: number;
  pinnedAfter: number;
  console: string;
  crash?: { why: string; beforeInit: boolean; status: number | null; stderr: string; console: string };
}

/** MSI-X interrupts per vector name ("eth0-rx-0" -> count), from the guest's /proc/interrupts lines. */
function msix(lines: string[]): Map<string, number> {
  return new Map(lines.map((l) => l.split(' ')).map(([name, n]) => [name!, Number(n)]));
}

for (const kernel of ['type1', 'compat'] as const) {
  t.test(`${kernel} kernel`, async (t) => {
    const image = ensureGuestImage(kernel);
    const { result: o, run } = await l1Json<Record<string, Boot>>(kernel, 'linux-nic', [kernel, image.kernel, image.initrd], {
      timeoutSec: 1200,
    });
    t.equal(run.exitCode, 0, 'the L1 script ran to the end');
    const tsc = (o as Record<string, unknown>)['l1-tsc'] as TscCalibration;
    t.ok(tsc.refinedMHz !== undefined && !tsc.stale, "L1, given the host's TSC rate, refines it within KVM's tolerance", { tsc });
    for (const [fn, driver, id] of [
      ['vf', 'igbvf', '8086:10ca'],
      ['pf', 'igb', '8086:10c9'],
    ] as const) {
      for (const iommu of ['iommufd', 'legacy'] as const) {
        t.test(`${fn.toUpperCase()} on ${iommu}`, async (t) => {
          const b = o[`${fn}-${iommu}`]!;
          const ctx = `console:\n${b.console}\nstderr:\n${b.stderr}`;
          if (b.crash) {
            const when = b.crash.beforeInit ? 'before init' : 'after init';
            t.comment(`the first boot's guest died ${when} and was booted once more: ${b.crash.why}`);
            process.stderr.write(`!!! GUEST CRASH (${kernel}, ${fn} on ${iommu}, ${when}), retried: ${b.crash.why}\n${b.crash.console}\n`);
          }
          t.equal(b.status, 0, 'poweroff in the guest ends the VM with status 0', { diagnostic: b.status !== 0, ctx });
          t.match(b.stderr, /^pinion: guest powered off; the VM ends$/m);
          t.equal(b.cpus, '2', 'both vCPUs in /proc/cpuinfo');
          t.equal(b.clocksource, 'kvm-clock', 'the guest keeps time on kvm-clock');
          t.ok(
            b.sleep3Ms !== undefined && b.sleep3Ms > 2700 && b.sleep3Ms < 4000,
            "the guest's `sleep 3` lasts 3 s of L1's clock (console latency aside)",
            { sleep3Ms: b.sleep3Ms },
          );
          t.same(
            b.iomem,
            [
              '00000000-00000fff : Reserved',
              '00001000-0009fbff : System RAM',
              '0009fc00-000fffff : Reserved',
              '00100000-0fffffff : System RAM',
            ],
            '/proc/iomem is the guest memory map (256 MiB; the first page Linux keeps for itself)',
          );
          const fnLine = b.lspci.findIndex((l) => l.includes(`[${id}]`));
          t.ok(fnLine >= 0, `lspci shows the function [${id}]`, { lspci: b.lspci });
          t.ok(
            b.lspci.slice(fnLine + 1, fnLine + 4).some((l) => l.trim() === `Kernel driver in use: ${driver}`),
            `with ${driver} bound`,
            { lspci: b.lspci },
          );
          t.match(b.link ?? '', new RegExp(`^pinion-guest: link eth0 up driver=${driver} `), 'link up');
          t.ok(
            b.ping.some((l) => /^20 packets transmitted, 20 packets received, 0% packet loss$/.test(l)),
            '20/20 pings to L1',
            { ping: b.ping, ctx },
          );
          t.equal(b.h2gGuest, b.h2gL1, 'L1 -> guest: 4 MiB over TCP, same sha256');
          t.ok(b.g2hGuest && b.g2hGuest === b.g2hL1, 'guest -> L1: 4 MiB over TCP, same sha256', {
            guest: b.g2hGuest,
            l1: b.g2hL1,
            error: b.fetchError,
          });
          const before = msix(b.msixBefore);
          const after = msix(b.msixAfter);
          const rx = [...after.keys()].filter((k) => /rx|TxRx/.test(k));
          t.ok(rx.length > 0, 'the driver uses MSI-X vectors', { msixAfter: b.msixAfter });
          // Summed over the receive vectors: the PF spreads its flows over one queue per vCPU, and NAPI takes
          // more frames per interrupt the faster the guest runs.
          const rxSum = (m: Map<string, number>): number => rx.reduce((n, k) => n + (m.get(k) ?? 0), 0);
          t.ok(rxSum(after) > rxSum(before) + 100, 'MSI-X receive interrupts rise under traffic', {
            before: b.msixBefore,
            after: b.msixAfter,
          });
          t.ok(b.memory && b.memory.vmLckKiB + b.memory.vmPinKiB >= 256 * 1024, 'guest RAM pinned while it runs', { memory: b.memory });
          t.ok(
            b.memory && b.memory.guestRamHugeKiB >= 0.9 * 256 * 1024,
            'guest RAM mapped with 2 MiB pages: anonymous THP, prefaulted before it is pinned',
            { memory: b.memory },
          );
          t.equal(b.pinnedAfter, 0, 'nothing pinned after the VM ends');
        });
      }
    }
  });
}
