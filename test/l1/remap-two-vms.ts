// Runs in L1 as root: two VMs of one user (uid 1000), each streaming the
// peer's frames on its own VF, while the second ("small") changes its
// memory and the first ("big") holds most of the RLIMIT_MEMLOCK. On
// iommufd (its default, per-user accounting) the kernel checks the user's
// total against each VMM's limit, so the small one has only the rest: an add that fits is
// made, a move keeps its charge (IOAS_COPY), an add beyond the rest is
// refused with the line that says whose charges took it, and a remove gives
// its part back. The compat kernel's legacy container is iommufd's, which
// charges each process for /dev/vfio/vfio as VFIO does: there the same add
// beyond is made, within the small VMM's own limit, and removed again.
// Neither guest may lose a frame. Prints one JSON object for
// test/rig/remap-two-vms.test.ts.
//
//   remap-two-vms.js iommufd|legacy [FRAMES]
import { assignablePf } from '../../rig/l1/sysfs.js';
import { dmarFaults, dmesg, MiB, Peer, StreamVm, streamVfs, type Change } from './stream-vm.js';

const [iommu = 'iommufd', framesArg] = process.argv.slice(2);
if (!['legacy', 'iommufd'].includes(iommu)) throw new Error('usage: remap-two-vms.js iommufd|legacy [FRAMES]');
const FRAMES = Number(framesArg ?? 4000);
// Two guests and their VMMs on L1's two CPUs. The guests' hotplug drivers poll the mailbox, which the VMM
// thread serves; while that thread is in a change's unmap (1.7 s for 16 MiB on iommufd with two VMs) a
// polling guest reads no frame, so the rate is one its 128-entry ring holds for 2.5 s. At 10 ms a remove
// lost 5 frames.
const INTERVAL_MS = 20;
/**
 * The user's total may reach 112 MiB: the big VM holds 64 of it, the small one 32, leaving 16 for the small
 * one's changes. (With the big one at 128 MiB beside a 64 MiB one under 224, its test guest triple-faulted in
 * 3 of 6 runs, 64 MiB guests never: not understood yet, and not this test's subject.)
 */
// PINION_TWO_VMS_SCALE=2: both VMs and the limit doubled, the size whose big guest triple-faulted (by hand only:
// the headroom doubles too, so the add beyond it is made).
const SCALE = Number(process.env.PINION_TWO_VMS_SCALE ?? 1);
const LIMIT = 112 * MiB * SCALE;
const BIG = 64 * MiB * SCALE;
const SMALL = 32 * MiB * SCALE;

const [a, b] = streamVfs(assignablePf().bdf, 2);
const peer = new Peer();
const dmesgBefore = dmesg().length;
const out: Record<string, unknown> = { iommu, frames: FRAMES, intervalMs: INTERVAL_MS, limit: LIMIT, bigRam: BIG, smallRam: SMALL };

// The big VM first, so its charge is there when the small one starts and plans.
const big = new StreamVm({ name: 'big', iommu, how: 'user', vf: a!.bdf, limit: LIMIT, memory: `${BIG}` });
const bigUp = await big.ready(180_000);
const small = new StreamVm({ name: 'small', iommu, how: 'user', vf: b!.bdf, limit: LIMIT, memory: `${SMALL}` });
const smallUp = bigUp && (await small.ready(180_000));
if (!smallUp) {
  big.kill();
  small.kill();
  out.error = `the guests did not get their NICs going: big ${bigUp ? 'ready' : `exit ${await big.end}`}, small exit ${await small.end}`;
  console.log(
    JSON.stringify({
      ...out,
      stderr: { big: big.stderr, small: small.stderr },
      console: { big: big.consoleText(), small: small.consoleText() },
    }),
  );
  process.exit(0);
}

peer.send(INTERVAL_MS, FRAMES);
out.flowing =
  (await big.until(() => (big.counters()?.rx ?? 0) > 0, 30_000)) && (await small.until(() => (small.counters()?.rx ?? 0) > 0, 30_000));

const changes: (Change & { big: ReturnType<StreamVm['counters']>[] })[] = [];
const steps: [string, string, Record<string, string>][] = [
  ['addFits', 'add-ram', { gpa: '0x40000000', size: '8M' }],
  ['move', 'move-ram', { gpa: '0x40000000', to: '0x50000000' }],
  ['addBeyond', 'add-ram', { gpa: '0x60000000', size: '16M' }],
  ['remove', 'remove-ram', { gpa: '0x50000000' }],
  // Where the path charges each process (the compat container) the add beyond was made: taken away again.
  ['removeBeyond', 'remove-ram', { gpa: '0x60000000' }],
];
for (const [name, verb, body] of steps) {
  if (small.ended || big.ended) break;
  try {
    const bigBefore = big.counters();
    const c = await small.change(name, verb, body);
    changes.push({ ...c, big: [bigBefore, big.counters()] });
  } catch (e) {
    out.changeError = `${name}: ${(e as Error).message}`;
    break;
  }
}
out.changes = changes;
out.peerRunningAfterChanges = !peer.ended;

// FRAMES bounds the stream; it stops 5 s after the changes.
const peerMs = await peer.stop();
const [fb, fs] = [await big.finish(peer.sent), await small.finish(peer.sent)];
out.big = { ...fb, vmmStderr: big.stderr };
out.small = { ...fs, vmmStderr: small.stderr };
out.peerMs = peerMs;
out.dmarFaults = dmarFaults(dmesg().slice(dmesgBefore - 1));
console.log(JSON.stringify(out));
