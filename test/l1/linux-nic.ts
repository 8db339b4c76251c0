// Runs in L1 as root: the Linux guest image under Pinion with an igb VF and
// then the PF assigned, on the legacy and iommufd paths. Its own drivers
// (igbvf, igb) bring the link up; it pings L1's peer igb, and a 4 MiB file
// crosses over TCP each way (HTTP: L1 -> guest by the guest's wget, guest ->
// L1 from the guest's httpd). Prints one JSON object for
// test/rig/linux-nic.test.ts.
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { spawnSync } from 'node:child_process';
import { LinuxGuest, peerPackets, peerUp, pfForGuest, PEER_IP, vfsForGuests } from '../../rig/l1/linux-guest.js';
import type { IommuKind } from '../../src/devices/vfio/iommu.js';
import { l1TscCalibration } from '../../rig/l1/tsc-rate.js';
import { pinnedKiB, progress } from './pinion.js';

const [kernelVariant, kernel, initrd] = process.argv.slice(2) as [string, string, string];
const GUEST_IP = '192.0.2.2';
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

// What the guest runs: each finding on a `pinion-guest: <key> ...` line.
const CHECK = `
p() { sed "s/^/pinion-guest: $1 /"; }
msix() { grep MSI /proc/interrupts | awk '{ s = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i; print $NF, s }'; }
echo "pinion-guest: cpus $(grep -c ^processor /proc/cpuinfo)"
echo "pinion-guest: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
echo "pinion-guest: sleep-start"; sleep 3; echo "pinion-guest: sleep-end"
grep -E 'System RAM|Reserved' /proc/iomem | p iomem
lspci -nnk 2>/dev/null | p lspci
msix | p msix-before
ping -c 20 -i 0.2 -W 2 ${PEER_IP} | tail -n 2 | p ping
mkdir -p /tmp/www && head -c 4194304 /dev/urandom > /tmp/www/g2h
echo "pinion-guest: sha g2h $(sha256sum < /tmp/www/g2h | cut -c1-64)"
httpd -p 8000 -h /tmp/www
wget -q -O /tmp/h2g http://${PEER_IP}:8000/h2g && echo "pinion-guest: sha h2g $(sha256sum < /tmp/h2g | cut -c1-64)"
echo "pinion-guest: fetch-me"
timeout 60 nc -l -p 5002 > /dev/null
msix | p msix-after
`;

// L1's side of the transfers.
const peer = peerUp();
const h2g = randomBytes(4 << 20);
const server = createServer((req, res) => (req.url === '/h2g' ? res.end(h2g) : ((res.statusCode = 404), res.end())));
await new Promise<void>((r) => server.listen(8000, PEER_IP, r));

async function fetchFromGuest(): Promise<string> {
  const r = await fetch(`http://${GUEST_IP}:8000/g2h`, { signal: AbortSignal.timeout(60_000) });
  const got = sha(Buffer.from(await r.arrayBuffer()));
  await new Promise<void>((resolve) => {
    const s = connect(5002, GUEST_IP, () => s.end('done\n'));
    s.on('close', () => resolve()).on('error', () => resolve());
  });
  return got;
}

async function bootOnce(device: string, iommu: IommuKind): Promise<Record<string, unknown>> {
  progress(`Linux guest on ${device} (${iommu})`);
  spawnSync('ip', ['neigh', 'flush', 'all']);
  const packetsBefore = peerPackets(peer);
  const g = new LinuxGuest({ vmm: 'pinion', iommu, kernel, initrd, device, ip: `${GUEST_IP}/24`, command: CHECK });
  const init = await g.waitFor(/^pinion-guest: init at/);
  const [s0, s1] = [await g.waitFor(/^pinion-guest: sleep-start/), await g.waitFor(/^pinion-guest: sleep-end/)];
  const link = await g.waitFor(/^pinion-guest: link /);
  progress(`  init at ${init ? (init.at / 1000).toFixed(1) : '-'} s, ${link?.text ?? 'no link line'}`);
  let g2hL1: string | undefined;
  let fetchError: string | undefined;
  let memory;
  if (await g.waitFor(/^pinion-guest: fetch-me/)) {
    memory = g.memory();
    try {
      g2hL1 = await fetchFromGuest();
    } catch (e) {
      fetchError = (e as Error).message;
    }
  }
  const end = await g.done;
  progress(`  ended: ${end.status ?? end.signal}`);
  return {
    device,
    iommu,
    status: end.status,
    signal: end.signal,
    stderr: g.stderr,
    initMs: init?.at,
    link: link?.text,
    cpus: g.marked('cpus')[0],
    clocksource: g.marked('clocksource')[0],
    sleep3Ms: s0 && s1 ? Math.round(s1.at - s0.at) : undefined,
    iomem: g.marked('iomem'),
    lspci: g.marked('lspci'),
    msixBefore: g.marked('msix-before'),
    msixAfter: g.marked('msix-after'),
    ping: g.marked('ping'),
    g2hGuest: g.marked('sha g2h')[0]?.trim(),
    g2hL1,
    h2gGuest: g.marked('sha h2g')[0]?.trim(),
    h2gL1: sha(h2g),
    fetchError,
    memory,
    peerPackets: peerPackets(peer) - packetsBefore,
    pinnedAfter: pinnedKiB(),
    console: g.console().split('\n').slice(-40).join('\n'),
  };
}

// A guest that dies on its own gets one more boot: before its init marker
// (nested KVM on TCG triple-faults an early boot now and then, under QEMU
// too), or later by a kernel panic or a triple fault that the VMM names on
// its own line (seen under QEMU too, e.g. `Fatal exception in interrupt`).
// Any other end, the VMM's own errors among them, is not retried. The first
// boot travels along as `crash` so the test says so.
const GUEST_DIED = /^pinion: guest (kernel panic|stopped): .*$/m;
async function boot(device: string, iommu: IommuKind): Promise<Record<string, unknown>> {
  const first = await bootOnce(device, iommu);
  const died = first.status === 0 ? undefined : GUEST_DIED.exec(first.stderr as string)?.[0];
  if (first.status === 0 || (first.initMs !== undefined && !died)) return first;
  const why = died ?? `died before init (status ${first.status ?? first.signal})`;
  progress(`  ${why}; booting once more`);
  return {
    ...(await bootOnce(device, iommu)),
    crash: { why, beforeInit: first.initMs === undefined, status: first.status, stderr: first.stderr, console: first.console },
  };
}

// L1 as the rig boots it: KVM's default TSC rate for these guests' vCPUs is the one L1 keeps time with.
const out: Record<string, unknown> = { kernel: kernelVariant, 'l1-tsc': await l1TscCalibration() };
const { vfs } = vfsForGuests(1);
for (const iommu of ['iommufd', 'legacy'] as const) out[`vf-${iommu}`] = await boot(vfs[0]!, iommu);
const pf = pfForGuest();
for (const iommu of ['iommufd', 'legacy'] as const) out[`pf-${iommu}`] = await boot(pf, iommu);
server.close();
console.log(JSON.stringify(out));
process.exit(0);
