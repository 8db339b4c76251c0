// The L1 helpers' pure parts: each VMM's command line for the same guest, and
// console lines cleaned before they are matched.
import t from 'tap';
import { consoleText, vmmArgv } from '../../rig/l1/linux-guest.js';

const o = {
  kernel: '/k/bzImage',
  initrd: '/k/rd.gz',
  device: '0000:01:10.0',
  ip: '192.0.2.2/24',
  command: 'echo "a b"; ping -c 3 192.0.2.1',
};

t.test('Pinion and QEMU get the same kernel, initrd, command line, memory, vCPUs and function', async (t) => {
  const [pc, pa] = vmmArgv({ ...o, vmm: 'pinion', iommu: 'iommufd' });
  const [qc, qa] = vmmArgv({ ...o, vmm: 'qemu', iommu: 'iommufd' });
  t.equal(pc, process.execPath);
  t.equal(qc, 'qemu-system-x86_64');
  const after = (a: string[], f: string): string => a[a.indexOf(f) + 1]!;
  t.equal(after(pa, '--append'), after(qa, '-append'), 'one kernel command line');
  const run = /pinion\.run=(\S+)/.exec(after(pa, '--append'))![1]!;
  t.equal(Buffer.from(run, 'base64').toString(), o.command, 'the command travels as one base64 word');
  t.equal(after(pa, '--kernel'), after(qa, '-kernel'));
  t.equal(after(pa, '--initrd'), after(qa, '-initrd'));
  t.equal(after(pa, '--memory'), after(qa, '-m'));
  t.equal(after(pa, '--cpus'), after(qa, '-smp'));
  t.equal(after(pa, '--iommu'), 'iommufd');
  t.same(qa.slice(qa.indexOf('-object')), ['-object', 'iommufd,id=ifd0', '-device', 'vfio-pci,host=0000:01:10.0,iommufd=ifd0']);
  const [, ql] = vmmArgv({ ...o, vmm: 'qemu', iommu: 'legacy' });
  t.notOk(ql.includes('-object'), 'legacy: no iommufd object');
  t.equal(after(ql, '-device'), 'vfio-pci,host=0000:01:10.0');
});

t.test("console lines lose CR and SeaBIOS's screen-clearing escapes", async (t) => {
  t.equal(consoleText('\x1bc\x1b[?7l\x1b[2Jpinion-guest: init at 4.28 s\r'), 'pinion-guest: init at 4.28 s');
  t.equal(consoleText('\x1b[0mSeaBIOS (version 1.16.3)'), 'SeaBIOS (version 1.16.3)');
  t.equal(consoleText('plain [ 1.0] text'), 'plain [ 1.0] text');
});
