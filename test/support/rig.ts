// Test helpers: run a command or an L1 script inside the rig and collect its
// output, or run the built CLI. One boot per call.
import { spawn } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { RigCrashError, RigStallError, runInRig, type RigOptions } from '../../rig/rig.js';
import type { KernelVariant } from '../../rig/kernel.js';
import { failIfLingering } from './linger.js';

// Every rig test file imports this module: none may outlive its tests.
failIfLingering();

export interface Captured {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
  bootMs: number;
}

// No rig test idles for long: 45 s of an idle L1 and a silent script is a stall.
const IDLE_SEC = 45;

async function inRigOnce(kernel: KernelVariant, command: string[], opts: Partial<RigOptions>): Promise<Captured> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let r;
  try {
    r = await runInRig({
      kernel,
      command,
      timeoutSec: 300,
      idleSec: IDLE_SEC,
      env: { PINION_RIG_KERNEL: kernel },
      ...opts,
      stdout: (c) => out.push(c),
      stderr: (c) => err.push(c),
    });
  } catch (e) {
    // A timeout says little by itself: what the command printed on stderr shows how far it got.
    const tail = Buffer.concat(err).toString().trim().split('\n').slice(-15).join('\n');
    if (e instanceof Error && tail) e.message += `\nlast stderr lines in L1:\n${tail}`;
    throw e;
  }
  return { exitCode: r.exitCode, stdout: Buffer.concat(out), stderr: Buffer.concat(err), bootMs: r.bootMs };
}

/** Runs a command in a fresh L1. When the rig itself fails (L1 stalls, or QEMU crashes) the command is run
 * once more from a fresh boot, and that is said loudly: on stderr (the CI log), as a TAP comment, and in
 * $PINION_RIG_STALL_LOG for the runner's summary. */
export async function inRig(kernel: KernelVariant, command: string[], opts: Partial<RigOptions> = {}): Promise<Captured> {
  try {
    return await inRigOnce(kernel, command, opts);
  } catch (e) {
    if (!(e instanceof RigStallError) && !(e instanceof RigCrashError)) throw e;
    const what = e instanceof RigStallError ? 'STALL' : 'CRASH';
    const report = e.reportPath;
    const line = `RIG ${what} (${kernel}): ${e.reason}; retrying once from a fresh boot.${report ? ` Report: ${report}` : ''}`;
    process.stderr.write(`\n!!! ${line}\n${e.message}\n\n`);
    process.stdout.write(`# !!! ${line.split('\n')[0]}\n`);
    if (process.env.PINION_RIG_STALL_LOG)
      appendFileSync(
        process.env.PINION_RIG_STALL_LOG,
        `${JSON.stringify({ kind: what.toLowerCase(), kernel, command: command.join(' '), reason: e.reason, report, at: new Date().toISOString() })}\n`,
      );
    return await inRigOnce(kernel, command, opts);
  }
}

/** Path of a compiled script under test/l1/, to run with node inside L1. */
export function l1Script(name: string): string {
  return fileURLToPath(new URL(`../l1/${name}.js`, import.meta.url));
}

/** Runs a script from test/l1/ in L1 and parses the JSON it prints last. */
export async function l1Json<T>(
  kernel: KernelVariant,
  name: string,
  args: string[] = [],
  opts: Partial<RigOptions> = {},
): Promise<{ result: T; run: Captured }> {
  const run = await inRig(kernel, [process.execPath, l1Script(name), ...args], opts);
  const lines = run.stdout.toString().trim().split('\n');
  let result: T;
  try {
    result = JSON.parse(lines[lines.length - 1] ?? '') as T;
  } catch {
    throw new Error(`${name} in L1 (exit ${run.exitCode}) printed no JSON; stderr: ${run.stderr.toString().slice(-2000)}`);
  }
  return { result, run };
}

/** The shipped CLI (package.json's bin), as users run it. */
export const CLI = fileURLToPath(new URL('../../bundle/pinion.js', import.meta.url));

/** Runs the built `pinion` CLI as a user would. */
export function runCli(
  args: string[],
  timeoutMs = 300_000,
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
