// VM1 of the transient-remap test, run as the test user (directly or through
// pinion open): boots the test guest with a VF, adds a 16 MiB memfd region,
// says READY, waits for "go" on stdin (VM2 is then running), and remaps:
// first the same backing to a new GPA (pin-core may copy on iommufd), then a
// new, larger backing in its place. Prints one JSON object.
import { openSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { IommuKind } from '../../src/devices/vfio/iommu.js';
import { Machine } from '../../src/machine/machine.js';
import { GuestRam } from '../../src/memory/guest-ram.js';
import type { MemoryRegion } from '../../src/memory/listener.js';
import { pinCore } from '../../src/memory/pin-core.js';
import { openerFds } from '../../src/cli/inherited-fds.js';
import { processCharge } from '../../src/memlock/status.js';
import { GUEST } from './pinion.js';

const [iommu = 'iommufd', vf = ''] = process.argv.slice(2);
const MiB = 1n << 20n;
const GiB = 1n << 30n;
const consolePath = `/tmp/remap-console-${process.pid}`;

const m = Machine.create({
  payload: GUEST,
  memory: 64n * MiB,
  cpus: 1,
  backend: 'memfd',
  cmdline: 'hang',
  consoleFd: openSync(consolePath, 'w'),
  devices: [vf],
  iommu: iommu as IommuKind,
  fds: openerFds(),
});
let ended = false;
const running = m.run().then((r) => ((ended = true), r));
while (!readFileSync(consolePath, 'utf8').includes('cmdline')) await new Promise((r) => setTimeout(r, 100));

const page = BigInt(pinCore.pageSize());
const extraRam = GuestRam.allocate(16n * MiB, 'memfd', page);
const extra = (gpa: bigint, ram: GuestRam): MemoryRegion => ({
  name: `extra@${gpa.toString(16)}`,
  gpa,
  size: ram.size,
  hva: ram.vaddr,
  file: { fd: ram.fd, offset: 0n },
  kind: 'ram',
});
m.memory.update((u) => u.add(extra(GiB, extraRam)));
const charged = processCharge();
console.log('READY');

const rl = createInterface({ input: process.stdin });
for await (const line of rl) if (line.trim() === 'go') break;

const dmaMap = (): string[] => m.dmaState()!.mapped.map((r) => `0x${r.iova.toString(16)}+0x${r.size.toString(16)}`);

function attempt(change: () => void): Record<string, unknown> {
  try {
    change();
    const last = m.dmaState()!.last!;
    return { ok: true, ops: last.ops.map((o) => o.op), peakCharged: Number(last.peakCharged), map: dmaMap() };
  } catch (e) {
    return { ok: false, error: `${(e as Error).name}: ${(e as Error).message}`, map: dmaMap() };
  }
}

const move = attempt(() =>
  m.memory.update((u) => {
    u.remove(GiB);
    u.add(extra(2n * GiB, extraRam));
  }),
);
const biggerRam = GuestRam.allocate(32n * MiB, 'memfd', page);
const replace = attempt(() =>
  m.memory.update((u) => {
    u.remove(move.ok ? 2n * GiB : GiB);
    u.add(extra(2n * GiB, biggerRam));
  }),
);
const stillRunning = !ended;
m.stop('test done');
const end = await running;
m.close();
console.log(JSON.stringify({ charged, move, replace, stillRunning, end }));
process.exit(0);
