// linux/vfio.h: ioctl numbers and constants (names as in the header).
import { IO } from './ioctl.js';

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
export const VFIO_TYPE1_NESTING_IOMMU = 6;
export const VFIO_SPAPR_TCE_v2_IOMMU = 7;
export const VFIO_NOIOMMU_IOMMU = 8;
export const VFIO_UNMAP_ALL = 9;
export const VFIO_UPDATE_VADDR = 10;

export const VFIO_DEVICE_RESET = IO(VFIO_TYPE, VFIO_BASE + 11);
export const VFIO_DEVICE_BIND_IOMMUFD = IO(VFIO_TYPE, VFIO_BASE + 18);
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT = IO(VFIO_TYPE, VFIO_BASE + 19);
export const VFIO_DEVICE_DETACH_IOMMUFD_PT = IO(VFIO_TYPE, VFIO_BASE + 20);

/** struct vfio_group_status { __u32 argsz; __u32 flags; } */
export const VFIO_GROUP_FLAGS_VIABLE = 1 << 0;
export const VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1;
export const vfio_group_status = {
  make(): Buffer {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(8, 0);
    return b;
  },
  flags: (b: Buffer): number => b.readUInt32LE(4),
};

/** struct vfio_device_bind_iommufd { __u32 argsz; __u32 flags; __s32 iommufd; __u32 out_devid; __aligned_u64 token_uuid_ptr; }
 * argsz 16 stops before token_uuid_ptr: the kernel's minimum, no VF token. */
export const vfio_device_bind_iommufd = {
  make(iommufd: number): Buffer {
    const b = Buffer.alloc(16);
    b.writeUInt32LE(16, 0);
    b.writeInt32LE(iommufd, 8);
    return b;
  },
  out_devid: (b: Buffer): number => b.readUInt32LE(12),
};

/** struct vfio_device_attach_iommufd_pt { __u32 argsz; __u32 flags; __u32 pt_id; __u32 pasid; } */
export const vfio_device_attach_iommufd_pt = {
  make(pt_id: number): Buffer {
    const b = Buffer.alloc(16);
    b.writeUInt32LE(16, 0);
    b.writeUInt32LE(pt_id, 8);
    return b;
  },
  pt_id: (b: Buffer): number => b.readUInt32LE(8),
};

/** struct vfio_device_detach_iommufd_pt { __u32 argsz; __u32 flags; __u32 pasid; } */
export function vfio_device_detach_iommufd_pt(): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(12, 0);
  return b;
}

/** VFIO_GROUP_GET_DEVICE_FD takes the device name (the BDF) as a C string. */
export function deviceName(bdf: string): Buffer {
  return Buffer.from(`${bdf}\0`, 'utf8');
}

export const VFIO_DEVICE_GET_REGION_INFO = IO(VFIO_TYPE, VFIO_BASE + 8);
export const VFIO_PCI_BAR0_REGION_INDEX = 0;
export const VFIO_PCI_CONFIG_REGION_INDEX = 7;
export const VFIO_REGION_INFO_FLAG_MMAP = 1 << 2;

/** struct vfio_region_info { __u32 argsz; __u32 flags; __u32 index; __u32 cap_offset; __aligned_u64 size; __aligned_u64 offset; } */
export const vfio_region_info = {
  /** argsz above 32 leaves room for capabilities (VFIO_REGION_INFO_FLAG_CAPS); the kernel says how much it needs in argsz. */
  make(index: number, argsz = 32): Buffer {
    const b = Buffer.alloc(argsz);
    b.writeUInt32LE(argsz, 0);
    b.writeUInt32LE(index, 8);
    return b;
  },
  argsz: (b: Buffer): number => b.readUInt32LE(0),
  flags: (b: Buffer): number => b.readUInt32LE(4),
  size: (b: Buffer): bigint => b.readBigUInt64LE(16),
  offset: (b: Buffer): bigint => b.readBigUInt64LE(24),
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

/** struct vfio_device_info { __u32 argsz; __u32 flags; __u32 num_regions; __u32 num_irqs; __u32 cap_offset; __u32 pad; } */
export const vfio_device_info = {
  make(): Buffer {
    const b = Buffer.alloc(24);
    b.writeUInt32LE(24, 0);
    return b;
  },
  flags: (b: Buffer): number => b.readUInt32LE(4),
  num_regions: (b: Buffer): number => b.readUInt32LE(8),
  num_irqs: (b: Buffer): number => b.readUInt32LE(12),
};

/** struct vfio_irq_info { __u32 argsz; __u32 flags; __u32 index; __u32 count; } */
export const vfio_irq_info = {
  make(index: number): Buffer {
    const b = Buffer.alloc(16);
    b.writeUInt32LE(16, 0);
    b.writeUInt32LE(index, 8);
    return b;
  },
  count: (b: Buffer): number => b.readUInt32LE(12),
};

/** struct vfio_irq_set { __u32 argsz; __u32 flags; __u32 index; __u32 start; __u32 count; __u8 data[]; } with eventfds (s32) as data. */
export function vfio_irq_set(flags: number, index: number, start: number, fds: number[]): Buffer {
  const b = Buffer.alloc(20 + fds.length * 4);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE(index, 8);
  b.writeUInt32LE(start, 12);
  b.writeUInt32LE(fds.length, 16);
  fds.forEach((fd, i) => b.writeInt32LE(fd, 20 + i * 4));
  return b;
}

/** struct vfio_info_cap_header { __u16 id; __u16 version; __u32 next; }; sparse mmap: nr_areas, reserved, areas[] { __u64 offset; __u64 size; }. */
export function regionCaps(info: Buffer): { id: number; at: number }[] {
  const caps: { id: number; at: number }[] = [];
  let at = info.readUInt32LE(12); // cap_offset
  while (at && at + 8 <= info.length && caps.length < 16) {
    caps.push({ id: info.readUInt16LE(at), at });
    at = info.readUInt32LE(at + 4);
  }
  return caps;
}

export function sparseMmapAreas(info: Buffer, at: number): { offset: bigint; size: bigint }[] {
  const n = info.readUInt32LE(at + 8);
  return Array.from({ length: n }, (_, i) => ({ offset: info.readBigUInt64LE(at + 16 + i * 16), size: info.readBigUInt64LE(at + 24 + i * 16) }));
}
