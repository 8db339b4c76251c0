// pinion open: the privileged opener. As root it opens /dev/kvm and
// /dev/iommu, switches that iommufd to per-process accounting
// (IOMMU_OPTION_RLIMIT_MODE, which needs CAP_SYS_RESOURCE), opens the device
// cdevs (or, with --iommu legacy, the container and the groups), and starts
// the VMM command as a plain user with those fds inherited (3, 4, ...; named
// in PINION_KVM_FD, PINION_IOMMUFD_FD / PINION_CONTAINER_FD, and
// PINION_DEVICE_FDS / PINION_GROUP_FDS).
// The VMM never holds a privilege: it is exec'd with no capabilities, under
// its own RLIMIT_MEMLOCK, and each VM is charged to its own process.
import { spawn } from 'node:child_process';
import { closeFd, ioctl, openPath } from '../sys/libc.js';
import { IOMMU_OPTION, IOMMU_OPTION_OP_SET, IOMMU_OPTION_RLIMIT_MODE, iommu_option } from '../sys/iommufd.js';
import { checkAssignable, hostDevice } from '../devices/vfio/host-device.js';
import { intFlag, parseFlags, UsageError } from './args.js';

const FLAGS = ['user', 'device', 'memlock', 'iommu'] as const;

export async function openCommand(argv: string[]): Promise<number> {
  const p = parseFlags(argv, FLAGS);
  const uid = intFlag(p, 'user');
  if (uid === undefined || p.rest.length === 0)
    throw new UsageError('pinion open --user UID [--iommu iommufd|legacy] [--device BDF]... [--memlock BYTES] -- <VMM command...>');
  if (process.getuid!() !== 0)
    throw new UsageError('pinion open must run as root (it sets per-process accounting, which needs CAP_SYS_RESOURCE); run it with sudo');
  if (uid === 0) throw new UsageError('--user 0: the VMM would keep root; give the uid it should run as');
  const memlock = intFlag(p, 'memlock');
  const hosts = (p.all.get('device') ?? []).map((d) => hostDevice(d));
  hosts.forEach(checkAssignable);

  const legacy = p.flags.get('iommu') === 'legacy';
  if (!['legacy', 'iommufd', undefined].includes(p.flags.get('iommu')))
    throw new UsageError(`--iommu '${p.flags.get('iommu')}' is not one of legacy, iommufd`);
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
        if (!d.cdev) throw new UsageError(`${d.bdf} has no VFIO cdev (no iommufd path on this kernel); use pinion open --iommu legacy`);
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
      ...p.rest,
    ];
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['inherit', 'inherit', 'inherit', ...fds], env });
    // The VMM holds its own copies now; the opener keeps none.
    for (const fd of fds) closeFd(fd);
    fds.length = 0;
    const forward = (sig: NodeJS.Signals): void => void child.kill(sig);
    process.on('SIGINT', forward).on('SIGTERM', forward);
    return await new Promise<number>((resolve) => child.on('close', (code, sig) => resolve(code ?? (sig === 'SIGKILL' ? 137 : 143))));
  } finally {
    for (const fd of fds) closeFd(fd);
  }
}
