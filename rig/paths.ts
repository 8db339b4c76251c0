// Where the rig keeps its inputs (this folder) and its cache.
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';

/** A rig failure with a one-line message meant for the user. */
export class RigError extends Error {
  constructor(
    message: string,
    readonly detail?: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'RigError';
  }
}

/** The rig's source folder (scripts, kernel fragments), from src or dist. */
export function rigSourceDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    if (existsSync(join(dir, 'build-kernel.sh'))) return dir;
    const cand = join(dir, 'rig');
    if (existsSync(join(cand, 'build-kernel.sh'))) return cand;
    dir = resolve(dir, '..');
  }
  throw new RigError('rig sources not found next to the compiled code; run from a Pinion checkout');
}

export function cacheDir(): string {
  return process.env.PINION_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'pinion');
}
