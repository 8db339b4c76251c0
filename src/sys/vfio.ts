// linux/vfio.h: ioctl numbers, constants and struct layouts (names as in the header).
import { IO } from './ioctl.js';
import type { Offsets } from './layout.js';

/** Struct layouts (see layout.ts). */
export const layout = {
  vfio_group_status: { sizeof: 8, argsz: 0, flags: 4 },
  vfio_device_bind_iommufd: { sizeof: 24, argsz: 0, flags: 4, iommufd: 8, out_devid: 12, token_uuid_ptr: 16 },
  vfio_device_attach_iommufd_pt: { sizeof: 16, argsz: 0, flags: 4, pt_id: 8, pasid: 12 },
  vfio_device_detach_iommufd_pt: { sizeof: 12, argsz: 0, flags: 4, pasid: 8 },
  vfio_device_info: { sizeof: 24, argsz: 0, flags: 4, num_regions: 8, num_irqs: 12, cap_offset: 16, pad: 20 },
  vfio_region_info: { sizeof: 32, argsz: 0, flags: 4, index: 8, cap_offset: 12, size: 16, offset: 24 },
  vfio_info_cap_header: { sizeof: 8, id: 0, version: 2, next: 4 },
  vfio_region_info_cap_sparse_mmap: { sizeof: 16, header: 0, nr_areas: 8, reserved: 12, areas: 16 },
  vfio_region_sparse_mmap_area: { sizeof: 16, offset: 0, size: 8 },
  vfio_irq_info: { sizeof: 16, argsz: 0, flags: 4, index: 8, count: 12 },
  vfio_irq_set: { sizeof: 20, argsz: 0, flags: 4, index: 8, start: 12, count: 16, data: 20 },
  vfio_device_feature: { sizeof: 8, argsz: 0, flags: 4, data: 8 },
  vfio_device_feature_dma_buf: { sizeof: 16, region_index: 0, open_flags: 4, flags: 8, nr_ranges: 12, dma_ranges: 16 },
  vfio_region_dma_range: { sizeof: 16, offset: 0, length: 8 },
} as const satisfies Record<string, Offsets>;
const L = layout;

export const VFIO_TYPE = ';'.charCodeAt(0);
export const VFIO_BASE = 100;
export const VFIO_API_VERSION = 0;

export const VFIO_GET_API_VERSION = IO(VFIO_TYPE, VFIO_BASE + 0);
export const VFIO_CHECK_EXTENSION = IO(VFIO_TYPE, VFIO_BASE + 1);
export const VFIO_SET_IOMMU = IO(VFIO_TYPE, VFIO_BASE + 2);
export const VFIO_GROUP_GET_STATUS = IO(VFIO_TYPE, VFIO_BASE + 3);
export const VFIO_GROUP_SET_CONTAINER = IO(VFIO_TYPE, VFIO_BASE + 4);
export const VFIO_GROUP_UNSET_CONTAINER = IO(VFIO_TYPE, VFIO_BASE + 5);
export const VFIO_GROUP_GET_DEVICE_FD = IO(VFIO_TYPE, VFIO_BASE + 6);

// Extensions (VFIO_CHECK_EXTENSION arguments)
export const VFIO_TYPE1_IOMMU = 1;
export const VFIO_SPAPR_TCE_IOMMU = 2;
export const VFIO_TYPE1v2_IOMMU = 3;
export const VFIO_DMA_CC_IOMMU = 4;
export const VFIO_EEH = 5;
export const VFIO_SPAPR_TCE_v2_IOMMU = 7;
export const VFIO_NOIOMMU_IOMMU = 8;
export const VFIO_UNMAP_ALL = 9;
export const VFIO_UPDATE_VADDR = 10;

export const VFIO_DEVICE_RESET = IO(VFIO_TYPE, VFIO_BASE + 11);
export const VFIO_DEVICE_BIND_IOMMUFD = IO(VFIO_TYPE, VFIO_BASE + 18);
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT = IO(VFIO_TYPE, VFIO_BASE + 19);
export const VFIO_DEVICE_DETACH_IOMMUFD_PT = IO(VFIO_TYPE, VFIO_BASE + 20);

/** A zeroed argument of `argsz` bytes that starts with its own argsz, as every VFIO struct does. */
function withArgsz(argsz: number): Buffer {
  const b = Buffer.alloc(argsz);
  b.writeUInt32LE(argsz, 0);
  return b;
}

/** struct vfio_group_status */
export const VFIO_GROUP_FLAGS_VIABLE = 1 << 0;
export const VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1;
export const vfio_group_status = {
  make: (): Buffer => withArgsz(L.vfio_group_status.sizeof),
  flags: (b: Buffer): number => b.readUInt32LE(L.vfio_group_status.flags),
};

/** struct vfio_device_bind_iommufd. argsz stops before token_uuid_ptr: the kernel's minimum, no VF token. */
export const vfio_device_bind_iommufd = {
  make(iommufd: number): Buffer {
    const b = withArgsz(L.vfio_device_bind_iommufd.token_uuid_ptr);
    b.writeInt32LE(iommufd, L.vfio_device_bind_iommufd.iommufd);
    return b;
  },
  out_devid: (b: Buffer): number => b.readUInt32LE(L.vfio_device_bind_iommufd.out_devid),
};

/** struct vfio_device_attach_iommufd_pt */
export const vfio_device_attach_iommufd_pt = {
  make(pt_id: number): Buffer {
    const b = withArgsz(L.vfio_device_attach_iommufd_pt.sizeof);
    b.writeUInt32LE(pt_id, L.vfio_device_attach_iommufd_pt.pt_id);
    return b;
  },
  pt_id: (b: Buffer): number => b.readUInt32LE(L.vfio_device_attach_iommufd_pt.pt_id),
};

/** struct vfio_device_detach_iommufd_pt */
export function vfio_device_detach_iommufd_pt(): Buffer {
  return withArgsz(L.vfio_device_detach_iommufd_pt.sizeof);
}

/** VFIO_GROUP_GET_DEVICE_FD takes the device name (the BDF) as a C string. */
export function deviceName(bdf: string): Buffer {
  return Buffer.from(`${bdf}\0`, 'utf8');
}

export const VFIO_DEVICE_GET_REGION_INFO = IO(VFIO_TYPE, VFIO_BASE + 8);
export const VFIO_PCI_BAR0_REGION_INDEX = 0;
export const VFIO_PCI_CONFIG_REGION_INDEX = 7;
export const VFIO_REGION_INFO_FLAG_MMAP = 1 << 2;

/** struct vfio_region_info */
export const vfio_region_info = {
  /** argsz above sizeof leaves room for capabilities (VFIO_REGION_INFO_FLAG_CAPS); the kernel says how much it needs in argsz. */
  make(index: number, argsz: number = L.vfio_region_info.sizeof): Buffer {
    const b = withArgsz(argsz);
    b.writeUInt32LE(index, L.vfio_region_info.index);
    return b;
  },
  argsz: (b: Buffer): number => b.readUInt32LE(L.vfio_region_info.argsz),
  flags: (b: Buffer): number => b.readUInt32LE(L.vfio_region_info.flags),
  size: (b: Buffer): bigint => b.readBigUInt64LE(L.vfio_region_info.size),
  offset: (b: Buffer): bigint => b.readBigUInt64LE(L.vfio_region_info.offset),
};

export const VFIO_DEVICE_GET_INFO = IO(VFIO_TYPE, VFIO_BASE + 7);
export const VFIO_DEVICE_GET_IRQ_INFO = IO(VFIO_TYPE, VFIO_BASE + 9);
export const VFIO_DEVICE_SET_IRQS = IO(VFIO_TYPE, VFIO_BASE + 10);

export const VFIO_DEVICE_FLAGS_RESET = 1 << 0;
export const VFIO_DEVICE_FLAGS_PCI = 1 << 1;
export const VFIO_PCI_ROM_REGION_INDEX = 6;
export const VFIO_REGION_INFO_FLAG_READ = 1 << 0;
export const VFIO_REGION_INFO_FLAG_WRITE = 1 << 1;
export const VFIO_REGION_INFO_FLAG_CAPS = 1 << 3;
export const VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1;
export const VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3;

export const VFIO_PCI_INTX_IRQ_INDEX = 0;
export const VFIO_PCI_MSI_IRQ_INDEX = 1;
export const VFIO_PCI_MSIX_IRQ_INDEX = 2;
export const VFIO_IRQ_SET_DATA_NONE = 1 << 0;
export const VFIO_IRQ_SET_DATA_BOOL = 1 << 1;
export const VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2;
export const VFIO_IRQ_SET_ACTION_MASK = 1 << 3;
export const VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4;
export const VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5;

/** struct vfio_device_info */
export const vfio_device_info = {
  make: (): Buffer => withArgsz(L.vfio_device_info.sizeof),
  flags: (b: Buffer): number => b.readUInt32LE(L.vfio_device_info.flags),
  num_regions: (b: Buffer): number => b.readUInt32LE(L.vfio_device_info.num_regions),
  num_irqs: (b: Buffer): number => b.readUInt32LE(L.vfio_device_info.num_irqs),
};

/** struct vfio_irq_info */
export const vfio_irq_info = {
  make(index: number): Buffer {
    const b = withArgsz(L.vfio_irq_info.sizeof);
    b.writeUInt32LE(index, L.vfio_irq_info.index);
    return b;
  },
  count: (b: Buffer): number => b.readUInt32LE(L.vfio_irq_info.count),
};

/** struct vfio_irq_set with eventfds (__s32) as data. */
export function vfio_irq_set(flags: number, index: number, start: number, fds: number[]): Buffer {
  const S = L.vfio_irq_set;
  const b = withArgsz(S.data + fds.length * 4);
  b.writeUInt32LE(flags, S.flags);
  b.writeUInt32LE(index, S.index);
  b.writeUInt32LE(start, S.start);
  b.writeUInt32LE(fds.length, S.count);
  fds.forEach((fd, i) => b.writeInt32LE(fd, S.data + i * 4));
  return b;
}

export const VFIO_DEVICE_FEATURE = IO(VFIO_TYPE, VFIO_BASE + 17);
export const VFIO_DEVICE_FEATURE_MASK = 0xffff;
export const VFIO_DEVICE_FEATURE_GET = 1 << 16;
export const VFIO_DEVICE_FEATURE_SET = 1 << 17;
export const VFIO_DEVICE_FEATURE_PROBE = 1 << 18;
export const VFIO_DEVICE_FEATURE_DMA_BUF = 11;

/** struct vfio_device_feature with no data: a probe of `feature` (GET and/or SET in `flags` asks for those too). */
export function vfio_device_feature_probe(feature: number, flags = 0): Buffer {
  const b = withArgsz(L.vfio_device_feature.sizeof);
  b.writeUInt32LE(VFIO_DEVICE_FEATURE_PROBE | flags | feature, L.vfio_device_feature.flags);
  return b;
}

/**
 * struct vfio_device_feature (GET of VFIO_DEVICE_FEATURE_DMA_BUF) holding a struct vfio_device_feature_dma_buf
 * for region `region_index` with its vfio_region_dma_range list; the ioctl returns the dma-buf's fd.
 */
export function vfio_device_feature_dma_buf(
  region_index: number,
  open_flags: number,
  ranges: { offset: bigint; length: bigint }[],
): Buffer {
  const F = L.vfio_device_feature;
  const D = L.vfio_device_feature_dma_buf;
  const R = L.vfio_region_dma_range;
  const b = withArgsz(F.data + D.dma_ranges + ranges.length * R.sizeof);
  b.writeUInt32LE(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF, F.flags);
  b.writeUInt32LE(region_index, F.data + D.region_index);
  b.writeUInt32LE(open_flags, F.data + D.open_flags);
  b.writeUInt32LE(ranges.length, F.data + D.nr_ranges);
  ranges.forEach((r, i) => {
    b.writeBigUInt64LE(r.offset, F.data + D.dma_ranges + i * R.sizeof + R.offset);
    b.writeBigUInt64LE(r.length, F.data + D.dma_ranges + i * R.sizeof + R.length);
  });
  return b;
}

/** The vfio_info_cap_header chain of a VFIO_DEVICE_GET_REGION_INFO answer. */
export function regionCaps(info: Buffer): { id: number; at: number }[] {
  const H = L.vfio_info_cap_header;
  const caps: { id: number; at: number }[] = [];
  let at = info.readUInt32LE(L.vfio_region_info.cap_offset);
  while (at && at + H.sizeof <= info.length && caps.length < 16) {
    caps.push({ id: info.readUInt16LE(at + H.id), at });
    at = info.readUInt32LE(at + H.next);
  }
  return caps;
}

/** The areas of a struct vfio_region_info_cap_sparse_mmap at `at`. */
export function sparseMmapAreas(info: Buffer, at: number): { offset: bigint; size: bigint }[] {
  const C = L.vfio_region_info_cap_sparse_mmap,
    A = L.vfio_region_sparse_mmap_area;
  const area = (i: number): number => at + C.areas + i * A.sizeof;
  return Array.from({ length: info.readUInt32LE(at + C.nr_areas) }, (_, i) => ({
    offset: info.readBigUInt64LE(area(i) + A.offset),
    size: info.readBigUInt64LE(area(i) + A.size),
  }));
}
