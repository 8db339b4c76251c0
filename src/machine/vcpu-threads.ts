// The VMM side of the vCPU threads: one worker per vCPU, started while the
// machine is still being assembled (a thread takes a while to load its
// modules, seconds in the rig); each enters KVM_RUN only once `go` is set.
// Owns the control block they share, kicks them out of KVM_RUN to stop or
// pause, serves their bus-rpc calls, and turns how they ended into a result.
import { Worker } from 'node:worker_threads';
import { pinCore } from '../memory/pin-core.js';
import type { UndoStack } from '../sys/undo.js';
import type { Bus } from '../vmm/bus.js';
import { newRpcSlot, serveRpc } from '../vmm/bus-rpc.js';
import { exitProfileOn, exitProfileReport } from '../vmm/exit-profile.js';
import { CONTROL, controlBytes, GO, STOP_REASON, VCPU_STATE_NAMES, vcpuWords, type VcpuStateName } from '../vmm/run-loop.js';
import { trace } from '../vmm/trace.js';
import type { Vcpu } from '../vmm/vcpu.js';
import type { DeviceSpec } from './devices.js';
import type { VcpuMessage, VcpuThreadData } from './vcpu-thread.js';

export type MachineResult =
  | { kind: 'exit'; status: number; vcpu: number; exits: number }
  | { kind: 'reset'; vcpu: number; exits: number }
  | { kind: 'panic'; line: string; exits: number }
  | { kind: 'poweroff'; exits: number }
  | { kind: 'fault'; report: string; exits: number }
  | { kind: 'stopped'; why: string; exits: number };

/** What the threads run against: the devices each builds, and the VMM thread's buses that serve the rest. */
export interface ThreadDevices {
  devices: readonly DeviceSpec[];
  pio: Bus;
  mmio: Bus;
}

const VCPU_YOUNG_GEN_MB = 4;

/** Every vCPU thread of this process not yet ended. */
const live = new Set<Promise<void>>();

export class VcpuThreads {
  /** The stop block, then each vCPU's "released" word (see vcpu-thread.ts) and state word. */
  readonly control: SharedArrayBuffer;
  private readonly ctl: Int32Array;
  /** Thread ids to kick, while each thread is alive. */
  private readonly threads: (bigint | undefined)[] = [];
  private readonly ends: (VcpuMessage & { type: 'done' })[] = [];
  private readonly errors: string[] = [];
  private done: Promise<void> = Promise.resolve();
  private stopWhy = '';
  private panicLine = '';

  private readonly count: number;

  private constructor(private vcpus: readonly Vcpu[]) {
    this.count = vcpus.length;
    this.control = new SharedArrayBuffer(controlBytes(vcpus.length));
    this.ctl = new Int32Array(this.control);
  }

  /** One worker thread per vCPU; each loads, reports its thread id, and waits for `go`. */
  static start(vcpus: readonly Vcpu[], mmapSize: number, on: ThreadDevices, undo: UndoStack): VcpuThreads {
    const t = new VcpuThreads(vcpus);
    // A machine closed before it ran lets its threads end without touching their vCPU fds, which close next
    // (a thread still loading has not mapped its kvm_run yet); after this nothing kicks the vCPUs.
    undo.defer(() => {
      if (Atomics.compareExchange(t.ctl, CONTROL.go, GO.wait, GO.closed) === GO.wait) Atomics.notify(t.ctl, CONTROL.go);
      t.vcpus = [];
    });
    pinCore.kickInit();
    t.done = Promise.all(vcpus.map((v) => t.spawn(v, mmapSize, on))).then(() => undefined);
    return t;
  }

  /**
   * Resolves once every vCPU thread of this process has ended, or after `ms`. A machine refused while
   * its threads still load lets them end on their own; node exiting under a worker that is loading a
   * native addon can abort the process instead of exiting with the refusal's status.
   */
  static async settled(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((r) => (timer = setTimeout(r, ms)));
    await Promise.race([Promise.all(live), late]).finally(() => clearTimeout(timer));
  }

  private spawn(v: Vcpu, mmapSize: number, on: ThreadDevices): Promise<void> {
    const ended = this.spawnThread(v, mmapSize, on);
    live.add(ended);
    void ended.then(() => live.delete(ended));
    return ended;
  }

  private spawnThread(v: Vcpu, mmapSize: number, on: ThreadDevices): Promise<void> {
    return new Promise<void>((resolve) => {
      const rpc = newRpcSlot();
      const data: VcpuThreadData = { fd: v.fd, index: v.index, mmapSize, control: this.control, devices: [...on.devices], rpc };
      // A vCPU loop allocates little but steadily; V8's default young generation (tens of MiB a thread)
      // would be resident in full for nothing.
      const w = new Worker(new URL('./vcpu-thread.js', import.meta.url), {
        workerData: data,
        resourceLimits: { maxYoungGenerationSizeMb: VCPU_YOUNG_GEN_MB },
      });
      w.on('message', (m: VcpuMessage) => {
        if (m.type === 'ready') {
          trace(`vCPU ${v.index} thread ready`);
          this.threads[v.index] = m.thread;
          if (Atomics.load(this.ctl, CONTROL.stop) || Atomics.load(this.ctl, CONTROL.pause)) this.kick(v.index);
        } else if (m.type === 'io') serveRpc(rpc, on.pio, on.mmio);
        else if (m.type === 'stop') this.kickAll();
        else if (m.type === 'panic') {
          this.panicLine = m.line;
          this.kickAll();
        } else {
          // The thread waits for this before it ends, so a kick never targets a dead thread.
          this.ends.push(m);
          this.threads[v.index] = undefined;
          const released = vcpuWords(v.index).released;
          Atomics.store(this.ctl, released, 1);
          Atomics.notify(this.ctl, released);
        }
      });
      w.on('error', (e) => {
        this.errors.push(`vCPU ${v.index} thread: ${e.message}`);
        this.threads[v.index] = undefined;
        this.stop('a vCPU thread failed');
      });
      w.on('exit', () => {
        this.threads[v.index] = undefined;
        resolve();
      });
    });
  }

  private go(): void {
    if (Atomics.compareExchange(this.ctl, CONTROL.go, GO.wait, GO.run) === GO.wait) Atomics.notify(this.ctl, CONTROL.go);
  }

  /** Lets every thread into KVM_RUN and waits until all have ended: the guest exited, faulted, or stop() was called. */
  async run(): Promise<MachineResult> {
    this.go();
    await this.done;
    const ends = this.ends;
    const exits = ends.reduce((n, e) => n + e.exits, 0);
    if (exitProfileOn) process.stderr.write(exitProfileReport(ends.map((e) => e.profile ?? [])) + '\n');
    const fault = ends.find((e) => e.end.kind === 'fault');
    const reason = Atomics.load(this.ctl, CONTROL.reason);
    if (this.errors.length) return { kind: 'fault', report: this.errors.join('; '), exits };
    if (reason === STOP_REASON.guestExit)
      return { kind: 'exit', status: Atomics.load(this.ctl, CONTROL.code), vcpu: Atomics.load(this.ctl, CONTROL.vcpu), exits };
    if (reason === STOP_REASON.guestReset) return { kind: 'reset', vcpu: Atomics.load(this.ctl, CONTROL.vcpu), exits };
    if (reason === STOP_REASON.guestPanic) return { kind: 'panic', line: this.panicLine, exits };
    if (reason === STOP_REASON.guestPoweroff) return { kind: 'poweroff', exits };
    if (fault && fault.end.kind === 'fault') return { kind: 'fault', report: fault.end.report, exits };
    return { kind: 'stopped', why: this.stopWhy || 'stopped', exits };
  }

  /** Stops every vCPU (from a signal handler, a timeout, or an error). */
  stop(why: string): void {
    if (Atomics.compareExchange(this.ctl, CONTROL.stop, 0, 1) === 0) {
      Atomics.store(this.ctl, CONTROL.reason, STOP_REASON.host);
      this.stopWhy = why;
    }
    // A paused vCPU waits on the pause word, not in KVM_RUN.
    Atomics.notify(this.ctl, CONTROL.pause);
    this.kickAll();
  }

  /** Asks every vCPU to leave KVM_RUN and wait; `settled` says when all have. */
  pause(): void {
    Atomics.store(this.ctl, CONTROL.pause, 1);
    this.kickAll();
  }

  resume(): void {
    Atomics.store(this.ctl, CONTROL.pause, 0);
    Atomics.notify(this.ctl, CONTROL.pause);
  }

  get pausing(): boolean {
    return Atomics.load(this.ctl, CONTROL.pause) !== 0;
  }

  /** Every vCPU is out of KVM_RUN for good or for the pause: paused, ended, or not yet let in. */
  get settled(): boolean {
    return this.states().every((s) => s !== 'running');
  }

  /** What each vCPU's thread is doing now. */
  states(): VcpuStateName[] {
    return Array.from({ length: this.count }, (_, i) => VCPU_STATE_NAMES[Atomics.load(this.ctl, vcpuWords(i).state)] ?? 'loading');
  }

  private kickAll(): void {
    for (const v of this.vcpus) this.kick(v.index);
  }

  private kick(i: number): void {
    const v = this.vcpus[i];
    if (!v) return; // released: the vCPU is closed or about to be
    v.requestImmediateExit();
    const t = this.threads[i];
    if (t !== undefined) pinCore.threadKick(t);
  }
}
