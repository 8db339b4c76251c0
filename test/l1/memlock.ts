// Runs in L1 as root: two VMs of one user (uid 1000), each with its own VF
// and RLIMIT_MEMLOCK = RAM + 16 MiB, on the legacy type1 path, on iommufd's
// default per-user accounting, and through the privileged opener (per-process
// accounting); two devices in one VM; SIGKILL. Prints one JSON object for
// test/rig/memlock.test.ts.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, readdirSync, readFileSync } from 'node:fs';
import { assignablePf, bindVfio, createVfs } from '../../rig/l1/sysfs.js';
import { CLI, GUEST, vmUp } from './pinion.js';

const UID = 1000;
const LIMIT = (64 + 16) * 1024 * 1024;
const asUser = ['prlimit', `--memlock=${LIMIT}:${LIMIT}`, 'setpriv', `--reuid=${UID}`, `--regid=${UID}`, '--clear-groups', '--'];

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

interface Vm {
  pid: number;
  started: Promise<boolean>;
  stop(sig?: NodeJS.Signals): Promise<Run>;
}

// The VMMs run as another user: a plain environment, without the test runner's instrumentation.
const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };

/** Starts a VMM; `started` resolves true once it is up (pinion.ts's vmUp), false if it ended first. */
function vm(cmd: string[]): Vm {
  const p = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stdout = '';
  let stderr = '';
  let ready: (b: boolean) => void;
  const started = new Promise<boolean>((r) => (ready = r));
  p.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    if (vmUp(cmd, stdout, stderr)) ready(true);
  });
  p.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (vmUp(cmd, stdout, stderr)) ready(true);
  });
  const done = new Promise<Run>((resolve) =>
    p.on('close', (status, signal) => {
      ready(false);
      resolve({
        status: status ?? (signal ? 128 + ({ SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[signal]! : null),
        stdout,
        stderr,
      });
    }),
  );
  return { pid: p.pid!, started, stop: (sig = 'SIGTERM') => (p.kill(sig), done) };
}

const run = (device: string[], iommu: string, cmdline: string): string[] => [
  process.execPath,
  CLI,
  'run',
  '--payload',
  GUEST,
  ...device.flatMap((d) => ['--device', d]),
  '--iommu',
  iommu,
  '--cmdline',
  cmdline,
];
const userVm = (vf: string[], iommu: string): Vm => vm([...asUser, ...run(vf, iommu, 'hang')]);
const openedVm = (vf: string[]): Vm =>
  vm([
    process.execPath,
    CLI,
    'open',
    '--user',
    String(UID),
    '--memlock',
    String(LIMIT),
    ...vf.flatMap((d) => ['--device', d]),
    '--',
    ...run(vf, 'iommufd', 'hang'),
  ]);

/** Locked and pinned KiB of every process of the user, by pid, with uid and effective capabilities. */
function userCharges(): { pid: number; vmLck: number; vmPin: number; capEff: string; uid: number }[] {
  const out = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const s = readFileSync(`/proc/${pid}/status`, 'utf8');
      const uid = Number(/^Uid:\s+(\d+)/m.exec(s)![1]);
      const vmLck = Number(/^VmLck:\s+(\d+)/m.exec(s)?.[1] ?? 0);
      const vmPin = Number(/^VmPin:\s+(\d+)/m.exec(s)?.[1] ?? 0);
      if (uid === UID && (vmLck || vmPin)) out.push({ pid: Number(pid), vmLck, vmPin, capEff: /^CapEff:\s+(\S+)/m.exec(s)![1]!, uid });
    } catch {
      // gone
    }
  }
  return out;
}

const out: Record<string, unknown> = {};
const vfs = createVfs(assignablePf().bdf, 2).map((b) => bindVfio(b));
// The user's VMM opens these itself on the paths without the opener.
for (const node of ['/dev/kvm', '/dev/iommu', '/dev/vfio/vfio', ...vfs.flatMap((v) => [`/dev/vfio/${v.iommuGroup}`, v.vfioCdev!])])
  chmodSync(node, 0o666);
const [vf0, vf1] = vfs.map((v) => v.bdf) as [string, string];

// type1: each process is charged and checked on its own.
{
  const a = userVm([vf0], 'legacy');
  const b = userVm([vf1], 'legacy');
  const started = await Promise.all([a.started, b.started]);
  const charges = userCharges();
  out.type1 = { started, charges, a: await a.stop(), b: await b.stop(), after: userCharges() };
}

// iommufd default: the second VM would take the user's total past its own limit.
{
  const a = userVm([vf0], 'iommufd');
  const aStarted = await a.started;
  const refused = spawnSync(asUser[0]!, [...asUser.slice(1), ...run([vf1], 'iommufd', 'exit=0')], {
    encoding: 'utf8',
    timeout: 120_000,
    env,
  });
  const chargesWithA = userCharges();
  // SIGKILL: the kernel gives everything back; the second VM then fits.
  const killed = await a.stop('SIGKILL');
  const afterKill = userCharges();
  const b = userVm([vf1], 'iommufd');
  const bStarted = await b.started;
  out.iommufdPerUser = {
    aStarted,
    aPid: a.pid,
    refused: { status: refused.status, stdout: refused.stdout, stderr: refused.stderr },
    chargesWithA,
    killed,
    afterKill,
    bStarted,
    b: await b.stop(),
    after: userCharges(),
  };
}

// Through the opener: per-process accounting, both VMs run.
{
  const a = openedVm([vf0]);
  const b = openedVm([vf1]);
  const started = await Promise.all([a.started, b.started]);
  const charges = userCharges();
  const status = spawnSync(process.execPath, [CLI, 'memlock', 'status', '--json'], { encoding: 'utf8', env });
  out.status = JSON.parse(status.stdout);
  out.opener = { started, charges, a: await a.stop(), b: await b.stop(), after: userCharges() };
}

// The opener on the legacy path: container and group fds handed over.
{
  const a = vm([
    process.execPath,
    CLI,
    'open',
    '--user',
    String(UID),
    '--iommu',
    'legacy',
    '--memlock',
    String(LIMIT),
    '--device',
    vf0,
    '--',
    ...run([vf0], 'legacy', 'hang'),
  ]);
  const started = await a.started;
  const charges = userCharges();
  out.openerLegacy = { started, charges, a: await a.stop(), after: userCharges() };
}

// Two devices in one VM: one IOAS, RAM pinned and charged once.
{
  const a = userVm([vf0, vf1], 'iommufd');
  const started = await a.started;
  const charges = userCharges();
  out.twoDevices = { started, charges, a: await a.stop(), after: userCharges() };
}
console.log(JSON.stringify(out));
