// pinion demo: the main job. Boots the rig on both kernels, reports what L1
// offers for device assignment (KVM, IOMMU, VFIO, iommufd, the igb NICs),
// then has Pinion boot the test guest with the igb PF assigned, on the iommufd
// path and on the legacy path: the guest drives the NIC (loopback DMA, MSI-X,
// frames with L1's peer igb) and Pinion says what was pinned and charged.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runInRig } from '../../rig/rig.js';
import { KERNEL_VARIANTS } from '../../rig/kernel.js';
import { rigReportScript } from '../../rig/l1/paths.js';

export async function demoCommand(_argv: string[]): Promise<number> {
  if (existsSync('/dev/kvm') && existsSync('/dev/iommu')) {
    console.log('pinion: this host has KVM and iommufd; the rig is not needed here.');
  }
  let worst = 0;
  for (const kernel of KERNEL_VARIANTS) {
    console.log(`\n== rig, ${kernel} kernel`);
    const cli = fileURLToPath(new URL('../cli.js', import.meta.url));
    const guest = fileURLToPath(new URL('../../guest/pinion-guest.elf', import.meta.url));
    const sender = fileURLToPath(new URL('../../../test/support/peer-send.py', import.meta.url));
    const pf = '0000:01:00.0';
    const run = (iommu: string): string =>
      `echo; echo "$ pinion run --payload ${guest} --device ${pf} --iommu ${iommu} --cmdline 'igb exit=0'"; ${process.execPath} ${cli} run --payload ${guest} --device ${pf} --iommu ${iommu} --cmdline 'igb exit=0' 2>&1`;
    // L1's peer igb broadcasts frames the guest should receive while the demo runs.
    const script = [
      `${process.execPath} ${rigReportScript()} --bind-pf`,
      `peer=$(ls /sys/bus/pci/devices/0000:00:04.0/net); python3 ${sender} $peer & sender=$!`,
      `${run('iommufd')}; a=$?`,
      `${run('legacy')}; b=$?`,
      `kill $sender; echo; echo "peer igb $peer received $(cat /sys/class/net/$peer/statistics/rx_packets) frame(s)"; [ $a = 0 ] && [ $b = 0 ]`,
    ].join('\n');
    const r = await runInRig({ kernel, command: ['sh', '-c', script], timeoutSec: 180, env: { PINION_RIG_KERNEL: kernel } });
    console.log(`(L1 booted in ${(r.bootMs / 1000).toFixed(1)} s, whole run ${(r.totalMs / 1000).toFixed(1)} s)`);
    worst = Math.max(worst, r.exitCode);
  }
  return worst;
}
