// What the L1 scripts share: running `pinion run` with the test guest, in
// the foreground or until stopped, and how much memory is pinned L1-wide.
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
// PINION_TEST_GUEST: another build of the test guest, to try it in the rig before it lands.
export const GUEST = process.env.PINION_TEST_GUEST ?? fileURLToPath(new URL('../../guest/pinion-guest.elf', import.meta.url));

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Progress on stderr: a rig test that times out then shows how far L1 got. */
export function progress(what: string): void {
  process.stderr.write(`l1 ${(performance.now() / 1000).toFixed(1)}s: ${what}\n`);
}

export function run(args: string[]): Run {
  progress(`pinion run ${args.join(' ')}`);
  // SIGKILL on timeout: a VMM stuck past SIGTERM would hold spawnSync forever.
  const r = spawnSync(process.execPath, [CLI, 'run', '--payload', GUEST, ...args], {
    encoding: 'utf8',
    timeout: 180_000,
    killSignal: 'SIGKILL',
  });
  if (r.signal) progress(`  ended by ${r.signal}; its stderr: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A VM that runs until told: resolves with its end once `stop()` is called. */
/**
 * Whether a `pinion run` started with `args` is up: its guest printed its command line and, with a device,
 * Pinion said RAM is DMA-mapped (the guest boots while that happens, and reaches the device only after).
 */
export function vmUp(args: readonly string[], stdout: string, stderr: string): boolean {
  return stdout.includes('cmdline') && (!args.includes('--device') || stderr.includes('guest RAM DMA-mapped'));
}

export function background(args: string[]): { started: Promise<void>; stop: () => Promise<Run>; pid: number } {
  progress(`pinion run (background) ${args.join(' ')}`);
  const p = spawn(process.execPath, [CLI, 'run', '--payload', GUEST, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let ready: () => void;
  // A VMM that never gets its guest going must not hold the script either.
  const slow = setTimeout(() => {
    progress(`  pid ${p.pid} printed no guest banner in 120 s; SIGKILL`);
    p.kill('SIGKILL');
  }, 120_000);
  const started = new Promise<void>((r) => (ready = () => (clearTimeout(slow), r())));
  p.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    if (vmUp(args, stdout, stderr)) ready();
  });
  p.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (vmUp(args, stdout, stderr)) ready();
  });
  // A VM that ends before it booted must not hold the script either.
  const done = new Promise<Run>((resolve) => p.on('close', (status) => (ready(), resolve({ status, stdout, stderr }))));
  const stop = (): Promise<Run> => {
    p.kill('SIGTERM');
    const stuck = setTimeout(() => {
      progress(`  pid ${p.pid} still running 30 s after SIGTERM; SIGKILL`);
      p.kill('SIGKILL');
    }, 30_000);
    return done.finally(() => clearTimeout(stuck));
  };
  return { started, pid: p.pid!, stop };
}

/** Locked memory charged to all processes now (VmLck + VmPin, KiB), to show nothing stays pinned. */
export function pinnedKiB(): number {
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

/** Processes holding /dev/vfio/* or /dev/iommu, as "pid: path". */
export function vfioHolders(): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const to = readlinkSync(`/proc/${pid}/fd/${fd}`);
        if (/^\/dev\/(vfio\/|iommu$)/.test(to)) out.push(`${pid}: ${to}`);
      } catch {
        // closed meanwhile
      }
    }
  }
  return out;
}
