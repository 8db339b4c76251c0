// One VM assembled from a config, in named steps: what it boots, the host
// devices checked, KVM and the VM, guest RAM in the memory map, the vCPUs
// and their threads, the platform (buses, PCI), then the assigned devices
// with their IOMMU and DMA. Each step registers the undo of what it creates
// where it creates it; a throw at any step undoes all before it, last first,
// and close() undoes the whole machine the same way. A VM another process
// hands over (live update) is adopted onto the same board, its vCPUs and RAM
// taken from the hand-over image instead.
import type { GuestRam, RamBackend } from '../memory/guest-ram.js';
import type { HostDevice } from '../devices/vfio/host-device.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { hex, ramRanges } from '../memory/layout.js';
import type { MemoryRegion } from '../memory/listener.js';
import { UndoStack } from '../sys/undo.js';
import type { Bus } from '../vmm/bus.js';
import { trace } from '../vmm/trace.js';
import type { Vcpu } from '../vmm/vcpu.js';
import { guestTsc, restoreVcpu, saveVcpu } from '../vmm/vcpu-state.js';
import type { Vm } from '../vmm/vm.js';
import { restoreVm, saveVm } from '../vmm/vm-state.js';
import type { VcpuStateName } from '../vmm/run-loop.js';
import type { MemHotplug } from '../devices/mem-hotplug.js';
import type { IommuKind } from '../devices/vfio/iommu.js';
import { Assignment, type AssignedDevice, type DmaState, type IommuFds } from './assignment.js';
import { planBoot, type BootPlan, type BootSource } from './boot-image.js';
import type { Decompress } from '../vmm/vmlinux.js';
import { readSpanInto } from '../vmm/file-span.js';
import { ConsoleInput } from './console-input.js';
import { checkDevices } from './device-checks.js';
import type { DeviceSpec } from './devices.js';
import { imageConfig, type MachineImage, type MachineState, type RegionImage } from './handover.js';
import { openVm } from './kvm-vm.js';
import { Platform } from './platform.js';
import { adoptRam, mapRam, prefaultRam } from './ram-map.js';
import { VcpuThreads, type MachineResult } from './vcpu-threads.js';
import { adoptVcpus, createVcpus } from './vcpus.js';

export type { MachineResult } from './vcpu-threads.js';
export type { AssignedDevice, DmaState } from './assignment.js';

export interface MachineConfig {
  /** The test guest's ELF payload, unless `linux` is given. */
  payload?: string;
  /** A Linux bzImage (and initrd) to boot instead; `cmdline` is its command line. */
  linux?: { kernel: string; initrd?: string; decompress?: Decompress };
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
  fds?: { kvm?: number } & IommuFds;
  /** The opener command to suggest when per-user accounting refuses. */
  openerHint?: string;
}

/** What running vCPU `index`'s loop on another thread than its own takes (bench/inline-vcpu.ts). */
export interface VcpuSeat {
  fd: number;
  index: number;
  mmapSize: number;
  /** The control block every vCPU loop of this machine watches (run-loop.ts's CONTROL). */
  control: SharedArrayBuffer;
  /** The devices a vCPU thread builds for itself. */
  devices: readonly DeviceSpec[];
  /** The VMM thread's buses, for what those devices do not claim. */
  pio: Bus;
  mmio: Bus;
}

/** The RAM a handed-over VM came with: its backings by fd, and those another owner took (takeBacking), which close() leaves alone. */
interface AdoptedRam {
  byFd: Map<number, GuestRam>;
  taken: Set<GuestRam>;
}

export class Machine {
  private constructor(
    readonly config: MachineConfig,
    /** The guest memory map; views of RAM in it are valid until close. */
    readonly memory: GuestMemory,
    private readonly undo: UndoStack,
    private readonly vm: Vm,
    private readonly vcpus: readonly Vcpu[],
    private readonly platform: Platform,
    private readonly threads: VcpuThreads,
    private readonly assignment: Assignment | undefined,
    private readonly console: ConsoleInput,
    /** Why guest RAM gets no 2 MiB pages, when it gets none (see GuestRam.smallPagesWhy). */
    readonly smallPagesWhy: string | undefined,
    private readonly adoptedRam: AdoptedRam = { byFd: new Map(), taken: new Set() },
  ) {}

  /** Builds the whole machine, its devices attached and RAM DMA-mapped, before any vCPU runs. */
  static create(c: MachineConfig): Machine {
    return UndoStack.build((undo) => {
      const p = assemble(c, undo);
      const assignment = openDevices(p);
      mapDeviceDma(p, assignment);
      return Machine.finish(p, assignment, p.ram.smallPagesWhy);
    });
  }

  /**
   * Machine.create, then `ready` (what the VMM sets up around the machine: its summary, its control API)
   * before any vCPU runs; a failure in either undoes both. The guest is not let in before its devices are
   * attached and RAM is DMA-mapped: booting it while RAM faulted in and was mapped beside it made its own
   * boot 2 s slower in the rig (2 CPUs), more than the overlap saved.
   */
  static async start(c: MachineConfig, ready?: (m: Machine) => Promise<void> | void): Promise<Machine> {
    const m = Machine.create(c);
    try {
      await ready?.(m);
      return m;
    } catch (e) {
      m.close();
      throw e;
    }
  }

  /** The machine on its board, made here or handed over (`adopted`): the guest console's input on COM1. */
  private static finish(b: Board, assignment: Assignment | undefined, smallPagesWhy: string | undefined, adopted?: AdoptedRam): Machine {
    const serial = b.platform.devices.find((d) => d.kind === 'serial');
    const console = b.undo.own(new ConsoleInput(serial?.kind === 'serial' ? serial : undefined), (x) => x.close());
    return new Machine(b.c, b.memory, b.undo, b.vm, b.vcpus, b.platform, b.threads, assignment, console, smallPagesWhy, adopted);
  }

  /**
   * The VM another process hands over (live update), set up up to the point
   * where it could run: a fresh KVM VM on the handed-over /dev/kvm (a VM
   * answers only the process that made it), vCPUs with the guest's CPUID,
   * the RAM files mapped and in the memory map, the board, and the vCPU
   * threads loading. restoreState() then writes the paused VM's state into
   * it, and run() goes on where the other process stopped. `o.preflight`
   * false: the devices' memlock pre-flight reports without refusing (a
   * test's fault, src/update/faults.ts).
   */
  static adopt(image: MachineImage, o: { preflight?: boolean } = {}): Machine {
    const adopted: AdoptedRam = { byFd: new Map(), taken: new Set() };
    return UndoStack.build((undo) => {
      trace('machine: adopt');
      const c: MachineConfig = { ...image.config, consoleFd: image.consoleFd, fds: { kvm: image.kvmFd } };
      const vm = openVm({ fd: image.kvmFd }, undo);
      const b = board(c, vm, adoptVcpus(vm, image.cpuid, undo), undo);
      const rams = adoptRam(
        b.memory,
        vm,
        image.backings.map((x) => x.fd),
        image.regions,
        adopted.taken,
        undo,
      );
      for (const r of rams) adopted.byFd.set(r.fd, r);
      trace('RAM mapped');
      // Page tables for the pages the guest already has, while it still runs over there: the new VM's
      // first accesses would otherwise each fault in, inside the pause.
      for (const r of rams) prefaultRam(r);
      trace('RAM prefaulted');
      // And KVM's stage-2 tables for it: the guest's first touch of each page after the pause is no exit.
      const first = b.vcpus[0];
      const ram = b.memory.list().filter((r) => r.kind === 'ram');
      const filled = first !== undefined && ram.every((r) => first.preFault(r.gpa, r.size));
      trace(filled ? 'stage-2 prefaulted' : 'stage-2 not prefaulted: no KVM_CAP_PRE_FAULT_MEMORY');
      const d = image.devices;
      const assignment =
        d &&
        Assignment.adopt(checkDevices(c.devices ?? []), d, b.memory, b.platform, vm.fd, (i) => image.backings[i]!.fd, undo, o.preflight);
      if (assignment) {
        assignment.adoptRam(b.memory, undo);
        trace('devices and DMA table taken');
      }
      return Machine.finish(b, assignment, rams[0]?.smallPagesWhy, adopted);
    });
  }

  /**
   * Why this VM cannot be handed to another process (live update), or
   * undefined when it can: guest RAM another process cannot map, or an
   * assigned device's DMA space that cannot move (assignment.ts says which).
   */
  handoverRefusal(): string | undefined {
    const anon = this.memory.list().find((r) => r.kind === 'ram' && !r.file);
    if (anon)
      return `guest RAM ${anon.name} at ${hex(anon.gpa)} is anonymous memory, which no other process can map; start the VM with --memory-backend memfd (or hugetlb) to make live update possible`;
    return this.assignment?.handoverRefusal();
  }

  /**
   * What the next process needs before the pause: how the VM was made, the
   * vCPUs' CPUID, where RAM is. Asks KVM nothing: a vCPU ioctl from here would
   * wait until that vCPU's KVM_RUN returns, for good if it halts.
   */
  handoverImage(): MachineImage {
    const backings: { fd: number }[] = [];
    const regions: RegionImage[] = [];
    for (const r of this.memory.list()) {
      if (r.kind !== 'ram') continue;
      if (!r.file) throw new Error(`guest RAM ${r.name} has no file to hand over`);
      let backing = backings.findIndex((b) => b.fd === r.file!.fd);
      if (backing < 0) backing = backings.push({ fd: r.file.fd }) - 1;
      regions.push({ name: r.name, gpa: r.gpa, size: r.size, backing, offset: r.file.offset, readonly: r.readonly === true });
    }
    const c = this.config;
    const devices = this.assignment?.handoverImage(this.memory, (fd) => {
      const i = backings.findIndex((b) => b.fd === fd);
      if (i < 0) throw new Error(`the DMA table maps fd ${fd}, which backs no RAM region`);
      return i;
    });
    return {
      config: imageConfig(c),
      kvmFd: this.vm.kvm.fd,
      consoleFd: c.consoleFd,
      backings,
      regions,
      cpuid: this.vcpus.map((v) => v.cpuid),
      ...(devices ? { devices } : {}),
    };
  }

  /** The VM's state; every vCPU must be out of KVM_RUN (pause() first). */
  saveState(mark: (part: string) => void = () => {}): MachineState {
    if (!this.threads.settled) throw new Error(`the vCPUs are not paused: ${this.threads.states().join(', ')}`);
    const assigned = this.assignment?.save();
    if (assigned) mark('devices');
    const msrs = this.vm.kvm.msrIndexList();
    const vcpus = this.vcpus.map((v) => saveVcpu(v, msrs));
    mark('vcpus');
    const s = { vcpus, vm: saveVm(this.vm), platform: this.platform.save(), ...(assigned ? { assigned } : {}) };
    mark('vm');
    return s;
  }

  /** vCPU 0's TSC as the guest reads it; paused (pause() first). */
  guestTsc(): bigint {
    if (!this.threads.settled) throw new Error(`the vCPUs are not paused: ${this.threads.states().join(', ')}`);
    return guestTsc(this.vcpus[0]!);
  }

  /**
   * Paused, before saveState(), in a live update: the devices' interrupts held off this VM and the DMA
   * space readied for the next process (thaw() undoes it). No-op without devices.
   */
  freeze(): void {
    this.assignment?.freeze();
  }

  thaw(): void {
    this.assignment?.thaw();
  }

  /** The VM runs in another process now: closing this machine must leave its devices as they are. */
  release(): void {
    this.assignment?.release();
  }

  /** In the new process, once it holds the VM: its devices are its own (reset when it closes). */
  claim(): void {
    this.assignment?.claim();
  }

  /** Writes a paused VM's state into this adopted one, before it runs. */
  restoreState(s: MachineState, mark: (part: string) => void = () => {}): void {
    if (s.vcpus.length !== this.vcpus.length) throw new RangeError(`the state has ${s.vcpus.length} vCPUs, this VM ${this.vcpus.length}`);
    if ((s.assigned?.length ?? 0) > 0 !== (this.assignment !== undefined))
      throw new Error(`the state has ${s.assigned?.length ?? 0} assigned devices, the hand-over ${this.assignment ? 'some' : 'none'}`);
    // The DMA space and the devices' interrupts first: the vCPUs' state does not let anything run.
    if (s.assigned) {
      this.assignment!.restore(s.assigned, mark);
      trace('devices restored');
    }
    this.vcpus.forEach((v, i) => {
      restoreVcpu(v, s.vcpus[i]!);
      trace(`vCPU ${i} state written`);
    });
    mark('vcpus');
    this.platform.restore(s.platform);
    restoreVm(this.vm, s.vm);
    trace('VM state written');
    mark('vm');
  }

  /**
   * An adopted VM before it runs: its own fresh state read, passed through `roundTrip` and written back
   * (vCPUs, board, VM; not the devices, which are the old process's until the pause). What the pause
   * will run is compiled then, not in the pause.
   */
  rehearse(roundTrip: (s: MachineState) => MachineState): void {
    if (!this.loaded) throw new Error(`a rehearsal needs every vCPU thread waiting, not ${this.threads.states().join(', ')}`);
    const s = roundTrip(this.saveState());
    this.vcpus.forEach((v, i) => restoreVcpu(v, s.vcpus[i]!));
    this.platform.restore(s.platform);
    restoreVm(this.vm, s.vm);
  }

  /** Whether every vCPU thread has loaded and waits to run (an adopted VM is ready to take the state then). */
  get loaded(): boolean {
    return this.threads.states().every((st) => st === 'waiting');
  }

  /**
   * Hands the backing of region `r` (of a handed-over VM) to another owner,
   * who frees it from now on: the control API keeps the backings it made.
   */
  takeBacking(r: MemoryRegion): GuestRam | undefined {
    const ram = r.file && this.adoptedRam.byFd.get(r.file.fd);
    if (ram) this.adoptedRam.taken.add(ram);
    return ram;
  }

  /** Runs every vCPU on its own thread until the guest exits, faults, or stop() is called. */
  async run(): Promise<MachineResult> {
    trace('run');
    return this.threads.run();
  }

  /** Bytes typed at the guest console (COM1). What the UART cannot take yet is retried as the guest reads. */
  input(bytes: Uint8Array): void {
    this.console.input(bytes);
  }

  /** Stops every vCPU (from a signal handler, a timeout, or an error). */
  stop(why: string): void {
    this.threads.stop(why);
  }

  /** Takes every vCPU out of KVM_RUN; resolves once all are paused (or ended), or rejects after `timeoutMs`. */
  async pause(timeoutMs = 2000): Promise<void> {
    this.threads.pause();
    const t0 = Date.now();
    // Polled, not waited on: a vCPU may need the VMM thread (a bus RPC) to reach its pause point.
    while (!this.threads.settled) {
      if (Date.now() - t0 > timeoutMs)
        throw new Error(`vCPUs still running ${timeoutMs} ms after the pause: ${this.threads.states().join(', ')}`);
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  resume(): void {
    this.threads.resume();
  }

  /** Whether a pause is asked for (the vCPUs may still be on their way out of KVM_RUN). */
  get pausing(): boolean {
    return this.threads.pausing;
  }

  /** What each vCPU's thread is doing now. */
  vcpuStates(): VcpuStateName[] {
    return this.threads.states();
  }

  /** The assigned devices as the guest sees them; none without --device. */
  assignedDevices(): AssignedDevice[] {
    return this.assignment?.describe() ?? [];
  }

  /** The memory-hotplug mailbox, through which the guest is told of RAM changes once its driver claims it. */
  get hotplug(): MemHotplug {
    return this.platform.hotplug;
  }

  /** What the IOMMU maps now; empty without a device. Cheap, unlike dmaState(). */
  dmaMappings(): DmaState['mapped'] {
    return this.assignment?.dmaMappings() ?? [];
  }

  /** The VM's DMA space (which IOMMU path, what it maps), when a device is assigned. */
  dmaState(): DmaState | undefined {
    return this.assignment?.dmaState();
  }

  /**
   * The seam for benchmarks that run vCPU `i`'s loop on the calling thread (bench/inline-vcpu.ts): what its
   * worker would get. Only for a machine that is never run(): the worker then never enters KVM_RUN.
   */
  vcpuSeat(i: number): VcpuSeat {
    const v = this.vcpus[i];
    if (!v) throw new RangeError(`no vCPU ${i}: this machine has ${this.vcpus.length}`);
    const { devices, pio, mmio } = this.platform;
    return { fd: v.fd, index: i, mmapSize: v.vm.kvm.vcpuMmapSize, control: this.threads.control, devices, pio, mmio };
  }

  /** Releases everything, last first: devices and DMA, vCPU threads and vCPUs, RAM, the VM, /dev/kvm. Once. */
  close(): void {
    this.undo.release();
  }
}

/** What every machine has, made here or handed over: the VM, its vCPUs and their threads, the board, the memory map. */
interface Board {
  c: MachineConfig;
  undo: UndoStack;
  /** Kept by the Machine: a live update hands over its /dev/kvm and reads its state out of it. */
  vm: Vm;
  vcpus: readonly Vcpu[];
  platform: Platform;
  threads: VcpuThreads;
  memory: GuestMemory;
}

/** A machine made here up to its devices: the board, RAM with the boot image in it, the devices to open. */
interface Parts extends Board {
  ram: GuestRam;
  hosts: HostDevice[];
}

function assemble(c: MachineConfig, undo: UndoStack): Parts {
  trace('machine: start');
  const ranges = ramRanges(c.memory);
  const source: BootSource = c.linux ? { kind: 'linux', ...c.linux } : { kind: 'payload', path: c.payload ?? '' };
  const boot = planBoot(source, ranges, c.cmdline, c.cpus, c.memory, c.memoryArg ?? `${c.memory}`);
  trace('boot image read');
  // Device problems are found before anything is opened or pinned.
  const hosts = checkDevices(c.devices ?? []);

  const vm = openVm({ path: c.kvmPath, hint: c.kvmHint, fd: c.fds?.kvm }, undo);
  trace('VM created');
  // vCPUs and their threads first: a thread takes as long to load as RAM takes to fault in and a
  // device to attach, and it loads meanwhile.
  const b = board(c, vm, createVcpus(vm, c.cpus, boot, undo), undo);
  const ram = mapRam(b.memory, vm, { size: c.memory, backend: c.backend, ranges }, undo);
  trace('RAM allocated');
  load(b.memory, boot);
  trace('boot image loaded');
  return { ...b, ram, hosts };
}

/** The board around `vm`'s vCPUs, and their threads, which start loading now; the memory map still empty. */
function board(c: MachineConfig, vm: Vm, vcpus: readonly Vcpu[], undo: UndoStack): Board {
  const platform = Platform.build({ consoleFd: c.consoleFd, vmFd: vm.fd, linux: c.linux !== undefined });
  const threads = VcpuThreads.start(vcpus, vm.kvm.vcpuMmapSize, platform, undo);
  trace('vCPUs set up, their threads starting');
  return { c, undo, vm, vcpus, platform, threads, memory: new GuestMemory() };
}

/** The assigned devices onto bus 0 with their IOMMU backend, and the pre-flight passed; none without --device. */
function openDevices(p: Parts): Assignment | undefined {
  const { c, hosts } = p;
  if (!hosts.length) return undefined;
  const assignment = Assignment.open(
    hosts,
    {
      iommu: c.iommu ?? 'auto',
      fds: c.fds,
      openerHint: c.openerHint ?? 'pinion open --user <uid> --device <BDF> -- pinion run ...',
    },
    p.memory,
    p.platform,
    p.vm.fd,
    p.undo,
  );
  trace('devices open, pre-flight passed');
  return assignment;
}

/** All of RAM faulted in and DMA-mapped for the assigned devices. */
function mapDeviceDma(p: Parts, assignment: Assignment | undefined): void {
  if (!assignment) return;
  prefaultRam(p.ram);
  trace('RAM prefaulted');
  assignment.mapRam(p.memory, p.undo);
  trace('RAM DMA-mapped');
}

function load(memory: GuestMemory, p: BootPlan): void {
  for (const [gpa, bytes] of p.writes)
    if (bytes instanceof Uint8Array) memory.write(gpa, bytes);
    else readSpanInto(bytes, memory.bytes(gpa, bytes.length));
  // What the plan still holds is garbage from here on; the vCPUs keep only their entry registers.
  p.writes.length = 0;
}
