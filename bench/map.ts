// Map/unmap cost in L1, Pinion (TS -> pin-core -> ioctl) against the C
// reference (bench/ref/mapbench.c, built as a library) doing the same ioctls
// on the same kernel, in the same process, on the same container or IOAS and
// the same memory. Each cell follows bench/method.ts: rounds in ABBA order,
// each side's figure in a round the median of 3 samples, a sample one clock
// span over n map+unmap pairs divided by n (the C side spans its own loop in
// C); ratio = C time / Pinion time. The 4 KiB pair, where the crossing from
// TS to the kernel shows, is a cell like the others. Usage (in L1, as root):
//   node dist/bench/map.js KERNEL LIBMAPBENCH_SO OUT_JSON
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { pinCore, type BackendHandle, type MemoryKind } from '../src/memory/pin-core.js';
import { VfioGroup } from '../src/devices/vfio/group.js';
import { VfioCdev } from '../src/devices/vfio/cdev.js';
import { benchPaths, benchVf, loadMapbench, reserveHugepages, type BenchPath } from './l1-vf.js';
import { closeFd } from '../src/sys/libc.js';
import { median } from './stats.js';
import { makeRun, provenance, runCell, withRun, type Cell, stopRule } from './method.js';

const [kernel = 'type1', cLib = '', outFile = ''] = process.argv.slice(2);
const KiB = 1n << 10n;
const MiB = 1n << 20n;
const IOVA = 0x100000000n;
const rw = { read: true, write: true };
const SIZES = [256n * MiB, 1024n * MiB];
const KINDS: MemoryKind[] = ['anon', 'thp', 'memfd', 'hugetlb'];
const SAMPLES = 3;
const RULE = stopRule({ minRounds: 4, maxRounds: 40, maxSeconds: 60 });
// Pairs per sample: enough that a sample's clock reads and loop cost are noise against the pairs.
const pairsPerSample = (size: bigint): number => (size <= 4n * KiB ? 200 : size <= 256n * MiB ? 8 : 4);

const lib = loadMapbench(cLib);
const mapbenchPairs = lib.func(
  'int64_t mapbench_pairs(int fd, int type1, uint32_t ioas, uint64_t vaddr, int memfd, uint64_t offset, uint64_t iova, uint64_t size, uint32_t n)',
);

const { dev, groupPath } = benchVf();

type Opened = BenchPath;
const PATHS = benchPaths(dev, groupPath);

/** The C side: n pairs on our container/IOAS and memory, one span timed in C; ns per pair. */
function cSample(o: Opened, vaddr: bigint, memfd: number, size: bigint, n: number): number {
  const ns = Number(mapbenchPairs(o.mapper.fd, o.type1 ? 1 : 0, o.ioas, vaddr, memfd, 0n, IOVA, size, n));
  if (ns < 0) throw new Error(`mapbench_pairs: errno ${-ns}`);
  return ns / n;
}

/** Pinion's side: n pairs, one span; ns per pair. */
function pinionSample(pair: () => void, n: number): number {
  const t0 = process.hrtime.bigint();
  for (let k = 0; k < n; k++) pair();
  return Number(process.hrtime.bigint() - t0) / n;
}

const sizeName = (size: bigint): string => (size < MiB ? `${size / KiB} KiB` : `${size / MiB} MiB`);

async function cell(o: Opened, path: string, kind: MemoryKind, size: bigint): Promise<Cell> {
  const mem = pinCore.memAlloc(kind, size);
  pinCore.memPopulate(mem.vaddr, size, 1);
  // iommufd maps memfd RAM by fd (IOAS_MAP_FILE), as the VMM does; type1 by address. C does the same.
  const byFile = kind === 'memfd' && path === 'iommufd';
  const backing = byFile ? { fd: mem.fd, offset: 0n } : { vaddr: mem.vaddr };
  const pinion = (): void => {
    pinCore.map(o.mapper.handle, IOVA, size, backing, rw);
    pinCore.unmap(o.mapper.handle, IOVA, size);
  };
  const n = pairsPerSample(size);
  const memfd = byFile ? mem.fd : -1;
  // Both sides warm: page tables, THP splits, hugetlb reservations, the JIT.
  pinionSample(pinion, n);
  cSample(o, mem.vaddr, memfd, size, n);
  const us = (xs: number[]): number => median(xs) / 1000;
  const c = await runCell(
    {
      name: `${path} ${kind} ${sizeName(size)}`,
      unit: 'µs/pair',
      better: 'lower',
      figure: `median of ${SAMPLES} samples, each one clock span over ${n} map+unmap pairs / ${n}`,
    },
    RULE,
    () => us(Array.from({ length: SAMPLES }, () => pinionSample(pinion, n))),
    () => us(Array.from({ length: SAMPLES }, () => cSample(o, mem.vaddr, memfd, size, n))),
  );
  pinCore.memFree(mem.vaddr, size, mem.fd);
  console.log(JSON.stringify({ name: c.name, estimate: c.estimate, ci: c.ci, rounds: c.rounds.length, noiseBound: c.noiseBound }));
  return c;
}

const cells: Cell[] = [];
const hugetlb = reserveHugepages(640);
for (const [path, open] of Object.entries(PATHS)) {
  const o = open();
  for (const kind of KINDS) {
    if (kind === 'hugetlb' && !hugetlb) continue;
    for (const size of SIZES) cells.push(await cell(o, path, kind, size));
  }
  cells.push(await cell(o, path, 'anon', 4n * KiB));
  o.close();
}
const run = makeRun({
  benchmark: 'map',
  variant: kernel,
  reference: 'C (bench/ref/mapbench.c) on the same container or IOAS and memory, same process',
  provenance: provenance(),
  cells,
  thresholds: [0.95],
  extra: { hugetlb, iova: `0x${IOVA.toString(16)}` },
});
if (outFile) writeFileSync(outFile, withRun(existsSync(outFile) ? readFileSync(outFile, 'utf8') : undefined, run));
