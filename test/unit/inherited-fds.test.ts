// The fds pinion open hands down: each checked to be open and the device its
// variable names, before the VMM adopts it.
import { closeSync, openSync } from 'node:fs';
import t from 'tap';
import { devNumbers, openerFds } from '../../src/cli/inherited-fds.js';

t.test("dev_t splits as glibc's gnu_dev_major/minor do", async (t) => {
  t.same(devNumbers(0x0ae8n), { major: 10n, minor: 232n }, '/dev/kvm, 10:232');
  // major 0x123 and minor 0x45678: minor's low byte, major's 12 bits, minor's high 12 bits.
  t.same(devNumbers(0x45612378n), { major: 0x123n, minor: 0x45678n });
  t.same(
    devNumbers((0xabc000n << 32n) | (0xdefn << 8n)),
    { major: 0xabcdefn, minor: 0n },
    'major above 12 bits (makedev: its high bits from bit 44)',
  );
});

t.test('no PINION_KVM_FD: nothing inherited; a stray variable is refused', async (t) => {
  t.equal(openerFds({}), undefined);
  t.throws(() => openerFds({ PINION_DEVICE_FDS: '0000:01:00.0=5' }), {
    exitCode: 2,
    message: /^PINION_DEVICE_FDS is set without PINION_KVM_FD/,
  });
});

const kvmFd = ((): number | undefined => {
  try {
    return openSync('/dev/kvm', 'r');
  } catch {
    return undefined;
  }
})();

t.test(
  'the right device passes, a wrong one or a bad table is refused',
  { skip: kvmFd === undefined && 'no readable /dev/kvm here' },
  async (t) => {
    const kvm = kvmFd!;
    t.teardown(() => closeSync(kvm));
    t.same(openerFds({ PINION_KVM_FD: String(kvm) }), {
      kvm,
      iommufd: undefined,
      devices: undefined,
      container: undefined,
      groups: undefined,
    });
    t.throws(
      () => openerFds({ PINION_KVM_FD: String(kvm), PINION_IOMMUFD_FD: String(kvm) }),
      /PINION_IOMMUFD_FD=\d+: fd \d+ is \/dev\/kvm \(char 10:232\), not \/dev\/iommu$/,
    );
    t.throws(
      () => openerFds({ PINION_KVM_FD: String(kvm), PINION_DEVICE_FDS: `0000:01:00.0=${kvm}` }),
      /PINION_DEVICE_FDS 0000:01:00\.0=\d+: fd \d+ is \/dev\/kvm \(char 10:232\), not the VFIO cdev of 0000:01:00\.0$/,
    );
    t.throws(() => openerFds({ PINION_KVM_FD: String(kvm), PINION_GROUP_FDS: '7' }), { exitCode: 2, message: /write KEY=FD,KEY=FD/ });
  },
);
