// The fds of a live update, as the new process sees them: the old one
// passes them by exec inheritance (child_process.spawn's stdio array, whose
// entry i becomes fd i in the child, close-on-exec cleared), the channel at
// `--incoming N` and the record's fd list right after it, in list order.
// Before using any, the new process checks each is open and is what the
// record says it is (its /proc/self/fd link), so a wrong or missing fd is
// refused by name instead of failing as some later ioctl's EBADF or ENOTTY.
import { readlinkSync } from 'node:fs';
import type { FdEntry, FdKind } from './record.js';

/** The channel's fd in the new process (stdio 0-2 stay the old process's). */
export const CHANNEL_FD = 3;

/** The new process's fd for entry `index` of the record's fd list. */
export function childFd(index: number, channel = CHANNEL_FD): number {
  return channel + 1 + index;
}

/** What /proc/PID/fd/N links to for each kind (fs/proc/fd.c: a path, or "anon_inode:[name]" / "socket:[inode]"). */
const LINKS: Record<FdKind, RegExp> = {
  kvm: /^\/dev\/kvm$/,
  memfd: /^\/memfd:/,
  console: /./,
  'api-socket': /^socket:\[\d+\]$/,
  'update-token': /^\/memfd:pinion-update-token/,
  'vfio-container': /^\/dev\/vfio\/vfio$/,
  iommufd: /^\/dev\/iommu$/,
  'vfio-group': /^\/dev\/vfio\/(noiommu-)?\d+$/,
  'vfio-device': /^(\/dev\/vfio\/devices\/vfio\d+|anon_inode:\[vfio-device\])$/,
  eventfd: /^anon_inode:\[eventfd\]$/,
};

/** Why the fd behind `link` is not of `kind`, or undefined when it is. */
export function fdKindMismatch(kind: FdKind, link: string): string | undefined {
  return LINKS[kind].test(link) ? undefined : `it is ${link}, not a ${kind} fd`;
}

/**
 * Checks the channel's fd is a socket before anything reads it: run by hand,
 * `pinion run --incoming 3` has a terminal, a file or nothing there.
 */
export function checkChannel(fd: number, readlink = (n: number) => readlinkSync(`/proc/self/fd/${n}`)): void {
  let link: string;
  try {
    link = readlink(fd);
  } catch {
    link = 'not open';
  }
  if (!/^socket:\[\d+\]$/.test(link))
    throw new Error(
      `fd ${fd} is ${link}, not the channel of a live update; pinion run --incoming FD is started by a running Pinion (pinion ctl PATH update), not by hand`,
    );
}

/** Checks every fd of the list is open here and of its kind; throws one line naming the first that is not. */
export function checkFds(
  entries: readonly FdEntry[],
  channel = CHANNEL_FD,
  readlink = (fd: number) => readlinkSync(`/proc/self/fd/${fd}`),
): void {
  entries.forEach((e, i) => {
    const fd = childFd(i, channel);
    let link: string;
    try {
      link = readlink(fd);
    } catch {
      throw new Error(`fd ${i} of the record (${e.kind} ${e.name}) was not passed: this process has no fd ${fd}`);
    }
    const bad = fdKindMismatch(e.kind, link);
    if (bad) throw new Error(`fd ${i} of the record (${e.kind} ${e.name}) is fd ${fd} here, and ${bad}`);
  });
}
