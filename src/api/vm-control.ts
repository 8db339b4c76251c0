// The machine behind the control API: reports built from the Machine, pause
// and resume as holds on the vCPUs, and memory changes run as the plans
// memory-change.ts makes: a guest with a hotplug driver asked to release
// what the change takes away (guest-hotplug.ts), fresh backings allocated
// (guest-ram.ts), contents copied with the vCPUs paused, a few MiB per
// event-loop turn, then one GuestMemory.update that KVM's memslots and the
// DMA listener follow (a refused update leaves the old map everywhere), and
// the guest told of the new regions. Backings the API made are freed once no
// region uses them, and all of them after the machine closes.
import type { Machine } from '../machine/machine.js';
import { DmaError } from '../memory/dma-mapper.js';
import { GuestRam, RamError, type RamBackend } from '../memory/guest-ram.js';
import { hex, MiB } from '../memory/layout.js';
import type { MemoryRegion } from '../memory/listener.js';
import { pinCore, type Backing } from '../memory/pin-core.js';
import { processCharge } from '../memlock/status.js';
import { SysError } from '../sys/errors.js';
import { handOver, UpdateError, type UpdateReport } from '../update/outgoing.js';
import { newProcessCommand, spawnPeer } from '../update/peer.js';
import type { ControlRecord } from '../update/record.js';
import { ApiError } from './errors.js';
import { ACK_WAIT_MS, GuestHotplug, type Notice } from './guest-hotplug.js';
import { mapLimits, planChange, type MapEntry, type MapLimits, type MemoryChange, type MemoryPlan } from './memory-change.js';
import { route } from './routes.js';
import type { ChangeResult, DeviceInfo, DmaInfo, GuestView, MemoryMapInfo, VmControl, VmInfo } from './routes.js';
import type { ApiServer, Handler } from './server.js';
import { outgoingVm } from './vm-update.js';

/** Bytes copied per event-loop turn when a backing is replaced: one huge page, a few ms at most (the first touch of a fresh backing faults it in). */
export const COPY_CHUNK = 2 * Number(MiB);
const CHANGE_LOG = 32;
/** The stop's reason when vm.stop ends the VM. */
export const API_STOP = 'vm.stop through the API';
/** The stop's reason once vm.update handed the VM over; the new process's pid follows. */
export const UPDATE_STOP = 'live update: the VM runs on in pid';
/** The stop's reason when the new process took the VM and died with it; the reason follows. */
export const UPDATE_LOST = 'live update lost the VM:';

type Hold = 'user' | 'memory-change' | 'update';

export class MachineControl implements VmControl {
  /** Regions on a backing the API allocated, and that backing. */
  private readonly owned = new Map<MemoryRegion, GuestRam>();
  /** The backend of every RAM region the API made; the others are the machine's --memory-backend. */
  private readonly backends = new Map<MemoryRegion, RamBackend>();
  private readonly boot: Set<MemoryRegion>;
  private readonly holds = new Set<Hold>();
  private readonly log: { at: string; summary: string; guest: string }[] = [];
  private readonly guest: GuestHotplug;
  private changes = 0;
  private changing = false;
  private stopping = false;
  private updating = false;
  private readonly limits: MapLimits;
  private t0 = Date.now();
  private server: ApiServer | undefined;

  /**
   * `ackWaitMs`: how long a change waits for the guest's ack of each event.
   * `carried`: the view of the process that handed this VM over (live
   * update), which this API goes on with.
   */
  constructor(
    private readonly m: Machine,
    ackWaitMs = ACK_WAIT_MS,
    carried?: ControlRecord,
  ) {
    this.boot = new Set(m.memory.list());
    this.limits = mapLimits(BigInt(pinCore.pageSize()));
    this.guest = new GuestHotplug(
      m.hotplug,
      m.memory.list().filter((r) => r.kind === 'ram'),
      ackWaitMs,
    );
    if (carried) this.carry(carried);
  }

  /**
   * Serves this VM's API on the server `listen` makes with the handler given: a socket bound here
   * (ApiServer.listen) or the one a live update handed over (ApiServer.adopt). vm.update hands that
   * server's socket to the new process.
   */
  async serve(listen: (handler: Handler) => Promise<ApiServer>): Promise<ApiServer> {
    this.server = await listen((method, url, body) => route(this, method, url, body));
    return this.server;
  }

  info(): VmInfo {
    const states = this.m.vcpuStates();
    const ram = this.m.memory.list().filter((r) => r.kind === 'ram');
    const c = this.m.config;
    return {
      state: this.stopping ? 'stopping' : !this.m.pausing ? 'running' : states.includes('running') ? 'pausing' : 'paused',
      pausedBy: [...this.holds],
      vcpus: states.map((state, index) => ({ index, state })),
      boot: c.linux
        ? { kind: 'linux', image: c.linux.kernel, cmdline: c.cmdline }
        : { kind: 'payload', image: c.payload ?? '', cmdline: c.cmdline },
      memory: {
        ramBytes: Number(ram.reduce((n, r) => n + r.size, 0n)),
        regions: ram.length,
        changes: this.changes,
        hotplug: this.guest.info(),
      },
      devices: this.m.assignedDevices().length,
      pid: process.pid,
      uptimeMs: Date.now() - this.t0,
    };
  }

  memory(): MemoryMapInfo {
    const l = this.limits;
    return {
      pageSize: Number(l.pageSize),
      regions: this.m.memory.list().map((r) => ({
        name: r.name,
        gpa: hex(r.gpa),
        end: hex(r.gpa + r.size),
        size: Number(r.size),
        kind: r.kind,
        ...(r.kind === 'ram' ? { backend: this.backendOf(r) } : {}),
        origin: this.boot.has(r) ? 'boot' : 'api',
        file: r.file !== undefined,
        ...(r.kind === 'ram' ? { guest: this.guest.view(r) } : {}),
      })),
      holes: l.holes.map((h) => ({ name: h.name, start: hex(h.start), end: hex(h.end) })),
      ramCeiling: hex(l.ramCeiling),
      changes: this.log.map((e) => ({ ...e })),
      hotplug: this.guest.info(),
    };
  }

  dma(): DmaInfo {
    const d = this.m.dmaState();
    if (!d) return { assigned: false };
    const c = processCharge();
    return {
      assigned: true,
      iommu: d.iommu,
      path: d.caps.path,
      containerType: d.caps.containerType,
      mappings: d.mapped.map((r) => ({
        iova: hex(r.iova),
        end: hex(r.iova + r.size),
        size: Number(r.size),
        backing: backingText(r.backing),
        prot: `${r.prot.read ? 'r' : '-'}${r.prot.write ? 'w' : '-'}`,
      })),
      entries: { used: d.mapped.length, allowed: d.caps.maxEntries },
      charged: {
        held: Number(d.held),
        lastPeak: d.last ? Number(d.last.peakCharged) : null,
        lastFinal: d.last ? Number(d.last.finalCharged) : null,
      },
      budget: d.budget ? { bytes: Number(d.budget.bytes), why: d.budget.why } : null,
      lastOps: (d.last?.ops ?? []).map((o) =>
        o.op === 'copy' ? `copy ${hex(o.srcIova)} -> ${hex(o.dstIova)} +${hex(o.size)}` : `${o.op} ${hex(o.iova)} +${hex(o.size)}`,
      ),
      process: { vmLckKiB: c.vmLckKiB, vmPinKiB: c.vmPinKiB, memlockKiB: c.memlockSoftKiB },
    };
  }

  devices(): DeviceInfo[] {
    return this.m.assignedDevices().map((d) => ({
      bdf: d.bdf,
      slot: `00:${d.slot.toString(16).padStart(2, '0')}.0`,
      group: d.group,
      resettable: d.resettable,
      bars: d.bars.map((b) => ({ bar: b.bar, space: b.space, address: hex(b.address), size: Number(b.size), mapped: Number(b.mapped) })),
      interrupts: { active: d.interrupts.active, intxPin: d.intxGsi ?? null, msixVectors: d.interrupts.msixVectors },
    }));
  }

  async pause(): Promise<VmInfo> {
    this.live('vm.pause');
    await this.hold('user');
    return this.info();
  }

  async resume(): Promise<VmInfo> {
    this.live('vm.resume');
    this.release('user');
    // The answer shows the vCPUs back in KVM_RUN, unless another hold keeps them out.
    const t0 = Date.now();
    while (!this.m.pausing && this.m.vcpuStates().includes('paused') && Date.now() - t0 < 500) await new Promise((r) => setTimeout(r, 1));
    return this.info();
  }

  stop(): VmInfo {
    this.live('vm.stop');
    this.stopping = true;
    this.guest.cancel();
    this.m.stop(API_STOP);
    return this.info();
  }

  async changeMemory(c: MemoryChange): Promise<ChangeResult> {
    const verb = `vm.${c.verb}`;
    this.live(verb);
    if (this.changing) throw new ApiError(409, `${verb}: another memory change is in progress; retry when it is done`);
    this.changing = true;
    try {
      const plan = planChange(c, this.entries(), this.limits, this.m.dmaMappings());
      // A guest with a driver answers for its memory, which it cannot do with its vCPUs held.
      if (this.guest.claimed && this.holds.has('user'))
        throw new ApiError(
          409,
          `${verb}: the VM is paused (vm.pause) and its guest has a memory-hotplug driver, which could not answer; resume it first; nothing changed`,
        );
      const byGpa = new Map(this.m.memory.list().map((r) => [r.gpa, r]));
      const gone = plan.remove.map((g) => byGpa.get(g)!);
      const notice = this.guest.notice();
      this.fitsBudget(verb, plan);
      const released = await this.guest.release(verb, gone, notice);
      let made: MemoryRegion[];
      try {
        // A guest that released every region the change takes away touches none of them during the copy.
        made = await this.apply(plan, gone.length > 0 && released.length === gone.length);
      } catch (e) {
        throw await this.toldAgain(e, released, notice);
      }
      this.guest.forget(gone);
      this.changes++;
      const entry = { at: new Date().toISOString(), summary: plan.summary, guest: 'being told' };
      this.log.push(entry);
      if (this.log.length > CHANGE_LOG) this.log.shift();
      await this.guest.announce(made, notice);
      const guest = notice.report(this.guest.waitMs);
      entry.guest = guest.note;
      return { done: plan.summary, guest, memory: this.memory() };
    } finally {
      this.changing = false;
    }
  }

  /**
   * Hands the VM to a new Pinion process (`to`: its command, default this
   * build) and answers with the pause and each step's time; this process
   * then ends its run. A refusal or a failure on the way leaves the VM
   * running here and answers one line naming the step.
   */
  async update(to?: string): Promise<UpdateReport> {
    this.live('vm.update');
    if (this.changing) throw new ApiError(409, 'vm.update: a memory change is in progress; retry when it is done');
    this.updating = true;
    try {
      const vm = outgoingVm(this.m, {
        hold: () => this.hold('update'),
        release: () => this.release('update'),
        record: () => this.controlRecord(),
        server: () => this.server,
      });
      const report = await handOver(vm, (fds) => spawnPeer(newProcessCommand(to), fds));
      this.stopping = true;
      // After the answer is on its way: the run then ends and this process exits.
      setImmediate(() => this.m.stop(`${UPDATE_STOP} ${report.to}`));
      return report;
    } catch (e) {
      if (!(e instanceof UpdateError)) throw e;
      if (e.released) {
        this.stopping = true;
        this.m.stop(e.to ? `${UPDATE_STOP} ${e.to}` : `${UPDATE_LOST} ${e.message}`);
      }
      throw new ApiError(e.status, e.message);
    } finally {
      this.updating = false;
    }
  }

  /**
   * The API's own view, for the process a live update hands the VM to: what
   * the guest knows of each region and the event still awaiting its ack
   * travel with it (the mailbox's registers are the board's, in the state).
   */
  controlRecord(): ControlRecord {
    const posted = this.guest.unacked();
    return {
      startedAt: this.t0,
      changes: this.changes,
      log: this.log.map((e) => ({ ...e })),
      paused: this.holds.has('user'),
      regions: this.m.memory
        .list()
        .filter((r) => r.kind === 'ram')
        .map((r) => ({
          gpa: r.gpa,
          origin: this.boot.has(r) ? 'boot' : 'api',
          backend: this.backendOf(r),
          ownBacking: this.owned.has(r),
          guest: this.guest.view(r),
        })),
      ...(posted ? { posted: { generation: posted.generation, gpa: posted.region.gpa, kind: posted.kind } } : {}),
    };
  }

  private carry(c: ControlRecord): void {
    this.t0 = c.startedAt;
    this.changes = c.changes;
    this.log.push(...c.log);
    // The new process started the vCPUs paused (update/incoming.ts); this hold is what keeps them so.
    if (c.paused) this.holds.add('user');
    this.boot.clear();
    const views = new Map<MemoryRegion, GuestView>();
    const byGpa = new Map(this.m.memory.list().map((r) => [r.gpa, r]));
    for (const g of c.regions) {
      const r = byGpa.get(g.gpa);
      if (!r) continue;
      if (g.origin === 'boot') this.boot.add(r);
      else this.backends.set(r, g.backend);
      const ram = g.ownBacking ? this.m.takeBacking(r) : undefined;
      if (ram) this.owned.set(r, ram);
      views.set(r, g.guest);
    }
    const region = c.posted && byGpa.get(c.posted.gpa);
    this.guest.carry(views, c.posted && region ? { generation: c.posted.generation, region, kind: c.posted.kind } : undefined);
  }

  /** The VM ended (its guest exited, say): a change waiting on the guest answers now, before the socket goes. */
  ended(): void {
    this.stopping = true;
    this.guest.cancel();
  }

  /** Ends the waits on the guest, then frees the backings the API made; after Machine.close, when nothing maps them any more. */
  close(): void {
    this.guest.close();
    for (const ram of new Set(this.owned.values())) ram.free();
    this.owned.clear();
  }

  private live(verb: string): void {
    if (this.stopping) throw new ApiError(409, `${verb}: the VM is stopping`);
    if (this.updating) throw new ApiError(409, `${verb}: a live update is in progress; retry when it is done`);
  }

  private backendOf(r: MemoryRegion): RamBackend {
    return this.backends.get(r) ?? this.m.config.backend;
  }

  private entries(): MapEntry[] {
    return this.m.memory.list().map((r) => ({
      name: r.name,
      gpa: r.gpa,
      size: r.size,
      kind: r.kind,
      ...(r.kind === 'ram' ? { backend: this.backendOf(r), ...this.growRoom(r) } : {}),
    }));
  }

  /** How far `r` can grow in place: RAM this API allocated, with `r` at its end. */
  private growRoom(r: MemoryRegion): { growsInPlaceTo?: bigint } {
    const ram = this.owned.get(r);
    if (!ram || ram.maxSize <= ram.size || r.hva + r.size !== ram.vaddr + ram.size) return {};
    return { growsInPlaceTo: r.size + ram.maxSize - ram.size };
  }

  private async hold(who: Hold): Promise<void> {
    this.holds.add(who);
    try {
      await this.m.pause();
    } catch (e) {
      this.release(who);
      throw new ApiError(503, (e as Error).message);
    }
  }

  private release(who: Hold): void {
    this.holds.delete(who);
    if (this.holds.size === 0) this.m.resume();
  }

  /**
   * A change refused after the guest released regions for it: they are still
   * in the map (the update was undone), so the guest is told of them again.
   */
  private async toldAgain(e: unknown, released: MemoryRegion[], n: Notice): Promise<unknown> {
    if (!released.length) return e;
    await this.guest.announce(released, n);
    if (!(e instanceof ApiError)) return e;
    const acked = n.events.slice(-released.length).every((x) => x.kind === 'added' && x.outcome === 'acked');
    return new ApiError(
      e.status,
      `${e.message}; the guest had released ${released.map((r) => r.name).join(' and ')} and was told of it again${acked ? '' : ' (no ack)'}`,
    );
  }

  /** Makes the plan; returns the regions it put in the map. */
  /**
   * RAM only added (no region goes) that the DMA budget cannot hold is refused before its backing is
   * allocated: faulting in memory the planner will refuse costs the VMM thread, and the vCPUs' RPCs
   * wait on it. Changes that also take memory away are left to the planner, which may swap unit by unit.
   */
  private fitsBudget(verb: string, plan: MemoryPlan): void {
    const d = this.m.dmaState();
    if (!d?.budget || plan.remove.length) return;
    const needed = plan.add.reduce((n, a) => n + (a.backing.kind === 'new' ? a.size : 0n), 0n);
    const available = d.budget.bytes > d.held ? d.budget.bytes - d.held : 0n;
    if (needed > available)
      throw new ApiError(
        409,
        `${verb}: DMA plan refused: new memory map needs ${hex(needed)} more locked bytes, only ${hex(available)} available (this VM holds ${d.held / MiB} MiB; the limit is ${d.budget.why}); nothing changed`,
      );
  }

  private async apply(plan: MemoryPlan, guestLetGo = false): Promise<MemoryRegion[]> {
    const mem = this.m.memory;
    const byGpa = new Map(mem.list().map((r) => [r.gpa, r]));
    const made: GuestRam[] = [];
    const grown: { ram: GuestRam; size: bigint }[] = [];
    const next: { region: MemoryRegion; view: Uint8Array; ram: GuestRam | undefined; backend: RamBackend }[] = [];
    try {
      for (const a of plan.add) {
        const name = `ram@${hex(a.gpa)}`;
        const b = a.backing;
        if (b.kind === 'new') {
          // In address space for the largest region, so that a later resize can grow it in place.
          const ram = GuestRam.allocate(a.size, b.backend, this.limits.pageSize, this.limits.maxRegion);
          made.push(ram);
          const region: MemoryRegion = {
            name,
            gpa: a.gpa,
            size: a.size,
            hva: ram.vaddr,
            file: ram.fd >= 0 ? { fd: ram.fd, offset: 0n } : undefined,
            kind: 'ram',
          };
          next.push({ region, view: ram.view(0n, Number(a.size)), ram, backend: b.backend });
        } else if (b.kind === 'grown') {
          const old = byGpa.get(b.of)!;
          const ram = this.owned.get(old)!;
          grown.push({ ram, size: ram.size });
          ram.grow(ram.size + a.size - old.size);
          const region: MemoryRegion = { ...old, name, size: a.size, file: old.file && { ...old.file } };
          next.push({ region, view: ram.view(old.hva - ram.vaddr, Number(a.size)), ram, backend: this.backendOf(old) });
        } else {
          const old = byGpa.get(b.of)!;
          const region: MemoryRegion = {
            name,
            gpa: a.gpa,
            size: a.size,
            hva: old.hva + b.offset,
            file: old.file && { fd: old.file.fd, offset: old.file.offset + b.offset },
            kind: 'ram',
          };
          next.push({
            region,
            view: mem.bytes(old.gpa + b.offset, Number(a.size)),
            ram: this.owned.get(old),
            backend: this.backendOf(old),
          });
        }
      }
      // With a device assigned the map pins every page: fault new memory in first, a piece per event-loop
      // turn, so that the pins find it there and the VMM thread (which serves the vCPUs' RPCs) never waits
      // on a whole region's faults at once (a 16 MiB grow on iommufd lost frames of a stream that way).
      if (this.m.assignedDevices().length) for (const g of grown) await populateInTurns(g.ram.vaddr + g.size, g.ram.size - g.size);
      const copies = plan.add.flatMap((a, i) =>
        a.backing.kind === 'new' && a.backing.copy ? [{ ...a.backing.copy, to: next[i]!.view }] : [],
      );
      // The vCPUs are held out of KVM_RUN for the copy, so the guest writes nothing meanwhile, and for any
      // change that takes a region away: KVM cannot split, shrink or move a memslot, so its slot is deleted
      // before the new ones are made, and a vCPU touching the range in between finds no slot (an MMIO exit
      // nothing claims: all ones, or code it cannot fetch and a triple fault; seen splitting the boot RAM of
      // a running test guest). QEMU's "kvm: Atomic memslot updates" (f39b7d2b96e3) keeps KVM_RUN out of such
      // updates the same way. Neither hold is needed when the guest's driver released what goes: neither it
      // nor a descriptor of its NIC points there.
      const hold = (copies.length > 0 || plan.remove.length > 0) && !guestLetGo;
      if (hold) await this.hold('memory-change');
      try {
        for (const c of copies) await copyInTurns(mem.bytes(c.from, Number(c.bytes)), c.to);
        mem.update((u) => {
          for (const gpa of plan.remove) u.remove(gpa);
          for (const n of next) {
            mem.setView(n.region, n.view);
            u.add(n.region);
          }
        });
      } finally {
        if (hold) this.release('memory-change');
      }
    } catch (e) {
      for (const ram of made) ram.free();
      for (const g of grown) g.ram.shrinkTo(g.size);
      throw refusal(plan, e);
    }
    const gone = plan.remove.map((g) => byGpa.get(g)!);
    const freed = new Set(gone.map((r) => this.owned.get(r)).filter((r): r is GuestRam => r !== undefined));
    for (const r of gone) {
      this.owned.delete(r);
      this.backends.delete(r);
    }
    for (const n of next) {
      if (n.ram) this.owned.set(n.region, n.ram);
      this.backends.set(n.region, n.backend);
    }
    for (const ram of this.owned.values()) freed.delete(ram);
    for (const ram of freed) ram.free();
    return next.map((n) => n.region);
  }
}

/** [vaddr, vaddr+size) faulted in (MADV_POPULATE_WRITE), COPY_CHUNK bytes per event-loop turn. */
function populateInTurns(vaddr: bigint, size: bigint): Promise<void> {
  return inTurns(Number(size), COPY_CHUNK, (off, len) => pinCore.memPopulate(vaddr + BigInt(off), BigInt(len), 1));
}

/** `from` into `to`, COPY_CHUNK bytes per event-loop turn. */
export function copyInTurns(from: Uint8Array, to: Uint8Array, chunk = COPY_CHUNK): Promise<void> {
  return inTurns(from.length, chunk, (off, len) => to.set(from.subarray(off, off + len), off));
}

/** `step` over [0, size) in pieces of `chunk`, one per event-loop turn, so the API and the vCPUs' RPC go on between. */
async function inTurns(size: number, chunk: number, step: (off: number, len: number) => void): Promise<void> {
  for (let off = 0; off < size; off += chunk) {
    step(off, Math.min(chunk, size - off));
    await new Promise((r) => setImmediate(r));
  }
}

/**
 * What a failed change answers. The map is as it was (GuestMemory.update put
 * it back everywhere); the kernel's and the planner's messages keep their
 * errno, operation, IOVA, size and path.
 */
function refusal(plan: MemoryPlan, e: unknown): unknown {
  if (e instanceof ApiError) return e;
  const verb = `vm.${plan.change.verb}`;
  const what = (e as Error)?.message ?? String(e);
  // The planner refused before touching the IOMMU: the change does not fit the budget.
  if (e instanceof DmaError && e.op === undefined) return new ApiError(409, `${verb}: ${what}`);
  // Not enough huge pages, say: the message has the remedy.
  if (e instanceof RamError) return new ApiError(409, `${verb}: ${what}`);
  if (e instanceof DmaError || e instanceof SysError) return new ApiError(500, `${verb}: ${what}; the memory map is unchanged`);
  if (e instanceof RangeError) return new ApiError(409, `${verb}: ${what}`);
  return e;
}

function backingText(b: Backing): string {
  return 'fd' in b ? `file fd ${b.fd} +${hex(b.offset)}` : `vaddr ${hex(b.vaddr)}`;
}
