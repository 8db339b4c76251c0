// A command run in L1 gives back its exact bytes on stdout and stderr and its
// exact exit code; --uid and --memlock apply to it.
import t from 'tap';
import { inRig } from '../support/rig.js';

t.test('stdout, stderr and exit code come back exactly', async (t) => {
  const r = await inRig('type1', ['sh', '-c', 'printf "line1\\n\\000bin\\r\\n\\377"; printf "to stderr\\n" >&2; exit 42']);
  t.equal(r.exitCode, 42);
  t.same([...r.stdout], [...Buffer.from('line1\n\0bin\r\n\xff', 'latin1')], 'stdout bytes unchanged (no tty translation)');
  t.equal(r.stderr.toString(), 'to stderr\n');
});

t.test('a megabyte of output arrives whole, with the checkout at the same path', async (t) => {
  const r = await inRig('type1', ['sh', '-c', 'pwd; head -c 1048576 /dev/zero | tr "\\000" x']);
  t.equal(r.exitCode, 0);
  const [pwd, data] = [r.stdout.subarray(0, r.stdout.indexOf(10)).toString(), r.stdout.subarray(r.stdout.indexOf(10) + 1)];
  t.equal(pwd, process.cwd(), 'cwd in L1 is the host cwd');
  t.equal(data.length, 1048576);
  t.ok(
    data.every((b) => b === 0x78),
    'every byte is x',
  );
});

t.test('--uid and --memlock apply to the command', async (t) => {
  const r = await inRig('type1', ['sh', '-c', 'id -u; id -g; id -G; ulimit -l; ulimit -H -l'], { uid: 1000, memlockKiB: 2048 });
  t.equal(r.exitCode, 0, r.stderr.toString());
  t.equal(r.stdout.toString(), '1000\n1000\n1000\n2048\n2048\n');
});
