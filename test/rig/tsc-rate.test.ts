// A host whose kernel refined its TSC rate after KVM loaded, on a CPU
// without TSC scaling: KVM's default rate for new vCPUs is then the stale
// early one, and a vCPU left at it has its TSC multiplier at 0 (a Linux guest
// there loses its timers: `sleep 3` took 31 s, with RCU stall reports). L1
// is booted with an early rate 0.2% below its TSC's (tsc_early_khz) and no
// clocksource watchdog (which would call tsc-early unstable and skip the
// refinement); the refinement then moves the rate past KVM's 250 ppm
// tolerance, as a failed PIT calibration under TCG sometimes does by itself
// (2596 MHz early, 2600 refined). QEMU's VM there draws KVM's warning;
// Pinion's sets the host's rate and its guest keeps time.
import t from 'tap';
import { ensureGuestImage } from '../../rig/guest-image.js';
import { thisHostTscKhz } from '../../rig/host.js';
import { l1Json } from '../support/rig.js';

interface Result {
  earlyMHz?: number;
  refinedMHz?: number;
  stale: boolean;
  tscLines: string[];
  qemuWarnings: number;
  qemuRunning: boolean;
  pinionWarnings: number;
  status: number | null;
  signal: string | null;
  stderr: string;
  clocksource?: string;
  sleep3Ms?: number;
  console: string;
}

// Under TCG L1's TSC runs at the host's; the host's rate is its cpuinfo's.
const hostKhz = thisHostTscKhz();

t.test('type1 kernel, L1 told an early TSC rate 0.2% low', async (t) => {
  t.ok(hostKhz, "the host's TSC rate from /proc/cpuinfo", { hostKhz });
  const image = ensureGuestImage('type1');
  const { result: r, run } = await l1Json<Result>('type1', 'tsc-rate', [image.kernel, image.initrd], {
    append: ['tsc=nowatchdog', `tsc_early_khz=${Math.round((hostKhz ?? 0) * 0.998)}`],
  });
  const ctx = { console: r.console, stderr: r.stderr };
  t.equal(run.exitCode, 0, 'the L1 script ran to the end');
  const ppm = r.earlyMHz && r.refinedMHz ? ((r.refinedMHz - r.earlyMHz) / r.refinedMHz) * 1e6 : 0;
  t.ok(ppm > 250, "L1 refined its TSC rate past KVM's 250 ppm tolerance", {
    early: r.earlyMHz,
    refined: r.refinedMHz,
    ppm,
    dmesg: r.tscLines,
  });
  t.equal(r.stale, true, "rig/l1/tsc-rate.ts calls KVM's default rate stale, as the side-by-side benchmark checks");
  t.ok(r.qemuRunning && r.qemuWarnings > 0, "QEMU's vCPUs (no tsc-frequency) draw KVM's 'user requested TSC rate below hardware speed'", {
    qemuWarnings: r.qemuWarnings,
  });
  t.equal(r.pinionWarnings, 0, "Pinion's vCPUs are made at the host's rate: no warning");
  t.equal(r.status, 0, 'the guest powers off, status 0', ctx);
  t.equal(r.clocksource, 'kvm-clock', 'the guest keeps time on kvm-clock');
  t.ok(r.sleep3Ms !== undefined && r.sleep3Ms > 2700 && r.sleep3Ms < 4000, "the guest's `sleep 3` lasts 3 s of L1's clock", {
    sleep3Ms: r.sleep3Ms,
    ...ctx,
  });
});
