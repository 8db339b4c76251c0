// pinion demo: the main job. Boots the rig, reports what L1 offers for
// device assignment, then boots the Linux guest image with an igb VF under
// Pinion (boot, link up, ping and a short iperf3 to L1, on the iommufd and
// the legacy path) and under QEMU on the same VF, and shows them side by side.
import { existsSync } from 'node:fs';
import { runInRig } from '../../rig/rig.js';
import { KERNEL_VARIANTS, type KernelVariant } from '../../rig/kernel.js';
import { ensureGuestImage } from '../../rig/guest-image.js';
import { rigDemoScript, rigReportScript } from '../../rig/l1/paths.js';
import { oneOf, parseCommand, printUsage, type CommandSpec } from './args.js';
import { shellLine } from './shell.js';

export const DEMO = {
  name: 'pinion demo',
  usage: `usage: pinion demo [--kernel type1|compat|both]
  Boots the rig, reports what L1 offers for device assignment, then boots the Linux guest image with an igb VF
  under Pinion (iommufd and legacy path) and under QEMU on the same VF, and shows them side by side.
  --kernel   the L1 kernel: type1 (default), compat (iommufd serves /dev/vfio/vfio), or both, one after the other`,
  options: { kernel: { type: 'string' } },
} satisfies CommandSpec;

export async function demoCommand(argv: string[]): Promise<number> {
  const p = parseCommand(argv, DEMO);
  if (p.help) return printUsage(DEMO);
  const k = oneOf(p.values.kernel ?? 'type1', '--kernel', [...KERNEL_VARIANTS, 'both']);
  const kernels: readonly KernelVariant[] = k === 'both' ? KERNEL_VARIANTS : [k];
  if (existsSync('/dev/kvm') && existsSync('/dev/iommu')) {
    console.log('pinion: this host has KVM and iommufd; the rig is not needed here.');
  }
  let worst = 0;
  for (const kernel of kernels) {
    console.log(`\n== rig, ${kernel} kernel`);
    const image = ensureGuestImage(kernel);
    const script = [
      shellLine([process.execPath, rigReportScript()]),
      shellLine([process.execPath, rigDemoScript(), image.kernel, image.initrd]),
    ].join(' && ');
    const r = await runInRig({ kernel, command: ['sh', '-c', script], timeoutSec: 900, env: { PINION_RIG_KERNEL: kernel } });
    console.log(`(L1 booted in ${(r.bootMs / 1000).toFixed(1)} s, whole run ${(r.totalMs / 1000).toFixed(1)} s)`);
    worst = Math.max(worst, r.exitCode);
  }
  return worst;
}
