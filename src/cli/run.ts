// pinion run's command line: flags to a RunPlan, with every check that needs
// no file, KVM or device made here. The VM itself (run-vm.ts) loads after, so
// bad input and --help need neither KVM nor the native addon. `--incoming FD`
// is the new process of a live update (incoming.ts): the VM comes from the old
// process, so it takes no other flag.
import { RAM_BACKENDS, type RamBackend } from '../memory/guest-ram.js';
import { checkChannel } from '../update/fds.js';
import { DECOMPRESS, type Decompress } from '../vmm/vmlinux.js';
import { oneOf, parseCommand, printUsage, UsageError, wholeNumber, type CommandSpec } from './args.js';
import { openerFds, type InheritedFds } from './inherited-fds.js';
import { BOOT_RAM, sizeValue } from './sizes.js';

const IOMMUS = ['auto', 'legacy', 'iommufd'] as const;
export const MAX_VCPUS = 8;

export const RUN = {
  name: 'pinion run',
  usage: `usage: pinion run --payload FILE [--cmdline S] | --kernel bzImage [--initrd FILE] [--append S] [--decompress kernel|vmm]
                  [--memory SIZE] [--cpus N] [--memory-backend memfd|anon|hugetlb] [--console FILE]
                  [--device BDF]... [--iommu auto|legacy|iommufd] [--api-socket PATH]
       | pinion run --incoming FD
  Boots FILE (an ELF64 payload, e.g. dist/guest/pinion-guest.elf) or a Linux bzImage in a KVM VM, the guest
  console on stdout (and stdin, for Linux); exits with the guest's exit status (Linux: 0 on reboot, 1 on a panic).
  --memory SIZE        guest RAM, e.g. 64M (the default) or 1G; 1M to 4G
  --cpus N             vCPUs, 1 to ${MAX_VCPUS} (default 1)
  --memory-backend     memfd (default), anon, or hugetlb (2 MiB pages, reserved in /proc/sys/vm/nr_hugepages)
  --console FILE       the guest console to FILE instead of stdout
  --device BDF         assign the PCI device BDF (bound to vfio-pci); repeat for more
  --iommu              the DMA path of assigned devices: auto (default), legacy (VFIO container), iommufd
  --decompress         kernel (the bzImage decompresses itself, the default) or vmm (Pinion inflates it)
  --api-socket PATH    serve the control API (HTTP on a Unix socket, mode 0600); see pinion ctl --help
  --incoming FD        the new process of a live update, with the old one's channel at FD: started by a running
                       Pinion (pinion ctl PATH update), not by hand; the VM and its settings come from there`,
  options: {
    payload: { type: 'string' },
    kernel: { type: 'string' },
    initrd: { type: 'string' },
    append: { type: 'string' },
    cmdline: { type: 'string' },
    decompress: { type: 'string' },
    memory: { type: 'string' },
    cpus: { type: 'string' },
    'memory-backend': { type: 'string' },
    console: { type: 'string' },
    device: { type: 'string', multiple: true },
    iommu: { type: 'string' },
    'api-socket': { type: 'string' },
    incoming: { type: 'string' },
  },
} satisfies CommandSpec;

/** A checked `pinion run`: what run-vm.ts boots. */
export interface RunPlan {
  /** The arguments as given, for the commands the VMM suggests. */
  argv: string[];
  payload?: string;
  linux?: { kernel: string; initrd?: string; decompress: Decompress };
  cmdline: string;
  memory: bigint;
  memoryArg: string;
  cpus: number;
  backend: RamBackend;
  devices: string[];
  iommu: (typeof IOMMUS)[number];
  apiPath?: string;
  consolePath?: string;
  /** Handed down by pinion open. */
  fds?: InheritedFds;
}

/** `pinion run --incoming FD`: the channel to the old process of a live update. */
export interface IncomingPlan {
  incoming: number;
}

/** The plan of `argv`, or a UsageError saying what is wrong with it. */
export function parseRun(argv: string[]): RunPlan | IncomingPlan | 'help' {
  const p = parseCommand(argv, RUN);
  if (p.help) return 'help';
  const v = p.values;
  if (v.incoming !== undefined) {
    const other = Object.keys(v).find((k) => k !== 'incoming');
    if (other) throw new UsageError(`--incoming takes no other flag (--${other} given): the VM and its settings come from the old process`);
    // 0-2 are stdio; the old process passes the channel first, then the VM's fds (update/peer.ts).
    return { incoming: wholeNumber(v.incoming, '--incoming', { min: 3 }) };
  }
  const { payload, kernel } = v;
  if (payload !== undefined && kernel !== undefined)
    throw new UsageError('--payload and --kernel both given; boot one: the test guest (--payload) or Linux (--kernel)');
  if (payload === undefined && kernel === undefined)
    throw new UsageError(
      'nothing to boot: pinion run --payload FILE (the test guest is dist/guest/pinion-guest.elf) or pinion run --kernel bzImage [--initrd FILE] [--append S]',
    );
  if (payload !== undefined && (v.initrd !== undefined || v.append !== undefined))
    throw new UsageError(`--${v.initrd !== undefined ? 'initrd' : 'append'} goes with --kernel; the test guest takes --cmdline`);
  if (kernel !== undefined && v.cmdline !== undefined)
    throw new UsageError("--cmdline is the test guest's; a Linux kernel's command line is --append");
  if (payload !== undefined && v.decompress !== undefined)
    throw new UsageError('--decompress goes with --kernel; the test guest is not compressed');
  const decompress = oneOf(
    v.decompress ?? 'kernel',
    '--decompress',
    DECOMPRESS,
    "kernel: the bzImage's own decompressor, the default; vmm: Pinion inflates a gzip kernel and enters vmlinux",
  );
  const memoryArg = v.memory ?? '64M';
  const devices = v.device ?? [];
  if (v.iommu !== undefined && devices.length === 0)
    throw new UsageError('--iommu picks the DMA path of assigned devices, and no --device is given; add --device BDF or drop --iommu');
  return {
    argv,
    payload,
    linux: kernel === undefined ? undefined : { kernel, initrd: v.initrd, decompress },
    cmdline: (kernel !== undefined ? v.append : v.cmdline) ?? '',
    memory: sizeValue(memoryArg, '--memory', BOOT_RAM),
    memoryArg,
    cpus: v.cpus === undefined ? 1 : wholeNumber(v.cpus, '--cpus', { min: 1, max: MAX_VCPUS }),
    backend: oneOf(v['memory-backend'] ?? 'memfd', '--memory-backend', RAM_BACKENDS),
    devices,
    iommu: oneOf(v.iommu ?? 'auto', '--iommu', IOMMUS),
    apiPath: v['api-socket'],
    consolePath: v.console,
  };
}

export async function runCommand(argv: string[]): Promise<number> {
  const plan = parseRun(argv);
  if (plan === 'help') return printUsage(RUN);
  if ('incoming' in plan) {
    // Checked before the VM's modules load, as the fds pinion open hands down are.
    checkChannel(plan.incoming);
    return (await import('./incoming.js')).incomingCommand(plan.incoming);
  }
  plan.fds = openerFds();
  return (await import('./run-vm.js')).runVm(plan);
}
