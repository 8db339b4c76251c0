// In L1: a VM whose test guest streams frames on an assigned igb VF (its
// stream mode), driven through its control API, and the peer that sends the
// frames. The VMM runs as uid 1000 under an RLIMIT_MEMLOCK: directly (user:
// type1 charges the process, iommufd the user) or through pinion open
// (opener: per-process accounting on iommufd). Used by remap-traffic.ts
// (one VM, every kind of change) and remap-two-vms.ts (two VMs of one user).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { bindVfio, createVfs, peerPf, type PciDevice } from '../../rig/l1/sysfs.js';
import type { ChangeResult, DmaInfo, MemoryMapInfo, VmInfo } from '../../src/api/routes.js';
import { call } from '../../src/cli/ctl.js';
import { CLI, GUEST, progress } from './pinion.js';

export const UID = '1000';
export const MiB = 1024 * 1024;
const SENDER = fileURLToPath(new URL('../../../test/support/peer-send.py', import.meta.url));
// The VMM runs as another user: a plain environment, without the test runner's instrumentation.
const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
export const netdev = (bdf: string): string => readdirSync(`/sys/bus/pci/devices/${bdf}/net`)[0]!;
export const dmesg = (): string[] => spawnSync('dmesg', { encoding: 'utf8' }).stdout.split('\n');
/** L1's kernel log lines of an IOMMU fault among `lines`. */
export const dmarFaults = (lines: string[]): string[] => lines.filter((l) => /DMAR|DMA fault|iommu.*fault/i.test(l));
/** The kernel's WARN, BUG and oops lines among `lines`. */
export const kernelWarnings = (lines: string[]): string[] =>
  lines.filter((l) => /WARNING:|BUG:|Oops|general protection|Call Trace|kernel BUG/.test(l));

/** `n` VFs of `pf` bound to vfio-pci, their device nodes open to uid 1000; the PF's netdev up (it answers the VFs' mailbox only then). */
export function streamVfs(pf: string, n: number, existing?: string): PciDevice[] {
  spawnSync('ip', ['link', 'set', netdev(pf), 'up']);
  const vfs = (existing ? [existing] : createVfs(pf, n)).map((bdf) => bindVfio(bdf));
  for (const vf of vfs)
    for (const node of ['/dev/kvm', '/dev/iommu', '/dev/vfio/vfio', `/dev/vfio/${vf.iommuGroup}`, vf.vfioCdev ?? ''])
      if (node && existsSync(node)) chmodSync(node, 0o666);
  return vfs;
}

/** L1's peer igb, sending numbered broadcast frames every `intervalMs` (test/support/peer-send.py). */
export class Peer {
  readonly ifname = netdev(peerPf().bdf);
  private rx0 = 0;
  private t0 = 0;
  ended = false;
  done: Promise<number> = Promise.resolve(0);
  /** Frames sent before the stop frame: the count asked for, or fewer after stop(). */
  sent = 0;
  private sender?: ChildProcess;

  constructor() {
    spawnSync('ip', ['link', 'set', this.ifname, 'up']);
  }

  rx(): number {
    return Number(readFileSync(`/sys/class/net/${this.ifname}/statistics/rx_packets`, 'utf8'));
  }

  /** Frames 0 to `frames`-1, then the stop frame; `done` resolves with the ms it took. */
  send(intervalMs: number, frames: number): void {
    this.rx0 = this.rx();
    this.t0 = Date.now();
    this.sent = frames;
    const p = spawn('python3', [SENDER, this.ifname, String(intervalMs), String(frames)], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.sender = p;
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    this.done = new Promise<number>((r) =>
      p.on('close', () => {
        this.sent = Number(/^sent (\d+)$/m.exec(out)?.[1] ?? frames);
        this.ended = true;
        r(Date.now() - this.t0);
      }),
    );
  }

  /** Ends the stream `afterMs` from now, its work done: the stop frame carries the count sent, which `sent`
   * then holds; resolves as `done` does. The frames after the work show the guest still receiving. */
  async stop(afterMs = 5000): Promise<number> {
    await new Promise((r) => setTimeout(r, afterMs));
    if (!this.ended) this.sender?.kill('SIGTERM');
    return this.done;
  }

  /** Frames the peer received since it started sending (the guests' own). */
  received(): number {
    return this.rx() - this.rx0;
  }
}

/** L1 reserves `n` 2 MiB huge pages if it can (for a replace onto hugetlb). */
export function reserveHugePages(n: number): void {
  try {
    writeFileSync('/proc/sys/vm/nr_hugepages', String(n));
  } catch {
    // no huge pages here
  }
}

export interface Counters {
  rx: number;
  lost: number;
  bad: number;
  tx: number;
  inregion: number;
}

/** One memory change as the rig tests read it. */
export interface Change {
  name: string;
  verb: string;
  body: Record<string, string>;
  status: number;
  ms: number;
  done?: string;
  error?: string;
  guest?: ChangeResult['guest'];
  ops: string[];
  charged: { before: number; peak: number | null; after: number };
  mappings: { before: string[]; after: string[] };
  regions: { before: string[]; after: string[] };
  counters: { before: Counters | null; after: Counters | null };
  /** What the guest printed meanwhile about the regions: landed frames, releases. */
  guestLines: string[];
  state: string;
}

/** The guest's totals from its last line, once it has stopped. */
export interface StreamFrames {
  sent: number;
  received: number | null;
  first: number | null;
  last: number | null;
  lost: number | null;
}

export interface StreamVmOptions {
  /** Names the VM's socket and console. */
  name: string;
  iommu: string;
  how: 'user' | 'opener';
  vf: string;
  limit: number;
  memory?: string;
  /** The guest raises an MSI-X heartbeat on its VF and counts what arrives (its `heartbeat` word). */
  heartbeat?: boolean;
}

const mapping = (d: DmaInfo): string[] => (d.assigned ? d.mappings.map((m) => `${m.iova}+${m.size}`) : []);
const regions = (m: MemoryMapInfo): string[] => m.regions.map((r) => `${r.name} ${r.gpa}+${r.size} ${r.backend ?? '-'} ${r.guest ?? '-'}`);

export class StreamVm {
  readonly socket: string;
  private readonly consolePath: string;
  private readonly proc: ChildProcess;
  stderr = '';
  ended = false;
  readonly end: Promise<number | null>;

  constructor(readonly o: StreamVmOptions) {
    this.socket = `/tmp/pinion-${o.name}-${process.pid}.sock`;
    this.consolePath = `${this.socket}.console`;
    rmSync(this.consolePath, { force: true });
    const runArgs = [process.execPath, CLI, 'run', '--payload', GUEST, '--device', o.vf, '--iommu', o.iommu];
    if (o.memory) runArgs.push('--memory', o.memory);
    runArgs.push('--cmdline', o.heartbeat ? 'stream heartbeat' : 'stream', '--api-socket', this.socket, '--console', this.consolePath);
    const cmd =
      o.how === 'opener'
        ? [
            process.execPath,
            CLI,
            'open',
            '--user',
            UID,
            '--iommu',
            o.iommu,
            '--memlock',
            String(o.limit),
            '--device',
            o.vf,
            '--',
            ...runArgs,
          ]
        : ['prlimit', `--memlock=${o.limit}:${o.limit}`, 'setpriv', `--reuid=${UID}`, `--regid=${UID}`, '--clear-groups', '--', ...runArgs];
    progress(`${o.name}: ${cmd.join(' ')}`);
    this.proc = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env });
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.end = new Promise<number | null>((r) => this.proc.on('close', (code) => ((this.ended = true), r(code))));
  }

  consoleText(): string {
    return existsSync(this.consolePath) ? readFileSync(this.consolePath, 'utf8') : '';
  }

  /** Waits until `what` holds, the VMM ends, or `ms` pass; whether it holds. */
  async until(what: () => boolean, ms: number): Promise<boolean> {
    const t0 = Date.now();
    while (!what()) {
      if (this.ended || Date.now() - t0 > ms) return what();
      await sleep(100);
    }
    return true;
  }

  /** The guest's NIC is up and its rings are ready. */
  ready(ms: number): Promise<boolean> {
    return this.until(() => this.consoleText().includes('stream: ready'), ms);
  }

  /** The guest's last status line. */
  counters(): Counters | null {
    const m = [...this.consoleText().matchAll(/stream: rx=(\d+) lost=(\d+) bad=(\d+) tx=(\d+) inregion=(\d+)/g)].at(-1);
    return m ? { rx: +m[1]!, lost: +m[2]!, bad: +m[3]!, tx: +m[4]!, inregion: +m[5]! } : null;
  }

  async get<T>(verb: string): Promise<T> {
    return (await call(this.socket, 'GET', `/api/v1/vm.${verb}`)).body as T;
  }

  /** One change through the control API, with the DMA table, the memory map and the guest's counters on each side. */
  async change(name: string, verb: string, body: Record<string, string>): Promise<Change> {
    progress(`${this.o.name} ${name}: ${verb} ${JSON.stringify(body)} (guest ${JSON.stringify(this.counters())})`);
    const [dma0, mem0, c0, off] = [
      await this.get<DmaInfo>('dma'),
      await this.get<MemoryMapInfo>('memory'),
      this.counters(),
      this.consoleText().length,
    ];
    const t0 = Date.now();
    const r = await call(this.socket, 'PUT', `/api/v1/vm.${verb}`, body);
    const ms = Date.now() - t0;
    // The guest prints its counters about once a second (and after each event): a line from after the change.
    await sleep(2500);
    const [dma1, mem1, info] = [await this.get<DmaInfo>('dma'), await this.get<MemoryMapInfo>('memory'), await this.get<VmInfo>('info')];
    const b = r.body as ChangeResult & { error?: string };
    const charged = (d: DmaInfo): { held: number; lastPeak: number | null } => (d.assigned ? d.charged : { held: 0, lastPeak: null });
    return {
      name,
      verb,
      body,
      status: r.status,
      ms,
      done: b.done,
      error: b.error,
      guest: b.guest,
      ops: dma1.assigned ? dma1.lastOps : [],
      charged: { before: charged(dma0).held, peak: charged(dma1).lastPeak, after: charged(dma1).held },
      mappings: { before: mapping(dma0), after: mapping(dma1) },
      regions: { before: regions(mem0), after: regions(mem1) },
      counters: { before: c0, after: this.counters() },
      guestLines: this.consoleText()
        .slice(off)
        .split('\n')
        .filter((l) => /stream: (frame \d+ landed|released|not releasing|no frame landed|region |descriptor )/.test(l)),
      state: info.state,
    };
  }

  /** Once the peer has stopped: waits for the guest to stop (SIGTERM after a minute), and its totals. */
  async finish(
    sent: number,
  ): Promise<{ frames: StreamFrames; status: number | null; done: Record<string, number> | null; console: string }> {
    if (!(await this.until(() => this.ended, 60_000))) {
      progress(`${this.o.name}: the guest did not stop after the peer did; SIGTERM`);
      this.proc.kill('SIGTERM');
    }
    const status = await this.end;
    const text = this.consoleText();
    const doneLine = /stream: done (.*)/.exec(text)?.[1];
    const done = doneLine ? Object.fromEntries(doneLine.split(' ').map((kv) => [kv.split('=')[0]!, Number(kv.split('=')[1])])) : null;
    rmSync(this.consolePath, { force: true });
    return {
      frames: { sent, received: done?.rx ?? null, first: done?.first ?? null, last: done?.last ?? null, lost: done?.lost ?? null },
      status,
      done,
      console: text.split('\n').slice(-40).join('\n'),
    };
  }

  kill(): void {
    this.proc.kill('SIGKILL');
  }
}
