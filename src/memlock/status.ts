// Live locked-memory counters: what the kernel has charged to a process
// (VmLck: mm->locked_vm, type1 and iommufd per-process mode; VmPin:
// mm->pinned_vm) and the RLIMIT_MEMLOCK it is charged against.
import { readdirSync, readFileSync } from 'node:fs';

export interface ProcessCharge {
  pid: number;
  vmLckKiB: number;
  vmPinKiB: number;
  memlockSoftKiB: number | null; // null: unlimited
  memlockHardKiB: number | null;
}

function statusKiB(status: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  if (!m) throw new Error(`/proc status has no ${field} line`);
  return Number(m[1]);
}

function limitKiB(v: string): number | null {
  return v === 'unlimited' ? null : Math.floor(Number(v) / 1024);
}

export function processCharge(pid: number | 'self' = 'self'): ProcessCharge {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const limits = readFileSync(`/proc/${pid}/limits`, 'utf8');
  const m = /^Max locked memory\s+(\S+)\s+(\S+)\s+bytes\s*$/m.exec(limits);
  if (!m) throw new Error(`/proc/${pid}/limits has no "Max locked memory" line`);
  return {
    pid: pid === 'self' ? process.pid : pid,
    vmLckKiB: statusKiB(status, 'VmLck'),
    vmPinKiB: statusKiB(status, 'VmPin'),
    memlockSoftKiB: limitKiB(m[1]!),
    memlockHardKiB: limitKiB(m[2]!),
  };
}

/** Effective capability bit `bit` of a process (CAP_IPC_LOCK 14, CAP_SYS_RESOURCE 24). */
export function hasCapability(bit: number, pid: number | 'self' = 'self'): boolean {
  const m = /^CapEff:\s+([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? ((BigInt(`0x${m[1]}`) >> BigInt(bit)) & 1n) === 1n : false;
}
export const CAP_IPC_LOCK = 14;
export const CAP_SYS_RESOURCE = 24;

export interface ProcessUsage extends ProcessCharge {
  uid: number;
  comm: string;
}

/** Every process with locked or pinned memory (VmLck or VmPin above 0). */
export function chargedProcesses(): ProcessUsage[] {
  const out: ProcessUsage[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      const c = processCharge(Number(p));
      if (!c.vmLckKiB && !c.vmPinKiB) continue;
      out.push({ ...c, uid: Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1), comm: /^Name:\s+(.*)$/m.exec(status)?.[1] ?? '?' });
    } catch {
      // exited while we looked, or kernel thread
    }
  }
  return out;
}

/**
 * What a user has charged to user->locked_vm through iommufd's default mode,
 * estimated per process as VmPin - VmLck: iommufd adds every pin to VmPin,
 * and charges VmLck as well only in per-process mode (or the compat
 * container). The kernel does not show user->locked_vm itself.
 */
export function userLockedKiB(uid: number, exceptPid?: number): { totalKiB: number; byPid: { pid: number; kib: number }[] } {
  const byPid = chargedProcesses()
    .filter((p) => p.uid === uid && p.pid !== exceptPid)
    .map((p) => ({ pid: p.pid, kib: Math.max(0, p.vmPinKiB - p.vmLckKiB) }))
    .filter((p) => p.kib > 0);
  return { totalKiB: byPid.reduce((n, p) => n + p.kib, 0), byPid };
}
