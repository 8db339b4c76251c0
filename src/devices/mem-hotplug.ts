// Pinion's memory-hotplug mailbox: the port-I/O device through which the
// VMM tells a guest driver of a RAM region added through the control API,
// and asks it to let go of one before it is taken away. Neither ACPI memory
// hotplug nor virtio-mem: a test guest's driver is a few port reads.
//
// Ports 0x5f0-0x60f (nothing else of Pinion's or of a PC is there). The
// registers live in a SharedArrayBuffer and each vCPU thread serves them
// itself: a poll never waits on the VMM thread, which may be busy pinning
// a region for minutes' worth of the guest's RX ring. The VMM thread posts
// events into it and learns of the guest's claims and acks by waiting on
// its write counter. 32-bit accesses at 4-byte offsets; any other access
// reads all ones and a write of it is dropped.
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

// Int32 words of the shared state. SEQ is odd while the VMM writes an event; a register read waits it out.
const W = { SEQ: 0, CLAIMED: 1, GEN: 2, KIND: 3, GPA_LO: 4, GPA_HI: 5, SIZE_LO: 6, SIZE_HI: 7, ACK: 8, STALE: 9, LET_GO: 10, WRITES: 11 };
const WORDS = 12;
const KIND_OF = Object.fromEntries(HOTPLUG_KINDS.map((k) => [HOTPLUG_KIND[k], k])) as Record<number, HotplugKind>;

/**
 * The mailbox over its shared state. Every thread that has the state builds
 * one: a vCPU thread's serves the guest's accesses; the VMM thread's posts,
 * waits and is told of the guest's writes (at once when it served them
 * itself, otherwise through WRITES).
 */
export class MemHotplug implements BusDevice {
  readonly state: SharedArrayBuffer;
  private readonly w: Int32Array;
  private readonly listeners = new Set<Listener>();
  private readonly closers = new Set<() => void>();
  /** What the listeners were last told of: ACK and the let-go count. */
  private seen: { ack: number; letGo: number };
  private watching = false;

  constructor(state: SharedArrayBuffer = new SharedArrayBuffer(WORDS * 4)) {
    this.state = state;
    this.w = new Int32Array(state, 0, WORDS);
    this.seen = this.heard();
  }

  /** A guest driver holds the mailbox. */
  get claimed(): boolean {
    return Atomics.load(this.w, W.CLAIMED) === 1;
  }

  /** The generation posted last (0: none yet). */
  get generation(): number {
    return this.u(W.GEN);
  }

  get ackedGeneration(): number {
    return this.u(W.ACK);
  }

  /** Acks of a generation other than the one posted (a guest late with an event the VMM gave up on). */
  get staleAcks(): number {
    return this.u(W.STALE);
  }

  /** The event posted last; none before the first. */
  get last(): HotplugEvent | undefined {
    const generation = this.generation;
    if (!generation) return undefined;
    const pair = (lo: number, hi: number): bigint => (BigInt(this.u(hi)) << 32n) | BigInt(this.u(lo));
    return { generation, kind: KIND_OF[this.u(W.KIND)]!, gpa: pair(W.GPA_LO, W.GPA_HI), size: pair(W.SIZE_LO, W.SIZE_HI) };
  }

  /** The event posted last while the guest has not acknowledged it. */
  get pending(): HotplugEvent | undefined {
    const e = this.last;
    return e && e.generation !== this.ackedGeneration ? e : undefined;
  }

  /** Posts an event for the guest's driver to see on its next poll; only while one holds the mailbox. */
  post(kind: HotplugKind, gpa: bigint, size: bigint): HotplugEvent {
    if (!this.claimed) throw new Error('memory hotplug: no guest driver holds the mailbox, so nothing is posted');
    if (gpa < 0n || gpa >> 64n || size <= 0n || size >> 64n)
      throw new RangeError(`memory hotplug: bad region 0x${gpa.toString(16)}+0x${size.toString(16)}`);
    // GEN is a 32-bit register and 0 means "no event yet": it wraps from 0xffffffff to 1.
    const e = { generation: (this.generation % 0xffff_ffff) + 1, kind, gpa, size };
    this.publish(e);
    return e;
  }

  /** Calls `fn` with each ack the guest writes (the generation), and with null when its driver lets go; returns the unsubscribe. */
  subscribe(fn: Listener): () => void {
    // What happened while nobody listened is not news.
    if (!this.listeners.size) this.seen = this.heard();
    this.listeners.add(fn);
    this.watch();
    return () => {
      this.listeners.delete(fn);
      // Wakes the watcher so it sees nobody listens and stops.
      if (!this.listeners.size) Atomics.notify(this.w, W.WRITES);
    };
  }

  /**
   * Resolves once the guest acknowledges `generation`, its driver lets go of
   * the mailbox, `ms` pass, or close() is called. A timer, not a poll: the
   * event loop stays free for the vCPUs' RPCs.
   */
  waitAck(generation: number, ms: number): Promise<AckOutcome> {
    if (this.ackedGeneration === generation) return Promise.resolve('acked');
    if (!this.claimed) return Promise.resolve('let go');
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
    const last = this.last;
    return { claimed: this.claimed, ...(last ? { last } : {}), acked: this.ackedGeneration, staleAcks: this.staleAcks };
  }

  /** Into a fresh mailbox, before the vCPUs run and before anyone waits on it. */
  restore(s: MemHotplugState): void {
    Atomics.store(this.w, W.CLAIMED, s.claimed ? 1 : 0);
    if (s.last) this.publish(s.last);
    Atomics.store(this.w, W.ACK, s.acked);
    Atomics.store(this.w, W.STALE, s.staleAcks);
    this.seen = this.heard();
  }

  /** Ends every wait ('closed'): the VM is going away, and does not wait on its guest. */
  close(): void {
    for (const c of [...this.closers]) c();
  }

  read(offset: number, data: Uint8Array): void {
    if (data.length !== 4 || offset % 4) return void data.fill(0xff);
    for (;;) {
      const seq = Atomics.load(this.w, W.SEQ);
      if (seq & 1) continue;
      const v = this.register(offset);
      if (Atomics.load(this.w, W.SEQ) === seq) return putLe(data, v);
    }
  }

  write(offset: number, data: Uint8Array): void {
    if (data.length !== 4 || offset % 4) return;
    const v = le(data) >>> 0;
    if (offset === MEM_HOTPLUG_REG.ID) this.claim(v);
    else if (offset === MEM_HOTPLUG_REG.ACK) this.ack(v);
    else return;
    Atomics.add(this.w, W.WRITES, 1);
    Atomics.notify(this.w, W.WRITES);
    this.dispatch();
  }

  /** What the guest has written that listeners hear of: ACK and the let-go count. */
  private heard(): { ack: number; letGo: number } {
    return { ack: this.u(W.ACK), letGo: this.u(W.LET_GO) };
  }

  private u(word: number): number {
    return Atomics.load(this.w, word) >>> 0;
  }

  /** The event's registers, GEN last, inside SEQ's odd stretch. */
  private publish(e: HotplugEvent): void {
    const w = this.w;
    Atomics.add(w, W.SEQ, 1);
    Atomics.store(w, W.KIND, HOTPLUG_KIND[e.kind]);
    Atomics.store(w, W.GPA_LO, Number(e.gpa & LO));
    Atomics.store(w, W.GPA_HI, Number(e.gpa >> 32n));
    Atomics.store(w, W.SIZE_LO, Number(e.size & LO));
    Atomics.store(w, W.SIZE_HI, Number(e.size >> 32n));
    Atomics.store(w, W.GEN, e.generation);
    Atomics.add(w, W.SEQ, 1);
  }

  private register(offset: number): number {
    const R = MEM_HOTPLUG_REG;
    switch (offset) {
      case R.ID:
        return MEM_HOTPLUG_ID;
      case R.GEN:
        return this.u(W.GEN);
      case R.KIND:
        return this.u(W.GEN) ? this.u(W.KIND) : HOTPLUG_KIND.none;
      case R.GPA_LO:
        return this.u(W.GPA_LO);
      case R.GPA_HI:
        return this.u(W.GPA_HI);
      case R.SIZE_LO:
        return this.u(W.SIZE_LO);
      case R.SIZE_HI:
        return this.u(W.SIZE_HI);
      case R.ACK:
        return this.u(W.ACK);
      default:
        return 0xffff_ffff;
    }
  }

  private claim(v: number): void {
    if (v === MEM_HOTPLUG_ID) Atomics.store(this.w, W.CLAIMED, 1);
    else if (v === 0 && Atomics.compareExchange(this.w, W.CLAIMED, 1, 0) === 1) Atomics.add(this.w, W.LET_GO, 1);
  }

  private ack(generation: number): void {
    const gen = this.u(W.GEN);
    if (!gen || generation !== gen) Atomics.add(this.w, W.STALE, 1);
    else Atomics.store(this.w, W.ACK, generation);
  }

  /** Tells the listeners of an ack or a let-go they have not heard of. */
  private dispatch(): void {
    if (!this.listeners.size) return;
    const now = this.heard();
    const was = this.seen;
    this.seen = now;
    if (now.ack !== was.ack) for (const fn of [...this.listeners]) fn(now.ack);
    if (now.letGo !== was.letGo) for (const fn of [...this.listeners]) fn(null);
  }

  /** While anyone listens: wakes on each write a vCPU thread makes. */
  private watch(): void {
    if (this.watching) return;
    this.watching = true;
    const loop = (): void => {
      if (!this.listeners.size) return void (this.watching = false);
      const r = Atomics.waitAsync(this.w, W.WRITES, Atomics.load(this.w, W.WRITES));
      const next = (): void => {
        this.dispatch();
        loop();
      };
      if (r.async) void r.value.then(next);
      else next();
    };
    loop();
  }
}
