// libc calls made from TypeScript through koffi: file descriptors and ioctl.
// ioctl is declared variadic (int ioctl(int, unsigned long, ...)) so one
// declaration serves pointer and integer arguments.
import koffi from 'koffi';
import { SysError } from './errors.js';

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
export function ioctl(fd: number, request: number, arg: Buffer | number, op: string, ctx: { path?: string; iova?: bigint; size?: bigint } = {}): number {
  const r = (Buffer.isBuffer(arg) ? c_ioctl(fd, request, 'void *', arg) : c_ioctl(fd, request, 'unsigned long', arg)) as number;
  if (r < 0) throw SysError.fromErrno(koffi.errno(), op, ctx);
  return r;
}
