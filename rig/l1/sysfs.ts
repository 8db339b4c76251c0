// Helpers that run inside L1 (as root): what PCI devices, IOMMU groups and
// VFIO nodes exist, binding devices to vfio-pci, creating SR-IOV VFs.
import { existsSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { gunzipSync } from 'node:zlib';

const PCI = '/sys/bus/pci/devices';

export interface PciDevice {
  bdf: string;
  vendor: string;
  device: string;
  class: string;
  driver: string | null;
  iommuGroup: string | null;
  sriovTotalVfs: number;
  vfioCdev: string | null; // /dev/vfio/devices/vfioN when bound to vfio-pci with cdev support
}

const read = (p: string): string => readFileSync(p, 'utf8').trim();
const link = (p: string): string | null => (existsSync(p) ? basename(readlinkSync(p)) : null);

export function pciDevice(bdf: string): PciDevice {
  const d = join(PCI, bdf);
  if (!existsSync(d)) throw new Error(`no PCI device ${bdf} in L1 (see /sys/bus/pci/devices)`);
  const vf = join(d, 'sriov_totalvfs');
  const vfioDev = join(d, 'vfio-dev');
  const cdev = existsSync(vfioDev) ? (readdirSync(vfioDev).find((n) => n.startsWith('vfio')) ?? null) : null;
  return {
    bdf,
    vendor: read(join(d, 'vendor')),
    device: read(join(d, 'device')),
    class: read(join(d, 'class')),
    driver: link(join(d, 'driver')),
    iommuGroup: link(join(d, 'iommu_group')),
    sriovTotalVfs: existsSync(vf) ? Number(read(vf)) : 0,
    vfioCdev: cdev ? `/dev/vfio/devices/${cdev}` : null,
  };
}

export function pciDevices(): PciDevice[] {
  return readdirSync(PCI).sort().map(pciDevice);
}

/** Intel 82576 (igb) functions: the PF(s) and any VFs (device 10ca). */
export function igbDevices(): PciDevice[] {
  return pciDevices().filter((d) => d.vendor === '0x8086' && (d.device === '0x10c9' || d.device === '0x10ca'));
}

/** The igb PF Pinion assigns from: the one behind the PCIe root port (bus 01). */
export function assignablePf(): PciDevice {
  const pf = igbDevices().find((d) => d.device === '0x10c9' && !d.bdf.startsWith('0000:00:'));
  if (!pf) throw new Error('no igb PF behind a PCIe root port in L1 (is this the rig?)');
  return pf;
}

/** The peer igb on the root bus, left to L1's igb driver; it shares the QEMU hub with the assigned one. */
export function peerPf(): PciDevice {
  const pf = igbDevices().find((d) => d.device === '0x10c9' && d.bdf.startsWith('0000:00:'));
  if (!pf) throw new Error('no peer igb on the root bus in L1 (is this the rig?)');
  return pf;
}

/** The virtio-input functions behind the PCIe-to-PCI bridge, which share one IOMMU group. */
export function sharedGroup(): { group: string; functions: string[]; members: string[] } {
  const input = pciDevices().filter((d) => d.vendor === '0x1af4' && d.device === '0x1052' && d.iommuGroup !== null);
  for (const d of input) {
    const members = iommuGroups().get(d.iommuGroup!) ?? [];
    const functions = input.filter((r) => members.includes(r.bdf)).map((r) => r.bdf);
    if (functions.length >= 2) return { group: d.iommuGroup!, functions, members };
  }
  throw new Error('no IOMMU group with two virtio-input functions in L1 (is this the rig, with the IOMMU on?)');
}

/** Unbinds a device from its driver and clears driver_override, leaving it with no driver. */
export function unbind(bdf: string): PciDevice {
  const d = join(PCI, bdf);
  writeFileSync(join(d, 'driver_override'), '\n');
  if (pciDevice(bdf).driver) writeFileSync(join(d, 'driver', 'unbind'), bdf);
  return pciDevice(bdf);
}

export function iommuGroups(): Map<string, string[]> {
  const root = '/sys/kernel/iommu_groups';
  const groups = new Map<string, string[]>();
  if (!existsSync(root)) return groups;
  for (const g of readdirSync(root).sort((a, b) => Number(a) - Number(b))) {
    groups.set(g, readdirSync(join(root, g, 'devices')).sort());
  }
  return groups;
}

/** Binds a device to vfio-pci the way an administrator would: driver_override, unbind, probe. */
export function bindVfio(bdf: string): PciDevice {
  const d = join(PCI, bdf);
  const dev = pciDevice(bdf);
  if (dev.driver === 'vfio-pci') return dev;
  writeFileSync(join(d, 'driver_override'), 'vfio-pci');
  if (dev.driver) writeFileSync(join(d, 'driver', 'unbind'), bdf);
  writeFileSync('/sys/bus/pci/drivers_probe', bdf);
  const after = pciDevice(bdf);
  if (after.driver !== 'vfio-pci') throw new Error(`${bdf} did not bind to vfio-pci (driver: ${after.driver ?? 'none'})`);
  return after;
}

/** Creates n VFs on an SR-IOV PF (0 first: the kernel refuses to change a non-zero count). Returns their BDFs. */
export function createVfs(pf: string, n: number): string[] {
  const f = join(PCI, pf, 'sriov_numvfs');
  if (!existsSync(f)) throw new Error(`${pf} is not SR-IOV capable`);
  writeFileSync(f, '0');
  if (n > 0) writeFileSync(f, String(n));
  return readdirSync(join(PCI, pf))
    .filter((e) => /^virtfn\d+$/.test(e))
    .sort((a, b) => Number(a.slice(6)) - Number(b.slice(6)))
    .map((e) => basename(readlinkSync(join(PCI, pf, e))));
}

export function vfioDeviceNodes(): string[] {
  const dir = '/dev/vfio/devices';
  return existsSync(dir)
    ? readdirSync(dir)
        .sort()
        .map((n) => join(dir, n))
    : [];
}

/** CONFIG_* values of the running kernel from /proc/config.gz, when built in. */
export function kernelConfig(): Map<string, string> {
  const m = new Map<string, string>();
  if (!existsSync('/proc/config.gz')) return m;
  const text = gunzipSync(readFileSync('/proc/config.gz')).toString('utf8');
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (line.startsWith('CONFIG_') && i > 0) m.set(line.slice(0, i), line.slice(i + 1));
  }
  return m;
}
