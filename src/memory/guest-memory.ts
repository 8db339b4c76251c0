// The guest memory map: the one source of truth for which host memory backs
// which guest-physical range. Changes are transactions; listeners follow.
import { hex } from './layout.js';
import type { MemoryListener, MemoryRegion } from './listener.js';

export interface MemoryUpdate {
  add(r: MemoryRegion): void;
  remove(gpa: bigint): void;
}

export class GuestMemory {
  private regions: MemoryRegion[] = [];
  private readonly listeners: MemoryListener[] = [];
  /** Views of region memory for the VMM's own accesses (boot structures, payload). */
  private readonly views = new Map<MemoryRegion, Uint8Array>();

  list(): readonly MemoryRegion[] {
    return this.regions;
  }

  /** Registers a listener and replays the current map to it (region adds, then commit). */
  addListener(l: MemoryListener): void {
    this.listeners.push(l);
    try {
      for (const r of this.regions) l.regionAdd(r);
      l.commit();
    } catch (e) {
      // One that refused the replay (the DMA pre-map over budget) never joined: later changes must not reach it.
      this.removeListener(l);
      throw e;
    }
  }

  removeListener(l: MemoryListener): void {
    const i = this.listeners.indexOf(l);
    if (i >= 0) this.listeners.splice(i, 1);
  }

  /** Applies adds and removes as one change; rejected (nothing applied) if the result would overlap. */
  update(fn: (u: MemoryUpdate) => void): void {
    const added: MemoryRegion[] = [];
    const removed: MemoryRegion[] = [];
    fn({
      add: (r) => added.push(r),
      remove: (gpa) => {
        const r = this.regions.find((x) => x.gpa === gpa) ?? added.find((x) => x.gpa === gpa);
        if (!r) throw new RangeError(`no guest memory region starts at ${hex(gpa)}`);
        removed.push(r);
      },
    });
    const next = [...this.regions.filter((r) => !removed.includes(r)), ...added.filter((r) => !removed.includes(r))].sort((a, b) =>
      a.gpa < b.gpa ? -1 : 1,
    );
    for (const r of next) if (r.size <= 0n) throw new RangeError(`guest memory region ${r.name} at ${hex(r.gpa)} has no size`);
    for (let i = 1; i < next.length; i++) {
      const [a, b] = [next[i - 1]!, next[i]!];
      if (a.gpa + a.size > b.gpa)
        throw new RangeError(`guest memory region ${b.name} at ${hex(b.gpa)} overlaps ${a.name} [${hex(a.gpa)}, ${hex(a.gpa + a.size)})`);
    }
    const dropped = removed.filter((r) => this.regions.includes(r));
    const fresh = added.filter((r) => !removed.includes(r));
    const before = this.regions;
    this.regions = next;
    const told: MemoryListener[] = [];
    try {
      for (const l of this.listeners) {
        told.push(l);
        for (const r of dropped) l.regionRemove(r);
        for (const r of fresh) l.regionAdd(r);
        l.commit();
      }
    } catch (e) {
      // A listener refused (e.g. the DMA planner over budget): put the old map back everywhere, then report.
      this.regions = before;
      for (const l of told) {
        for (const r of fresh) l.regionRemove(r);
        for (const r of dropped) l.regionAdd(r);
        try {
          l.commit();
        } catch {
          // The original refusal is what the caller needs to see.
        }
      }
      throw e;
    }
    for (const r of dropped) this.views.delete(r);
  }

  /** Registers the bytes behind a region so the VMM can read and write guest memory there. */
  setView(r: MemoryRegion, bytes: Uint8Array): void {
    this.views.set(r, bytes);
  }

  /** The bytes at [gpa, gpa+len), which must lie inside one RAM region. */
  bytes(gpa: bigint, len: number): Uint8Array {
    const r = this.regions.find((x) => gpa >= x.gpa && gpa + BigInt(len) <= x.gpa + x.size);
    const v = r && this.views.get(r);
    if (!r || !v) throw new RangeError(`guest range [${hex(gpa)}, ${hex(gpa + BigInt(len))}) is not inside guest RAM`);
    const off = Number(gpa - r.gpa);
    return v.subarray(off, off + len);
  }

  write(gpa: bigint, data: Uint8Array): void {
    this.bytes(gpa, data.length).set(data);
  }

  /** Guest RAM below `limit` (the highest address a payload may use). */
  ramEnd(below: bigint): bigint {
    let end = 0n;
    for (const r of this.regions) if (r.kind === 'ram' && r.gpa < below) end = r.gpa + r.size > end ? r.gpa + r.size : end;
    return end;
  }
}
