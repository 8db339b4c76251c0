// pinion run: boot a payload in a KVM VM; the guest console goes to stdout
// (or --console FILE) and Pinion exits with the guest's exit status.
import { closeSync, openSync } from 'node:fs';
import { relative } from 'node:path';
import { Machine } from '../machine/machine.js';
import { RAM_BACKENDS, type RamBackend } from '../memory/guest-ram.js';
import { parseSize } from '../memory/layout.js';
import type { Caps } from '../memory/pin-core.js';
import { processCharge } from '../memlock/status.js';
import { intFlag, parseFlags, UsageError } from './args.js';
import { DECOMPRESS, type Decompress } from '../vmm/vmlinux.js';

const FLAGS = [
  'payload',
  'kernel',
  'initrd',
  'append',
  'memory',
  'cpus',
  'memory-backend',
  'cmdline',
  'console',
  'device',
  'iommu',
  'decompress',
  'api-socket',
] as const;
const IOMMUS = ['auto', 'legacy', 'iommufd'] as const;
export const MAX_VCPUS = 8;

/** The same command, run in the rig: what to tell a user on a machine without KVM. */
function rigHint(argv: string[]): string {
  const self = `node ${relative(process.cwd(), process.argv[1] ?? 'dist/bundle/pinion.js') || 'dist/bundle/pinion.js'}`;
  return `${self} rig -- ${self} run ${argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ')}`;
}

export async function runCommand(argv: string[]): Promise<number> {
  const p = parseFlags(argv, FLAGS);
  if (p.rest.length)
    throw new UsageError(
      `unexpected argument '${p.rest[0]}'; pinion run --payload FILE [--cmdline S] | --kernel bzImage [--initrd FILE] [--append S] [--decompress kernel|vmm]; [--memory 64M] [--cpus N] [--memory-backend memfd|anon|hugetlb] [--console FILE] [--device BDF]... [--iommu auto|legacy|iommufd] [--api-socket PATH]`,
    );
  const payload = p.flags.get('payload');
  const kernel = p.flags.get('kernel');
  if (payload && kernel)
    throw new UsageError('--payload and --kernel both given; boot one: the test guest (--payload) or Linux (--kernel)');
  if (!payload && !kernel)
    throw new UsageError(
      'nothing to boot: pinion run --payload FILE (the test guest is dist/guest/pinion-guest.elf) or pinion run --kernel bzImage [--initrd FILE] [--append S]',
    );
  if (payload && (p.flags.has('initrd') || p.flags.has('append')))
    throw new UsageError(`--${p.flags.has('initrd') ? 'initrd' : 'append'} goes with --kernel; the test guest takes --cmdline`);
  if (kernel && p.flags.has('cmdline')) throw new UsageError("--cmdline is the test guest's; a Linux kernel's command line is --append");
  const decompress = (p.flags.get('decompress') ?? 'kernel') as Decompress;
  if (!DECOMPRESS.includes(decompress))
    throw new UsageError(
      `--decompress '${decompress}' is not one of ${DECOMPRESS.join(', ')} (kernel: the bzImage's own decompressor, the default; vmm: Pinion inflates a gzip kernel and enters vmlinux)`,
    );
  if (payload && p.flags.has('decompress')) throw new UsageError('--decompress goes with --kernel; the test guest is not compressed');
  const linux = kernel ? { kernel, initrd: p.flags.get('initrd'), decompress } : undefined;
  const cmdline = (kernel ? p.flags.get('append') : p.flags.get('cmdline')) ?? '';
  const memoryArg = p.flags.get('memory') ?? '64M';
  let memory: bigint;
  try {
    memory = parseSize(memoryArg, '--memory');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const cpus = intFlag(p, 'cpus') ?? 1;
  if (cpus < 1 || cpus > MAX_VCPUS) throw new UsageError(`--cpus ${cpus} is out of range; 1 to ${MAX_VCPUS}`);
  const backend = (p.flags.get('memory-backend') ?? 'memfd') as RamBackend;
  if (!RAM_BACKENDS.includes(backend)) throw new UsageError(`--memory-backend '${backend}' is not one of ${RAM_BACKENDS.join(', ')}`);

  const iommu = (p.flags.get('iommu') ?? 'auto') as (typeof IOMMUS)[number];
  if (!IOMMUS.includes(iommu)) throw new UsageError(`--iommu '${iommu}' is not one of ${IOMMUS.join(', ')}`);
  const devices = p.all.get('device') ?? [];

  const apiPath = p.flags.get('api-socket');
  // A path in use is refused before anything is opened or pinned.
  const api = apiPath ? await import('../api/index.js') : undefined;
  if (apiPath) await api!.claimSocketPath(apiPath);

  const consolePath = p.flags.get('console');
  const consoleFd = consolePath ? openSync(consolePath, 'w') : 1;
  let machine: Machine | undefined;
  let control: { ended(): void; close(): void } | undefined;
  let server: { close(): Promise<void> } | undefined;
  try {
    const fds = openerFds();
    const openerHint = `pinion open --user ${process.getuid!()} ${devices.map((d) => `--device ${d}`).join(' ')} -- pinion run ${argv.join(' ')}`;
    machine = Machine.create({
      payload,
      linux,
      memory,
      memoryArg,
      cpus,
      backend,
      cmdline,
      consoleFd,
      kvmHint: rigHint(argv),
      devices,
      iommu,
      fds,
      openerHint,
      kvmPath: process.env.PINION_KVM_DEVICE,
    });
    if (devices.length) {
      // With a device assigned all of RAM is pinned: 4 KiB pages then cost pins, IOMMU entries and faults.
      const why = machine.smallPagesWhy;
      if (why) console.error(`pinion: note: ${why}`);
      console.error(assignmentSummary(machine));
    }
    const m = machine;
    if (apiPath) {
      const c = new api!.MachineControl(m);
      control = c;
      server = await api!.ApiServer.listen(apiPath, (method, url, body) => api!.route(c, method, url, body));
      console.error(`pinion: control API on ${apiPath} (pinion ctl ${apiPath} info)`);
    }
    const onSignal = (sig: NodeJS.Signals): void => m.stop(`signal ${sig}`);
    process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
    // Pinion's stdin is the Linux guest's console input.
    const onInput = (d: Buffer): void => m.input(d);
    if (linux) process.stdin.on('data', onInput);
    const r = await m.run();
    if (linux) process.stdin.off('data', onInput).pause();
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
    if (r.kind === 'exit') return r.status;
    // A VM has no reset here: a guest that reboots ends it, as a poweroff would.
    if (r.kind === 'panic') {
      console.error(`pinion: guest kernel panic: ${r.line}`);
      return 1;
    }
    if (r.kind === 'poweroff') {
      console.error('pinion: guest powered off; the VM ends');
      return 0;
    }
    if (r.kind === 'reset') {
      console.error('pinion: guest reset (reboot); the VM ends');
      return 0;
    }
    if (r.kind === 'fault') {
      console.error(`pinion: guest stopped: ${r.report}`);
      return 1;
    }
    console.error(`pinion: VM stopped: ${r.why}`);
    if (api && r.why === api.API_STOP) return 0; // asked for: not a failure
    return r.why.startsWith('signal SIGINT') ? 130 : 143;
  } finally {
    control?.ended();
    await server?.close();
    machine?.close();
    // The API's backings go after the machine: until then KVM and the IOMMU may map them.
    control?.close();
    if (consolePath) closeSync(consoleFd);
  }
}

/** The DMA space as the summary names it: the container type (and who serves it), or iommufd. */
export function dmaSpaceName(caps: Pick<Caps, 'path' | 'containerType'>): string {
  return `${caps.containerType ?? caps.path}${caps.path === 'compat' ? ' served by iommufd' : ''}`;
}

/** What was assigned, through which path, and what the kernel charged for it (one line per device, one for memory). */
function assignmentSummary(m: Machine): string {
  const mib = (b: bigint): string => `${Number(b) / 1048576} MiB`;
  const kib = (b: bigint): string => (b < 1024n ? `${b} B` : `${Number(b) / 1024} KiB`);
  const dma = m.dmaState()!;
  const lines = m.assignedDevices().map((d) => {
    const bars = d.bars.map(
      (b) => `BAR${b.bar} ${b.space} 0x${b.address.toString(16)} ${kib(b.size)}${b.mapped ? ` (${kib(b.mapped)} mmap'd)` : ' (trapped)'}`,
    );
    return `pinion: assigned ${d.bdf} at 00:${d.slot.toString(16).padStart(2, '0')}.0 via ${dma.iommu === 'iommufd' ? 'iommufd (cdev, one IOAS per VM)' : 'the legacy container (group ' + d.group + ')'}: ${bars.join(', ')}${d.resettable ? '' : '; no reset (vfio-pci offers none for it)'}${d.intxGsi === undefined ? '' : `; INTx -> IOAPIC pin ${d.intxGsi} (resample irqfd)`}`;
  });
  const bytes = dma.mapped.reduce((n, r) => n + r.size, 0n);
  const c = processCharge();
  const caps = dma.caps;
  lines.push(
    `pinion: guest RAM DMA-mapped: ${dma.mapped.length} range(s), ${mib(bytes)} (${dmaSpaceName(caps)}); this process: VmLck ${c.vmLckKiB} KiB, VmPin ${c.vmPinKiB} KiB, RLIMIT_MEMLOCK ${c.memlockSoftKiB === null ? 'unlimited' : `${c.memlockSoftKiB} KiB`}`,
  );
  return lines.join('\n');
}

/** fds handed down by `pinion open` (see src/cli/open.ts), from its environment variables. */
export function openerFds():
  { kvm?: number; iommufd?: number; devices?: Record<string, number>; container?: number; groups?: Record<string, number> } | undefined {
  const e = process.env;
  if (!e.PINION_KVM_FD) return undefined;
  const num = (v: string | undefined): number | undefined => (v === undefined ? undefined : Number(v));
  const table = (v: string | undefined): Record<string, number> =>
    Object.fromEntries(
      (v ?? '')
        .split(',')
        .filter(Boolean)
        .map((kv) => kv.split('=') as [string, string])
        .map(([k, n]) => [k, Number(n)]),
    );
  return {
    kvm: num(e.PINION_KVM_FD),
    iommufd: num(e.PINION_IOMMUFD_FD),
    devices: table(e.PINION_DEVICE_FDS),
    container: num(e.PINION_CONTAINER_FD),
    groups: table(e.PINION_GROUP_FDS),
  };
}
