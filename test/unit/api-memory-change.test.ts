// Memory changes of the control API, parsed and planned as pure functions:
// what each verb's body may hold, and which changes the map refuses.
import t, { type Test } from 'tap';
import { ApiError } from '../../src/api/errors.js';
import { mapLimits, parseChange, planChange, type MapEntry } from '../../src/api/memory-change.js';

const MiB = 1n << 20n;
const GiB = 1n << 30n;
const L = mapLimits(4096n);
const MAP: MapEntry[] = [
  { name: 'ram-low', gpa: 0n, size: 64n * MiB, kind: 'ram', backend: 'memfd' },
  { name: 'huge', gpa: GiB, size: 8n * MiB, kind: 'ram', backend: 'hugetlb' },
  { name: 'bar0', gpa: 0xc000_0000n, size: 0x4000n, kind: 'device' },
];

function refused(t: Test, f: () => unknown, status: number, msg: RegExp): void {
  try {
    f();
    t.fail(`accepted; wanted ${status}`);
  } catch (e) {
    t.ok(e instanceof ApiError, 'an ApiError');
    t.equal((e as ApiError).status, status);
    t.match((e as Error).message, msg);
    t.notMatch((e as Error).message, /\n/, 'one line');
  }
}

t.test('bodies: numbers, hex strings and sizes; unknown fields and bad types refused', async (t) => {
  t.same(parseChange('add-ram', { gpa: '0x40000000', size: '16M' }), { verb: 'add-ram', gpa: GiB, size: 16n * MiB, backend: 'memfd' });
  t.same(parseChange('add-ram', { gpa: 4096, size: 8192, backend: 'anon' }), { verb: 'add-ram', gpa: 4096n, size: 8192n, backend: 'anon' });
  t.same(parseChange('split-ram', { gpa: '0', at: '32M' }), { verb: 'split-ram', gpa: 0n, at: 32n * MiB });
  t.same(parseChange('replace-ram', { gpa: '0x0', backend: 'hugetlb' }), { verb: 'replace-ram', gpa: 0n, backend: 'hugetlb' });
  refused(t, () => parseChange('add-ram', [1]), 400, /takes a JSON object with gpa, size, backend/);
  refused(t, () => parseChange('add-ram', null), 400, /takes a JSON object/);
  refused(t, () => parseChange('add-ram', { gpa: 0 }), 400, /needs 'size'/);
  refused(t, () => parseChange('move-ram', { gpa: 0, to: 1, x: 2 }), 400, /unknown field 'x'; it takes gpa, to/);
  refused(t, () => parseChange('add-ram', { gpa: -1, size: 1 }), 400, /'gpa' must be a byte count or address/);
  refused(t, () => parseChange('add-ram', { gpa: 1.5, size: 1 }), 400, /'gpa' must be/);
  refused(t, () => parseChange('add-ram', { gpa: '16MB', size: 1 }), 400, /got "16MB"/);
  refused(
    t,
    () => parseChange('add-ram', { gpa: 0, size: 1, backend: 'zram' }),
    400,
    /'backend' must be one of memfd, anon, hugetlb, got "zram"/,
  );
});

t.test('add-ram: aligned, clear of every region, the PCI hole and the BAR window', async (t) => {
  const p = planChange({ verb: 'add-ram', gpa: 2n * GiB, size: 16n * MiB, backend: 'anon' }, MAP, L);
  t.same(p.remove, []);
  t.same(p.add, [{ gpa: 2n * GiB, size: 16n * MiB, backing: { kind: 'new', backend: 'anon' } }]);
  t.match(p.summary, /added 16 MiB of anon RAM at \[0x80000000, 0x81000000\)/);
  refused(
    t,
    () => planChange({ verb: 'add-ram', gpa: 2n * GiB + 1n, size: 16n * MiB, backend: 'anon' }, MAP, L),
    400,
    /gpa 0x80000001 is not a multiple of the 4096-byte page size; e.g. 0x80000000 or 0x80001000/,
  );
  refused(
    t,
    () => planChange({ verb: 'add-ram', gpa: 2n * GiB, size: 0x1800n, backend: 'memfd' }, MAP, L),
    400,
    /size 0x1800 is not a multiple/,
  );
  refused(
    t,
    () => planChange({ verb: 'add-ram', gpa: 2n * GiB + 0x1000n, size: 2n * MiB, backend: 'hugetlb' }, MAP, L),
    400,
    /not a multiple of 2 MiB \(hugetlb RAM\)/,
  );
  refused(t, () => planChange({ verb: 'add-ram', gpa: 0n, size: 0n, backend: 'memfd' }, MAP, L), 400, /a size above 0/);
  refused(
    t,
    () => planChange({ verb: 'add-ram', gpa: 32n * MiB, size: 64n * MiB, backend: 'memfd' }, MAP, L),
    409,
    /\[0x2000000, 0x6000000\) overlaps ram-low \[0x0, 0x4000000\)/,
  );
  refused(
    t,
    () => planChange({ verb: 'add-ram', gpa: 3n * GiB - 16n * MiB, size: 32n * MiB, backend: 'memfd' }, MAP, L),
    409,
    /reaches into the PCI hole \[0xc0000000, 0x100000000\)/,
  );
  refused(
    t,
    () => planChange({ verb: 'add-ram', gpa: 256n * GiB - 2n * MiB, size: 4n * MiB, backend: 'memfd' }, MAP, L),
    409,
    /ends above 0x4000000000, where 64-bit BARs go/,
  );
  refused(
    t,
    () => planChange({ verb: 'add-ram', gpa: 8n * GiB, size: 8n * GiB, backend: 'memfd' }, MAP, L),
    400,
    /8192 MiB is over the 4096 MiB a region may have/,
  );
});

t.test('remove, resize: only RAM that starts there; growing copies into a new backing, shrinking keeps it', async (t) => {
  t.same(planChange({ verb: 'remove-ram', gpa: GiB }, MAP, L).remove, [GiB]);
  refused(
    t,
    () => planChange({ verb: 'remove-ram', gpa: 4096n }, MAP, L),
    404,
    /no region starts at 0x1000 \(it is inside ram-low, which starts at 0x0\)/,
  );
  refused(t, () => planChange({ verb: 'remove-ram', gpa: 0xc000_0000n }, MAP, L), 409, /bar0 at 0xc0000000 is a device BAR/);
  refused(t, () => planChange({ verb: 'remove-ram', gpa: 0n }, MAP.slice(0, 1), L), 409, /the guest's only RAM/);
  const grow = planChange({ verb: 'resize-ram', gpa: 0n, size: 128n * MiB }, MAP, L);
  t.same(grow.add, [{ gpa: 0n, size: 128n * MiB, backing: { kind: 'new', backend: 'memfd', copy: { from: 0n, bytes: 64n * MiB } } }]);
  t.same(grow.remove, [0n]);
  const shrink = planChange({ verb: 'resize-ram', gpa: GiB, size: 4n * MiB }, MAP, L);
  t.same(shrink.add, [{ gpa: GiB, size: 4n * MiB, backing: { kind: 'same', of: GiB, offset: 0n } }]);
  refused(t, () => planChange({ verb: 'resize-ram', gpa: GiB, size: 3n * MiB }, MAP, L), 400, /not a multiple of 2 MiB/);
  refused(t, () => planChange({ verb: 'resize-ram', gpa: 0n, size: 64n * MiB }, MAP, L), 400, /already has 64 MiB/);
  refused(t, () => planChange({ verb: 'resize-ram', gpa: 0n, size: 2n * GiB }, MAP, L), 409, /overlaps huge/);
});

t.test('growing where the backing has room after the region: in place, the bytes where they are', async (t) => {
  const map = MAP.map((e) => (e.gpa === GiB ? { ...e, growsInPlaceTo: 64n * MiB } : e));
  const g = planChange({ verb: 'resize-ram', gpa: GiB, size: 32n * MiB }, map, L);
  t.same(g.add, [{ gpa: GiB, size: 32n * MiB, backing: { kind: 'grown', of: GiB } }]);
  t.same(g.remove, [GiB]);
  t.match(g.summary, / in place$/);
  const beyond = planChange({ verb: 'resize-ram', gpa: GiB, size: 128n * MiB }, map, L);
  t.equal(beyond.add[0]!.backing.kind, 'new', 'beyond the room: a new backing, the bytes copied');
  t.equal(planChange({ verb: 'resize-ram', gpa: GiB, size: 4n * MiB }, map, L).add[0]!.backing.kind, 'same', 'shrinking: the same backing');
});

t.test('split and move keep the backing; replace copies into a new one', async (t) => {
  const s = planChange({ verb: 'split-ram', gpa: 0n, at: 16n * MiB }, MAP, L);
  t.same(s.add, [
    { gpa: 0n, size: 16n * MiB, backing: { kind: 'same', of: 0n, offset: 0n } },
    { gpa: 16n * MiB, size: 48n * MiB, backing: { kind: 'same', of: 0n, offset: 16n * MiB } },
  ]);
  refused(t, () => planChange({ verb: 'split-ram', gpa: 0n, at: 64n * MiB }, MAP, L), 400, /0x4000000 is not inside ram-low/);
  refused(t, () => planChange({ verb: 'split-ram', gpa: GiB, at: GiB + 0x1000n }, MAP, L), 400, /2 MiB \(hugetlb RAM\)/);
  const m = planChange({ verb: 'move-ram', gpa: GiB, to: 2n * GiB }, MAP, L);
  t.same(m.add, [{ gpa: 2n * GiB, size: 8n * MiB, backing: { kind: 'same', of: GiB, offset: 0n } }]);
  t.same(planChange({ verb: 'move-ram', gpa: GiB, to: GiB + 4n * MiB }, MAP, L).remove, [GiB], 'onto part of its own old range');
  refused(t, () => planChange({ verb: 'move-ram', gpa: GiB, to: 32n * MiB }, MAP, L), 409, /overlaps ram-low/);
  refused(t, () => planChange({ verb: 'move-ram', gpa: GiB, to: GiB }, MAP, L), 400, /already at 0x40000000/);
  const r = planChange({ verb: 'replace-ram', gpa: 0n, backend: 'hugetlb' }, MAP, L);
  t.same(r.add, [{ gpa: 0n, size: 64n * MiB, backing: { kind: 'new', backend: 'hugetlb', copy: { from: 0n, bytes: 64n * MiB } } }]);
  t.match(r.summary, /replaced the memfd backing of ram-low .* with hugetlb, contents copied/);
  const odd: MapEntry[] = [{ name: 'odd', gpa: 0x1000n, size: 0x3000n, kind: 'ram', backend: 'anon' }, ...MAP.slice(1)];
  refused(
    t,
    () => planChange({ verb: 'replace-ram', gpa: 0x1000n, backend: 'hugetlb' }, odd, L),
    400,
    /gpa 0x1000 is not a multiple of 2 MiB/,
  );
});

t.test('with a device assigned, a split or shrink point falls between DMA mappings; the refusal names the granule', async (t) => {
  const units = (gpa: bigint, size: bigint, g: bigint) =>
    Array.from({ length: Number(size / g) }, (_, i) => ({ iova: gpa + BigInt(i) * g, size: g }));
  const dma = [...units(0n, 64n * MiB, 2n * MiB), ...units(GiB, 8n * MiB, 2n * MiB)];
  t.equal(planChange({ verb: 'split-ram', gpa: 0n, at: 16n * MiB }, MAP, L, dma).add.length, 2, 'on an edge');
  refused(
    t,
    () => planChange({ verb: 'split-ram', gpa: 0n, at: 17n * MiB }, MAP, L, dma),
    400,
    /^vm\.split-ram: at 0x1100000 is inside the DMA mapping \[0x1000000, 0x1200000\) of ram-low, and the IOMMU cannot cut a mapping: ram-low's DMA granule is 2 MiB, so e.g. 0x1000000 or 0x1200000$/,
  );
  t.equal(planChange({ verb: 'split-ram', gpa: 0n, at: 17n * MiB }, MAP, L).add.length, 2, 'no device: the page is all it needs');
  refused(
    t,
    () => planChange({ verb: 'resize-ram', gpa: 0n, size: 33n * MiB }, MAP, L, dma),
    400,
    /^vm\.resize-ram: the new end 0x2100000 is inside the DMA mapping \[0x2000000, 0x2200000\) of ram-low, .* granule is 2 MiB/,
  );
  t.same(planChange({ verb: 'resize-ram', gpa: 0n, size: 32n * MiB }, MAP, L, dma).remove, [0n]);
  t.ok(planChange({ verb: 'resize-ram', gpa: 0n, size: 66n * MiB }, MAP, L, dma), 'growing has no point inside a mapping');
  // A large region's units are coarser: the message says which.
  const big: MapEntry[] = [{ name: 'ram-high', gpa: 4n * GiB, size: 4n * GiB, kind: 'ram', backend: 'memfd' }, ...MAP];
  refused(
    t,
    () =>
      planChange({ verb: 'split-ram', gpa: 4n * GiB, at: 4n * GiB + 2n * MiB }, big, L, [...dma, ...units(4n * GiB, 4n * GiB, 4n * MiB)]),
    400,
    /ram-high's DMA granule is 4 MiB, so e\.g\. 0x100000000 or 0x100400000$/,
  );
});

t.test('a region that shares a DMA mapping with its neighbour cannot change alone', async (t) => {
  const pair: MapEntry[] = [
    { name: 'a', gpa: 0n, size: 32n * MiB, kind: 'ram', backend: 'memfd' },
    { name: 'b', gpa: 32n * MiB, size: 32n * MiB, kind: 'ram', backend: 'memfd' },
  ];
  const merged = [{ iova: 0n, size: 64n * MiB }];
  for (const c of [
    { verb: 'remove-ram', gpa: 32n * MiB },
    { verb: 'move-ram', gpa: 32n * MiB, to: GiB },
    { verb: 'replace-ram', gpa: 0n, backend: 'anon' },
    { verb: 'resize-ram', gpa: 0n, size: 16n * MiB },
  ] as const)
    refused(
      t,
      () => planChange(c, pair, L, merged),
      409,
      /shares the DMA mapping \[0x0, 0x4000000\) with its neighbour \(merged to fit the entry limit\), which the IOMMU unmaps only whole, so it cannot change alone$/,
    );
  t.ok(
    planChange({ verb: 'move-ram', gpa: 32n * MiB, to: GiB }, pair, L, [
      { iova: 0n, size: 32n * MiB },
      { iova: 32n * MiB, size: 32n * MiB },
    ]),
  );
});
