// pinion open: the privileged opener. As root it opens /dev/kvm and
// /dev/iommu, switches that iommufd to per-process accounting
// (IOMMU_OPTION_RLIMIT_MODE, which needs CAP_SYS_RESOURCE), opens the device
// cdevs (or, with --iommu legacy, the container and the groups), and starts
// the VMM command as a plain user with those fds inherited (3, 4, ...; named
// in PINION_KVM_FD, PINION_IOMMUFD_FD / PINION_CONTAINER_FD, and
// PINION_DEVICE_FDS / PINION_GROUP_FDS, read back by inherited-fds.ts).
// The VMM never holds a privilege: it is exec'd with no capabilities, under
// its own RLIMIT_MEMLOCK, and each VM is charged to its own process.
// Everything that needs no privilege is checked first, so a wrong command line
// is refused the same way with or without root.
import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { closeFd, ioctl, openPath } from '../sys/libc.js';
import { IOMMU_OPTION, IOMMU_OPTION_OP_SET, IOMMU_OPTION_RLIMIT_MODE, iommu_option } from '../sys/iommufd.js';
import { checkAssignable, hostDevice } from '../devices/vfio/host-device.js';
import { oneOf, parseCommand, printUsage, UsageError, wholeNumber, type CommandSpec } from './args.js';
import { MEMLOCK, sizeValue } from './sizes.js';

export const OPEN = {
  name: 'pinion open',
  usage: `usage: pinion open --user UID [--iommu iommufd|legacy] [--device BDF]... [--memlock SIZE] -- <VMM command...>
  As root: opens /dev/kvm and /dev/iommu (set to per-process accounting) and the device cdevs (with
  --iommu legacy, the VFIO container and groups), then runs the VMM command as UID with no capabilities
  and those fds inherited (PINION_KVM_FD, PINION_IOMMUFD_FD or PINION_CONTAINER_FD, PINION_DEVICE_FDS
  or PINION_GROUP_FDS), e.g. pinion open --user 1000 --device 0000:01:00.0 -- pinion run --payload FILE ...
  --user UID          the uid (and gid) the VMM runs as; not 0
  --iommu             iommufd (default: cdevs, per-process accounting) or legacy (container and groups)
  --device BDF        a device to open for the VMM (bound to vfio-pci); repeat for more
  --memlock SIZE      the VMM's RLIMIT_MEMLOCK, e.g. 4G`,
  options: {
    user: { type: 'string' },
    device: { type: 'string', multiple: true },
    memlock: { type: 'string' },
    iommu: { type: 'string' },
  },
  positionals: 'command',
} satisfies CommandSpec;

export async function openCommand(argv: string[]): Promise<number> {
  const p = parseCommand(argv, OPEN);
  if (p.help) return printUsage(OPEN);
  const v = p.values;
  if (v.user === undefined) throw new UsageError('--user UID is needed: the uid the VMM runs as; see pinion open --help');
  const uid = wholeNumber(v.user, '--user');
  if (uid === 0) throw new UsageError('--user 0: the VMM would keep root; give the uid it should run as');
  if (p.positionals.length === 0) throw new UsageError('no command given: pinion open --user UID [options] -- <VMM command...>');
  const memlock = v.memlock === undefined ? undefined : sizeValue(v.memlock, '--memlock', MEMLOCK);
  const legacy = oneOf(v.iommu ?? 'iommufd', '--iommu', ['iommufd', 'legacy']) === 'legacy';
  const command = p.positionals;
  findCommand(command[0]!);
  const hosts = (v.device ?? []).map((d) => hostDevice(d));
  hosts.forEach(checkAssignable);
  if (process.getuid!() !== 0)
    throw new Error('pinion open must run as root (it sets per-process accounting, which needs CAP_SYS_RESOURCE); run it with sudo');

  const fds: number[] = [];
  const take = (path: string): number => {
    const fd = openPath(path);
    fds.push(fd);
    return fd;
  };
  try {
    // Child fds: 3 = kvm, 4 = iommufd or the container, 5.. = device cdevs or groups.
    take('/dev/kvm');
    let env: Record<string, string | undefined>;
    if (legacy) {
      // type1 charges each process on its own already; the opener spares the VMM the device nodes.
      take('/dev/vfio/vfio');
      const groups = [...new Set(hosts.map((d) => d.group!))];
      groups.forEach((g) => take(`/dev/vfio/${g}`));
      env = {
        ...process.env,
        PINION_KVM_FD: '3',
        PINION_CONTAINER_FD: '4',
        PINION_GROUP_FDS: groups.map((g, i) => `${g}=${5 + i}`).join(','),
      };
    } else {
      // Before any object exists in it: the kernel refuses a mode change (EBUSY) once an IOAS does.
      const iommufd = take('/dev/iommu');
      ioctl(
        iommufd,
        IOMMU_OPTION,
        iommu_option(IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_SET, 0, 1n),
        'IOMMU_OPTION(RLIMIT_MODE=per-process)',
        { path: '/dev/iommu' },
      );
      for (const d of hosts) {
        if (!d.cdev) throw new Error(`${d.bdf} has no VFIO cdev (no iommufd path on this kernel); use pinion open --iommu legacy`);
        take(d.cdev);
      }
      env = {
        ...process.env,
        PINION_KVM_FD: '3',
        PINION_IOMMUFD_FD: '4',
        PINION_DEVICE_FDS: hosts.map((d, i) => `${d.bdf}=${5 + i}`).join(','),
      };
    }
    const pre = memlock === undefined ? [] : ['prlimit', `--memlock=${memlock}:${memlock}`];
    const cmd = [
      ...pre,
      'setpriv',
      `--reuid=${uid}`,
      `--regid=${uid}`,
      '--clear-groups',
      '--inh-caps=-all',
      '--bounding-set=-all',
      '--',
      ...command,
    ];
    findCommand(cmd[0]!);
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['inherit', 'inherit', 'inherit', ...fds], env });
    // The VMM holds its own copies now; the opener keeps none.
    for (const fd of fds) closeFd(fd);
    fds.length = 0;
    const forward = (sig: NodeJS.Signals): void => void child.kill(sig);
    process.on('SIGINT', forward).on('SIGTERM', forward);
    return await new Promise<number>((resolve, reject) => {
      child.on('error', (e: NodeJS.ErrnoException) => reject(new Error(`cannot start ${cmd[0]}: ${e.code ?? e.message}`)));
      child.on('close', (code, sig) => resolve(code ?? (sig === 'SIGKILL' ? 137 : 143)));
    });
  } finally {
    for (const fd of fds) closeFd(fd);
  }
}

/** Refuses a command that exec would not find: the child's own failure would come from setpriv, after the devices are opened. */
function findCommand(name: string): void {
  const candidates = name.includes('/') ? [name] : (process.env.PATH ?? '').split(delimiter).map((d) => join(d || '.', name));
  for (const c of candidates) {
    try {
      if (!statSync(c).isFile()) continue;
      accessSync(c, constants.X_OK);
      return;
    } catch {
      // not this one
    }
  }
  throw new Error(name.includes('/') ? `command ${name} does not exist or is not executable` : `command '${name}' is not found in PATH`);
}
