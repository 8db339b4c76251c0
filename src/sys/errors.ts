// The error every kernel call raises: errno name plus the operation and the
// IOVA, size and path it was working on, so a failure is searchable and exact.
import { constants } from 'node:os';

/** errno numbers by name: Node's table (os.constants.errno), the one TypeScript uses. */
export const ERRNO = constants.errno;
// Second names glibc gives a number; the kernel's headers call it EAGAIN,
// EOPNOTSUPP and EDEADLK, as pin-core's errno.rs does.
const ALIASES = new Set(['EWOULDBLOCK', 'ENOTSUP', 'EDEADLOCK']);
const ERRNO_NAMES = new Map<number, string>(
  Object.entries(ERRNO)
    .filter(([name]) => !ALIASES.has(name))
    .map(([name, n]) => [n, name]),
);

export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

export interface SysContext {
  path?: string;
  iova?: bigint;
  size?: bigint;
}

export class SysError extends Error {
  readonly code: string;
  constructor(
    readonly errno: number,
    readonly op: string,
    readonly ctx: SysContext = {},
  ) {
    const where = [
      ctx.path !== undefined ? `path ${ctx.path}` : '',
      ctx.iova !== undefined ? `iova 0x${ctx.iova.toString(16)}` : '',
      ctx.size !== undefined ? `size 0x${ctx.size.toString(16)}` : '',
    ].filter(Boolean);
    super(`${op} failed: ${errnoName(errno)}${where.length ? ` (${where.join(', ')})` : ''}`);
    this.name = 'SysError';
    this.code = errnoName(errno);
  }

  static fromErrno(errno: number, op: string, ctx: SysContext = {}): SysError {
    return new SysError(errno, op, ctx);
  }
}
