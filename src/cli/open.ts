// pinion open: the privileged opener. As root it opens /dev/kvm and
// /dev/iommu, switches that iommufd to per-process accounting
// (IOMMU_OPTION_RLIMIT_MODE, which needs CAP_SYS_RESOURCE), opens the device
// cdevs, and starts the VMM command as a plain user with those fds inherited
// (3, 4, ...; named in PINION_KVM_FD, PINION_IOMMUFD_FD, PINION_DEVICE_FDS).
// The VMM never holds a privilege: it is exec'd with no capabilities, under
// its own RLIMIT_MEMLOCK, and each VM is charged to its own process.
import { spawn } from 'node:child_process';
import { closeFd, ioctl, openPath } from '../sys/libc.js';
import { IOMMU_OPTION, IOMMU_OPTION_OP_SET, IOMMU_OPTION_RLIMIT_MODE, iommu_option } from '../sys/iommufd.js';
import { checkAssignable, hostDevice } from '../devices/vfio/host-device.js';
import { intFlag, parseFlags, UsageError } from './args.js';

const FLAGS = ['user', 'device', 'memlock'] as const;

export async function openCommand(argv: string[]): Promise<number> {
  const p = parseFlags(argv, FLAGS);
  const uid = intFlag(p, 'user');
  if (uid === undefined || p.rest.length === 0) throw new UsageError('pinion open --user UID [--device BDF]... [--memlock BYTES] -- <VMM command...>');
  if (process.getuid!() !== 0) throw new UsageError('pinion open must run as root (it sets per-process accounting, which needs CAP_SYS_RESOURCE); run it with sudo');
  if (uid === 0) throw new UsageError('--user 0: the VMM would keep root; give the uid it should run as');
  const memlock = intFlag(p, 'memlock');
  const hosts = (p.all.get('device') ?? []).map((d) => hostDevice(d));
  hosts.forEach(checkAssignable);

  const fds: number[] = [];
  try {
    const kvm = openPath('/dev/kvm');
    fds.push(kvm);
    // Before any object exists in it: the kernel refuses a mode change (EBUSY) once an IOAS does.
    const iommufd = openPath('/dev/iommu');
    fds.push(iommufd);
    ioctl(iommufd, IOMMU_OPTION, iommu_option(IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_SET, 0, 1n), 'IOMMU_OPTION(RLIMIT_MODE=per-process)', { path: '/dev/iommu' });
    const devFds = hosts.map((d) => {
      if (!d.cdev) throw new UsageError(`${d.bdf} has no VFIO cdev; pinion open hands over iommufd devices only`);
      const fd = openPath(d.cdev);
      fds.push(fd);
      return fd;
    });
    // Child fds: 3 = kvm, 4 = iommufd, 5.. = devices.
    const env = {
      ...process.env,
      PINION_KVM_FD: '3',
      PINION_IOMMUFD_FD: '4',
      PINION_DEVICE_FDS: hosts.map((d, i) => `${d.bdf}=${5 + i}`).join(','),
    };
    const pre = memlock === undefined ? [] : ['prlimit', `--memlock=${memlock}:${memlock}`];
    const cmd = [...pre, 'setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--', ...p.rest];
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['inherit', 'inherit', 'inherit', kvm, iommufd, ...devFds], env });
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
