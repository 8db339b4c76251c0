// Device assignment end to end in the rig, on both kernels and both IOMMU
// paths: SR-IOV VFs and the PF assigned to test guests; the guest's igb
// driver does loopback DMA through guest RAM, takes an MSI-X interrupt and
// exchanges frames with L1's peer igb; two VMs at once; the bad cases.
import t from 'tap';
import { l1Json } from '../support/rig.js';

// src/devices/vfio/iommu.ts's IommuKind, written out: rig tests import nothing from src/.
type IommuKind = 'iommufd' | 'legacy';
interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}
type Out = Record<string, Run> & {
  vfs: string[];
  pinnedAfterVf: number;
  pinnedAfterPf: number;
  pfDriver: string;
  unmappedDma: { bad: Run; faults: string[]; other: Run };
  sharedGroup: {
    group: string;
    members: string[];
    a: string;
    b: string;
    bDriver: string;
    notViable: Record<IommuKind, Run>;
    pinnedAfterRefusal: number;
    viable: Record<IommuKind, Run>;
    pinnedAfter: number;
  };
} & Record<`twoVms-${'iommufd' | 'legacy'}`, { a: Run; b: Run; pidA: number; inUse: Run; pinnedDuring: number; pinnedAfter: number }> &
  Record<`pf-${'iommufd' | 'legacy'}`, Run & { peerRxBefore: number; peerRxAfter: number }>;

const line = (s: string, l: string): boolean => s.split('\n').includes(`pinion-guest: ${l}`);
const oneLine = (s: string): boolean => s.trim().split('\n').length === 1;

for (const kernel of ['type1', 'compat'] as const) {
  t.test(`${kernel} kernel`, async (t) => {
    const { result: o, run } = await l1Json<Out>(kernel, 'assign', [kernel], { timeoutSec: 900 });
    t.equal(run.exitCode, 0, 'the L1 script ran to the end');
    const legacyKind = kernel === 'compat' ? 'type1v2 served by iommufd' : 'type1v2';

    t.test('the PF: loopback DMA, MSI-X and frames with the peer, on each path', async (t) => {
      for (const iommu of ['iommufd', 'legacy'] as const) {
        const r = o[`pf-${iommu}`];
        t.equal(r.status, 0, `${iommu}: guest exit 0`);
        t.ok(line(r.stdout, 'pci 00:01.0 8086:10c9 class 02:00:00'), `${iommu}: the guest finds the 82576 at 00:01.0`);
        t.ok(
          line(r.stdout, '  bar0 0xc0000000 size 0x20000') && line(r.stdout, '  bar2 0x0000c001 size 0x20'),
          `${iommu}: BAR sizing (all ones written, size read back, address restored)`,
        );
        t.ok(line(r.stdout, 'igb 00:01.0: BAR0 0xc0000000 reset ok'), `${iommu}: BAR0 (a memslot over the mmap'd BAR) works`);
        t.ok(
          line(r.stdout, 'igb: loopback frame of 128 bytes received and checked'),
          `${iommu}: the NIC's DMA went through the IOMMU into guest RAM`,
        );
        t.ok(
          line(r.stdout, 'igb: INTx interrupt received 2 times through IOAPIC pin 17 (level, unmasked at each EOI)'),
          `${iommu}: INTx through VFIO eventfd -> KVM irqfd -> IOAPIC, and the resample eventfd unmasking it`,
        );
        t.ok(line(r.stdout, 'igb: MSI-X vector 0 interrupt received'), `${iommu}: MSI-X through VFIO eventfd -> KVM irqfd -> guest`);
        t.ok(
          line(r.stdout, 'igb: MSI-X vector 0 masked: held pending (PBA bit 0 set), delivered on unmask'),
          `${iommu}: per-vector masking, the PBA and delivery on unmask`,
        );
        t.ok(
          line(r.stdout, 'igb: MSI interrupt received'),
          `${iommu}: MSI (virtualised capability) through VFIO eventfd -> KVM irqfd -> guest`,
        );
        t.ok(line(r.stdout, 'igb: sent 3 frames to the wire'));
        t.ok(r.peerRxAfter - r.peerRxBefore >= 3, `${iommu}: L1's peer igb counted the guest's frames (${r.peerRxAfter - r.peerRxBefore})`);
        t.match(r.stdout, /igb: received [1-9]\d* frame\(s\) from the wire/, `${iommu}: the guest received L1's frames`);
        t.match(r.stdout, /pinion-peer frame \d+/, `${iommu}: with L1's payload`);
        t.match(
          r.stderr,
          iommu === 'iommufd'
            ? /assigned 0000:01:00\.0 at 00:01\.0 via iommufd \(cdev, one IOAS per VM\)/
            : /assigned 0000:01:00\.0 at 00:01\.0 via the legacy container \(group \d+\)/,
        );
        t.match(r.stderr, /; INTx -> IOAPIC pin 17 \(resample irqfd\)\n/, `${iommu}: INTx wired at attach, and said so`);
        t.match(
          r.stderr,
          new RegExp(`guest RAM DMA-mapped: 64 MiB in 32 mapping\\(s\\) \\(${iommu === 'iommufd' ? 'iommufd' : legacyKind}\\)`),
        );
        const charge = /VmLck (\d+) KiB, VmPin (\d+) KiB/.exec(r.stderr);
        // Who is charged (VMM as root): type1 -> VmLck; iommufd, the compat container included -> VmPin.
        const want = iommu === 'legacy' && kernel === 'type1' ? [65536, 0] : [0, 65536];
        t.same(charge?.slice(1).map(Number), want, `${iommu}: charged VmLck/VmPin ${want.join('/')} KiB`);
      }
      t.equal(o.pinnedAfterPf, 0, 'nothing pinned anywhere once the VMs ended');
      t.equal(o.pfDriver, 'vfio-pci', 'the PF is still bound to vfio-pci, ready for the next VM');
    });

    t.test('a DMA to an unmapped IOVA does not land; the VMM and the other VM run on', async (t) => {
      const u = o.unmappedDma;
      t.equal(u.bad.status, 0, 'the faulting VM ran to its own exit');
      t.ok(
        line(u.bad.stdout, 'igb: DMA to unmapped IOVA 0x7f000000: nothing landed in guest RAM, the guest runs on'),
        'no RX buffer in guest RAM changed',
      );
      t.ok(line(u.bad.stdout, 'igb: MSI-X vector 0 interrupt received'), 'the device still works after the fault');
      t.ok(
        u.faults.some((l) => /fault addr 0x7f000000/.test(l)),
        `the IOMMU blocked and logged the write (${u.faults[0] ?? 'no DMAR line'})`,
      );
      t.equal(u.other.status, 143, 'the other VM (the peer igb assigned) ran on until stopped');
      t.ok(line(u.other.stdout, 'cmdline "hang"'));
    });

    t.test('SR-IOV VFs on each path, driven by the guest; the device is usable by the next VM', async (t) => {
      for (const k of ['vfIommufd', 'vfLegacy'] as const) {
        const r = o[k] as Run & { peerRxBefore: number; peerRxAfter: number };
        t.equal(
          r.status,
          0,
          `${k}: guest exit 0 (${r.stdout
            .split('\n')
            .filter((l) => /FAILED/.test(l))
            .join('; ')})`,
        );
        t.ok(line(r.stdout, 'pci 00:01.0 8086:10ca class 02:00:00'), `${k}: the guest sees the 82576 VF`);
        t.match(r.stdout, /igbvf 00:01\.0: reset ok, MAC [0-9a-f:]{17}/, `${k}: VF reset, and the PF (L1's igb) answered the mailbox`);
        t.ok(line(r.stdout, 'igbvf: sent 3 frames to the wire'));
        t.ok(r.peerRxAfter - r.peerRxBefore >= 3, `${k}: L1's peer igb counted the VF's frames (${r.peerRxAfter - r.peerRxBefore})`);
        t.match(
          r.stdout,
          /igbvf: wire frame \d+: 60 bytes from [0-9a-f:]{17}, ethertype 0x88b5, "pinion-peer frame \d+"/,
          `${k}: the VF received L1's frames (DMA into guest RAM)`,
        );
        t.ok(line(r.stdout, 'igbvf: MSI-X vector 0 interrupt received'), `${k}: the VF's MSI-X through eventfd and irqfd`);
        t.match(
          r.stderr,
          /BAR0 mem64 0x4000000000 16 KiB \(16 KiB mmap'd\), BAR3 mem64 0x4000004000 16 KiB \(8 KiB mmap'd\)/,
          `${k}: 64-bit BARs placed high; the MSI-X page trapped`,
        );
      }
      t.equal(o.pinnedAfterVf, 0, 'nothing pinned after the VMs ended');
    });

    for (const iommu of ['iommufd', 'legacy'] as const) {
      t.test(`two VMs at once, each with its own VF (${iommu})`, async (t) => {
        const v = o[`twoVms-${iommu}`];
        for (const [n, r] of [
          ['first', v.a],
          ['second', v.b],
        ] as const) {
          t.equal(r.status, 143, `${n} VM ran until stopped`);
          t.ok(line(r.stdout, 'cmdline "hang"'), `${n} VM booted`);
        }
        t.ok(v.pinnedDuring >= 2 * 65536, `both VMs' RAM pinned while they ran (${v.pinnedDuring} KiB)`);
        t.equal(v.pinnedAfter, 0, 'and released after');
        t.equal(v.inUse.status, 1, 'a third VM asking for the first VF is refused');
        t.ok(oneLine(v.inUse.stderr), 'in one line');
        t.match(
          v.inUse.stderr,
          new RegExp(`^pinion: ${o.vfs[0]!.replace(/[.]/g, '\\.')} is in use.* \\(pid ${v.pidA}\\)`),
          'naming the holder',
        );
      });
    }

    t.test('a group shared by several devices: not viable while one has a host driver, assignable once it is unbound', async (t) => {
      const g = o.sharedGroup;
      const esc = (x: string): string => x.replace(/[.]/g, '\\.');
      t.ok(
        g.members.length >= 2 && g.members.includes(g.a) && g.members.includes(g.b),
        `IOMMU group ${g.group} holds ${g.members.join(', ')}`,
      );
      t.equal(g.bDriver, 'virtio-pci', `${g.b} is bound to virtio-pci`);
      for (const iommu of ['iommufd', 'legacy'] as const) {
        const r = g.notViable[iommu];
        t.equal(r.status, 1, `${iommu}: exit 1`);
        t.ok(oneLine(r.stderr), `${iommu}: one line`);
        t.match(
          r.stderr,
          new RegExp(
            `^pinion: IOMMU group ${g.group} of ${esc(g.a)} is not viable: ${esc(g.b)} \\(virtio-pci\\) must be bound to vfio-pci or unbound too: echo ${esc(g.b)} > /sys/bus/pci/devices/${esc(g.b)}/driver/unbind\n$`,
          ),
          `${iommu}: names the other device, its driver and the command`,
        );
        t.equal(r.stdout, '', `${iommu}: the guest never ran`);
      }
      t.equal(g.pinnedAfterRefusal, 0, 'nothing pinned after the refusals');
      for (const iommu of ['iommufd', 'legacy'] as const) {
        const r = g.viable[iommu];
        t.equal(r.status, 0, `${iommu}: with ${g.b} unbound the VM runs with ${g.a} (${r.stderr.trim().split('\n').pop()})`);
        t.match(r.stdout, /pinion-guest: pci 00:01\.0 1af4:1052/, `${iommu}: the guest finds the virtio-input function`);
        t.match(
          r.stderr,
          iommu === 'iommufd' ? /via iommufd \(cdev, one IOAS per VM\)/ : new RegExp(`via the legacy container \\(group ${g.group}\\)`),
        );
        t.match(
          r.stderr,
          /; no reset \(vfio-pci offers none for it\)/,
          `${iommu}: a function behind a conventional bridge has no reset, and the summary says so`,
        );
      }
      t.equal(g.pinnedAfter, 0, 'nothing pinned after');
    });

    t.test('bad input: one line, non-zero, names the fix', async (t) => {
      const cases: [string, RegExp][] = [
        [
          'notBound',
          /^pinion: 0000:01:00\.0 is bound to igb, not vfio-pci; bind it with: echo 0000:01:00\.0 > \/sys\/bus\/pci\/devices\/0000:01:00\.0\/driver\/unbind; echo vfio-pci > /,
        ],
        ['noSuchDevice', /^pinion: no PCI device 0000:07:00\.0 on this host; list devices with: lspci -D/],
        ['badBdf', /^pinion: 'eth0' is not a PCI address/],
      ];
      for (const [k, re] of cases) {
        const r = o[k]!;
        t.equal(r.status, 1, `${k}: exit 1`);
        t.ok(oneLine(r.stderr), `${k}: one line`);
        t.match(r.stderr, re, k);
        t.equal(r.stdout, '', `${k}: the guest never ran`);
      }
    });
  });
}
