// Runs in L1: kernel fault injection over pin-core's sequences and the VMM's
// device attach, swept the way iommufd's own fail_nth selftest sweeps its
// ioctls: each sequence runs once clean, then with /proc/thread-self/fail-nth
// = 1, 2, ... until it runs without reaching the nth injection point. Every
// injected failure must surface as a typed error (errno name and operation)
// or be absorbed by the kernel; pin-core's table must then match what the
// kernel has mapped (the bytes an unmap-all removes); after close VmLck,
// VmPin and the open fds are back at baseline. Injection points are
// failslab (every slab allocation, sleeping ones included) and iommufd's own
// fail_iommufd; guest memory is populated beforehand, so pinning allocates
// no pages. As root it sets the debugfs knobs and reruns itself as uid 1000
// with a 64 MiB RLIMIT_MEMLOCK, the way an unprivileged VMM runs.
// Usage: fail-nth.js SEQUENCE...   (one JSON line per sequence)
import { closeSync, existsSync, openSync, readdirSync, readlinkSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { pinCore, type BackendHandle, type Backing, type PinCoreError, type Region } from '../../src/memory/pin-core.js';
import { processCharge } from '../../src/memlock/status.js';
import { VfioGroup } from '../../src/devices/vfio/group.js';
import { VfioCdev } from '../../src/devices/vfio/cdev.js';
import { regionInfo } from '../../src/devices/vfio/region.js';
import { closeFd, eventFd, ioctl } from '../../src/sys/libc.js';
import * as V from '../../src/sys/vfio.js';
import { rerunAsUser, vfForUser, type UserVf } from './as-user.js';
import { dmesg, kernelWarnings } from './stream-vm.js';

const MiB = 1n << 20n;
const IOVA = 0x1000000n;
// "High" RAM inside the mock domain's aperture (16 MiB to 2 GiB).
const HIGH = 0x40000000n;
const MEMLOCK_BYTES = 64 * 1024 * 1024;
// iommufd's selftest allows 1000; a sequence that needs more has grown, and says so.
const MAX_POINTS = 2000;
const rw = { read: true, write: true };

/**
 * What one run of a sequence opened: its backend handle, and what closes the rest (last first). `table`: the
 * sequence maps through pin-core's table (sync, VADDR hand-over), which is then checked against the kernel; raw
 * map/unmap/copy calls bypass the table by design.
 */
interface Run {
  h: BackendHandle | null;
  table: boolean;
  close: (() => void)[];
}

interface Memory {
  anon: { vaddr: bigint };
  memfd: { vaddr: bigint; fd: number };
}

type Sequence = (r: Run, m: Memory, dev: UserVf) => void;

function iommufd(r: Run): BackendHandle {
  r.h = pinCore.iommufdOpen('/dev/iommu', -1);
  return r.h;
}

function type1(r: Run, dev: UserVf): { h: BackendHandle; group: VfioGroup } {
  r.h = pinCore.type1Open('/dev/vfio/vfio', -1);
  const group = VfioGroup.open(dev.group);
  r.close.push(() => group.close());
  group.joinContainer(pinCore.backendFd(r.h));
  pinCore.type1SetIommu(r.h, false);
  return { h: r.h, group };
}

/** pin-core's sync of `layout` ([iova, size, backing]...): the path the VMM maps RAM by, through the table. */
function sync(r: Run, layout: [bigint, bigint, Backing][]): void {
  r.table = true;
  const regions: Region[] = layout.map(([iova, size, backing]) => ({ iova, size, backing, prot: rw }));
  pinCore.sync(r.h!, regions, null);
}

const SEQUENCES: Record<string, Sequence> = {
  // The legacy container (type1, or iommufd's compat container): join, set the IOMMU, map, open the device, unmap.
  container(r, m, dev) {
    const { h, group } = type1(r, dev);
    pinCore.map(h, IOVA, 2n * MiB, { vaddr: m.anon.vaddr }, rw);
    const fd = group.deviceFd(dev.bdf);
    r.close.push(() => closeFd(fd));
    pinCore.unmap(h, IOVA, 2n * MiB);
  },
  // iommufd with the kernel's mock domain: map, attach (pins), map a memfd by file, copy, unmap.
  'iommufd-mock'(r, m) {
    const h = iommufd(r);
    pinCore.map(h, IOVA, 2n * MiB, { vaddr: m.anon.vaddr }, rw);
    pinCore.iommufdMockDomain(h);
    pinCore.map(h, IOVA + 4n * MiB, 2n * MiB, { fd: m.memfd.fd, offset: 0n }, rw);
    pinCore.copy(h, IOVA, IOVA + 8n * MiB, 2n * MiB);
    pinCore.unmap(h, IOVA + 4n * MiB, 2n * MiB);
  },
  // iommufd with the VF behind the emulated Intel IOMMU: bind, attach, map.
  'iommufd-vf'(r, m, dev) {
    const h = iommufd(r);
    const cdev = VfioCdev.bind(dev.cdev, pinCore.backendFd(h));
    r.close.push(() => cdev.close());
    cdev.attach(pinCore.iommufdIoasId(h));
    sync(r, [
      [IOVA, 2n * MiB, { vaddr: m.anon.vaddr }],
      [IOVA + 4n * MiB, 2n * MiB, { fd: m.memfd.fd, offset: 0n }],
    ]);
  },
  // A full sync plan on the mock domain: low and high RAM, then a transient remap (one region moves, one goes).
  'sync-plan'(r, m) {
    const h = iommufd(r);
    pinCore.iommufdMockDomain(h);
    const anon = (off: bigint): Backing => ({ vaddr: m.anon.vaddr + off });
    const file = (off: bigint): Backing => ({ fd: m.memfd.fd, offset: off });
    sync(r, [
      [IOVA, 2n * MiB, anon(0n)],
      [IOVA + 2n * MiB, 2n * MiB, anon(2n * MiB)],
      [HIGH, 2n * MiB, file(0n)],
    ]);
    sync(r, [
      [IOVA, 2n * MiB, anon(0n)],
      [HIGH + 4n * MiB, 2n * MiB, file(0n)],
    ]);
  },
  // A live update's hand-over on the legacy container: every vaddr invalidated, then supplied again.
  'update-vaddr'(r, m, dev) {
    const { h } = type1(r, dev);
    sync(r, [
      [IOVA, 2n * MiB, { vaddr: m.anon.vaddr }],
      [IOVA + 2n * MiB, 2n * MiB, { vaddr: m.anon.vaddr + 2n * MiB }],
    ]);
    pinCore.type1InvalidateVaddrs(h);
    pinCore.type1SetVaddrs(h);
  },
  // iommufd's hand-over: file-backed mappings' charge moved to the calling process.
  'change-process'(r, m) {
    const h = iommufd(r);
    pinCore.iommufdMockDomain(h);
    sync(r, [[IOVA, 2n * MiB, { fd: m.memfd.fd, offset: 0n }]]);
    pinCore.iommufdChangeProcess(h);
  },
  // The VMM's device attach on the container: regions, interrupts (MSI-X on eventfds, then off), reset.
  'device-attach'(r, m, dev) {
    const { group } = type1(r, dev);
    const fd = group.deviceFd(dev.bdf);
    r.close.push(() => closeFd(fd));
    const info = V.vfio_device_info.make();
    ioctl(fd, V.VFIO_DEVICE_GET_INFO, info, 'VFIO_DEVICE_GET_INFO', { path: dev.group });
    // BARs, ROM and config space: the regions every PCI function has (VGA and the rest are optional).
    const n = Math.min(V.vfio_device_info.num_regions(info), V.VFIO_PCI_CONFIG_REGION_INDEX + 1);
    for (let i = 0; i < n; i++) regionInfo(fd, i, dev.group);
    const irq = V.vfio_irq_info.make(V.VFIO_PCI_MSIX_IRQ_INDEX);
    ioctl(fd, V.VFIO_DEVICE_GET_IRQ_INFO, irq, 'VFIO_DEVICE_GET_IRQ_INFO', { path: dev.group });
    const fds = Array.from({ length: Math.min(3, V.vfio_irq_info.count(irq)) }, () => {
      const e = eventFd();
      r.close.push(() => closeFd(e));
      return e;
    });
    const trigger = V.VFIO_IRQ_SET_ACTION_TRIGGER;
    const msix = V.VFIO_PCI_MSIX_IRQ_INDEX;
    ioctl(fd, V.VFIO_DEVICE_SET_IRQS, V.vfio_irq_set(V.VFIO_IRQ_SET_DATA_EVENTFD | trigger, msix, 0, fds), 'VFIO_DEVICE_SET_IRQS(MSI-X)', {
      path: dev.group,
    });
    ioctl(fd, V.VFIO_DEVICE_SET_IRQS, V.vfio_irq_set(V.VFIO_IRQ_SET_DATA_NONE | trigger, msix, 0, []), 'VFIO_DEVICE_SET_IRQS(MSI-X off)', {
      path: dev.group,
    });
    ioctl(fd, V.VFIO_DEVICE_RESET, 0, 'VFIO_DEVICE_RESET', { path: dev.group });
  },
};

interface Baseline {
  fds: number;
  vmLckKiB: number;
  vmPinKiB: number;
}

const baseline = (): Baseline => {
  const c = processCharge();
  return { fds: readdirSync('/proc/self/fd').length, vmLckKiB: c.vmLckKiB, vmPinKiB: c.vmPinKiB };
};

/** Closes what a run opened, last first, and says what failed to close: a close never fails silently. */
function teardown(r: Run, problems: string[], at: string): void {
  for (const f of r.close.reverse()) {
    try {
      f();
    } catch (e) {
      problems.push(`${at}: close failed: ${(e as Error).message}`);
    }
  }
  if (r.h !== null) pinCore.close(r.h);
}

/** pin-core's table against the kernel: the bytes an unmap-all removes are the bytes the table holds. */
function tableExact(h: BackendHandle): string | undefined {
  const held = pinCore.table(h).reduce((s, x) => s + x.size, 0n);
  try {
    const removed = pinCore.unmapAll(h);
    if (removed !== held) return `table holds 0x${held.toString(16)} bytes, the kernel unmapped 0x${removed.toString(16)}`;
  } catch (e) {
    // A container whose IOMMU was never set maps nothing, and refuses the unmap.
    if (held !== 0n) return `table holds 0x${held.toString(16)} bytes, unmap-all failed: ${(e as Error).message}`;
  }
  return undefined;
}

/** A failure the caller can act on: an errno name and the operation, never pin-core's own bug or a bare Error. */
function untyped(e: unknown): string | undefined {
  const err = e as PinCoreError;
  if (typeof err?.code !== 'string' || !/^E[A-Z0-9]+$/.test(err.code)) return `untyped error: ${String((e as Error)?.stack ?? e)}`;
  if (err.code === 'EPANIC' || err.code === 'EBADFD') return `pin-core bug: ${err.message}`;
  if (!err.op && !/failed/.test(err.message)) return `error names no operation: ${err.message}`;
  return undefined;
}

function nth(fd: number, value: number | undefined): number {
  if (value !== undefined) writeSync(fd, String(value), 0);
  const buf = Buffer.alloc(32);
  const n = readSync(fd, buf, 0, buf.length, 0);
  return Number(buf.subarray(0, n).toString().trim());
}

export interface Swept {
  sequence: string;
  points: number;
  failed: number;
  absorbed: number;
  errors: Record<string, number>;
  problems: string[];
}

function sweep(name: string, seq: Sequence, m: Memory, dev: UserVf): Swept {
  const out: Swept = { sequence: name, points: 0, failed: 0, absorbed: 0, errors: {}, problems: [] };
  const once = (inject: number | undefined): { error?: unknown; fired: boolean } => {
    const r: Run = { h: null, table: false, close: [] };
    const base = baseline();
    const at = inject === undefined ? 'clean run' : `nth ${inject}`;
    const fd = openSync('/proc/thread-self/fail-nth', 'r+');
    let error: unknown;
    let fired = false;
    try {
      if (inject !== undefined) nth(fd, inject);
      try {
        seq(r, m, dev);
      } catch (e) {
        error = e;
      }
      if (inject !== undefined) {
        // 0 left: the nth point was reached and failed. Writing 0 turns injection off either way.
        fired = nth(fd, undefined) === 0;
        nth(fd, 0);
      }
    } finally {
      closeSync(fd);
    }
    if (r.h !== null && r.table) {
      const wrong = tableExact(r.h);
      if (wrong) out.problems.push(`${at}: ${wrong}`);
    }
    teardown(r, out.problems, at);
    const after = baseline();
    for (const k of ['fds', 'vmLckKiB', 'vmPinKiB'] as const)
      if (after[k] !== base[k]) out.problems.push(`${at}: ${k} ${base[k]} -> ${after[k]} after close`);
    return { error, fired };
  };
  const clean = once(undefined);
  if (clean.error) {
    out.problems.push(`the clean run failed: ${(clean.error as Error).message}`);
    return out;
  }
  let said = Date.now();
  for (let n = 1; n <= MAX_POINTS; n++) {
    // Device resets sleep: a long sweep is an idle L1, so it says how far it got.
    if (Date.now() - said > 10_000 || process.env.FAIL_NTH_VERBOSE) {
      process.stderr.write(`fail-nth: ${name}: nth ${n}\n`);
      said = Date.now();
    }
    const { error, fired } = once(n);
    if (!fired) {
      if (error) out.problems.push(`nth ${n}: failed with no injection: ${(error as Error).message}`);
      out.points = n - 1;
      return out;
    }
    if (!error) {
      out.absorbed++;
      continue;
    }
    out.failed++;
    const why = untyped(error);
    if (why) out.problems.push(`nth ${n}: ${why}`);
    const err = error as PinCoreError;
    const key = `${err.code} ${err.op ?? err.message.split(' failed')[0]}`;
    out.errors[key] = (out.errors[key] ?? 0) + 1;
  }
  out.problems.push(`more than ${MAX_POINTS} injection points`);
  return out;
}

// register_irq_proc ignores a failed proc_create under /proc/irq/N, and unregister_irq_proc then removes the
// entry anyway: remove_proc_entry WARNs "name '<entry>'". An injected allocation failure while vfio-pci enables
// MSI-X leaves such an entry out, so disabling MSI-X warns. The IRQ core's defect, told apart and counted.
const IRQ_PROC_ENTRY = /name '(smp_affinity|smp_affinity_list|affinity_hint|effective_affinity|effective_affinity_list|node|spurious)'/;

/**
 * L1's WARN/BUG/oops lines, the IRQ core's proc-entry WARN counted apart: its WARNING line (after the entry's
 * name) and its Call Trace (through unregister_irq_proc). Lines, not blocks: two CPUs' traces interleave.
 */
function splats(log: string[]): { kernelWarnings: string[]; irqProcWarnings: number } {
  const out = { kernelWarnings: [] as string[], irqProcWarnings: 0 };
  log.forEach((line, i) => {
    if (!kernelWarnings([line]).length) return;
    const before = log.slice(Math.max(0, i - 2), i).join('\n');
    const after = log.slice(i + 1, i + 9).join('\n');
    if (/WARNING:.*remove_proc_entry/.test(line) && IRQ_PROC_ENTRY.test(before)) out.irqProcWarnings++;
    else if (!(/Call Trace/.test(line) && /unregister_irq_proc/.test(after)))
      out.kernelWarnings.push(log.slice(Math.max(0, i - 3), i + 1).join(' | '));
  });
  return out;
}

/** Every slab allocation may fail (sleeping ones too, as the selftest sets it), and the injections stay quiet. */
function setUpInjection(): void {
  const dbg = '/sys/kernel/debug';
  if (!existsSync(`${dbg}/failslab`)) spawnSync('mount', ['-t', 'debugfs', 'none', dbg]);
  if (!existsSync(`${dbg}/failslab`))
    throw new Error(`${dbg}/failslab missing: the rig kernel needs CONFIG_FAILSLAB and FAULT_INJECTION_DEBUG_FS`);
  if (!existsSync(`${dbg}/fail_iommufd`)) throw new Error(`${dbg}/fail_iommufd missing: the rig kernel needs CONFIG_IOMMUFD_TEST`);
  writeFileSync(`${dbg}/failslab/ignore-gfp-wait`, 'N');
  for (const d of readdirSync(dbg))
    if (d.startsWith('fail') && existsSync(`${dbg}/${d}/verbose`)) writeFileSync(`${dbg}/${d}/verbose`, '0');
}

function main(): void {
  if (process.argv[2] !== '--as-user') {
    const names = process.argv.slice(2);
    const unknown = names.filter((n) => !(n in SEQUENCES));
    if (unknown.length) throw new Error(`unknown sequence ${unknown.join(', ')}: use ${Object.keys(SEQUENCES).join(', ')}`);
    setUpInjection();
    const dev = vfForUser();
    process.exitCode =
      rerunAsUser(fileURLToPath(import.meta.url), MEMLOCK_BYTES, ['--as-user', JSON.stringify(dev), ...names], 'inherit').status ?? 1;
    // The kernel's side: no splat from any error path but the one of the IRQ core, and the VF still on vfio-pci.
    const driver = readlinkSync(`/sys/bus/pci/devices/${dev.bdf}/driver`).split('/').pop();
    console.log(JSON.stringify({ ...splats(dmesg()), driver }));
    return;
  }
  const dev = JSON.parse(process.argv[3]!) as UserVf;
  const m: Memory = { anon: pinCore.memAlloc('anon', 4n * MiB), memfd: pinCore.memAlloc('memfd', 2n * MiB) };
  pinCore.memPopulate(m.anon.vaddr, 4n * MiB, 1);
  pinCore.memPopulate(m.memfd.vaddr, 2n * MiB, 1);
  for (const name of process.argv.slice(4)) {
    const started = Date.now();
    const r = sweep(name, SEQUENCES[name]!, m, dev);
    console.log(JSON.stringify({ ...r, ms: Date.now() - started }));
  }
}

main();
