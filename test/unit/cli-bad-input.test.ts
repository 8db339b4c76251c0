// Bad invocations of every command, each run through the built CLI: exactly
// one line on stderr and no stack frame, exit 2 for a usage error and 1 for a
// refusal, and a message naming what is wrong. Every case is refused before
// KVM, VFIO or the native addon is touched, so this runs on any machine.
import t from 'tap';
import { cli, type CliResult } from '../support/cli.js';

// Some 70 processes: room for a loaded machine.
t.setTimeout(120_000);

type Case = [args: string[], code: 1 | 2, says: RegExp, env?: Record<string, string>];

const G = 'dist/guest/pinion-guest.elf';
const RUN = ['run', '--payload', G];
const OPEN = ['open', '--user', '1000'];

const CASES: Case[] = [
  // the top level
  [[], 2, /^pinion: no command given; pinion --help lists them$/],
  [['frob'], 2, /^pinion: unknown command 'frob'/],
  [['--bogus'], 2, /^pinion: unknown option --bogus; pinion takes --help, --version or a command/],

  // run: flags
  [['run'], 2, /^pinion: nothing to boot: pinion run --payload FILE/],
  [['run', '--payload', '--memory', '64M'], 2, /^pinion: --payload needs a value; --memory after it is an option/],
  [['run', '--payload'], 2, /^pinion: --payload needs a value$/],
  [[...RUN, '--kernel', 'bz'], 2, /--payload and --kernel both given; boot one/],
  [['run', '--kernel', 'bz', '--cmdline', 'x'], 2, /--cmdline is the test guest's; a Linux kernel's command line is --append/],
  [[...RUN, '--initrd', 'rd'], 2, /--initrd goes with --kernel/],
  [['run', '--kernel', 'bz', '--decompress', 'zstd'], 2, /--decompress 'zstd' is not one of kernel, vmm/],
  [[...RUN, '--memory', '0'], 2, /^pinion: --memory 0 is below 1M, the least a guest boots with/],
  [[...RUN, '--memory', '8G'], 2, /^pinion: --memory 8G is over 4G, the most RAM a guest boots with/],
  [[...RUN, '--memory', 'lots'], 2, /^pinion: --memory 'lots' is not a size; write it like 64M/],
  [[...RUN, '--cpus', '9'], 2, /^pinion: --cpus 9 is out of range; 1 to 8$/],
  [[...RUN, '--cpus', 'two'], 2, /^pinion: --cpus takes a whole number, got 'two'$/],
  [[...RUN, '--memory-backend', 'shm'], 2, /--memory-backend 'shm' is not one of memfd, anon, hugetlb/],
  [[...RUN, '--iommu', 'legacy'], 2, /--iommu picks the DMA path of assigned devices, and no --device is given/],
  [[...RUN, '--device', '0000:01:00.0', '--iommu', 'vfio'], 2, /--iommu 'vfio' is not one of auto, legacy, iommufd/],
  [[...RUN, '--bogus'], 2, /^pinion: unknown option --bogus; pinion run takes --payload, /],
  [[...RUN, '--memory', '64M', '--memory', '128M'], 2, /^pinion: --memory is given twice; give it once$/],
  [[...RUN, 'extra'], 2, /^pinion: unexpected argument 'extra'/],
  // run --incoming: the new process of a live update, nothing else beside it
  [['run', '--incoming'], 2, /^pinion: --incoming needs a value$/],
  [['run', '--incoming', 'three'], 2, /^pinion: --incoming takes a whole number, got 'three'$/],
  [['run', '--incoming', '1'], 2, /^pinion: --incoming 1 is out of range; at least 3$/],
  [['run', '--incoming', '3', ...RUN.slice(1)], 2, /^pinion: --incoming takes no other flag \(--payload given\)/],
  [
    ['run', '--incoming', '3'],
    1,
    /^pinion: fd 3 is .*, not the channel of a live update; pinion run --incoming FD is started by a running Pinion/,
  ],
  // run: fds said to be inherited from pinion open
  [RUN, 1, /^pinion: PINION_KVM_FD=99: fd 99 is not open \(EBADF\)/, { PINION_KVM_FD: '99' }],
  [RUN, 1, /^pinion: PINION_KVM_FD=0: fd 0 is \/dev\/null \(char 1:3\), not \/dev\/kvm$/, { PINION_KVM_FD: '0' }],
  [
    RUN,
    1,
    /^pinion: PINION_KVM_FD=1: fd 1 is (pipe|socket):\[\d+\], not a character device; it should be \/dev\/kvm$/,
    { PINION_KVM_FD: '1' },
  ],
  [RUN, 2, /^pinion: PINION_KVM_FD: 'kvm' is not an fd number$/, { PINION_KVM_FD: 'kvm' }],
  [RUN, 2, /^pinion: PINION_IOMMUFD_FD is set without PINION_KVM_FD/, { PINION_IOMMUFD_FD: '4' }],

  // ctl
  [['ctl'], 2, /^pinion: no PATH given: pinion ctl PATH <verb>/],
  [['ctl', 's'], 2, /^pinion: no verb given: pinion ctl PATH <verb>/],
  [['ctl', 's', 'reboot'], 2, /^pinion: unknown verb 'reboot'/],
  [['ctl', 's', 'move-ram', '0x0'], 2, /^pinion: move-ram takes GPA TO$/],
  [['ctl', 's', 'add-ram', '0x0', 'lots'], 2, /^pinion: add-ram SIZE 'lots' is not a byte count or address/],
  [['ctl', 's', 'info', '--yaml'], 2, /^pinion: unknown option --yaml; pinion ctl takes --json/],
  [['ctl', 's', 'update', 'now'], 2, /^pinion: update takes no arguments$/],
  [['ctl', 's', 'info', '--to', 'node b.js'], 2, /^pinion: --to goes with update/],
  [['ctl', 's', 'update', '--to'], 2, /^pinion: --to needs a value$/],
  [['ctl', 's', 'update', '--to', ''], 2, /^pinion: --to needs a command: the Pinion to hand over to/],
  [['ctl', '/nonexistent/vm.sock', 'info'], 1, /^pinion: cannot reach the control API at \/nonexistent\/vm\.sock: ENOENT/],

  // open: checked before anything is opened, the same with or without root
  [['open', '--', 'true'], 2, /^pinion: --user UID is needed/],
  [['open', '--user', '0', '--', 'true'], 2, /^pinion: --user 0: the VMM would keep root/],
  [['open', '--user', 'root', '--', 'true'], 2, /^pinion: --user takes a whole number, got 'root'$/],
  [OPEN, 2, /^pinion: no command given: pinion open --user UID/],
  [[...OPEN, 'pinion', 'run'], 2, /^pinion: unexpected argument 'pinion': the command goes after --/],
  [[...OPEN, '--memlock', '4X', '--', 'true'], 2, /^pinion: --memlock '4X' is not a size/],
  [[...OPEN, '--iommu', 'vfio', '--', 'true'], 2, /^pinion: --iommu 'vfio' is not one of iommufd, legacy$/],
  [[...OPEN, '--', 'no-such-command-pinion'], 1, /^pinion: command 'no-such-command-pinion' is not found in PATH$/],
  [[...OPEN, '--', '/nonexistent/vmm'], 1, /^pinion: command \/nonexistent\/vmm does not exist or is not executable$/],
  [[...OPEN, '--device', 'eth0', '--', 'true'], 1, /^pinion: 'eth0' is not a PCI address/],
  [[...OPEN, '--device', 'beef:00:00.0', '--', 'true'], 1, /^pinion: no PCI device beef:00:00\.0 on this host/],

  // memlock
  [['memlock'], 2, /^pinion: no subcommand given: pinion memlock plan/],
  [['memlock', 'frob'], 2, /^pinion: unknown subcommand 'frob'/],
  [['memlock', 'plan'], 2, /^pinion: no VM given/],
  [['memlock', 'plan', '--vm'], 2, /^pinion: --vm needs a value$/],
  [['memlock', 'plan', '--vm', '0'], 2, /^pinion: --vm 0: RAM 0 is below 1M, the least a guest boots with/],
  [['memlock', 'plan', '--vm', '300G:1'], 2, /^pinion: --vm 300G:1: RAM 300G is over 255G, the most RAM a guest's memory map holds/],
  [['memlock', 'plan', '--vm', '4X:1'], 2, /^pinion: --vm 4X:1: RAM '4X' is not a size/],
  [['memlock', 'plan', '--vm', '4G:two'], 2, /^pinion: --vm '4G:two': write RAM\[:DEVICES\[:separate\]\]/],
  [['memlock', 'plan', '--vm', '4G', '--json=1'], 2, /^pinion: --json takes no value$/],
  [['memlock', 'status', '--yaml'], 2, /^pinion: unknown option --yaml; pinion memlock status takes --json/],

  // rig: refused before QEMU starts
  [['rig'], 2, /^pinion: no command given: pinion rig \[options\] -- <command\.\.\.>$/],
  [['rig', 'ls'], 2, /^pinion: unexpected argument 'ls': the command goes after --/],
  [['rig', '--kernel', 'type2', '--', 'true'], 2, /^pinion: unknown --kernel 'type2': use --kernel type1/],
  [['rig', '--kernel', '--uid', '1000', '--', 'true'], 2, /^pinion: --kernel needs a value; --uid after it is an option/],
  [['rig', '--uid', 'root', '--', 'id'], 2, /^pinion: --uid takes a whole number, got 'root'$/],
  [['rig', '--timeout', '0', '--', 'true'], 2, /^pinion: --timeout 0 is out of range; at least 1$/],
  [['rig', '--memory', '0', '--', 'true'], 2, /^pinion: --memory 0 is below 1M, the least QEMU gives L1$/],
  [['rig', '--memory', '1500K', '--', 'true'], 2, /^pinion: --memory 1500K is not a multiple of 1M/],
  [['rig', '--memlock', '2048', '--', 'true'], 2, /^pinion: --memlock 2048 needs a unit \(e\.g\. 2048K or 2048M\)/],
  [['rig', '--iommu', 'maybe', '--', 'true'], 2, /^pinion: --iommu 'maybe' is not one of on, off$/],

  // demo: refused before the rig boots
  [['demo', '--kernel', 'x'], 2, /^pinion: --kernel 'x' is not one of type1, compat, both$/],
  [['demo', 'now'], 2, /^pinion: unexpected argument 'now'/],
  [['demo', '--bogus'], 2, /^pinion: unknown option --bogus; pinion demo takes --kernel/],
];

t.ok(CASES.length >= 30, `${CASES.length} bad invocations`);

/** Every case's result, two processes at a time. */
async function runAll(): Promise<CliResult[]> {
  const results: CliResult[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < CASES.length; i = next++) results[i] = await cli(CASES[i]![0], CASES[i]![3]);
  };
  await Promise.all([worker(), worker()]);
  return results;
}

const results = await runAll();
CASES.forEach(([args, code, says, env], i) => {
  const r = results[i]!;
  const name = `${env ? `${Object.entries(env).map(([k, v]) => `${k}=${v}`)} ` : ''}pinion ${args.join(' ')}`;
  t.test(name, async (t) => {
    t.equal(r.code, code, `exit ${code}`);
    const lines = r.stderr.replace(/\n$/, '').split('\n');
    t.equal(lines.length, 1, 'one line on stderr');
    t.notMatch(r.stderr, /^\s+at /m, 'no stack frame');
    t.match(lines[0], says);
    t.equal(r.stdout, '', 'nothing on stdout');
  });
});
