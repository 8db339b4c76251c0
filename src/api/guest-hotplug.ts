// What the guest is told of a memory change, through the memory-hotplug
// mailbox (devices/mem-hotplug.ts). Before a change takes a region away
// (remove-ram, and the old region of a resize, split, move or replace), a
// guest that knows it is asked to release it, and the change waits for the
// release: none within the bound and the change is refused, nothing
// changed. After the change each new region is posted as added and its ack
// awaited; the change stands either way and the answer says what the guest
// did. The waits are timers on the event loop: the vCPUs run meanwhile and
// their RPCs, the guest's ack among them, are served. A mailbox no driver
// claimed (a Linux guest) is never waited on, and the guest is not told.
import { MEM_HOTPLUG_PORT, type AckOutcome, type HotplugKind, type MemHotplug } from '../devices/mem-hotplug.js';
import { hex } from '../memory/layout.js';
import type { MemoryRegion } from '../memory/listener.js';
import { ApiError } from './errors.js';
import type { GuestNotice, GuestView, HotplugInfo } from './routes.js';

/** How long a change waits for the guest's ack of one event. */
export const ACK_WAIT_MS = 10_000;

type Event = GuestNotice['events'][number];

/** The events of one change, as they happen. */
export class Notice {
  readonly events: Event[] = [];

  constructor(readonly claimed: boolean) {}

  report(waitMs: number): GuestNotice {
    const told = this.events.length > 0;
    return {
      told,
      acknowledged: told && this.events.every((e) => e.outcome === 'acked'),
      events: [...this.events],
      note: this.note(waitMs),
    };
  }

  private note(waitMs: number): string {
    if (!this.claimed && !this.events.length)
      return `not told: no guest driver claimed the memory-hotplug mailbox (port ${hex(MEM_HOTPLUG_PORT)})`;
    if (!this.events.length) return 'nothing to tell the guest: it knew no region this change took away, and none was added';
    const parts = this.events.map((e) => {
      const what = `${e.name} [${e.gpa}, ${hex(BigInt(e.gpa) + BigInt(e.size))})`;
      const verb = e.kind === 'added' ? 'acknowledged' : 'released';
      if (e.outcome === 'acked') return `${verb} ${what} in ${e.ms} ms`;
      if (e.outcome === 'timeout') return `was told of ${what} (${e.kind}) but gave no ack within ${waitMs / 1000} s`;
      if (e.outcome === 'let go') return `let go of the mailbox instead of answering for ${what}`;
      return `was told of ${what} (${e.kind}) as the VM closed`;
    });
    return `the guest ${parts.join(', ')}`;
  }
}

export class GuestHotplug {
  /** What the guest knows of each region in the map; one not here is 'not told'. */
  private readonly views = new Map<MemoryRegion, GuestView>();
  /** Events posted and not acked yet, by generation: an ack that comes after the wait gave up still counts. */
  private readonly posted = new Map<number, { region: MemoryRegion; kind: HotplugKind }>();
  private readonly unsubscribe: () => void;
  private stopped = false;

  constructor(
    private readonly dev: MemHotplug,
    boot: Iterable<MemoryRegion>,
    readonly waitMs = ACK_WAIT_MS,
  ) {
    for (const r of boot) this.views.set(r, 'boot');
    this.unsubscribe = dev.subscribe((acked) => {
      const p = acked === null ? undefined : this.posted.get(acked);
      if (!p) return;
      this.posted.delete(acked!);
      this.acked(p.region, p.kind);
    });
  }

  get claimed(): boolean {
    return this.dev.claimed;
  }

  view(r: MemoryRegion): GuestView {
    return this.views.get(r) ?? 'not told';
  }

  /** Whether the guest uses `r` as far as it told: a change that takes it away asks it first. */
  knows(r: MemoryRegion): boolean {
    return this.view(r) !== 'not told';
  }

  notice(): Notice {
    return new Notice(this.dev.claimed);
  }

  /**
   * Asks the guest to release each region of `gone` it knows; returns those
   * it released, or throws a 409 (nothing changed) when it does not in time.
   */
  async release(verb: string, gone: readonly MemoryRegion[], n: Notice): Promise<MemoryRegion[]> {
    const released: MemoryRegion[] = [];
    if (!this.dev.claimed) return released;
    for (const r of gone.filter((g) => this.knows(g))) {
      const outcome = await this.tell('remove-requested', r, n);
      if (outcome === 'acked') {
        released.push(r);
        continue;
      }
      const what = `${r.name} [${hex(r.gpa)}, ${hex(r.gpa + r.size)})`;
      if (outcome === 'timeout')
        throw new ApiError(409, `${verb}: the guest did not release ${what} in ${this.waitMs / 1000} s; nothing changed`);
      if (outcome === 'let go')
        throw new ApiError(
          409,
          `${verb}: the guest's driver let go of the memory-hotplug mailbox instead of releasing ${what}; nothing changed`,
        );
      throw new ApiError(409, `${verb}: the VM is stopping; nothing changed`);
    }
    return released;
  }

  /** Tells the guest of each region of `made` (new in the map, or back after a refused change). */
  async announce(made: readonly MemoryRegion[], n: Notice): Promise<void> {
    for (const r of made) {
      if (!this.dev.claimed) break;
      await this.tell('added', r, n);
    }
  }

  /** The event posted last, while its ack has not come: a live update carries it, since the ack may still. */
  unacked(): { generation: number; region: MemoryRegion; kind: HotplugKind } | undefined {
    const [e] = this.posted;
    return e && { generation: e[0], ...e[1] };
  }

  /**
   * The view of the process that handed this VM over (live update), on the
   * mailbox as its state left it: what the guest knows of each region, and
   * the event awaiting its ack. An ack the guest wrote after that process
   * took its view (the guest ran until the pause) is counted here.
   */
  carry(views: ReadonlyMap<MemoryRegion, GuestView>, posted?: { generation: number; region: MemoryRegion; kind: HotplugKind }): void {
    this.views.clear();
    for (const [r, v] of views) this.views.set(r, v);
    this.posted.clear();
    if (!posted) return;
    if (this.dev.ackedGeneration === posted.generation) this.acked(posted.region, posted.kind);
    else this.posted.set(posted.generation, { region: posted.region, kind: posted.kind });
  }

  /** Regions out of the map. */
  forget(gone: readonly MemoryRegion[]): void {
    for (const r of gone) this.views.delete(r);
  }

  info(): HotplugInfo {
    const p = this.dev.pending;
    return {
      port: hex(MEM_HOTPLUG_PORT),
      claimed: this.dev.claimed,
      generation: this.dev.generation,
      acked: this.dev.ackedGeneration,
      pending: p ? { generation: p.generation, kind: p.kind, gpa: hex(p.gpa), size: Number(p.size) } : null,
    };
  }

  /** Ends every wait, and no later one starts: the VM is stopping. */
  cancel(): void {
    this.stopped = true;
    this.dev.close();
  }

  close(): void {
    this.unsubscribe();
    this.cancel();
  }

  private acked(region: MemoryRegion, kind: HotplugKind): void {
    // Released: the guest no longer uses it, so a later change need not ask again.
    this.views.set(region, kind === 'added' ? 'acknowledged' : 'not told');
  }

  private async tell(kind: HotplugKind, r: MemoryRegion, n: Notice): Promise<AckOutcome> {
    const e = this.dev.post(kind, r.gpa, r.size);
    // An older event is replaced: its ack can no longer come.
    this.posted.clear();
    this.posted.set(e.generation, { region: r, kind });
    if (kind === 'added') this.views.set(r, 'told');
    const t0 = Date.now();
    const outcome = this.stopped ? 'closed' : await this.dev.waitAck(e.generation, this.waitMs);
    n.events.push({ kind, name: r.name, gpa: hex(r.gpa), size: Number(r.size), generation: e.generation, outcome, ms: Date.now() - t0 });
    return outcome;
  }
}
