// What a PCI function offers the bus: its configuration space. Accesses are
// 1, 2 or 4 bytes, naturally aligned, at offsets below 4096.

export interface PciFunction {
  readonly name: string;
  configRead(offset: number, size: number): number;
  configWrite(offset: number, size: number, value: number): void;
}

// Standard header registers (pci_regs.h names).
export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_STATUS = 0x06;
export const PCI_CLASS_REVISION = 0x08;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BASE_ADDRESS_0 = 0x10;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
export const PCI_ROM_ADDRESS = 0x30;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;
export const PCI_INTERRUPT_PIN = 0x3d;

export const PCI_COMMAND_IO = 0x1;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
export const PCI_COMMAND_INTX_DISABLE = 0x400;
export const PCI_STATUS_CAP_LIST = 0x10;

export const PCI_BASE_ADDRESS_SPACE_IO = 0x1;
export const PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4;
export const PCI_BASE_ADDRESS_MEM_PREFETCH = 0x8;

export const PCI_CAP_ID_MSI = 0x05;
export const PCI_CAP_ID_MSIX = 0x11;

/** Little-endian read of `size` bytes at `offset` of a config-space image. */
export function readLe(b: Uint8Array, offset: number, size: number): number {
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = v * 256 + (b[offset + i] ?? 0xff);
  return v >>> 0;
}

export function writeLe(b: Uint8Array, offset: number, size: number, value: number): void {
  for (let i = 0; i < size; i++) b[offset + i] = (value >>> (8 * i)) & 0xff;
}
