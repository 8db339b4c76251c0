// Runs in L1 as root: assigns igb VFs and the PF to test guests through
// `pinion run --device` on both IOMMU paths, two VMs at once, and the bad
// cases, then prints one JSON object. test/rig/assign.test.ts asserts on it.
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { background, pinnedKiB, run, type Run } from './pinion.js';
import { assignablePf, bindVfio, createVfs, peerPf, pciDevice, sharedGroup, unbind } from '../../rig/l1/sysfs.js';

const kernel = process.argv[2] ?? 'type1';
const out: Record<string, unknown> = { kernel };
const pf = assignablePf().bdf;

// Bad input first, while the PF is still bound to igb.
out.notBound = run(['--device', pf]);
out.noSuchDevice = run(['--device', '0000:07:00.0']);
out.badBdf = run(['--device', 'eth0']);

// L1's peer igb: its link up, counting what the guests send, broadcasting frames for them to receive.
const peer = peerPf().bdf;
const peerIf = readdirSync(`/sys/bus/pci/devices/${peer}/net`)[0]!;
spawnSync('ip', ['link', 'set', peerIf, 'up']);
const rxPackets = (): number => Number(readFileSync(`/sys/class/net/${peerIf}/statistics/rx_packets`, 'utf8'));
const SENDER = fileURLToPath(new URL('../../../test/support/peer-send.py', import.meta.url));
function withPeer(args: string[]): Run & { peerRxBefore: number; peerRxAfter: number } {
  const before = rxPackets();
  const sender = spawn('python3', [SENDER, peerIf], { stdio: 'ignore' });
  const r = run(args);
  sender.kill();
  return { ...r, peerRxBefore: before, peerRxAfter: rxPackets() };
}

// VFs: the PF stays with L1's igb driver, which answers the VF mailbox only while its netdev is up.
spawnSync('ip', ['link', 'set', readdirSync(`/sys/bus/pci/devices/${pf}/net`)[0]!, 'up']);
const vfs = createVfs(pf, 2).map((b) => bindVfio(b).bdf);
out.vfs = vfs;
out.vfIommufd = withPeer(['--device', vfs[0]!, '--iommu', 'iommufd', '--cmdline', 'igb exit=0']);
out.vfLegacy = withPeer(['--device', vfs[0]!, '--iommu', 'legacy', '--cmdline', 'igb exit=0']);
out.pinnedAfterVf = pinnedKiB();

// Two VMs at once, each with its own VF; then a third asks for a VF the first holds.
for (const iommu of ['iommufd', 'legacy'] as const) {
  const a = background(['--device', vfs[0]!, '--iommu', iommu, '--cmdline', 'hang']);
  const b = background(['--device', vfs[1]!, '--iommu', iommu, '--cmdline', 'hang']);
  await Promise.all([a.started, b.started]);
  const pinnedDuring = pinnedKiB();
  const inUse = run(['--device', vfs[0]!, '--iommu', iommu, '--cmdline', 'exit=0']);
  const [ra, rb] = [await a.stop(), await b.stop()];
  out[`twoVms-${iommu}`] = { a: ra, b: rb, pidA: a.pid, inUse, pinnedDuring, pinnedAfter: pinnedKiB() };
}

// The PF itself, with the guest's igb driver: loopback DMA, MSI-X, frames to the peer.
writeFileSync(`/sys/bus/pci/devices/${pf}/sriov_numvfs`, '0');
bindVfio(pf);
for (const iommu of ['iommufd', 'legacy'] as const)
  out[`pf-${iommu}`] = withPeer(['--device', pf, '--iommu', iommu, '--cmdline', 'igb exit=0']);
out.pinnedAfterPf = pinnedKiB();

// A guest DMA to an IOVA Pinion never mapped, while another VM runs (on the peer igb, now assigned too).
bindVfio(peer);
{
  const other = background(['--device', peer, '--iommu', 'iommufd', '--cmdline', 'hang']);
  await other.started;
  const dmesgBefore = spawnSync('dmesg', { encoding: 'utf8' }).stdout.split('\n').length;
  const bad = run(['--device', pf, '--iommu', 'iommufd', '--cmdline', 'igb baddma exit=0']);
  const faults = spawnSync('dmesg', { encoding: 'utf8' })
    .stdout.split('\n')
    .slice(dmesgBefore - 1)
    .filter((l) => /DMAR/.test(l));
  out.unmappedDma = { bad, faults, other: await other.stop() };
}
out.pfDriver = pciDevice(pf).driver;

// A group of several devices (behind the PCIe-to-PCI bridge): not viable while
// one member has a host driver; viable, and assignable, once it is unbound.
{
  const g = sharedGroup();
  const [a, b] = g.functions as [string, string];
  bindVfio(a);
  const notViable = Object.fromEntries(
    (['iommufd', 'legacy'] as const).map((iommu) => [iommu, run(['--device', a, '--iommu', iommu, '--cmdline', 'exit=0'])]),
  );
  const bDriver = pciDevice(b).driver;
  const pinnedAfterRefusal = pinnedKiB();
  unbind(b);
  const viable = Object.fromEntries(
    (['iommufd', 'legacy'] as const).map((iommu) => [iommu, run(['--device', a, '--iommu', iommu, '--cmdline', 'exit=0'])]),
  );
  out.sharedGroup = { ...g, a, b, bDriver, notViable, pinnedAfterRefusal, viable, pinnedAfter: pinnedKiB() };
}
console.log(JSON.stringify(out));
