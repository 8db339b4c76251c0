// pinion memlock plan | status: the locked-memory numbers behind device
// assignment, computed (plan) or read live from /proc (status). The plan's
// accounting model is pin-core's, loaded once the input is checked.
import { memlockLimits, type VmSpec } from '../memlock/limits.js';
import { chargedProcesses } from '../memlock/status.js';
import { parseCommand, printUsage, UsageError, type CommandSpec } from './args.js';
import { sizeValue, VM_RAM } from './sizes.js';

const USAGE = 'pinion memlock plan --vm RAM[:DEVICES[:separate]] [--vm ...] [--json] | pinion memlock status [--json]';

export const MEMLOCK = {
  name: 'pinion memlock',
  usage: `usage: ${USAGE}
  plan     the RLIMIT_MEMLOCK each VMM process needs under type1, iommufd per-user and iommufd per-process, next
           to libvirt's RAM + 1 GiB, for VMs run as one user; --vm RAM[:DEVICES[:separate]] per VM, e.g. --vm 4G:2
           (RAM a size, DEVICES assigned devices, default 1; separate: one address space per device)
  status   live VmLck/VmPin per process and per user
  --json   the numbers as JSON`,
  options: {},
} satisfies CommandSpec;

const PLAN = {
  name: 'pinion memlock plan',
  usage: MEMLOCK.usage,
  options: { vm: { type: 'string', multiple: true }, json: { type: 'boolean' } },
} satisfies CommandSpec;

const STATUS = { name: 'pinion memlock status', usage: MEMLOCK.usage, options: { json: { type: 'boolean' } } } satisfies CommandSpec;

const json = (v: unknown): string => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? Number(x) : x), 2);
const mib = (b: bigint | number): string => `${Math.round(Number(b) / 1048576)}M`;

export async function memlockCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'plan') return planCommand(rest);
  if (sub === 'status') return statusCommand(rest);
  if (sub === '-h' || sub === '--help') return printUsage(MEMLOCK);
  throw new UsageError(sub === undefined ? `no subcommand given: ${USAGE}` : `unknown subcommand '${sub}'; ${USAGE}`);
}

/** One --vm RAM[:DEVICES[:separate]]. */
export function parseVm(s: string, i: number): VmSpec {
  const [ram = '', dev = '1', sep, extra] = s.split(':');
  const ramBytes = sizeValue(ram, `--vm ${s}: RAM`, VM_RAM);
  if (!/^\d+$/.test(dev) || (sep !== undefined && sep !== 'separate') || extra !== undefined)
    throw new UsageError(`--vm '${s}': write RAM[:DEVICES[:separate]], e.g. 4G:2`);
  return { name: `vm${i + 1}`, ramBytes, devices: Number(dev), separateAddressSpaces: sep === 'separate' };
}

async function planCommand(argv: string[]): Promise<number> {
  const p = parseCommand(argv, PLAN);
  if (p.help) return printUsage(PLAN);
  const specs = p.values.vm ?? [];
  if (!specs.length) throw new UsageError(`no VM given: ${USAGE}`);
  const vms = specs.map(parseVm);
  const { pinCore } = await import('../memory/pin-core.js');
  const r = memlockLimits(vms, (path, mode) => pinCore.accountingCharge(path, mode, false));
  if (p.values.json) {
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
  const p = parseCommand(argv, STATUS);
  if (p.help) return printUsage(STATUS);
  const procs = chargedProcesses();
  const users = new Map<number, { vmLckKiB: number; vmPinKiB: number; pids: number[] }>();
  for (const c of procs) {
    const u = users.get(c.uid) ?? { vmLckKiB: 0, vmPinKiB: 0, pids: [] };
    u.vmLckKiB += c.vmLckKiB;
    u.vmPinKiB += c.vmPinKiB;
    u.pids.push(c.pid);
    users.set(c.uid, u);
  }
  if (p.values.json) {
    console.log(json({ processes: procs, users: Object.fromEntries(users) }));
    return 0;
  }
  console.log('pid      uid    name             VmLck      VmPin      RLIMIT_MEMLOCK');
  for (const c of procs)
    console.log(
      `${String(c.pid).padEnd(8)} ${String(c.uid).padEnd(6)} ${c.comm.padEnd(16)} ${`${c.vmLckKiB}K`.padEnd(10)} ${`${c.vmPinKiB}K`.padEnd(10)} ${c.memlockSoftKiB === null ? 'unlimited' : `${c.memlockSoftKiB}K`}`,
    );
  for (const [uid, u] of users) console.log(`user ${uid}: VmLck ${u.vmLckKiB}K, VmPin ${u.vmPinKiB}K over ${u.pids.length} process(es)`);
  if (!procs.length) console.log('no process has locked or pinned memory');
  return 0;
}
