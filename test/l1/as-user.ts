// The two halves of an L1 script that runs as an unprivileged VMM would: as
// root, a VF bound to vfio-pci with its nodes open to uid 1000; then the
// same script again as uid 1000 under an RLIMIT_MEMLOCK.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { assignablePf, bindVfio, createVfs } from '../../rig/l1/sysfs.js';

export interface UserVf {
  bdf: string;
  cdev: string;
  group: string;
}

/** One new VF of the assignable PF on vfio-pci, its group, cdev and the IOMMU nodes open to everyone. */
export function vfForUser(): UserVf {
  const [vf] = createVfs(assignablePf().bdf, 1);
  const dev = bindVfio(vf!);
  const group = `/dev/vfio/${dev.iommuGroup}`;
  for (const node of [group, dev.vfioCdev!, '/dev/vfio/vfio', '/dev/iommu']) chmodSync(node, 0o666);
  return { bdf: dev.bdf, cdev: dev.vfioCdev!, group };
}

/** `script` (a file path) run again with `args` as uid 1000 under an RLIMIT_MEMLOCK of `memlockBytes`; stderr passes through. */
export function rerunAsUser(script: string, memlockBytes: number, args: string[], stdout: 'pipe' | 'inherit'): SpawnSyncReturns<string> {
  const memlock = `--memlock=${memlockBytes}:${memlockBytes}`;
  const user = ['setpriv', '--reuid=1000', '--regid=1000', '--clear-groups', '--'];
  return spawnSync('prlimit', [memlock, ...user, process.execPath, script, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', stdout, 'inherit'],
  });
}
