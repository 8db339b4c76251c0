// Where the vCPUs' exits to userspace go, when PINION_EXIT_PROFILE is set:
// per port or MMIO address and direction, how many and how long each took on
// the vCPU thread (from KVM_RUN's return to the next KVM_RUN). Printed when
// the VM ends; it tells which device model a guest is waiting on.
export const exitProfileOn = !!process.env.PINION_EXIT_PROFILE;

export interface ExitCount {
  key: string;
  count: number;
  ns: number;
}

export class ExitProfile {
  private readonly byKey = new Map<string, ExitCount>();

  record(kind: 'pio' | 'mmio', addr: number, size: number, write: boolean, ns: number): void {
    const key = `${kind} ${write ? 'write' : 'read '} 0x${addr.toString(16)}/${size}`;
    const e = this.byKey.get(key) ?? { key, count: 0, ns: 0 };
    e.count++;
    e.ns += ns;
    this.byKey.set(key, e);
  }

  entries(): ExitCount[] {
    return [...this.byKey.values()];
  }
}

/** The profiles of every vCPU merged, as lines for stderr (the `top` entries by time). */
export function exitProfileReport(all: ExitCount[][], top = 20): string {
  const merged = new Map<string, ExitCount>();
  for (const list of all)
    for (const e of list) {
      const m = merged.get(e.key) ?? { key: e.key, count: 0, ns: 0 };
      m.count += e.count;
      m.ns += e.ns;
      merged.set(e.key, m);
    }
  const rows = [...merged.values()].sort((a, b) => b.ns - a.ns);
  const total = rows.reduce((n, r) => n + r.ns, 0);
  const count = rows.reduce((n, r) => n + r.count, 0);
  const lines = [`pinion: exits to userspace: ${count}, ${(total / 1e6).toFixed(1)} ms on vCPU threads; by time:`];
  for (const r of rows.slice(0, top))
    lines.push(
      `pinion:   ${r.key.padEnd(28)} ${String(r.count).padStart(7)} x ${(r.ns / r.count / 1e3).toFixed(1).padStart(8)} us = ${(r.ns / 1e6).toFixed(1).padStart(8)} ms`,
    );
  return lines.join('\n');
}
