// The steps of a live update, in order, and what undoing each takes. The
// new process is started and set up before the guest is paused (as QEMU's
// cpr-transfer does), so the pause covers only pause, save, restore, commit
// and start. The point of no return is the new process taking the hand-over
// token (token.ts), after `go` and before its vCPUs run: until then the old
// process can take the VM back whatever step failed, and after it never runs
// the guest again.
import type { StepTime } from './channel.js';

export const STEPS = ['check', 'spawn', 'prepare', 'pause', 'save', 'restore', 'commit', 'start'] as const;
export type Step = (typeof STEPS)[number];

/** Who runs each step: the old process, or the new one while the old waits. */
export const STEP_SIDE: Record<Step, 'old' | 'new'> = {
  check: 'old',
  spawn: 'old',
  prepare: 'new',
  pause: 'old',
  save: 'old',
  restore: 'new',
  commit: 'old',
  start: 'new',
};

/** What each step is, for messages. */
export const STEP_TEXT: Record<Step, string> = {
  check: 'checking the VM can be handed over',
  spawn: 'starting the new process',
  prepare: 'the new process setting up (record, VM, vCPUs, RAM)',
  pause: 'pausing the vCPUs',
  save: 'saving the VM state',
  restore: 'the new process restoring the state',
  commit: 'handing over',
  start: 'the new process starting the vCPUs',
};

export type RollbackAction = 'kill' | 'thaw' | 'resume';

/**
 * What the old process does when step `failed` fails, in order: end the new
 * process (and wait until it is gone), undo what the freeze did to the VM
 * (an assigned device's DMA space), let the vCPUs run. `newOwns`: the new
 * process took the token, so it may have run the guest: nothing is undone.
 */
export function rollback(failed: Step, newOwns: boolean): RollbackAction[] {
  if (newOwns) return [];
  const at = STEPS.indexOf(failed);
  const actions: RollbackAction[] = [];
  if (at >= STEPS.indexOf('spawn')) actions.push('kill');
  if (at >= STEPS.indexOf('save')) actions.push('thaw');
  if (at >= STEPS.indexOf('pause')) actions.push('resume');
  return actions;
}

/** The parts of one step, timed as they run (each process's own, reported beside the step). */
export class PartClock {
  readonly list: { name: string; ms: number }[] = [];
  private t = process.hrtime.bigint();
  mark(name: string): void {
    const now = process.hrtime.bigint();
    this.list.push({ name, ms: ms(now - this.t) });
    this.t = now;
  }
}

/** Times the steps as they run: begin() ends the step before. */
export class StepClock {
  readonly times: StepTime[] = [];
  private current: { step: Step; t0: bigint } | undefined;
  /** The last step begun: where a failure happened. */
  reached: Step | undefined;

  constructor(private readonly now: () => bigint = () => process.hrtime.bigint()) {}

  begin(step: Step): void {
    if (this.reached && STEPS.indexOf(step) <= STEPS.indexOf(this.reached))
      throw new Error(`live update step ${step} after ${this.reached}: the steps run in order`);
    this.end();
    this.current = { step, t0: this.now() };
    this.reached = step;
  }

  /** Ends the running step; `parts` are the new process's own times for it. */
  end(parts?: StepTime['parts']): void {
    if (!this.current) return;
    const { step, t0 } = this.current;
    this.times.push({ step, side: STEP_SIDE[step], ms: ms(this.now() - t0), ...(parts?.length ? { parts } : {}) });
    this.current = undefined;
  }
}

export function ms(ns: bigint): number {
  return Math.round(Number(ns) / 1e4) / 100;
}
