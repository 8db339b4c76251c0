// linux/iommufd.h: ioctl numbers and structs (names as in the header).
import { IO } from './ioctl.js';

export const IOMMUFD_TYPE = ';'.charCodeAt(0);
export const IOMMUFD_CMD_DESTROY = 0x80;
export const IOMMUFD_CMD_IOAS_ALLOC = 0x81;
export const IOMMUFD_CMD_IOAS_ALLOW_IOVAS = 0x82;
export const IOMMUFD_CMD_IOAS_COPY = 0x83;
export const IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84;
export const IOMMUFD_CMD_IOAS_MAP = 0x85;
export const IOMMUFD_CMD_IOAS_UNMAP = 0x86;
export const IOMMUFD_CMD_OPTION = 0x87;

export const IOMMU_DESTROY = IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY);
export const IOMMU_IOAS_ALLOC = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC);
export const IOMMU_IOAS_MAP = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP);

/** struct iommu_destroy { __u32 size; __u32 id; } */
export function iommu_destroy(id: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(8, 0);
  b.writeUInt32LE(id, 4);
  return b;
}

/** struct iommu_ioas_alloc { __u32 size; __u32 flags; __u32 out_ioas_id; } */
export const iommu_ioas_alloc = {
  size: 12,
  make(): Buffer {
    const b = Buffer.alloc(12);
    b.writeUInt32LE(12, 0);
    return b;
  },
  out_ioas_id: (b: Buffer): number => b.readUInt32LE(8),
};
