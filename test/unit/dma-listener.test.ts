// The DMA listener's side of the locked-memory budget: the headroom it hands
// the planner at each commit, and how a refusal reads; and remapBudget, the
// limit that headroom comes from on each accounting path.
import t from 'tap';
import { DmaListener } from '../../src/memory/dma-listener.js';
import { DmaError, type DmaMapper } from '../../src/memory/dma-mapper.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { MemoryRegion } from '../../src/memory/listener.js';
import type { Region, SyncResult } from '../../src/memory/pin-core.js';
import { remapBudget, type LimitSource } from '../../src/memlock/preflight.js';

const MiB = 1n << 20n;
const GiB = 1n << 30n;

interface Call {
  regions: Region[];
  headroom: bigint | null;
}

/** A DMA space that records each sync and answers with the next of `answers` (a result, or an error to throw). */
function space(answers: (SyncResult | Error)[], canMapFile = false): { mapper: DmaMapper; calls: Call[] } {
  const calls: Call[] = [];
  const sync = (regions: Region[], headroom: bigint | null): SyncResult => {
    calls.push({ regions, headroom });
    const a = answers.shift() ?? charged(0n);
    if (a instanceof Error) throw a;
    return a;
  };
  return { mapper: { caps: { canMapFile }, sync } as unknown as DmaMapper, calls };
}

const charged = (finalCharged: bigint): SyncResult => ({ ops: [], peakCharged: finalCharged, finalCharged });
const ram = (gpa: bigint, size: bigint, extra: Partial<MemoryRegion> = {}): MemoryRegion => ({
  name: `ram@${gpa}`,
  gpa,
  size,
  hva: 0x7f00_0000_0000n + gpa,
  kind: 'ram',
  ...extra,
});
const limit = (bytes: bigint) => () => ({ bytes, why: 'the test limit' });

t.test('headroom: the limit less what the space held after the last sync', async (t) => {
  const { mapper, calls } = space([charged(256n * MiB), charged(GiB), charged(GiB)]);
  const l = new DmaListener(mapper, limit(GiB));
  l.regionAdd(ram(0n, 256n * MiB));
  l.commit();
  l.regionAdd(ram(GiB, 768n * MiB));
  l.commit();
  l.commit();
  t.same(
    calls.map((c) => c.headroom),
    [GiB, 768n * MiB, 0n],
  );
  t.equal(l.last?.finalCharged, GiB);
});

t.test('headroom never goes below 0 when the limit drops under what is held', async (t) => {
  let cap = GiB;
  const { mapper, calls } = space([charged(GiB)]);
  const l = new DmaListener(mapper, () => ({ bytes: cap, why: 'x' }));
  l.commit();
  cap = 512n * MiB;
  l.commit();
  t.same(
    calls.map((c) => c.headroom),
    [GiB, 0n],
    'asked afresh at each commit',
  );
});

t.test('no limit: the planner gets null', async (t) => {
  const { mapper, calls } = space([charged(GiB)]);
  const l = new DmaListener(mapper);
  l.commit();
  l.commit();
  t.same(
    calls.map((c) => c.headroom),
    [null, null],
  );
});

t.test('what is mapped: RAM only, IOVA = GPA, by file where the backend can, read-only kept', async (t) => {
  const file = { fd: 9, offset: 0x1000n };
  const bar: MemoryRegion = { ...ram(8n * MiB, MiB), kind: 'device' };
  const regions = [ram(0n, MiB, { file }), ram(4n * MiB, MiB, { readonly: true }), bar];
  const byVaddr = space([]);
  const byFile = space([], true);
  for (const { mapper } of [byVaddr, byFile]) {
    const l = new DmaListener(mapper);
    regions.forEach((r) => l.regionAdd(r));
    l.commit();
  }
  const prot = { read: true, write: true };
  t.same(byFile.calls[0]!.regions, [
    { iova: 0n, size: MiB, backing: { fd: 9, offset: 0x1000n }, prot },
    { iova: 4n * MiB, size: MiB, backing: { vaddr: 0x7f00_0040_0000n }, prot: { read: true, write: false } },
  ]);
  t.same(byVaddr.calls[0]!.regions[0]!.backing, { vaddr: 0x7f00_0000_0000n }, 'no MAP_FILE: by address even with a file');
  t.equal(byVaddr.calls[0]!.regions.length, 2, 'the device BAR is not DMA-mapped');
});

t.test('a removed region is not mapped at the next commit', async (t) => {
  const { mapper, calls } = space([]);
  const l = new DmaListener(mapper);
  const a = ram(0n, MiB);
  l.regionAdd(a);
  l.regionAdd(ram(MiB, MiB));
  l.regionRemove(a);
  l.commit();
  t.same(
    calls[0]!.regions.map((r) => r.iova),
    [MiB],
  );
});

const refusal = (code: string, op?: string, finalCharged?: bigint): DmaError =>
  new DmaError(code, op, undefined, undefined, undefined, `DMA plan refused: ${code}`, finalCharged);

t.test('a plan refused over the limit says what is held and which limit; the held figure stays', async (t) => {
  const { mapper, calls } = space([charged(300n * MiB), refusal('ENOMEM', undefined, 300n * MiB), charged(300n * MiB)]);
  const l = new DmaListener(mapper, () => ({ bytes: GiB, why: 'the process limit' }));
  l.commit();
  t.throws(() => l.commit(), {
    name: 'DmaError',
    code: 'ENOMEM',
    op: undefined,
    message: 'DMA plan refused: ENOMEM (this VM holds 300 MiB; the limit is the process limit); the DMA map is unchanged',
    finalCharged: 300n * MiB,
  });
  l.commit();
  t.same(
    calls.map((c) => c.headroom),
    [GiB, 724n * MiB, 724n * MiB],
    'a refused plan changed nothing, so neither does the headroom',
  );
});

t.test('a kernel error part way: the next headroom starts from what the table charges after it', async (t) => {
  // Make-before-break: the new 1 GiB was mapped, then unmapping the old one failed, so both are charged.
  const { mapper, calls } = space([charged(GiB), refusal('EBUSY', 'VFIO_IOMMU_UNMAP_DMA', 2n * GiB), charged(GiB)]);
  const l = new DmaListener(mapper, limit(4n * GiB));
  l.commit();
  t.throws(() => l.commit(), { code: 'EBUSY' });
  t.equal(l.held, 2n * GiB);
  l.commit();
  t.same(
    calls.map((c) => c.headroom),
    [4n * GiB, 3n * GiB, 2n * GiB],
  );
  t.equal(l.held, GiB, 'and from the next success');
});

t.test('a kernel error part way through GuestMemory: the rollback sync gets the headroom the partial map leaves', async (t) => {
  const { mapper, calls } = space([charged(MiB), refusal('ENOMEM', 'VFIO_IOMMU_MAP_DMA', 5n * MiB), charged(MiB)]);
  const m = new GuestMemory();
  m.update((u) => u.add(ram(0n, MiB)));
  m.addListener(new DmaListener(mapper, limit(8n * MiB)));
  t.throws(() => m.update((u) => u.add(ram(GiB, 4n * MiB))), { code: 'ENOMEM', op: 'VFIO_IOMMU_MAP_DMA' });
  t.same(
    calls.map((c) => c.headroom),
    [8n * MiB, 7n * MiB, 3n * MiB],
  );
});

t.test('other failures pass through as they are', async (t) => {
  const kernel = refusal('ENOMEM', 'VFIO_IOMMU_MAP_DMA');
  const einval = refusal('EINVAL');
  const nolimit = refusal('ENOMEM');
  const plain = new TypeError('x');
  const cases = [
    [kernel, limit(GiB), 'ENOMEM from the kernel part way'],
    [einval, limit(GiB), 'not ENOMEM'],
    [nolimit, () => null, 'no limit to name'],
    [plain, limit(GiB), 'not a DmaError'],
  ] as const;
  for (const [e, budget, what] of cases) {
    const l = new DmaListener(space([e]).mapper, budget);
    let thrown: unknown;
    try {
      l.commit();
    } catch (x) {
      thrown = x;
    }
    t.equal(thrown, e, what);
  }
});

t.test('a refusal through GuestMemory: the old map is put back and synced again', async (t) => {
  const { mapper, calls } = space([charged(MiB), refusal('ENOMEM'), charged(MiB)]);
  const m = new GuestMemory();
  m.update((u) => u.add(ram(0n, MiB)));
  m.addListener(new DmaListener(mapper, limit(2n * MiB)));
  t.throws(() => m.update((u) => u.add(ram(GiB, 4n * MiB))), { code: 'ENOMEM' });
  t.same(
    calls.map((c) => c.regions.map((r) => r.iova)),
    [[0n], [0n, GiB], [0n]],
  );
  t.same(
    calls.map((c) => c.headroom),
    [2n * MiB, MiB, MiB],
  );
  t.same(
    m.list().map((r) => r.gpa),
    [0n],
  );
});

function limits(over: Partial<{ cap: boolean; softKiB: number | null; othersKiB: number }> = {}): LimitSource & { asked: number[] } {
  const asked: number[] = [];
  return {
    asked,
    capIpcLock: () => over.cap ?? false,
    memlockSoftKiB: () => (over.softKiB === undefined ? 1024 * 1024 : over.softKiB),
    uid: () => 1000,
    othersKiB: (uid) => (asked.push(uid), over.othersKiB ?? 0),
  };
}

t.test('remapBudget: per process, the process limit', async (t) => {
  const type1 = limits({ othersKiB: 512 * 1024 });
  const why = "this process's RLIMIT_MEMLOCK of 1024 MiB";
  t.same(remapBudget('type1', 'per-user', type1), { bytes: GiB, why }, 'type1 is per process whatever was asked');
  t.same(type1.asked, [], "other processes' charges do not count");
  t.equal(remapBudget('iommufd', 'per-process', limits({ softKiB: 65536 }))?.bytes, 64n * MiB);
  t.equal(remapBudget('compat', 'per-user', limits({ softKiB: 1536 }))?.why, "this process's RLIMIT_MEMLOCK of 1.5 MiB");
});

t.test("remapBudget: per user, the limit less the user's other processes", async (t) => {
  const l = limits({ softKiB: 4 * 1024 * 1024, othersKiB: 3 * 1024 * 1024 });
  t.same(remapBudget('iommufd', 'per-user', l), {
    bytes: GiB,
    why: "RLIMIT_MEMLOCK 4096 MiB, checked against user 1000's total, of which other processes hold 3072 MiB",
  });
  t.same(l.asked, [1000]);
  const over = remapBudget('iommufd', 'per-user', limits({ softKiB: 1024, othersKiB: 4096 }));
  t.equal(over?.bytes, 0n, 'others over the limit: nothing left, not negative');
});

t.test('remapBudget: no budget when the kernel checks nothing', async (t) => {
  t.equal(remapBudget('iommufd', 'per-user', limits({ softKiB: null })), null, 'RLIMIT_MEMLOCK unlimited');
  t.equal(remapBudget('type1', 'per-process', limits({ cap: true })), null, 'CAP_IPC_LOCK');
  t.equal(remapBudget('iommufd', 'per-user', limits({ cap: true })), null);
});
