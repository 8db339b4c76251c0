// --help on every command prints its usage on stdout and exits 0; --version
// prints package.json's version, from the bundle and from the compiled tree.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { cli } from '../support/cli.js';
import { CLI } from '../support/rig.js';

const TREE_CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../../../package.json', import.meta.url)), 'utf8')) as { version: string };

t.test('every command has --help and -h', async (t) => {
  for (const [cmd, head] of [
    [[], /^usage: pinion <command>/],
    [['run'], /^usage: pinion run --payload FILE/],
    [['ctl'], /^usage: pinion ctl PATH <verb>/],
    [['open'], /^usage: pinion open --user UID/],
    [['memlock'], /^usage: pinion memlock plan/],
    [['memlock', 'plan'], /^usage: pinion memlock plan/],
    [['memlock', 'status'], /^usage: pinion memlock plan .* \| pinion memlock status/],
    [['rig'], /^usage: pinion rig \[options\] -- <command\.\.\.>/],
    [['demo'], /^usage: pinion demo \[--kernel type1\|compat\|both\]/],
  ] as const) {
    for (const flag of ['--help', '-h']) {
      const r = await cli([...cmd, flag]);
      t.equal(r.code, 0, `pinion ${[...cmd, flag].join(' ')}: exit 0`);
      t.match(r.stdout, head);
      t.equal(r.stderr, '');
    }
  }
  const late = await cli(['run', '--payload', 'x', '--bogus', '--help']);
  t.equal(late.code, 0, '--help wins over a mistake before it');
});

t.test('--version is the package version, from the bundle and from dist/src', async (t) => {
  for (const script of [CLI, TREE_CLI]) {
    const r = await cli(['--version'], {}, script);
    t.equal(r.code, 0);
    t.equal(r.stdout, `${pkg.version}\n`, script);
  }
});
