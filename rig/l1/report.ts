// Prints what L1 offers for device assignment: KVM, iommufd, the VFIO
// container and who serves it, IOMMU groups and the igb NICs. `--json` for tests.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { pinCore } from '../../src/memory/pin-core.js';
import { assignablePf, bindVfio, createVfs, igbDevices, iommuGroups, kernelConfig, peerPf, vfioDeviceNodes } from './sysfs.js';

/** Who serves /dev/vfio/vfio, as pin-core tells from the fd's own answers. */
function containerServedBy(path: string): 'iommufd' | 'vfio-type1' {
  const h = pinCore.type1Open(path, -1);
  try {
    return pinCore.caps(h).path === 'compat' ? 'iommufd' : 'vfio-type1';
  } finally {
    pinCore.close(h);
  }
}

export function l1Report() {
  const cfg = kernelConfig();
  return {
    kernel: process.env.PINION_RIG_KERNEL ?? null,
    devKvm: existsSync('/dev/kvm'),
    devIommu: existsSync('/dev/iommu'),
    devVfioVfio: existsSync('/dev/vfio/vfio'),
    containerServedBy: existsSync('/dev/vfio/vfio') ? containerServedBy('/dev/vfio/vfio') : null,
    config: {
      VFIO_CONTAINER: cfg.get('CONFIG_VFIO_CONTAINER') ?? 'n',
      IOMMUFD_VFIO_CONTAINER: cfg.get('CONFIG_IOMMUFD_VFIO_CONTAINER') ?? 'n',
      IOMMUFD_TEST: cfg.get('CONFIG_IOMMUFD_TEST') ?? 'n',
    },
    iommuGroups: Object.fromEntries(iommuGroups()),
    vfioDevices: vfioDeviceNodes(),
    igb: igbDevices(),
  };
}

function main(): void {
  if (process.argv.includes('--bind-vf')) {
    // Show the assignable end state: one VF of the SR-IOV igb bound to vfio-pci.
    for (const vf of createVfs(assignablePf().bdf, 1)) bindVfio(vf);
  }
  if (process.argv.includes('--bind-pf')) {
    // The demo's end state: the SR-IOV igb's PF on vfio-pci, the peer igb's link up in L1.
    bindVfio(assignablePf().bdf);
    const peerIf = readdirSync(`/sys/bus/pci/devices/${peerPf().bdf}/net`)[0];
    if (peerIf) spawnSync('ip', ['link', 'set', peerIf, 'up']);
  }
  const r = l1Report();
  if (process.argv.includes('--json')) {
    process.stdout.write(JSON.stringify(r) + '\n');
    return;
  }
  const yes = (b: boolean) => (b ? 'yes' : 'MISSING');
  console.log(`L1 kernel variant:   ${r.kernel ?? 'unknown'}`);
  console.log(`/dev/kvm:            ${yes(r.devKvm)}`);
  console.log(`/dev/iommu:          ${yes(r.devIommu)}`);
  console.log(`/dev/vfio/vfio:      ${yes(r.devVfioVfio)}${r.containerServedBy ? ` (served by ${r.containerServedBy})` : ''}`);
  console.log(`IOMMU groups:        ${Object.keys(r.iommuGroups).length}`);
  for (const d of r.igb) {
    const role =
      d.device === '0x10ca' ? 'VF' : d.bdf.startsWith('0000:00:') ? 'PF (peer, on the QEMU hub)' : 'PF (assignable, behind a root port)';
    console.log(
      `igb ${d.bdf}: ${role}, driver ${d.driver ?? 'none'}, IOMMU group ${d.iommuGroup ?? 'none'}${d.sriovTotalVfs ? `, SR-IOV up to ${d.sriovTotalVfs} VFs` : ''}`,
    );
  }
  console.log(`VFIO cdevs:          ${r.vfioDevices.join(' ') || 'none (no device bound to vfio-pci)'}`);
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/^.*\/dist\//, '/dist/'))) main();
