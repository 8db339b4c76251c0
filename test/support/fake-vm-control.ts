// A VmControl with no kernel behind it, for tests of the API's wire and the
// ctl client: a map of regions changed by the same planner the machine uses,
// pause and resume as a flag, a guest that acks every hotplug event at once
// when its driver is said to hold the mailbox, and knobs to make a verb slow
// or fail.
import { hex } from '../../src/memory/layout.js';
import { mapLimits, planChange, type MapEntry, type MemoryChange } from '../../src/api/memory-change.js';
import type {
  ChangeResult,
  DeviceInfo,
  DmaInfo,
  GuestNotice,
  HotplugInfo,
  MemoryMapInfo,
  VmControl,
  VmInfo,
} from '../../src/api/routes.js';
import type { UpdateReport } from '../../src/update/outgoing.js';

const MiB = 1n << 20n;

export class FakeVmControl implements VmControl {
  map: MapEntry[] = [{ name: 'ram-low', gpa: 0n, size: 64n * MiB, kind: 'ram', backend: 'memfd' }];
  paused = false;
  calls: string[] = [];
  /** ms a pause takes (a vCPU slow to leave KVM_RUN). */
  pauseMs = 0;
  /** What the next memory change throws instead of applying, e.g. the DMA planner's refusal. */
  failNext: Error | undefined;
  /** ms a memory change takes (a guest slow to ack). */
  changeMs = 0;
  /** A guest driver holds the hotplug mailbox (and acks every event at once). */
  claimed = false;
  private generation = 0;
  private log: { at: string; summary: string; guest: string }[] = [];

  private hotplug(): HotplugInfo {
    return { port: '0x5f0', claimed: this.claimed, generation: this.generation, acked: this.generation, pending: null };
  }

  info(): VmInfo {
    this.calls.push('info');
    const ram = this.map.filter((r) => r.kind === 'ram');
    return {
      state: this.paused ? 'paused' : 'running',
      pausedBy: this.paused ? ['user'] : [],
      vcpus: [0, 1].map((index) => ({ index, state: this.paused ? 'paused' : 'running' })),
      boot: { kind: 'payload', image: 'dist/guest/pinion-guest.elf', cmdline: 'hang' },
      memory: {
        ramBytes: Number(ram.reduce((n, r) => n + r.size, 0n)),
        regions: ram.length,
        changes: this.log.length,
        hotplug: this.hotplug(),
      },
      devices: 1,
      pid: 4242,
      uptimeMs: 1500,
    };
  }

  memory(): MemoryMapInfo {
    this.calls.push('memory');
    return {
      pageSize: 4096,
      regions: this.map.map((r) => ({
        name: r.name,
        gpa: hex(r.gpa),
        end: hex(r.gpa + r.size),
        size: Number(r.size),
        kind: r.kind,
        backend: r.backend,
        origin: r.name === 'ram-low' ? 'boot' : 'api',
        file: r.backend === 'memfd',
        guest: r.name === 'ram-low' ? 'boot' : this.claimed ? 'acknowledged' : 'not told',
      })),
      holes: [{ name: 'the PCI hole', start: '0xc0000000', end: '0x100000000' }],
      ramCeiling: '0x4000000000',
      changes: [...this.log],
      hotplug: this.hotplug(),
    };
  }

  dma(): DmaInfo {
    this.calls.push('dma');
    return {
      assigned: true,
      iommu: 'iommufd',
      path: 'iommufd',
      containerType: null,
      mappings: [{ iova: '0x0', end: '0x4000000', size: 64 << 20, backing: 'file fd 12 +0x0', prot: 'rw' }],
      entries: { used: 1, allowed: null },
      charged: { held: 64 << 20, lastPeak: 64 << 20, lastFinal: 64 << 20 },
      budget: { bytes: 128 << 20, why: "this process's RLIMIT_MEMLOCK of 128 MiB" },
      lastOps: ['map 0x0 +0x4000000'],
      process: { vmLckKiB: 0, vmPinKiB: 65536, memlockKiB: 131072 },
    };
  }

  devices(): DeviceInfo[] {
    this.calls.push('devices');
    return [
      {
        bdf: '0000:00:04.0',
        slot: '00:01.0',
        group: null,
        resettable: true,
        bars: [
          { bar: 0, space: 'mem32', address: '0xc0000000', size: 16384, mapped: 16384 },
          { bar: 3, space: 'mem32', address: '0xc0004000', size: 16384, mapped: 8192 },
        ],
        interrupts: { active: 'msix', intxPin: null, msixVectors: 3 },
      },
    ];
  }

  async pause(): Promise<VmInfo> {
    this.calls.push('pause');
    if (this.pauseMs) await new Promise((r) => setTimeout(r, this.pauseMs));
    this.paused = true;
    return this.info();
  }

  async resume(): Promise<VmInfo> {
    this.calls.push('resume');
    this.paused = false;
    return this.info();
  }

  stop(): VmInfo {
    this.calls.push('stop');
    return { ...this.info(), state: 'stopping' };
  }

  async changeMemory(c: MemoryChange): Promise<ChangeResult> {
    this.calls.push(c.verb);
    const plan = planChange(c, this.map, mapLimits(4096n));
    const fail = this.failNext;
    this.failNext = undefined;
    if (this.changeMs) await new Promise((r) => setTimeout(r, this.changeMs));
    if (fail) throw fail;
    const old = new Map(this.map.map((r) => [r.gpa, r]));
    const kept = this.map.filter((r) => !plan.remove.includes(r.gpa));
    const added = plan.add.map((a): MapEntry => {
      const backend = a.backing.kind === 'new' ? a.backing.backend : old.get(a.backing.of)?.backend;
      return { name: `ram@${hex(a.gpa)}`, gpa: a.gpa, size: a.size, kind: 'ram', backend };
    });
    const guest = this.notice(
      this.map.filter((r) => plan.remove.includes(r.gpa)),
      added,
    );
    this.map = [...kept, ...added].sort((a, b) => (a.gpa < b.gpa ? -1 : 1));
    this.log.push({ at: '2026-01-01T00:00:00.000Z', summary: plan.summary, guest: guest.note });
    return { done: plan.summary, guest, memory: this.memory() };
  }

  /** A guest that releases and acknowledges at once, when it has a driver. */
  private notice(gone: MapEntry[], added: MapEntry[]): GuestNotice {
    if (!this.claimed)
      return {
        told: false,
        acknowledged: false,
        events: [],
        note: 'not told: no guest driver claimed the memory-hotplug mailbox (port 0x5f0)',
      };
    const event = (kind: 'added' | 'remove-requested', r: MapEntry): GuestNotice['events'][number] => ({
      kind,
      name: r.name,
      gpa: hex(r.gpa),
      size: Number(r.size),
      generation: ++this.generation,
      outcome: 'acked',
      ms: 0,
    });
    const events = [...gone.map((r) => event('remove-requested', r)), ...added.map((r) => event('added', r))];
    const parts = events.map(
      (e) => `${e.kind === 'added' ? 'acknowledged' : 'released'} ${e.name} [${e.gpa}, ${hex(BigInt(e.gpa) + BigInt(e.size))}) in 0 ms`,
    );
    return { told: true, acknowledged: true, events, note: `the guest ${parts.join(', ')}` };
  }

  /** The command the last vm.update was asked to start. */
  updateTo: string | undefined;

  async update(to?: string): Promise<UpdateReport> {
    this.calls.push('update');
    this.updateTo = to;
    const fail = this.failNext;
    this.failNext = undefined;
    if (fail) throw fail;
    return {
      from: 4242,
      to: 4343,
      pauseMs: 41.5,
      tscKhz: 2_000_000,
      guestTsc: '123456789',
      steps: [
        { step: 'check', side: 'old', ms: 0.1, paused: false },
        { step: 'spawn', side: 'old', ms: 3.2, paused: false },
        {
          step: 'prepare',
          side: 'new',
          ms: 480,
          paused: false,
          parts: [
            { name: 'load', ms: 300 },
            { name: 'vm', ms: 20 },
          ],
        },
        { step: 'pause', side: 'old', ms: 1.5, paused: true },
        { step: 'save', side: 'old', ms: 4, paused: true },
        { step: 'restore', side: 'new', ms: 20, paused: true },
        { step: 'commit', side: 'old', ms: 0.2, paused: true },
        { step: 'start', side: 'new', ms: 15, paused: true },
      ],
      charge: [
        { at: 'old: before', pid: 4242, vmLckKiB: 0, vmPinKiB: 0 },
        { at: 'new: running', pid: 4343, vmLckKiB: 0, vmPinKiB: 0 },
      ],
    };
  }
}
