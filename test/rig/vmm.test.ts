// The VMM core against real nested KVM in the rig: the test guest boots in
// long mode on 1 and 2 vCPUs, on each RAM backend, prints, writes RAM the
// host reads back, and exits with its chosen status; faults and signals end
// the VM with a report; bad input is one line, non-zero, nothing left behind.
import t from 'tap';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { l1Json, runCli } from '../support/rig.js';

interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}
interface Holdings {
  fds: string[];
  maps: number;
}
interface ApiRun {
  result: { kind: string; status?: number; report?: string; exits: number };
  firstBadByte: number;
  untouchedAfter: boolean;
  slots: { name: string; gpa: string; size: string; file: boolean }[];
  console: string;
  before: Holdings;
  after: Holdings;
}
interface Refusal {
  error: string;
  before: Holdings;
  after: Holdings;
}
type Out = Record<string, CliRun> & {
  hangTerm: CliRun & { signalledAfterMs: number };
  consoleFile: CliRun & { file: string };
  hugeFree: { before: string; after: string };
  hugetlbNoneApi: Refusal;
  tooSmallApi: Refusal;
  apiMemfd: ApiRun;
  apiAnon: ApiRun;
  apiHugetlb: ApiRun;
  apiHigh: ApiRun;
};

const GUEST = fileURLToPath(new URL('../../guest/pinion-guest.elf', import.meta.url));
const oneLine = (s: string): boolean => s.trim().split('\n').length === 1;

t.test('no KVM device on this machine: says so and gives the rig command', async (t) => {
  // This host's own /dev/kvm when it has none; otherwise a path that cannot exist (PINION_KVM_DEVICE).
  const missing = existsSync('/dev/kvm') ? '/nonexistent/kvm' : '/dev/kvm';
  const r = await runCli(['run', '--payload', GUEST, '--cmdline', 'exit=3'], 300_000, { PINION_KVM_DEVICE: missing });
  t.equal(r.code, 1);
  t.ok(oneLine(r.stderr), 'one line');
  t.match(
    r.stderr,
    new RegExp(
      `no ${missing.replace(/\//g, '\\/')} on this machine .* run Pinion inside the test rig: node \\S*bundle/pinion\\.js rig -- node \\S*bundle/pinion\\.js run --payload \\S+pinion-guest\\.elf --cmdline exit=3`,
    ),
  );
});

t.test('in the rig (type1 kernel, nested KVM)', async (t) => {
  const { result: o, run } = await l1Json<Out>('type1', 'vmm', [], { timeoutSec: 900, memoryMiB: 2048 });
  t.equal(run.exitCode, 0, 'the L1 script ran to the end');
  const guestLine = (s: string, l: string): boolean => s.split('\n').includes(`pinion-guest: ${l}`);

  t.test('boots, prints and exits with the status it chose (1 vCPU)', async (t) => {
    const r = o.default1!;
    t.equal(r.status, 7);
    t.ok(guestLine(r.stdout, 'hello from vCPU 0 of 1, 64 MiB RAM'), 'banner with the vCPU count and RAM size');
    t.ok(guestLine(r.stdout, 'cmdline "exit=7"'), 'the command line reached the guest');
    t.ok(
      guestLine(r.stdout, 'pci 00:00.0 8086:0d57 class 06:00:00'),
      'PCI scan through 0xcf8/0xcfc (served on the VMM thread) finds the host bridge',
    );
    t.ok(guestLine(r.stdout, 'pci: 1 device(s)'));
    t.ok(guestLine(r.stdout, 'exit 7'));
    t.equal(r.stderr, '', 'nothing on stderr');
    t.comment(`L2 run: ${r.ms} ms`);
  });

  t.test('--console FILE takes the guest console instead of stdout', async (t) => {
    t.equal(o.consoleFile.status, 9);
    t.equal(o.consoleFile.stdout, '');
    t.ok(guestLine(o.consoleFile.file, 'exit 9'));
  });

  t.test('two vCPUs: the AP runs and checks in', async (t) => {
    const r = o.default2!;
    t.equal(r.status, 0);
    t.ok(guestLine(r.stdout, 'cpu 1 up'), 'vCPU 1 ran');
    t.ok(guestLine(r.stdout, 'all 2 vCPUs up'));
  });

  t.test('each RAM backend boots', async (t) => {
    t.equal(o.anon!.status, 3, 'anon');
    t.equal(o.hugetlb!.status, 5, 'hugetlb');
    t.ok(guestLine(o.hugetlb!.stdout, 'exit 5'));
    t.equal(o.hugeFree.after, o.hugeFree.before, 'huge pages all free again after the VM');
  });

  for (const [name, r] of [
    ['memfd, 2 vCPUs', o.apiMemfd],
    ['anon', o.apiAnon],
    ['hugetlb', o.apiHugetlb],
    ['anon, RAM above 4 GiB', o.apiHigh],
  ] as const) {
    t.test(`the host sees the guest's RAM pattern at 0x800000 (${name})`, async (t) => {
      t.equal(r.result.kind, 'exit');
      t.equal(r.result.status, 0);
      t.equal(r.firstBadByte, -1, 'all 64 KiB of the pattern match');
      t.ok(r.untouchedAfter, 'the bytes after the pattern are untouched');
      t.ok(r.console.includes('pinion-guest: pattern at 0x800000 len 0x10000'));
      t.same(r.after, r.before, 'close gives back every KVM fd, memfd and mapping');
    });
  }
  t.same(
    o.apiHigh.slots.map((s) => [s.name, s.gpa, s.size]),
    [
      ['ram-low', '0x0', '0xc0000000'],
      ['ram-high', '0x100000000', '0x4000000'],
    ],
    '3 GiB + 64 MiB: the 32-bit hole is left for PCI, the rest sits above 4 GiB',
  );
  t.same(
    o.apiMemfd.slots.map((s) => s.file),
    [true],
    'memfd RAM carries its fd (for DMA by file)',
  );

  t.test('a faulting guest ends the VM with a report, not a hang', async (t) => {
    for (const k of ['fault', 'ud'] as const) {
      const r = o[k]!;
      t.equal(r.status, 1, `${k}: exit 1`);
      t.ok(oneLine(r.stderr), `${k}: one line`);
      t.match(r.stderr, /^pinion: guest stopped: vCPU 0: guest triple fault .*\(KVM_EXIT_SHUTDOWN\)/, `${k}: names the vCPU and the exit`);
      t.ok(guestLine(r.stdout, 'hello from vCPU 0 of 1, 64 MiB RAM'), `${k}: the console before the fault is kept`);
    }
  });

  t.test('SIGTERM stops every vCPU, halted ones included', async (t) => {
    const r = o.hangTerm;
    t.ok(r.signalledAfterMs > 0, 'the guest reached hang');
    t.equal(r.status, 143);
    t.equal(r.stderr.trim(), 'pinion: VM stopped: signal SIGTERM');
  });

  t.test('bad input: one line, non-zero, nothing left behind', async (t) => {
    const cases: [string, number, RegExp][] = [
      [
        'noPayloadFlag',
        2,
        /^pinion: nothing to boot: pinion run --payload FILE \(the test guest is dist\/guest\/pinion-guest\.elf\) or pinion run --kernel bzImage/,
      ],
      ['missingPayload', 1, /^pinion: payload \/nonexistent\/guest\.elf does not exist/],
      ['notElf', 1, /^pinion: payload \/etc\/hostname is not an ELF64 x86-64 executable/],
      ['tooSmall', 1, /^pinion: payload \S+ needs guest RAM up to 0x[0-9a-f]+ \(\d+ MiB\) but --memory 1M gives 0x100000; raise --memory/],
      ['unaligned', 1, /^pinion: memory size 67109888 bytes is not a multiple of the 4096-byte page size; use e\.g\. --memory 65540K/],
      [
        'hugetlbNone',
        1,
        /^pinion: hugetlb guest RAM needs 32 free 2 MiB huge pages, 0 are free; reserve them with: echo 32 \| sudo tee \/proc\/sys\/vm\/nr_hugepages/,
      ],
    ];
    for (const [k, code, re] of cases) {
      const r = o[k]!;
      t.equal(r.status, code, `${k}: exit ${code}`);
      t.ok(oneLine(r.stderr), `${k}: one line`);
      t.match(r.stderr, re, k);
      t.equal(r.stdout, '', `${k}: no guest output`);
    }
    for (const k of ['hugetlbNoneApi', 'tooSmallApi'] as const) {
      t.match(o[k].error, k === 'hugetlbNoneApi' ? /^RamError: hugetlb guest RAM needs 32/ : /^PayloadError: payload/, `${k}: refused`);
      t.same(o[k].after, o[k].before, `${k}: no KVM fd, memfd or mapping left in the process`);
    }
  });
});
