// Boots L1 under QEMU, runs one command there (in a chroot of the host's /,
// same cwd) and streams its stdout/stderr back; resolves with its exit code.
// QEMU is always killed by pid on timeout, signal or error.
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ensureHost, thisHostTscKhz, QEMU } from './host.js';
import { ensureInitramfs } from './initramfs.js';
import { ensureKernel, type KernelVariant } from './kernel.js';
import { cacheDir, RigError } from './paths.js';
import { PORTS, qemuArgs, qmpPath, resetLogPath, socketPath } from './qemu.js';
import { monitorCommands } from './qmp.js';
import { StallWatch } from './watchdog.js';

export interface RigOptions {
  kernel: KernelVariant;
  command: string[];
  uid?: number;
  memlockKiB?: number; // RLIMIT_MEMLOCK (soft and hard) for the command
  timeoutSec: number; // for the command, from the end of boot
  bootTimeoutSec?: number;
  /** Heartbeat silence (s) that counts as a stall; default 20 (PINION_RIG_STALL_SEC). */
  stallSec?: number;
  /** Idle L1 with a silent command for this long (s) counts as a stall; off by default. */
  idleSec?: number;
  memoryMiB?: number;
  cpus?: number;
  iommu?: boolean; // default true: L1 has the emulated Intel IOMMU
  /**
   * One TCG thread for all of L1's vCPUs: slower, but free of MTTCG's race with memory map changes (QEMU
   * aborts in iotlb_to_section), which hundreds of device resets in one boot hit. Default: PINION_RIG_ACCEL or MTTCG.
   */
  singleThreadTcg?: boolean;
  /** More kernel parameters for L1 (after PINION_RIG_APPEND's). */
  append?: string[];
  cwd?: string;
  rwDir?: string; // a host folder L1 may write (e.g. bench/results)
  env?: Record<string, string>;
  stdout?: (chunk: Buffer) => void;
  stderr?: (chunk: Buffer) => void;
}

export interface RigResult {
  exitCode: number;
  bootMs: number; // QEMU start to the command starting in L1
  totalMs: number;
}

const EXIT_NOT_FOUND = 127;
export const EXIT_STALLED = 125;

const CRASH_SIGNALS: NodeJS.Signals[] = ['SIGABRT', 'SIGSEGV', 'SIGBUS', 'SIGILL', 'SIGFPE'];

/** QEMU itself crashed (e.g. a TCG assertion), or L1 reset under the command: a fault of the rig, not of the command it ran. */
export class RigCrashError extends RigError {
  constructor(
    message: string,
    readonly reason: string,
    /** L1's whole console, when L1 was up to write one. */
    readonly reportPath?: string,
  ) {
    super(message);
    this.name = 'RigCrashError';
  }
}

/** L1 stopped making progress; the message carries what L1 and QEMU last showed. */
export class RigStallError extends RigError {
  constructor(
    message: string,
    readonly reason: string,
    readonly reportPath: string,
  ) {
    super(message, undefined, EXIT_STALLED);
    this.name = 'RigStallError';
  }
}
// Not NODE_OPTIONS or TAP_*: a test runner's loader there would follow L1 commands into processes of other users.
const ENV_PASSED = /^(PINION_|CI$|TERM$|LANG$)/;

function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The script L1's init runs in the chroot: environment, limits, uid, then the command. */
export function commandScript(o: RigOptions, cwd: string): string {
  const env: Record<string, string> = {
    HOME: '/tmp',
    PATH: `${dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
  };
  for (const [k, v] of Object.entries(process.env)) if (ENV_PASSED.test(k) && v !== undefined) env[k] = v;
  Object.assign(env, o.env ?? {});
  const lines = ['set -e'];
  for (const [k, v] of Object.entries(env)) lines.push(`export ${k}=${shQuote(v)}`);
  lines.push(`cd ${shQuote(cwd)}`);
  if (o.memlockKiB !== undefined) lines.push(`ulimit -l ${o.memlockKiB}`);
  lines.push('set +e');
  const argv = o.command.map(shQuote).join(' ');
  const [cmd] = o.command;
  // A missing command gets its own status line so the host can say so plainly.
  lines.push(
    `if ! command -v ${shQuote(cmd ?? '')} >/dev/null 2>&1; then echo "pinion-rig: command not found in L1: ${cmd?.replace(/["$`\\]/g, '')}" >&2; exit ${EXIT_NOT_FOUND}; fi`,
  );
  if (o.uid !== undefined) {
    lines.push(`exec setpriv --reuid=${o.uid} --regid=${o.uid} --clear-groups -- ${argv}`);
  } else {
    lines.push(`exec ${argv}`);
  }
  return lines.join('\n') + '\n';
}

function tailText(text: string, lines: number): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** L1's console log (the serial port, kept in the run directory), or undefined before QEMU wrote it. */
function readConsole(runDir: string): string | undefined {
  try {
    return readFileSync(join(runDir, 'console.log'), 'utf8');
  } catch {
    return undefined;
  }
}

/** A report kept past the run in the cache's `folder`, named by when and on which kernel; returns its path. */
function keepReport(folder: 'stalls' | 'crashes', at: number, kernel: string, text: string): string {
  const dir = join(cacheDir(), folder);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${new Date(at).toISOString().replace(/[:.]/g, '-')}-${kernel}.log`);
  writeFileSync(path, text);
  return path;
}

/**
 * A crashed L1's whole console, kept in the cache's crashes/ folder (the run directory goes with the run),
 * and the oops's first lines, which the last console lines of a panic have scrolled past.
 */
function keepConsole(o: RigOptions, runDir: string): { path: string; oops: string } {
  const consoleLog = readConsole(runDir) ?? '';
  const path = keepReport('crashes', Date.now(), o.kernel, consoleLog);
  const lines = consoleLog.split('\n');
  const at = lines.findIndex((l) => /BUG: |Oops: |general protection fault|stack guard page|kernel stack overflow|double fault/.test(l));
  return { path, oops: at < 0 ? '' : `\nthe oops:\n${lines.slice(at, at + 14).join('\n')}` };
}

/** Why L1 reset with no panic line: QEMU's reset log names a triple fault; else L1's last console line. */
function unaskedReset(runDir: string): string {
  let log = '';
  try {
    log = readFileSync(resetLogPath(runDir), 'utf8');
  } catch {
    // no log: QEMU did not get as far as a reset
  }
  if (/Triple fault/.test(log)) return 'L1 reset on a triple fault (QEMU logged "Triple fault") without a panic line';
  const last = tailText((readConsole(runDir) ?? '').replace(/\r/g, ''), 1).trim() || '(no console output)';
  return `L1 reset without a panic line before the command finished; its last console line: ${last}`;
}

function tail(runDir: string, lines = 20): string {
  const text = readConsole(runDir);
  return text === undefined ? '(no console output)' : text.split('\n').slice(-lines).join('\n');
}

/** `p`, or `fallback` after `ms`; the timer goes with the race, so no caller lives on waiting for it. */
function within<T, F>(p: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<F>((r) => (timer = setTimeout(() => r(fallback), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

async function connectWhenListening(path: string, qemu: ChildProcess, deadline: number): Promise<Socket> {
  for (;;) {
    if (qemu.exitCode !== null || qemu.signalCode !== null) throw new RigError('QEMU exited before the guest started');
    if (Date.now() > deadline) throw new RigError(`QEMU did not open ${path} in time`);
    if (existsSync(path)) {
      try {
        return await new Promise<Socket>((res, rej) => {
          const s = connect(path, () => res(s));
          s.once('error', rej);
        });
      } catch {
        /* not listening yet */
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function runInRig(o: RigOptions): Promise<RigResult> {
  if (o.command.length === 0) throw new RigError('no command given: pinion rig [options] -- <command...>', undefined, 2);
  if (o.uid !== undefined && (!Number.isInteger(o.uid) || o.uid < 0))
    throw new RigError(`--uid must be a non-negative integer, got ${o.uid}`, undefined, 2);
  if (!(o.timeoutSec > 0)) throw new RigError(`--timeout must be a positive number of seconds, got ${o.timeoutSec}`, undefined, 2);
  const cwd = o.cwd ?? process.cwd();
  if (o.rwDir !== undefined && !statSync(o.rwDir, { throwIfNoEntry: false })?.isDirectory()) {
    throw new RigError(`--rw ${o.rwDir} is not a directory: create it first (mkdir -p ${o.rwDir})`, undefined, 2);
  }
  ensureHost();
  const cache = cacheDir();
  const kernel = ensureKernel(o.kernel);
  const initramfs = ensureInitramfs(cache);
  const runDir = mkdtempSync(join(tmpdir(), 'pinion-rig-'));
  writeFileSync(join(runDir, 'cmd.sh'), commandScript(o, cwd));

  const t0 = Date.now();
  const args = qemuArgs({
    kernel,
    initramfs,
    runDir,
    rwDir: o.rwDir,
    memoryMiB: o.memoryMiB ?? 2048,
    cpus: o.cpus ?? 2,
    iommu: o.iommu ?? true,
    accel: o.singleThreadTcg ? 'tcg,thread=single' : undefined,
    append: o.append,
    tscKhz: thisHostTscKhz(),
  });
  const qemu = spawn(QEMU, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: false });
  let qemuStderr = '';
  qemu.stderr?.on('data', (d: Buffer) => {
    qemuStderr = (qemuStderr + d.toString()).slice(-4000);
  });
  const kill = () => {
    if (qemu.exitCode === null && qemu.signalCode === null && qemu.pid) {
      try {
        process.kill(qemu.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  };
  const onSignal = (sig: NodeJS.Signals) => {
    kill();
    rmSync(runDir, { recursive: true, force: true });
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.on('exit', kill);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const qemuExit = new Promise<void>((res) => qemu.once('exit', () => res()));
  const bootMsLimit = (o.bootTimeoutSec ?? Number(process.env.PINION_RIG_BOOT_TIMEOUT ?? 60)) * 1000;

  try {
    const deadline = Date.now() + 30_000;
    const sockets: Socket[] = [];
    for (const port of PORTS) sockets.push(await connectWhenListening(socketPath(runDir, port), qemu, deadline));
    const [ctl, out, err, hb] = sockets as [Socket, Socket, Socket, Socket];
    const outDone = new Promise<void>((r) => out.once('close', () => r()));
    const errDone = new Promise<void>((r) => err.once('close', () => r()));
    const stallSec = o.stallSec ?? Number(process.env.PINION_RIG_STALL_SEC ?? 20);
    const watch = new StallWatch({ silenceMs: stallSec * 1000, idleMs: o.idleSec === undefined ? undefined : o.idleSec * 1000 }, t0);
    out.on('data', (d: Buffer) => {
      watch.activity(Date.now());
      (o.stdout ?? ((c) => process.stdout.write(c)))(d);
    });
    err.on('data', (d: Buffer) => {
      watch.activity(Date.now());
      (o.stderr ?? ((c) => process.stderr.write(c)))(d);
    });
    hb.on('data', (d: Buffer) => watch.feed(d.toString(), Date.now()));

    let ctlText = '';
    let bootMs = -1;
    let exitCode: number | undefined;
    let failure: RigError | undefined;
    let stalled: string | undefined;
    await new Promise<void>((resolve) => {
      let timer = setTimeout(() => {
        failure = new RigError(`L1 did not boot within ${bootMsLimit / 1000} s; last console lines:\n${tail(runDir)}`);
        finish();
      }, bootMsLimit);
      // The heartbeat starts before the boot is done; until its first line only the boot limit applies.
      const watchdog = setInterval(() => {
        if (!watch.last() && bootMs < 0) return;
        const why = watch.check(Date.now());
        if (why) {
          stalled = why;
          finish();
        }
      }, 1000);
      const finish = () => {
        clearTimeout(timer);
        clearInterval(watchdog);
        resolve();
      };
      ctl.on('data', (d: Buffer) => {
        ctlText += d.toString();
        if (bootMs < 0 && /^booted$/m.test(ctlText)) {
          bootMs = Date.now() - t0;
          clearTimeout(timer);
          timer = setTimeout(() => {
            failure = new RigError(
              `command timed out after ${o.timeoutSec} s in L1: ${o.command.join(' ')} (raise --timeout)`,
              undefined,
              124,
            );
            // The L1 kernel's own view (hung tasks, faults) goes with it, for whoever reads a CI log.
            if (process.env.PINION_RIG_VERBOSE || process.env.CI) failure.message += `\nlast console lines:\n${tail(runDir, 10)}`;
            finish();
          }, o.timeoutSec * 1000);
        }
        const m = /^exit (\d+)$/m.exec(ctlText);
        const l1err = /^l1: (.*)$/m.exec(ctlText);
        if (m) {
          exitCode = Number(m[1]);
          finish();
        } else if (l1err) {
          failure = new RigError(`L1 init failed: ${l1err[1]}`);
          finish();
        }
      });
      void qemuExit.then(() => {
        if (exitCode === undefined && !failure && !stalled) {
          const said = qemuStderr.trim().split('\n').slice(-3).join(' | ') || 'nothing';
          const message = `QEMU exited before the command finished (${qemu.exitCode ?? qemu.signalCode}); QEMU said: ${said}; last console lines:\n${tail(runDir)}`;
          // QEMU killed by its own fault (an assertion, a crash) rather than by us or an exit status; or L1
          // reset (QEMU runs it with -no-reboot) before its init reported the command's exit: a panic, a
          // triple fault, a reset nobody asked for. All are the rig failing, not the command.
          const panic = /Kernel panic - not syncing: .*/.exec(readConsole(runDir) ?? '')?.[0];
          const crash = (reason: string): RigCrashError => {
            const kept = keepConsole(o, runDir);
            return new RigCrashError(`${message}${kept.oops}\nL1's whole console: ${kept.path}`, reason, kept.path);
          };
          if (qemu.signalCode && CRASH_SIGNALS.includes(qemu.signalCode)) failure = crash(`QEMU died of ${qemu.signalCode}: ${said}`);
          else if (panic) failure = crash(`L1's kernel panicked: ${panic}`);
          else if (qemu.exitCode === 0) failure = crash(unaskedReset(runDir));
          else failure = new RigError(message);
        }
        finish();
      });
    });
    if (stalled) failure = await stallReport(o, stalled, watch, runDir, hb, t0);
    logBoot(o, bootMs, Date.now() - t0, exitCode, failure);
    if (failure) throw failure;
    // init syncs and reboots (QEMU exits on -no-reboot); the sockets then drain and close.
    const graceful = await within(
      qemuExit.then(() => true),
      10_000,
      false,
    );
    if (!graceful) kill();
    await within(Promise.all([outDone, errDone]), 2000, undefined);
    return { exitCode: exitCode ?? 1, bootMs, totalMs: Date.now() - t0 };
  } finally {
    kill();
    // SIGKILL always ends QEMU, but on a loaded machine releasing its guest RAM takes seconds:
    // wait for it, so nothing of this run is alive once it returns.
    await within(qemuExit, 20_000, undefined);
    process.off('exit', kill);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    rmSync(runDir, { recursive: true, force: true });
  }
}

/** One line per L1 boot in $PINION_RIG_BOOT_LOG (the soak's count of boots and how each ended). */
function logBoot(o: RigOptions, bootMs: number, totalMs: number, exitCode: number | undefined, failure: RigError | undefined): void {
  const path = process.env.PINION_RIG_BOOT_LOG;
  if (!path) return;
  const outcome = failure instanceof RigStallError ? 'stall' : failure instanceof RigCrashError ? 'crash' : failure ? 'error' : 'exit';
  // PINION_RIG_EXPECT_STALL: the rig's own watchdog test, whose stalls are made on purpose.
  const expected = process.env.PINION_RIG_EXPECT_STALL === '1';
  appendFileSync(
    path,
    `${JSON.stringify({ kernel: o.kernel, bootMs, totalMs, outcome, expected, exitCode: exitCode ?? null, reason: failure?.message.split('\n')[0] })}\n`,
  );
}

/** Gathers what L1 and QEMU show of a stall, keeps it in a file and returns the error that reports it. QEMU is killed by the caller. */
async function stallReport(
  o: RigOptions,
  reason: string,
  watch: StallWatch,
  runDir: string,
  hb: Socket,
  t0: number,
): Promise<RigStallError> {
  const caughtAt = Date.now();
  const consoleNow = () => (readConsole(runDir) ?? '').replace(/\r/g, '');
  // QEMU's view first, as the stall left it; then L1's own answer, which
  // needs no timer in L1, only its scheduler and the port's interrupt.
  const cmds = ['info cpus', 'info registers -a', 'info lapic 0', 'info lapic 1', 'info pic', 'info irq'];
  const monitor = await monitorCommands(qmpPath(runDir), cmds);
  const before = consoleNow();
  hb.write('dump\n');
  for (let i = 0; i < 50 && !watch.dumpDone; i++) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 500)); // the sysrq dump reaches the console file
  const consoleLog = consoleNow();
  const last = watch.last();
  const cmd = o.command.join(' ');
  const l1Dump = watch.dump.length ? watch.dump.join('\n') : `(no answer from L1 within 5 s)`;
  const cpus = (monitor.get('info cpus') ?? '(QEMU monitor did not answer)').replace(/\r/g, '');
  const regs = monitor.get('info registers -a') ?? '';
  const rips = [...regs.matchAll(/^CPU#(\d+)[\s\S]*?RIP=([0-9a-f]+)[\s\S]*?HLT=(\d)/gm)]
    .map((m) => `CPU#${m[1]} RIP=${m[2]} HLT=${m[3]}`)
    .join(', ');
  const full = [
    `L1 stalled: ${reason}`,
    `command: ${cmd}`,
    `kernel: ${o.kernel}; QEMU started ${((caughtAt - t0) / 1000).toFixed(1)} s before the stall was declared`,
    `last heartbeat: ${last ? `L1 uptime ${last.uptime} s, busy ${last.busy} idle ${last.idle} ticks, ${((caughtAt - last.at) / 1000).toFixed(1)} s before` : 'none'}`,
    '',
    '== L1 dump (on request over the heartbeat port)',
    l1Dump,
    ...cmds.flatMap((c) => ['', `== QEMU: ${c}`, monitor.get(c) ?? '(no answer)']),
    '',
    '== L1 console (kernel log; the sysrq dump follows the stall)',
    consoleLog,
  ].join('\n');
  const path = keepReport('stalls', caughtAt, o.kernel, full);
  const kernelLines = before
    .split('\n')
    .filter((l) => /hung|blocked for more than|soft lockup|rcu.*stall|BUG|WARNING|Workqueue|watchdog/i.test(l))
    .slice(-12)
    .join('\n');
  const message = [
    `L1 stalled: ${reason}, while running: ${cmd} (QEMU killed; full report: ${path})`,
    `L1 dump: ${l1Dump
      .split('\n')
      .filter((l) => !l.startsWith('irq '))
      .slice(0, 12)
      .join(' | ')}`,
    `QEMU vCPUs: ${cpus.trim().split('\n').join(' | ')}${rips ? `; ${rips}` : ''}`,
    `kernel warnings:\n${kernelLines || '(none)'}`,
    `last console lines before the dump:\n${tailText(before, 15)}`,
  ].join('\n');
  return new RigStallError(message, reason, path);
}
