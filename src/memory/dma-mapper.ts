// The VMM's view of one DMA address space (a legacy container or an iommufd
// IOAS, shared by all of a VM's devices): bring it to exactly the guest's
// DMA-able regions with `sync`, read back what is mapped, close it.
// Device code never asks which backend this is; `caps` says what it can do.
import type { DmaBatch } from './dma-batch.js';
import { pinCore, type BackendHandle, type Caps, type PinCoreError, type Region, type SyncResult } from './pin-core.js';

/** A failed DMA operation: errno name, the kernel operation, and the IOVA range it was working on. */
export class DmaError extends Error {
  override readonly name = 'DmaError';
  constructor(
    readonly code: string,
    readonly op: string | undefined,
    readonly iova: bigint | undefined,
    readonly size: bigint | undefined,
    readonly path: string | undefined,
    message: string,
    /** A failed sync's or batch's charge of the mapping table after it, as SyncResult.finalCharged. */
    readonly finalCharged: bigint | undefined = undefined,
    /** A failed batch's record: those before it ran. */
    readonly index: number | undefined = undefined,
  ) {
    super(message);
  }

  static from(e: unknown): unknown {
    const p = e as PinCoreError;
    return typeof p?.code === 'string' ? new DmaError(p.code, p.op, p.iova, p.size, p.path, p.message, p.finalCharged, p.index) : e;
  }
}

function call<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw DmaError.from(e);
  }
}

export class DmaMapper {
  private constructor(readonly handle: BackendHandle) {}

  /**
   * The legacy path: a container that `joinFirstGroup` puts a group in (given
   * the container fd: the group's owner does VFIO_GROUP_SET_CONTAINER), then
   * an IOMMU type, which the kernel refuses on an empty container.
   */
  static legacy(
    joinFirstGroup: (containerFd: number) => void,
    opts: { containerPath?: string; containerFd?: number; v1only?: boolean } = {},
  ): DmaMapper {
    const h = call(() => pinCore.type1Open(opts.containerPath ?? '/dev/vfio/vfio', opts.containerFd ?? -1));
    try {
      joinFirstGroup(call(() => pinCore.backendFd(h)));
      call(() => pinCore.type1SetIommu(h, opts.v1only ?? false));
    } catch (e) {
      pinCore.close(h);
      throw e;
    }
    return new DmaMapper(h);
  }

  /** Wraps a backend set up step by step through pin-core (as the conformance suite does). */
  static fromHandle(h: BackendHandle): DmaMapper {
    return new DmaMapper(h);
  }

  /** The iommufd path: one IOAS; devices bind to `fd` and attach to `ioasId`. */
  static iommufd(opts: { path?: string; fd?: number } = {}): DmaMapper {
    return new DmaMapper(call(() => pinCore.iommufdOpen(opts.path ?? '/dev/iommu', opts.fd ?? -1)));
  }

  /**
   * Live update, legacy path: the container `fd` another process set up (groups in it, IOMMU set, the VM's mappings
   * kept); no VFIO_SET_IOMMU. Its table is empty until `seed`.
   */
  static inheritLegacy(fd: number, path = '/dev/vfio/vfio'): DmaMapper {
    return new DmaMapper(call(() => pinCore.type1Inherit(path, fd)));
  }

  /** Live update, iommufd path: the iommufd `fd` and its IOAS `ioasId` another process set up; no IOMMU_IOAS_ALLOC. */
  static inheritIommufd(fd: number, ioasId: number, path = '/dev/iommu'): DmaMapper {
    return new DmaMapper(call(() => pinCore.iommufdInherit(path, fd, ioasId)));
  }

  get caps(): Caps {
    return call(() => pinCore.caps(this.handle));
  }

  /** The fd devices bind to (iommufd) or the container fd (legacy). */
  get fd(): number {
    return call(() => pinCore.backendFd(this.handle));
  }

  get ioasId(): number {
    return call(() => pinCore.iommufdIoasId(this.handle));
  }

  /** Makes the IOMMU map exactly `regions`; `budgetBytes` caps extra locked memory during the change. */
  sync(regions: Region[], budgetBytes: bigint | null = null): SyncResult {
    return call(() => pinCore.sync(this.handle, regions, budgetBytes));
  }

  /** What sync(regions) would do, issuing nothing. */
  plan(regions: Region[], budgetBytes: bigint | null = null): SyncResult {
    return call(() => pinCore.plan(this.handle, regions, budgetBytes));
  }

  /**
   * Runs a batch's records in order in one crossing, through the same mapping table as `sync` (a plan of
   * `sync` already runs in one crossing; this is for callers with ops of their own). Stops at the first
   * record refused or failed: a DmaError whose `index` names it, the records before it done.
   */
  run(batch: DmaBatch, budgetBytes: bigint | null = null): void {
    try {
      pinCore.mapBatch(this.handle, batch.words, batch.count, budgetBytes);
    } catch (e) {
      throw DmaError.from(e);
    }
  }

  mapped(): Region[] {
    return call(() => pinCore.table(this.handle));
  }

  /** Records what an inherited backend already maps (the old process's `mapped()`), with no ioctl: only into an empty table. */
  seed(regions: Region[]): void {
    call(() => pinCore.seed(this.handle, regions));
  }

  /** Legacy path, old process: invalidates every mapping's vaddr (the mappings stay); undone if one fails. Returns how many. */
  invalidateVaddrs(): number {
    return call(() => pinCore.type1InvalidateVaddrs(this.handle));
  }

  /** Legacy path: supplies this process's vaddr for every mapping, taking over its lock accounting. Returns how many. */
  setVaddrs(): number {
    return call(() => pinCore.type1SetVaddrs(this.handle));
  }

  /** iommufd path: moves every pin charge to this process (IOMMU_IOAS_CHANGE_PROCESS). */
  changeProcess(): void {
    call(() => pinCore.iommufdChangeProcess(this.handle));
  }

  /** Closing the fd makes the kernel unmap and unpin everything. */
  close(): void {
    call(() => pinCore.close(this.handle));
  }
}
