// The one door into the Rust core (crates/pin-core): every native function
// TypeScript calls is typed here, so the surface is visible in one file.
// Kernel failures come back as PinCoreError with errno name, op, IOVA, size, path.
// No call ends node: a bad argument is a TypeError or RangeError (code EINVAL),
// and even a bug in pin-core (a panic) is thrown, as code EPANIC.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Opaque handle of a backend object (container or IOAS) held by pin-core. */
export type BackendHandle = number & { readonly __backend: unique symbol };

/** A 64-bit unsigned argument: a BigInt, or a Number that is a safe integer (below 2^53), which crosses without a BigInt. */
export type U64 = bigint | number;

export type MemoryKind = 'anon' | 'thp' | 'memfd' | 'hugetlb';
export type Backing = { vaddr: bigint } | { fd: number; offset: bigint };
export interface Prot {
  read: boolean;
  write: boolean;
}

/**
 * The kernel code serving a DMA space (pin-core's IommuPath): VFIO's own type1
 * container, iommufd's compat container behind /dev/vfio/vfio, or iommufd. It
 * decides who is charged for pins. The legacy interface (IommuKind) lands on
 * type1 or compat, as the kernel was built.
 */
export type IommuPath = 'type1' | 'compat' | 'iommufd';
/** What VFIO_SET_IOMMU gave a legacy container. */
export type ContainerType = 'type1' | 'type1v2';

export interface Caps {
  path: IommuPath;
  /** null on iommufd, and on a legacy container before type1SetIommu. */
  containerType: ContainerType | null;
  canCopy: boolean;
  canMapFile: boolean;
  unmapAll: boolean;
  updateVaddr: boolean;
  maxEntries: number | null;
  pgsizeBitmap: bigint;
  /** How the path DMA-maps a BAR for peer-to-peer: by its mmap's address (type1), as a dma-buf file (iommufd), or not (compat). */
  p2p: 'vaddr' | 'dma-buf' | 'none';
}

export type AccountingMode = 'per-user' | 'per-process';
export interface AccountingCharge {
  /** The mode in effect (type1 and compat are per-process whatever was asked). */
  mode: AccountingMode;
  counters: ('VmLck' | 'VmPin' | 'user.locked_vm')[];
  limit: 'process' | 'user-total' | 'none';
  when: 'map' | 'device-attach';
}

export interface Region {
  iova: bigint;
  size: bigint;
  backing: Backing;
  prot: Prot;
}

export type PlannedOp =
  | { op: 'unmap'; iova: bigint; size: bigint }
  | { op: 'map'; iova: bigint; size: bigint }
  | { op: 'copy'; srcIova: bigint; dstIova: bigint; size: bigint };

/** One record of a batch as pin-core reads it (batchDecode). */
export type BatchRecord =
  | { op: 'map'; iova: bigint; size: bigint; backing: Backing; prot: Prot }
  | { op: 'unmap'; iova: bigint; size: bigint }
  | { op: 'copy'; srcIova: bigint; dstIova: bigint; size: bigint };

export interface SyncResult {
  ops: PlannedOp[];
  peakCharged: bigint;
  finalCharged: bigint;
}

export interface PinCore {
  version(): string;
  pageSize(): number;

  /** Installs the no-op SIGRTMIN handler that makes a kicked thread's KVM_RUN return EINTR; returns the signal. */
  kickInit(): number;
  /** The calling thread's kernel thread id (gettid), for threadKick. */
  threadSelf(): bigint;
  /** Signals that thread of this process (tgkill); one that is gone is ESRCH. */
  threadKick(thread: bigint): void;

  /** The accounting model: what pinning on `path` in `mode` charges, against which limit, and when. */
  accountingCharge(path: IommuPath, mode: AccountingMode, capIpcLock: boolean): AccountingCharge;

  /** Guest-RAM-like memory: returns its address (and memfd, else -1). Populated when asked. */
  memAlloc(kind: MemoryKind, size: bigint): { vaddr: bigint; fd: number };
  /**
   * Unmaps memory memAlloc returned (all of it or whole pages of it) and closes its memfd when `fd` is given.
   * Any other range, a second free or another fd is a RangeError: nothing is unmapped or closed.
   */
  memFree(vaddr: bigint, size: bigint, fd: number): void;
  /** MADV_POPULATE_WRITE over [vaddr, vaddr+size), split across `threads` (1 to 256) threads. */
  memPopulate(vaddr: bigint, size: bigint, threads: number): void;

  /**
   * Legacy container: opens `path` (or adopts fd >= 0), not yet usable for DMA. Groups join it themselves (VfioGroup.joinContainer).
   * An adopted fd is pin-core's from the call on, and closed if the call throws.
   */
  type1Open(path: string, fd: number): BackendHandle;
  /** VFIO_SET_IOMMU, preferring type1v2 unless `v1only`; the container needs a group in it first. */
  type1SetIommu(h: BackendHandle, v1only: boolean): void;
  type1UpdateVaddr(h: BackendHandle, iova: bigint, size: bigint, vaddr: bigint | null): void;
  /**
   * Live update: takes the container fd (>= 0, pin-core's from the call on) another process set up, its groups in it,
   * its IOMMU set and its DMA mappings kept: no VFIO_SET_IOMMU. Caps and IOVA ranges are read as type1SetIommu reads
   * them; the type from VFIO_IOMMU_DIRTY_PAGES (EACCES on type1, EINVAL on type1v2; compat keeps none). A container
   * with no IOMMU set fails with the kernel's errno, op VFIO_IOMMU_GET_INFO and the path. Seed its table next.
   */
  type1Inherit(path: string, fd: number): BackendHandle;
  /**
   * The old process's hand-over: VFIO_DMA_UNMAP_FLAG_VADDR on each table mapping in IOVA order (mappings and pins
   * stay; the table does not change). On a failure the vaddrs already invalidated are supplied again (best effort)
   * and the first error is thrown (op VFIO_IOMMU_UNMAP_DMA(VADDR), iova, size, path). Returns how many.
   */
  type1InvalidateVaddrs(h: BackendHandle): number;
  /**
   * VFIO_DMA_MAP_FLAG_VADDR with the table's vaddr on each mapping in IOVA order, moving its lock accounting to
   * this process: the new process after seed, or the old one taking its VM back (a vaddr the other process supplied
   * is invalidated and supplied again). Stops at the first failure (op VFIO_IOMMU_MAP_DMA(VADDR); ENOMEM under
   * RLIMIT_MEMLOCK), the mappings before it done. Returns how many.
   */
  type1SetVaddrs(h: BackendHandle): number;

  /** iommufd: opens `path` (or adopts fd >= 0, as type1Open) and allocates an IOAS. */
  iommufdOpen(path: string, fd: number): BackendHandle;
  /**
   * Live update: takes an iommufd fd (>= 0, as type1Inherit) and the IOAS `ioasId` another process set up in it, its
   * mappings kept: no IOMMU_IOAS_ALLOC. IOMMU_IOAS_IOVA_RANGES checks the IOAS, so a wrong id throws here (ENOENT).
   */
  iommufdInherit(path: string, fd: number, ioasId: number): BackendHandle;
  iommufdIoasId(h: BackendHandle): number;
  iommufdOption(h: BackendHandle, option: 'rlimit_mode' | 'huge_pages', value: bigint | null): bigint;
  /** IOMMU_IOAS_CHANGE_PROCESS: moves every pin charge of the iommufd to this process; every area must be mapped by file. */
  iommufdChangeProcess(h: BackendHandle): void;
  /** IOMMUFD_TEST mock domain attached to the IOAS; returns its stdev id. */
  iommufdMockDomain(h: BackendHandle): number;
  iommufdDestroy(h: BackendHandle, id: number): void;

  backendFd(h: BackendHandle): number;
  caps(h: BackendHandle): Caps;
  iovaRanges(h: BackendHandle): [bigint, bigint][];
  /** One ioctl, straight to the backend: no mapping table (the conformance suite asks the kernel itself). */
  map(h: BackendHandle, iova: U64, size: U64, backing: Backing, prot: Prot): void;
  unmap(h: BackendHandle, iova: U64, size: U64): bigint;
  unmapAll(h: BackendHandle): bigint;
  copy(h: BackendHandle, srcIova: bigint, dstIova: bigint, size: bigint): void;
  close(h: BackendHandle): void;

  /** The mapping table over a backend: brings the IOMMU to exactly `regions`. */
  sync(h: BackendHandle, regions: Region[], budgetBytes: bigint | null): SyncResult;
  /** What sync would do, issuing nothing. */
  plan(h: BackendHandle, regions: Region[], budgetBytes: bigint | null): SyncResult;
  table(h: BackendHandle): Region[];
  /**
   * Records `regions` (as `table` gave them in the old process, or as it synced them) as mappings the kernel holds
   * already: no ioctl. Only into an empty table (else EBUSY); each region checked as a map of it would be (the
   * kernel's errno, with `index`, `iova`, `size` and no `op`), a file backing refused on type1 (EOPNOTSUPP); all or
   * nothing. A `sync` to the same memory then plans nothing.
   */
  seed(h: BackendHandle, regions: Region[]): void;
  /**
   * Runs the first `count` records of `ops` (DmaBatch's layout, crates/pin-core/src/batch.rs) in order, in one
   * call, through the same mapping table as `sync`: each is checked by the table's rules and `budgetBytes`
   * (locked memory the batch may add above what the table charges at its start) before its ioctl. Stops at the
   * first record refused or failed, with a PinCoreError whose `index` names it; the records before it stay done.
   * An unmap record's word 3 comes back holding the bytes the kernel unmapped. Returns `count`.
   */
  mapBatch(h: BackendHandle, ops: BigUint64Array, count: number, budgetBytes: bigint | null): number;
  /** What pin-core reads from a batch array, without running it (for tests and diagnostics). */
  batchDecode(ops: BigUint64Array, count: number): BatchRecord[];
}

/**
 * A failure inside pin-core: the kernel's errno name plus what was being done. `code` is also EINVAL on the
 * TypeError or RangeError of a bad argument, EBADF for a handle that is not open, EBADFD for one a pin-core
 * bug left unusable (close it), and EPANIC for that bug itself.
 */
export interface PinCoreError extends Error {
  code: string;
  errno?: number;
  op?: string;
  iova?: bigint;
  size?: bigint;
  path?: string;
  /** On a failed sync or batch: what the mapping table charges after it (the ops that ran before a kernel error stay). */
  finalCharged?: bigint;
  /** On a failed batch: the record that failed (or could not be read). No `op` means no ioctl was made: the table refused it. */
  index?: number;
}

function addonPath(): string {
  // Same relative place from src/ and from dist/src/.
  for (const rel of ['../../crates/pin-core/pin-core.node', '../../../crates/pin-core/pin-core.node']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  throw new Error('pin-core addon is not built: run npm run build:native');
}

function load(): PinCore {
  const path = addonPath();
  try {
    return createRequire(import.meta.url)(path) as PinCore;
  } catch (e) {
    // dlopen and N-API version errors run over several lines; the user needs the first and the fix.
    const why = String((e as Error).message).split('\n')[0];
    throw new Error(`pin-core addon ${path} does not load (${why}); rebuild it: npm run build:native`);
  }
}

export const pinCore: PinCore = load();
