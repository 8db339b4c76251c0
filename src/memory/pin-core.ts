// The one door into the Rust core (crates/pin-core): every native function
// TypeScript calls is typed here, so the surface is visible in one file.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface PinCore {
  /** Crate version of the loaded addon. */
  version(): string;
  /** sysconf(_SC_PAGESIZE), the granule of every pin and IOVA mapping. */
  pageSize(): number;
}

function addonPath(): string {
  // Same relative place from src/ and from dist/src/.
  for (const rel of ['../../crates/pin-core/pin-core.node', '../../../crates/pin-core/pin-core.node']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  throw new Error('pin-core addon is not built: run npm run build:native');
}

export const pinCore: PinCore = createRequire(import.meta.url)(addonPath()) as PinCore;
