// The undo stack every owner of set-up steps uses (the machine's assembly, an
// assigned device's open): reverse order, a failing undo not stopping the
// rest, and the step's own error the one that comes out.
import t from 'tap';
import { UndoStack } from '../../src/sys/undo.js';

/** Steps that log what they make and undo; `failAt` throws in that step, after the ones before it. */
function steps(log: string[], failAt?: number): (undo: UndoStack) => string {
  return (undo) => {
    for (let i = 0; i < 4; i++) {
      if (i === failAt) throw new Error(`step ${i} failed`);
      log.push(`make ${i}`);
      undo.defer(() => void log.push(`undo ${i}`));
    }
    return 'built';
  };
}

t.test('a throw at any step undoes every step before it, last first, and rethrows that error', async (t) => {
  for (let failAt = 0; failAt < 4; failAt++) {
    const log: string[] = [];
    t.throws(() => UndoStack.build(steps(log, failAt)), new RegExp(`^step ${failAt} failed$`));
    const made = Array.from({ length: failAt }, (_, i) => `make ${i}`);
    const undone = Array.from({ length: failAt }, (_, i) => `undo ${failAt - 1 - i}`);
    t.same(log, [...made, ...undone], `failing at step ${failAt}`);
  }
});

t.test('on success nothing is undone until the owner releases the stack', async (t) => {
  const log: string[] = [];
  let kept: UndoStack | undefined;
  const v = UndoStack.build((undo) => {
    kept = undo;
    return steps(log)(undo);
  });
  t.equal(v, 'built');
  t.same(log, ['make 0', 'make 1', 'make 2', 'make 3']);
  t.equal(kept!.size, 4);
  kept!.release();
  t.same(log.slice(4), ['undo 3', 'undo 2', 'undo 1', 'undo 0']);
  kept!.release();
  t.equal(log.length, 8, 'a second release does nothing');
});

t.test('an undo that throws does not stop the ones before it', async (t) => {
  const log: string[] = [];
  const undo = new UndoStack();
  undo.defer(() => void log.push('fd closed'));
  undo.defer(() => {
    throw new Error('KVM_IRQFD(deassign): EBADF');
  });
  undo.defer(() => void log.push('bus range gone'));
  undo.defer(() => {
    throw new Error('second');
  });
  t.throws(() => undo.release(), /^second$/, 'release throws the first failure met, after running everything');
  t.same(log, ['bus range gone', 'fd closed']);
  t.equal(undo.size, 0);
});

t.test("a failing undo behind a failing step: the step's error comes out, the rest still undone", async (t) => {
  const log: string[] = [];
  t.throws(
    () =>
      UndoStack.build((undo) => {
        undo.defer(() => void log.push('undo 0'));
        undo.defer(() => {
          throw new Error('undo 1 failed');
        });
        undo.defer(() => void log.push('undo 2'));
        throw new Error('step 3 failed');
      }),
    /^step 3 failed$/,
  );
  t.same(log, ['undo 2', 'undo 0']);
});

t.test('own: returns what it is given and releases it with the rest', async (t) => {
  const log: string[] = [];
  const undo = new UndoStack();
  const fd = undo.own({ fd: 7 }, (x) => void log.push(`close ${x.fd}`));
  t.same(fd, { fd: 7 });
  undo.own('vm', (x) => void log.push(`close ${x}`));
  t.same(undo.unwind(), []);
  t.same(log, ['close vm', 'close 7']);
});
