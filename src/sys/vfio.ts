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
  make(index: number): Buffer {
    const b = Buffer.alloc(32);
    b.writeUInt32LE(32, 0);
    b.writeUInt32LE(index, 8);
    return b;
  },
  flags: (b: Buffer): number => b.readUInt32LE(4),
  size: (b: Buffer): bigint => b.readBigUInt64LE(16),
  offset: (b: Buffer): bigint => b.readBigUInt64LE(24),
};
