// A VFIO device region (a BAR, the config space): where it lives in the
// device fd, whether and which parts of it may be mmap'd, and plain
// pread/pwrite access for the parts that are trapped.
import { ioctl, preadExact, pwriteExact } from '../../sys/libc.js';
import * as V from '../../sys/vfio.js';

export interface RegionInfo {
  index: number;
  size: bigint;
  offset: bigint;
  flags: number;
  /** Parts that may be mmap'd, relative to the region (the sparse-mmap capability, else all of it when MMAP is set). */
  mmapAreas: { offset: bigint; size: bigint }[];
  /** The kernel lets the MSI-X table's BAR be mmap'd whole (it still has to be trapped to be virtualised). */
  msixMappable: boolean;
}

export function regionInfo(deviceFd: number, index: number, path: string): RegionInfo {
  let b = V.vfio_region_info.make(index);
  ioctl(deviceFd, V.VFIO_DEVICE_GET_REGION_INFO, b, `VFIO_DEVICE_GET_REGION_INFO(${index})`, { path });
  if (V.vfio_region_info.flags(b) & V.VFIO_REGION_INFO_FLAG_CAPS && V.vfio_region_info.argsz(b) > V.layout.vfio_region_info.sizeof) {
    // The kernel said how big the answer with capabilities is; ask again with that room.
    b = V.vfio_region_info.make(index, V.vfio_region_info.argsz(b));
    ioctl(deviceFd, V.VFIO_DEVICE_GET_REGION_INFO, b, `VFIO_DEVICE_GET_REGION_INFO(${index})`, { path });
  }
  const flags = V.vfio_region_info.flags(b);
  const size = V.vfio_region_info.size(b);
  const caps = flags & V.VFIO_REGION_INFO_FLAG_CAPS ? V.regionCaps(b) : [];
  const sparse = caps.find((c) => c.id === V.VFIO_REGION_INFO_CAP_SPARSE_MMAP);
  const mmapAreas = !(flags & V.VFIO_REGION_INFO_FLAG_MMAP) ? [] : sparse ? V.sparseMmapAreas(b, sparse.at) : [{ offset: 0n, size }];
  return {
    index,
    size,
    offset: V.vfio_region_info.offset(b),
    flags,
    mmapAreas,
    msixMappable: caps.some((c) => c.id === V.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE),
  };
}

export function regionRead(fd: number, r: RegionInfo, at: number, data: Uint8Array, path: string): void {
  const b = Buffer.alloc(data.length);
  preadExact(fd, b, r.offset + BigInt(at), `pread(region ${r.index} +0x${at.toString(16)})`, path);
  data.set(b);
}

export function regionWrite(fd: number, r: RegionInfo, at: number, data: Uint8Array, path: string): void {
  pwriteExact(fd, Buffer.from(data), r.offset + BigInt(at), `pwrite(region ${r.index} +0x${at.toString(16)})`, path);
}
