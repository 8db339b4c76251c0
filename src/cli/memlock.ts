// pinion memlock plan | status: the locked-memory numbers behind device
// assignment, computed (plan) or read live from /proc (status).
import { pinCore } from '../memory/pin-core.js';
import { parseSize } from '../memory/layout.js';
import { memlockLimits, type VmSpec } from '../memlock/limits.js';
import { chargedProcesses } from '../memlock/status.js';
import { parseFlags, UsageError } from './args.js';

const USAGE = 'pinion memlock plan --vm RAM[:DEVICES[:separate]] [--vm ...] [--json] | pinion memlock status [--json]';

const json = (v: unknown): string => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? Number(x) : x), 2);
const mib = (b: bigint | number): string => `${Math.round(Number(b) / 1048576)}M`;

export async function memlockCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'plan') return planCommand(rest);
  if (sub === 'status') return statusCommand(rest);
  throw new UsageError(USAGE);
}

function planCommand(argv: string[]): number {
  const p = parseFlags(
    argv.filter((a) => a !== '--json'),
    ['vm'],
  );
  const specs = p.all.get('vm') ?? [];
  if (!specs.length) throw new UsageError(`no VM given: ${USAGE}`);
  const vms: VmSpec[] = specs.map((s, i) => {
    const [ram = '', dev = '1', sep] = s.split(':');
    let ramBytes: bigint;
    try {
      ramBytes = parseSize(ram, `--vm ${s}: RAM`);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    if (!/^\d+$/.test(dev) || (sep !== undefined && sep !== 'separate'))
      throw new UsageError(`--vm '${s}': write RAM[:DEVICES[:separate]], e.g. 4G:2`);
    return { name: `vm${i + 1}`, ramBytes, devices: Number(dev), separateAddressSpaces: sep === 'separate' };
  });
  const r = memlockLimits(vms, (path, mode) => pinCore.accountingCharge(path, mode, false));
  if (argv.includes('--json')) {
    console.log(json(r));
    return 0;
  }
  console.log('RLIMIT_MEMLOCK each VMM process needs (all VMs run as one user):');
  console.log('vm     RAM     devices  type1   iommufd per-user  iommufd per-process  libvirt (RAM+1G)');
  for (const x of r.rows)
    console.log(
      `${x.vm.padEnd(6)} ${mib(x.ramBytes).padEnd(7)} ${String(x.devices).padEnd(8)} ${mib(x.needs.type1).padEnd(7)} ${mib(x.needs.iommufdPerUser).padEnd(17)} ${mib(x.needs.iommufdPerProcess).padEnd(20)} ${mib(x.libvirt)}`,
    );
  for (const n of r.notes) console.log(`note: ${n}`);
  return 0;
}

function statusCommand(argv: string[]): number {
  const procs = chargedProcesses();
  const users = new Map<number, { vmLckKiB: number; vmPinKiB: number; pids: number[] }>();
  for (const p of procs) {
    const u = users.get(p.uid) ?? { vmLckKiB: 0, vmPinKiB: 0, pids: [] };
    u.vmLckKiB += p.vmLckKiB;
    u.vmPinKiB += p.vmPinKiB;
    u.pids.push(p.pid);
    users.set(p.uid, u);
  }
  if (argv.includes('--json')) {
    console.log(json({ processes: procs, users: Object.fromEntries(users) }));
    return 0;
  }
  console.log('pid      uid    name             VmLck      VmPin      RLIMIT_MEMLOCK');
  for (const p of procs)
    console.log(
      `${String(p.pid).padEnd(8)} ${String(p.uid).padEnd(6)} ${p.comm.padEnd(16)} ${`${p.vmLckKiB}K`.padEnd(10)} ${`${p.vmPinKiB}K`.padEnd(10)} ${p.memlockSoftKiB === null ? 'unlimited' : `${p.memlockSoftKiB}K`}`,
    );
  for (const [uid, u] of users) console.log(`user ${uid}: VmLck ${u.vmLckKiB}K, VmPin ${u.vmPinKiB}K over ${u.pids.length} process(es)`);
  if (!procs.length) console.log('no process has locked or pinned memory');
  return 0;
}
