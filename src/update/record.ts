// The live-update record the old process writes before the pause: a header
// (magic, version, who wrote it), the list of fds passed beside it with the
// kind of each, how the VM was made, where its RAM is (regions on memfds, by
// index in the fd list), the vCPUs' CPUID, and the control API's own view
// (its change log, and what the guest was told through the memory-hotplug
// mailbox).
// The new process sets up from it while the guest still runs; what changes
// while it runs comes at the pause (state.ts). Fields that name an fd hold
// its index in `fds`; decodeRecord checks each points at an fd of the kind
// it needs.
import { GUEST_VIEWS, type GuestView } from '../api/routes.js';
import { HOTPLUG_KINDS, type HotplugKind } from '../devices/mem-hotplug.js';
import { RAM_BACKENDS, type RamBackend } from '../memory/guest-ram.js';
import type { ImageConfig, MachineImage, RegionImage } from '../machine/handover.js';
import type { DevicesImage } from '../machine/assignment.js';
import type { BarAt } from '../devices/vfio/saved.js';
import { DECOMPRESS } from '../vmm/vmlinux.js';
import { base64, blob, Fields, hex64, RecordError, type Json } from './wire.js';

export const RECORD_MAGIC = 'pinion-live-update';
/** Bumped whenever a field changes meaning, appears or goes: a reader takes its own version only. */
export const RECORD_VERSION = 3;

export const FD_KINDS = [
  'kvm',
  'memfd',
  'console',
  'api-socket',
  'update-token',
  'vfio-container',
  'iommufd',
  'vfio-group',
  'vfio-device',
  'eventfd',
] as const;
export type FdKind = (typeof FD_KINDS)[number];

export interface FdEntry {
  kind: FdKind;
  /** What it is, for messages (`ram-low`, `/dev/kvm`). */
  name: string;
}

/** The control API's own view, which the next process's API goes on with. */
export interface ControlRecord {
  /** When the first process started (ms since the epoch): uptime runs on. */
  startedAt: number;
  changes: number;
  /** Each change, and what the guest did about it. */
  log: { at: string; summary: string; guest: string }[];
  /** Held by vm.pause: the next process keeps the guest paused. */
  paused: boolean;
  /**
   * Per RAM region (by gpa): made at boot or by a memory change, its backend,
   * whether the API allocated its backing, and what the guest knows of it.
   */
  regions: { gpa: bigint; origin: 'boot' | 'api'; backend: RamBackend; ownBacking: boolean; guest: GuestView }[];
  /** The hotplug event posted and not acked yet, for a region in `regions`: its ack may still come, to the next process. */
  posted?: { generation: number; gpa: bigint; kind: HotplugKind };
}

export interface UpdateRecord {
  /** The old process and the build it ran (its entry script), for messages. */
  from: { pid: number; build: string };
  fds: FdEntry[];
  /** Who owns the VM at the end (token.ts). */
  token: number;
  /** MachineImage with fd indices in kvmFd, consoleFd and backings[].fd. */
  machine: MachineImage;
  api?: { path: string; socket: number; control: ControlRecord };
}

/** Limits on what a record may hold: well past any real VM, short of what a corrupt one could claim. */
const MAX = { fds: 1024, regions: 512, vcpus: 64, cpuidBytes: 8 + 256 * 40, log: 64, devices: 32, dma: 65536 };

/**
 * The record and the fds to pass beside it, in list order. The image holds
 * this process's fd numbers; the record holds their indices.
 */
export function buildRecord(
  image: MachineImage,
  from: UpdateRecord['from'],
  tokenFd: number,
  api?: { path: string; fd: number; control: ControlRecord },
): { record: UpdateRecord; fds: number[] } {
  const fds: number[] = [];
  const entries: FdEntry[] = [];
  const add = (fd: number, kind: FdKind, name: string): number => {
    fds.push(fd);
    return entries.push({ kind, name }) - 1;
  };
  const token = add(tokenFd, 'update-token', 'the hand-over token');
  const kvmFd = add(image.kvmFd, 'kvm', '/dev/kvm');
  const consoleFd = add(image.consoleFd, 'console', 'guest console');
  const backings = image.backings.map((b, i) => ({
    fd: add(b.fd, 'memfd', image.regions.find((r) => r.backing === i)?.name ?? `backing ${i}`),
  }));
  const machine: MachineImage = { ...image, kvmFd, consoleFd, backings };
  const d = image.devices;
  if (d) {
    const iommu = {
      ...d.iommu,
      fd: add(
        d.iommu.fd,
        d.iommu.kind === 'iommufd' ? 'iommufd' : 'vfio-container',
        d.iommu.kind === 'iommufd' ? '/dev/iommu' : '/dev/vfio/vfio',
      ),
      groups: d.iommu.groups.map((g) => ({ group: g.group, fd: add(g.fd, 'vfio-group', `/dev/vfio/${g.group}`) })),
    };
    const list = d.list.map((x) => ({ ...x, fd: add(x.fd, 'vfio-device', x.bdf) }));
    const eventfds = d.eventfds.map((fd, i) => add(fd, 'eventfd', `MSI-X vector ${i}`));
    machine.devices = { ...d, iommu, list, eventfds };
  }
  const record: UpdateRecord = { from, fds: entries, token, machine };
  if (api) record.api = { path: api.path, socket: add(api.fd, 'api-socket', api.path), control: api.control };
  return { record, fds };
}

/** The image with this process's fds: index i of the list is `fdOf(i)`. */
export function imageOf(r: UpdateRecord, fdOf: (index: number) => number): MachineImage {
  const m = r.machine;
  const d = m.devices;
  return {
    ...m,
    kvmFd: fdOf(m.kvmFd),
    consoleFd: fdOf(m.consoleFd),
    backings: m.backings.map((b) => ({ fd: fdOf(b.fd) })),
    ...(d
      ? {
          devices: {
            ...d,
            iommu: { ...d.iommu, fd: fdOf(d.iommu.fd), groups: d.iommu.groups.map((g) => ({ ...g, fd: fdOf(g.fd) })) },
            list: d.list.map((x) => ({ ...x, fd: fdOf(x.fd) })),
            eventfds: d.eventfds.map(fdOf),
          },
        }
      : {}),
  };
}

export function encodeRecord(r: UpdateRecord): Json {
  const m = r.machine;
  return {
    magic: RECORD_MAGIC,
    version: RECORD_VERSION,
    from: r.from,
    fds: r.fds.map((f) => ({ kind: f.kind, name: f.name })),
    token: r.token,
    machine: {
      config: encodeConfig(m.config),
      kvm: m.kvmFd,
      console: m.consoleFd,
      backings: m.backings.map((b) => ({ fd: b.fd })),
      regions: m.regions.map((g) => ({
        name: g.name,
        gpa: hex64(g.gpa),
        size: hex64(g.size),
        backing: g.backing,
        offset: hex64(g.offset),
        readonly: g.readonly,
      })),
      cpuid: m.cpuid.map(base64),
      ...(m.devices ? { devices: encodeDevices(m.devices) } : {}),
    },
    ...(r.api
      ? {
          api: {
            path: r.api.path,
            socket: r.api.socket,
            control: encodeControl(r.api.control),
          },
        }
      : {}),
  };
}

/**
 * Checks the header, then every field. A record from another version is
 * refused before anything else is read: its fields may mean other things.
 */
export function decodeRecord(j: unknown): UpdateRecord {
  const f = Fields.of(j, 'record');
  checkHeader(f);
  const f2 = f.obj('from');
  const from = { pid: f2.int('pid', 1, 2 ** 31), build: f2.str('build', 4096) };
  f2.done();
  const fds = f.list('fds', MAX.fds, (v, p) => {
    const e = Fields.of(v, p);
    const fd = { kind: e.oneOf('kind', FD_KINDS), name: e.str('name', 256) };
    e.done();
    return fd;
  });
  const fdRef = (x: Fields, k: string, kind: FdKind): number => {
    const i = x.int(k, 0, MAX.fds);
    const e = fds[i];
    if (!e) throw new RecordError(`${x.at(k)}: fd ${i} is not in the record's fd list (${fds.length} fds)`);
    if (e.kind !== kind) throw new RecordError(`${x.at(k)}: fd ${i} (${e.name}) is ${e.kind}, not ${kind}`);
    return i;
  };
  const r: UpdateRecord = { from, fds, token: fdRef(f, 'token', 'update-token'), machine: decodeMachine(f.obj('machine'), fdRef) };
  const api = f.optional('api', (x, k) => x.obj(k));
  if (api) {
    r.api = { path: api.str('path', 107), socket: fdRef(api, 'socket', 'api-socket'), control: decodeControl(api.obj('control')) };
    api.done();
  }
  f.done();
  const devs = r.machine.devices;
  const used = new Set([
    r.token,
    r.machine.kvmFd,
    r.machine.consoleFd,
    ...r.machine.backings.map((b) => b.fd),
    ...(r.api ? [r.api.socket] : []),
    ...(devs ? [devs.iommu.fd, ...devs.iommu.groups.map((g) => g.fd), ...devs.list.map((d) => d.fd), ...devs.eventfds] : []),
  ]);
  const unused = r.fds.findIndex((_, i) => !used.has(i));
  if (unused >= 0) throw new RecordError(`record.fds[${unused}]: ${r.fds[unused]!.name} is passed but nothing in the record uses it`);
  return r;
}

/** The magic and version every part of a live update starts with. */
export function checkHeader(f: Fields): void {
  const magic = f.str('magic', 64);
  if (magic !== RECORD_MAGIC) throw new RecordError(`${f.path}: not a live-update record (magic '${magic}')`);
  const version = f.int('version', 0, 2 ** 31);
  if (version !== RECORD_VERSION)
    throw new RecordError(
      `${f.path}: version ${version}, this Pinion reads version ${RECORD_VERSION}; hand over to a build that reads version ${version} (pinion ctl PATH update --to COMMAND)`,
    );
}

function encodeDevices(d: DevicesImage): Json {
  return {
    iommu: {
      kind: d.iommu.kind,
      fd: d.iommu.fd,
      ...(d.iommu.ioas === undefined ? {} : { ioas: d.iommu.ioas }),
      groups: d.iommu.groups.map((g) => ({ ...g })),
    },
    list: d.list.map((x) => ({ ...x, bars: x.bars.map((b) => ({ bar: b.bar, address: hex64(b.address) })) })),
    dma: d.dma.map((m) => ({ ...m, iova: hex64(m.iova), size: hex64(m.size), offset: hex64(m.offset) })),
    eventfds: [...d.eventfds],
  };
}

/** A BAR's place, as the record and the state both carry it. */
export function decodeBarAt(v: unknown, path: string): BarAt {
  const b = Fields.of(v, path);
  const at = { bar: b.int('bar', 0, 5), address: b.u64('address') };
  b.done();
  return at;
}

function decodeDevices(d: Fields, fdRef: (x: Fields, k: string, kind: FdKind) => number, backings: number): DevicesImage {
  const i = d.obj('iommu');
  const kind = i.oneOf('kind', ['legacy', 'iommufd'] as const);
  const ioas = i.optional('ioas', (x, k) => x.int(k, 0, 2 ** 32 - 1));
  if ((ioas === undefined) !== (kind === 'legacy'))
    throw new RecordError(`${i.path}: ${kind === 'iommufd' ? 'an iommufd needs its IOAS id' : 'a container has no IOAS'}`);
  const groups = i.list('groups', MAX.devices, (v, p) => {
    const g = Fields.of(v, p);
    const out = { group: g.str('group', 32), fd: fdRef(g, 'fd', 'vfio-group') };
    g.done();
    if (!/^(noiommu-)?\d+$/.test(out.group)) throw new RecordError(`${g.at('group')}: '${out.group}' is not a VFIO group number`);
    return out;
  });
  if (kind === 'iommufd' && groups.length) throw new RecordError(`${i.at('groups')}: iommufd devices come without groups`);
  const iommu = {
    kind,
    fd: fdRef(i, 'fd', kind === 'iommufd' ? 'iommufd' : 'vfio-container'),
    ...(ioas === undefined ? {} : { ioas }),
    groups,
  };
  i.done();
  const list = d.list('list', MAX.devices, (v, p) => {
    const x = Fields.of(v, p);
    const dev = {
      bdf: x.str('bdf', 16),
      fd: fdRef(x, 'fd', 'vfio-device'),
      slot: x.int('slot', 1, 31),
      bars: x.list('bars', 6, decodeBarAt),
    };
    x.done();
    return dev;
  });
  const dma = d.list('dma', MAX.dma, (v, p) => {
    const x = Fields.of(v, p);
    const m = {
      iova: x.u64('iova'),
      size: x.u64('size'),
      backing: x.int('backing', 0, backings - 1),
      offset: x.u64('offset'),
      byFile: x.bool('byFile'),
      write: x.bool('write'),
    };
    x.done();
    if (m.size === 0n) throw new RecordError(`${p}.size: 0`);
    return m;
  });
  const eventfds = d.list('eventfds', MAX.fds, (v, p) => {
    const x = Fields.of({ fd: v }, p);
    return fdRef(x, 'fd', 'eventfd');
  });
  d.done();
  return { iommu, list, dma, eventfds };
}

function decodeMachine(m: Fields, fdRef: (x: Fields, k: string, kind: FdKind) => number): MachineImage {
  const config = decodeConfig(m.obj('config'));
  const kvmFd = fdRef(m, 'kvm', 'kvm');
  const consoleFd = fdRef(m, 'console', 'console');
  const backings = m.list('backings', MAX.fds, (v, p) => {
    const b = Fields.of(v, p);
    const fd = fdRef(b, 'fd', 'memfd');
    b.done();
    return { fd };
  });
  const regions = m.list('regions', MAX.regions, (v, p): RegionImage => {
    const g = Fields.of(v, p);
    const region = {
      name: g.str('name', 64),
      gpa: g.u64('gpa'),
      size: g.u64('size'),
      backing: g.int('backing', 0, backings.length - 1),
      offset: g.u64('offset'),
      readonly: g.bool('readonly'),
    };
    g.done();
    if (region.size === 0n) throw new RecordError(`${p}.size: 0`);
    return region;
  });
  const cpuid = m.list('cpuid', MAX.vcpus, (v, p) => {
    const b = blob(v, p, 8, 'kvm_cpuid2', true);
    const nent = b.readUInt32LE(0);
    if (b.length > MAX.cpuidBytes || b.length !== 8 + nent * 40)
      throw new RecordError(`${p}: ${b.length} bytes, kvm_cpuid2 with ${nent} entries is ${8 + nent * 40}`);
    return b;
  });
  const devices = m.optional('devices', (x, k) => decodeDevices(x.obj(k), fdRef, backings.length));
  m.done();
  if (cpuid.length !== config.cpus) throw new RecordError(`record.machine.cpuid: ${cpuid.length} vCPUs, the config has ${config.cpus}`);
  return { config, kvmFd, consoleFd, backings, regions, cpuid, ...(devices ? { devices } : {}) };
}

function encodeConfig(c: ImageConfig): Json {
  return JSON.parse(JSON.stringify({ ...c, memory: hex64(c.memory) })) as Json;
}

function decodeConfig(c: Fields): ImageConfig {
  const out: ImageConfig = {
    memory: c.u64('memory'),
    cpus: c.int('cpus', 1, MAX.vcpus),
    backend: c.oneOf('backend', RAM_BACKENDS),
    cmdline: c.str('cmdline'),
  };
  const str = (x: Fields, k: string): string => x.str(k);
  out.payload = c.optional('payload', str);
  out.memoryArg = c.optional('memoryArg', str);
  out.kvmPath = c.optional('kvmPath', str);
  out.openerHint = c.optional('openerHint', str);
  out.iommu = c.optional('iommu', (x, k) => x.oneOf(k, ['auto', 'legacy', 'iommufd'] as const));
  out.devices = c.optional('devices', (x, k) =>
    x.list(k, MAX.devices, (v, p) => {
      if (typeof v !== 'string' || v.length > 64) throw new RecordError(`${p}: not a PCI address`);
      return v;
    }),
  );
  out.linux = c.optional('linux', (x, k) => {
    const l = x.obj(k);
    const linux = {
      kernel: l.str('kernel'),
      initrd: l.optional('initrd', str),
      decompress: l.optional('decompress', (y, kk) => y.oneOf(kk, DECOMPRESS)),
    };
    l.done();
    return linux;
  });
  c.done();
  if ((out.payload === undefined) === (out.linux === undefined))
    throw new RecordError(`${c.path}: boots ${out.payload === undefined ? 'nothing' : 'both a payload and Linux'}`);
  // Optional fields that were absent stay absent, as in the config they came from.
  for (const k of Object.keys(out) as (keyof ImageConfig)[]) if (out[k] === undefined) delete out[k];
  return out;
}

function encodeControl(c: ControlRecord): Json {
  const { posted, ...rest } = c;
  return {
    ...rest,
    log: c.log.map((l) => ({ ...l })),
    regions: c.regions.map((g) => ({ ...g, gpa: hex64(g.gpa) })),
    ...(posted ? { posted: { ...posted, gpa: hex64(posted.gpa) } } : {}),
  };
}

function decodeControl(c: Fields): ControlRecord {
  const out: ControlRecord = {
    startedAt: c.int('startedAt', 0, Number.MAX_SAFE_INTEGER),
    changes: c.int('changes', 0, Number.MAX_SAFE_INTEGER),
    log: c.list('log', MAX.log, (v, p) => {
      const l = Fields.of(v, p);
      const entry = { at: l.str('at', 64), summary: l.str('summary', 1024), guest: l.str('guest', 4096) };
      l.done();
      return entry;
    }),
    paused: c.bool('paused'),
    regions: c.list('regions', MAX.regions, (v, p) => {
      const g = Fields.of(v, p);
      const region = {
        gpa: g.u64('gpa'),
        origin: g.oneOf('origin', ['boot', 'api'] as const),
        backend: g.oneOf('backend', RAM_BACKENDS),
        ownBacking: g.bool('ownBacking'),
        guest: g.oneOf('guest', GUEST_VIEWS),
      };
      g.done();
      return region;
    }),
  };
  const posted = c.optional('posted', (x, k) => {
    const p = x.obj(k);
    const event = {
      generation: p.int('generation', 1, 0xffffffff),
      gpa: p.u64('gpa'),
      kind: p.oneOf('kind', HOTPLUG_KINDS),
    };
    p.done();
    if (!out.regions.some((g) => g.gpa === event.gpa))
      throw new RecordError(`${p.at('gpa')}: ${hex64(event.gpa)} is not a RAM region of the record`);
    return event;
  });
  if (posted) out.posted = posted;
  c.done();
  return out;
}
