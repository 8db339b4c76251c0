// Runs in L1 as root: the transient-remap scenario. VM1 (test/l1/remap-vm.ts)
// and VM2 (pinion run) run as uid 1000, each with its own VF; VM1 remaps a
// region while VM2 holds its share. Paths: legacy type1, iommufd per-user,
// iommufd per-process through pinion open. Prints one JSON object.
import { spawn } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { assignablePf, bindVfio, createVfs } from '../../rig/l1/sysfs.js';
import type { IommuKind } from '../../src/devices/vfio/iommu.js';
import { CLI, GUEST, progress, vmUp } from './pinion.js';

const VM1 = fileURLToPath(new URL('./remap-vm.js', import.meta.url));
const UID = '1000';
const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
const MiB = 1024 * 1024;

const vfs = createVfs(assignablePf().bdf, 2).map((b) => bindVfio(b));
for (const node of ['/dev/kvm', '/dev/iommu', '/dev/vfio/vfio', ...vfs.flatMap((v) => [`/dev/vfio/${v.iommuGroup}`, v.vfioCdev!])])
  chmodSync(node, 0o666);
const [vf0, vf1] = vfs.map((v) => v.bdf) as [string, string];

function wrap(how: 'user' | 'opener', limit: number, device: string, cmd: string[]): string[] {
  if (how === 'opener') return [process.execPath, CLI, 'open', '--user', UID, '--memlock', String(limit), '--device', device, '--', ...cmd];
  return ['prlimit', `--memlock=${limit}:${limit}`, 'setpriv', `--reuid=${UID}`, `--regid=${UID}`, '--clear-groups', '--', ...cmd];
}

async function scenario(iommu: IommuKind, how: 'user' | 'opener', limit: number): Promise<unknown> {
  progress(`scenario ${iommu} ${how} limit ${limit / MiB} MiB: starting VM1`);
  const c1 = wrap(how, limit, vf0, [process.execPath, VM1, iommu, vf0]);
  const vm1 = spawn(c1[0]!, c1.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env });
  let err1 = '';
  vm1.stderr.on('data', (d: Buffer) => (err1 += d.toString()));
  const lines = createInterface({ input: vm1.stdout });
  const it = lines[Symbol.asyncIterator]();
  const ready = await it.next();
  if (ready.value !== 'READY') return { error: `VM1 did not start: ${ready.value ?? ''} ${err1}` };
  const c2 = wrap(how, limit, vf1, [
    process.execPath,
    CLI,
    'run',
    '--payload',
    GUEST,
    '--device',
    vf1,
    '--iommu',
    iommu,
    '--cmdline',
    'hang',
  ]);
  const vm2 = spawn(c2[0]!, c2.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out2 = '';
  let err2 = '';
  const vm2Closed = new Promise<number | null>((r) => vm2.on('close', (code) => r(code)));
  await new Promise<void>((r) => {
    vm2.stdout.on('data', (d: Buffer) => ((out2 += d.toString()), vmUp(c2, out2, err2) && r()));
    vm2.stderr.on('data', (d: Buffer) => ((err2 += d.toString()), vmUp(c2, out2, err2) && r()));
  });
  progress('VM2 running; VM1 remaps');
  vm1.stdin.write('go\n');
  const result = await it.next();
  progress('VM1 done; stopping VM2');
  vm2.kill('SIGTERM');
  const vm2Status = await vm2Closed;
  return { vm1: JSON.parse(String(result.value)), vm1Stderr: err1, vm2Status, vm2Stderr: err2 };
}

const out = {
  type1: await scenario('legacy', 'user', 96 * MiB),
  perUser: await scenario('iommufd', 'user', 150 * MiB),
  perProcess: await scenario('iommufd', 'opener', 96 * MiB),
};
console.log(JSON.stringify(out));
