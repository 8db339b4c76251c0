#!/usr/bin/env node
// The shipped CLI as two ES modules, dist/bundle/pinion.js and the vCPU
// thread's dist/bundle/vcpu-thread.js (lazily loaded subcommands split into
// chunks beside them): Node then resolves, stats and reads a handful of
// files at start instead of about a hundred, which is most of its start-up
// where files are slow to reach (the rig's L1 reads this checkout over 9p).
// koffi stays a package: it finds its native module itself.
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url).pathname;
// Chunks are named by their hash: clear the old ones, or the folder only grows.
rmSync(`${root}dist/bundle`, { recursive: true, force: true });
await build({
  absWorkingDir: root,
  entryPoints: { pinion: 'src/cli.ts', 'vcpu-thread': 'src/machine/vcpu-thread.ts' },
  outdir: 'dist/bundle',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['koffi'],
  keepNames: true,
  sourcemap: 'linked',
  logLevel: 'warning',
});
