// Runs in L1 as root: assigns igb VFs and the PF to test guests through
// `pinion run --device` on both IOMMU paths, two VMs at once, and the bad
// cases, then prints one JSON object. test/rig/assign.test.ts asserts on it.
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { assignablePf, bindVfio, createVfs, peerPf, pciDevice } from '../../rig/l1/sysfs.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const GUEST = fileURLToPath(new URL('../../guest/pinion-guest.elf', import.meta.url));

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[]): Run {
  const r = spawnSync(process.execPath, [CLI, 'run', '--payload', GUEST, ...args], { encoding: 'utf8', timeout: 180_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A VM that runs until told: resolves with its end once `stop()` is called. */
function background(args: string[]): { started: Promise<void>; stop: () => Promise<Run>; pid: number } {
  const p = spawn(process.execPath, [CLI, 'run', '--payload', GUEST, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let ready: () => void;
  const started = new Promise<void>((r) => (ready = r));
  p.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    if (stdout.includes('cmdline')) ready();
  });
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<Run>((resolve) => p.on('close', (status) => resolve({ status, stdout, stderr })));
  return { started, pid: p.pid!, stop: () => (p.kill('SIGTERM'), done) };
}

/** Locked memory charged to all processes now (VmLck + VmPin, KiB), to show nothing stays pinned. */
function pinnedKiB(): number {
  let n = 0;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const s = readFileSync(`/proc/${pid}/status`, 'utf8');
      n += Number(/^VmLck:\s+(\d+)/m.exec(s)?.[1] ?? 0) + Number(/^VmPin:\s+(\d+)/m.exec(s)?.[1] ?? 0);
    } catch {
      // exited
    }
  }
  return n;
}

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
for (const iommu of ['iommufd', 'legacy'] as const) out[`pf-${iommu}`] = withPeer(['--device', pf, '--iommu', iommu, '--cmdline', 'igb exit=0']);
out.pinnedAfterPf = pinnedKiB();

// A guest DMA to an IOVA Pinion never mapped, while another VM runs (on the peer igb, now assigned too).
bindVfio(peer);
{
  const other = background(['--device', peer, '--iommu', 'iommufd', '--cmdline', 'hang']);
  await other.started;
  const dmesgBefore = spawnSync('dmesg', { encoding: 'utf8' }).stdout.split('\n').length;
  const bad = run(['--device', pf, '--iommu', 'iommufd', '--cmdline', 'igb baddma exit=0']);
  const faults = spawnSync('dmesg', { encoding: 'utf8' }).stdout.split('\n').slice(dmesgBefore - 1).filter((l) => /DMAR/.test(l));
  out.unmappedDma = { bad, faults, other: await other.stop() };
}
out.pfDriver = pciDevice(pf).driver;
console.log(JSON.stringify(out));
