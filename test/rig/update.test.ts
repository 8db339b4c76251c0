// Live update with an assigned VF, in L1: what CI will run once the VFIO
// part of the hand-over exists (src/update/, Machine.handoverRefusal). Each
// case is listed here and left to do; test/unit/update-kvm.test.ts checks
// the KVM-only hand-over on a host with /dev/kvm meanwhile.
import t from 'tap';

const todo = [
  'type1 kernel, legacy path: a 256 MiB guest with one igb VF, DMA running (loopback frames) through the hand-over; VFIO_DMA_UNMAP_FLAG_VADDR in the old process at save, VFIO_DMA_MAP_FLAG_VADDR to the new mapping of the same memfd in restore; no frame lost, the pause at most 250 ms',
  'type1 kernel, iommufd path: RAM mapped by file from the start, IOMMU_IOAS_CHANGE_PROCESS in the new process; the same checks',
  'compat kernel, legacy path: refused up front (the compat container refuses the VADDR flags), the VM untouched',
  'each path: VmLck and VmPin of the old and the new process before, during (paused) and after the hand-over, and of the user',
  'each path: the new process killed at each step, a VADDR map or CHANGE_PROCESS made to fail: the old process takes the VM back (VADDR re-map to its own mapping, CHANGE_PROCESS back) and DMA goes on',
  'the MSI-X vectors and INTx keep firing into the guest across the hand-over (eventfds and irqfds onto the new VM, the GSI routing restated)',
  'the pause and each step recorded in bench/results/update.json',
];

for (const what of todo) t.test(what, { todo: true }, async () => {});
