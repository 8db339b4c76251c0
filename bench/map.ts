// Map/unmap throughput in L1, Pinion (TS -> pin-core -> ioctl) against the
// C reference (bench/ref/mapbench.c) doing the same ioctls on the same kernel
// in the same boot. Ratios, not absolute times, are the result: TCG makes
// absolute numbers meaningless. Usage (in L1, as root):
//   node dist/bench/map.js KERNEL MAPBENCH_BINARY OUT_JSON
import { measure } from 'mitata';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { pinCore, type BackendHandle, type MemoryKind } from '../src/memory/pin-core.js';
import { VfioGroup } from '../src/devices/vfio/group.js';
import { VfioCdev } from '../src/devices/vfio/cdev.js';
import { assignablePf, bindVfio, createVfs } from '../rig/l1/sysfs.js';
import { closeFd } from '../src/sys/libc.js';

const [kernel = 'type1', cRef = '', outFile = ''] = process.argv.slice(2);
const MiB = 1n << 20n;
const IOVA = 0x100000000n; // the C reference maps at the same IOVA
const rw = { read: true, write: true };
const SIZES = [256n * MiB, 1024n * MiB];
const KINDS: MemoryKind[] = ['anon', 'thp', 'memfd', 'hugetlb'];
const BIG = { min_samples: 3, max_samples: 5, min_cpu_time: 200e6, warmup_samples: 1, batch_samples: 1 } as const;
const ROUNDS = 3;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const [vf] = createVfs(assignablePf().bdf, 1);
const dev = bindVfio(vf!);
const groupPath = `/dev/vfio/${dev.iommuGroup}`;

interface Opened {
  h: BackendHandle;
  close: () => void;
}

const PATHS: Record<string, { cArgs: string[]; open: () => Opened }> = {
  legacy: {
    cArgs: ['type1', `${groupPath}:${dev.bdf}`],
    open() {
      const h = pinCore.type1Open('/dev/vfio/vfio', -1);
      const g = VfioGroup.open(groupPath);
      pinCore.type1AttachGroup(h, g.fd);
      pinCore.type1SetIommu(h, false);
      // Opening the device gives it a domain: iommufd's compat container pins only then.
      const devFd = g.deviceFd(dev.bdf);
      return { h, close: () => (closeFd(devFd), pinCore.close(h), g.close()) };
    },
  },
  iommufd: {
    cArgs: ['iommufd', dev.vfioCdev!],
    open() {
      const h = pinCore.iommufdOpen('/dev/iommu', -1);
      const c = VfioCdev.bind(dev.vfioCdev!, pinCore.backendFd(h));
      c.attach(pinCore.iommufdIoasId(h));
      return { h, close: () => (c.close(), pinCore.close(h)) };
    },
  },
};

function reserveHugepages(n: number): boolean {
  try {
    writeFileSync('/proc/sys/vm/nr_hugepages', String(n));
    return true;
  } catch {
    return false;
  }
}

/** The C reference's median ns per map+unmap pair over `iters` runs. */
function cPair(args: string[]): number {
  const r = spawnSync(cRef, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mapbench ${args.join(' ')}: ${r.stderr.trim()}`);
  const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { op: string; ns: number });
  if (rows[0]?.op === 'map+unmap 4K') return rows[0].ns;
  const maps = rows.filter((x) => x.op === 'map').map((x) => x.ns);
  const unmaps = rows.filter((x) => x.op === 'unmap').map((x) => x.ns);
  return median(maps.map((m, i) => m + unmaps[i]!));
}

async function main(): Promise<void> {
  const results: Record<string, unknown>[] = [];
  const hugetlb = reserveHugepages(640);
  for (const [path, p] of Object.entries(PATHS)) {
    for (const kind of KINDS) {
      if (kind === 'hugetlb' && !hugetlb) continue;
      for (const size of SIZES) {
        // Rounds alternate Pinion and C so drift in the emulated machine hits both; medians compared.
        const ours: number[] = [];
        const ref: number[] = [];
        for (let round = 0; round < ROUNDS; round++) {
          const mem = pinCore.memAlloc(kind, size);
          // One thread, like the C reference: both sides map memory populated the same way.
          pinCore.memPopulate(mem.vaddr, size, 1);
          // iommufd maps memfd RAM by fd (IOAS_MAP_FILE), as the VMM does; type1 by address.
          const backing = kind === 'memfd' && path === 'iommufd' ? { fd: mem.fd, offset: 0n } : { vaddr: mem.vaddr };
          const o = p.open();
          const stats = await measure(() => {
            pinCore.map(o.h, IOVA, size, backing, rw);
            pinCore.unmap(o.h, IOVA, size);
          }, BIG);
          o.close();
          pinCore.memFree(mem.vaddr, size, mem.fd);
          ours.push(stats.p50);
          ref.push(cPair([...p.cArgs, kind, `0x${size.toString(16)}`, '3']));
        }
        const [pn, cn] = [median(ours), median(ref)];
        const row = { path, kind, sizeMiB: Number(size / MiB), pinionNsPerPair: Math.round(pn), cNsPerPair: Math.round(cn), ratio: +(cn / pn).toFixed(3), rounds: ROUNDS };
        results.push(row);
        console.log(JSON.stringify(row));
      }
    }
    const o = p.open();
    const small = pinCore.memAlloc('anon', 0x1000n);
    pinCore.memPopulate(small.vaddr, 0x1000n, 1);
    const stats = await measure(() => {
      pinCore.map(o.h, IOVA, 0x1000n, { vaddr: small.vaddr }, rw);
      pinCore.unmap(o.h, IOVA, 0x1000n);
    }, { min_cpu_time: 500e6 });
    o.close();
    const c = cPair(['small', p.cArgs[0]!, p.cArgs[1]!, '2000']);
    const row = { path, kind: 'anon', sizeMiB: 4 / 1024, pinionNsPerPair: Math.round(stats.avg), cNsPerPair: Math.round(c), overheadNs: Math.round(stats.avg - c), ratio: +(c / stats.avg).toFixed(3) };
    results.push(row);
    console.log(JSON.stringify(row));
  }
  const out = { kernel, hugetlb, date: new Date().toISOString(), note: 'ratio = C ns / Pinion ns per map+unmap pair (medians over alternating rounds, same boot); >= 1 means Pinion is as fast', results };
  if (outFile) writeFileSync(outFile, JSON.stringify(out, null, 2) + '\n');
}

if (!existsSync(cRef)) throw new Error(`C reference ${cRef || '(none)'} not found: pass the mapbench binary built from bench/ref/mapbench.c`);
await main();
