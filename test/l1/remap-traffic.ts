// Runs in L1 as root: memory changes through the control API while the test
// guest streams frames on an assigned igb VF (its stream mode). L1's peer
// igb sends a numbered frame every 5 ms; the guest checks each one, sends
// some of its own, and moves its RX DMA into every region it is told of.
// Each change is timed and recorded with its DMA ops, what the VM charged
// before it, at its peak and after, and the guest's counters on each side;
// one change does not fit the locked-memory budget. At the end: the frames
// the peer sent against those the guest received, and L1's DMAR faults.
//
//   remap-traffic.js legacy|iommufd user|opener [VF] [FRAMES]
//
// The VMM runs as uid 1000 under an RLIMIT_MEMLOCK of LIMIT: directly
// (user: type1 charges the process, iommufd the user), or through pinion
// open (opener: per-process accounting on iommufd). Without a VF one is made
// on the assignable PF. FRAMES (default 12000, a minute at 5 ms)
// bounds the peer: the changes must be done before it runs out; it stops
// 5 s after them. Prints one JSON object for
// test/rig/remap-traffic.test.ts.
import { readlinkSync } from 'node:fs';
import { basename } from 'node:path';
import { assignablePf } from '../../rig/l1/sysfs.js';
import { hugePagesFree } from '../../src/memory/guest-ram.js';
import { dmarFaults, dmesg, MiB, Peer, reserveHugePages, StreamVm, streamVfs, type Change } from './stream-vm.js';
import { changeRecord, recordScenario } from '../../bench/remap-record.js';

const [iommu = 'iommufd', how = 'user', vfArg, framesArg] = process.argv.slice(2);
if (!['legacy', 'iommufd'].includes(iommu) || !['user', 'opener'].includes(how))
  throw new Error('usage: remap-traffic.js legacy|iommufd user|opener [VF] [FRAMES]');
const FRAMES = Number(framesArg ?? 12000);
const INTERVAL_MS = 5;
/** Boot RAM (64 MiB) and the regions below peak under 120 MiB; the refused change asks for 256 MiB more. */
const LIMIT = 160 * MiB;

const pf = vfArg ? basename(readlinkSync(`/sys/bus/pci/devices/${vfArg}/physfn`)) : assignablePf().bdf;
const [vf] = streamVfs(pf, 1, vfArg);
const peer = new Peer();
// hugetlb for the replace when L1 can reserve the pages, else anon.
reserveHugePages(16);
const replaceWith = hugePagesFree() >= 8n ? 'hugetlb' : 'anon';
const dmesgBefore = dmesg().length;

const vm = new StreamVm({ name: 'traffic', iommu, how: how as 'user' | 'opener', vf: vf!.bdf, limit: LIMIT });

const out: Record<string, unknown> = { iommu, how, vf: vf!.bdf, frames: FRAMES, intervalMs: INTERVAL_MS, limit: LIMIT, replaceWith };
if (!(await vm.ready(180_000))) {
  vm.kill();
  out.error = `the guest did not get its NIC going; VMM exit ${await vm.end}`;
  console.log(JSON.stringify({ ...out, vmmStderr: vm.stderr, console: vm.consoleText() }));
  process.exit(0);
}

// The peer starts once the guest's rings are up: frame 0 is the first it can receive.
peer.send(INTERVAL_MS, FRAMES);
out.flowing = await vm.until(() => (vm.counters()?.rx ?? 0) > 0, 30_000);

const changes: Change[] = [];
const steps: [string, string, Record<string, string>][] = [
  ['add', 'add-ram', { gpa: '0x40000000', size: '16M' }],
  ['grow', 'resize-ram', { gpa: '0x40000000', size: '32M' }],
  ['split', 'split-ram', { gpa: '0x40000000', at: '0x41000000' }],
  ['shrink', 'resize-ram', { gpa: '0x41000000', size: '8M' }],
  ['move', 'move-ram', { gpa: '0x41000000', to: '0x50000000' }],
  ['replace', 'replace-ram', { gpa: '0x40000000', backend: replaceWith }],
  ['overBudget', 'add-ram', { gpa: '0x60000000', size: '256M' }],
  ['removeMoved', 'remove-ram', { gpa: '0x50000000' }],
  ['remove', 'remove-ram', { gpa: '0x40000000' }],
];
for (const [name, verb, body] of steps) {
  if (vm.ended) break;
  try {
    changes.push(await vm.change(name, verb, body));
  } catch (e) {
    // The VMM went away mid-change: what is left to record is how it ended.
    out.changeError = `${name}: ${(e as Error).message}`;
    break;
  }
}
out.changes = changes;
out.peerRunningAfterChanges = !peer.ended;

// FRAMES bounds the stream; it stops 5 s after the changes, and the guest then prints its totals and exits.
const peerMs = await peer.stop();
const fin = await vm.finish(peer.sent);
out.frames = fin.frames;
out.end = { status: fin.status, vmmStderr: vm.stderr, peerMs, peerRx: peer.received(), done: fin.done, console: fin.console };
out.dmarFaults = dmarFaults(dmesg().slice(dmesgBefore - 1));
// bench/run.sh's remap entry keeps the scenario in bench/results/remap.json.
if (process.env.PINION_REMAP_RECORD)
  recordScenario(process.env.PINION_REMAP_RECORD, {
    kernel: process.env.PINION_RIG_KERNEL ?? 'type1',
    iommu,
    // The compat kernel's container is iommufd's, which charges the process for /dev/vfio/vfio, as VFIO does.
    accounting:
      iommu === 'legacy'
        ? process.env.PINION_RIG_KERNEL === 'compat'
          ? 'per-process (iommufd compat container)'
          : 'per-process (type1)'
        : how === 'opener'
          ? 'per-process (pinion open)'
          : 'per-user',
    frames: out.frames as { sent: number; received: number | null; lost: number | null },
    dmarFaults: (out.dmarFaults as string[]).length,
    changes: changes.map(changeRecord),
  });
console.log(JSON.stringify(out));
