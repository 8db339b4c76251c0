import t from 'tap';
import { intFlag, parseFlags } from '../../src/cli/args.js';

t.test('flags end at -- and the command keeps its own flags', async (t) => {
  const p = parseFlags(['--kernel', 'compat', '--uid=1000', '--', 'sh', '-c', 'echo --kernel'], ['kernel', 'uid']);
  t.equal(p.flags.get('kernel'), 'compat');
  t.equal(intFlag(p, 'uid'), 1000);
  t.same(p.rest, ['sh', '-c', 'echo --kernel']);
});

t.test('unknown flag, missing value and non-numeric ints are usage errors', async (t) => {
  t.throws(() => parseFlags(['--bogus', '1'], ['kernel']), { name: 'UsageError', message: /unknown option --bogus/ });
  t.throws(() => parseFlags(['--kernel'], ['kernel']), /--kernel needs a value/);
  t.throws(() => intFlag(parseFlags(['--uid', 'root'], ['uid']), 'uid'), /--uid takes a whole number, got 'root'/);
});
