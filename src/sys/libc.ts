// libc calls made from TypeScript through koffi: file descriptors and ioctl.
// ioctl is declared variadic (int ioctl(int, unsigned long, ...)) so one
// declaration serves pointer and integer arguments.
import { constants as bufferConstants } from 'node:buffer';
import koffi from 'koffi';
import { ERRNO, SysError } from './errors.js';

const lib = koffi.load('libc.so.6');

const c_open = lib.func('int open(const char *path, int flags, ...)');
const c_close = lib.func('int close(int fd)');
const c_ioctl = lib.func('int ioctl(int fd, unsigned long request, ...)');

// fcntl.h (x86_64)
export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;

export function openPath(path: string, flags = O_RDWR | O_CLOEXEC): number {
  const fd = c_open(path, flags, 'int', 0) as number;
  if (fd < 0) throw SysError.fromErrno(koffi.errno(), 'open', { path });
  return fd;
}

export function closeFd(fd: number): void {
  c_close(fd);
}

/** ioctl with a struct buffer, or with an integer argument. Throws SysError with the op name. */
export function ioctl(
  fd: number,
  request: number,
  arg: Buffer | number,
  op: string,
  ctx: { path?: string; iova?: bigint; size?: bigint } = {},
): number {
  const r = (Buffer.isBuffer(arg) ? c_ioctl(fd, request, 'void *', arg) : c_ioctl(fd, request, 'unsigned long', arg)) as number;
  if (r < 0) throw SysError.fromErrno(koffi.errno(), op, ctx);
  return r;
}

const c_memfd_create = lib.func('int memfd_create(const char *name, unsigned int flags)');
const c_ftruncate = lib.func('int ftruncate(int fd, int64_t length)');
// The vCPU loop's KVM_RUN: a fixed prototype, no per-call argument parsing.
const c_ioctl_ulong = lib.func('int ioctl(int fd, unsigned long request, unsigned long arg)');

const c_eventfd = lib.func('int eventfd(unsigned int initval, int flags)');
const c_read = lib.func('long read(int fd, _Out_ void *buf, size_t count)');
const c_write = lib.func('long write(int fd, const void *buf, size_t count)');
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;

export function eventFd(flags = 0): number {
  const fd = c_eventfd(0, EFD_CLOEXEC | flags) as number;
  if (fd < 0) throw SysError.fromErrno(koffi.errno(), 'eventfd');
  return fd;
}

// sys/mman.h memfd flags
export const MFD_CLOEXEC = 1;
export const MFD_HUGETLB = 4;
export const MFD_HUGE_2MB = 21 << 26;

export function memfdCreate(name: string, flags: number): number {
  const fd = c_memfd_create(name, flags) as number;
  if (fd < 0) throw SysError.fromErrno(koffi.errno(), 'memfd_create', { path: `memfd:${name}` });
  return fd;
}

/** Reads and clears a non-blocking eventfd's counter: 0 when nothing was signalled. */
export function eventFdTake(fd: number): bigint {
  const b = Buffer.alloc(8);
  if (Number(c_read(fd, b, 8)) === 8) return b.readBigUInt64LE(0);
  const errno = koffi.errno();
  if (errno === ERRNO.EAGAIN) return 0n;
  throw SysError.fromErrno(errno, 'read(eventfd)');
}

/** Adds 1 to an eventfd's counter, as a device's interrupt would. */
export function eventFdSignal(fd: number): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(1n);
  if (Number(c_write(fd, b, 8)) !== 8) throw SysError.fromErrno(koffi.errno(), 'write(eventfd)');
}

export function ftruncateFd(fd: number, size: bigint, path?: string): void {
  if ((c_ftruncate(fd, size) as number) < 0) throw SysError.fromErrno(koffi.errno(), 'ftruncate', { size, path });
}

/** ioctl(fd, request, arg) returning -errno instead of throwing: for the vCPU loop's hot path. */
export function ioctlFast(fd: number, request: number, arg: number): number {
  const r = c_ioctl_ulong(fd, request, arg) as number;
  return r < 0 ? -koffi.errno() : r;
}

const c_pread = lib.func('long pread(int fd, _Out_ void *buf, size_t count, int64_t offset)');
const c_pwrite = lib.func('long pwrite(int fd, const void *buf, size_t count, int64_t offset)');
const c_mmap = lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)');
const c_munmap = lib.func('int munmap(void *addr, size_t length)');
const c_madvise = lib.func('int madvise(void *addr, size_t length, int advice)');

// sys/mman.h (x86_64)
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MADV_HUGEPAGE = 14;
export const MAP_FIXED = 0x10;
const PROT_NONE = 0;
// The same calls at an address given as a number: a range inside a reservation.
const c_mmap_at = lib.func('intptr_t mmap(uint64_t addr, size_t length, int prot, int flags, int fd, int64_t offset)');
const c_munmap_at = lib.func('int munmap(uint64_t addr, size_t length)');
const c_madvise_at = lib.func('int madvise(uint64_t addr, size_t length, int advice)');

/** pread/pwrite of exactly buf.length bytes at `offset` (device regions: one access each). */
export function preadExact(fd: number, buf: Buffer, offset: bigint, op: string, path?: string): void {
  const n = Number(c_pread(fd, buf, buf.length, offset));
  if (n !== buf.length) throw SysError.fromErrno(n < 0 ? koffi.errno() : 5, op, { path });
}

export function pwriteExact(fd: number, buf: Buffer, offset: bigint, op: string, path?: string): void {
  const n = Number(c_pwrite(fd, buf, buf.length, offset));
  if (n !== buf.length) throw SysError.fromErrno(n < 0 ? koffi.errno() : 5, op, { path });
}

/** Anonymous memory TypeScript can see: its address (for the IOMMU) and an ArrayBuffer over it. */
export interface MappedMemory {
  vaddr: bigint;
  bytes: Uint8Array;
  /** madvise over the whole mapping. */
  advise(advice: number, op: string): void;
  unmap(): void;
}

export function mmapAnon(length: number): MappedMemory {
  return mmapFd(length, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0n);
}

/** A shared mapping of a file or device region (e.g. a VFIO BAR at its region offset). */
/**
 * koffi.view of more than a Buffer may hold ends node with "FATAL ERROR: Error::New
 * napi_get_last_error_info" (koffi 3.3, Node 20: 4 GiB), so such a mapping is refused before it is made.
 */
function viewable(length: number, what: string): void {
  if (!(length <= bufferConstants.MAX_LENGTH))
    throw new RangeError(`cannot ${what}: JavaScript views hold at most ${bufferConstants.MAX_LENGTH} bytes in Node ${process.version}`);
}

export function mmapFd(length: number, flags: number, fd: number, offset: bigint, path?: string): MappedMemory {
  viewable(length, `map ${length} bytes${path ? ` of ${path}` : ''}`);
  const p = c_mmap(null, length, PROT_READ | PROT_WRITE, flags, fd, offset);
  const vaddr = BigInt(koffi.address(p));
  if (vaddr === 0xffffffffffffffffn) throw SysError.fromErrno(koffi.errno(), 'mmap', { size: BigInt(length), path });
  const bytes = new Uint8Array(koffi.view(p, length));
  const advise = (advice: number, op: string): void => {
    if ((c_madvise(p, length, advice) as number) < 0) throw SysError.fromErrno(koffi.errno(), op, { size: BigInt(length), path });
  };
  return { vaddr, bytes, advise, unmap: () => void c_munmap(p, length) };
}

/**
 * Address space with nothing in it (PROT_NONE, no memory reserved), aligned to `align`, for a mapping
 * that may grow in place: ranges of it are mapped over with MAP_FIXED, and a view starts at its base.
 */
export interface Reservation {
  vaddr: bigint;
  length: number;
  /** MAP_FIXED of `length` bytes at `offset` into the reservation (RW), of `fd` from `fileOffset` or anonymous. */
  mapAt(offset: number, length: number, flags: number, fd: number, fileOffset: bigint, path: string): void;
  /** The range given back to PROT_NONE, its memory freed. */
  unmapAt(offset: number, length: number): void;
  advise(offset: number, length: number, advice: number, op: string): void;
  /** An ArrayBuffer over the first `length` bytes, which must be mapped. */
  view(length: number): Uint8Array;
  release(): void;
}

export function reserveAddressSpace(length: number, align: number, path: string): Reservation {
  viewable(length, `reserve ${length} bytes for ${path}`);
  const whole = length + align;
  const got = BigInt(c_mmap_at(0n, whole, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0n) as number | bigint);
  if (got === -1n) throw SysError.fromErrno(koffi.errno(), 'mmap(PROT_NONE)', { size: BigInt(whole), path });
  const base = (got + BigInt(align) - 1n) & ~(BigInt(align) - 1n);
  const at = (offset: number): bigint => base + BigInt(offset);
  return {
    vaddr: base,
    length,
    mapAt(offset, len, flags, fd, fileOffset, what) {
      const r = BigInt(c_mmap_at(at(offset), len, PROT_READ | PROT_WRITE, flags | MAP_FIXED, fd, fileOffset) as number | bigint);
      if (r === -1n) throw SysError.fromErrno(koffi.errno(), 'mmap(MAP_FIXED)', { size: BigInt(len), path: what });
    },
    unmapAt(offset, len) {
      c_mmap_at(at(offset), len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0n);
    },
    advise(offset, len, advice, op) {
      if ((c_madvise_at(at(offset), len, advice) as number) < 0) throw SysError.fromErrno(koffi.errno(), op, { size: BigInt(len), path });
    },
    // koffi views memory through a pointer object: one decoded from the address.
    view: (len) => new Uint8Array(koffi.view(koffi.decode(new BigUint64Array([base]), 'void *'), len)),
    release: () => void c_munmap_at(got, whole),
  };
}

const c_socket = lib.func('int socket(int domain, int type, int protocol)');
const c_bind = lib.func('int bind(int fd, const void *addr, unsigned int len)');
const c_listen = lib.func('int listen(int fd, int backlog)');

// sys/socket.h, sys/un.h (x86_64)
export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_CLOEXEC = 0o2000000;
const SUN_PATH_MAX = 108;

/**
 * A Unix stream socket bound to `path` and listening, as an fd of this
 * process. Node's own listen(path) would do the same, but libuv unlinks the
 * path when that handle closes (uv__pipe_close), and a socket handed to
 * another process (live update) must outlive the handle that made it.
 */
export function listenUnix(path: string, backlog: number): number {
  const name = Buffer.from(path);
  if (name.length >= SUN_PATH_MAX) throw SysError.fromErrno(ERRNO.ENAMETOOLONG, 'bind', { path });
  const addr = Buffer.alloc(2 + SUN_PATH_MAX);
  addr.writeUInt16LE(AF_UNIX, 0);
  name.copy(addr, 2);
  const fd = c_socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw SysError.fromErrno(koffi.errno(), 'socket(AF_UNIX)', { path });
  try {
    if ((c_bind(fd, addr, 2 + name.length + 1) as number) < 0) throw SysError.fromErrno(koffi.errno(), 'bind', { path });
    if ((c_listen(fd, backlog) as number) < 0) throw SysError.fromErrno(koffi.errno(), 'listen', { path });
  } catch (e) {
    c_close(fd);
    throw e;
  }
  return fd;
}

/** Where a Buffer's bytes are, for a struct field that points at them (kvm_device_attr.addr). */
export function bufferAddress(b: Buffer): bigint {
  return BigInt(koffi.address(b));
}
