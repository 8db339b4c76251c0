// What a Machine hands to the next process in a live update, as plain data
// with this process's fd numbers (src/update makes the versioned record and
// the fd list of it). Two parts, because the next process sets up while the
// guest still runs: the image (how the VM was made, the vCPUs' CPUID, where
// its RAM is), known before the pause, and the state, read with the vCPUs
// paused.
import type { VcpuState } from '../vmm/vcpu-state.js';
import type { VmState } from '../vmm/vm-state.js';
import type { MachineConfig } from './machine.js';
import type { PlatformState } from './platform.js';

/** The config fields the next process keeps (fds are its own, given beside). */
export type ImageConfig = Omit<MachineConfig, 'consoleFd' | 'fds' | 'kvmHint'>;

/** A piece of the guest memory map on one of the handed-over files. */
export interface RegionImage {
  name: string;
  gpa: bigint;
  size: bigint;
  /** Index into MachineImage.backings. */
  backing: number;
  offset: bigint;
  readonly: boolean;
}

export interface MachineImage {
  config: ImageConfig;
  /** /dev/kvm: the next process makes its VM on it (an unprivileged one could not open the node). */
  kvmFd: number;
  consoleFd: number;
  /** The memfds behind guest RAM, each mapped once by the next process. */
  backings: { fd: number }[];
  regions: RegionImage[];
  /** Each vCPU's CPUID (kvm_cpuid2 with its entries): the guest has seen it, the next VM must give the same. */
  cpuid: Buffer[];
}

export interface MachineState {
  vcpus: VcpuState[];
  vm: VmState;
  platform: PlatformState;
  /** The assigned devices' part; no build writes it yet (Machine.handoverRefusal refuses VMs with devices). */
  assigned?: AssignedState[];
}

/** What Pinion holds of an assigned device (the device and VFIO keep the rest). */
export interface AssignedState {
  bdf: string;
  slot: number;
  /** Config space where Pinion emulates it (its overlay over the device's own): 256 or 4096 bytes. */
  config: Buffer;
  /** Where the guest placed each BAR. */
  bars: { bar: number; address: bigint }[];
  /** The MSI-X table as the guest wrote it (16 bytes a vector), and the function's enable and mask bits. */
  msix?: { enabled: boolean; masked: boolean; table: Buffer };
  /** Each interrupt's GSI, its MSI message if it has one, and its eventfd (index in the record's fd list), wired as an irqfd. */
  irqs: { gsi: number; eventfd: number; msi?: { addressLo: number; addressHi: number; data: number } }[];
}

export function imageConfig(c: MachineConfig): ImageConfig {
  const { consoleFd, fds, kvmHint, ...kept } = c;
  void [consoleFd, fds, kvmHint];
  return kept;
}
