// The RLIMIT_MEMLOCK each VMM process of one user needs (`pinion memlock
// plan`), on each IOMMU path and accounting mode, next to libvirt's formula, and
// which setups per-task limits cannot express. Pure; the charging rules come
// from pin-core's accounting model.
import type { AccountingCharge, AccountingMode, IommuPath } from '../memory/pin-core.js';

const GiB = 1n << 30n;

export interface VmSpec {
  name: string;
  ramBytes: bigint;
  devices: number;
  /** Each device in its own IOMMU address space (vIOMMU): RAM is pinned once per device. */
  separateAddressSpaces: boolean;
}

export interface LimitsRow {
  vm: string;
  ramBytes: bigint;
  devices: number;
  /** What the kernel pins for this VM: RAM once per address space. */
  pinnedBytes: bigint;
  needs: Record<'type1' | 'iommufdPerUser' | 'iommufdPerProcess', bigint>;
  libvirt: bigint;
}

export interface MemlockLimits {
  rows: LimitsRow[];
  userTotalBytes: bigint;
  notes: string[];
}

type Model = (path: IommuPath, mode: AccountingMode) => AccountingCharge;

export function memlockLimits(vms: VmSpec[], model: Model): MemlockLimits {
  const pinned = (v: VmSpec): bigint => (v.devices === 0 ? 0n : v.ramBytes * BigInt(v.separateAddressSpaces ? v.devices : 1));
  const userTotal = vms.reduce((n, v) => n + pinned(v), 0n);
  const need = (path: IommuPath, mode: AccountingMode, v: VmSpec): bigint =>
    pinned(v) === 0n ? 0n : model(path, mode).limit === 'user-total' ? userTotal : pinned(v);
  const rows = vms.map((v) => ({
    vm: v.name,
    ramBytes: v.ramBytes,
    devices: v.devices,
    pinnedBytes: pinned(v),
    needs: {
      type1: need('type1', 'per-process', v),
      iommufdPerUser: need('iommufd', 'per-user', v),
      iommufdPerProcess: need('iommufd', 'per-process', v),
    },
    // libvirt: guest RAM + 1 GiB, the RAM counted once per address space.
    libvirt: v.devices === 0 ? 0n : pinned(v) + GiB,
  }));
  const notes: string[] = [];
  const assigned = vms.filter((v) => v.devices > 0);
  if (assigned.length > 1)
    notes.push(
      `iommufd per-user (the default): the kernel checks the user's total (${userTotal} bytes) against each VMM's own limit, so every VMM needs the total and no per-task limit can hold one VM to its share; a transient remap of one VM can fail once another took the headroom. Per-process mode (pinion open, CAP_SYS_RESOURCE) restores per-VM limits.`,
    );
  if (rows.some((r) => r.libvirt < r.needs.iommufdPerUser))
    notes.push(
      "libvirt's formula is below what iommufd per-user needs for at least one VM: with those limits the later VMs fail to start.",
    );
  if (vms.some((v) => v.separateAddressSpaces && v.devices > 1))
    notes.push(
      "separate address spaces pin the same RAM once per device on every path; a shared container or IOAS (Pinion's default) pins it once.",
    );
  return { rows, userTotalBytes: userTotal, notes };
}
