// The channel between the old process and the new in a live update: the
// socketpair spawn makes for a stdio 'pipe' (fd 3 in the new process), one
// JSON message per line. Each side sends what its step has and waits for the
// message the next step needs; a refusal from the other side, the channel
// closing, the other process ending or a timeout ends the wait with one line.
import type { Socket } from 'node:net';
import type { Json } from './wire.js';

/** A step's time as the side that ran it measured it, with its parts where they tell something. */
export interface StepTime {
  step: string;
  side: 'old' | 'new';
  ms: number;
  parts?: { name: string; ms: number }[];
}

/** What the locked-memory counters of a process said at a step (VmLck: mm->locked_vm, VmPin: mm->pinned_vm). */
export interface Charge {
  at: string;
  pid: number;
  vmLckKiB: number;
  vmPinKiB: number;
}

/** What the new process tells of itself: its steps so far and its locked memory. */
export interface PeerReport {
  steps: StepTime[];
  charge: Charge[];
}

export type Message =
  /** old -> new, right after the spawn: the record (record.ts). */
  | { type: 'prepare'; record: Json }
  /** new -> old: set up, waiting for the state. */
  | { type: 'ready'; report: PeerReport }
  /** old -> new, at the pause (state.ts). */
  | { type: 'state'; state: Json }
  /** new -> old: the state is in the new VM, which waits for go. */
  | { type: 'restored'; report: PeerReport }
  /** old -> new: run the VM; the old process will not resume it. */
  | { type: 'go' }
  /** old -> new: end without running the VM. */
  | { type: 'abort'; why: string }
  /** new -> old: every vCPU is in KVM_RUN since `at` (process.hrtime.bigint(), CLOCK_MONOTONIC: one clock for both). */
  | { type: 'running'; at: string; report: PeerReport }
  /** either way: this side gives up at `step`. */
  | { type: 'refused'; step: string; error: string };

export type MessageType = Message['type'];

export class ChannelError extends Error {
  override readonly name = 'ChannelError';
  constructor(
    message: string,
    /** The other side said it gave up (its own step and reason are in the message). */
    readonly refused = false,
  ) {
    super(message);
  }
}

/** The largest message a side accepts: a record for 64 vCPUs is well under it. */
const MAX_LINE = 16 << 20;

export class Channel {
  private buf = '';
  private readonly queue: Message[] = [];
  private waiter: ((m: Message | ChannelError) => void) | undefined;
  private ended: ChannelError | undefined;

  private broken = false;
  private readonly closedByPeer: Promise<void>;

  constructor(
    private readonly socket: Socket,
    /** Who is at the other end, for messages ("the new process (pid 123)"). */
    private readonly peer: string,
    /** Turns a broken channel into the reason behind it (the other process exited, and how). */
    private readonly explain: (why: string) => Promise<string> = async (why) => why,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => this.onData(d));
    this.closedByPeer = new Promise((resolve) => {
      socket.on('end', () => (resolve(), this.breaks(`${peer} closed the channel`)));
      socket.on('close', () => (resolve(), this.breaks(`${peer} closed the channel`)));
    });
    socket.on('error', (e: NodeJS.ErrnoException) => this.breaks(`the channel to ${peer} failed: ${e.code ?? e.message}`));
  }

  private breaks(why: string): void {
    if (this.broken) return;
    this.broken = true;
    void this.explain(why).then((w) => this.fail(w));
  }

  /** Resolves once the other side closed its end (or after `ms`). */
  async peerClosed(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.closedByPeer, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }

  send(m: Message): void {
    if (this.ended) throw this.ended;
    this.socket.write(JSON.stringify(m) + '\n');
  }

  /** The next message, which must be of type `expect`; rejects with a ChannelError naming `step` otherwise. */
  next<T extends MessageType>(expect: T, step: string, timeoutMs: number): Promise<Extract<Message, { type: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new ChannelError(`${this.peer} sent no '${expect}' within ${timeoutMs} ms (${step})`));
      }, timeoutMs);
      const take = (m: Message | ChannelError): void => {
        clearTimeout(timer);
        this.waiter = undefined;
        if (m instanceof ChannelError) reject(m);
        else if (m.type === 'refused') reject(new ChannelError(`${this.peer} refused at ${m.step}: ${m.error}`, true));
        else if (m.type !== expect) reject(new ChannelError(`${this.peer} sent '${m.type}' where '${expect}' was due (${step})`));
        else resolve(m as Extract<Message, { type: T }>);
      };
      const queued = this.queue.shift();
      if (queued) take(queued);
      else if (this.ended) take(this.ended);
      else this.waiter = take;
    });
  }

  /** Ends every wait, now and later, with `why` (the other process exited, say). The first reason stays. */
  fail(why: string): void {
    this.ended ??= new ChannelError(why);
    this.waiter?.(this.ended);
  }

  /** Stops reading and lets the process exit without it. */
  close(): void {
    this.ended ??= new ChannelError('the channel is closed');
    this.socket.destroy();
  }

  /** Keeps the process alive only while something else does. */
  unref(): void {
    this.socket.unref();
  }

  private onData(d: string): void {
    this.buf += d;
    if (this.buf.length > MAX_LINE) return this.fail(`${this.peer} sent a message over ${MAX_LINE} bytes`);
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      let m: Message;
      try {
        m = JSON.parse(line) as Message;
      } catch {
        return this.fail(`${this.peer} sent a line that is not JSON (${line.length} bytes)`);
      }
      if (typeof m !== 'object' || m === null || typeof m.type !== 'string') return this.fail(`${this.peer} sent a message without a type`);
      if (this.waiter) this.waiter(m);
      else this.queue.push(m);
    }
  }
}
