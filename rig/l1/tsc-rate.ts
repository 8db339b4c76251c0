// L1's TSC rate as KVM takes it. On a CPU without constant TSC (EPYC under
// TCG) KVM takes its default rate for new vCPUs when it loads, which is before
// the kernel refines its early calibration. Past KVM's tolerance, a VMM that
// leaves the rate alone (QEMU without tsc-frequency) gets vCPUs whose TSC
// multiplier stays 0 on a CPU without TSC scaling, and its guests' clocks stop.
// Pinion sets the current rate itself (src/vmm/vm.ts); a side-by-side run in
// such an L1 would time QEMU's guests stopping, so the benchmarks and the
// demo refuse one.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** KVM's tolerance (tsc_tolerance_ppm, arch/x86/kvm/x86.c) before it asks for TSC scaling. */
export const KVM_TSC_TOLERANCE_PPM = 250;

export interface TscCalibration {
  /** The early rate, the one KVM took. */
  earlyMHz?: number;
  /** The rate after the kernel's refinement, if it has happened. */
  refinedMHz?: number;
  /** |refined - early| / refined, in ppm; 0 before the refinement. */
  ppm: number;
  /** The CPU has constant TSC: KVM then takes the rate current when a VM is made. */
  constantTsc: boolean;
  /** KVM's default rate is off by more than its tolerance. */
  stale: boolean;
}

const number = (re: RegExp, s: string): number | undefined => {
  const m = re.exec(s);
  return m ? Number(m[1]) : undefined;
};

/** From the kernel's log and /proc/cpuinfo. */
export function tscCalibration(dmesg: string, cpuinfo: string): TscCalibration {
  const earlyMHz = number(/tsc: Detected ([\d.]+) MHz TSC/, dmesg) ?? number(/tsc: Detected ([\d.]+) MHz processor/, dmesg);
  const refinedMHz = number(/tsc: Refined TSC clocksource calibration: ([\d.]+) MHz/, dmesg);
  const ppm = earlyMHz && refinedMHz ? (Math.abs(refinedMHz - earlyMHz) / refinedMHz) * 1e6 : 0;
  const constantTsc = /^flags\s*:.*\bconstant_tsc\b/m.test(cpuinfo);
  return { earlyMHz, refinedMHz, ppm, constantTsc, stale: !constantTsc && ppm > KVM_TSC_TOLERANCE_PPM };
}

/** One line for an L1 whose KVM default rate is stale; undefined when it is not. */
export function staleTscMessage(c: TscCalibration): string | undefined {
  if (!c.stale) return undefined;
  return (
    `L1's TSC rate was refined from ${c.earlyMHz} to ${c.refinedMHz} MHz (${c.ppm.toFixed(0)} ppm, past KVM's ${KVM_TSC_TOLERANCE_PPM}) after KVM took the early one: ` +
    `QEMU's guests in this L1 would not keep time; run it again in a new L1 boot (the rig gives L1 the host's rate with tsc_early_khz when the host's is known)`
  );
}

/** L1's calibration once the refinement has run (it runs a second or more after boot), or after 15 s without one. */
export async function l1TscCalibration(): Promise<TscCalibration> {
  const read = (): TscCalibration =>
    tscCalibration(spawnSync('dmesg', { encoding: 'utf8' }).stdout ?? '', readFileSync('/proc/cpuinfo', 'utf8'));
  for (let i = 0; i < 30; i++) {
    const c = read();
    if (c.refinedMHz !== undefined || c.constantTsc) return c;
    await sleep(500);
  }
  return read();
}

/** Throws staleTscMessage's line in an L1 where QEMU's guests would stop. */
export async function assertL1TscRate(): Promise<TscCalibration> {
  const c = await l1TscCalibration();
  const stale = staleTscMessage(c);
  if (stale) throw new Error(stale);
  return c;
}
