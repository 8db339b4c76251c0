// One VM assembled from a config: guest RAM and its map, the KVM VM and
// memslots, the payload and boot structures, vCPU threads and devices. Owns
// start and stop order; every failure undoes what was done before it.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { pinCore } from '../memory/pin-core.js';
import { GuestRam, type RamBackend } from '../memory/guest-ram.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { ramRanges } from '../memory/layout.js';
import type { MemoryRegion } from '../memory/listener.js';
import { Kvm } from '../vmm/kvm.js';
import { Vm } from '../vmm/vm.js';
import { Vcpu } from '../vmm/vcpu.js';
import { vcpuCpuid } from '../vmm/cpuid.js';
import { longModeSregs } from '../vmm/boot.js';
import { planBoot, type BootPlan, type BootSource } from './boot-image.js';
import { CONTROL, STOP_REASON, VcpuRunner } from '../vmm/run-loop.js';
import { buildBuses, serialOn, standardDevices, type DeviceSpec } from './devices.js';
import type { Serial16550 } from '../devices/serial.js';
import { PciConfigIo, PCI_CONFIG_ADDRESS, PCI_CONFIG_LEN } from '../devices/pci/config-io.js';
import { hostBridge } from '../devices/pci/host-bridge.js';
import { BarAllocator } from '../devices/pci/bar-allocator.js';
import { AssignError, checkAssignable, hostDevice, type HostDevice } from '../devices/vfio/host-device.js';
import type { IommuKind, VfioIommu } from '../devices/vfio/iommu.js';
import { IommufdIommu } from '../devices/vfio/iommufd-iommu.js';
import { LegacyIommu } from '../devices/vfio/legacy-iommu.js';
import { VfioPciDevice } from '../devices/vfio/pci-device.js';
import { DmaListener } from '../memory/dma-listener.js';
import { IrqRouting } from '../vmm/irq.js';
import { preflight, remapBudget, type PreflightResult } from '../memlock/preflight.js';
import { existsSync } from 'node:fs';
import { Bus, type BusDevice } from '../vmm/bus.js';
import { newRpcSlot, serveRpc } from '../vmm/bus-rpc.js';
import type { VcpuMessage, VcpuThreadData } from './vcpu-thread.js';
import { trace } from '../vmm/trace.js';
import { exitProfileOn, exitProfileReport } from '../vmm/exit-profile.js';

export interface MachineConfig {
  /** The test guest's ELF payload, unless `linux` is given. */
  payload?: string;
  /** A Linux bzImage (and initrd) to boot instead; `cmdline` is its command line. */
  linux?: { kernel: string; initrd?: string };
  memory: bigint;
  /** How the user wrote --memory, for messages. */
  memoryArg?: string;
  cpus: number;
  backend: RamBackend;
  cmdline: string;
  /** Where the guest console goes. */
  consoleFd: number;
  /** The command to suggest when this machine has no KVM. */
  kvmHint?: string;
  /** The KVM device node (default /dev/kvm). */
  kvmPath?: string;
  /** Host PCI devices (BDFs) to assign, bound to vfio-pci. */
  devices?: string[];
  /** Which VFIO IOMMU path: auto prefers iommufd cdevs when the kernel has them. */
  iommu?: 'auto' | IommuKind;
  /** fds opened by a privileged opener (pinion open), adopted instead of opening the nodes. */
  fds?: { kvm?: number; iommufd?: number; devices?: Record<string, number>; container?: number; groups?: Record<string, number> };
  /** The opener command to suggest when per-user accounting refuses. */
  openerHint?: string;
}

export type MachineResult =
  | { kind: 'exit'; status: number; vcpu: number; exits: number }
  | { kind: 'reset'; vcpu: number; exits: number }
  | { kind: 'panic'; line: string; exits: number }
  | { kind: 'poweroff'; exits: number }
  | { kind: 'fault'; report: string; exits: number }
  | { kind: 'stopped'; why: string; exits: number };

const VCPU_YOUNG_GEN_MB = 4;

export class Machine {
  readonly memory = new GuestMemory();
  private readonly undo: (() => void)[] = [];
  private readonly control: SharedArrayBuffer;
  private readonly ctl: Int32Array;
  private readonly threads: (bigint | undefined)[] = [];
  private stopWhy = '';
  private panicLine = '';
  ram!: GuestRam;
  iommu: VfioIommu | undefined;
  assigned: VfioPciDevice[] = [];
  dma: DmaListener | undefined;
  preflight: PreflightResult | undefined;
  vm!: Vm;
  vcpus: Vcpu[] = [];
  devices: DeviceSpec[] = [];
  /** Buses on this (the VMM) thread: devices with state, reached from vCPU threads through bus-rpc. */
  readonly pio = new Bus('pio');
  readonly mmio = new Bus('mmio');

  private constructor(readonly config: MachineConfig) {
    // The stop block, then one "released" word per vCPU (see vcpu-thread.ts).
    this.control = new SharedArrayBuffer((CONTROL.length + config.cpus) * 4);
    this.ctl = new Int32Array(this.control);
  }

  static create(config: MachineConfig): Machine {
    const m = new Machine(config);
    try {
      m.build();
    } catch (e) {
      m.close();
      throw e;
    }
    return m;
  }

  private build(): void {
    const c = this.config;
    const ranges = ramRanges(c.memory);
    const source: BootSource = c.linux ? { kind: 'linux', ...c.linux } : { kind: 'payload', path: c.payload ?? '' };
    trace('machine: start');
    const boot = planBoot(source, ranges, c.cmdline, c.cpus, c.memory, c.memoryArg ?? `${c.memory}`);
    trace('boot image read');

    // Device problems are found before anything is opened or pinned.
    const hosts = (c.devices ?? []).map((bdf) => hostDevice(bdf));
    hosts.forEach(checkAssignable);
    const dupe = hosts.find((h, i) => hosts.findIndex((x) => x.bdf === h.bdf) !== i);
    if (dupe) throw new AssignError(`${dupe.bdf} is given twice; each --device is one device`);

    const kvm = Kvm.open(c.kvmPath ?? '/dev/kvm', c.kvmHint, c.fds?.kvm);
    this.undo.push(() => kvm.close());
    this.ram = GuestRam.allocate(c.memory, c.backend, BigInt(pinCore.pageSize()));
    this.undo.push(() => this.ram.free());
    this.vm = Vm.create(kvm);
    this.undo.push(() => this.vm.close());
    this.memory.addListener(this.vm.memslots);
    this.memory.update((u) => {
      for (const [i, r] of ranges.entries()) {
        const region: MemoryRegion = {
          name: i ? 'ram-high' : 'ram-low',
          gpa: r.gpa,
          size: r.size,
          hva: this.ram.vaddr + r.offset,
          file: this.ram.fd >= 0 ? { fd: this.ram.fd, offset: r.offset } : undefined,
          kind: 'ram',
        };
        this.memory.setView(region, this.ram.view(r.offset, Number(r.size)));
        u.add(region);
      }
    });
    trace('VM created, RAM allocated');
    // With a device assigned all of RAM gets pinned anyway: faulting it in first, through the mapping and on
    // several threads, gives the pins (and KVM) whole huge pages where the backing has them, not the 4 KiB
    // pages a pin through the file would allocate one by one.
    if (hosts.length) {
      pinCore.memPopulate(this.ram.vaddr, this.ram.size, Math.min(availableParallelism(), 4));
      trace('RAM prefaulted');
    }

    // vCPUs and their threads first: a thread takes a while to load its modules (seconds in the rig), and does
    // so while devices attach and RAM is DMA-mapped; it enters KVM_RUN only when run() says go.
    const cpuid = kvm.supportedCpuid();
    for (let i = 0; i < c.cpus; i++) {
      const v = Vcpu.create(this.vm, i);
      this.vcpus.push(v);
      this.undo.push(() => v.close());
      v.setCpuid(vcpuCpuid(cpuid, i, c.cpus));
      const regs = boot.regs(i);
      if (!regs) continue; // waits in KVM for the boot CPU's INIT/SIPI
      v.setSregs(longModeSregs(v.getSregs(), boot.layout));
      v.setRegs(regs);
      if (i > 0) v.setRunnable();
    }
    // Linux's console is interactive (prompts end without a newline); the test guest's lines stay whole.
    const pci = new PciConfigIo();
    this.devices = standardDevices(c.consoleFd, this.vm.fd, source.kind === 'linux', pci.state);
    this.startThreads();
    trace('vCPUs set up, their threads starting');
    this.load(boot);
    trace('boot image loaded');

    pci.add(0, hostBridge());
    this.pio.register(PCI_CONFIG_ADDRESS, PCI_CONFIG_LEN, pci, 'pci config');
    if (hosts.length) this.assign(hosts, pci);
    if (hosts.length) trace('devices attached, RAM DMA-mapped');
  }

  /** One IOMMU backend for all devices, the devices on bus 0, then all RAM DMA-mapped before any vCPU runs. */
  private assign(hosts: HostDevice[], pci: PciConfigIo): void {
    const fds = this.config.fds;
    const kind =
      fds?.iommufd !== undefined ? 'iommufd' : fds?.container !== undefined ? 'legacy' : chooseIommu(this.config.iommu ?? 'auto', hosts);
    const iommu: VfioIommu =
      kind === 'iommufd' ? new IommufdIommu({ fd: fds?.iommufd }, fds?.devices) : new LegacyIommu(fds?.container, fds?.groups);
    this.iommu = iommu;
    this.undo.push(() => iommu.close());
    trace(`IOMMU backend open (${kind})`);
    const env = {
      memory: this.memory,
      pio: this.pio,
      mmio: this.mmio,
      routing: new IrqRouting(this.vm.fd),
      vmFd: this.vm.fd,
      bars: new BarAllocator(),
    };
    for (const h of hosts) {
      const slot = pci.freeSlot();
      const dev = VfioPciDevice.open(h, iommu, env, slot);
      this.undo.push(() => dev.close());
      this.assigned.push(dev);
      pci.add(slot << 3, dev);
      trace(`device ${h.bdf} open`);
    }
    // Refuse before the first page is pinned if the kernel would refuse part way.
    const acc = iommu.accounting();
    const ramBytes = this.memory
      .list()
      .filter((r) => r.kind === 'ram')
      .reduce((n, r) => n + r.size, 0n);
    this.preflight = preflight(acc.path, acc.mode, ramBytes, {
      openerHint: this.config.openerHint ?? 'pinion open --user <uid> --device <BDF> -- pinion run ...',
    });
    const dma = new DmaListener(iommu.dma, () => remapBudget(acc.path, acc.mode));
    this.memory.addListener(dma);
    this.dma = dma;
    this.undo.push(() => this.memory.removeListener(dma));
  }

  private load(p: BootPlan): void {
    for (const [gpa, bytes] of p.writes) this.memory.write(gpa, bytes);
  }

  private threadsDone: Promise<void> | undefined;
  private readonly ends: (VcpuMessage & { type: 'done' })[] = [];
  private readonly threadErrors: string[] = [];

  /** One worker thread per vCPU; each loads, reports its thread id, and waits for `go`. */
  private startThreads(): void {
    pinCore.kickInit();
    this.threadsDone = Promise.all(
      this.vcpus.map(
        (v) =>
          new Promise<void>((resolve) => {
            const rpc = newRpcSlot();
            const data: VcpuThreadData = {
              fd: v.fd,
              index: v.index,
              mmapSize: this.vm.kvm.vcpuMmapSize,
              control: this.control,
              devices: this.devices,
              rpc,
            };
            // A vCPU loop allocates little but steadily; V8's default young generation (tens of MiB a thread)
            // would be resident in full for nothing.
            const w = new Worker(new URL('./vcpu-thread.js', import.meta.url), {
              workerData: data,
              resourceLimits: { maxYoungGenerationSizeMb: VCPU_YOUNG_GEN_MB },
            });
            w.on('message', (m: VcpuMessage) => {
              if (m.type === 'ready') {
                trace(`vCPU ${v.index} thread ready`);
                this.threads[v.index] = m.thread;
                if (Atomics.load(this.ctl, CONTROL.stop)) this.kick(v.index);
              } else if (m.type === 'io') serveRpc(rpc, this.pio, this.mmio);
              else if (m.type === 'stop') this.kickAll();
              else if (m.type === 'panic') {
                this.panicLine = m.line;
                this.kickAll();
              } else {
                // The thread waits for this before it ends, so a kick never targets a dead thread.
                this.ends.push(m);
                this.threads[v.index] = undefined;
                Atomics.store(this.ctl, CONTROL.length + v.index, 1);
                Atomics.notify(this.ctl, CONTROL.length + v.index);
              }
            });
            w.on('error', (e) => {
              this.threadErrors.push(`vCPU ${v.index} thread: ${e.message}`);
              this.threads[v.index] = undefined;
              this.stop('a vCPU thread failed');
            });
            w.on('exit', () => {
              this.threads[v.index] = undefined;
              resolve();
            });
          }),
      ),
    ).then(() => undefined);
    // A machine closed before it ran lets its threads end without entering KVM_RUN.
    this.undo.push(() => {
      if (Atomics.load(this.ctl, CONTROL.go) === 0) {
        Atomics.store(this.ctl, CONTROL.stop, 1);
        this.go();
      }
    });
  }

  private go(): void {
    Atomics.store(this.ctl, CONTROL.go, 1);
    Atomics.notify(this.ctl, CONTROL.go);
  }

  /** Runs every vCPU on its own thread until the guest exits, faults, or stop() is called. */
  async run(): Promise<MachineResult> {
    trace('run');
    this.go();
    await this.threadsDone;
    const ends = this.ends;
    const errors = this.threadErrors;
    const exits = ends.reduce((n, e) => n + e.exits, 0);
    if (exitProfileOn) process.stderr.write(exitProfileReport(ends.map((e) => e.profile ?? [])) + '\n');
    const fault = ends.find((e) => e.end.kind === 'fault');
    const reason = Atomics.load(this.ctl, CONTROL.reason);
    if (errors.length) return { kind: 'fault', report: errors.join('; '), exits };
    if (reason === STOP_REASON.guestExit)
      return { kind: 'exit', status: Atomics.load(this.ctl, CONTROL.code), vcpu: Atomics.load(this.ctl, CONTROL.vcpu), exits };
    if (reason === STOP_REASON.guestReset) return { kind: 'reset', vcpu: Atomics.load(this.ctl, CONTROL.vcpu), exits };
    if (reason === STOP_REASON.guestPanic) return { kind: 'panic', line: this.panicLine, exits };
    if (reason === STOP_REASON.guestPoweroff) return { kind: 'poweroff', exits };
    if (fault && fault.end.kind === 'fault') return { kind: 'fault', report: fault.end.report, exits };
    return { kind: 'stopped', why: this.stopWhy || 'stopped', exits };
  }

  /** vCPU `i`'s loop on the calling thread, with the buses its thread would build (for benchmarks). */
  inlineRunner(i: number): { runner: VcpuRunner; flush(): void } {
    const buses = buildBuses(this.devices, {
      exit: (status) => void runner.requestStop(STOP_REASON.guestExit, status),
      reset: () => void runner.requestStop(STOP_REASON.guestReset),
      panic: (line) => void (runner.requestStop(STOP_REASON.guestPanic) && (this.panicLine = line)),
      poweroff: () => void runner.requestStop(STOP_REASON.guestPoweroff),
    });
    buses.pio.setFallback(directTo(this.pio));
    buses.mmio.setFallback(directTo(this.mmio));
    const runner: VcpuRunner = VcpuRunner.open(this.vcpus[i]!.fd, i, this.vm.kvm.vcpuMmapSize, buses.pio, buses.mmio, this.ctl);
    this.undo.push(() => runner.close());
    return { runner, flush: buses.flush };
  }

  private console: Serial16550 | undefined;
  private consoleBacklog: Uint8Array[] = [];
  private consoleRetry: NodeJS.Timeout | undefined;

  /** Bytes typed at the guest console (COM1). What the UART cannot take yet is retried as the guest reads. */
  input(bytes: Uint8Array): void {
    const spec = this.devices.find((d) => d.kind === 'serial');
    if (!spec || spec.kind !== 'serial') return;
    this.console ??= serialOn(spec);
    this.consoleBacklog.push(bytes);
    this.feedConsole();
  }

  private feedConsole(): void {
    while (this.consoleBacklog.length) {
      const next = this.consoleBacklog[0]!;
      const n = this.console!.receive(next);
      if (n < next.length) {
        this.consoleBacklog[0] = next.subarray(n);
        this.consoleRetry ??= setTimeout(() => {
          this.consoleRetry = undefined;
          this.feedConsole();
        }, 10);
        return;
      }
      this.consoleBacklog.shift();
    }
  }

  /** Stops every vCPU (from a signal handler, a timeout, or an error). */
  stop(why: string): void {
    if (Atomics.compareExchange(this.ctl, CONTROL.stop, 0, 1) === 0) {
      Atomics.store(this.ctl, CONTROL.reason, STOP_REASON.host);
      this.stopWhy = why;
    }
    this.kickAll();
  }

  private kickAll(): void {
    for (const v of this.vcpus) this.kick(v.index);
  }

  private kick(i: number): void {
    this.vcpus[i]!.requestImmediateExit();
    const t = this.threads[i];
    if (t !== undefined) pinCore.threadKick(t);
  }

  /** Releases everything: vCPUs, VM, RAM, /dev/kvm. Safe after a partial create. */
  close(): void {
    clearTimeout(this.consoleRetry);
    while (this.undo.length) this.undo.pop()!();
    this.vcpus = [];
  }
}

/** On the VMM thread itself no forwarding is needed: the fallback is the VMM bus. */
function directTo(bus: Bus): BusDevice {
  return { read: (addr, data) => void bus.read(addr, data), write: (addr, data) => void bus.write(addr, data) };
}

function chooseIommu(want: 'auto' | IommuKind, hosts: HostDevice[]): IommuKind {
  if (want === 'iommufd' && !existsSync('/dev/iommu'))
    throw new AssignError('--iommu iommufd: this kernel has no /dev/iommu (CONFIG_IOMMUFD); use --iommu legacy');
  if (want === 'legacy' && !existsSync('/dev/vfio/vfio'))
    throw new AssignError(
      '--iommu legacy: this kernel has no /dev/vfio/vfio (neither VFIO_CONTAINER nor IOMMUFD_VFIO_CONTAINER); use --iommu iommufd',
    );
  if (want !== 'auto') return want;
  return existsSync('/dev/iommu') && hosts.every((h) => h.cdev) ? 'iommufd' : 'legacy';
}
