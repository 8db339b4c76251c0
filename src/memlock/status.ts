// Live locked-memory counters: what the kernel has charged to a process
// (VmLck: mm->locked_vm, type1 and iommufd per-process mode; VmPin:
// mm->pinned_vm) and the RLIMIT_MEMLOCK it is charged against.
import { readFileSync } from 'node:fs';

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
