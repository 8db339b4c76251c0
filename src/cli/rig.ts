// pinion rig: run a command inside the test rig's L1 and exit with its code.
import { resolve } from 'node:path';
import { runInRig } from '../../rig/rig.js';
import { parseKernelVariant } from '../../rig/kernel.js';
import { oneOf, parseCommand, printUsage, UsageError, wholeNumber, type CommandSpec } from './args.js';
import { L1_RAM, MEMLOCK_KIB, sizeValue } from './sizes.js';

export const RIG = {
  name: 'pinion rig',
  usage: `usage: pinion rig [options] -- <command...>
  Boots the test rig (QEMU TCG, nested KVM, emulated Intel IOMMU, igb NICs) and runs <command> in its L1
  with this checkout at the same path; exits with the command's code (127: not found in L1, 124: timed out,
  125: L1 stalled, with a report).
  --kernel type1|compat   the L1 kernel: legacy VFIO container (default) or iommufd serving /dev/vfio/vfio
  --uid N                 run the command as uid N
  --memlock SIZE          the command's RLIMIT_MEMLOCK, e.g. 64M (whole KiB)
  --timeout S             seconds the command may run (default 600)
  --rw DIR                a host folder L1 may write
  --memory SIZE           L1's RAM, e.g. 2G (the default; whole MiB)
  --cpus N                L1's vCPUs (default 2)
  --iommu on|off          L1 with the emulated IOMMU (default) or with none
  --stall S               heartbeat silence that counts as a stall (default 20)
  --idle S                an idle L1 with a silent command for S seconds counts as a stall (default off)`,
  options: {
    kernel: { type: 'string' },
    uid: { type: 'string' },
    memlock: { type: 'string' },
    timeout: { type: 'string' },
    rw: { type: 'string' },
    memory: { type: 'string' },
    cpus: { type: 'string' },
    iommu: { type: 'string' },
    stall: { type: 'string' },
    idle: { type: 'string' },
  },
  positionals: 'command',
} satisfies CommandSpec;

export async function rigCommand(argv: string[]): Promise<number> {
  const p = parseCommand(argv, RIG);
  if (p.help) return printUsage(RIG);
  const v = p.values;
  if (p.positionals.length === 0) throw new UsageError('no command given: pinion rig [options] -- <command...>');
  const kernel = parseKernelVariant(v.kernel ?? 'type1');
  const whole = (name: 'uid' | 'timeout' | 'stall' | 'idle' | 'cpus', min = 0): number | undefined => {
    const text = v[name];
    return text === undefined ? undefined : wholeNumber(text, `--${name}`, { min });
  };
  const r = await runInRig({
    kernel,
    command: p.positionals,
    uid: whole('uid'),
    memlockKiB: v.memlock === undefined ? undefined : Number(sizeValue(v.memlock, '--memlock', MEMLOCK_KIB) / 1024n),
    timeoutSec: whole('timeout', 1) ?? 600,
    stallSec: whole('stall', 1),
    idleSec: whole('idle', 1),
    memoryMiB: v.memory === undefined ? undefined : Number(sizeValue(v.memory, '--memory', L1_RAM) >> 20n),
    cpus: whole('cpus', 1),
    iommu: oneOf(v.iommu ?? 'on', '--iommu', ['on', 'off']) === 'on',
    rwDir: v.rw === undefined ? undefined : resolve(v.rw),
    env: { PINION_RIG_KERNEL: kernel },
  });
  if (process.env.PINION_RIG_VERBOSE) console.error(`rig: boot ${r.bootMs} ms, total ${r.totalMs} ms, exit ${r.exitCode}`);
  return r.exitCode;
}
