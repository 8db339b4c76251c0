// The new process's side of a live update (pinion run --incoming 3): read
// and check the record, set up the VM from it while the guest still runs in
// the old process (a fresh KVM VM, vCPUs with the guest's CPUID, the RAM
// files mapped, the vCPU threads loaded), say ready; take the state at the
// pause and write it into the new VM, say restored; on `go` run the vCPUs
// and say running. Anything that fails is sent back as a refusal naming the
// step, and this process ends without running the guest: the old one
// resumes it. Before `go` nothing here runs guest code.
import { performance } from 'node:perf_hooks';
import { Socket } from 'node:net';
import { Machine, type MachineResult } from '../machine/machine.js';
import { processCharge } from '../memlock/status.js';
import { Channel, type Charge, type PeerReport, type StepTime } from './channel.js';
import { faultPoint, preflightWaived } from './faults.js';
import { checkFds, childFd } from './fds.js';
import { decodeRecord, imageOf, type ControlRecord, type UpdateRecord } from './record.js';
import { decodeState, encodeState, renameEventfds } from './state.js';
import { ms, PartClock } from './steps.js';
import { HandoverToken } from './token.js';
import { trace } from '../vmm/trace.js';

export interface Incoming {
  machine: Machine;
  record: UpdateRecord;
  /** The control API's socket (this process's fd) and its view, when the VM has an API. */
  api?: { path: string; fd: number; control: ControlRecord };
  /** The VM's run, begun at `go`: resolves as Machine.run does. */
  run: Promise<MachineResult>;
}

export interface IncomingTimeouts {
  /** For the state, after ready (the old process pauses meanwhile). */
  stateMs: number;
  goMs: number;
  /** For the vCPU threads to load. */
  loadMs: number;
}

const TIMEOUTS: IncomingTimeouts = { stateMs: 30_000, goMs: 30_000, loadMs: 60_000 };

export async function receive(channelFd: number, t: IncomingTimeouts = TIMEOUTS): Promise<Incoming> {
  // Loading this process (node, the bundle) until here: part of prepare, as the old side sees it.
  const loadMs = Math.round(performance.now() * 100) / 100;
  faultPoint('start');
  const channel = new Channel(new Socket({ fd: channelFd, readable: true, writable: true }), 'the old process');
  const side: Side = { channel, channelFd, steps: [], charge: [], step: 'prepare' };
  const taken = await takeOver(side, loadMs, t);
  return start(side, taken);
}

/** What both halves share: the channel, the times and counters reported so far, the step running. */
interface Side {
  channel: Channel;
  channelFd: number;
  steps: StepTime[];
  charge: Charge[];
  step: string;
}

const report = (s: Side): PeerReport => ({ steps: s.steps, charge: s.charge });

/**
 * Everything up to the hand-over token: a failure here is refused back to
 * the old process, which resumes the guest, and ends this process's VM.
 */
async function takeOver(side: Side, loadMs: number, t: IncomingTimeouts): Promise<{ machine: Machine; record: UpdateRecord }> {
  const { channel, channelFd } = side;
  let machine: Machine | undefined;
  let token: HandoverToken | undefined;
  try {
    const p = new PartClock();
    const record = decodeRecord((await channel.next('prepare', 'prepare', t.stateMs)).record);
    checkFds(record.fds, channelFd);
    token = HandoverToken.open(childFd(record.token, channelFd));
    p.mark('record');
    faultPoint('prepare');
    machine = Machine.adopt(
      imageOf(record, (i) => childFd(i, channelFd)),
      { preflight: !preflightWaived() },
    );
    p.mark('vm');
    await until(() => machine!.loaded, t.loadMs, 'the vCPU threads to load', 2);
    p.mark('threads');
    rehearse(machine, record);
    p.mark('rehearse');
    side.steps.push(stepTime('prepare', [{ name: 'load', ms: loadMs }, ...p.list]));
    side.charge.push(own('new: ready'));
    channel.send({ type: 'ready', report: report(side) });
    faultPoint('ready');

    side.step = 'restore';
    const s = await channel.next('state', 'restore', t.stateMs);
    const r = new PartClock();
    faultPoint('restore');
    const state = renameEventfds(decodeState(s.state, record), (i) => childFd(i, channelFd));
    r.mark('decode');
    machine.restoreState(state, (part) => r.mark(part));
    side.steps.push(stepTime('restore', r.list));
    channel.send({ type: 'restored', report: report(side) });
    faultPoint('restored');

    side.step = 'start';
    await channel.next('go', 'start', t.goMs);
    if (!token.takeForNew()) throw new Error('the old process took the VM back before this one could run it');
    // The VM is this process's: its devices are reset when it closes, as any it opened.
    machine.claim();
    return { machine, record };
  } catch (e) {
    const why = (e as Error)?.message ?? String(e);
    try {
      channel.send({ type: 'refused', step: side.step, error: why });
    } catch {
      // The old process is gone: there is no one to tell.
    }
    channel.close();
    machine?.close();
    throw new Error(`live update: ${side.step}: ${why}`);
  } finally {
    token?.close();
  }
}

/** The VM is this process's: run it. Nothing here ends the guest, not even the old process gone silent. */
async function start(side: Side, { machine: m, record }: { machine: Machine; record: UpdateRecord }): Promise<Incoming> {
  const { channel, channelFd } = side;
  const g = new PartClock();
  const paused = record.api?.control.paused === true;
  // Held by vm.pause in the old process: the vCPUs enter their loop and wait there.
  if (paused) void m.pause();
  const run = m.run();
  const settled = (): boolean => m.vcpuStates().every((v) => v === (paused ? 'paused' : 'running'));
  await until(settled, 10_000, 'the vCPUs to run').catch(() => undefined);
  const at = process.hrtime.bigint();
  g.mark('vcpus');
  side.steps.push(stepTime('start', g.list));
  side.charge.push(own('new: running'));
  try {
    channel.send({ type: 'running', at: at.toString(), report: report(side) });
    // The old process stops serving the API, then closes the channel: the socket is this process's after that.
    await channel.peerClosed(2000);
  } catch {
    // The old process is gone: the socket is this process's all the more.
  }
  channel.close();
  const api = record.api && { path: record.api.path, fd: childFd(record.api.socket, channelFd), control: record.api.control };
  return { machine: m, record, ...(api ? { api } : {}), run };
}

/**
 * The restore's code run once before the pause, on this VM's own fresh state: in a process that has
 * not run it, each function is parsed and compiled on its first call, and the pause would pay for it.
 * The same reads and encoding are this process's own hand-over later. The devices' part is read and
 * decoded (their config space as this VM sees it; a first decode costs two to five times a warm one) but
 * not written back: until the pause they are the old process's. The control API's part stays out: no
 * event waits for an ack in this VM's own fresh mailbox.
 */
function rehearse(m: Machine, record: UpdateRecord): void {
  const bare: UpdateRecord = { ...record, api: undefined };
  try {
    m.rehearse((s) => decodeState(JSON.parse(JSON.stringify(encodeState(s))), bare));
  } catch (e) {
    // The restore writes every part again and says for itself what it cannot.
    trace(`update: the rehearsal stopped: ${(e as Error).message}`);
  }
}

function own(at: string): Charge {
  const c = processCharge();
  return { at, pid: c.pid, vmLckKiB: c.vmLckKiB, vmPinKiB: c.vmPinKiB };
}

function stepTime(step: string, parts: { name: string; ms: number }[]): StepTime {
  return { step, side: 'new', ms: Math.round(parts.reduce((n, p) => n + p.ms, 0) * 100) / 100, parts };
}

/** Waits until `ok()`, looking every `everyMs` (0: each event-loop turn, for what changes within a ms). */
async function until(ok: () => boolean, timeoutMs: number, what: string, everyMs = 0): Promise<void> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => (everyMs ? setTimeout(r, everyMs) : setImmediate(r)));
  }
}
