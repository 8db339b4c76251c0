// pin-core never takes node down: every export, given wrong types, numbers
// out of range, too few arguments or a handle that is not open, throws a JS
// error of the expected class with a message naming the argument. The cases
// (test/support/pin-core-abuse.ts) run here and, since an abort inside the
// addon would end this process before any assertion, in a child too.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { pinCore } from '../../src/memory/pin-core.js';
import { cases, verdict } from '../support/pin-core-abuse.js';

t.test('every export of the addon has cases', async (t) => {
  const covered = new Set(cases().map((c) => c.fn));
  const exported = Object.keys(pinCore).sort();
  t.same(
    exported.filter((name) => !covered.has(name)),
    [],
    'an export without a case: add its wrong arguments to test/support/pin-core-abuse.ts',
  );
  t.same(
    [...covered].filter((name) => !exported.includes(name)),
    [],
    'a case for a name the addon does not export',
  );
});

t.test('each call throws what it should, in this process', async (t) => {
  for (const c of cases()) t.equal(verdict(c), undefined, `${c.fn}(${c.what})`);
  t.equal(pinCore.version(), pinCore.version(), 'the addon still answers');
});

t.test('a child running every case exits 0 (an abort or a crash would show here)', async (t) => {
  const script = fileURLToPath(new URL('../support/pin-core-abuse.js', import.meta.url));
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 60_000 });
  t.equal(r.signal, null, `no signal (stderr: ${r.stderr.slice(-2000)})`);
  t.equal(r.status, 0, `exit code 0 (stderr: ${r.stderr.slice(-2000)})`);
  t.match(r.stdout, /^(\d+) of \1 cases as expected$/m);
});
