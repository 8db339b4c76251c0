// The host side of L1's heartbeat (rig/l1/init.sh): decides when L1 has
// stopped making progress. Two kinds of stall:
// - silent: no heartbeat line for `silenceMs` (L1's timers or scheduler are
//   gone; the heartbeat sleeps on a timer, so a lost clock event shows here);
// - idle: heartbeats arrive but for `idleMs` the command printed nothing and
//   L1's CPUs stayed idle (a task waiting for an event that never comes).
//   Off unless asked for: a user's own command may idle on purpose.
// Pure logic; rig.ts feeds it the port's bytes and the clock.

export interface Heartbeat {
  at: number; // host ms
  uptime: number; // L1 seconds, from its clocksource
  busy: number; // /proc/stat ticks (USER_HZ) spent not idle, all CPUs
  idle: number;
}

export interface WatchOptions {
  silenceMs: number;
  idleMs?: number;
  /** Busy ticks per second (all CPUs, USER_HZ 100) under which L1 counts as idle; an idle L1 with its heartbeat shows about 2. */
  idleBusyPerSec?: number;
}

export class StallWatch {
  private beats: Heartbeat[] = [];
  private lastActivity: number;
  private partial = '';
  readonly dump: string[] = [];
  dumpDone = false;

  constructor(
    private readonly o: WatchOptions,
    private readonly start: number,
  ) {
    this.lastActivity = start;
  }

  /** Bytes from the heartbeat port. */
  feed(text: string, now: number): void {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    for (const l of lines) {
      const m = /^hb (\d+(?:\.\d+)?) (\d+) (\d+)$/.exec(l);
      if (m) {
        this.beats.push({ at: now, uptime: Number(m[1]), busy: Number(m[2]), idle: Number(m[3]) });
        if (this.beats.length > 600) this.beats.splice(0, this.beats.length - 600);
      } else if (l.startsWith('dump ')) {
        if (l === 'dump end') this.dumpDone = true;
        else this.dump.push(l.slice(5));
      }
    }
  }

  /** The command printed something. */
  activity(now: number): void {
    this.lastActivity = now;
  }

  last(): Heartbeat | undefined {
    return this.beats[this.beats.length - 1];
  }

  /** Why L1 counts as stalled at `now`, or undefined. */
  check(now: number): string | undefined {
    const last = this.last();
    const since = now - (last?.at ?? this.start);
    if (since >= this.o.silenceMs) {
      return last
        ? `no heartbeat from L1 for ${Math.round(since / 1000)} s (the last one at L1 uptime ${last.uptime.toFixed(1)} s)`
        : `no heartbeat from L1 ${Math.round(since / 1000)} s after boot`;
    }
    if (this.o.idleMs === undefined || now - this.lastActivity < this.o.idleMs) return undefined;
    // The first heartbeat at or after the window's start against the latest one.
    const from = this.beats.find((b) => b.at >= now - this.o.idleMs!);
    if (!from || !last || last === from) return undefined;
    const secs = (last.at - from.at) / 1000;
    if (secs < (this.o.idleMs / 1000) * 0.8) return undefined;
    const rate = (last.busy - from.busy) / secs;
    if (rate > (this.o.idleBusyPerSec ?? 5)) return undefined;
    return `L1 idle for ${Math.round((now - this.lastActivity) / 1000)} s (${rate.toFixed(1)} busy ticks/s) with no output from the command`;
  }
}
