// pinion run's VM: boots a checked RunPlan (run.ts); the guest console goes
// to stdout (or --console FILE) and Pinion exits with the guest's exit status.
import { closeSync, openSync } from 'node:fs';
import { relative } from 'node:path';
import { Machine } from '../machine/machine.js';
import { VcpuThreads } from '../machine/vcpu-threads.js';
import type { Caps } from '../memory/pin-core.js';
import { processCharge } from '../memlock/status.js';
import { exitStatus } from './exit-status.js';
import type { RunPlan } from './run.js';
import { shellLine } from './shell.js';
import { stopOnSignals, type VmSignals } from './signals.js';

/** The CLI as the user started it: `node <path>`, relative to here when it can be. */
function self(): string[] {
  const script = process.argv[1] ?? 'dist/bundle/pinion.js';
  return ['node', relative(process.cwd(), script) || script];
}

/** The same command, run in the rig: what to tell a user on a machine without KVM. */
export function rigHint(argv: readonly string[], cli: readonly string[] = self()): string {
  return shellLine([...cli, 'rig', '--', ...cli, 'run', ...argv]);
}

/** The same command through the privileged opener: what to tell a user whose limit cannot fit the VM. */
export function openerHint(argv: readonly string[], uid: number, devices: readonly string[]): string {
  return shellLine(['pinion', 'open', '--user', String(uid), ...devices.flatMap((d) => ['--device', d]), '--', 'pinion', 'run', ...argv]);
}

export async function runVm(plan: RunPlan): Promise<number> {
  const { argv, devices, apiPath, consolePath, linux } = plan;
  // A path in use is refused before anything is opened or pinned.
  const api = apiPath ? await import('../api/index.js') : undefined;
  if (apiPath) await api!.claimSocketPath(apiPath);

  const consoleFd = consolePath ? openSync(consolePath, 'w') : 1;
  let machine: Machine | undefined;
  let control: { ended(): void; close(): void } | undefined;
  let server: { close(): Promise<void> } | undefined;
  let signals: VmSignals | undefined;
  try {
    // The summary and the API come before any vCPU runs (Machine.start's ready).
    machine = await Machine.start(
      {
        payload: plan.payload,
        linux,
        memory: plan.memory,
        memoryArg: plan.memoryArg,
        cpus: plan.cpus,
        backend: plan.backend,
        cmdline: plan.cmdline,
        consoleFd,
        kvmHint: rigHint(argv),
        devices,
        iommu: plan.iommu,
        fds: plan.fds,
        openerHint: openerHint(argv, process.getuid!(), devices),
        kvmPath: process.env.PINION_KVM_DEVICE,
      },
      async (m) => {
        if (devices.length) {
          // With a device assigned all of RAM is pinned: 4 KiB pages then cost pins, IOMMU entries and faults.
          const why = m.smallPagesWhy;
          if (why) console.error(`pinion: note: ${why}`);
          console.error(assignmentSummary(m));
        }
        if (apiPath) {
          const c = new api!.MachineControl(m);
          control = c;
          server = await c.serve((h) => api!.ApiServer.listen(apiPath, h));
          console.error(`pinion: control API on ${apiPath} (${shellLine(['pinion', 'ctl', apiPath, 'info'])})`);
        }
      },
    );
    const m = machine;
    signals = stopOnSignals((why) => m.stop(why));
    // Pinion's stdin is the Linux guest's console input.
    const onInput = (d: Buffer): void => m.input(d);
    if (linux) process.stdin.on('data', onInput);
    const r = await m.run();
    signals.ended();
    if (linux) process.stdin.off('data', onInput).pause();
    return exitStatus(r, api && { api: api.API_STOP, update: api.UPDATE_STOP, lost: api.UPDATE_LOST });
  } finally {
    control?.ended();
    await server?.close();
    machine?.close();
    // The API's backings go after the machine: until then KVM and the IOMMU may map them.
    control?.close();
    if (consolePath) closeSync(consoleFd);
    await VcpuThreads.settled(10_000);
    signals?.release();
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
    `pinion: guest RAM DMA-mapped: ${mib(bytes)} in ${dma.mapped.length} mapping(s) (${dmaSpaceName(caps)}); this process: VmLck ${c.vmLckKiB} KiB, VmPin ${c.vmPinKiB} KiB, RLIMIT_MEMLOCK ${c.memlockSoftKiB === null ? 'unlimited' : `${c.memlockSoftKiB} KiB`}`,
  );
  return lines.join('\n');
}
