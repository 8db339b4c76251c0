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
import type { AssignedState } from '../devices/vfio/saved.js';

import type { DevicesImage } from './assignment.js';

export type { AssignedState } from '../devices/vfio/saved.js';

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
  /** The assigned devices, when the VM has any. */
  devices?: DevicesImage;
}

export interface MachineState {
  vcpus: VcpuState[];
  vm: VmState;
  platform: PlatformState;
  /** The assigned functions' part, when the VM has any. */
  assigned?: AssignedState[];
}

export function imageConfig(c: MachineConfig): ImageConfig {
  const { consoleFd, fds, kvmHint, ...kept } = c;
  void [consoleFd, fds, kvmHint];
  return kept;
}
