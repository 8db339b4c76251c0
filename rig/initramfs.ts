// The L1 initramfs: busybox-static and rig/l1/init.sh, packed as newc cpio
// and cached by content hash.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, chmodSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { RigError, rigSourceDir } from './paths.js';

const BUSYBOX = '/bin/busybox';

export function ensureInitramfs(cacheDir: string): string {
  const init = join(rigSourceDir(), 'l1', 'init.sh');
  if (!existsSync(BUSYBOX)) {
    throw new RigError(`${BUSYBOX} is missing: install it with: apt-get install -y busybox-static`);
  }
  const hash = createHash('sha256').update(readFileSync(init)).update(readFileSync(BUSYBOX)).digest('hex').slice(0, 16);
  const out = join(cacheDir, `initramfs-${hash}.cpio.gz`);
  if (existsSync(out)) return out;
  buildInitramfs(out, (stage) => {
    copyFileSync(BUSYBOX, join(stage, 'bin', 'busybox'));
    copyFileSync(init, join(stage, 'init'));
  });
  return out;
}

/** Packs a new initramfs at `out` (gzip'd newc cpio): `fill` puts files in a staging root that already has
 * bin, dev, proc, sys and tmp; /init is made executable. Written to a temporary name and renamed, so a
 * cache never holds half an image. */
export function buildInitramfs(out: string, fill: (stage: string) => void): void {
  const stage = mkdtempSync(join(tmpdir(), 'pinion-initramfs-'));
  try {
    for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp']) mkdirSync(join(stage, d));
    fill(stage);
    chmodSync(join(stage, 'init'), 0o755);
    mkdirSync(dirname(out), { recursive: true });
    const tmp = `${out}.${process.pid}`;
    execFileSync('sh', ['-c', `find . | cpio -o -H newc --quiet | gzip -1 > "${tmp}"`], { cwd: stage });
    renameSync(tmp, out);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}
