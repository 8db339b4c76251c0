// The host side of the rig: QEMU >= 8 with igb, installed from Debian's
// backports by install-host.sh when missing.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
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

/**
 * The host's TSC rate in kHz, when /proc/cpuinfo states it: its `cpu MHz` is the TSC's rate on a host
 * whose TSC rate is known (tsc_known_freq, as in a VM) or that runs no cpufreq driver; elsewhere it is
 * the core's current clock, and there is no answer. Under TCG, L1's TSC is the host's.
 */
export function hostTscKhz(cpuinfo: string, hasCpufreq: boolean): number | undefined {
  const flags = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1]?.split(/\s+/) ?? [];
  const mhz = Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1]);
  if (!flags.includes('constant_tsc') || !(mhz > 0)) return undefined;
  if (!flags.includes('tsc_known_freq') && hasCpufreq) return undefined;
  return Math.round(mhz * 1000);
}

/** hostTscKhz of this machine. */
export function thisHostTscKhz(): number | undefined {
  return hostTscKhz(readFileSync('/proc/cpuinfo', 'utf8'), existsSync('/sys/devices/system/cpu/cpu0/cpufreq'));
}
