// The control API's verbs, Cloud Hypervisor style: `GET /api/v1/vm.info`,
// `PUT /api/v1/vm.pause`, ... Each verb maps to one call of a small
// VmControl; bodies are parsed and memory changes checked here, at the edge,
// so the VM only sees well-formed requests. Answers are JSON, addresses as
// "0x..." strings and sizes as byte counts; a refusal is {"error": "one line"}.
import type { UpdateReport } from '../update/outgoing.js';
import { ApiError } from './errors.js';
import { MEMORY_VERBS, parseChange, type MemoryChange, type MemoryVerb } from './memory-change.js';

export const API_PREFIX = '/api/v1/';

export type VmState = 'running' | 'pausing' | 'paused' | 'stopping';

export interface VmInfo {
  state: VmState;
  /** Who holds the pause: the user (vm.pause), a memory change copying contents, a live update handing the VM over. */
  pausedBy: ('user' | 'memory-change' | 'update')[];
  vcpus: { index: number; state: string }[];
  boot: { kind: 'payload' | 'linux'; image: string; cmdline: string };
  memory: { ramBytes: number; regions: number; changes: number; hotplug: HotplugInfo };
  devices: number;
  pid: number;
  uptimeMs: number;
}

/** The memory-hotplug mailbox (port 0x5f0), through which the guest is told of memory changes. */
export interface HotplugInfo {
  port: string;
  /** A guest driver claimed it: changes are told to the guest and wait for its acks. Unclaimed, the guest is not told. */
  claimed: boolean;
  /** The generation of the event posted last (0: none), and of the one the guest acknowledged last. */
  generation: number;
  acked: number;
  /** The event posted and not acknowledged, if any. */
  pending: { generation: number; kind: 'added' | 'remove-requested'; gpa: string; size: number } | null;
}

/**
 * What the guest knows of a region: boot (its boot map has it), acknowledged
 * (told it was added, and acked), told (no ack yet), not told (never, or it
 * released it, or a driver-less guest).
 */
export const GUEST_VIEWS = ['boot', 'acknowledged', 'told', 'not told'] as const;
export type GuestView = (typeof GUEST_VIEWS)[number];

/** What the guest was told of one change, and what it answered. */
export interface GuestNotice {
  /** An event was posted to the guest for this change. */
  told: boolean;
  /** Every event posted was acknowledged in time. */
  acknowledged: boolean;
  /** Releases asked before the change, then regions announced after it; ms is the wait for the ack. */
  events: {
    kind: 'added' | 'remove-requested';
    name: string;
    gpa: string;
    size: number;
    generation: number;
    outcome: 'acked' | 'timeout' | 'let go' | 'closed';
    ms: number;
  }[];
  /** One line for people. */
  note: string;
}

export interface RegionInfo {
  name: string;
  gpa: string;
  end: string;
  size: number;
  kind: 'ram' | 'device';
  backend?: string;
  /** boot: placed when the VM was made (the guest was told of it); api: made by a memory change since. */
  origin: 'boot' | 'api';
  /** Backed by a file (memfd), which DMA can map by fd. */
  file: boolean;
  /** RAM: what the guest knows of it. */
  guest?: GuestView;
}

export interface MemoryMapInfo {
  pageSize: number;
  regions: RegionInfo[];
  holes: { name: string; start: string; end: string }[];
  ramCeiling: string;
  /** The memory changes made through the API, oldest first (the last 32), and what the guest was told of each. */
  changes: { at: string; summary: string; guest: string }[];
  hotplug: HotplugInfo;
}

export type DmaInfo =
  | { assigned: false }
  | {
      assigned: true;
      iommu: string;
      path: string;
      containerType: string | null;
      mappings: { iova: string; end: string; size: number; backing: string; prot: string }[];
      entries: { used: number; allowed: number | null };
      charged: { held: number; lastPeak: number | null; lastFinal: number | null };
      budget: { bytes: number; why: string } | null;
      lastOps: string[];
      process: { vmLckKiB: number; vmPinKiB: number; memlockKiB: number | null };
    };

export interface DeviceInfo {
  bdf: string;
  slot: string;
  group: string | null;
  resettable: boolean;
  bars: { bar: number; space: string; address: string; size: number; mapped: number }[];
  interrupts: { active: string; intxPin: number | null; msixVectors: number };
}

/** What a change answers: what was done, what the guest was told, and the map after it. */
export interface ChangeResult {
  done: string;
  guest: GuestNotice;
  memory: MemoryMapInfo;
}

/** What the API drives; the machine's implementation is MachineControl (vm-control.ts). */
export interface VmControl {
  info(): VmInfo;
  memory(): MemoryMapInfo;
  dma(): DmaInfo;
  devices(): DeviceInfo[];
  /** Resolves once every vCPU is out of KVM_RUN. */
  pause(): Promise<VmInfo>;
  resume(): Promise<VmInfo>;
  stop(): VmInfo;
  changeMemory(c: MemoryChange): Promise<ChangeResult>;
  /** Hands the VM to a new Pinion process (live update); `to` is its command, default this build. */
  update(to?: string): Promise<UpdateReport>;
}

interface Route {
  method: 'GET' | 'PUT';
  /** PUT verbs that take fields: the fields, for messages. */
  fields?: readonly string[];
  run(c: VmControl, body: unknown): unknown;
}

const memoryRoutes = Object.fromEntries(
  (Object.keys(MEMORY_VERBS) as MemoryVerb[]).map((v) => [
    `vm.${v}`,
    { method: 'PUT', fields: MEMORY_VERBS[v], run: (c: VmControl, body: unknown) => c.changeMemory(parseChange(v, body)) } as Route,
  ]),
);

export const ROUTES: Record<string, Route> = {
  'vmm.ping': { method: 'GET', run: () => ({ pinion: 'ok', pid: process.pid }) },
  'vm.info': { method: 'GET', run: (c) => c.info() },
  'vm.memory': { method: 'GET', run: (c) => c.memory() },
  'vm.dma': { method: 'GET', run: (c) => c.dma() },
  'vm.devices': { method: 'GET', run: (c) => ({ devices: c.devices() }) },
  'vm.pause': { method: 'PUT', run: (c) => c.pause() },
  'vm.resume': { method: 'PUT', run: (c) => c.resume() },
  'vm.stop': { method: 'PUT', run: (c) => c.stop() },
  'vm.update': { method: 'PUT', run: (c, body) => c.update(updateTo(body)) },
  ...memoryRoutes,
};

/** vm.update's body: nothing, or {"to": COMMAND}. */
function updateTo(body: unknown): string | undefined {
  if (body === undefined) return undefined;
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new ApiError(400, 'vm.update takes {"to": COMMAND} or no body');
  const extra = Object.keys(body).filter((k) => k !== 'to');
  if (extra.length) throw new ApiError(400, `vm.update: unknown field ${extra[0]}; it takes {"to": COMMAND}`);
  const to = (body as { to?: unknown }).to;
  if (to === undefined) return undefined;
  if (typeof to !== 'string' || !to.trim() || to.length > 4096)
    throw new ApiError(400, 'vm.update: "to" is the command of the Pinion to hand over to, a non-empty string');
  return to;
}

export interface Reply {
  status: number;
  body: unknown;
}

/** One request, answered: 200 with the verb's answer, or a 4xx/5xx with {"error": one line}. */
export async function route(c: VmControl, method: string, url: string, body: string): Promise<Reply> {
  try {
    const path = url.split('?')[0]!;
    if (!path.startsWith(API_PREFIX))
      throw new ApiError(404, `no such path ${path}; the API is under ${API_PREFIX} (e.g. GET ${API_PREFIX}vm.info)`);
    const verb = path.slice(API_PREFIX.length);
    const r = Object.hasOwn(ROUTES, verb) ? ROUTES[verb] : undefined;
    if (!r) throw new ApiError(404, `unknown verb '${verb}'; the API has ${Object.keys(ROUTES).join(', ')}`);
    if (method !== r.method) throw new ApiError(405, `${verb} takes ${r.method}, not ${method}`);
    let parsed: unknown;
    if (r.method === 'PUT' && body.trim() !== '') {
      try {
        parsed = JSON.parse(body);
      } catch (e) {
        throw new ApiError(400, `${verb}: the body is not JSON (${(e as Error).message})`);
      }
    } else if (r.fields) throw new ApiError(400, `${verb} needs a JSON body with ${r.fields.join(', ')}`);
    return { status: 200, body: await r.run(c, parsed) };
  } catch (e) {
    if (e instanceof ApiError) return { status: e.status, body: { error: oneLine(e.message) } };
    return { status: 500, body: { error: oneLine((e as Error)?.message ?? String(e)) } };
  }
}

export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, '; ');
}
