// The host side of the rig: QEMU >= 8 with igb, installed from Debian's
// backports by install-host.sh when missing.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { RigError, rigSourceDir } from './paths.js';

export const QEMU = process.env.PINION_QEMU ?? 'qemu-system-x86_64';

function qemuUsable(): boolean {
  const v = spawnSync(QEMU, ['--version'], { encoding: 'utf8' });
  const m = /version (\d+)\./.exec(v.stdout ?? '');
  if (v.status !== 0 || !m || Number(m[1]) < 8) return false;
  const d = spawnSync(QEMU, ['-device', 'help'], { encoding: 'utf8' });
  return /"igb"/.test(d.stdout ?? '');
}

export function ensureHost(): void {
  if (qemuUsable() && spawnSync('cpio', ['--version']).status === 0) return;
  process.stderr.write('rig: installing QEMU >= 8 (igb) and kernel build tools from Debian packages ...\n');
  const r = spawnSync('bash', [join(rigSourceDir(), 'install-host.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0 || !qemuUsable()) {
    throw new RigError(
      'QEMU >= 8 with the igb NIC is missing and could not be installed: run sudo bash rig/install-host.sh and read its error',
    );
  }
}
