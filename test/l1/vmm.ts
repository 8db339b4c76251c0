// Runs in L1 (root, real nested KVM): boots the test guest through the CLI
// and through the Machine API in each scenario the VMM tests assert, and
// prints one JSON object with what happened. The tap side (test/rig/vmm.test.ts)
// holds the expectations.
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { Machine, type MachineConfig } from '../../src/machine/machine.js';
import { hugePagesFree } from '../../src/memory/guest-ram.js';
import { CLI, GUEST } from './pinion.js';

const MiB = 1n << 20n;

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function cli(args: string[], timeoutMs = 120_000): CliRun {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
}

/** Starts the CLI, sends `signal` once the guest console shows `waitFor`, and collects the end. */
function cliSignalled(args: string[], waitFor: string, signal: NodeJS.Signals): Promise<CliRun & { signalledAfterMs: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let sent = 0;
    p.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (!sent && stdout.includes(waitFor)) {
        // Give the vCPUs time to settle into hlt: the kick must reach a halted vCPU.
        setTimeout(() => p.kill(signal), 500);
        sent = Date.now() - t0;
      }
    });
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const killer = setTimeout(() => p.kill('SIGKILL'), 120_000);
    p.on('close', (status) => {
      clearTimeout(killer);
      resolve({ status, stdout, stderr, ms: Date.now() - t0, signalledAfterMs: sent });
    });
  });
}

/** What this process holds that a failed or finished VM must have given back. */
function holdings(): { fds: string[]; maps: number } {
  const fds = readdirSync('/proc/self/fd')
    .map((f) => {
      try {
        return readlinkSync(`/proc/self/fd/${f}`);
      } catch {
        return '';
      }
    })
    .filter((l) => /kvm|memfd|iommufd|vfio/.test(l))
    .sort();
  const maps = readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => /pinion-guest-ram|kvm-vcpu/.test(l)).length;
  return { fds, maps };
}

/** Boots through the Machine API and reads the guest's pattern from host memory. */
async function apiRun(cfg: Partial<MachineConfig>): Promise<Record<string, unknown>> {
  const console = `/tmp/pinion-console-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const fd = (await import('node:fs')).openSync(console, 'w');
  const before = holdings();
  const m = Machine.create({ payload: GUEST, memory: 64n * MiB, cpus: 1, backend: 'memfd', cmdline: 'exit=0', consoleFd: fd, ...cfg });
  const r = await m.run();
  const pattern = m.memory.bytes(0x800000n, 0x10000);
  let bad = -1;
  for (let i = 0; i < pattern.length; i++)
    if (pattern[i] !== ((i * 13 + 0x5a) & 0xff)) {
      bad = i;
      break;
    }
  const untouchedAfter = [...m.memory.bytes(0x810000n, 16)].every((b) => b === 0);
  const slots = m.memory
    .list()
    .map((x) => ({ name: x.name, gpa: `0x${x.gpa.toString(16)}`, size: `0x${x.size.toString(16)}`, file: !!x.file }));
  m.close(); // guest memory views are invalid from here
  const after = holdings();
  (await import('node:fs')).closeSync(fd);
  return { result: r, firstBadByte: bad, untouchedAfter, slots, console: readFileSync(console, 'utf8'), before, after };
}

/** Machine.create with bad input: what it threw and what it left behind. */
function apiRefusal(cfg: Partial<MachineConfig>): Record<string, unknown> {
  const before = holdings();
  let error = '';
  try {
    Machine.create({ payload: GUEST, memory: 64n * MiB, cpus: 1, backend: 'memfd', cmdline: '', consoleFd: 1, ...cfg }).close();
  } catch (e) {
    error = `${(e as Error).name}: ${(e as Error).message}`;
  }
  return { error, before, after: holdings() };
}

const out: Record<string, unknown> = {};
// PINION_VMM_ONLY=a,b runs only those scenarios (for debugging one).
const only = process.env.PINION_VMM_ONLY?.split(',');
const step = (name: string): boolean => {
  if (only && !only.includes(name)) return false;
  process.stderr.write(`vmm: ${name}\n`);
  return true;
};
if (step('default1')) out.default1 = cli(['run', '--payload', GUEST, '--cmdline', 'exit=7']);
if (step('default2')) out.default2 = cli(['run', '--payload', GUEST, '--cpus', '2', '--cmdline', 'exit=0']);
if (step('consoleFile')) {
  const r = cli(['run', '--payload', GUEST, '--console', '/tmp/pinion-console.txt', '--cmdline', 'exit=9']);
  out.consoleFile = { ...r, file: readFileSync('/tmp/pinion-console.txt', 'utf8') };
}
if (step('anon')) out.anon = cli(['run', '--payload', GUEST, '--memory-backend', 'anon', '--cmdline', 'exit=3']);
if (step('fault')) out.fault = cli(['run', '--payload', GUEST, '--cmdline', 'fault']);
if (step('ud')) out.ud = cli(['run', '--payload', GUEST, '--cmdline', 'ud']);
if (step('hangTerm'))
  out.hangTerm = await cliSignalled(['run', '--payload', GUEST, '--cpus', '2', '--cmdline', 'hang'], 'cmdline "hang"', 'SIGTERM');
if (step('noPayloadFlag')) out.noPayloadFlag = cli(['run']);
if (step('missingPayload')) out.missingPayload = cli(['run', '--payload', '/nonexistent/guest.elf']);
if (step('notElf')) out.notElf = cli(['run', '--payload', '/etc/hostname']);
if (step('tooSmall')) out.tooSmall = cli(['run', '--payload', GUEST, '--memory', '1M']);
if (step('unaligned')) out.unaligned = cli(['run', '--payload', GUEST, '--memory', '65537K']);
writeFileSync('/proc/sys/vm/nr_hugepages', '0');
if (step('hugetlbNone')) out.hugetlbNone = cli(['run', '--payload', GUEST, '--memory-backend', 'hugetlb']);
if (step('hugetlbNoneApi')) out.hugetlbNoneApi = apiRefusal({ backend: 'hugetlb' });
if (step('tooSmallApi')) out.tooSmallApi = apiRefusal({ memory: 1n * MiB });
writeFileSync('/proc/sys/vm/nr_hugepages', '40');
const hugeFreeBefore = hugePagesFree();
if (step('hugetlb')) out.hugetlb = cli(['run', '--payload', GUEST, '--memory-backend', 'hugetlb', '--cmdline', 'exit=5']);
if (step('hugeFree')) out.hugeFree = { before: hugeFreeBefore.toString(), after: hugePagesFree().toString() };
if (step('apiMemfd')) out.apiMemfd = await apiRun({ cpus: 2 });
if (step('apiAnon')) out.apiAnon = await apiRun({ backend: 'anon' });
if (step('apiHugetlb')) out.apiHugetlb = await apiRun({ backend: 'hugetlb' });
if (step('apiHigh')) out.apiHigh = await apiRun({ memory: 3n * 1024n * MiB + 64n * MiB, backend: 'anon' });
console.log(JSON.stringify(out));
