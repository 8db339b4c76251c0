// The old process's side of a live update, step by step (steps.ts): check
// the VM can go, start the new process with the fds and the record, wait
// until it is set up, pause, save, wait until the new VM holds the state,
// tell it to run, hand the control API over, wait until its vCPUs run. A
// failure before `go` ends the new process, waits until it is gone, and
// lets the guest run on here; the answer names the step.
import { processCharge } from '../memlock/status.js';
import type { MachineImage, MachineState } from '../machine/handover.js';
import type { Channel, Charge, StepTime } from './channel.js';
import { buildRecord, encodeRecord, type ControlRecord } from './record.js';
import { encodeState, renameEventfds } from './state.js';
import { ms, PartClock, rollback, STEP_SIDE, STEP_TEXT, StepClock, type Step } from './steps.js';
import { HandoverToken } from './token.js';

/** The VM as the old side drives it (the control API's MachineControl gives it; tests give a fake). */
export interface OutgoingVm {
  /** Why the VM cannot be handed over, with what would make it possible. */
  refusal(): string | undefined;
  image(): MachineImage;
  /** The control API's socket and its own view, when the VM has an API. */
  api(): { path: string; fd: number; control: ControlRecord } | undefined;
  /** Takes every vCPU out of KVM_RUN (a hold beside any other). */
  pause(): Promise<void>;
  /**
   * With the vCPUs paused, before the state is read: readies the VM's kernel
   * objects for another process (an assigned device's DMA space: type1's
   * VADDR invalidate). thaw() undoes it and must be harmless without it.
   */
  freeze(): void;
  /** vCPU 0's TSC as its guest reads it, paused. */
  guestTsc(): bigint;
  /** `mark` times its parts as it reads them. */
  save(mark: (part: string) => void): MachineState;
  thaw(): void;
  /** Lets the vCPUs run again (drops the hold pause() took). */
  resume(): void;
  /**
   * Once the new process runs the VM: its devices are that process's (this one closes without
   * touching them), and the control API's socket answers there from now on.
   */
  handedTo(pid: number): void;
}

/** The new process, started with the fds (peer.ts). */
export interface Peer {
  readonly pid: number;
  readonly channel: Channel;
  /** SIGKILL, resolved once the process is gone: true if it was still running. */
  kill(): Promise<boolean>;
  readonly alive: boolean;
  /** This process may now exit while the new one runs on (the channel closes: the new process then serves the API). */
  detach(): void;
}

export type StartPeer = (fds: readonly number[]) => Promise<Peer>;

/** The hand-over token as the old side uses it (token.ts; tests give a fake). */
export interface OldToken {
  readonly fd: number;
  takeForOld(): boolean;
  close(): void;
}

export interface UpdateTimeouts {
  /** For the new process to load and set up: seconds under the rig's emulation. */
  readyMs: number;
  restoredMs: number;
  runningMs: number;
}

export const UPDATE_TIMEOUTS: UpdateTimeouts = { readyMs: 60_000, restoredMs: 10_000, runningMs: 10_000 };

export interface UpdateReport {
  from: number;
  to: number;
  /** Guest-visible: from the pause request until every vCPU of the new VM was in KVM_RUN. */
  pauseMs: number;
  /** The guest's TSC rate (KVM_GET_TSC_KHZ of vCPU 0), for a guest that clocks the pause itself. */
  tscKhz: number;
  /** vCPU 0's TSC during the pause, as the guest reads it (decimal): the pause is the guest's gap around it. */
  guestTsc: string;
  steps: (StepTime & { paused: boolean })[];
  /** VmLck / VmPin of both processes along the way. */
  charge: Charge[];
}

export class UpdateError extends Error {
  override readonly name = 'UpdateError';
  constructor(
    message: string,
    readonly step: Step,
    /** 409: refused up front, nothing was touched; 500: failed on the way. */
    readonly status: 409 | 500,
    /** The new process had taken the VM (token.ts): this process must not run it again, and ends its run. */
    readonly released = false,
    /** Where the VM runs on when released: the new process, alive; undefined when it died with it. */
    readonly to?: number,
  ) {
    super(message);
  }
}

const PAUSED: ReadonlySet<Step> = new Set(['pause', 'save', 'restore', 'commit', 'start']);

export async function handOver(
  vm: OutgoingVm,
  start: StartPeer,
  t: UpdateTimeouts = UPDATE_TIMEOUTS,
  newToken: () => OldToken = () => HandoverToken.create(),
): Promise<UpdateReport> {
  const clock = new StepClock();
  const charge: Charge[] = [];
  let peer: Peer | undefined;
  let token: OldToken | undefined;
  try {
    clock.begin('check');
    const why = vm.refusal();
    if (why) throw new UpdateError(`live update refused: ${why}; the VM is untouched`, 'check', 409);
    charge.push(own('old: before'));
    const api = vm.api();
    token = newToken();
    const { record, fds } = buildRecord(vm.image(), { pid: process.pid, build: process.argv[1] ?? process.execPath }, token.fd, api);

    clock.begin('spawn');
    peer = await start(fds);

    clock.begin('prepare');
    peer.channel.send({ type: 'prepare', record: encodeRecord(record) });
    const ready = await peer.channel.next('ready', 'prepare', t.readyMs);
    clock.end(partsOf(ready.report.steps, 'prepare'));
    charge.push(...ready.report.charge);

    clock.begin('pause');
    const pausedAt = process.hrtime.bigint();
    await vm.pause();

    clock.begin('save');
    const parts = new PartClock();
    vm.freeze();
    parts.mark('freeze');
    const tsc = vm.guestTsc();
    const saved = vm.save((part) => parts.mark(part));
    const state = encodeState(
      renameEventfds(saved, (fd, bdf) => {
        const i = fds.indexOf(fd);
        // The record went before the pause with the eventfds wired then.
        if (i < 0 || record.fds[i]!.kind !== 'eventfd')
          throw new Error(`the guest re-made ${bdf}'s MSI-X vectors after the record was written; retry the update`);
        return i;
      }),
    );
    parts.mark('encode');
    charge.push(own('old: paused'));
    clock.end(parts.list);

    clock.begin('restore');
    peer.channel.send({ type: 'state', state });
    const restored = await peer.channel.next('restored', 'restore', t.restoredMs);
    clock.end(partsOf(restored.report.steps, 'restore'));

    clock.begin('commit');
    peer.channel.send({ type: 'go' });

    clock.begin('start');
    const running = await peer.channel.next('running', 'start', t.runningMs);
    clock.end(partsOf(running.report.steps, 'start'));
    // The new process reports all its counters each time: keep the ones not seen yet.
    charge.push(...running.report.charge.filter((c) => !charge.some((x) => x.at === c.at && x.pid === c.pid)));
    // What this process still has charged once the new one runs (type1 moves the charge at the VADDR re-map, iommufd at CHANGE_PROCESS).
    charge.push(own('old: handed over'));
    vm.handedTo(peer.pid);
    peer.detach();
    token.close();
    return {
      from: process.pid,
      to: peer.pid,
      pauseMs: ms(BigInt(running.at) - pausedAt),
      tscKhz: saved.vcpus[0]?.tscKhz ?? 0,
      guestTsc: tsc.toString(),
      steps: clock.times.map((s) => ({ ...s, paused: PAUSED.has(s.step as Step) })),
      charge,
    };
  } catch (e) {
    const step = clock.reached ?? 'check';
    if (e instanceof UpdateError) throw e;
    const cause = oneLine((e as Error)?.message ?? String(e));
    const where = `live update failed at ${step} (${STEP_TEXT[step]}, in the ${STEP_SIDE[step]} process)`;
    // Before anything else: once this succeeds the new process can no longer start the vCPUs.
    const newOwns = token ? !token.takeForOld() : false;
    if (newOwns && peer?.alive) {
      // It runs the VM but did not say so in time: it is the VM's process now.
      vm.handedTo(peer.pid);
      peer.detach();
      throw new UpdateError(
        `${where}: ${cause}; the new process (pid ${peer.pid}) has taken the VM and runs on; this one ends`,
        step,
        500,
        true,
        peer.pid,
      );
    }
    if (newOwns)
      throw new UpdateError(
        `${where}: ${cause}; the new process had taken the VM and ended, so no process runs it: the VM is lost`,
        step,
        500,
        true,
      );
    const failed: string[] = [];
    let killed = false;
    for (const a of rollback(step, newOwns)) {
      try {
        if (a === 'kill' && peer) killed = await peer.kill();
        if (a === 'thaw') vm.thaw();
        if (a === 'resume') vm.resume();
      } catch (u) {
        failed.push(`${a} failed: ${oneLine((u as Error).message)}`);
      }
    }
    token?.close();
    const ended = killed ? `; the new process (pid ${peer!.pid}) was ended` : '';
    const after = failed.length ? `; undoing it, ${failed.join('; ')}` : `; the VM runs on in pid ${process.pid}`;
    throw new UpdateError(`${where}: ${cause}${ended}${after}`, step, 500);
  }
}

function own(at: string): Charge {
  const c = processCharge();
  return { at, pid: c.pid, vmLckKiB: c.vmLckKiB, vmPinKiB: c.vmPinKiB };
}

/** The new process's own times for `step`, as parts of the old side's. */
function partsOf(steps: StepTime[], step: string): StepTime['parts'] {
  return steps.find((s) => s.step === step)?.parts;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, '; ');
}
