// pinion demo: the main job. Boots the rig, reports what L1 offers for
// device assignment, then boots the Linux guest image with an igb VF under
// Pinion (boot, link up, ping and a short iperf3 to L1, on the iommufd and
// the legacy path) and under QEMU on the same VF, and shows them side by side.
import { existsSync } from 'node:fs';
import { runInRig } from '../../rig/rig.js';
import { KERNEL_VARIANTS, parseKernelVariant, type KernelVariant } from '../../rig/kernel.js';
import { ensureGuestImage } from '../../rig/guest-image.js';
import { rigDemoScript, rigReportScript } from '../../rig/l1/paths.js';
import { parseFlags } from './args.js';

export async function demoCommand(argv: string[]): Promise<number> {
  const p = parseFlags(argv, ['kernel'] as const);
  const k = p.flags.get('kernel') ?? 'type1';
  const kernels: readonly KernelVariant[] = k === 'both' ? KERNEL_VARIANTS : [parseKernelVariant(k)];
  if (existsSync('/dev/kvm') && existsSync('/dev/iommu')) {
    console.log('pinion: this host has KVM and iommufd; the rig is not needed here.');
  }
  let worst = 0;
  for (const kernel of kernels) {
    console.log(`\n== rig, ${kernel} kernel`);
    const image = ensureGuestImage(kernel);
    const script = [
      `${process.execPath} ${rigReportScript()}`,
      `${process.execPath} ${rigDemoScript()} ${image.kernel} ${image.initrd}`,
    ].join(' && ');
    const r = await runInRig({ kernel, command: ['sh', '-c', script], timeoutSec: 900, env: { PINION_RIG_KERNEL: kernel } });
    console.log(`(L1 booted in ${(r.bootMs / 1000).toFixed(1)} s, whole run ${(r.totalMs / 1000).toFixed(1)} s)`);
    worst = Math.max(worst, r.exitCode);
  }
  return worst;
}
