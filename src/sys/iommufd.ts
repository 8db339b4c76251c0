// linux/iommufd.h: ioctl numbers, constants and struct layouts (names as in the header).
import { IO } from './ioctl.js';
import type { Offsets } from './layout.js';

/** Struct layouts (see layout.ts). */
export const layout = {
  iommu_option: { sizeof: 24, size: 0, option_id: 4, op: 8, __reserved: 10, object_id: 12, val64: 16 },
} as const satisfies Record<string, Offsets>;
const L = layout;

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

/** struct iommu_option */
export function iommu_option(option_id: number, op: number, object_id: number, val64: bigint): Buffer {
  const O = L.iommu_option;
  const b = Buffer.alloc(O.sizeof);
  b.writeUInt32LE(O.sizeof, O.size);
  b.writeUInt32LE(option_id, O.option_id);
  b.writeUInt16LE(op, O.op);
  b.writeUInt32LE(object_id, O.object_id);
  b.writeBigUInt64LE(val64, O.val64);
  return b;
}
