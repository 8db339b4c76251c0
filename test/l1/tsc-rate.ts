// Runs in L1 as root, on an L1 told a wrong early TSC rate (tsc_early_khz):
// its kernel refines the rate after KVM has loaded, so KVM's default rate for
// new vCPUs is the early one, and this CPU (EPYC under TCG) has no TSC
// scaling. A VMM that leaves the rate alone gets vCPUs whose TSC multiplier
// KVM left at 0 (QEMU without tsc-frequency: KVM logs "user requested TSC
// rate below hardware speed"); Pinion sets the host's rate, and its Linux
// guest keeps time. Prints one JSON object for test/rig/tsc-rate.test.ts.
import { spawn, spawnSync } from 'node:child_process';
import { LinuxGuest, QEMU_MACHINE } from '../../rig/l1/linux-guest.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { l1TscCalibration } from '../../rig/l1/tsc-rate.js';

const [kernel, initrd] = process.argv.slice(2) as [string, string];
const KVM_WARNING = 'user requested TSC rate below hardware speed';

const kmsg = (): string => spawnSync('dmesg', { encoding: 'utf8' }).stdout;
const warnings = (): number =>
  kmsg()
    .split('\n')
    .filter((l) => l.includes(KVM_WARNING)).length;

// L1's rates: the early one KVM took when it loaded, and the refined one the kernel keeps time with.
const { earlyMHz, refinedMHz, stale } = await l1TscCalibration();

// QEMU's VM, made and paused (-S): KVM warns as each vCPU is made, so L1's log is polled for up to 20 s.
const before = warnings();
const qemu = spawn('qemu-system-x86_64', [...QEMU_MACHINE, '-smp', '2', '-m', '64', '-nodefaults', '-display', 'none', '-S'], {
  stdio: 'ignore',
});
let qemuWarnings = 0;
for (let i = 0; i < 40 && qemuWarnings === 0 && qemu.exitCode === null; i++) {
  await sleep(500);
  qemuWarnings = warnings() - before;
}
const qemuRunning = qemu.exitCode === null;
qemu.kill('SIGKILL');
await new Promise((r) => qemu.once('close', r));

// Pinion's Linux guest, no NIC: its clock source, and `sleep 3` on L1's clock.
const atPinion = warnings();
const g = new LinuxGuest({
  vmm: 'pinion',
  iommu: 'iommufd',
  kernel,
  initrd,
  ip: '192.0.2.2/24',
  limitMs: 120_000,
  command: `echo "pinion-guest: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
echo "pinion-guest: sleep-start"; sleep 3; echo "pinion-guest: sleep-end"`,
});
const [s0, s1] = [await g.waitFor(/^pinion-guest: sleep-start/), await g.waitFor(/^pinion-guest: sleep-end/)];
const end = await g.done;
console.log(
  JSON.stringify({
    earlyMHz,
    refinedMHz,
    stale,
    tscLines: kmsg()
      .split('\n')
      .filter((l) => /tsc:|kvm:|Switched to clocksource/.test(l)),
    qemuWarnings,
    qemuRunning,
    pinionWarnings: warnings() - atPinion,
    status: end.status,
    signal: end.signal,
    stderr: g.stderr,
    clocksource: g.marked('clocksource')[0],
    sleep3Ms: s0 && s1 ? Math.round(s1.at - s0.at) : undefined,
    console: g.console().split('\n').slice(-20).join('\n'),
  }),
);
process.exit(0);
