// The live-update record and state: a round trip through JSON text, and the
// refusals of a record from another version, with an fd that is not in the
// list or of the wrong kind, a blob cut short, a field missing or unknown, a
// memory-hotplug mailbox at odds with itself or with the record; the new
// process's check of the fds it was given.
import t from 'tap';
import type { MachineImage, MachineState } from '../../src/machine/handover.js';
import { checkFds, childFd, fdKindMismatch } from '../../src/update/fds.js';
import { buildRecord, decodeRecord, encodeRecord, imageOf, RECORD_VERSION, type ControlRecord } from '../../src/update/record.js';
import { decodeState, encodeState } from '../../src/update/state.js';
import { VCPU_BLOBS } from '../../src/vmm/vcpu-state.js';
import { VM_BLOBS } from '../../src/vmm/vm-state.js';

const MiB = 1n << 20n;

function bytes(n: number, seed: number): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));
}

function cpuid(entries: number): Buffer {
  const b = bytes(8 + 40 * entries, entries);
  b.writeUInt32LE(entries, 0);
  return b;
}

/** An image as a machine of 2 vCPUs with RAM in two memfds would give, with this process's (made-up) fds. */
function image(): MachineImage {
  return {
    config: {
      payload: 'dist/guest/pinion-guest.elf',
      memory: 3n * 1024n * MiB,
      memoryArg: '3G',
      cpus: 2,
      backend: 'memfd',
      cmdline: 'tick',
    },
    kvmFd: 20,
    consoleFd: 1,
    backings: [{ fd: 21 }, { fd: 22 }],
    regions: [
      { name: 'ram-low', gpa: 0n, size: 3n * 1024n * MiB - 1024n * MiB, backing: 0, offset: 0n, readonly: false },
      { name: 'ram@0x100000000', gpa: 1n << 32n, size: 1024n * MiB, backing: 1, offset: 0n, readonly: false },
    ],
    cpuid: [cpuid(40), cpuid(40)],
  };
}

const control: ControlRecord = {
  startedAt: 1_700_000_000_000,
  changes: 1,
  log: [
    {
      at: '2026-01-01T00:00:00.000Z',
      summary: 'added 1 GiB of memfd RAM at 0x100000000',
      guest: 'the guest was told of ram@0x100000000 [0x100000000, 0x140000000) (added) but gave no ack within 10 s',
    },
  ],
  paused: false,
  regions: [
    { gpa: 0n, origin: 'boot', backend: 'memfd', ownBacking: false, guest: 'boot' },
    { gpa: 1n << 32n, origin: 'api', backend: 'memfd', ownBacking: true, guest: 'told' },
  ],
  posted: { generation: 3, gpa: 1n << 32n, kind: 'added' },
};

function state(): MachineState {
  const vcpu = (i: number): MachineState['vcpus'][number] => ({
    regs: bytes(VCPU_BLOBS.regs, i),
    sregs: bytes(VCPU_BLOBS.sregs, i + 1),
    xsave: bytes(VCPU_BLOBS.xsave + 4096, i + 2),
    xcrs: bytes(VCPU_BLOBS.xcrs, i + 3),
    debugregs: bytes(VCPU_BLOBS.debugregs, i + 4),
    lapic: bytes(VCPU_BLOBS.lapic, i + 5),
    events: bytes(VCPU_BLOBS.events, i + 6),
    mpState: i ? 3 : 0,
    msrs: [
      { index: 0xc0000080, data: 0xd01n },
      { index: 0x4b564d01, data: 0xffffffffffffffffn },
    ],
    ...(i ? {} : { tscOffset: 0xfffffff000001234n }),
    tscKhz: 2445672,
  });
  return {
    vcpus: [vcpu(0), vcpu(1)],
    vm: { irqchips: [0, 1, 2].map((c) => bytes(VM_BLOBS.irqchip, c)), pit: bytes(VM_BLOBS.pit, 9), clock: bytes(VM_BLOBS.clock, 10) },
    platform: {
      serial: {
        regs: [0, 3, 0xc1, 3, 8, 0x60, 0xb0, 0, 1, 0],
        rx: [0x6c, 0x73, 0x0a],
        threPending: true,
        line: true,
        watched: [0x6f, 0x6b],
      },
      pciAddress: 0x80000000,
      hostBridge: [...bytes(256, 11)],
      hotplug: { claimed: true, last: { generation: 3, kind: 'added', gpa: 1n << 32n, size: 1024n * MiB }, acked: 2, staleAcks: 1 },
    },
  };
}

/** The record as the new process reads it off the channel: through JSON text. */
function wire(): { json: Record<string, any>; fds: number[] } {
  const { record, fds } = buildRecord(image(), { pid: 4242, build: '/opt/pinion/dist/bundle/pinion.js' }, 30, {
    path: '/run/vm.sock',
    fd: 31,
    control,
  });
  return { json: JSON.parse(JSON.stringify(encodeRecord(record))), fds };
}

t.test('round trip: the record and the fds beside it, then the image with the new process fds', async (t) => {
  const { json, fds } = wire();
  t.same(fds, [30, 20, 1, 21, 22, 31], 'token, /dev/kvm, console, the memfds, the API socket, in list order');
  t.same(
    json.fds.map((f: { kind: string }) => f.kind),
    ['update-token', 'kvm', 'console', 'memfd', 'memfd', 'api-socket'],
  );
  const r = decodeRecord(json);
  t.same(r.from, { pid: 4242, build: '/opt/pinion/dist/bundle/pinion.js' });
  t.same(r.api, { path: '/run/vm.sock', socket: 5, control });
  // In the new process, list entry i is fd 4 + i (the channel is fd 3).
  const back = imageOf(r, (i) => childFd(i));
  t.same(back, { ...image(), kvmFd: 5, consoleFd: 6, backings: [{ fd: 7 }, { fd: 8 }] });
  t.same(decodeRecord(JSON.parse(JSON.stringify(encodeRecord(r)))), r, 'a decoded record encodes to the same');
});

t.test('round trip: the state, blobs and numbers past 2^53 whole', async (t) => {
  const s = state();
  const record = decodeRecord(wire().json);
  t.same(decodeState(JSON.parse(JSON.stringify(encodeState(s))), record), s);
});

t.test('a record from another version, or not a record, is refused before anything else is read', async (t) => {
  const { json } = wire();
  t.throws(
    () => decodeRecord({ ...json, version: RECORD_VERSION + 1, machine: 'anything' }),
    new RegExp(
      `^record: version ${RECORD_VERSION + 1}, this Pinion reads version ${RECORD_VERSION}; hand over to a build that reads version ${RECORD_VERSION + 1}`,
    ),
  );
  t.throws(() => decodeRecord({ ...json, magic: 'qemu-cpr' }), /record: not a live-update record \(magic 'qemu-cpr'\)/);
  t.throws(() => decodeRecord([json]), /record: a list, not an object/);
  const s = JSON.parse(JSON.stringify(encodeState(state())));
  t.throws(
    () => decodeState({ ...s, version: 0 }, decodeRecord(json)),
    new RegExp(`^state: version 0, this Pinion reads version ${RECORD_VERSION}`),
  );
});

t.test('an fd reference must be in the list and of the kind it needs', async (t) => {
  const bad = (edit: (j: Record<string, any>) => void): Record<string, any> => {
    const { json } = wire();
    edit(json);
    return json;
  };
  t.throws(
    () => decodeRecord(bad((j) => (j.machine.backings[1].fd = 9))),
    /^record\.machine\.backings\[1\]\.fd: fd 9 is not in the record's fd list \(6 fds\)$/,
  );
  t.throws(() => decodeRecord(bad((j) => (j.machine.kvm = 3))), /^record\.machine\.kvm: fd 3 \(ram-low\) is memfd, not kvm$/);
  t.throws(() => decodeRecord(bad((j) => (j.api.socket = 1))), /^record\.api\.socket: fd 1 \(\/dev\/kvm\) is kvm, not api-socket$/);
  t.throws(
    () => decodeRecord(bad((j) => (j.fds[2].kind = 'memfd'))),
    /record\.machine\.console: fd 2 \(guest console\) is memfd, not console/,
  );
  t.throws(() => decodeRecord(bad((j) => (j.fds[1].kind = 'floppy'))), /record\.fds\[1\]\.kind: 'floppy' is not one of kvm, memfd/);
  t.throws(
    () => decodeRecord(bad((j) => j.fds.push({ kind: 'vfio-group', name: 'stray' }))),
    /record\.fds\[6\]: stray is passed but nothing in the record uses it/,
  );
  t.throws(
    () => decodeRecord(bad((j) => (j.machine.regions[0].backing = 2))),
    /record\.machine\.regions\[0\]\.backing: 2 is out of range \[0, 1\]/,
  );
});

t.test('truncated, missing or unknown: each refused with the field named', async (t) => {
  const { json } = wire();
  const record = decodeRecord(json);
  const s = (): Record<string, any> => JSON.parse(JSON.stringify(encodeState(state())));
  const cut = s();
  cut.vcpus[1].lapic = Buffer.alloc(1000).toString('base64');
  t.throws(() => decodeState(cut, record), /^state\.vcpus\[1\]\.lapic: 1000 bytes, kvm_lapic_state is 1024$/);
  const short = s();
  short.vcpus[0].xsave = Buffer.alloc(4000).toString('base64');
  t.throws(() => decodeState(short, record), /state\.vcpus\[0\]\.xsave: 4000 bytes, kvm_xsave is at least 4096/);
  const one = s();
  one.vcpus.pop();
  t.throws(() => decodeState(one, record), /^state\.vcpus: 1 vCPUs, the record made 2$/);
  const noVm = s();
  delete noVm.vm;
  t.throws(() => decodeState(noVm, record), /^state\.vm: missing$/);
  const chips = s();
  chips.vm.irqchips.pop();
  t.throws(() => decodeState(chips, record), /state\.vm\.irqchips: 2 chips, the PICs and the IOAPIC are 3/);
  const notB64 = s();
  notB64.vm.pit = 'not base64!';
  t.throws(() => decodeState(notB64, record), /state\.vm\.pit: 'not base64!', not base64 bytes/);
  const big = s();
  big.vcpus[0].msrs[0] = [0x10, '0x1ffffffffffffffff'];
  t.throws(() => decodeState(big, record), /state\.vcpus\[0\]\.msrs\[0\]\[1\]: '0x1ffffffffffffffff', not a 64-bit "0x\.\.\." number/);
  const extra = s();
  extra.platform.serial.fifo = [];
  t.throws(() => decodeState(extra, record), /^state\.platform\.serial: unknown field fifo$/);

  const noRegions = JSON.parse(JSON.stringify(json));
  delete noRegions.machine.regions;
  t.throws(() => decodeRecord(noRegions), /^record\.machine\.regions: missing$/);
  const cpus = JSON.parse(JSON.stringify(json));
  cpus.machine.config.cpus = 3;
  t.throws(() => decodeRecord(cpus), /record\.machine\.cpuid: 2 vCPUs, the config has 3/);
  const entries = JSON.parse(JSON.stringify(json));
  entries.machine.cpuid[0] = cpuid(40).subarray(0, 300).toString('base64');
  t.throws(() => decodeRecord(entries), /record\.machine\.cpuid\[0\]: 300 bytes, kvm_cpuid2 with 40 entries is 1608/);
  const boots = JSON.parse(JSON.stringify(json));
  boots.machine.config.linux = { kernel: 'bzImage' };
  t.throws(() => decodeRecord(boots), /record\.machine\.config: boots both a payload and Linux/);
  // The text itself cut short: what the channel gets from a process that died mid-write.
  const text = JSON.stringify(encodeRecord(record));
  t.throws(() => JSON.parse(text.slice(0, text.length / 2)));
});

t.test('the memory-hotplug mailbox: its registers in the state, what the guest was told in the record, each checked', async (t) => {
  const { json } = wire();
  const record = decodeRecord(json);
  const s = (): Record<string, any> => JSON.parse(JSON.stringify(encodeState(state())));
  t.same(s().platform.hotplug, {
    claimed: true,
    last: { generation: 3, kind: 'added', gpa: '0x100000000', size: '0x40000000' },
    acked: 2,
    staleAcks: 1,
  });
  const other = s();
  other.platform.hotplug.last.generation = 4;
  t.throws(
    () => decodeState(other, record),
    /^state\.platform\.hotplug: the record awaits the ack of event 3, the mailbox's last is 4$/,
    'the event the record awaits is the last one posted',
  );
  const none = s();
  delete none.platform.hotplug.last;
  t.throws(() => decodeState(none, record), /^state\.platform\.hotplug\.acked: 2, but no event was ever posted$/);
  const zero = s();
  zero.platform.hotplug.last.generation = 0;
  t.throws(() => decodeState(zero, record), /state\.platform\.hotplug\.last\.generation: 0 is out of range \[1, 4294967295\]/);
  const kind = s();
  kind.platform.hotplug.last.kind = 'moved';
  t.throws(() => decodeState(kind, record), /state\.platform\.hotplug\.last\.kind: 'moved' is not one of added, remove-requested/);
  const empty = s();
  empty.platform.hotplug.last.size = '0x0';
  t.throws(() => decodeState(empty, record), /state\.platform\.hotplug\.last\.size: 0, an event's region has bytes/);
  const noMailbox = s();
  delete noMailbox.platform.hotplug;
  t.throws(() => decodeState(noMailbox, record), /^state\.platform\.hotplug: missing$/);

  const edit = (f: (c: Record<string, any>) => void): Record<string, any> => {
    const j = JSON.parse(JSON.stringify(json));
    f(j.api.control);
    return j;
  };
  t.throws(
    () => decodeRecord(edit((c) => (c.posted.gpa = '0x80000000'))),
    /^record\.api\.control\.posted\.gpa: 0x80000000 is not a RAM region of the record$/,
  );
  t.throws(
    () => decodeRecord(edit((c) => (c.regions[1].guest = 'heard'))),
    /record\.api\.control\.regions\[1\]\.guest: 'heard' is not one of boot, acknowledged, told, not told/,
  );
  t.throws(() => decodeRecord(edit((c) => delete c.log[0].guest)), /^record\.api\.control\.log\[0\]\.guest: missing$/);
  // Nothing awaited: any mailbox goes, one no driver ever claimed included.
  const quiet = decodeRecord(edit((c) => delete c.posted));
  t.notOk(quiet.api!.control.posted);
  const fresh = s();
  fresh.platform.hotplug = { claimed: false, acked: 0, staleAcks: 0 };
  t.same(decodeState(fresh, quiet).platform.hotplug, { claimed: false, acked: 0, staleAcks: 0 });
});

t.test('the new process checks each fd it was given before using any', async (t) => {
  const { json } = wire();
  const fds = decodeRecord(json).fds;
  const links: Record<number, string> = {
    4: '/memfd:pinion-update-token (deleted)',
    5: '/dev/kvm',
    6: 'pipe:[123]',
    7: '/memfd:pinion-guest-ram (deleted)',
    8: '/memfd:pinion-guest-ram (deleted)',
    9: 'socket:[4567]',
  };
  const readlink = (l: Record<number, string>) => (fd: number) => {
    const v = l[fd];
    if (v === undefined) throw new Error('ENOENT');
    return v;
  };
  t.doesNotThrow(() => checkFds(fds, 3, readlink(links)));
  t.throws(
    () => checkFds(fds, 3, readlink({ ...links, 8: undefined as unknown as string })),
    /^fd 4 of the record \(memfd ram@0x100000000\) was not passed: this process has no fd 8$/,
  );
  t.throws(
    () => checkFds(fds, 3, readlink({ ...links, 7: '/dev/kvm' })),
    /^fd 3 of the record \(memfd ram-low\) is fd 7 here, and it is \/dev\/kvm, not a memfd fd$/,
  );
  t.equal(fdKindMismatch('kvm', 'anon_inode:kvm-vm'), 'it is anon_inode:kvm-vm, not a kvm fd', 'a VM fd is not /dev/kvm');
  t.equal(fdKindMismatch('eventfd', 'anon_inode:[eventfd]'), undefined);
  t.equal(fdKindMismatch('vfio-device', '/dev/vfio/devices/vfio0'), undefined);
  t.equal(fdKindMismatch('vfio-group', '/dev/vfio/12'), undefined);
});

t.test("the assigned devices' optional sections: fds in the record, state at the pause, each fd of its kind", async (t) => {
  const r = decodeRecord(wire().json);
  r.fds.push({ kind: 'iommufd', name: '/dev/iommu' }, { kind: 'vfio-device', name: '0000:01:10.0' }, { kind: 'eventfd', name: 'MSI-X 0' });
  r.machine.devices = {
    iommu: { kind: 'iommufd', fd: 6, ioas: 2, groups: [] },
    list: [{ bdf: '0000:01:10.0', fd: 7, slot: 1, bars: [{ bar: 0, address: 0xe000_0000n }] }],
    dma: [{ iova: 0n, size: 0x100000n, backing: 0, offset: 0n, byFile: true, write: true }],
    eventfds: [8],
  };
  const back = decodeRecord(JSON.parse(JSON.stringify(encodeRecord(r))));
  t.same(back, r, 'the record with its devices round-trips');
  const s: MachineState = {
    ...state(),
    assigned: [
      {
        bdf: '0000:01:10.0',
        slot: 1,
        config: bytes(4096, 3),
        bars: [
          { bar: 0, address: 0xc0000000n },
          { bar: 3, address: 0xc0004000n },
        ],
        msix: { enabled: true, masked: false, table: bytes(3 * 16, 4), pending: [false, true, false] },
        irqs: [{ gsi: 24, eventfd: 8, msi: { addressLo: 0xfee00000, addressHi: 0, data: 0x40 } }],
        intx: false,
      },
    ],
  };
  const json = JSON.parse(JSON.stringify(encodeState(s)));
  t.same(decodeState(json, back), s, 'the state with its devices round-trips');
  json.assigned[0].irqs[0].eventfd = 7;
  t.throws(() => decodeState(json, back), /state\.assigned\[0\]\.irqs\[0\]\.eventfd: fd 7 \(0000:01:10\.0\) is vfio-device, not eventfd/);
  json.assigned[0].irqs[0].eventfd = 8;
  json.assigned[0].intx = true;
  t.throws(() => decodeState(json, back), /state\.assigned\[0\]\.intx: INTx on while MSI-X is on/);
  const bad = JSON.parse(JSON.stringify(encodeRecord(r)));
  bad.machine.devices.list[0].fd = 3;
  t.throws(() => decodeRecord(bad), /record\.machine\.devices\.list\[0\]\.fd: fd 3 \(ram-low\) is memfd, not vfio-device/);
  bad.machine.devices.list[0].fd = 7;
  bad.machine.devices.iommu.kind = 'legacy';
  t.throws(() => decodeRecord(bad), /record\.machine\.devices\.iommu: a container has no IOAS/);
  delete bad.machine.devices.iommu.ioas;
  t.throws(
    () => decodeRecord(bad),
    /record\.machine\.devices\.iommu\.fd: fd 6 \(\/dev\/iommu\) is iommufd, not vfio-container/,
    'a legacy space is a container',
  );
  bad.machine.devices.iommu.kind = 'iommufd';
  bad.machine.devices.iommu.ioas = 2;
  bad.machine.devices.dma[0].backing = 9;
  t.throws(() => decodeRecord(bad), /record\.machine\.devices\.dma\[0\]\.backing/);
  const unpassed = JSON.parse(JSON.stringify(encodeRecord(r)));
  unpassed.machine.devices.eventfds = [];
  t.throws(() => decodeRecord(unpassed), /record\.fds\[8\]: MSI-X 0 is passed but nothing in the record uses it/);
});
