// The L1 kernel: built by build-kernel.sh from Debian's linux-source-7.3 in
// one of two variants, cached by source version and config hash.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { RigError, rigSourceDir } from './paths.js';

export const KERNEL_VARIANTS = ['type1', 'compat'] as const;
export type KernelVariant = (typeof KERNEL_VARIANTS)[number];

export function parseKernelVariant(v: string): KernelVariant {
  if ((KERNEL_VARIANTS as readonly string[]).includes(v)) return v as KernelVariant;
  throw new RigError(
    `unknown --kernel '${v}': use --kernel type1 (legacy VFIO container) or --kernel compat (iommufd serves /dev/vfio/vfio)`,
    undefined,
    2,
  );
}

/** Returns the bzImage path, building it first when the cache has none (progress on stderr).
 * PINION_RIG_BZIMAGE_TYPE1 / _COMPAT name a prebuilt image instead. */
export function ensureKernel(variant: KernelVariant): string {
  // A kernel built elsewhere (same fragments) can be used as is.
  const given = process.env[`PINION_RIG_BZIMAGE_${variant.toUpperCase()}`];
  if (given) return given;
  const script = join(rigSourceDir(), 'build-kernel.sh');
  const r = spawnSync('bash', [script, variant], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (r.status !== 0) throw new RigError(`building the ${variant} L1 kernel failed (see the lines above)`);
  const path = r.stdout.trim().split('\n').pop() ?? '';
  if (!path.endsWith('bzImage')) throw new RigError(`build-kernel.sh printed no bzImage path for ${variant}`);
  return path;
}
