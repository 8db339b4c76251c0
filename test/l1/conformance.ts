// Runs in L1 as root: the DMA conformance cases on one path, each recording
// the kernel's exact answer ({ ok } or { errno }) plus the counters it moved.
// The rig test asserts these answers per path. Usage: conformance.js PATH
import { existsSync, writeFileSync } from 'node:fs';
import { pinCore, type BackendHandle, type PinCoreError } from '../../src/memory/pin-core.js';
import { processCharge } from '../../src/memlock/status.js';
import { VfioGroup } from '../../src/devices/vfio/group.js';
import { VfioCdev } from '../../src/devices/vfio/cdev.js';
import { assignablePf, bindVfio, createVfs, pciDevice } from '../../rig/l1/sysfs.js';

export type PathName = 'type1' | 'type1v2' | 'compat-type1v2' | 'iommufd' | 'mock';
type Answer = { ok: true; value?: unknown } | { ok: false; errno: string; op?: string };

const MiB = 1n << 20n;
const IOVA = 0x100000000n; // 4 GiB: above the 32-bit MSI window on every IOMMU here
const rw = { read: true, write: true };

interface Ctx {
  h: BackendHandle;
  path: PathName;
  cleanup: (() => void)[];
}

function answer(f: () => unknown): Answer {
  try {
    const value = f();
    return { ok: true, ...(value === undefined ? {} : { value: typeof value === 'bigint' ? `0x${value.toString(16)}` : value }) };
  } catch (e) {
    const err = e as PinCoreError;
    if (!err.code) throw e;
    return { ok: false, errno: err.code, op: err.op };
  }
}

function open(path: PathName): Ctx {
  const cleanup: (() => void)[] = [];
  if (path === 'mock') {
    const h = pinCore.iommufdOpen('/dev/iommu', -1);
    pinCore.iommufdMockDomain(h);
    return { h, path, cleanup };
  }
  const [vf] = createVfs(assignablePf().bdf, 1);
  const dev = bindVfio(vf!);
  if (path === 'iommufd') {
    const h = pinCore.iommufdOpen('/dev/iommu', -1);
    const cdev = VfioCdev.bind(dev.vfioCdev!, pinCore.backendFd(h));
    cdev.attach(pinCore.iommufdIoasId(h));
    cleanup.push(() => cdev.close());
    return { h, path, cleanup };
  }
  const h = pinCore.type1Open('/dev/vfio/vfio', -1);
  const group = VfioGroup.open(`/dev/vfio/${dev.iommuGroup}`);
  pinCore.type1AttachGroup(h, group.fd);
  pinCore.type1SetIommu(h, path === 'type1');
  cleanup.push(() => group.close());
  return { h, path, cleanup };
}

const results: Record<string, Answer | Record<string, unknown>> = {};
function record(name: string, a: Answer | Record<string, unknown>): void {
  results[name] = a;
}

function anon(size: bigint) {
  return pinCore.memAlloc('anon', size);
}

function runCases(c: Ctx): void {
  const { h } = c;
  const m = anon(4n * MiB);
  const va = m.vaddr;
  const lck = () => processCharge().vmLckKiB;
  const pin = () => processCharge().vmPinKiB;

  record('caps', { ok: true, value: pinCore.caps(h) as unknown });
  record('iova ranges', answer(() => pinCore.iovaRanges(h).map(([s, l]) => [`0x${s.toString(16)}`, `0x${l.toString(16)}`])));
  const before = { lck: lck(), pin: pin() };
  record('map exact', answer(() => pinCore.map(h, IOVA, 2n * MiB, { vaddr: va }, rw)));
  record('charge after map', { ok: true, value: { vmLckKiB: lck() - before.lck, vmPinKiB: pin() - before.pin } });
  record('map same range again', answer(() => pinCore.map(h, IOVA, 2n * MiB, { vaddr: va }, rw)));
  record('map overlapping tail', answer(() => pinCore.map(h, IOVA + MiB, 2n * MiB, { vaddr: va }, rw)));
  record('unmap bisecting', answer(() => pinCore.unmap(h, IOVA, MiB)));
  record('unmap exact', answer(() => pinCore.unmap(h, IOVA, 2n * MiB)));
  record('charge after unmap', { ok: true, value: { vmLckKiB: lck() - before.lck, vmPinKiB: pin() - before.pin } });
  record('unmap empty range', answer(() => pinCore.unmap(h, IOVA, 2n * MiB)));
  record('map unaligned iova', answer(() => pinCore.map(h, IOVA + 0x800n, 0x1000n, { vaddr: va }, rw)));
  record('map unaligned vaddr', answer(() => pinCore.map(h, IOVA, 0x1000n, { vaddr: va + 0x800n }, rw)));
  record('map unaligned size', answer(() => pinCore.map(h, IOVA, 0x1800n, { vaddr: va }, rw)));
  record('map zero size', answer(() => pinCore.map(h, IOVA, 0n, { vaddr: va }, rw)));
  record('map iova+size overflows', answer(() => pinCore.map(h, 0xfffffffffffff000n, 0x2000n, { vaddr: va }, rw)));
  record('map no access', answer(() => pinCore.map(h, IOVA, 0x1000n, { vaddr: va }, { read: false, write: false })));
  record('map read-only', answer(() => { pinCore.map(h, IOVA, 0x1000n, { vaddr: va }, { read: true, write: false }); pinCore.unmap(h, IOVA, 0x1000n); }));
  record('map MSI window 0xfee00000', answer(() => pinCore.map(h, 0xfee00000n, 0x1000n, { vaddr: va }, rw)));
  record('map above aperture', answer(() => pinCore.map(h, 1n << 60n, 0x1000n, { vaddr: va }, rw)));
  // A VA range with an unmapped page in the middle cannot be pinned.
  const holed = anon(3n * 0x1000n);
  pinCore.memFree(holed.vaddr + 0x1000n, 0x1000n, -1);
  const beforeHole = lck();
  record('map VA with a hole', answer(() => pinCore.map(h, IOVA, 0x3000n, { vaddr: holed.vaddr }, rw)));
  record('charge after failed map', { ok: true, value: { vmLckKiB: lck() - beforeHole } });
  // unmap-all
  record('map two then unmap all', answer(() => {
    pinCore.map(h, IOVA, MiB, { vaddr: va }, rw);
    pinCore.map(h, IOVA + 2n * MiB, MiB, { vaddr: va + MiB }, rw);
    return pinCore.unmapAll(h);
  }));
  record('charge after unmap all', { ok: true, value: { vmLckKiB: lck() - before.lck, vmPinKiB: pin() - before.pin } });
  record('copy', answer(() => {
    pinCore.map(h, IOVA, MiB, { vaddr: va }, rw);
    const l0 = lck() + pin();
    pinCore.copy(h, IOVA, IOVA + 4n * MiB, MiB);
    const extra = lck() + pin() - l0;
    pinCore.unmapAll(h);
    return { extraKiB: extra };
  }));
  pinCore.unmapAll(h);
  const mf = pinCore.memAlloc('memfd', 2n * MiB);
  record('map memfd by fd', answer(() => { pinCore.map(h, IOVA, 2n * MiB, { fd: mf.fd, offset: 0n }, rw); pinCore.unmap(h, IOVA, 2n * MiB); }));
  record('map memfd by vaddr', answer(() => { pinCore.map(h, IOVA, 2n * MiB, { vaddr: mf.vaddr }, rw); pinCore.unmap(h, IOVA, 2n * MiB); }));
  record('update vaddr', answer(() => {
    pinCore.map(h, IOVA, MiB, { vaddr: mf.vaddr }, rw);
    pinCore.type1UpdateVaddr(h, IOVA, MiB, null);
    pinCore.type1UpdateVaddr(h, IOVA, MiB, mf.vaddr);
    pinCore.unmap(h, IOVA, MiB);
  }));
  pinCore.unmapAll(h);
}

function main(): void {
  const path = process.argv[2] as PathName;
  const c = open(path);
  try {
    runCases(c);
  } finally {
    pinCore.close(c.h);
    for (const f of c.cleanup) f();
  }
  const after = processCharge();
  record('counters after close', { ok: true, value: { vmLckKiB: after.vmLckKiB, vmPinKiB: after.vmPinKiB } });
  const out = JSON.stringify({ path, results });
  if (process.env.PINION_CONFORMANCE_OUT) writeFileSync(process.env.PINION_CONFORMANCE_OUT, out);
  console.log(out);
}

if (existsSync('/dev/iommu')) main();
void pciDevice;
