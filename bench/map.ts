// Map/unmap throughput in L1, Pinion (TS -> pin-core -> ioctl) against the C
// reference (bench/ref/mapbench.c, built as a library) doing the same ioctls
// on the same kernel, in the same process, on the same container or IOAS and
// the same memory. Rounds alternate the two and each round gives a ratio, so
// the emulated machine's drift hits both sides alike; the result is the
// median of those paired ratios. Usage (in L1, as root):
//   node dist/bench/map.js KERNEL LIBMAPBENCH_SO OUT_JSON
import { measure } from 'mitata';
import koffi from 'koffi';
import { existsSync, writeFileSync } from 'node:fs';
import { pinCore, type BackendHandle, type MemoryKind } from '../src/memory/pin-core.js';
import { VfioGroup } from '../src/devices/vfio/group.js';
import { VfioCdev } from '../src/devices/vfio/cdev.js';
import { assignablePf, bindVfio, createVfs } from '../rig/l1/sysfs.js';
import { closeFd } from '../src/sys/libc.js';
import { median } from './stats.js';

const [kernel = 'type1', cLib = '', outFile = ''] = process.argv.slice(2);
const MiB = 1n << 20n;
const IOVA = 0x100000000n;
const rw = { read: true, write: true };
const SIZES = [256n * MiB, 1024n * MiB];
const KINDS: MemoryKind[] = ['anon', 'thp', 'memfd', 'hugetlb'];
const ROUNDS = 7;
const C_PAIRS = 3;
const OURS = { min_samples: 3, max_samples: 3, min_cpu_time: 0, warmup_samples: 0, batch_samples: 1 } as const;
// Each mitata sample runs several pairs: under TCG a sample costs mitata ~0.5 ms of its own, which
// would otherwise be charged to a 10 ms pair. The direct (hrtime) figure per pair is kept as a check.
const pairsPerSample = (size: bigint): number => (size <= 256n * MiB ? 8 : 4);

if (!existsSync(cLib))
  throw new Error(`C reference ${cLib || '(none)'} not found: pass libmapbench.so built from bench/ref/mapbench.c with -DMAPBENCH_LIB`);
const lib = koffi.load(cLib);
const mapbenchPair = lib.func(
  'int64_t mapbench_pair(int fd, int type1, uint32_t ioas, uint64_t vaddr, int memfd, uint64_t offset, uint64_t iova, uint64_t size)',
);

const [vf] = createVfs(assignablePf().bdf, 1);
const dev = bindVfio(vf!);
const groupPath = `/dev/vfio/${dev.iommuGroup}`;

interface Opened {
  h: BackendHandle;
  type1: boolean;
  ioas: number;
  close: () => void;
}

const PATHS: Record<string, () => Opened> = {
  legacy() {
    const h = pinCore.type1Open('/dev/vfio/vfio', -1);
    const g = VfioGroup.open(groupPath);
    g.joinContainer(pinCore.backendFd(h));
    pinCore.type1SetIommu(h, false);
    // Opening the device gives it a domain: iommufd's compat container pins only then.
    const devFd = g.deviceFd(dev.bdf);
    return { h, type1: true, ioas: 0, close: () => (closeFd(devFd), pinCore.close(h), g.close()) };
  },
  iommufd() {
    const h = pinCore.iommufdOpen('/dev/iommu', -1);
    const c = VfioCdev.bind(dev.vfioCdev!, pinCore.backendFd(h));
    c.attach(pinCore.iommufdIoasId(h));
    return { h, type1: false, ioas: pinCore.iommufdIoasId(h), close: () => (c.close(), pinCore.close(h)) };
  },
};

/** The C side: one pair on our container/IOAS and memory, ns (the ioctls timed in C). */
function cPair(o: Opened, vaddr: bigint, memfd: number, size: bigint): number {
  const ns = Number(mapbenchPair(pinCore.backendFd(o.h), o.type1 ? 1 : 0, o.ioas, vaddr, memfd, 0n, IOVA, size));
  if (ns < 0) throw new Error(`mapbench_pair: errno ${-ns}`);
  return ns;
}

function reserveHugepages(n: number): boolean {
  try {
    writeFileSync('/proc/sys/vm/nr_hugepages', String(n));
    return true;
  } catch {
    return false;
  }
}

const results: Record<string, unknown>[] = [];
const hugetlb = reserveHugepages(640);
for (const [path, open] of Object.entries(PATHS)) {
  const o = open();
  for (const kind of KINDS) {
    if (kind === 'hugetlb' && !hugetlb) continue;
    for (const size of SIZES) {
      const mem = pinCore.memAlloc(kind, size);
      pinCore.memPopulate(mem.vaddr, size, 1);
      // iommufd maps memfd RAM by fd (IOAS_MAP_FILE), as the VMM does; type1 by address. C does the same.
      const byFile = kind === 'memfd' && path === 'iommufd';
      const backing = byFile ? { fd: mem.fd, offset: 0n } : { vaddr: mem.vaddr };
      const pinion = (): void => {
        pinCore.map(o.h, IOVA, size, backing, rw);
        pinCore.unmap(o.h, IOVA, size);
      };
      pinion(); // both sides warm: page tables, THP splits, hugetlb reservations
      cPair(o, mem.vaddr, byFile ? mem.fd : -1, size);
      const ours: number[] = [];
      const ref: number[] = [];
      const ratios: number[] = [];
      const hr: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        const n = pairsPerSample(size);
        const stats = await measure(() => {
          for (let k = 0; k < n; k++) pinion();
        }, OURS);
        const oursNs = stats.p50 / n;
        const c = median(Array.from({ length: C_PAIRS }, () => cPair(o, mem.vaddr, byFile ? mem.fd : -1, size)));
        hr.push(
          median(
            Array.from({ length: C_PAIRS }, () => {
              const t0 = process.hrtime.bigint();
              pinion();
              return Number(process.hrtime.bigint() - t0);
            }),
          ),
        );
        ours.push(oursNs);
        ref.push(c);
        ratios.push(c / oursNs);
      }
      pinCore.memFree(mem.vaddr, size, mem.fd);
      const row = {
        path,
        kind,
        sizeMiB: Number(size / MiB),
        pinionNsPerPair: Math.round(median(ours)),
        cNsPerPair: Math.round(median(ref)),
        ratio: +median(ratios).toFixed(3),
        roundRatios: ratios.map((r) => +r.toFixed(3)),
        rounds: ROUNDS,
        pairsPerSample: pairsPerSample(size),
        directNsPerPair: Math.round(median(hr)),
        directRatio: +(median(ref) / median(hr)).toFixed(3),
      };
      results.push(row);
      console.log(JSON.stringify(row));
    }
  }
  // Per-call overhead: a 4 KiB pair, where the ioctl is cheap and the crossing shows.
  const small = pinCore.memAlloc('anon', 0x1000n);
  pinCore.memPopulate(small.vaddr, 0x1000n, 1);
  const stats = await measure(
    () => {
      pinCore.map(o.h, IOVA, 0x1000n, { vaddr: small.vaddr }, rw);
      pinCore.unmap(o.h, IOVA, 0x1000n);
    },
    { min_cpu_time: 500e6 },
  );
  const c = median(Array.from({ length: 2000 }, () => cPair(o, small.vaddr, -1, 0x1000n)));
  pinCore.memFree(small.vaddr, 0x1000n, small.fd);
  const row = {
    path,
    kind: 'anon',
    sizeMiB: 4 / 1024,
    pinionNsPerPair: Math.round(stats.p50),
    cNsPerPair: Math.round(c),
    overheadNs: Math.round(stats.p50 - c),
    ratio: +(c / stats.p50).toFixed(3),
  };
  results.push(row);
  console.log(JSON.stringify(row));
  o.close();
}
const big = results.filter((r) => (r.sizeMiB as number) >= 256);
const out = {
  kernel,
  hugetlb,
  date: new Date().toISOString(),
  note: 'ratio = C ns / Pinion ns per map+unmap pair: median of per-round ratios, rounds alternating Pinion (mitata, 8 pairs per sample at 256 MiB, 4 at 1 GiB) and the C library on the same container/IOAS and memory, in one process; >= 1 means Pinion is as fast. directRatio times single Pinion pairs with hrtime instead.',
  cellsAtOrAbove095: `${big.filter((r) => (r.ratio as number) >= 0.95).length} of ${big.length}`,
  results,
};
if (outFile) writeFileSync(outFile, JSON.stringify(out, null, 2) + '\n');
