// pinion rig: run a command inside the test rig's L1 and exit with its code.
import { resolve } from 'node:path';
import { runInRig } from '../../rig/rig.js';
import { parseKernelVariant } from '../../rig/kernel.js';
import { intFlag, parseFlags, UsageError } from './args.js';

const FLAGS = ['kernel', 'uid', 'memlock', 'timeout', 'rw', 'memory', 'cpus', 'iommu', 'stall', 'idle'] as const;

export async function rigCommand(argv: string[]): Promise<number> {
  const p = parseFlags(argv, FLAGS);
  if (p.rest.length === 0) throw new UsageError('no command given: pinion rig [options] -- <command...>');
  const kernel = parseKernelVariant(p.flags.get('kernel') ?? 'type1');
  const rw = p.flags.get('rw');
  const iommu = p.flags.get('iommu') ?? 'on';
  if (iommu !== 'on' && iommu !== 'off') throw new UsageError(`--iommu takes on or off, got '${iommu}'`);
  const r = await runInRig({
    kernel,
    command: p.rest,
    uid: intFlag(p, 'uid'),
    memlockKiB: intFlag(p, 'memlock'),
    timeoutSec: intFlag(p, 'timeout') ?? 600,
    stallSec: intFlag(p, 'stall'),
    idleSec: intFlag(p, 'idle'),
    memoryMiB: intFlag(p, 'memory'),
    cpus: intFlag(p, 'cpus'),
    iommu: iommu === 'on',
    rwDir: rw === undefined ? undefined : resolve(rw),
    env: { PINION_RIG_KERNEL: kernel },
  });
  if (process.env.PINION_RIG_VERBOSE) console.error(`rig: boot ${r.bootMs} ms, total ${r.totalMs} ms, exit ${r.exitCode}`);
  return r.exitCode;
}
