// Runs in L1 as root: proves DMA mappings with the igb PF doing real DMA
// through the emulated Intel IOMMU. A frame goes TX ring -> MAC loopback ->
// RX ring, all in pages mapped one by one through pin-core; then one RX
// buffer's page is unmapped and the next frame must not reach it.
// Usage: dma.js legacy|iommufd ...   (one JSON line per path)
import { spawnSync } from 'node:child_process';
import { pinCore, type BackendHandle } from '../../src/memory/pin-core.js';
import { VfioGroup } from '../../src/devices/vfio/group.js';
import { VfioCdev } from '../../src/devices/vfio/cdev.js';
import { closeFd, mmapAnon } from '../../src/sys/libc.js';
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
  pinCore.type1AttachGroup(h, g.fd);
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
