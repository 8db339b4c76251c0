// What a command loads before it runs: --help, bad input, `pinion rig`,
// `memlock plan` and `memlock status` must work before the native addon is
// built, so no command module may import src/memory/pin-core.ts statically
// (it loads the addon when evaluated); the VM's modules come by import().
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const ADDON = 'src/memory/pin-core.ts';

const { metafile } = await build({
  absWorkingDir: root,
  entryPoints: ['src/cli.ts'],
  bundle: true,
  write: false,
  metafile: true,
  platform: 'node',
  format: 'esm',
  outdir: 'unused',
  external: ['koffi'],
  logLevel: 'silent',
});

/** The modules `entry` evaluates before its own code runs: its static imports, transitively. */
function staticGraph(entry: string): Set<string> {
  const seen = new Set<string>();
  const todo = [entry];
  while (todo.length) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    for (const i of metafile.inputs[f]?.imports ?? []) if (i.kind === 'import-statement' && !i.external) todo.push(i.path);
  }
  return seen;
}

t.test('no command module loads the addon eagerly', async (t) => {
  for (const m of [
    'src/cli.ts',
    'src/cli/run.ts',
    'src/cli/ctl.ts',
    'src/cli/open.ts',
    'src/cli/memlock.ts',
    'src/cli/rig.ts',
    'src/cli/demo.ts',
  ]) {
    t.ok(metafile.inputs[m], `${m} is in the CLI's graph`);
    t.notOk(staticGraph(m).has(ADDON), `${m} does not import ${ADDON} statically`);
  }
  t.ok(staticGraph('src/cli/run-vm.ts').has(ADDON), 'the VM does (so the check above can see it)');
});
