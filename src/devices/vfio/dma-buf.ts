// A BAR of a VFIO device exported as a dma-buf (VFIO_DEVICE_FEATURE_DMA_BUF,
// vfio-pci built with PCI_P2PDMA): iommufd maps MMIO only this way
// (IOMMU_IOAS_MAP_FILE of the dma-buf's fd), never by a user address, since a
// BAR's mmap is a PFNMAP VMA it cannot pin. The kernel revokes the dma-buf
// while the device's memory decoding is off or it is being reset, and
// iommufd's mapping of it then stops translating.
import { ioctl, O_CLOEXEC, O_RDWR } from '../../sys/libc.js';
import * as V from '../../sys/vfio.js';

export interface DmaRange {
  /** Bytes into the BAR. */
  offset: bigint;
  length: bigint;
}

/** Whether the device exports dma-bufs at all (a kernel without VFIO_PCI_DMABUF answers ENOTTY). */
export function dmaBufProbe(deviceFd: number, path: string): void {
  ioctl(
    deviceFd,
    V.VFIO_DEVICE_FEATURE,
    V.vfio_device_feature_probe(V.VFIO_DEVICE_FEATURE_DMA_BUF, V.VFIO_DEVICE_FEATURE_GET),
    'VFIO_DEVICE_FEATURE(PROBE DMA_BUF)',
    { path },
  );
}

/** A dma-buf of `ranges` of BAR `bar`; its fd is the caller's to close. */
export function dmaBufExport(deviceFd: number, bar: number, ranges: DmaRange[], path: string): number {
  const first = ranges[0];
  return ioctl(
    deviceFd,
    V.VFIO_DEVICE_FEATURE,
    V.vfio_device_feature_dma_buf(bar, O_RDWR | O_CLOEXEC, ranges),
    `VFIO_DEVICE_FEATURE(DMA_BUF, BAR ${bar}${first ? ` +0x${first.offset.toString(16)}` : ''})`,
    { path, size: ranges.reduce((n, r) => n + r.length, 0n) },
  );
}
