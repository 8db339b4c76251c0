// The crossing: what a DMA op costs Pinion above its ioctl, in L1, against
// the C reference (bench/ref/mapbench.c, built as a library) issuing the
// same ioctls in the same process, on the same container or IOAS and the same
// memory.
//
// - 4 KiB pairs: the single-op calls (pinCore.map + pinCore.unmap, two
//   crossings), and batches of 1, 16 and 256 pairs through DmaMapper.run (one
//   crossing per batch: B maps, then their B unmaps), against C's loop of the
//   same ioctls.
// - What the VMM does: DmaMapper.sync of a guest memory map, as DmaListener
//   drives it on commit (RAM low from 0 and high from 4 GiB, in GuestRam's
//   memfd, THP and hugetlb backings, prefaulted as the VMM does), brought up
//   from nothing and taken down again, against C's maps and unmaps of the same
//   units (each range cut by pin-core's granule rule; by file where the
//   listener maps by file). The map and the unmap
//   phase are a cell each, timed in the same cycles.
//
// Every case is a cell of bench/method.ts: rounds in ABBA order, ratio = C
// time / Pinion time, adaptive rounds until the 95% interval is within +/-3%
// or a cap is hit. The caps keep a kernel's run (both paths) within about 10
// minutes under TCG. The old targets (Pinion's ns per op above C at batch 256
// at most 1000; single-op calls and batch of 1 at least 0.8 of C's speed) are
// in extra.targets. Usage (in L1, as root):
//   node dist/bench/crossing.js KERNEL LIBMAPBENCH_SO OUT_JSON
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { VfioGroup } from '../src/devices/vfio/group.js';
import { VfioCdev } from '../src/devices/vfio/cdev.js';
import { prefaultRam, ramRegions } from '../src/machine/ram-map.js';
import { DmaBatch } from '../src/memory/dma-batch.js';
import { DmaListener } from '../src/memory/dma-listener.js';
import { DmaMapper } from '../src/memory/dma-mapper.js';
import { GuestRam, type RamBackend } from '../src/memory/guest-ram.js';
import { MiB, ramRanges } from '../src/memory/layout.js';
import type { MemoryRegion } from '../src/memory/listener.js';
import { pinCore, type PlannedOp } from '../src/memory/pin-core.js';
import { closeFd } from '../src/sys/libc.js';
import { benchPaths, benchVf, loadMapbench, reserveHugepages, type BenchPath } from './l1-vf.js';
import { median } from './stats.js';
import {
  inOrder,
  makeRun,
  provenance,
  runCell,
  runRounds,
  summarize,
  t975,
  withRun,
  type Cell,
  type CellSpec,
  type StopRule,
  stopRule,
} from './method.js';

const [kernel = 'type1', cLib = '', outFile = ''] = process.argv.slice(2);
const PAGE = 4096;
const IOVA = 2 ** 32;
const BATCH_SIZES = [1, 16, 256];
/** 4 KiB pairs per timed sample, whatever the batch size: ~5 ms under TCG, against a clock read of microseconds. */
const PAIRS_PER_SAMPLE = 256;
const SAMPLES = 3;
const RAM_SIZES = [256n * MiB, 1024n * MiB];
const BACKENDS: RamBackend[] = ['memfd', 'anon', 'hugetlb'];
// A guest memory map cycle is ~0.1-0.3 s at 256 MiB under TCG: three a side per round there, one at 1 GiB.
const syncSamples = (size: bigint): number => (size <= 256n * MiB ? 3 : 1);
// Caps: a pair round is ~30 ms under TCG, so the rounds cap binds; a sync round up to ~2 s, so the seconds do.
// Per path: ~15 s of pairs (at worst 4 x 20 s) + 3 backings x (20 s + 40 s) of syncs: ~6-9 minutes for both paths.
const PAIR_RULE = stopRule({ minRounds: 4, maxRounds: 100, maxSeconds: 20 });
const syncRule = (size: bigint): StopRule => stopRule({ minRounds: 4, maxRounds: 40, maxSeconds: size <= 256n * MiB ? 20 : 40 });
const OVERHEAD_AT_MOST_NS = 1000;
const RATIO_AT_LEAST = 0.8;

const lib = loadMapbench(cLib);
const cBatch = lib.func('int64_t mapbench_batch(int fd, int type1, uint32_t ioas, uint64_t vaddr, uint64_t iova, int n, int reps)');
const cSync = lib.func(
  'int64_t mapbench_sync(int fd, int type1, uint32_t ioas, uint64_t vaddr, int memfd, const void *ranges, int n, _Out_ void *ns_out)',
);

const { dev, groupPath } = benchVf();

type Opened = BenchPath;
const PATHS = benchPaths(dev, groupPath);

function check(ns: number | bigint, what: string): number {
  const n = Number(ns);
  if (n < 0) throw new Error(`${what}: errno ${-n}`);
  return n;
}

const log = (c: Cell): void =>
  console.log(JSON.stringify({ name: c.name, estimate: c.estimate, ci: c.ci, rounds: c.rounds.length, noiseBound: c.noiseBound }));

/** 4 KiB pairs, ns per pair on each side: the single-op calls and the batches, a cell each. */
async function pairs(path: string, o: Opened): Promise<Cell[]> {
  const cells: Cell[] = [];
  const maxB = Math.max(...BATCH_SIZES);
  const mem = pinCore.memAlloc('anon', BigInt(maxB * PAGE));
  pinCore.memPopulate(mem.vaddr, BigInt(maxB * PAGE), 1);
  const va = Number(mem.vaddr);
  const h = o.mapper.handle;
  const fd = o.mapper.fd;
  /** C's side: PAIRS_PER_SAMPLE pairs in batches of b, one span timed in C; ns per pair. */
  const cSample = (b: number): number =>
    check(cBatch(fd, o.type1 ? 1 : 0, o.ioas, mem.vaddr, BigInt(IOVA), b, PAIRS_PER_SAMPLE / b), 'mapbench_batch') / PAIRS_PER_SAMPLE;
  /** Pinion's side: one span over PAIRS_PER_SAMPLE pairs; ns per pair. */
  const pinionSample = (fn: () => void): number => {
    const t0 = process.hrtime.bigint();
    fn();
    return Number(process.hrtime.bigint() - t0) / PAIRS_PER_SAMPLE;
  };

  // The single-op calls, as a caller would make them with Numbers and its own backing and prot objects.
  const backing = { vaddr: mem.vaddr };
  const rw = { read: true, write: true };
  const single = (): void => {
    for (let k = 0; k < PAIRS_PER_SAMPLE; k++) {
      pinCore.map(h, IOVA, PAGE, backing, rw);
      pinCore.unmap(h, IOVA, PAGE);
    }
  };
  const cases: [string, number, () => void, string][] = [['single-op calls', 1, single, 'pinCore.map + pinCore.unmap per pair']];
  for (const b of BATCH_SIZES) {
    const batch = new DmaBatch(2 * b);
    // Encoding is part of the path: the batch is written afresh each time, as a caller would.
    const run = (): void => {
      for (let k = 0; k < PAIRS_PER_SAMPLE / b; k++) {
        batch.clear();
        for (let i = 0; i < b; i++) batch.map(IOVA + i * PAGE, PAGE, va + i * PAGE);
        for (let i = 0; i < b; i++) batch.unmap(IOVA + i * PAGE, PAGE);
        o.mapper.run(batch);
      }
    };
    cases.push([`batch of ${b}`, b, run, `DmaMapper.run of ${b} maps then ${b} unmaps, encoded each time`]);
  }
  for (const [name, b, fn, what] of cases) {
    fn(); // both sides warm
    cSample(b);
    const c = await runCell(
      {
        name: `${path} ${name}`,
        unit: 'ns/pair',
        better: 'lower',
        figure: `median of ${SAMPLES} samples, each one clock span over ${PAIRS_PER_SAMPLE} 4 KiB map+unmap pairs / ${PAIRS_PER_SAMPLE} (${what}; C: the same ioctls in batches of ${b})`,
      },
      PAIR_RULE,
      () => median(Array.from({ length: SAMPLES }, () => pinionSample(fn))),
      () => median(Array.from({ length: SAMPLES }, () => cSample(b))),
    );
    log(c);
    cells.push(c);
  }
  pinCore.memFree(mem.vaddr, BigInt(maxB * PAGE), mem.fd);
  return cells;
}

/** DmaMapper.sync of a guest memory map, up from nothing and down again, as DmaListener drives it: map and unmap phase cells. */
async function syncs(path: string, o: Opened, hugetlb: boolean): Promise<{ cells: Cell[]; detail: Record<string, unknown>[] }> {
  const cells: Cell[] = [];
  const detail: Record<string, unknown>[] = [];
  const fd = o.mapper.fd;
  for (const backend of BACKENDS) {
    if (backend === 'hugetlb' && !hugetlb) continue;
    for (const size of RAM_SIZES) {
      const ram = GuestRam.allocate(size, backend, BigInt(pinCore.pageSize()));
      prefaultRam(ram);
      // The VMM's split (low RAM to the PCI hole, the rest from 4 GiB) scaled down, so a small RAM has both pieces.
      const ranges = ramRanges(size, (size * 3n) / 4n);
      const regions = ramRegions(ram, ranges);
      const listener = new DmaListener(o.mapper);
      let planned: PlannedOp[] = [];
      /** Pinion's cycle: the map phase (regions added, committed) and the unmap phase (removed, committed), ns each. */
      const pinionCycle = (): [number, number] => {
        const t0 = process.hrtime.bigint();
        for (const r of regions) listener.regionAdd(r);
        listener.commit();
        const t1 = process.hrtime.bigint();
        planned = listener.last!.ops;
        for (const r of regions) listener.regionRemove(r);
        listener.commit();
        return [Number(t1 - t0), Number(process.hrtime.bigint() - t1)];
      };
      pinionCycle(); // warm: the mapper's table, page tables, THP and hugetlb state
      // The same ioctls on both sides: C maps the units Pinion's plan maps (granule.rs cuts each range), then unmaps each.
      const down = listener.last!.ops;
      const units = planned.flatMap((op) => (op.op === 'map' ? [op] : []));
      if (units.length !== planned.length || down.length !== units.length || down.some((op) => op.op !== 'unmap'))
        throw new Error(`sync planned ${planned.map((op) => op.op).join(', ')} up and ${down.map((op) => op.op).join(', ')} down`);
      const unitWords = units.flatMap((u) => {
        const r = ranges.find((x) => x.gpa <= u.iova && u.iova < x.gpa + x.size)!;
        return [u.iova, u.size, r.offset + (u.iova - r.gpa)];
      });
      // C maps by file exactly where the listener does.
      const byFile = o.mapper.caps.canMapFile && ram.fd >= 0;
      const rangeWords = Buffer.from(new BigUint64Array(unitWords).buffer);
      const nsOut = Buffer.alloc(16);
      const cCycle = (): [number, number] => {
        check(cSync(fd, o.type1 ? 1 : 0, o.ioas, ram.vaddr, byFile ? ram.fd : -1, rangeWords, units.length, nsOut), 'mapbench_sync');
        return [Number(nsOut.readBigInt64LE(0)), Number(nsOut.readBigInt64LE(8))];
      };
      cCycle();

      const n = syncSamples(size);
      const base = `${path} sync ${backend} ${Number(size / MiB)} MiB`;
      const spec = (phase: 'map' | 'unmap'): CellSpec => ({
        name: `${base} ${phase}`,
        unit: 'ms',
        better: 'lower',
        figure: `${n === 1 ? 'one cycle' : `median of ${n} cycles`} (regions added and committed, removed and committed; C: the same maps, then unmaps), the ${phase} phase's clock span`,
      });
      const specs = [spec('map'), spec('unmap')];
      /** One side's figures for a round: the median of each phase over its cycles, in ms. */
      const side = (cycle: () => [number, number]): [number, number] => {
        const ps = Array.from({ length: n }, cycle);
        return [median(ps.map((p) => p[0])) / 1e6, median(ps.map((p) => p[1])) / 1e6];
      };
      const got = await runRounds(specs, syncRule(size), async (_k, order) => {
        const [p, r] = await inOrder(
          order,
          () => side(pinionCycle),
          () => side(cCycle),
        );
        return { [specs[0]!.name]: { pinion: p[0], reference: r[0] }, [specs[1]!.name]: { pinion: p[1], reference: r[1] } };
      });
      for (const c of got) log(c);
      cells.push(...got);
      detail.push({
        cells: specs.map((s) => s.name),
        ranges: ranges.map((r) => ({ gpaMiB: Number(r.gpa / MiB), sizeMiB: Number(r.size / MiB) })),
        mappings: units.length,
        byFile,
      });
      ram.free();
    }
  }
  return { cells, detail };
}

/** Pinion's ns per 4 KiB op above C's in a pair cell (an op is half a pair): mean of the per-round differences, 95% t interval. */
function overheadPerOp(c: Cell): { meanNs: number | null; ci: [number, number] | null } {
  const d = c.rounds.map((r) => (r.pinion - r.reference) / 2);
  if (d.length === 0) return { meanNs: null, ci: null };
  const mean = d.reduce((a, x) => a + x, 0) / d.length;
  if (d.length < 2) return { meanNs: Math.round(mean), ci: null };
  const sd = Math.sqrt(d.reduce((a, x) => a + (x - mean) ** 2, 0) / (d.length - 1));
  const h = (t975(d.length - 1) * sd) / Math.sqrt(d.length);
  return { meanNs: Math.round(mean), ci: [Math.round(mean - h), Math.round(mean + h)] };
}

/** The targets, per path: a claim holds only when its interval's bound clears it. */
function targets(path: string, cells: Cell[]): Record<string, unknown>[] {
  const byName = (name: string): Cell | undefined => cells.find((c) => c.name === `${path} ${name}`);
  const b256 = byName('batch of 256');
  const o = b256 ? overheadPerOp(b256) : { meanNs: null, ci: null };
  const ratioCells = [byName('single-op calls'), byName('batch of 1')].filter((c): c is Cell => !!c);
  const ratio = summarize(ratioCells, [RATIO_AT_LEAST]).claims[0]!;
  return [
    {
      path,
      claim: `${path}: Pinion's ns per 4 KiB op above C at batch 256 <= ${OVERHEAD_AT_MOST_NS} (upper bound of the 95% interval of per-round differences)`,
      holds: o.ci !== null && o.ci[1] <= OVERHEAD_AT_MOST_NS,
      cell: b256?.name,
      overheadNsPerOp: o.meanNs,
      ci: o.ci,
      atMost: OVERHEAD_AT_MOST_NS,
    },
    {
      path,
      claim: `${path}: single-op calls and batch of 1 >= ${RATIO_AT_LEAST} (C time / Pinion time, lower bound of the interval)`,
      ...ratio,
      cells: ratioCells.map((c) => ({ name: c.name, estimate: c.estimate, ci: c.ci })),
    },
  ];
}

const hugetlb = reserveHugepages(640);
const cells: Cell[] = [];
const syncDetail: Record<string, unknown>[] = [];
const targetClaims: Record<string, unknown>[] = [];
for (const [path, open] of Object.entries(PATHS)) {
  const o = open();
  try {
    const p = await pairs(path, o);
    const s = await syncs(path, o, hugetlb);
    cells.push(...p, ...s.cells);
    syncDetail.push(...s.detail);
    targetClaims.push(...targets(path, p));
  } finally {
    o.close();
  }
}
const run = makeRun({
  benchmark: 'crossing',
  variant: kernel,
  reference: 'C (bench/ref/mapbench.c) issuing the same ioctls on the same container or IOAS and memory, same process',
  provenance: provenance(),
  cells,
  extra: {
    hugetlb,
    iova: `0x${IOVA.toString(16)}`,
    pairsPerSample: PAIRS_PER_SAMPLE,
    note: 'pairs: ns per 4 KiB map+unmap pair (an op is half a pair); sync: ms of the map phase (guest memory map brought up) and the unmap phase (taken down)',
    sync: syncDetail,
    targets: targetClaims,
  },
});
if (outFile) writeFileSync(outFile, withRun(existsSync(outFile) ? readFileSync(outFile, 'utf8') : undefined, run));
for (const t of targetClaims) console.log(`target ${t.holds ? 'holds' : 'does not hold'}: ${String(t.claim)}`);
