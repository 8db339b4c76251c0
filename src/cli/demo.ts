// pinion demo: the main job. Boots the rig on both kernels, reports what L1
// offers for device assignment (KVM, IOMMU, VFIO, iommufd, the igb NICs) and
// has Pinion boot the test guest there on two vCPUs.
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
    const run = `${process.execPath} ${cli} run --payload ${guest} --cpus 2 --cmdline exit=0`;
    const script = `${process.execPath} ${rigReportScript()} --bind-vf && echo && echo "$ pinion run --payload ${guest} --cpus 2" && ${run}`;
    const r = await runInRig({ kernel, command: ['sh', '-c', script], timeoutSec: 180, env: { PINION_RIG_KERNEL: kernel } });
    console.log(`(L1 booted in ${(r.bootMs / 1000).toFixed(1)} s, whole run ${(r.totalMs / 1000).toFixed(1)} s)`);
    worst = Math.max(worst, r.exitCode);
  }
  return worst;
}
