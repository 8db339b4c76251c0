// What every memory-change-under-traffic rig test checks first: the L1 script
// ran to its end, the guests got their VF going, every change was answered,
// frames flowed before the first change and the peer still sent after the
// last, and the changes were the ones planned, in order.
import type { Test } from 'tap';
import type { Change } from '../l1/stream-vm.js';

export interface ChangeRun {
  error?: string;
  changeError?: string;
  flowing: boolean;
  peerRunningAfterChanges: boolean;
  changes: Change[];
}

/** `who`: the guests as the messages name them ('the guest', 'both guests'), and who answers the changes. */
export function checkChangeRun(
  t: Test,
  exitCode: number,
  o: ChangeRun,
  planned: readonly string[],
  who: { guests: string; answerer: string },
): void {
  t.equal(exitCode, 0, 'the L1 script ran to the end');
  t.equal(o.error, undefined, `${who.guests} got ${who.guests === 'the guest' ? 'its' : 'their'} VF going`);
  t.equal(o.changeError, undefined, `${who.answerer} answered every change`);
  t.ok(o.flowing, `frames reached ${who.guests} before the first change`);
  t.ok(o.peerRunningAfterChanges, 'every change was made while the peer was still sending');
  t.same(
    o.changes.map((c) => c.name),
    planned,
  );
}
