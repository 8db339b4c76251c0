// Runs in L1 as root, no device: the test guest's hotplug mode against the
// control API. RAM added below and above 4 GiB is told to the guest, which
// writes and reads back a pattern over it and acks; RAM removed is released
// by the guest first; boot RAM it keeps (the change waits, then a 409 and
// nothing changed); after its last event it exits. A guest without a driver
// is not told and nothing waits. Prints one JSON object for
// test/rig/hotplug.test.ts.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { call } from '../../src/cli/ctl.js';
import { CLI, GUEST, progress } from './pinion.js';

interface Vm {
  socket: string;
  console: string;
  ended: Promise<{ status: number | null; stderr: string }>;
}

function start(cmdline: string): Vm {
  const socket = `/tmp/pinion-hotplug-${process.pid}-${cmdline.split(' ')[0]}.sock`;
  const console = `${socket}.console`;
  rmSync(console, { force: true });
  progress(`pinion run --cmdline '${cmdline}' --api-socket ${socket}`);
  const p = spawn(process.execPath, [CLI, 'run', '--payload', GUEST, '--cmdline', cmdline, '--api-socket', socket, '--console', console], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const killer = setTimeout(() => p.kill('SIGKILL'), 240_000);
  const ended = new Promise<{ status: number | null; stderr: string }>((r) =>
    p.on('close', (status) => (clearTimeout(killer), r({ status, stderr }))),
  );
  return { socket, console, ended };
}

const text = (vm: Vm): string => (existsSync(vm.console) ? readFileSync(vm.console, 'utf8') : '');

async function waitFor(vm: Vm, line: string, ms = 120_000): Promise<boolean> {
  const t0 = Date.now();
  while (!text(vm).includes(line)) {
    if (Date.now() - t0 > ms) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/** One API call, timed. */
async function api(vm: Vm, method: 'GET' | 'PUT', verb: string, body?: Record<string, string>): Promise<Record<string, unknown>> {
  progress(`  ${verb} ${body ? JSON.stringify(body) : ''}`);
  const t0 = Date.now();
  const r = await call(vm.socket, method, `/api/v1/vm.${verb}`, body);
  return { status: r.status, ms: Date.now() - t0, body: r.body };
}

const out: Record<string, unknown> = {};

// A guest with a driver: five events, then it exits with status 0.
{
  const vm = start('hotplug events=5 exit=0');
  out.claimed = await waitFor(vm, 'hotplug: mailbox claimed');
  const steps: Record<string, unknown> = {};
  steps.infoBefore = await api(vm, 'GET', 'info');
  // Small regions: the guest writes and reads each word, and some KVMs (kvm-pvm) trap every access.
  steps.addLow = await api(vm, 'PUT', 'add-ram', { gpa: '0x40000000', size: '1M' });
  steps.addHigh = await api(vm, 'PUT', 'add-ram', { gpa: '0x100000000', size: '256K', backend: 'anon' });
  steps.removeLow = await api(vm, 'PUT', 'remove-ram', { gpa: '0x40000000' });
  steps.memoryBeforeSplit = await api(vm, 'GET', 'memory');
  // Splitting boot RAM takes ram-low away first, and the guest does not let go of its own RAM.
  steps.splitBoot = await api(vm, 'PUT', 'split-ram', { gpa: '0x0', at: '0x2000000' });
  steps.memoryAfterSplit = await api(vm, 'GET', 'memory');
  steps.removeHigh = await api(vm, 'PUT', 'remove-ram', { gpa: '0x100000000' });
  const end = await vm.ended;
  out.withDriver = { steps, end, console: text(vm) };
  rmSync(vm.console, { force: true });
}

// No driver (the hang word): nothing is told, nothing waits.
{
  const vm = start('hang');
  await waitFor(vm, 'cmdline "hang"');
  const add = await api(vm, 'PUT', 'add-ram', { gpa: '0x40000000', size: '4M' });
  const remove = await api(vm, 'PUT', 'remove-ram', { gpa: '0x40000000' });
  const info = await api(vm, 'GET', 'info');
  await api(vm, 'PUT', 'stop');
  out.noDriver = { add, remove, info, end: await vm.ended };
  rmSync(vm.console, { force: true });
}
console.log(JSON.stringify(out));
