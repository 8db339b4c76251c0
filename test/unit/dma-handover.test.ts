// The DMA table as a live update carries it: named by RAM file and offset
// on the way out, and by the next process's own addresses or fds again.
import t from 'tap';
import { dmaImage, dmaRegions } from '../../src/machine/dma-handover.js';
import type { MemoryRegion } from '../../src/memory/listener.js';
import type { Region } from '../../src/memory/pin-core.js';

const MiB = 1n << 20n;
const rw = { read: true, write: true };
// Low RAM and high RAM on one memfd (fd 10), a hot-added region on its own (fd 11).
const ram = (base: bigint, fds: [number, number]): MemoryRegion[] => [
  { name: 'ram-low', gpa: 0n, size: 48n * MiB, hva: base, file: { fd: fds[0], offset: 0n }, kind: 'ram' },
  { name: 'ram-high', gpa: 4096n * MiB, size: 16n * MiB, hva: base + 48n * MiB, file: { fd: fds[0], offset: 48n * MiB }, kind: 'ram' },
  { name: 'api-ram', gpa: 1024n * MiB, size: 8n * MiB, hva: base + 0x1000_0000n, file: { fd: fds[1], offset: 0n }, kind: 'ram' },
];

t.test('by address: the old addresses become the new process mapping of the same file bytes', async (t) => {
  const old = ram(0x7f00_0000_0000n, [10, 11]);
  const mapped: Region[] = [
    { iova: 0n, size: 32n * MiB, backing: { vaddr: 0x7f00_0000_0000n }, prot: rw },
    { iova: 32n * MiB, size: 16n * MiB, backing: { vaddr: 0x7f00_0000_0000n + 32n * MiB }, prot: rw },
    { iova: 4096n * MiB, size: 16n * MiB, backing: { vaddr: 0x7f00_0000_0000n + 48n * MiB }, prot: rw },
    { iova: 1024n * MiB, size: 8n * MiB, backing: { vaddr: 0x7f00_1000_0000n }, prot: { read: true, write: false } },
  ];
  const image = dmaImage(mapped, old, (fd) => fd - 10);
  t.same(
    image.map((d) => [d.backing, d.offset / MiB, d.byFile, d.write]),
    [
      [0, 0n, false, true],
      [0, 32n, false, true],
      [0, 48n, false, true],
      [1, 0n, false, false],
    ],
  );
  const next = ram(0x7e00_0000_0000n, [20, 21]);
  const back = dmaRegions(image, next, (i) => 20 + i);
  t.same(
    back.map((r) => r.backing),
    [
      { vaddr: 0x7e00_0000_0000n },
      { vaddr: 0x7e00_0000_0000n + 32n * MiB },
      { vaddr: 0x7e00_0000_0000n + 48n * MiB },
      { vaddr: 0x7e00_1000_0000n },
    ],
  );
  t.same(
    back.map((r) => [r.iova, r.size]),
    mapped.map((r) => [r.iova, r.size]),
    'the same IOVA ranges',
  );
  t.same(back[3]!.prot, { read: true, write: false });
});

t.test('by file: the offsets stay, the fds become the next process’s', async (t) => {
  const old = ram(0x7f00_0000_0000n, [10, 11]);
  const mapped: Region[] = [{ iova: 4096n * MiB, size: 16n * MiB, backing: { fd: 10, offset: 48n * MiB }, prot: rw }];
  const image = dmaImage(mapped, old, (fd) => fd - 10);
  t.same(image, [{ iova: 4096n * MiB, size: 16n * MiB, backing: 0, offset: 48n * MiB, byFile: true, write: true }]);
  t.same(dmaRegions(image, ram(0n, [20, 21]), (i) => 20 + i)[0]!.backing, { fd: 20, offset: 48n * MiB });
});

t.test('a mapping of memory no RAM file holds, or a file region the next map lacks, is named', async (t) => {
  const old = ram(0x7f00_0000_0000n, [10, 11]);
  t.throws(
    () => dmaImage([{ iova: 0n, size: MiB, backing: { vaddr: 0x1000n }, prot: rw }], old, () => 0),
    /^the DMA mapping 0x0\+0x100000 maps 0x1000, which is in no RAM file of the guest memory map$/,
  );
  t.throws(
    () => dmaImage([{ iova: 0n, size: 64n * MiB, backing: { vaddr: 0x7f00_0000_0000n }, prot: rw }], old, () => 0),
    /in no RAM file/,
    'running past the region',
  );
  const image = [{ iova: 0n, size: MiB, backing: 1, offset: 64n * MiB, byFile: false, write: true }];
  t.throws(
    () => dmaRegions(image, ram(0n, [20, 21]), (i) => 20 + i),
    /is at 0x4000000 of RAM file 1, which no region of this memory map holds/,
  );
});
