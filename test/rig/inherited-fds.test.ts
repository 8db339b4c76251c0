// The fds pinion open hands down, checked against a real /dev/kvm in L1
// (test/l1/inherited-fds.ts): the right device passes, a wrong one or a bad
// table is refused with the variable, the fd and what it really is.
import t from 'tap';
import { l1Json } from '../support/rig.js';

interface Refusal {
  message?: string;
  exitCode?: number;
}
interface Out {
  kvm: number;
  passed: Record<string, unknown> | null;
  asIommufd: Refusal;
  asDevice: Refusal;
  badTable: Refusal;
}

t.test('the right device passes, a wrong one or a bad table is refused (real /dev/kvm)', async (t) => {
  const { result: o, run } = await l1Json<Out>('type1', 'inherited-fds');
  t.equal(run.exitCode, 0, run.stderr.toString().slice(-2000));
  t.same(o.passed, { kvm: o.kvm }, 'PINION_KVM_FD alone: only the KVM fd');
  t.match(o.asIommufd.message, /PINION_IOMMUFD_FD=\d+: fd \d+ is \/dev\/kvm \(char 10:232\), not \/dev\/iommu$/);
  t.match(
    o.asDevice.message,
    /PINION_DEVICE_FDS 0000:01:00\.0=\d+: fd \d+ is \/dev\/kvm \(char 10:232\), not the VFIO cdev of 0000:01:00\.0$/,
  );
  t.equal(o.badTable.exitCode, 2, 'a malformed table is a usage error');
  t.match(o.badTable.message, /write KEY=FD,KEY=FD/);
});
