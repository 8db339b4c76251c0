// Bad input to `pinion rig`: one clear line, the right exit code, and no
// QEMU or run directory left behind.
import t from 'tap';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../support/rig.js';

// This test's rigs keep their run directories in a folder of their own, so
// another rig running beside it (a soak, a second checkout) is not counted.
const own = mkdtempSync(join(tmpdir(), 'pinion-bad-input-'));
t.teardown(() => rmSync(own, { recursive: true, force: true }));
const env = { TMPDIR: own };
const leftovers = () => ({
  qemu: spawnSync('pgrep', ['-f', `${own}/pinion-rig-`], { encoding: 'utf8' }).stdout.trim(),
  dirs: readdirSync(own).filter((n) => n.startsWith('pinion-rig-')),
});

t.test('unknown --kernel', async (t) => {
  const r = await runCli(['rig', '--kernel', 'type2', '--', 'true'], undefined, env);
  t.equal(r.code, 2);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.match(r.stderr, /unknown --kernel 'type2': use --kernel type1 .* or --kernel compat/);
});

t.test('no command, and a non-numeric --uid', async (t) => {
  const a = await runCli(['rig', '--kernel', 'type1'], undefined, env);
  t.equal(a.code, 2);
  t.match(a.stderr, /no command given: pinion rig \[options\] -- <command\.\.\.>/);
  const b = await runCli(['rig', '--uid', 'root', '--', 'id'], undefined, env);
  t.equal(b.code, 2);
  t.match(b.stderr, /--uid takes a whole number, got 'root'/);
});

t.test('command not found in L1', async (t) => {
  const r = await runCli(['rig', '--', 'no-such-command-pinion'], undefined, env);
  t.equal(r.code, 127);
  t.match(r.stderr, /command not found in L1: no-such-command-pinion/);
  t.same(leftovers(), { qemu: '', dirs: [] });
});

t.test('command timeout kills QEMU and cleans up', async (t) => {
  const start = Date.now();
  const r = await runCli(['rig', '--timeout', '3', '--', 'sleep', '120'], undefined, env);
  t.equal(r.code, 124);
  t.match(r.stderr, /command timed out after 3 s in L1: sleep 120 \(raise --timeout\)/);
  t.ok(Date.now() - start < 100_000, 'did not wait for the command');
  t.same(leftovers(), { qemu: '', dirs: [] }, 'no QEMU process and no run directory left');
});
