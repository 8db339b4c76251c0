// Guest RAM: one allocation backed by a memfd (default: it can be mapped by
// fd and handed over for live update), anonymous memory, or hugetlbfs pages.
import { fstatSync, readFileSync } from 'node:fs';
import * as libc from '../sys/libc.js';
import { hex, MAX_RAM_ALLOCATION, MiB, sizeText } from './layout.js';

export type RamBackend = 'memfd' | 'anon' | 'hugetlb';
export const RAM_BACKENDS: readonly RamBackend[] = ['memfd', 'anon', 'hugetlb'];

const HUGE_2M = 2n * MiB;

export class RamError extends Error {
  override readonly name = 'RamError';
}

export class GuestRam {
  private constructor(
    readonly backend: RamBackend,
    private length: bigint,
    readonly vaddr: bigint,
    private view_: Uint8Array,
    /** The memfd behind the RAM, or -1 for anonymous memory. */
    readonly fd: number,
    private readonly mapping: libc.MappedMemory | undefined,
    /** Address space after the RAM that it may grow into (allocate's `growTo`). */
    private readonly room?: libc.Reservation,
  ) {}

  get size(): bigint {
    return this.length;
  }

  get bytes(): Uint8Array {
    return this.view_;
  }

  /** The most this RAM can grow to in place: its reservation, else its size. */
  get maxSize(): bigint {
    return this.room ? BigInt(this.room.length) : this.length;
  }

  /** Why this RAM gets no 2 MiB pages, when it gets none (shown at start: every 4 KiB is then a page fault
   * of KVM's and a separate IOMMU entry). */
  get smallPagesWhy(): string | undefined {
    if (this.backend !== 'memfd') return undefined;
    const mode = thpMode('/sys/kernel/mm/transparent_hugepage/shmem_enabled');
    if (mode === undefined || ['advise', 'always', 'within_size', 'force'].includes(mode)) return undefined;
    return `memfd guest RAM gets 4 KiB pages: shmem transparent huge pages are '${mode}'; allow them with: echo advise | sudo tee /sys/kernel/mm/transparent_hugepage/shmem_enabled (or use --memory-backend anon|hugetlb)`;
  }

  /** `size` bytes of RAM; with `growTo`, in address space for that many, so that it can grow in place (grow()). */
  static allocate(size: bigint, backend: RamBackend, pageSize: bigint, growTo?: bigint): GuestRam {
    const align = backend === 'hugetlb' ? HUGE_2M : pageSize;
    if (size <= 0n || size % align !== 0n)
      throw new RamError(
        `memory size ${size} bytes is not a multiple of the ${backend === 'hugetlb' ? '2 MiB huge' : `${pageSize}-byte`} page size; use e.g. --memory ${sizeText(size <= 0n ? align : ((size + align - 1n) / align) * align)}`,
      );
    // A larger view would abort the process inside koffi, not throw.
    if (size > MAX_RAM_ALLOCATION)
      throw new RamError(
        `memory size ${size} bytes is over ${sizeText(MAX_RAM_ALLOCATION)}, the most one allocation may be (the VMM views it as one typed array)`,
      );
    if (backend === 'hugetlb') {
      const free = hugePagesFree();
      const need = size / HUGE_2M;
      if (free < need)
        throw new RamError(
          `hugetlb guest RAM needs ${need} free 2 MiB huge pages, ${free} are free; reserve them with: echo ${need} | sudo tee /proc/sys/vm/nr_hugepages`,
        );
    }
    let fd = -1;
    try {
      if (backend !== 'anon') {
        fd = libc.memfdCreate('pinion-guest-ram', libc.MFD_CLOEXEC | (backend === 'hugetlb' ? libc.MFD_HUGETLB | libc.MFD_HUGE_2MB : 0));
        libc.ftruncateFd(fd, size, 'memfd:pinion-guest-ram');
      }
      const flags = fd < 0 ? libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE : libc.MAP_SHARED;
      if (growTo !== undefined && growTo > size) {
        if (growTo > MAX_RAM_ALLOCATION)
          throw new RamError(`guest RAM may grow to at most ${sizeText(MAX_RAM_ALLOCATION)}, not ${sizeText(growTo)}`);
        // 2 MiB aligned, so that each 2 MiB of the file lands on one huge page of the mapping.
        const room = libc.reserveAddressSpace(Number(growTo), Number(HUGE_2M), ramPath(fd));
        try {
          mapPart(room, 0n, size, flags, fd, backend);
        } catch (e) {
          room.release();
          throw e;
        }
        return new GuestRam(backend, size, room.vaddr, room.view(Number(size)), fd, undefined, room);
      }
      const m = libc.mmapFd(Number(size), flags, fd, 0n, ramPath(fd));
      if (backend !== 'hugetlb') m.advise(libc.MADV_HUGEPAGE, 'madvise(MADV_HUGEPAGE) of guest RAM');
      return new GuestRam(backend, size, m.vaddr, m.bytes, fd, m);
    } catch (e) {
      if (fd >= 0) libc.closeFd(fd);
      throw e;
    }
  }

  /**
   * RAM another process allocated, handed over in a live update: its memfd,
   * mapped here whole. Takes `fd` (closed by free(), or here if the mapping
   * fails). hugetlbfs reports its page size as the file's block size, which
   * tells a hugetlb memfd from a shmem one.
   */
  static adopt(fd: number, pageSize: bigint): GuestRam {
    try {
      const st = fstatSync(fd);
      const backend: RamBackend = BigInt(st.blksize) > pageSize ? 'hugetlb' : 'memfd';
      const size = BigInt(st.size);
      const m = libc.mmapFd(Number(size), libc.MAP_SHARED, fd, 0n, 'memfd:pinion-guest-ram (handed over)');
      if (backend !== 'hugetlb') m.advise(libc.MADV_HUGEPAGE, 'madvise(MADV_HUGEPAGE) of guest RAM');
      return new GuestRam(backend, size, m.vaddr, m.bytes, fd, m);
    } catch (e) {
      libc.closeFd(fd);
      throw e;
    }
  }

  /**
   * The RAM made `size` bytes long in place: the same address and, for a memfd, the same file, longer;
   * what it held stays where it was. Only up to maxSize. A failed grow leaves the RAM as it was.
   */
  grow(size: bigint): void {
    const old = this.length;
    if (!this.room || size <= old || size > this.maxSize)
      throw new RangeError(`guest RAM of ${sizeText(old)} cannot grow in place to ${sizeText(size)} (room for ${sizeText(this.maxSize)})`);
    if (this.backend === 'hugetlb') {
      const need = (size - old) / HUGE_2M;
      const free = hugePagesFree();
      if (free < need)
        throw new RamError(
          `growing hugetlb guest RAM by ${sizeText(size - old)} needs ${need} free 2 MiB huge pages, ${free} are free; reserve more with: echo $(( $(cat /proc/sys/vm/nr_hugepages) + ${need} )) | sudo tee /proc/sys/vm/nr_hugepages`,
        );
    }
    const flags = this.fd < 0 ? libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE : libc.MAP_SHARED;
    if (this.fd >= 0) libc.ftruncateFd(this.fd, size, ramPath(this.fd));
    try {
      mapPart(this.room, old, size - old, flags, this.fd, this.backend);
    } catch (e) {
      if (this.fd >= 0) libc.ftruncateFd(this.fd, old, ramPath(this.fd));
      throw e;
    }
    this.length = size;
    this.view_ = this.room.view(Number(size));
  }

  /** Undoes grow(): the RAM `size` bytes long again, the tail's memory freed. */
  shrinkTo(size: bigint): void {
    if (!this.room || size >= this.length || size <= 0n) return;
    this.room.unmapAt(Number(size), Number(this.length - size));
    if (this.fd >= 0) libc.ftruncateFd(this.fd, size, ramPath(this.fd));
    this.length = size;
    this.view_ = this.room.view(Number(size));
  }

  /** A view of [offset, offset+len) of the allocation, bounds-checked. */
  view(offset: bigint, len: number): Uint8Array {
    if (offset < 0n || offset + BigInt(len) > this.size)
      throw new RangeError(`guest RAM access ${hex(offset)}+${hex(len)} is outside the ${hex(this.size)}-byte RAM`);
    return this.bytes.subarray(Number(offset), Number(offset) + len);
  }

  free(): void {
    this.mapping?.unmap();
    this.room?.release();
    if (this.fd >= 0) libc.closeFd(this.fd);
  }
}

const ramPath = (fd: number): string => (fd < 0 ? 'anonymous guest RAM' : 'memfd:pinion-guest-ram');

/** [offset, offset+size) of `room` mapped to the RAM's memfd (or anonymous memory), huge pages asked for. */
function mapPart(room: libc.Reservation, offset: bigint, size: bigint, flags: number, fd: number, backend: RamBackend): void {
  room.mapAt(Number(offset), Number(size), flags, fd, fd < 0 ? 0n : offset, ramPath(fd));
  if (backend !== 'hugetlb') room.advise(Number(offset), Number(size), libc.MADV_HUGEPAGE, 'madvise(MADV_HUGEPAGE) of guest RAM');
}

/** The selected word of a THP sysfs mode file ("always [madvise] never"), or undefined without THP. */
export function thpMode(path: string): string | undefined {
  try {
    return /\[(\w+)\]/.exec(readFileSync(path, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

export function hugePagesFree(): bigint {
  const m = /^HugePages_Free:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? BigInt(m[1]!) : 0n;
}
