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
export const IOMMU_OPTION = IO(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION);
export const IOMMU_OPTION_RLIMIT_MODE = 0;
export const IOMMU_OPTION_OP_SET = 0;
export const IOMMU_OPTION_OP_GET = 1;

/** struct iommu_option { __u32 size; __u32 option_id; __u16 op; __u16 __reserved; __u32 object_id; __aligned_u64 val64; } */
export function iommu_option(option_id: number, op: number, object_id: number, val64: bigint): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(24, 0);
  b.writeUInt32LE(option_id, 4);
  b.writeUInt16LE(op, 8);
  b.writeUInt32LE(object_id, 12);
  b.writeBigUInt64LE(val64, 16);
  return b;
}
