// The fds `pinion open` hands the VMM (src/cli/open.ts), named in
// PINION_KVM_FD, PINION_IOMMUFD_FD or PINION_CONTAINER_FD, and
// PINION_DEVICE_FDS (BDF=fd,...) or PINION_GROUP_FDS (group=fd,...). Each is
// checked before anything is opened: it must be open and be the character
// device its name says, as /sys/dev/char names it. A stale or wrong number
// would otherwise fail deep inside an ioctl, or act on some other file.
import { fstatSync, readlinkSync } from 'node:fs';
import { UsageError } from './args.js';

export interface InheritedFds {
  kvm?: number;
  iommufd?: number;
  /** cdev fds by BDF. */
  devices?: Record<string, number>;
  container?: number;
  /** Group fds by group number. */
  groups?: Record<string, number>;
}

interface Kind {
  /** For messages: /dev/kvm, the VFIO cdev of 0000:01:00.0. */
  node: string;
  /** Whether the device's sysfs path (split at /) is this one. */
  is(path: string[]): boolean;
}

const misc = (name: string): Kind => ({
  node: name === 'vfio' ? '/dev/vfio/vfio' : `/dev/${name}`,
  is: (p) => p.at(-2) === 'misc' && p.at(-1) === name,
});
const KVM = misc('kvm');
const IOMMUFD = misc('iommu');
const CONTAINER = misc('vfio');
// vfio_group devices have no parent (/sys/devices/virtual/vfio/N); cdevs sit under their PCI device (.../BDF/vfio-dev/vfioN).
const group = (g: string): Kind => ({ node: `/dev/vfio/${g}`, is: (p) => p.at(-2) === 'vfio' && p.at(-1) === g });
const cdev = (bdf: string): Kind => ({
  node: `the VFIO cdev of ${bdf}`,
  is: (p) => p.at(-3) === bdf && p.at(-2) === 'vfio-dev' && /^vfio\d+$/.test(p.at(-1) ?? ''),
});

const NAMES = ['PINION_KVM_FD', 'PINION_IOMMUFD_FD', 'PINION_CONTAINER_FD', 'PINION_DEVICE_FDS', 'PINION_GROUP_FDS'] as const;

/** The fds handed down, each checked; undefined when the VMM was not started by the opener. */
export function openerFds(env: NodeJS.ProcessEnv = process.env): InheritedFds | undefined {
  if (env.PINION_KVM_FD === undefined) {
    const stray = NAMES.find((n) => env[n] !== undefined);
    if (stray) throw new UsageError(`${stray} is set without PINION_KVM_FD; pinion open sets them together (unset ${stray})`);
    return undefined;
  }
  const one = (name: (typeof NAMES)[number], kind: Kind): number | undefined =>
    env[name] === undefined ? undefined : checkFd(`${name}=${env[name]}`, fdNumber(name, env[name]!), kind);
  const table = (name: (typeof NAMES)[number], kind: (key: string) => Kind): Record<string, number> | undefined => {
    const v = env[name];
    if (v === undefined) return undefined;
    const entries = v
      .split(',')
      .filter(Boolean)
      .map((kv) => {
        const [key, fd, extra] = kv.split('=');
        if (!key || fd === undefined || extra !== undefined)
          throw new UsageError(`${name}='${v}': write KEY=FD,KEY=FD (e.g. 0000:01:00.0=5)`);
        return [key, checkFd(`${name} ${key}=${fd}`, fdNumber(name, fd), kind(key))] as const;
      });
    return Object.fromEntries(entries);
  };
  return {
    kvm: one('PINION_KVM_FD', KVM),
    iommufd: one('PINION_IOMMUFD_FD', IOMMUFD),
    devices: table('PINION_DEVICE_FDS', cdev),
    container: one('PINION_CONTAINER_FD', CONTAINER),
    groups: table('PINION_GROUP_FDS', group),
  };
}

function fdNumber(name: string, v: string): number {
  if (!/^\d+$/.test(v)) throw new UsageError(`${name}: '${v}' is not an fd number`);
  return Number(v);
}

function checkFd(what: string, fd: number, kind: Kind): number {
  let st;
  try {
    st = fstatSync(fd, { bigint: true });
  } catch (e) {
    throw new Error(
      `${what}: fd ${fd} is not open (${(e as NodeJS.ErrnoException).code}); start the VMM through pinion open, or unset the PINION_*_FD variables`,
    );
  }
  const seen = describe(fd);
  if (!st.isCharacterDevice()) throw new Error(`${what}: fd ${fd} is ${seen}, not a character device; it should be ${kind.node}`);
  const { major, minor } = devNumbers(st.rdev);
  let path: string[];
  try {
    path = readlinkSync(`/sys/dev/char/${major}:${minor}`).split('/');
  } catch (e) {
    throw new Error(
      `${what}: fd ${fd} is char device ${major}:${minor}, which sysfs does not name (${(e as NodeJS.ErrnoException).code}); it should be ${kind.node}`,
    );
  }
  if (!kind.is(path)) throw new Error(`${what}: fd ${fd} is ${seen} (char ${major}:${minor}), not ${kind.node}`);
  return fd;
}

/** What an fd refers to, for messages: its path, as /proc shows it. */
function describe(fd: number): string {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return `fd ${fd}`;
  }
}

/** glibc's dev_t layout (gnu_dev_major/gnu_dev_minor): 12 bits of major and 20 of minor, split around bit 8. */
export function devNumbers(rdev: bigint): { major: bigint; minor: bigint } {
  return { major: ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n), minor: (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n) };
}
