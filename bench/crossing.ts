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
//   ranges (by file where the listener maps by file).
//
// Rounds alternate which side goes first. Usage (in L1, as root):
//   node dist/bench/crossing.js KERNEL LIBMAPBENCH_SO OUT_JSON
import { measure } from 'mitata';
import koffi from 'koffi';
import { availableParallelism } from 'node:os';
import { existsSync, writeFileSync } from 'node:fs';
import { VfioGroup } from '../src/devices/vfio/group.js';
import { VfioCdev } from '../src/devices/vfio/cdev.js';
import { prefaultRam } from '../src/machine/ram-map.js';
import { DmaBatch } from '../src/memory/dma-batch.js';
import { DmaListener } from '../src/memory/dma-listener.js';
import { DmaMapper } from '../src/memory/dma-mapper.js';
import { GuestRam, type RamBackend } from '../src/memory/guest-ram.js';
import { MiB, ramRanges } from '../src/memory/layout.js';
import type { MemoryRegion } from '../src/memory/listener.js';
import { pinCore } from '../src/memory/pin-core.js';
import { closeFd } from '../src/sys/libc.js';
import { assignablePf, bindVfio, createVfs } from '../rig/l1/sysfs.js';
import { commitId, median } from './stats.js';

const [kernel = 'type1', cLib = '', outFile = ''] = process.argv.slice(2);
const PAGE = 4096;
const IOVA = 2 ** 32;
const ROUNDS = 7;
const BATCH_SIZES = [1, 16, 256];
/** 4 KiB pairs per timed sample, whatever the batch size: under TCG a mitata sample costs ~0.5 ms of its own. */
const PAIRS_PER_SAMPLE = 256;
const SAMPLES = 5;
const SYNC_ROUNDS = 5;
const SYNC_SAMPLES = 3;
const RAM_SIZES = [256n * MiB, 1024n * MiB];
const BACKENDS: RamBackend[] = ['memfd', 'anon', 'hugetlb'];
const MITATA = { min_samples: SAMPLES, max_samples: SAMPLES, min_cpu_time: 0, warmup_samples: 1, batch_samples: 1 } as const;
// A sync cycle is milliseconds or more: no warm-up sample, the cell has warmed both sides already.
const SYNC_MITATA = { ...MITATA, min_samples: SYNC_SAMPLES, max_samples: SYNC_SAMPLES, warmup_samples: 0 } as const;

/**
 * The one place the statistic is chosen (bench/stats.ts is being reworked): per-round figures of both sides
 * in, the cell's figures out. Now: medians of each side, the median of the per-round ratios (C / Pinion,
 * 1.0 = as fast) and of the per-round differences (Pinion - C).
 */
function summarize(
  pinionNs: number[],
  cNs: number[],
): { pinionNs: number; cNs: number; ratio: number; overheadNs: number; roundRatios: number[] } {
  const ratios = pinionNs.map((p, i) => cNs[i]! / p);
  return {
    pinionNs: Math.round(median(pinionNs)),
    cNs: Math.round(median(cNs)),
    ratio: +median(ratios).toFixed(3),
    overheadNs: Math.round(median(pinionNs.map((p, i) => p - cNs[i]!))),
    roundRatios: ratios.map((r) => +r.toFixed(3)),
  };
}

/** Per-round figures of both sides, the order alternating by round so that drift hits both alike. */
async function rounds(n: number, pinion: () => Promise<number>, c: () => Promise<number> | number): Promise<[number[], number[]]> {
  const ours: number[] = [];
  const ref: number[] = [];
  for (let round = 0; round < n; round++) {
    if (round % 2) {
      ref.push(await c());
      ours.push(await pinion());
    } else {
      ours.push(await pinion());
      ref.push(await c());
    }
  }
  return [ours, ref];
}

if (!existsSync(cLib))
  throw new Error(`C reference ${cLib || '(none)'} not found: pass libmapbench.so built from bench/ref/mapbench.c with -DMAPBENCH_LIB`);
const lib = koffi.load(cLib);
const cBatch = lib.func('int64_t mapbench_batch(int fd, int type1, uint32_t ioas, uint64_t vaddr, uint64_t iova, int n, int reps)');
const cSync = lib.func(
  'int64_t mapbench_sync(int fd, int type1, uint32_t ioas, uint64_t vaddr, int memfd, const void *ranges, int n, _Out_ void *ns_out)',
);

const [vf] = createVfs(assignablePf().bdf, 1);
const dev = bindVfio(vf!);
const groupPath = `/dev/vfio/${dev.iommuGroup}`;

interface Opened {
  mapper: DmaMapper;
  type1: boolean;
  ioas: number;
  close: () => void;
}

const PATHS: Record<string, () => Opened> = {
  legacy() {
    const g = VfioGroup.open(groupPath);
    const mapper = DmaMapper.legacy((fd) => g.joinContainer(fd));
    // Opening the device gives it a domain: iommufd's compat container pins only then.
    const devFd = g.deviceFd(dev.bdf);
    return { mapper, type1: true, ioas: 0, close: () => (closeFd(devFd), mapper.close(), g.close()) };
  },
  iommufd() {
    const mapper = DmaMapper.iommufd();
    const c = VfioCdev.bind(dev.vfioCdev!, mapper.fd);
    c.attach(mapper.ioasId);
    return { mapper, type1: false, ioas: mapper.ioasId, close: () => (c.close(), mapper.close()) };
  },
};

function check(ns: number | bigint, what: string): number {
  const n = Number(ns);
  if (n < 0) throw new Error(`${what}: errno ${-n}`);
  return n;
}

function reserveHugepages(n: number): boolean {
  try {
    writeFileSync('/proc/sys/vm/nr_hugepages', String(n));
    return true;
  } catch {
    return false;
  }
}

/** 4 KiB pairs: ns per pair on each side, single-op calls and batches. */
async function pairs(path: string, o: Opened): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  const maxB = Math.max(...BATCH_SIZES);
  const mem = pinCore.memAlloc('anon', BigInt(maxB * PAGE));
  pinCore.memPopulate(mem.vaddr, BigInt(maxB * PAGE), 1);
  const va = Number(mem.vaddr);
  const h = o.mapper.handle;
  const fd = o.mapper.fd;
  const c = (b: number): number =>
    check(cBatch(fd, o.type1 ? 1 : 0, o.ioas, mem.vaddr, BigInt(IOVA), b, PAIRS_PER_SAMPLE / b), 'mapbench_batch');
  const cPerPair = (b: number): number => median(Array.from({ length: SAMPLES }, () => c(b) / PAIRS_PER_SAMPLE));

  // The single-op calls, as a caller would make them with Numbers and its own backing and prot objects.
  const backing = { vaddr: mem.vaddr };
  const rw = { read: true, write: true };
  const single = (): void => {
    for (let k = 0; k < PAIRS_PER_SAMPLE; k++) {
      pinCore.map(h, IOVA, PAGE, backing, rw);
      pinCore.unmap(h, IOVA, PAGE);
    }
  };
  const cells: [string, number, () => void][] = [['single-op calls', 1, single]];
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
    cells.push([`batch of ${b}`, b, run]);
  }
  for (const [cell, b, fn] of cells) {
    fn(); // both sides warm
    c(b);
    const [ours, ref] = await rounds(
      ROUNDS,
      async () => (await measure(fn, MITATA)).p50 / PAIRS_PER_SAMPLE,
      () => cPerPair(b),
    );
    const s = summarize(ours, ref);
    // A 4 KiB op is one map or one unmap: half a pair.
    const row = {
      path,
      cell,
      batch: b,
      ...s,
      overheadNsPerOp: Math.round(s.overheadNs / 2),
      rounds: ROUNDS,
      pairsPerSample: PAIRS_PER_SAMPLE,
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
  pinCore.memFree(mem.vaddr, BigInt(maxB * PAGE), mem.fd);
  return rows;
}

/** DmaMapper.sync of a guest memory map, up from nothing and down again, as DmaListener drives it. */
async function syncs(path: string, o: Opened, hugetlb: boolean): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  const fd = o.mapper.fd;
  for (const backend of BACKENDS) {
    if (backend === 'hugetlb' && !hugetlb) continue;
    for (const size of RAM_SIZES) {
      const ram = GuestRam.allocate(size, backend, BigInt(pinCore.pageSize()));
      prefaultRam(ram);
      // The VMM's split (low RAM to the PCI hole, the rest from 4 GiB) scaled down, so a small RAM has both pieces.
      const ranges = ramRanges(size, (size * 3n) / 4n);
      const regions = ranges.map((r, i): MemoryRegion => ({
        name: i ? 'ram-high' : 'ram-low',
        gpa: r.gpa,
        size: r.size,
        hva: ram.vaddr + r.offset,
        file: ram.fd >= 0 ? { fd: ram.fd, offset: r.offset } : undefined,
        kind: 'ram',
      }));
      const listener = new DmaListener(o.mapper);
      // Each side's map and unmap phases, timed inside every cycle; one median of each per round.
      let phases: [number, number][] = [];
      let planned: string[] = [];
      const cycle = (): void => {
        const t0 = process.hrtime.bigint();
        for (const r of regions) listener.regionAdd(r);
        listener.commit();
        const t1 = process.hrtime.bigint();
        planned = listener.last!.ops.map((op) => op.op);
        for (const r of regions) listener.regionRemove(r);
        listener.commit();
        phases.push([Number(t1 - t0), Number(process.hrtime.bigint() - t1)]);
      };
      // C maps by file exactly where the listener does.
      const byFile = o.mapper.caps.canMapFile && ram.fd >= 0;
      const rangeWords = Buffer.from(new BigUint64Array(ranges.flatMap((r) => [r.gpa, r.size, r.offset])).buffer);
      const nsOut = Buffer.alloc(16);
      const c = (): number => {
        check(cSync(fd, o.type1 ? 1 : 0, o.ioas, ram.vaddr, byFile ? ram.fd : -1, rangeWords, ranges.length, nsOut), 'mapbench_sync');
        const p: [number, number] = [Number(nsOut.readBigInt64LE(0)), Number(nsOut.readBigInt64LE(8))];
        phases.push(p);
        return p[0] + p[1];
      };
      cycle(); // warm: the mapper's table, page tables, THP and hugetlb state
      c();
      // The same ioctls on both sides: one map per RAM range up, one unmap each down.
      const down = listener.last!.ops.map((op) => op.op);
      if (planned.join() !== ranges.map(() => 'map').join() || down.join() !== ranges.map(() => 'unmap').join())
        throw new Error(`sync planned ${planned.join(', ')} up and ${down.join(', ')} down for ${ranges.length} RAM ranges`);
      const phaseRounds = { pinion: [] as [number, number][], c: [] as [number, number][] };
      const side = async (who: 'pinion' | 'c', run: () => Promise<number> | number): Promise<number> => {
        phases = [];
        const total = await run();
        phaseRounds[who].push([median(phases.map((p) => p[0])), median(phases.map((p) => p[1]))]);
        return total;
      };
      const [ours, ref] = await rounds(
        SYNC_ROUNDS,
        () => side('pinion', async () => (await measure(cycle, SYNC_MITATA)).p50),
        () => side('c', () => median(Array.from({ length: SYNC_SAMPLES }, c))),
      );
      const phase = (i: 0 | 1) =>
        summarize(
          phaseRounds.pinion.map((p) => p[i]),
          phaseRounds.c.map((p) => p[i]),
        );
      const row = {
        path,
        cell: 'sync',
        backend,
        ramMiB: Number(size / MiB),
        ranges: ranges.map((r) => ({ gpaMiB: Number(r.gpa / MiB), sizeMiB: Number(r.size / MiB) })),
        byFile,
        ...summarize(ours, ref),
        mapPhase: phase(0),
        unmapPhase: phase(1),
        rounds: SYNC_ROUNDS,
        samplesPerRound: SYNC_SAMPLES,
      };
      rows.push(row);
      console.log(JSON.stringify(row));
      ram.free();
    }
  }
  return rows;
}

const hugetlb = reserveHugepages(640);
const results: Record<string, unknown>[] = [];
for (const [path, open] of Object.entries(PATHS)) {
  const o = open();
  try {
    results.push(...(await pairs(path, o)), ...(await syncs(path, o, hugetlb)));
  } finally {
    o.close();
  }
}
const cell = (path: string, name: string) =>
  results.find((r) => r.path === path && r.cell === name) as { overheadNsPerOp: number; ratio: number } | undefined;
const out = {
  kernel,
  commit: commitId(),
  date: new Date().toISOString(),
  cpus: availableParallelism(),
  hugetlb,
  statistic:
    'per round: mitata p50 of the Pinion side, the median of as many C calls; a cell: medians of both, median of per-round ratios (C / Pinion) and differences (Pinion - C); rounds alternate which side goes first',
  note: 'pairs: ns per 4 KiB map+unmap pair (an op is half a pair), 256 pairs per sample; sync: ns per guest memory map brought up and taken down (mapPhase, unmapPhase: the two commits)',
  targets: Object.fromEntries(
    Object.keys(PATHS).map((p) => [
      p,
      {
        batchOf256OverheadNsPerOp: cell(p, 'batch of 256')?.overheadNsPerOp,
        atMost: 1000,
        batchOf1Ratio: cell(p, 'batch of 1')?.ratio,
        singleOpCallsRatio: cell(p, 'single-op calls')?.ratio,
        atLeast: 0.8,
      },
    ]),
  ),
  results,
};
if (outFile) writeFileSync(outFile, JSON.stringify(out, null, 2) + '\n');
