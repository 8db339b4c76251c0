// Runs in L1: the DMA conformance cases on one path, each recording the
// kernel's exact answer ({ ok } or { errno }) plus the counters it moved.
// As root it prepares the devices (VF bound to vfio-pci, nodes opened up,
// type1's dma_entry_limit lowered) and reruns itself as uid 1000 with an
// 8 MiB RLIMIT_MEMLOCK, the way an unprivileged VMM runs.
// Usage: conformance.js PATH...   (one JSON line per path; the rig test asserts them)
import { existsSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { pinCore, type BackendHandle, type PinCoreError } from '../../src/memory/pin-core.js';
import { processCharge } from '../../src/memlock/status.js';
import { DmaMapper } from '../../src/memory/dma-mapper.js';
import { VfioGroup } from '../../src/devices/vfio/group.js';
import { VfioCdev } from '../../src/devices/vfio/cdev.js';
import { dmaBufExport, dmaBufProbe } from '../../src/devices/vfio/dma-buf.js';
import { regionInfo, regionRead, regionWrite } from '../../src/devices/vfio/region.js';
import { closeFd, ioctl, MAP_SHARED, mmapFd, openPath } from '../../src/sys/libc.js';
import { PCI_COMMAND, PCI_COMMAND_MEMORY } from '../../src/sys/pci-regs.js';
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_RESET,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_ROM_REGION_INDEX,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
} from '../../src/sys/vfio.js';
import { rerunAsUser, vfForUser, type UserVf } from './as-user.js';

export type PathName = 'type1' | 'type1v2' | 'compat-type1v2' | 'iommufd' | 'mock';
type Answer = { ok: true; value?: unknown } | { ok: false; errno: string; op?: string };

const MiB = 1n << 20n;
// 16 MiB: inside the first usable range on every path here (the mock
// domain's aperture starts there; Intel's first range starts at 0).
const IOVA = 0x1000000n;
const ENTRY_LIMIT = 100;
const MEMLOCK_BYTES = 8 * 1024 * 1024;
const TYPE1_LIMIT_PARAM = '/sys/module/vfio_iommu_type1/parameters/dma_entry_limit';
const rw = { read: true, write: true };

interface Ctx {
  h: BackendHandle;
  mapper: DmaMapper;
  path: PathName;
  /** The VF's device fd (group or cdev), for the peer-to-peer cases; none on the mock domain. */
  device?: { fd: number; path: string };
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

function open(path: PathName, dev: UserVf): Ctx {
  const cleanup: (() => void)[] = [];
  if (path === 'mock' || path === 'iommufd') {
    const h = pinCore.iommufdOpen('/dev/iommu', -1);
    let device: Ctx['device'];
    // iommufd pins when a domain is attached: map first, attach, and watch the charge move.
    const m = anon(2n * MiB);
    pinCore.map(h, IOVA, 2n * MiB, { vaddr: m.vaddr }, rw);
    const before = processCharge();
    if (path === 'mock') {
      pinCore.iommufdMockDomain(h);
    } else {
      record(
        'cdev attach before bind',
        answer(() => {
          const fd = openPath(dev.cdev);
          try {
            ioctl(
              fd,
              VFIO_DEVICE_ATTACH_IOMMUFD_PT,
              vfio_device_attach_iommufd_pt.make(pinCore.iommufdIoasId(h)),
              'VFIO_DEVICE_ATTACH_IOMMUFD_PT',
              { path: dev.cdev },
            );
          } finally {
            closeFd(fd);
          }
        }),
      );
      const cdev = VfioCdev.bind(dev.cdev, pinCore.backendFd(h));
      record(
        'cdev bind twice',
        answer(() =>
          ioctl(cdev.fd, VFIO_DEVICE_BIND_IOMMUFD, vfio_device_bind_iommufd.make(pinCore.backendFd(h)), 'VFIO_DEVICE_BIND_IOMMUFD', {
            path: dev.cdev,
          }),
        ),
      );
      record(
        'group open while cdev bound',
        answer(() => closeFd(openPath(dev.group))),
      );
      cdev.attach(pinCore.iommufdIoasId(h));
      cleanup.push(() => cdev.close());
      device = { fd: cdev.fd, path: dev.cdev };
    }
    const after = processCharge();
    record('charge at attach', {
      ok: true,
      value: { vmLckKiB: after.vmLckKiB - before.vmLckKiB, vmPinKiB: after.vmPinKiB - before.vmPinKiB },
    });
    pinCore.unmap(h, IOVA, 2n * MiB);
    return { h, mapper: DmaMapper.fromHandle(h), path, device, cleanup };
  }
  const h = pinCore.type1Open('/dev/vfio/vfio', -1);
  const group = VfioGroup.open(dev.group);
  record(
    'group status',
    answer(() => group.status()),
  );
  record(
    'map before SET_IOMMU',
    answer(() => pinCore.map(h, IOVA, 0x1000n, { vaddr: anon(0x1000n).vaddr }, rw)),
  );
  group.joinContainer(pinCore.backendFd(h));
  pinCore.type1SetIommu(h, path === 'type1');
  // type1 pins at map time; iommufd's compat container only once the device
  // is opened and gets a domain. Map first, open the device, watch the charge.
  const m = anon(2n * MiB);
  const c0 = processCharge();
  pinCore.map(h, IOVA, 2n * MiB, { vaddr: m.vaddr }, rw);
  const c1 = processCharge();
  const devFd = group.deviceFd(dev.bdf);
  const c2 = processCharge();
  record('charge at map', { ok: true, value: { vmLckKiB: c1.vmLckKiB - c0.vmLckKiB, vmPinKiB: c1.vmPinKiB - c0.vmPinKiB } });
  record('charge at device open', { ok: true, value: { vmLckKiB: c2.vmLckKiB - c1.vmLckKiB, vmPinKiB: c2.vmPinKiB - c1.vmPinKiB } });
  pinCore.unmap(h, IOVA, 2n * MiB);
  record(
    'cdev open while group in a container',
    answer(() => closeFd(openPath(dev.cdev))),
  );
  cleanup.push(
    () => closeFd(devFd),
    () => group.close(),
  );
  return { h, mapper: DmaMapper.fromHandle(h), path, device: { fd: devFd, path: dev.group }, cleanup };
}

const results: Record<string, Answer | Record<string, unknown>> = {};
function record(name: string, a: Answer | Record<string, unknown>): void {
  results[name] = a;
  clean();
}

let currentHandle: BackendHandle | null = null;

/** Each case starts from an empty IOAS/container whatever the last one left. */
function clean(): void {
  if (currentHandle === null) return;
  try {
    pinCore.unmapAll(currentHandle);
  } catch {
    /* nothing mapped */
  }
}

function anon(size: bigint) {
  return pinCore.memAlloc('anon', size);
}

function runCases(c: Ctx): void {
  const { h } = c;
  currentHandle = h;
  const m = anon(4n * MiB);
  const va = m.vaddr;
  const lck = () => processCharge().vmLckKiB;
  const pin = () => processCharge().vmPinKiB;

  record('caps', { ok: true, value: pinCore.caps(h) as unknown });
  record(
    'iova ranges',
    answer(() => pinCore.iovaRanges(h).map(([s, l]) => [`0x${s.toString(16)}`, `0x${l.toString(16)}`])),
  );
  const before = { lck: lck(), pin: pin() };
  const map2M = () => pinCore.map(h, IOVA, 2n * MiB, { vaddr: va }, rw);
  record(
    'map exact',
    answer(() => {
      map2M();
      return { vmLckKiB: lck() - before.lck, vmPinKiB: pin() - before.pin };
    }),
  );
  record(
    'map same range again',
    answer(() => (map2M(), map2M())),
  );
  record(
    'map overlapping tail',
    answer(() => (map2M(), pinCore.map(h, IOVA + MiB, 2n * MiB, { vaddr: va }, rw))),
  );
  record(
    'unmap bisecting',
    answer(() => (map2M(), pinCore.unmap(h, IOVA, MiB))),
  );
  record(
    'unmap exact',
    answer(() => (map2M(), pinCore.unmap(h, IOVA, 2n * MiB))),
  );
  record('charge after unmap', { ok: true, value: { vmLckKiB: lck() - before.lck, vmPinKiB: pin() - before.pin } });
  record(
    'unmap empty range',
    answer(() => pinCore.unmap(h, IOVA, 2n * MiB)),
  );
  record(
    'map unaligned iova',
    answer(() => pinCore.map(h, IOVA + 0x800n, 0x1000n, { vaddr: va }, rw)),
  );
  record(
    'map unaligned vaddr',
    answer(() => pinCore.map(h, IOVA, 0x1000n, { vaddr: va + 0x800n }, rw)),
  );
  record(
    'map unaligned size',
    answer(() => pinCore.map(h, IOVA, 0x1800n, { vaddr: va }, rw)),
  );
  record(
    'map zero size',
    answer(() => pinCore.map(h, IOVA, 0n, { vaddr: va }, rw)),
  );
  record(
    'map iova+size overflows',
    answer(() => pinCore.map(h, 0xfffffffffffff000n, 0x2000n, { vaddr: va }, rw)),
  );
  record(
    'map no access',
    answer(() => pinCore.map(h, IOVA, 0x1000n, { vaddr: va }, { read: false, write: false })),
  );
  record(
    'map read-only',
    answer(() => {
      pinCore.map(h, IOVA, 0x1000n, { vaddr: va }, { read: true, write: false });
      pinCore.unmap(h, IOVA, 0x1000n);
    }),
  );
  record(
    'map MSI window 0xfee00000',
    answer(() => pinCore.map(h, 0xfee00000n, 0x1000n, { vaddr: va }, rw)),
  );
  record(
    'map above aperture',
    answer(() => pinCore.map(h, 1n << 60n, 0x1000n, { vaddr: va }, rw)),
  );
  // A VA range with an unmapped page in the middle cannot be pinned.
  const holed = anon(3n * 0x1000n);
  pinCore.memFree(holed.vaddr + 0x1000n, 0x1000n, -1);
  const beforeHole = lck();
  record(
    'map VA with a hole',
    answer(() => pinCore.map(h, IOVA, 0x3000n, { vaddr: holed.vaddr }, rw)),
  );
  record('charge after failed map', { ok: true, value: { vmLckKiB: lck() - beforeHole } });
  // unmap-all
  record(
    'map two then unmap all',
    answer(() => {
      pinCore.map(h, IOVA, MiB, { vaddr: va }, rw);
      pinCore.map(h, IOVA + 2n * MiB, MiB, { vaddr: va + MiB }, rw);
      return pinCore.unmapAll(h);
    }),
  );
  record('charge after unmap all', { ok: true, value: { vmLckKiB: lck() - before.lck, vmPinKiB: pin() - before.pin } });
  record(
    'copy',
    answer(() => {
      pinCore.map(h, IOVA, MiB, { vaddr: va }, rw);
      const l0 = lck() + pin();
      pinCore.copy(h, IOVA, IOVA + 4n * MiB, MiB);
      const extra = lck() + pin() - l0;
      pinCore.unmapAll(h);
      return { extraKiB: extra };
    }),
  );
  pinCore.unmapAll(h);
  const mf = pinCore.memAlloc('memfd', 2n * MiB);
  record(
    'map memfd by fd',
    answer(() => {
      pinCore.map(h, IOVA, 2n * MiB, { fd: mf.fd, offset: 0n }, rw);
      pinCore.unmap(h, IOVA, 2n * MiB);
    }),
  );
  record(
    'map memfd by vaddr',
    answer(() => {
      pinCore.map(h, IOVA, 2n * MiB, { vaddr: mf.vaddr }, rw);
      pinCore.unmap(h, IOVA, 2n * MiB);
    }),
  );
  record(
    'update vaddr',
    answer(() => {
      pinCore.map(h, IOVA, MiB, { vaddr: mf.vaddr }, rw);
      pinCore.type1UpdateVaddr(h, IOVA, MiB, null);
      pinCore.type1UpdateVaddr(h, IOVA, MiB, mf.vaddr);
      pinCore.unmap(h, IOVA, MiB);
    }),
  );
  pinCore.unmapAll(h);
  record(
    'change process, memfd mapping',
    answer(() => {
      pinCore.map(h, IOVA, MiB, { fd: mf.fd, offset: 0n }, rw);
      try {
        pinCore.iommufdChangeProcess(h);
      } finally {
        pinCore.unmap(h, IOVA, MiB);
      }
    }),
  );
  record(
    'change process, anonymous mapping',
    answer(() => {
      pinCore.map(h, IOVA, MiB, { vaddr: va }, rw);
      try {
        pinCore.iommufdChangeProcess(h);
      } finally {
        pinCore.unmap(h, IOVA, MiB);
      }
    }),
  );
  record(
    'rlimit mode get',
    answer(() => pinCore.iommufdOption(h, 'rlimit_mode', null)),
  );
  record(
    'rlimit mode set unprivileged',
    answer(() => pinCore.iommufdOption(h, 'rlimit_mode', 1n)),
  );
  const lim0 = lck() + pin();
  const big = anon(16n * MiB);
  record(
    'map beyond RLIMIT_MEMLOCK',
    answer(() => pinCore.map(h, IOVA, 16n * MiB, { vaddr: big.vaddr }, rw)),
  );
  record('charge after ENOMEM', { ok: true, value: { deltaKiB: lck() + pin() - lim0 } });
  record(
    'entry limit',
    answer(() => {
      let n = 0;
      try {
        for (; n <= ENTRY_LIMIT; n++) pinCore.map(h, IOVA + BigInt(n) * 0x2000n, 0x1000n, { vaddr: va }, rw);
        return { mapped: n };
      } finally {
        pinCore.unmapAll(h);
      }
    }),
  );
  // The mapper: a transient remap of one region through the planner.
  const A = { iova: IOVA, size: MiB, backing: { vaddr: va }, prot: rw };
  const B = { iova: IOVA + MiB, size: MiB, backing: { vaddr: va + MiB }, prot: rw };
  const Bmoved = { ...B, iova: IOVA + 8n * MiB };
  // The mapper keeps its own table, so these run without the per-case unmap-all.
  const mapper = c.mapper;
  const syncCases = {
    initial: answer(() => mapper.sync([A, B]).ops.map((o) => o.op)),
    moves: answer(() => {
      const l0 = lck() + pin();
      const r = mapper.sync([A, Bmoved]);
      return { ops: r.ops.map((o) => o.op), extraKiB: lck() + pin() - l0 };
    }),
    table: answer(() => mapper.mapped().map((r) => `0x${r.iova.toString(16)}+0x${r.size.toString(16)}`)),
    empty: answer(() => mapper.sync([]).ops.map((o) => o.op)),
  };
  record('sync initial', syncCases.initial);
  record('sync moves a region', syncCases.moves);
  record('sync leaves the table exact', syncCases.table);
  record('sync to nothing', syncCases.empty);
  pinCore.unmapAll(h);
  if (c.device) p2pCases(c, c.device);
}

/**
 * Peer-to-peer: the VF's BAR 0 DMA-mapped by its mmap's address and as a dma-buf, on each path, with
 * what the kernel charges; a dma-buf's export checks, and what a reset and memory decoding off do to it.
 */
function p2pCases(c: Ctx, device: NonNullable<Ctx['device']>): void {
  const { h } = c;
  const { fd, path } = device;
  const charge = () => {
    const p = processCharge();
    return p.vmLckKiB + p.vmPinKiB;
  };
  const bar = regionInfo(fd, 0, path);
  record('P2P: BAR 0', { ok: true, value: { size: `0x${bar.size.toString(16)}`, mmap: bar.mmapAreas.length > 0 } });
  const size = bar.size;
  const mem = mmapFd(Number(size), MAP_SHARED, fd, bar.offset, path);
  // A map that answers, with the charge it added while held and the bytes its unmap reports.
  const held = (map: () => void, during: () => void = () => {}) => {
    const c0 = charge();
    map();
    const chargedKiB = charge() - c0;
    during();
    return { chargedKiB, unmapped: pinCore.unmap(h, IOVA, size) };
  };
  try {
    record(
      'P2P: map BAR by vaddr',
      answer(() => held(() => pinCore.map(h, IOVA, size, { vaddr: mem.vaddr }, rw))),
    );
    record(
      'P2P: map BAR by vaddr, device reset while mapped',
      answer(() =>
        held(
          () => pinCore.map(h, IOVA, size, { vaddr: mem.vaddr }, rw),
          () => ioctl(fd, VFIO_DEVICE_RESET, 0, 'VFIO_DEVICE_RESET', { path }),
        ),
      ),
    );
  } finally {
    mem.unmap();
  }
  record(
    'P2P: dma-buf probe',
    answer(() => dmaBufProbe(fd, path)),
  );
  const exported = (bar: number, ranges: { offset: bigint; length: bigint }[]) =>
    answer(() => closeFd(dmaBufExport(fd, bar, ranges, path)));
  record('P2P: dma-buf export, part of the BAR', exported(0, [{ offset: 0x1000n, length: 0x1000n }]));
  record('P2P: dma-buf export, unaligned range', exported(0, [{ offset: 0x800n, length: 0x1000n }]));
  record('P2P: dma-buf export, past the BAR', exported(0, [{ offset: 0n, length: size + 0x1000n }]));
  record('P2P: dma-buf export, the ROM', exported(VFIO_PCI_ROM_REGION_INDEX, [{ offset: 0n, length: 0x1000n }]));
  record('P2P: dma-buf export, no range', exported(0, []));
  let buf = -1;
  record(
    'P2P: dma-buf export',
    answer(() => void (buf = dmaBufExport(fd, 0, [{ offset: 0n, length: size }], path))),
  );
  if (buf < 0) return;
  const byBuf = (offset: bigint) => ({ fd: buf, offset });
  try {
    record(
      'P2P: map dma-buf',
      answer(() => held(() => pinCore.map(h, IOVA, size, byBuf(0n), rw))),
    );
    record(
      'P2P: map part of a dma-buf',
      answer(() => {
        pinCore.map(h, IOVA, 0x1000n, byBuf(0x1000n), rw);
        return pinCore.unmap(h, IOVA, 0x1000n);
      }),
    );
    record(
      'P2P: map dma-buf past its end',
      answer(() => pinCore.map(h, IOVA, size + 0x1000n, byBuf(0n), rw)),
    );
    record(
      'P2P: map dma-buf of two ranges',
      answer(() => {
        const two = dmaBufExport(
          fd,
          0,
          [
            { offset: 0n, length: 0x1000n },
            { offset: 0x2000n, length: 0x1000n },
          ],
          path,
        );
        try {
          pinCore.map(h, IOVA, 0x2000n, { fd: two, offset: 0n }, rw);
          return pinCore.unmap(h, IOVA, 0x2000n);
        } finally {
          closeFd(two);
        }
      }),
    );
    // A reset revokes every dma-buf of the device while it runs; iommufd then unmaps the dma-buf's
    // pages from its domains for good (iopt_revoke_notify), and the IOAS keeps the area until unmapped.
    record(
      'P2P: map dma-buf, device reset while mapped',
      answer(() =>
        held(
          () => pinCore.map(h, IOVA, size, byBuf(0n), rw),
          () => ioctl(fd, VFIO_DEVICE_RESET, 0, 'VFIO_DEVICE_RESET', { path }),
        ),
      ),
    );
    record(
      'P2P: map dma-buf after a reset',
      answer(() => held(() => pinCore.map(h, IOVA, size, byBuf(0n), rw))),
    );
    // Memory decoding off revokes a dma-buf until it is back on; but a VF has no memory-enable bit
    // (no_command_memory), so vfio-pci never revokes for a command write to one, and the map goes through.
    const cfg = regionInfo(fd, VFIO_PCI_CONFIG_REGION_INDEX, path);
    const cmd = new Uint8Array(2);
    regionRead(fd, cfg, PCI_COMMAND, cmd, path);
    const command = cmd[0]! | (cmd[1]! << 8);
    const setCommand = (v: number) => regionWrite(fd, cfg, PCI_COMMAND, new Uint8Array([v & 0xff, v >> 8]), path);
    setCommand(command & ~PCI_COMMAND_MEMORY);
    try {
      record(
        'P2P: map dma-buf, VF memory bit cleared',
        answer(() => held(() => pinCore.map(h, IOVA, size, byBuf(0n), rw))),
      );
    } finally {
      setCommand(command);
    }
  } finally {
    closeFd(buf);
  }
}

function prepare(): UserVf {
  const dev = vfForUser();
  if (existsSync(TYPE1_LIMIT_PARAM)) writeFileSync(TYPE1_LIMIT_PARAM, String(ENTRY_LIMIT));
  return dev;
}

function asUser(path: PathName, dev: UserVf): string {
  const r = rerunAsUser(fileURLToPath(import.meta.url), MEMLOCK_BYTES, ['--as-user', path, JSON.stringify(dev)], 'pipe');
  if (r.status !== 0) throw new Error(`conformance run as uid 1000 exited ${r.status}`);
  return r.stdout;
}

function main(): void {
  if (process.argv[2] !== '--as-user') {
    for (const path of process.argv.slice(2) as PathName[]) process.stdout.write(asUser(path, prepare()));
    return;
  }
  const path = process.argv[3] as PathName;
  const dev = JSON.parse(process.argv[4]!) as UserVf;
  const c = open(path, dev);
  try {
    runCases(c);
  } finally {
    pinCore.close(c.h);
    for (const f of c.cleanup) f();
  }
  const after = processCharge();
  record('counters after close', { ok: true, value: { vmLckKiB: after.vmLckKiB, vmPinKiB: after.vmPinKiB } });
  console.log(
    JSON.stringify({ path, uid: process.getuid?.(), results }, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v)),
  );
}

main();
