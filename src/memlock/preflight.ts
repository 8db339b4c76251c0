// Pre-flight: before Pinion pins anything, what the kernel will charge for
// DMA-mapping guest RAM on this path, against which limit, and whether it
// fits. A refusal is one line: what is needed, the limit, who holds what,
// and the fix.
import { pinCore, type AccountingCharge, type AccountingMode, type IommuPath } from '../memory/pin-core.js';
import { CAP_IPC_LOCK, hasCapability, processCharge, userLockedKiB } from './status.js';

export class MemlockRefusal extends Error {
  override readonly name = 'MemlockRefusal';
}

export interface PreflightResult {
  charge: AccountingCharge;
  needKiB: number;
  limitKiB: number | null;
  heldKiB: number;
}

const mib = (kib: number): string => `${+(kib / 1024).toFixed(1)} MiB`;

/**
 * `fix.enforce` false (a test's fault, PINION_UPDATE_FAULT=unchecked): the figures without the refusal, so the
 * kernel's own charge decides.
 */
export function preflight(
  path: IommuPath,
  mode: AccountingMode,
  bytes: bigint,
  fix: { openerHint: string; enforce?: boolean },
): PreflightResult {
  const charge = pinCore.accountingCharge(path, mode, hasCapability(CAP_IPC_LOCK));
  const self = processCharge();
  const needKiB = Number(bytes / 1024n);
  const limitKiB = self.memlockSoftKiB;
  const where = `${path === 'compat' ? 'the compat container' : path}, ${charge.mode} accounting`;
  if (charge.limit === 'none' || limitKiB === null) return { charge, needKiB, limitKiB, heldKiB: 0 };
  if (charge.limit === 'process') {
    const held = self.vmLckKiB;
    if (held + needKiB > limitKiB && fix.enforce !== false)
      throw new MemlockRefusal(
        `cannot pin ${mib(needKiB)} of guest RAM for DMA (${where}): this process already has ${mib(held)} locked and its RLIMIT_MEMLOCK is ${mib(limitKiB)}; raise it to at least ${mib(held + needKiB)} (ulimit -l ${held + needKiB}, or prlimit --memlock=${(held + needKiB) * 1024})`,
      );
    return { charge, needKiB, limitKiB, heldKiB: held };
  }
  const uid = process.getuid!();
  const user = userLockedKiB(uid, process.pid);
  if (user.totalKiB + needKiB > limitKiB && fix.enforce !== false) {
    const who = user.byPid.map((p) => `pid ${p.pid}: ${mib(p.kib)}`).join(', ');
    throw new MemlockRefusal(
      `cannot pin ${mib(needKiB)} of guest RAM for DMA (${where}): the kernel checks user ${uid}'s total against this process's RLIMIT_MEMLOCK of ${mib(limitKiB)}, and user ${uid} already holds ${mib(user.totalKiB)}${who ? ` (${who})` : ''}; raise the limit to at least ${mib(user.totalKiB + needKiB)} (prlimit --memlock=${(user.totalKiB + needKiB) * 1024}), or run through the opener so each VM is charged on its own: ${fix.openerHint}`,
    );
  }
  return { charge, needKiB, limitKiB, heldKiB: user.totalKiB };
}

/** The most a VM's DMA space may have charged while its map changes, and which limit says so. */
export interface RemapBudget {
  bytes: bigint;
  why: string;
}

/** Where remapBudget reads the limits: this process's /proc entries, unless a test gives fixed ones. */
export interface LimitSource {
  capIpcLock(): boolean;
  memlockSoftKiB(): number | null;
  uid(): number;
  /** What the user's other processes have charged to user->locked_vm. */
  othersKiB(uid: number): number;
}

const procLimits: LimitSource = {
  capIpcLock: () => hasCapability(CAP_IPC_LOCK),
  memlockSoftKiB: () => processCharge().memlockSoftKiB,
  uid: () => process.getuid!(),
  othersKiB: (uid) => userLockedKiB(uid, process.pid).totalKiB,
};

/**
 * The most a VM's DMA space may have charged while its map changes (a
 * transient remap): its own limit per process; per user, the limit less what
 * the user's other processes hold. null when the kernel checks nothing.
 */
export function remapBudget(path: IommuPath, mode: AccountingMode, limits: LimitSource = procLimits): RemapBudget | null {
  const charge = pinCore.accountingCharge(path, mode, limits.capIpcLock());
  const limitKiB = limits.memlockSoftKiB();
  if (charge.limit === 'none' || limitKiB === null) return null;
  if (charge.limit !== 'user-total') return { bytes: BigInt(limitKiB) * 1024n, why: `this process's RLIMIT_MEMLOCK of ${mib(limitKiB)}` };
  const uid = limits.uid();
  const others = limits.othersKiB(uid);
  return {
    bytes: BigInt(Math.max(0, limitKiB - others)) * 1024n,
    why: `RLIMIT_MEMLOCK ${mib(limitKiB)}, checked against user ${uid}'s total, of which other processes hold ${mib(others)}`,
  };
}
