// Runs inside L1: a Linux guest (the guest image) with one assigned igb
// function, under Pinion or under QEMU, on either IOMMU path; its console
// read line by line with L1's clock, the VMM's memory and KVM's own exit
// counters for the VM. The tests and the side-by-side benchmark share it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { IommuKind } from '../../src/devices/vfio/iommu.js';
import { assignablePf, bindVfio, createVfs, peerPf } from './sysfs.js';
import { pinionCli } from './paths.js';

export const PINION_CLI = pinionCli();
export const PEER_IP = '192.0.2.1';
export const GUEST_MEMORY_MIB = 256;
export const GUEST_CPUS = 2;

export type Vmm = 'pinion' | 'qemu';

export interface GuestOptions {
  vmm: Vmm;
  iommu: IommuKind;
  kernel: string;
  initrd: string;
  /** The assigned function's BDF, bound to vfio-pci; none: a guest without a NIC. */
  device?: string;
  /** The guest's address on the hub (pinion.ip). */
  ip: string;
  /** Shell command the guest's init runs before it powers off; none: a shell on the console. */
  command?: string;
  /** vCPUs (default GUEST_CPUS). */
  cpus?: number;
  /** Wall-clock limit in ms; the VMM is killed after it. */
  limitMs?: number;
  /** More kernel parameters. */
  append?: string;
  /** Pinion only: who inflates the kernel (pinion run --decompress); Pinion's default when unset. */
  decompress?: 'vmm' | 'kernel';
  /** Called with each console line as it comes. */
  onLine?: (line: string) => void;
}

export interface ConsoleLine {
  /** ms since the VMM process was spawned, on L1's clock. */
  at: number;
  text: string;
}

/** The VMM's command line. QEMU as its users run it for a direct kernel boot with an assigned function. */
export function vmmArgv(o: GuestOptions): [string, string[]] {
  // panic=-1: a guest that panics reboots at once, which ends the VM under either VMM (-no-reboot for QEMU)
  // instead of leaving a halted guest for its caller's timeout.
  const append = `console=ttyS0 quiet panic=-1 pinion.ip=${o.ip}${o.append ? ` ${o.append}` : ''}${o.command ? ` pinion.run=${Buffer.from(o.command).toString('base64')}` : ''}`;
  if (o.vmm === 'pinion') {
    return [
      process.execPath,
      [
        PINION_CLI,
        'run',
        '--kernel',
        o.kernel,
        '--initrd',
        o.initrd,
        '--append',
        append,
        '--cpus',
        String(o.cpus ?? GUEST_CPUS),
        '--memory',
        `${GUEST_MEMORY_MIB}M`,
        ...(o.device ? ['--device', o.device, '--iommu', o.iommu] : []),
        // Anonymous RAM with THP, as QEMU's: memfd RAM gets 2 MiB pages only where shmem THP is allowed, and
        // L1 leaves it off.
        '--memory-backend',
        'anon',
        ...(o.decompress ? ['--decompress', o.decompress] : []),
      ],
    ];
  }
  return [
    'qemu-system-x86_64',
    [
      ...QEMU_MACHINE,
      '-m',
      `${GUEST_MEMORY_MIB}M`,
      '-smp',
      String(o.cpus ?? GUEST_CPUS),
      '-kernel',
      o.kernel,
      '-initrd',
      o.initrd,
      '-append',
      append,
      ...QEMU_CONSOLE,
      ...(o.device ? qemuVfio(o.iommu, o.device) : []),
    ],
  ];
}

/** QEMU's machine as the rig runs it: KVM, q35, the host's CPU. */
export const QEMU_MACHINE = ['-accel', 'kvm', '-M', 'q35', '-cpu', 'host'];
/** Serial on stdio, nothing else: no display, no default devices, no reboot. */
export const QEMU_CONSOLE = ['-nographic', '-no-reboot', '-nodefaults', '-serial', 'stdio'];

/** `device` assigned to QEMU through `iommu`: the legacy container, or an iommufd object. */
export function qemuVfio(iommu: IommuKind, device: string): string[] {
  return iommu === 'iommufd'
    ? ['-object', 'iommufd,id=ifd0', '-device', `vfio-pci,host=${device},iommufd=ifd0`]
    : ['-device', `vfio-pci,host=${device}`];
}

/** A console line as text: no CR, and no terminal escapes (SeaBIOS clears the screen with some just before
 * the kernel's first line). */
export function consoleText(raw: string): string {
  return raw.replace(/\r$/, '').replace(/\x1b(\[[0-9;?]*[A-Za-z]|[A-Za-z])/g, '');
}

/** A running guest: its console lines as they come, and waits on them. */
export class LinuxGuest {
  readonly lines: ConsoleLine[] = [];
  readonly proc: ChildProcess;
  readonly started = performance.now();
  stderr = '';
  private partial = '';
  private waiters: { re: RegExp; resolve: (l: ConsoleLine | undefined) => void }[] = [];
  readonly done: Promise<{ status: number | null; signal: NodeJS.Signals | null }>;

  constructor(readonly opts: GuestOptions) {
    const [cmd, args] = vmmArgv(opts);
    this.proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d: Buffer) => this.consume(d.toString('latin1')));
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    const limit = setTimeout(() => {
      process.stderr.write(`l1: ${opts.vmm} (pid ${this.proc.pid}) still running after ${(opts.limitMs ?? 240_000) / 1000} s; SIGKILL\n`);
      this.proc.kill('SIGKILL');
    }, opts.limitMs ?? 240_000);
    // A guest silent for 20 s: say where it stopped and where the VMM's threads are, with KVM's counters for
    // the VM twice 5 s apart (a halted guest whose halt exits still climb is ticking; one whose counters
    // stand is waiting on an interrupt that never comes), before the rig's own watchdog takes L1 down.
    let told = 0;
    const silent = setInterval(() => {
      const quiet = performance.now() - this.started - (this.lines.at(-1)?.at ?? 0);
      if (quiet < 20_000 || performance.now() - told < 30_000) return;
      told = performance.now();
      const before = this.kvmCounters();
      setTimeout(() => {
        process.stderr.write(
          `l1: ${opts.vmm} guest silent for ${(quiet / 1000).toFixed(0)} s; its last lines:\n` +
            this.lines
              .slice(-8)
              .map((l) => `l1:   ${(l.at / 1000).toFixed(1)} s: ${l.text}\n`)
              .join('') +
            `l1: KVM counters, then 5 s later: ${before}\nl1:   ${this.kvmCounters()}\n${threadStates(this.proc.pid!)}`,
        );
      }, 5000).unref();
    }, 5000);
    this.done = new Promise((resolve) =>
      this.proc.on('close', (status, signal) => {
        clearTimeout(limit);
        clearInterval(silent);
        if (this.partial) this.push(this.partial);
        for (const w of this.waiters) w.resolve(undefined);
        this.waiters = [];
        resolve({ status, signal });
      }),
    );
  }

  private consume(s: string): void {
    const parts = (this.partial + s).split('\n');
    this.partial = parts.pop()!;
    for (const p of parts) {
      // The guest's markers start a line of their own even when what came before ended without a newline
      // (SeaBIOS's "Booting from ROM..").
      const text = consoleText(p);
      const at = text.indexOf('pinion-guest: ');
      if (at > 0) this.push(text.slice(0, at));
      this.push(at > 0 ? text.slice(at) : text);
    }
  }

  private push(text: string): void {
    const line = { at: performance.now() - this.started, text };
    this.lines.push(line);
    this.opts.onLine?.(text);
    this.waiters = this.waiters.filter((w) => (w.re.test(text) ? (w.resolve(line), false) : true));
  }

  /** The first console line matching `re` (already seen or yet to come); undefined if the VMM ends first. */
  waitFor(re: RegExp): Promise<ConsoleLine | undefined> {
    const seen = this.lines.find((l) => re.test(l.text));
    if (seen) return Promise.resolve(seen);
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiters.push({ re, resolve }));
  }

  /** Lines the guest's command printed with `pinion-guest: <key> ...`, without the prefix. */
  marked(key: string): string[] {
    const p = `pinion-guest: ${key} `;
    return this.lines.filter((l) => l.text.startsWith(p)).map((l) => l.text.slice(p.length));
  }

  console(): string {
    return this.lines.map((l) => l.text).join('\n');
  }

  /** The VMM process's memory now (kB): resident, locked and pinned, and how much of the resident set is
   * guest RAM (the mapping of the guest's RAM size, one memfd or anonymous region in both VMMs; the runtime's
   * larger reservations, V8's heap cage among them, are not it). */
  memory(): { rssKiB: number; guestRamRssKiB: number; guestRamHugeKiB: number; vmLckKiB: number; vmPinKiB: number } {
    const s = readFileSync(`/proc/${this.proc.pid}/status`, 'utf8');
    const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? 0);
    const ramKiB = GUEST_MEMORY_MIB * 1024;
    let guestRamRssKiB = 0;
    let guestRamHugeKiB = 0;
    let size = 0;
    for (const l of readFileSync(`/proc/${this.proc.pid}/smaps`, 'utf8').split('\n')) {
      const m = /^(Size|Rss|AnonHugePages|ShmemPmdMapped):\s+(\d+) kB/.exec(l);
      const ram = size >= ramKiB && size <= ramKiB + 4096;
      if (m?.[1] === 'Size') size = Number(m[2]);
      else if (m?.[1] === 'Rss' && ram) guestRamRssKiB = Math.max(guestRamRssKiB, Number(m[2]));
      // Mapped with 2 MiB page-table entries: anonymous THP (QEMU) or shmem THP (memfd).
      else if (m && ram) guestRamHugeKiB = Math.max(guestRamHugeKiB, Number(m[2]));
    }
    return { rssKiB: kb('VmRSS'), guestRamRssKiB, guestRamHugeKiB, vmLckKiB: kb('VmLck'), vmPinKiB: kb('VmPin') };
  }

  /** KVM's counters for this VMM's VM (debugfs, summed over its vCPUs), the same source for both VMMs. */
  kvmStats(): KvmStats {
    const dir = this.kvmDir();
    const n = (f: string): number => this.kvmStat(f, dir);
    return { exits: n('exits'), ioExits: n('io_exits'), mmioExits: n('mmio_exits'), haltExits: n('halt_exits'), irqExits: n('irq_exits') };
  }

  /** One of KVM's debugfs counters for this VM (0 where the kernel has no such file). */
  kvmStat(name: string, dir = this.kvmDir()): number {
    return existsSync(join(dir, name)) ? Number(readFileSync(join(dir, name), 'utf8')) : 0;
  }

  private kvmDir(): string {
    const root = '/sys/kernel/debug/kvm';
    const dir = readdirSync(root).find((d) => d.startsWith(`${this.proc.pid}-`));
    if (!dir) throw new Error(`no KVM debugfs directory for pid ${this.proc.pid} under ${root}`);
    return join(root, dir);
  }

  /** KVM's counters for this VM as one line (for silence reports). */
  private kvmCounters(): string {
    try {
      const s = this.kvmStats();
      return (
        Object.entries(s)
          .map(([k, v]) => `${k}=${v}`)
          .join(' ') + ` haltWakeups=${this.kvmStat('halt_wakeup')} irqInjections=${this.kvmStat('irq_injections')}`
      );
    } catch (e) {
      return (e as Error).message;
    }
  }

  kill(): void {
    this.proc.kill('SIGKILL');
  }
}

/** Each thread of a process: state and kernel wait channel. */
export function threadStates(pid: number): string {
  const r = spawnSync('ps', ['-L', '-o', 'tid,stat,wchan:32,comm', '-p', String(pid)], { encoding: 'utf8' });
  return r.stdout || `(no process ${pid})\n`;
}

export interface KvmStats {
  exits: number;
  /** Exits KVM hands to the VMM in userspace: port I/O and MMIO it does not handle itself. */
  ioExits: number;
  mmioExits: number;
  haltExits: number;
  irqExits: number;
}

export function statsDelta(a: KvmStats, b: KvmStats): KvmStats {
  return {
    exits: b.exits - a.exits,
    ioExits: b.ioExits - a.ioExits,
    mmioExits: b.mmioExits - a.mmioExits,
    haltExits: b.haltExits - a.haltExits,
    irqExits: b.irqExits - a.irqExits,
  };
}

/** L1's side of the hub: the peer igb up at PEER_IP. Returns its interface name. */
export function peerUp(): string {
  const peer = peerPf().bdf;
  const ifname = readdirSync(`/sys/bus/pci/devices/${peer}/net`)[0]!;
  spawnSync('ip', ['link', 'set', ifname, 'up']);
  spawnSync('ip', ['addr', 'replace', `${PEER_IP}/24`, 'dev', ifname]);
  return ifname;
}

export function peerPackets(ifname: string): number {
  const s = (k: string): number => Number(readFileSync(`/sys/class/net/${ifname}/statistics/${k}`, 'utf8'));
  return s('rx_packets') + s('tx_packets');
}

/** `n` VFs of the assignable PF bound to vfio-pci (the PF stays with igb, which answers the VFs' mailbox while up). */
export function vfsForGuests(n: number): { pf: string; vfs: string[] } {
  const pf = assignablePf().bdf;
  spawnSync('ip', ['link', 'set', readdirSync(`/sys/bus/pci/devices/${pf}/net`)[0]!, 'up']);
  return { pf, vfs: createVfs(pf, n).map((b) => bindVfio(b).bdf) };
}

/** The PF itself bound to vfio-pci (its VFs removed first). */
export function pfForGuest(): string {
  const pf = assignablePf().bdf;
  createVfs(pf, 0);
  return bindVfio(pf).bdf;
}
