// Entry points of the scripts that run inside L1, and the CLI they start:
// found from the checkout's root, since the CLI that asks may be the bundle.
import { join, resolve } from 'node:path';
import { rigSourceDir } from '../paths.js';

const root = (): string => resolve(rigSourceDir(), '..');

export function rigReportScript(): string {
  return join(root(), 'dist/rig/l1/report.js');
}

export function rigDemoScript(): string {
  return join(root(), 'dist/rig/l1/demo.js');
}

/** The shipped CLI (package.json's bin): the bundle of src/cli.ts. */
export function pinionCli(): string {
  return join(root(), 'dist/bundle/pinion.js');
}
