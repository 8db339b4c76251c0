// A minimal userspace driver for the 82576 (igb) PF through a VFIO device fd,
// enough to prove DMA through the IOMMU: MAC loopback (RCTL.LBM_MAC) sends a
// frame from a TX ring and receives it into an RX ring, both in memory the
// test mapped at IOVAs. QEMU's igb quirks: it raises STATUS.LU only from its
// autoneg timer (kick autoneg through MDIC), RX uses advanced descriptors only,
// reset completion shows as CTRL.RST clearing.
import { ioctl, preadExact, pwriteExact } from '../../src/sys/libc.js';
import {
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_PCI_BAR0_REGION_INDEX,
  VFIO_PCI_CONFIG_REGION_INDEX,
  vfio_region_info,
} from '../../src/sys/vfio.js';

// Register offsets (82576 datasheet, section 8)
const CTRL = 0x0000,
  STATUS = 0x0008,
  MDIC = 0x0020,
  IMC = 0x1528,
  RCTL = 0x0100,
  TCTL = 0x0400;
const RDBAL = 0xc000,
  RDBAH = 0xc004,
  RDLEN = 0xc008,
  SRRCTL = 0xc00c,
  RDH = 0xc010,
  RDT = 0xc018,
  RXDCTL = 0xc028;
const TDBAL = 0xe000,
  TDBAH = 0xe004,
  TDLEN = 0xe008,
  TDH = 0xe010,
  TDT = 0xe018,
  TXDCTL = 0xe028;
const CTRL_RST = 1 << 26,
  CTRL_SLU = 1 << 6,
  STATUS_LU = 1 << 1;
const RCTL_EN = 1 << 1,
  RCTL_UPE = 1 << 3,
  RCTL_MPE = 1 << 4,
  RCTL_LBM_MAC = 1 << 6,
  RCTL_BAM = 1 << 15,
  RCTL_SECRC = 1 << 26;
const TCTL_EN = 1 << 1,
  TCTL_PSP = 1 << 3;
const QUEUE_ENABLE = 1 << 25;
const SRRCTL_DESCTYPE_ADV_ONEBUF = 1 << 25;
const MDIC_OP_WRITE = 1 << 26,
  MDIC_READY = 1 << 28,
  PHY_ADDR = 1 << 21;
const BMCR_ANENABLE = 0x1000,
  BMCR_ANRESTART = 0x0200,
  BMCR_FULLDPLX = 0x0100,
  BMCR_SPEED1000 = 0x0040;
// Advanced TX data descriptor: DTYP data, DEXT, EOP, IFCS, RS
const ADVTXD_DTYP_DATA = 0x3 << 20,
  TXD_EOP = 1 << 24,
  TXD_IFCS = 1 << 25,
  TXD_RS = 1 << 27,
  TXD_DEXT = 1 << 29;
export const RING_ENTRIES = 8; // 128 bytes: the minimum ring length multiple

export interface DmaPage {
  iova: bigint;
  bytes: Uint8Array; // what the CPU sees of the same page
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class IgbLoopback {
  private bar0 = 0n;
  private cfg = 0n;
  private txTail = 0;
  private rxNext = 0;

  constructor(
    readonly fd: number,
    readonly path: string,
  ) {
    this.bar0 = this.region(VFIO_PCI_BAR0_REGION_INDEX);
    this.cfg = this.region(VFIO_PCI_CONFIG_REGION_INDEX);
  }

  private region(index: number): bigint {
    return this.regionInfo(index).offset;
  }

  regionInfo(index: number): { offset: bigint; size: bigint; flags: number } {
    const b = vfio_region_info.make(index);
    ioctl(this.fd, VFIO_DEVICE_GET_REGION_INFO, b, 'VFIO_DEVICE_GET_REGION_INFO', { path: this.path });
    return { offset: vfio_region_info.offset(b), size: vfio_region_info.size(b), flags: vfio_region_info.flags(b) };
  }

  read(reg: number): number {
    const b = Buffer.alloc(4);
    preadExact(this.fd, b, this.bar0 + BigInt(reg), `igb read 0x${reg.toString(16)}`, this.path);
    return b.readUInt32LE(0);
  }

  write(reg: number, v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0, 0);
    pwriteExact(this.fd, b, this.bar0 + BigInt(reg), `igb write 0x${reg.toString(16)}`, this.path);
  }

  /** PCI COMMAND: memory space and bus master, or the device may not DMA at all. */
  private enableBusMaster(): void {
    const b = Buffer.alloc(2);
    preadExact(this.fd, b, this.cfg + 4n, 'config read COMMAND', this.path);
    b.writeUInt16LE(b.readUInt16LE(0) | 0x6, 0);
    pwriteExact(this.fd, b, this.cfg + 4n, 'config write COMMAND', this.path);
  }

  private async until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
    const end = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > end) throw new Error(`igb: timed out waiting for ${what}`);
      await sleep(10);
    }
  }

  async init(txRing: DmaPage, rxRing: DmaPage, rxBufs: DmaPage[]): Promise<void> {
    this.enableBusMaster();
    this.write(IMC, 0xffffffff);
    this.write(CTRL, this.read(CTRL) | CTRL_RST);
    await this.until('reset (CTRL.RST clear)', () => (this.read(CTRL) & CTRL_RST) === 0);
    this.write(IMC, 0xffffffff);
    this.write(CTRL, this.read(CTRL) | CTRL_SLU);
    this.write(MDIC, MDIC_OP_WRITE | PHY_ADDR | (0 << 16) | BMCR_ANENABLE | BMCR_ANRESTART | BMCR_FULLDPLX | BMCR_SPEED1000);
    await this.until('MDIC ready', () => (this.read(MDIC) & MDIC_READY) !== 0);
    await this.until('link up (STATUS.LU)', () => (this.read(STATUS) & STATUS_LU) !== 0, 10000);

    this.write(TDBAL, Number(txRing.iova & 0xffffffffn));
    this.write(TDBAH, Number(txRing.iova >> 32n));
    this.write(TDLEN, RING_ENTRIES * 16);
    this.write(TDH, 0);
    this.write(TDT, 0);
    this.write(TXDCTL, QUEUE_ENABLE);

    const rx = new DataView(rxRing.bytes.buffer, rxRing.bytes.byteOffset, rxRing.bytes.byteLength);
    rxBufs.forEach((buf, i) => {
      rx.setBigUint64(i * 16, buf.iova, true); // pkt_addr
      rx.setBigUint64(i * 16 + 8, 0n, true); // hdr_addr
    });
    this.write(RDBAL, Number(rxRing.iova & 0xffffffffn));
    this.write(RDBAH, Number(rxRing.iova >> 32n));
    this.write(RDLEN, RING_ENTRIES * 16);
    this.write(SRRCTL, SRRCTL_DESCTYPE_ADV_ONEBUF | 2); // 2 KiB buffers
    this.write(RDH, 0);
    this.write(RXDCTL, QUEUE_ENABLE);
    this.write(RDT, rxBufs.length);
    this.write(RCTL, RCTL_EN | RCTL_UPE | RCTL_MPE | RCTL_BAM | RCTL_LBM_MAC | RCTL_SECRC);
    this.write(TCTL, TCTL_EN | TCTL_PSP);
  }

  /** Queues one frame from `buf` (already filled) and waits until the device reports it sent. */
  async send(txRing: DmaPage, buf: DmaPage, length: number): Promise<void> {
    const i = this.txTail;
    const d = new DataView(txRing.bytes.buffer, txRing.bytes.byteOffset + i * 16, 16);
    d.setBigUint64(0, buf.iova, true);
    d.setUint32(8, length | ADVTXD_DTYP_DATA | TXD_DEXT | TXD_EOP | TXD_IFCS | TXD_RS, true);
    d.setUint32(12, length << 14, true); // olinfo_status.PAYLEN
    this.txTail = (i + 1) % RING_ENTRIES;
    this.write(TDT, this.txTail);
    await this.until('TX head to advance', () => this.read(TDH) === this.txTail);
  }

  /** Status and length of the next RX descriptor's write-back (advanced format). */
  rxDescriptor(rxRing: DmaPage, i = this.rxNext): { dd: boolean; length: number } {
    const d = new DataView(rxRing.bytes.buffer, rxRing.bytes.byteOffset + i * 16, 16);
    return { dd: (d.getUint32(8, true) & 1) === 1, length: d.getUint16(12, true) };
  }

  async receive(rxRing: DmaPage, ms = 3000): Promise<{ dd: boolean; length: number; index: number }> {
    const index = this.rxNext;
    const end = Date.now() + ms;
    while (!this.rxDescriptor(rxRing, index).dd && Date.now() < end) await sleep(10);
    this.rxNext = index + 1;
    return { ...this.rxDescriptor(rxRing, index), index };
  }

  /** Stops DMA before memory goes away. */
  quiesce(): void {
    this.write(RCTL, 0);
    this.write(TCTL, 0);
    this.write(IMC, 0xffffffff);
  }
}
