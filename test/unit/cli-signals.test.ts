// The CLI's SIGINT/SIGTERM handling around a VM (src/cli/signals.ts): a
// signal stops a running VM, is absorbed once the VM has ended (its
// teardown goes on), and is the process's own again once released.
import t from 'tap';
import { stopOnSignals } from '../../src/cli/signals.js';

t.test('a signal stops the running VM, then is absorbed through the teardown, then released', async (t) => {
  const before = { int: process.listenerCount('SIGINT'), term: process.listenerCount('SIGTERM') };
  const stops: string[] = [];
  const s = stopOnSignals((why) => stops.push(why));
  process.emit('SIGTERM', 'SIGTERM');
  process.emit('SIGINT', 'SIGINT');
  t.same(stops, ['signal SIGTERM', 'signal SIGINT'], 'while it runs, each signal stops the VM with its name');
  s.ended();
  process.emit('SIGTERM', 'SIGTERM');
  t.same(stops, ['signal SIGTERM', 'signal SIGINT'], 'after the VM ended, a signal is absorbed');
  t.equal(
    process.listenerCount('SIGTERM'),
    before.term + 1,
    'and a handler is still there, so the default action (death) does not cut the teardown short',
  );
  s.release();
  t.same({ int: process.listenerCount('SIGINT'), term: process.listenerCount('SIGTERM') }, before, 'released: no handler of its own left');
});
