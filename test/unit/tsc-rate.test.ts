// L1's TSC rate: when KVM's default rate for new vCPUs is stale, and the host's rate the rig gives L1.
import t from 'tap';
import { hostTscKhz } from '../../rig/host.js';
import { staleTscMessage, tscCalibration } from '../../rig/l1/tsc-rate.js';

const TCG_CPUINFO = 'processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep svm\n';
// An L1 whose early calibration fell back to the HPET, as seen in the rig's stall reports.
const HPET_BOOT = [
  '[    0.000000] tsc: Unable to calibrate against PIT',
  '[    0.000000] tsc: using HPET reference calibration',
  '[    0.000000] tsc: Detected 2596.100 MHz processor',
  '[    3.120000] tsc: Refined TSC clocksource calibration: 2600.000 MHz',
].join('\n');

t.test('an early rate 1500 ppm off the refined one, without constant TSC: stale', async (t) => {
  const c = tscCalibration(HPET_BOOT, TCG_CPUINFO);
  t.same(
    { early: c.earlyMHz, refined: c.refinedMHz, stale: c.stale, constantTsc: c.constantTsc },
    { early: 2596.1, refined: 2600, stale: true, constantTsc: false },
  );
  t.ok(Math.abs(c.ppm - 1500) < 1, 'ppm of the refined rate', { ppm: c.ppm });
  t.match(
    staleTscMessage(c),
    /^L1's TSC rate was refined from 2596\.1 to 2600 MHz \(1500 ppm, past KVM's 250\) .*run it again in a new L1 boot/,
  );
});

t.test('within the tolerance, before the refinement, or with constant TSC: not stale', async (t) => {
  const near = '[ 0.0] tsc: Detected 2596.132 MHz TSC\n[ 3.1] tsc: Refined TSC clocksource calibration: 2596.400 MHz\n';
  t.equal(tscCalibration(near, TCG_CPUINFO).stale, false, '103 ppm');
  t.equal(staleTscMessage(tscCalibration(near, TCG_CPUINFO)), undefined);
  const early = tscCalibration('[ 0.0] tsc: Detected 2596.100 MHz processor\n', TCG_CPUINFO);
  t.same([early.refinedMHz, early.ppm, early.stale], [undefined, 0, false], 'no refinement yet');
  const constant = tscCalibration(HPET_BOOT, TCG_CPUINFO.replace(' tsc ', ' tsc constant_tsc '));
  t.same([constant.constantTsc, constant.stale], [true, false], 'KVM takes the current rate when a VM is made');
});

t.test("the host's TSC rate: only where cpuinfo's clock is the TSC's", async (t) => {
  const info = (flags: string) => `processor\t: 0\ncpu MHz\t\t: 2596.132\nflags\t\t: fpu tsc ${flags}\n`;
  t.equal(hostTscKhz(info('constant_tsc tsc_known_freq'), true), 2596132, 'a known TSC rate (a VM host)');
  t.equal(hostTscKhz(info('constant_tsc'), false), 2596132, 'no cpufreq driver: cpu MHz is the TSC calibration');
  t.equal(hostTscKhz(info('constant_tsc'), true), undefined, "with cpufreq, cpu MHz is the core's current clock");
  t.equal(hostTscKhz(info(''), false), undefined, 'no constant TSC');
  t.equal(hostTscKhz('flags\t\t: constant_tsc\n', false), undefined, 'no cpu MHz line');
});
