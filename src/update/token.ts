// Who owns the VM at the end of a live update: one word in a small memfd
// both processes map. 0: still the old process, which may resume the guest.
// The new process swaps in 1 before its vCPUs enter KVM_RUN; the old one
// swaps in 2 before it resumes the guest after a failure. Whoever swaps the
// 0 owns the VM; the other side's swap fails and it backs off. Messages
// cannot settle this: once `go` is written, a new process that dies leaves
// the old one unable to tell whether it ran guest code; the word tells.
import * as libc from '../sys/libc.js';

const NAME = 'pinion-update-token';
const OLD = 2,
  NEW = 1;

export class HandoverToken {
  private closed = false;

  private constructor(
    readonly fd: number,
    private readonly map: libc.MappedMemory,
    private readonly word: Int32Array,
  ) {}

  /** The old process's: a fresh word, 0. */
  static create(): HandoverToken {
    const fd = libc.memfdCreate(NAME, libc.MFD_CLOEXEC);
    try {
      libc.ftruncateFd(fd, 4096n, `memfd:${NAME}`);
      return HandoverToken.open(fd);
    } catch (e) {
      libc.closeFd(fd);
      throw e;
    }
  }

  /** The new process's, from the fd the old one passed. */
  static open(fd: number): HandoverToken {
    const map = libc.mmapFd(4096, libc.MAP_SHARED, fd, 0n, `memfd:${NAME}`);
    // Atomics on a mapping shared across processes: a lock cmpxchg on the one page both map.
    return new HandoverToken(fd, map, new Int32Array(map.bytes.buffer, map.bytes.byteOffset, 1));
  }

  /** The new process takes the VM; false: the old one took it back first. */
  takeForNew(): boolean {
    return Atomics.compareExchange(this.word, 0, 0, NEW) === 0;
  }

  /** The old process takes the VM back; false: the new one has it (and may have run guest code). */
  takeForOld(): boolean {
    return Atomics.compareExchange(this.word, 0, 0, OLD) === 0 || Atomics.load(this.word, 0) === OLD;
  }

  /** Once; later calls do nothing (the fd number may be another file's by then). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.map.unmap();
    libc.closeFd(this.fd);
  }
}
