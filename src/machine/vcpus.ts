// The vCPUs, configured from the VMM thread: CPUID for each, and entry
// registers where the boot plan gives them; the others wait in KVM for the
// boot CPU's INIT/SIPI.
import type { UndoStack } from '../sys/undo.js';
import { longModeSregs } from '../vmm/boot.js';
import { vcpuCpuid } from '../vmm/cpuid.js';
import { Vcpu } from '../vmm/vcpu.js';
import type { Vm } from '../vmm/vm.js';
import type { BootPlan } from './boot-image.js';

export function createVcpus(vm: Vm, cpus: number, boot: BootPlan, undo: UndoStack): Vcpu[] {
  const cpuid = vm.kvm.supportedCpuid();
  const vcpus: Vcpu[] = [];
  for (let i = 0; i < cpus; i++) {
    const v = undo.own(Vcpu.create(vm, i), (x) => x.close());
    vcpus.push(v);
    v.setCpuid(vcpuCpuid(cpuid, i, cpus));
    const regs = boot.regs(i);
    if (!regs) continue;
    v.setSregs(longModeSregs(v.getSregs(), boot.layout));
    v.setRegs(regs);
    if (i > 0) v.setRunnable();
  }
  return vcpus;
}

/** vCPUs for a VM handed over by another process (live update): each with the CPUID its guest already runs with; their registers come after. */
export function adoptVcpus(vm: Vm, cpuid: readonly Buffer[], undo: UndoStack): Vcpu[] {
  return cpuid.map((c, i) => {
    const v = undo.own(Vcpu.create(vm, i), (x) => x.close());
    v.setCpuid(c);
    return v;
  });
}
