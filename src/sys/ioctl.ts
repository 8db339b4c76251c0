// asm-generic/ioctl.h request encoding.
const NRBITS = 8,
  TYPEBITS = 8,
  SIZEBITS = 14;
const NRSHIFT = 0,
  TYPESHIFT = NRSHIFT + NRBITS,
  SIZESHIFT = TYPESHIFT + TYPEBITS,
  DIRSHIFT = SIZESHIFT + SIZEBITS;
export const IOC_NONE = 0,
  IOC_WRITE = 1,
  IOC_READ = 2;

export function IOC(dir: number, type: number, nr: number, size: number): number {
  return ((dir << DIRSHIFT) | (type << TYPESHIFT) | (nr << NRSHIFT) | (size << SIZESHIFT)) >>> 0;
}
export const IO = (type: number, nr: number): number => IOC(IOC_NONE, type, nr, 0);
export const IOR = (type: number, nr: number, size: number): number => IOC(IOC_READ, type, nr, size);
export const IOW = (type: number, nr: number, size: number): number => IOC(IOC_WRITE, type, nr, size);
export const IOWR = (type: number, nr: number, size: number): number => IOC(IOC_READ | IOC_WRITE, type, nr, size);
