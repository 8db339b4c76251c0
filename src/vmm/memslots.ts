// KVM memslots as a memory listener: every guest memory region becomes a slot.
import { ioctl } from '../sys/libc.js';
import * as K from '../sys/kvm.js';
import type { MemoryListener, MemoryRegion } from '../memory/listener.js';

export class KvmMemslots implements MemoryListener {
  private readonly slots = new Map<MemoryRegion, number>();
  private readonly free: number[] = [];
  private next = 0;

  constructor(
    private readonly vmFd: number,
    /** KVM_SET_USER_MEMORY_REGION2 when the kernel has it, else v1. */
    private readonly v2: boolean,
  ) {}

  regionAdd(r: MemoryRegion): void {
    const slot = this.free.pop() ?? this.next++;
    this.set(slot, r.readonly ? K.KVM_MEM_READONLY : 0, r.gpa, r.size, r.hva);
    this.slots.set(r, slot);
  }

  regionRemove(r: MemoryRegion): void {
    const slot = this.slots.get(r);
    if (slot === undefined) return;
    this.set(slot, 0, r.gpa, 0n, 0n); // size 0 deletes the slot
    this.slots.delete(r);
    this.free.push(slot);
  }

  commit(): void {}

  private set(slot: number, flags: number, gpa: bigint, size: bigint, hva: bigint): void {
    const ctx = { iova: gpa, size };
    if (this.v2)
      ioctl(
        this.vmFd,
        K.KVM_SET_USER_MEMORY_REGION2,
        K.kvm_userspace_memory_region2(slot, flags, gpa, size, hva),
        `KVM_SET_USER_MEMORY_REGION2(slot ${slot})`,
        ctx,
      );
    else
      ioctl(
        this.vmFd,
        K.KVM_SET_USER_MEMORY_REGION,
        K.kvm_userspace_memory_region(slot, flags, gpa, size, hva),
        `KVM_SET_USER_MEMORY_REGION(slot ${slot})`,
        ctx,
      );
  }
}
