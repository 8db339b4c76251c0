// The machine's KVM: /dev/kvm (or the fd an opener passed) and one VM on it.
import type { UndoStack } from '../sys/undo.js';
import { Kvm } from '../vmm/kvm.js';
import { Vm } from '../vmm/vm.js';

export interface KvmOptions {
  /** The KVM device node (default /dev/kvm). */
  path?: string;
  /** The command to suggest when this machine has no KVM. */
  hint?: string;
  /** A /dev/kvm fd opened by a privileged opener, adopted instead. */
  fd?: number;
}

/** The VM, its /dev/kvm reachable as `vm.kvm`; both closed by `undo`. */
export function openVm(o: KvmOptions, undo: UndoStack): Vm {
  const kvm = undo.own(Kvm.open(o.path ?? '/dev/kvm', o.hint, o.fd), (k) => k.close());
  return undo.own(Vm.create(kvm), (v) => v.close());
}
