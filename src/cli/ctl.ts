// pinion ctl PATH <verb> [args] [--json]: the client of a running VM's
// control API (pinion run --api-socket PATH). Each verb is the API's
// vm.<verb> (ping is vmm.ping); the answer is printed for people, or as the
// API's JSON with --json. A refusal prints the API's one line and exits 1.
import { request } from 'node:http';
import type { ChangeResult, DeviceInfo, DmaInfo, HotplugInfo, MemoryMapInfo, VmInfo } from '../api/routes.js';
import { ApiError } from '../api/errors.js';
import { byteCount } from '../api/memory-change.js';
import type { UpdateReport } from '../update/outgoing.js';
import { parseCommand, printUsage, UsageError, type CommandSpec } from './args.js';

interface Verb {
  method: 'GET' | 'PUT';
  /** Positional arguments, as body fields. */
  args: readonly string[];
  /** How many of them are required. */
  need: number;
  /** Options it takes, for the usage line. */
  options?: string;
}

const VERBS: Record<string, Verb> = {
  ping: { method: 'GET', args: [], need: 0 },
  info: { method: 'GET', args: [], need: 0 },
  memory: { method: 'GET', args: [], need: 0 },
  dma: { method: 'GET', args: [], need: 0 },
  devices: { method: 'GET', args: [], need: 0 },
  pause: { method: 'PUT', args: [], need: 0 },
  resume: { method: 'PUT', args: [], need: 0 },
  stop: { method: 'PUT', args: [], need: 0 },
  'add-ram': { method: 'PUT', args: ['gpa', 'size', 'backend'], need: 2 },
  'remove-ram': { method: 'PUT', args: ['gpa'], need: 1 },
  'resize-ram': { method: 'PUT', args: ['gpa', 'size'], need: 2 },
  'split-ram': { method: 'PUT', args: ['gpa', 'at'], need: 2 },
  'move-ram': { method: 'PUT', args: ['gpa', 'to'], need: 2 },
  'replace-ram': { method: 'PUT', args: ['gpa', 'backend'], need: 2 },
  update: { method: 'PUT', args: [], need: 0, options: '[--to COMMAND]' },
};

const USAGE = `pinion ctl PATH <verb> [args] [--json]; verbs: ${Object.entries(VERBS)
  .map(([v, d]) =>
    [v, ...d.args.map((a, i) => (i < d.need ? a.toUpperCase() : `[${a.toUpperCase()}]`)), ...(d.options ? [d.options] : [])].join(' '),
  )
  .join(', ')}`;

export const CTL = {
  name: 'pinion ctl',
  usage: `usage: ${USAGE}
  Drives the control API of a VM started with pinion run --api-socket PATH and prints the answer for people,
  or as the API's JSON with --json. GPA, SIZE, AT and TO are bytes, 0x addresses or sizes (64M, 1G);
  BACKEND is memfd, anon or hugetlb. update hands the VM to a new Pinion process: this build, or the one
  --to COMMAND starts (e.g. --to "node /opt/pinion/dist/bundle/pinion.js"). A refusal prints the API's one line and exits 1.`,
  options: { json: { type: 'boolean' }, to: { type: 'string' } },
  positionals: 'words',
} satisfies CommandSpec;

/** Positional arguments that are byte counts or addresses; checked here with the API's own parser. */
const BYTE_ARGS = ['gpa', 'size', 'at', 'to'];

export interface CtlRequest {
  socket: string;
  json: boolean;
  verb: string;
  method: 'GET' | 'PUT';
  /** /api/v1/vm.<verb> */
  path: string;
  body: Record<string, string> | undefined;
}

export function parseCtlArgs(argv: string[]): CtlRequest | 'help' {
  const p = parseCommand(argv, CTL);
  if (p.help) return 'help';
  const json = p.values.json ?? false;
  const [socket, verb, ...args] = p.positionals;
  if (!socket || !verb) throw new UsageError(`no ${socket ? 'verb' : 'PATH'} given: ${USAGE}`);
  const d = VERBS[verb];
  if (!d || !Object.hasOwn(VERBS, verb)) throw new UsageError(`unknown verb '${verb}'; ${USAGE}`);
  if (args.length < d.need || args.length > d.args.length)
    throw new UsageError(
      `${verb} takes ${d.args.length ? d.args.map((a, i) => (i < d.need ? a.toUpperCase() : `[${a.toUpperCase()}]`)).join(' ') : 'no arguments'}`,
    );
  const to = p.values.to;
  if (to !== undefined && verb !== 'update') throw new UsageError(`--to goes with update (the Pinion command to hand over to)`);
  if (to !== undefined && !to.trim())
    throw new UsageError('--to needs a command: the Pinion to hand over to (e.g. --to "node /opt/pinion/dist/bundle/pinion.js")');
  args.forEach((a, i) => {
    const field = d.args[i]!;
    try {
      if (BYTE_ARGS.includes(field)) byteCount(verb, field, a);
    } catch (e) {
      throw e instanceof ApiError
        ? new UsageError(`${verb} ${field.toUpperCase()} '${a}' is not a byte count or address; write 4096, 0x40000000 or 16M`)
        : e;
    }
  });
  const body = d.args.length ? Object.fromEntries(args.map((a, i) => [d.args[i]!, a])) : to !== undefined ? { to } : undefined;
  return { socket, json, verb, method: d.method, path: `/api/v1/${verb === 'ping' ? 'vmm' : 'vm'}.${verb}`, body };
}

/** One request to the API on `socket`; resolves with the status and the parsed JSON answer. */
export function call(
  socket: string,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 60_000,
): Promise<{ status: number; body: unknown }> {
  const text = body === undefined ? '' : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: socket, method, path, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const raw = Buffer.concat(chunks).toString('utf8');
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(raw) });
          } catch {
            resolve({ status: res.statusCode ?? 0, body: { error: raw.trim() } });
          }
        });
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer in ${timeoutMs / 1000} s`)));
    req.on('error', (e: NodeJS.ErrnoException) => {
      const hint = e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? ' (is a VM running with --api-socket on it?)' : '';
      reject(new Error(`cannot reach the control API at ${socket}: ${e.code ?? e.message}${hint}`));
    });
    req.end(text);
  });
}

export async function ctlCommand(argv: string[]): Promise<number> {
  const r = parseCtlArgs(argv);
  if (r === 'help') return printUsage(CTL);
  const a = await call(r.socket, r.method, r.path, r.body);
  if (a.status >= 400) {
    const err = (a.body as { error?: string }).error ?? JSON.stringify(a.body);
    if (r.json) console.log(JSON.stringify(a.body));
    else console.error(`pinion: ${err} (HTTP ${a.status})`);
    return 1;
  }
  console.log(r.json ? JSON.stringify(a.body, null, 2) : format(r.verb, a.body));
  return 0;
}

const MiB = 1048576;
/** 64 MiB, 4 KiB, 512 B, 1.5 GiB. */
export function size(n: number): string {
  if (n >= 1024 * MiB && n % ((1024 * MiB) / 4) === 0) return `${n / (1024 * MiB)} GiB`;
  if (n >= MiB) return `${+(n / MiB).toFixed(2)} MiB`;
  if (n >= 1024) return `${+(n / 1024).toFixed(2)} KiB`;
  return `${n} B`;
}

const pad = (s: string, n: number): string => s.padEnd(n);

/** The answer of `verb` for people. */
export function format(verb: string, body: unknown): string {
  switch (verb) {
    case 'info':
    case 'pause':
    case 'resume':
    case 'stop':
      return formatInfo(body as VmInfo);
    case 'memory':
      return formatMemory(body as MemoryMapInfo);
    case 'dma':
      return formatDma(body as DmaInfo);
    case 'devices':
      return formatDevices((body as { devices: DeviceInfo[] }).devices);
    case 'ping':
      return `pinion VMM pid ${(body as { pid: number }).pid} answers`;
    case 'update':
      return formatUpdate(body as UpdateReport);
    default: {
      const c = body as ChangeResult;
      return `${c.done}\n${c.guest.note}\n${formatMemory(c.memory)}`;
    }
  }
}

export function formatInfo(i: VmInfo): string {
  const held = i.pausedBy.length ? ` (held by ${i.pausedBy.join(', ')})` : '';
  const lines = [
    `VM ${i.state}${held}: ${i.vcpus.length} vCPU(s), ${size(i.memory.ramBytes)} RAM in ${i.memory.regions} region(s), ${i.devices} assigned device(s); pid ${i.pid}, up ${(i.uptimeMs / 1000).toFixed(1)} s`,
    `boot: ${i.boot.kind} ${i.boot.image}${i.boot.cmdline ? ` '${i.boot.cmdline}'` : ''}`,
    ...i.vcpus.map((v) => `  vCPU ${v.index}  ${v.state}`),
  ];
  if (i.memory.changes || i.memory.hotplug.claimed)
    lines.push(`memory: ${i.memory.changes} change(s) since boot; ${formatHotplug(i.memory.hotplug)} (see pinion ctl PATH memory)`);
  return lines.join('\n');
}

export function formatUpdate(u: UpdateReport): string {
  const lines = [
    `VM handed over from pid ${u.from} to pid ${u.to} (live update): the guest was paused ${u.pauseMs} ms`,
    `  ${pad('step', 8)} ${pad('process', 8)} ${'ms'.padStart(8)}  ${pad('guest', 7)} parts (ms)`,
    ...u.steps.map((s) =>
      `  ${pad(s.step, 8)} ${pad(s.side, 8)} ${s.ms.toFixed(2).padStart(8)}  ${pad(s.paused ? 'paused' : 'runs', 7)} ${(s.parts ?? []).map((p) => `${p.name} ${p.ms}`).join(', ')}`.trimEnd(),
    ),
    `locked memory (VmLck/VmPin KiB): ${u.charge.map((c) => `${c.at} (pid ${c.pid}) ${c.vmLckKiB}/${c.vmPinKiB}`).join(', ')}`,
  ];
  return lines.join('\n');
}

/** Whether the guest is told of memory changes, and where its driver is. */
export function formatHotplug(h: HotplugInfo): string {
  if (!h.claimed) return `no guest driver holds the hotplug mailbox (port ${h.port}): the guest is not told of changes`;
  const pending = h.pending ? `, waiting for its ack of ${h.pending.kind} ${h.pending.gpa}+${size(h.pending.size)}` : '';
  return `the guest's driver holds the hotplug mailbox (port ${h.port}): ${h.generation} event(s), acknowledged up to ${h.acked}${pending}`;
}

export function formatMemory(m: MemoryMapInfo): string {
  const rows = m.regions.map(
    (r) =>
      `  ${pad(`${r.gpa}-${r.end}`, 28)} ${pad(size(r.size), 10)} ${pad(r.kind, 6)} ${pad(r.backend ?? '-', 7)} ${pad(r.origin, 4)}  ${pad(r.guest ?? '-', 12)} ${r.name}`,
  );
  const lines = [
    `guest memory map (page ${size(m.pageSize)}):`,
    `  ${pad('range', 28)} ${pad('size', 10)} ${pad('kind', 6)} ${pad('backend', 7)} ${pad('from', 4)}  ${pad('guest', 12)} name`,
    ...rows,
    `holes: ${m.holes.map((h) => `${h.name} ${h.start}-${h.end}`).join(', ')}; RAM below ${m.ramCeiling}`,
    `hotplug: ${formatHotplug(m.hotplug)}`,
  ];
  if (m.changes.length) {
    lines.push(`changes:`);
    for (const c of m.changes) lines.push(`  ${c.at}  ${c.summary}; ${c.guest}`);
  }
  return lines.join('\n');
}

export function formatDma(d: DmaInfo): string {
  if (!d.assigned) return 'no device assigned: the VM has no DMA space';
  const budget = d.budget ? `${size(d.budget.bytes)} (${d.budget.why})` : 'none (the kernel checks no limit)';
  const lines = [
    `DMA space: ${d.iommu} (${d.containerType ?? d.path}${d.path === 'compat' ? ' served by iommufd' : ''}), ${d.entries.used} mapping(s) of ${d.entries.allowed ?? 'unlimited'} allowed`,
    `charged: ${size(d.charged.held)} held${d.charged.lastPeak !== null ? `, last change peaked at ${size(d.charged.lastPeak)}` : ''}; budget ${budget}`,
    `process: VmLck ${d.process.vmLckKiB} KiB, VmPin ${d.process.vmPinKiB} KiB, RLIMIT_MEMLOCK ${d.process.memlockKiB === null ? 'unlimited' : `${d.process.memlockKiB} KiB`}`,
    ...d.mappings.map((r) => `  ${pad(`${r.iova}-${r.end}`, 28)} ${pad(size(r.size), 10)} ${r.prot}  ${r.backing}`),
  ];
  if (d.lastOps.length) lines.push(`last change: ${d.lastOps.join(', ')}`);
  return lines.join('\n');
}

export function formatDevices(ds: DeviceInfo[]): string {
  if (!ds.length) return 'no device assigned';
  return ds
    .map((d) => {
      const irq =
        d.interrupts.active === 'none'
          ? 'interrupts off'
          : `${d.interrupts.active}${d.interrupts.active === 'intx' && d.interrupts.intxPin !== null ? ` on IOAPIC pin ${d.interrupts.intxPin}` : ''}`;
      const lines = [
        `${d.bdf} at ${d.slot}${d.group === null ? '' : ` (group ${d.group})`}: ${irq}${d.interrupts.msixVectors ? `, MSI-X table of ${d.interrupts.msixVectors}` : ''}${d.interrupts.intxPin !== null && d.interrupts.active !== 'intx' ? `, INTx pin ${d.interrupts.intxPin}` : ''}${d.resettable ? '' : ', no reset'}`,
        ...d.bars.map(
          (b) =>
            `  BAR${b.bar} ${pad(b.space, 5)} ${pad(b.address, 14)} ${pad(size(b.size), 10)} ${b.mapped ? `${size(b.mapped)} mmap'd` : 'trapped'}`,
        ),
      ];
      return lines.join('\n');
    })
    .join('\n');
}
