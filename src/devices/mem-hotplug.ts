// Pinion's memory-hotplug mailbox: the port-I/O device through which the
// VMM tells a guest driver of a RAM region added through the control API,
// and asks it to let go of one before it is taken away. Neither ACPI memory
// hotplug nor virtio-mem: a test guest's driver is a few port reads.
//
// Ports 0x5f0-0x60f (nothing else of Pinion's or of a PC is there), served
// on the VMM thread: the guest polls it rarely (every few ms or less often),
// and the control API waits on it there. 32-bit accesses at 4-byte offsets;
// any other access reads all ones and a write of it is dropped.
//
//   0x00 ID       R: MEM_HOTPLUG_ID (0x50484d50, "PMHP" in memory order)
//                 W: MEM_HOTPLUG_ID claims the mailbox (a driver is here), 0 lets go of it
//   0x04 GEN      R: generation of the event posted last, 1, 2, ...; 0 before the first
//   0x08 KIND     R: 0 none, 1 added, 2 remove requested
//   0x0c GPA_LO   R: the region's guest-physical start, bits 0-31
//   0x10 GPA_HI   R: bits 32-63
//   0x14 SIZE_LO  R: its size in bytes, bits 0-31
//   0x18 SIZE_HI  R: bits 32-63
//   0x1c ACK      R: the generation acknowledged last
//                 W: the generation the guest handled: for "added", the
//                    region is known to it; for "remove requested", it
//                    released it: no descriptor or access points into it any more
//
// Until a driver claims the mailbox the VMM posts nothing and never waits
// for the guest (a Linux guest has no driver). One event is posted at a
// time and the VMM waits for its ack (bounded); a new event replaces one it
// gave up on. A driver reads GEN, the fields, then GEN again, and starts
// over if it moved: every read is its own exit, and the VMM may post in
// between. An ack of another generation than the one posted is dropped.
import { le, putLe, type BusDevice } from '../vmm/bus.js';

export const MEM_HOTPLUG_PORT = 0x5f0;
export const MEM_HOTPLUG_LEN = 0x20;
export const MEM_HOTPLUG_ID = 0x50484d50;

export const MEM_HOTPLUG_REG = {
  ID: 0x00,
  GEN: 0x04,
  KIND: 0x08,
  GPA_LO: 0x0c,
  GPA_HI: 0x10,
  SIZE_LO: 0x14,
  SIZE_HI: 0x18,
  ACK: 0x1c,
} as const;

export const HOTPLUG_KINDS = ['added', 'remove-requested'] as const;
export type HotplugKind = (typeof HOTPLUG_KINDS)[number];
/** KIND's values. */
export const HOTPLUG_KIND: Record<HotplugKind | 'none', number> = { none: 0, added: 1, 'remove-requested': 2 };

export interface HotplugEvent {
  generation: number;
  kind: HotplugKind;
  gpa: bigint;
  size: bigint;
}

/** How a wait for an ack ended: the guest acked, time ran out, the driver let go of the mailbox, or the VM closed. */
export type AckOutcome = 'acked' | 'timeout' | 'let go' | 'closed';

/** The mailbox's registers as the guest sees them, for a live update (the waits are the control API's). */
export interface MemHotplugState {
  claimed: boolean;
  /** The event posted last; none before the first. */
  last?: HotplugEvent;
  acked: number;
  staleAcks: number;
}

/** What the guest did: acked a generation, or let go of the mailbox (null). */
type Listener = (acked: number | null) => void;

const LO = 0xffff_ffffn;

export class MemHotplug implements BusDevice {
  private claimedNow = false;
  private last: HotplugEvent | undefined;
  private acked = 0;
  private readonly listeners = new Set<Listener>();
  private readonly closers = new Set<() => void>();
  /** Acks of a generation other than the one posted (a guest late with an event the VMM gave up on). */
  staleAcks = 0;

  /** A guest driver holds the mailbox. */
  get claimed(): boolean {
    return this.claimedNow;
  }

  /** The generation posted last (0: none yet). */
  get generation(): number {
    return this.last?.generation ?? 0;
  }

  get ackedGeneration(): number {
    return this.acked;
  }

  /** The event posted last while the guest has not acknowledged it. */
  get pending(): HotplugEvent | undefined {
    return this.last && this.last.generation !== this.acked ? this.last : undefined;
  }

  /** Posts an event for the guest's driver to see on its next poll; only while one holds the mailbox. */
  post(kind: HotplugKind, gpa: bigint, size: bigint): HotplugEvent {
    if (!this.claimedNow) throw new Error('memory hotplug: no guest driver holds the mailbox, so nothing is posted');
    if (gpa < 0n || gpa >> 64n || size <= 0n || size >> 64n)
      throw new RangeError(`memory hotplug: bad region 0x${gpa.toString(16)}+0x${size.toString(16)}`);
    // GEN is a 32-bit register and 0 means "no event yet": it wraps from 0xffffffff to 1.
    const generation = (this.generation % 0xffff_ffff) + 1;
    this.last = { generation, kind, gpa, size };
    return this.last;
  }

  /** Calls `fn` with each ack the guest writes (the generation), and with null when its driver lets go; returns the unsubscribe. */
  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * Resolves once the guest acknowledges `generation`, its driver lets go of
   * the mailbox, `ms` pass, or close() is called. A timer, not a poll: the
   * event loop stays free for the vCPUs' RPCs, the guest's ack among them.
   */
  waitAck(generation: number, ms: number): Promise<AckOutcome> {
    if (this.acked === generation) return Promise.resolve('acked');
    if (!this.claimedNow) return Promise.resolve('let go');
    return new Promise((resolve) => {
      const end = (o: AckOutcome): void => {
        clearTimeout(timer);
        unsubscribe();
        this.closers.delete(closed);
        resolve(o);
      };
      const closed = (): void => end('closed');
      const unsubscribe = this.subscribe((acked) => {
        if (acked === null) end('let go');
        else if (acked === generation) end('acked');
      });
      const timer = setTimeout(() => end('timeout'), ms);
      this.closers.add(closed);
    });
  }

  /** With the vCPUs paused: a guest driver polling the mailbox sees the same registers after a live update. */
  save(): MemHotplugState {
    return {
      claimed: this.claimedNow,
      ...(this.last ? { last: { ...this.last } } : {}),
      acked: this.acked,
      staleAcks: this.staleAcks,
    };
  }

  /** Into a fresh mailbox, before the vCPUs run and before anyone waits on it. */
  restore(s: MemHotplugState): void {
    this.claimedNow = s.claimed;
    this.last = s.last && { ...s.last };
    this.acked = s.acked;
    this.staleAcks = s.staleAcks;
  }

  /** Ends every wait ('closed'): the VM is going away, and does not wait on its guest. */
  close(): void {
    for (const c of [...this.closers]) c();
  }

  read(offset: number, data: Uint8Array): void {
    if (data.length !== 4 || offset % 4) return void data.fill(0xff);
    putLe(data, this.register(offset));
  }

  write(offset: number, data: Uint8Array): void {
    if (data.length !== 4 || offset % 4) return;
    const v = le(data) >>> 0;
    if (offset === MEM_HOTPLUG_REG.ID) this.claim(v);
    else if (offset === MEM_HOTPLUG_REG.ACK) this.ack(v);
  }

  private register(offset: number): number {
    const e = this.last;
    const R = MEM_HOTPLUG_REG;
    switch (offset) {
      case R.ID:
        return MEM_HOTPLUG_ID;
      case R.GEN:
        return this.generation;
      case R.KIND:
        return e ? HOTPLUG_KIND[e.kind] : HOTPLUG_KIND.none;
      case R.GPA_LO:
        return Number((e?.gpa ?? 0n) & LO);
      case R.GPA_HI:
        return Number((e?.gpa ?? 0n) >> 32n);
      case R.SIZE_LO:
        return Number((e?.size ?? 0n) & LO);
      case R.SIZE_HI:
        return Number((e?.size ?? 0n) >> 32n);
      case R.ACK:
        return this.acked;
      default:
        return 0xffff_ffff;
    }
  }

  private claim(v: number): void {
    if (v === MEM_HOTPLUG_ID) this.claimedNow = true;
    else if (v === 0 && this.claimedNow) {
      this.claimedNow = false;
      for (const fn of [...this.listeners]) fn(null);
    }
  }

  private ack(generation: number): void {
    if (!this.last || generation !== this.last.generation) {
      this.staleAcks++;
      return;
    }
    if (this.acked === generation) return;
    this.acked = generation;
    for (const fn of [...this.listeners]) fn(generation);
  }
}
