// What sysfs says about a host PCI device Pinion is asked to assign: does it
// exist, which driver has it, its IOMMU group and the group's other members,
// its VFIO cdev. Errors name the fix, with the exact commands.
import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { basename } from 'node:path';

export class AssignError extends Error {
  override readonly name = 'AssignError';
}

export interface HostDevice {
  bdf: string;
  driver: string | null;
  group: string | null;
  groupMembers: { bdf: string; driver: string | null }[];
  /** /dev/vfio/devices/vfioN when the kernel has VFIO cdevs. */
  cdev: string | null;
  /** Hardware IOMMUs the host kernel registered (/sys/class/iommu): 0 when none is enabled. */
  iommus: number;
}

const SYS = '/sys/bus/pci/devices';

function driverOf(bdf: string): string | null {
  try {
    return basename(readlinkSync(`${SYS}/${bdf}/driver`));
  } catch {
    return null;
  }
}

/** Accepts 0000:01:00.0 or 01:00.0. */
export function normaliseBdf(s: string): string {
  const m = /^(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$/i.exec(s.trim());
  if (!m) throw new AssignError(`'${s}' is not a PCI address; write it like 0000:01:00.0 (see lspci -D)`);
  return `${m[1] ?? '0000'}:${m[2]}:${m[3]}.${m[4]}`.toLowerCase();
}

export function hostDevice(bdfArg: string): HostDevice {
  const bdf = normaliseBdf(bdfArg);
  if (!existsSync(`${SYS}/${bdf}`)) throw new AssignError(`no PCI device ${bdf} on this host; list devices with: lspci -D`);
  let group: string | null = null;
  try {
    group = basename(readlinkSync(`${SYS}/${bdf}/iommu_group`));
  } catch {
    group = null;
  }
  const groupMembers = group ? readdirSync(`/sys/kernel/iommu_groups/${group}/devices`).map((d) => ({ bdf: d, driver: driverOf(d) })) : [];
  let cdev: string | null = null;
  try {
    const n = readdirSync(`${SYS}/${bdf}/vfio-dev`).find((x) => x.startsWith('vfio'));
    cdev = n ? `/dev/vfio/devices/${n}` : null;
  } catch {
    cdev = null;
  }
  let iommus = 0;
  try {
    // CONFIG_IOMMUFD_TEST registers a mock IOMMU that serves no PCI device.
    iommus = readdirSync('/sys/class/iommu').filter((n) => !n.startsWith('iommufd_selftest')).length;
  } catch {
    iommus = 0;
  }
  return { bdf, driver: driverOf(bdf), group, groupMembers, cdev, iommus };
}

/** Throws unless the device can be assigned: in an IOMMU group, bound to vfio-pci, its group viable. */
export function checkAssignable(d: HostDevice): void {
  if (!d.group) {
    if (d.iommus === 0)
      throw new AssignError(
        `${d.bdf} has no IOMMU group: the host has no IOMMU enabled (/sys/class/iommu lists none); turn on VT-d or AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on`,
      );
    throw new AssignError(
      `${d.bdf} has no IOMMU group: it sits behind none of the host's ${d.iommus} IOMMU(s) (see dmesg for DMAR or AMD-Vi), so it cannot be assigned`,
    );
  }
  if (d.driver !== 'vfio-pci') {
    const unbind = d.driver ? `echo ${d.bdf} > /sys/bus/pci/devices/${d.bdf}/driver/unbind; ` : '';
    throw new AssignError(
      `${d.bdf} is bound to ${d.driver ?? 'no driver'}, not vfio-pci; bind it with: ${unbind}echo vfio-pci > /sys/bus/pci/devices/${d.bdf}/driver_override; echo ${d.bdf} > /sys/bus/pci/drivers_probe`,
    );
  }
  const blockers = d.groupMembers.filter((m) => m.bdf !== d.bdf && m.driver !== null && m.driver !== 'vfio-pci' && m.driver !== 'pcieport');
  if (blockers.length)
    throw new AssignError(
      `IOMMU group ${d.group} of ${d.bdf} is not viable: ${blockers.map((b) => `${b.bdf} (${b.driver})`).join(', ')} must be bound to vfio-pci or unbound too: ${blockers.map((b) => `echo ${b.bdf} > /sys/bus/pci/devices/${b.bdf}/driver/unbind`).join('; ')}`,
    );
}
