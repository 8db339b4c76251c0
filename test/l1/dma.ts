// Runs in L1 as root: proves DMA mappings with the igb PF doing real DMA
// through the emulated Intel IOMMU. A frame goes TX ring -> MAC loopback ->
// RX ring, all in pages mapped one by one through pin-core; then one RX
// buffer's page is unmapped and the next frame must not reach it.
// Usage: dma.js legacy|iommufd ...   (one JSON line per path)
import { spawnSync } from 'node:child_process';
import { pinCore, type BackendHandle } from '../../src/memory/pin-core.js';
import { VfioGroup } from '../../src/devices/vfio/group.js';
import { VfioCdev } from '../../src/devices/vfio/cdev.js';
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import { closeFd, MAP_SHARED, mmapAnon, mmapFd } from '../../src/sys/libc.js';
import { VFIO_PCI_BAR0_REGION_INDEX, VFIO_REGION_INFO_FLAG_MMAP } from '../../src/sys/vfio.js';
import type { PinCoreError } from '../../src/memory/pin-core.js';
import { assignablePf, bindVfio } from '../../rig/l1/sysfs.js';
import { IgbLoopback, RING_ENTRIES, type DmaPage } from '../support/igb.js';

const PAGE = 4096;
const IOVA = 0x1000000n;
const rw = { read: true, write: true };
const FRAME_LEN = 128;

interface Device {
  h: BackendHandle;
  fd: number;
  close: () => void;
}

function open(path: string): Device {
  const dev = bindVfio(assignablePf().bdf);
  if (path === 'iommufd') {
    const h = pinCore.iommufdOpen('/dev/iommu', -1);
    const c = VfioCdev.bind(dev.vfioCdev!, pinCore.backendFd(h));
    c.attach(pinCore.iommufdIoasId(h));
    return { h, fd: c.fd, close: () => (c.close(), pinCore.close(h)) };
  }
  const h = pinCore.type1Open('/dev/vfio/vfio', -1);
  const g = VfioGroup.open(`/dev/vfio/${dev.iommuGroup}`);
  g.joinContainer(pinCore.backendFd(h));
  pinCore.type1SetIommu(h, false);
  const fd = g.deviceFd(dev.bdf);
  return { h, fd, close: () => (closeFd(fd), pinCore.close(h), g.close()) };
}

function frame(seq: number): Uint8Array {
  const f = new Uint8Array(FRAME_LEN);
  f.fill(0xff, 0, 6); // broadcast
  f.set([0x02, 0, 0, 0, 0, 0x01], 6); // locally administered source
  f.set([0x88, 0xb5], 12); // local experimental ethertype
  for (let i = 14; i < FRAME_LEN; i++) f[i] = (i * 7 + seq) & 0xff;
  return f;
}

/** The physical frame behind a virtual address of this process (/proc/self/pagemap, root only). */
function physFrame(vaddr: bigint): bigint {
  const b = Buffer.alloc(8);
  const fd = openSync('/proc/self/pagemap', 'r');
  try {
    readSync(fd, b, 0, 8, Number((vaddr >> 12n) * 8n));
  } finally {
    closeSync(fd);
  }
  return b.readBigUInt64LE(0) & ((1n << 55n) - 1n);
}

/** The frame the Intel IOMMU's page table gives for an IOVA (CONFIG_INTEL_IOMMU_DEBUGFS), or null. */
function debugfsFrame(bdf: string, iova: bigint): bigint | null {
  const f = `/sys/kernel/debug/iommu/intel/${bdf}/domain_translation_struct`;
  if (!existsSync(f)) return null;
  const pfn = (iova >> 12n).toString(16);
  // Rows: "0x<IOVA_PFN> | <PML5E> <PML4E> <PDPE> <PDE> <PTE>"; the PTE holds the frame.
  const row = readFileSync(f, 'utf8')
    .split('\n')
    .find((l) => new RegExp(`^0x0*${pfn}\\b`).test(l.trim()));
  const pte = row?.trim().split(/\s+/).pop();
  return pte ? (BigInt(pte) & 0x000ffffffffff000n) >> 12n : null;
}

/** Maps the device's own BAR0 (a PFNMAP VMA) for DMA: peer-to-peer style, answered per path. */
function mapBar(d: Device, nic: IgbLoopback): string {
  const bar = nic.regionInfo(VFIO_PCI_BAR0_REGION_INDEX);
  if ((bar.flags & VFIO_REGION_INFO_FLAG_MMAP) === 0) return 'not mmap-able';
  const m = mmapFd(PAGE * 4, MAP_SHARED, d.fd, bar.offset);
  try {
    pinCore.map(d.h, IOVA + 0x100000n, BigInt(PAGE * 4), { vaddr: m.vaddr }, rw);
    pinCore.unmap(d.h, IOVA + 0x100000n, BigInt(PAGE * 4));
    return 'ok';
  } catch (e) {
    return (e as PinCoreError).code ?? String(e);
  } finally {
    m.unmap();
  }
}

function dmarFaults(): number {
  const r = spawnSync('dmesg', { encoding: 'utf8' });
  return (r.stdout.match(/DMAR: \[DMA (Write|Read)/g) ?? []).length;
}

async function run(path: string): Promise<Record<string, unknown>> {
  const d = open(path);
  const mem = mmapAnon(8 * PAGE);
  const page = (i: number): DmaPage => ({ iova: IOVA + BigInt(i * PAGE), bytes: mem.bytes.subarray(i * PAGE, (i + 1) * PAGE) });
  const [txRing, rxRing, txBuf, rxA, rxB] = [0, 1, 2, 3, 4].map(page) as [DmaPage, DmaPage, DmaPage, DmaPage, DmaPage];
  // One mapping per page, so one RX buffer can be unmapped alone.
  for (const p of [txRing, rxRing, txBuf, rxA, rxB]) pinCore.map(d.h, p.iova, BigInt(PAGE), { vaddr: mem.vaddr + (p.iova - IOVA) }, rw);
  const nic = new IgbLoopback(d.fd, path);
  const out: Record<string, unknown> = { path };
  try {
    await nic.init(txRing, rxRing, [rxA, rxB, ...Array.from({ length: RING_ENTRIES - 3 }, () => page(5))]);
    const f1 = frame(1);
    txBuf.bytes.set(f1);
    await nic.send(txRing, txBuf, FRAME_LEN);
    const r1 = await nic.receive(rxRing);
    out.received = r1.dd;
    out.receivedLength = r1.length;
    out.payloadMatches = r1.dd && Buffer.compare(Buffer.from(rxA.bytes.subarray(0, FRAME_LEN)), Buffer.from(f1)) === 0;
    const iommuFrame = debugfsFrame(assignablePf().bdf, rxA.iova);
    out.iommuFrameMatchesPage = iommuFrame === null ? null : iommuFrame === physFrame(mem.vaddr + (rxA.iova - IOVA));
    out.barMap = mapBar(d, nic);

    const faultsBefore = dmarFaults();
    pinCore.unmap(d.h, rxB.iova, BigInt(PAGE));
    rxB.bytes.fill(0xaa);
    const f2 = frame(2);
    txBuf.bytes.set(f2);
    await nic.send(txRing, txBuf, FRAME_LEN);
    await nic.receive(rxRing, 1500);
    out.unmappedBufferUntouched = rxB.bytes.every((b) => b === 0xaa);
    out.dmarFaultLogged = dmarFaults() > faultsBefore;
  } finally {
    nic.quiesce();
    pinCore.unmapAll(d.h);
    d.close();
    mem.unmap();
  }
  return out;
}

for (const path of process.argv.slice(2)) console.log(JSON.stringify(await run(path)));
