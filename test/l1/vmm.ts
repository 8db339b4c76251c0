// Runs in L1 (root, real nested KVM): boots the test guest through the CLI
// and through the Machine API in each scenario the VMM tests assert, and
// prints one JSON object with what happened. The tap side (test/rig/vmm.test.ts)
// holds the expectations.
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Machine, type MachineConfig } from '../../src/machine/machine.js';
import { hugePagesFree } from '../../src/memory/guest-ram.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const GUEST = fileURLToPath(new URL('../../guest/pinion-guest.elf', import.meta.url));
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
    .filter((l) => /kvm|memfd|anon_inode/.test(l))
    .sort();
  const maps = readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => /pinion-guest-ram|kvm-vcpu/.test(l)).length;
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
  const pageAfter = m.memory.bytes(0x810000n, 16);
  const slots = m.memory.list().map((x) => ({ name: x.name, gpa: `0x${x.gpa.toString(16)}`, size: `0x${x.size.toString(16)}`, file: !!x.file }));
  m.close();
  const after = holdings();
  (await import('node:fs')).closeSync(fd);
  return { result: r, firstBadByte: bad, untouchedAfter: [...pageAfter].every((b) => b === 0), slots, console: readFileSync(console, 'utf8'), before, after };
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
out.default1 = cli(['run', '--payload', GUEST, '--cmdline', 'exit=7']);
out.default2 = cli(['run', '--payload', GUEST, '--cpus', '2', '--cmdline', 'exit=0']);
out.anon = cli(['run', '--payload', GUEST, '--memory-backend', 'anon', '--cmdline', 'exit=3']);
out.fault = cli(['run', '--payload', GUEST, '--cmdline', 'fault']);
out.ud = cli(['run', '--payload', GUEST, '--cmdline', 'ud']);
out.hangTerm = await cliSignalled(['run', '--payload', GUEST, '--cpus', '2', '--cmdline', 'hang'], 'all 2 vCPUs up', 'SIGTERM');
out.noPayloadFlag = cli(['run']);
out.missingPayload = cli(['run', '--payload', '/nonexistent/guest.elf']);
out.notElf = cli(['run', '--payload', '/etc/hostname']);
out.tooSmall = cli(['run', '--payload', GUEST, '--memory', '1M']);
out.unaligned = cli(['run', '--payload', GUEST, '--memory', '65537K']);
writeFileSync('/proc/sys/vm/nr_hugepages', '0');
out.hugetlbNone = cli(['run', '--payload', GUEST, '--memory-backend', 'hugetlb']);
out.hugetlbNoneApi = apiRefusal({ backend: 'hugetlb' });
out.tooSmallApi = apiRefusal({ memory: 1n * MiB });
writeFileSync('/proc/sys/vm/nr_hugepages', '40');
const hugeFreeBefore = hugePagesFree();
out.hugetlb = cli(['run', '--payload', GUEST, '--memory-backend', 'hugetlb', '--cmdline', 'exit=5']);
out.hugeFree = { before: hugeFreeBefore.toString(), after: hugePagesFree().toString() };
out.apiMemfd = await apiRun({ cpus: 2 });
out.apiAnon = await apiRun({ backend: 'anon' });
out.apiHugetlb = await apiRun({ backend: 'hugetlb' });
out.apiHigh = await apiRun({ memory: 3n * 1024n * MiB + 64n * MiB, backend: 'anon' });
console.log(JSON.stringify(out));
