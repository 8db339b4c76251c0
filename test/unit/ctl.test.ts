// pinion ctl: its arguments, what it prints for people, --json, and a
// refusal's one line and exit status, against the API on a real socket.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { route } from '../../src/api/routes.js';
import { ApiServer } from '../../src/api/server.js';
import { ctlCommand, format, parseCtlArgs, size, type CtlRequest } from '../../src/cli/ctl.js';
import { FakeVmControl } from '../support/fake-vm-control.js';

t.test('arguments: the verb, its positional fields, --json anywhere', async (t) => {
  t.same(parseCtlArgs(['/run/vm.sock', 'info']), {
    socket: '/run/vm.sock',
    json: false,
    verb: 'info',
    method: 'GET',
    path: '/api/v1/vm.info',
    body: undefined,
  });
  t.same(parseCtlArgs(['--json', 's', 'add-ram', '0x40000000', '16M']), {
    socket: 's',
    json: true,
    verb: 'add-ram',
    method: 'PUT',
    path: '/api/v1/vm.add-ram',
    body: { gpa: '0x40000000', size: '16M' },
  });
  const req = (argv: string[]): CtlRequest => parseCtlArgs(argv) as CtlRequest;
  t.same(req(['s', 'replace-ram', '0x0', 'hugetlb']).body, { gpa: '0x0', backend: 'hugetlb' });
  t.equal(req(['s', 'ping']).path, '/api/v1/vmm.ping');
  t.equal(parseCtlArgs(['s', 'info', '--help']), 'help');
  t.throws(() => parseCtlArgs(['s']), /pinion ctl PATH <verb> \[args\] \[--json\]; verbs: ping, info, .* add-ram GPA SIZE \[BACKEND\]/);
  t.throws(() => parseCtlArgs(['s', 'reboot']), /unknown verb 'reboot'/);
  t.throws(() => parseCtlArgs(['s', 'toString']), /unknown verb 'toString'/);
  t.throws(() => parseCtlArgs(['s', 'move-ram', '0x0']), /move-ram takes GPA TO/);
  t.throws(() => parseCtlArgs(['s', 'pause', 'now']), /pause takes no arguments/);
  t.throws(() => parseCtlArgs(['s', 'info', '--yaml']), /unknown option --yaml/);
  t.throws(() => parseCtlArgs(['s', 'add-ram', '0x0', 'lots']), /add-ram SIZE 'lots' is not a byte count or address/);
  t.throws(() => parseCtlArgs(['s', 'info', '--json=yes']), /--json takes no value/);
});

t.test('sizes read as people write them', async (t) => {
  t.equal(size(512), '512 B');
  t.equal(size(4096), '4 KiB');
  t.equal(size(64 << 20), '64 MiB');
  t.equal(size(3 * 2 ** 29), '1.5 GiB');
});

t.test('human output of each report', async (t) => {
  const vm = new FakeVmControl();
  t.equal(
    format('info', vm.info()),
    [
      'VM running: 2 vCPU(s), 64 MiB RAM in 1 region(s), 1 assigned device(s); pid 4242, up 1.5 s',
      "boot: payload dist/guest/pinion-guest.elf 'hang'",
      '  vCPU 0  running',
      '  vCPU 1  running',
    ].join('\n'),
  );
  await vm.pause();
  t.match(format('pause', vm.info()), /^VM paused \(held by user\): /);
  const added = await vm.changeMemory({ verb: 'add-ram', gpa: 1n << 30n, size: 16n << 20n, backend: 'anon' });
  t.equal(
    format('add-ram', added),
    [
      'added 16 MiB of anon RAM at [0x40000000, 0x41000000)',
      'not told: no guest driver claimed the memory-hotplug mailbox (port 0x5f0)',
      'guest memory map (page 4 KiB):',
      '  range                        size       kind   backend from  guest        name',
      '  0x0-0x4000000                64 MiB     ram    memfd   boot  boot         ram-low',
      '  0x40000000-0x41000000        16 MiB     ram    anon    api   not told     ram@0x40000000',
      'holes: the PCI hole 0xc0000000-0x100000000; RAM below 0x4000000000',
      'hotplug: no guest driver holds the hotplug mailbox (port 0x5f0): the guest is not told of changes',
      'changes:',
      '  2026-01-01T00:00:00.000Z  added 16 MiB of anon RAM at [0x40000000, 0x41000000); not told: no guest driver claimed the memory-hotplug mailbox (port 0x5f0)',
    ].join('\n'),
  );
  t.match(
    format('info', vm.info()),
    /\nmemory: 1 change\(s\) since boot; no guest driver holds the hotplug mailbox \(port 0x5f0\): the guest is not told of changes/,
  );
  vm.claimed = true;
  const removed = await vm.changeMemory({ verb: 'remove-ram', gpa: 1n << 30n });
  t.match(
    format('remove-ram', removed),
    /^removed ram@0x40000000 \[0x40000000, 0x41000000\)\nthe guest released ram@0x40000000 \[0x40000000, 0x41000000\) in 0 ms\n/,
    'a guest with a driver: what it answered, second line',
  );
  t.match(
    format('info', vm.info()),
    /\nmemory: 2 change\(s\) since boot; the guest's driver holds the hotplug mailbox \(port 0x5f0\): 1 event\(s\), acknowledged up to 1 /,
  );
  t.equal(
    format('dma', vm.dma()),
    [
      'DMA space: iommufd (iommufd), 1 mapping(s) of unlimited allowed',
      "charged: 64 MiB held, last change peaked at 64 MiB; budget 128 MiB (this process's RLIMIT_MEMLOCK of 128 MiB)",
      'process: VmLck 0 KiB, VmPin 65536 KiB, RLIMIT_MEMLOCK 131072 KiB',
      '  0x0-0x4000000                64 MiB     rw  file fd 12 +0x0',
      'last change: map 0x0 +0x4000000',
    ].join('\n'),
  );
  t.equal(format('dma', { assigned: false }), 'no device assigned: the VM has no DMA space');
  t.equal(
    format('devices', { devices: vm.devices() }),
    [
      '0000:00:04.0 at 00:01.0: msix, MSI-X table of 3',
      "  BAR0 mem32 0xc0000000     16 KiB     16 KiB mmap'd",
      "  BAR3 mem32 0xc0004000     16 KiB     8 KiB mmap'd",
    ].join('\n'),
  );
  t.equal(format('devices', { devices: [] }), 'no device assigned');
});

t.test('against the API: prints the answer, --json the JSON, a refusal its one line and exit 1', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pinion-ctl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'api.sock');
  const vm = new FakeVmControl();
  const api = await ApiServer.listen(path, (m, u, b) => route(vm, m, u, b));
  t.teardown(() => api.close());
  const out: string[] = [];
  const err: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = (s: string) => out.push(s);
  console.error = (s: string) => err.push(s);
  try {
    t.equal(await ctlCommand([path, 'pause']), 0);
    t.match(out.pop(), /^VM paused/);
    t.equal(await ctlCommand([path, 'info', '--json']), 0);
    t.match(JSON.parse(out.pop()!), { state: 'paused', vcpus: [{ index: 0, state: 'paused' }, {}] });
    t.equal(await ctlCommand([path, 'add-ram', '0x40000001', '16M']), 1);
    t.same(err, [
      'pinion: vm.add-ram: gpa 0x40000001 is not a multiple of the 4096-byte page size; e.g. 0x40000000 or 0x40001000 (HTTP 400)',
    ]);
    t.equal(await ctlCommand([path, 'split-ram', '0x0', '0x1000000']), 0);
    t.match(out.pop(), /^split ram-low \[0x0, 0x4000000\) at 0x1000000\n/);
    await t.rejects(
      ctlCommand([join(dir, 'none.sock'), 'info']),
      /cannot reach the control API at .*none\.sock: ENOENT \(is a VM running with --api-socket on it\?\)/,
    );
  } finally {
    console.log = log;
    console.error = error;
  }
});
