// The fds pinion open hands down: each checked to be open and the device its
// variable names, before the VMM adopts it.
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

// Against a real /dev/kvm fd: test/rig/inherited-fds.test.ts.
