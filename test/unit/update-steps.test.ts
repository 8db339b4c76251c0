// The old side of a live update as a step machine, against a scripted new
// process on a real socket: the steps in order and what the VM sees, and for
// a failure at each step (the new process dying, refusing, never answering,
// taking the VM and then dying or hanging) whether the old process takes
// the VM back, what it undoes, and the one line it answers.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { MachineImage, MachineState } from '../../src/machine/handover.js';
import { Channel } from '../../src/update/channel.js';
import { handOver, UpdateError, type OutgoingVm, type Peer, type UpdateTimeouts } from '../../src/update/outgoing.js';
import { decodeRecord } from '../../src/update/record.js';
import { decodeState } from '../../src/update/state.js';
import { rollback, StepClock, STEPS } from '../../src/update/steps.js';
import { VCPU_BLOBS } from '../../src/vmm/vcpu-state.js';
import { VM_BLOBS } from '../../src/vmm/vm-state.js';

const dir = mkdtempSync(join(tmpdir(), 'pinion-update-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** Two connected Unix sockets. */
async function socketPair(): Promise<[Socket, Socket]> {
  const path = join(dir, `s${n++}`);
  const server = createServer();
  await new Promise<void>((r) => server.listen(path, r));
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const client = connect(path);
  await new Promise<void>((r) => client.once('connect', () => r()));
  const s = await accepted;
  server.close();
  return [client, s];
}

const image = (): MachineImage => ({
  config: { payload: 'guest.elf', memory: 64n << 20n, cpus: 1, backend: 'memfd', cmdline: 'tick' },
  kvmFd: 10,
  consoleFd: 1,
  backings: [{ fd: 11 }],
  regions: [{ name: 'ram-low', gpa: 0n, size: 64n << 20n, backing: 0, offset: 0n, readonly: false }],
  cpuid: [Buffer.from([0, 0, 0, 0, 0, 0, 0, 0])],
});

const state = (): MachineState => ({
  vcpus: [
    {
      regs: Buffer.alloc(VCPU_BLOBS.regs),
      sregs: Buffer.alloc(VCPU_BLOBS.sregs),
      xsave: Buffer.alloc(VCPU_BLOBS.xsave),
      xcrs: Buffer.alloc(VCPU_BLOBS.xcrs),
      debugregs: Buffer.alloc(VCPU_BLOBS.debugregs),
      lapic: Buffer.alloc(VCPU_BLOBS.lapic),
      events: Buffer.alloc(VCPU_BLOBS.events),
      mpState: 0,
      msrs: [],
      tscKhz: 1000000,
    },
  ],
  vm: {
    irqchips: [0, 1, 2].map(() => Buffer.alloc(VM_BLOBS.irqchip)),
    pit: Buffer.alloc(VM_BLOBS.pit),
    clock: Buffer.alloc(VM_BLOBS.clock),
  },
  platform: {
    serial: { regs: Array(10).fill(0), rx: [], threPending: false, line: false, watched: [] },
    pciAddress: 0,
    hostBridge: Array(256).fill(0),
    hotplug: { claimed: false, acked: 0, staleAcks: 0 },
  },
});

/** What the scripted new process does wrong, and where. */
interface Script {
  at?: 'prepare' | 'restore' | 'start';
  how?: 'die' | 'refuse' | 'hang';
  /** At start: take the token first, then fail. */
  afterToken?: boolean;
}

class FakeVm implements OutgoingVm {
  calls: string[] = [];
  refuse: string | undefined;
  refusal(): string | undefined {
    this.calls.push('refusal');
    return this.refuse;
  }
  image(): MachineImage {
    this.calls.push('image');
    return image();
  }
  api(): undefined {
    return undefined;
  }
  async pause(): Promise<void> {
    this.calls.push('pause');
  }
  freeze(): void {
    this.calls.push('freeze');
  }
  guestTsc(): bigint {
    return 1n;
  }
  save(): MachineState {
    this.calls.push('save');
    return state();
  }
  thaw(): void {
    this.calls.push('thaw');
  }
  resume(): void {
    this.calls.push('resume');
  }
  handedTo(pid: number): void {
    this.calls.push(`handedTo ${pid}`);
  }
}

/** The word both sides swap (token.ts), here shared in memory. */
function fakeToken(): { word: { v: number }; newToken: () => { fd: number; takeForOld(): boolean; close(): void } } {
  const word = { v: 0 };
  return {
    word,
    newToken: () => ({
      fd: 99,
      takeForOld: () => (word.v === 0 ? ((word.v = 2), true) : word.v === 2),
      close: () => undefined,
    }),
  };
}

const FAST: UpdateTimeouts = { readyMs: 2000, restoredMs: 300, runningMs: 300 };

/** A new process that follows the protocol, except where `s` says. */
async function startFake(s: Script, word: { v: number }): Promise<{ peer: Peer; killed: () => boolean; log: string[] }> {
  const [oldEnd, newEnd] = await socketPair();
  const log: string[] = [];
  let alive = true;
  let killed = false;
  let exited!: () => void;
  const gone = new Promise<void>((r) => (exited = r));
  const channel = new Channel(oldEnd, 'the new process (pid 4343)');
  const die = (): void => {
    alive = false;
    newEnd.destroy();
    exited();
    channel.fail('the new process (pid 4343) was killed by SIGKILL');
  };
  const peer: Peer = {
    pid: 4343,
    channel,
    get alive() {
      return alive;
    },
    kill: async () => {
      const was = alive;
      if (alive) {
        killed = true;
        die();
      }
      await gone;
      return was;
    },
    detach: () => channel.close(),
  };
  const me = new Channel(newEnd, 'the old process');
  const fail = (at: Script['at']): boolean => {
    if (s.at !== at) return false;
    log.push(`${s.how} at ${at}`);
    if (s.how === 'die') die();
    else if (s.how === 'refuse') me.send({ type: 'refused', step: at!, error: `made-up reason at ${at}` });
    return true;
  };
  const report = { steps: [{ step: 'prepare', side: 'new' as const, ms: 5, parts: [{ name: 'load', ms: 3 }] }], charge: [] };
  void (async () => {
    try {
      const record = decodeRecord((await me.next('prepare', 'prepare', 5000)).record);
      if (fail('prepare')) return;
      me.send({ type: 'ready', report });
      decodeState((await me.next('state', 'restore', 5000)).state, record);
      if (fail('restore')) return;
      me.send({ type: 'restored', report });
      await me.next('go', 'start', 5000);
      if (s.at === 'start' && !s.afterToken) return void fail('start');
      if (word.v !== 0) return void log.push('token taken by the old process');
      word.v = 1;
      if (fail('start')) return;
      me.send({ type: 'running', at: process.hrtime.bigint().toString(), report });
    } catch (e) {
      log.push(`fake: ${(e as Error).message}`);
    }
  })();
  return { peer, killed: () => killed, log };
}

async function run(s: Script, vm = new FakeVm()): Promise<{ vm: FakeVm; error?: UpdateError; killed: boolean; log: string[] }> {
  const { word, newToken } = fakeToken();
  let fake: Awaited<ReturnType<typeof startFake>> | undefined;
  try {
    await handOver(
      vm,
      async () => {
        fake = await startFake(s, word);
        return fake.peer;
      },
      FAST,
      newToken,
    );
    return { vm, killed: fake?.killed() ?? false, log: fake?.log ?? [] };
  } catch (e) {
    if (!(e instanceof UpdateError)) throw e;
    return { vm, error: e, killed: fake?.killed() ?? false, log: fake?.log ?? [] };
  }
}

t.test('rollback: what a failure at each step undoes', async (t) => {
  const table = Object.fromEntries(STEPS.map((s) => [s, rollback(s, false).join(' ')]));
  t.same(table, {
    check: '',
    spawn: 'kill',
    prepare: 'kill',
    pause: 'kill resume',
    save: 'kill thaw resume',
    restore: 'kill thaw resume',
    commit: 'kill thaw resume',
    start: 'kill thaw resume',
  });
  t.same(
    STEPS.map((s) => rollback(s, true)),
    STEPS.map(() => []),
    'once the new process took the VM, nothing',
  );
});

t.test('the step clock times steps in order and refuses them out of order', async (t) => {
  let now = 0n;
  const c = new StepClock(() => now);
  c.begin('check');
  now += 1_500_000n;
  c.begin('spawn');
  now += 250_000n;
  c.end([{ name: 'fork', ms: 0.2 }]);
  t.same(c.times, [
    { step: 'check', side: 'old', ms: 1.5 },
    { step: 'spawn', side: 'old', ms: 0.25, parts: [{ name: 'fork', ms: 0.2 }] },
  ]);
  t.throws(() => c.begin('check'), /live update step check after spawn: the steps run in order/);
});

t.test('a hand-over: every step once, in order; the VM paused, saved and handed, never resumed', async (t) => {
  const { vm, error } = await run({});
  t.notOk(error);
  t.same(vm.calls, ['refusal', 'image', 'pause', 'freeze', 'save', 'handedTo 4343']);
});

t.test('a hand-over answers the pause and each step, paused or not', async (t) => {
  const { word, newToken } = fakeToken();
  const r = await handOver(new FakeVm(), async () => (await startFake({}, word)).peer, FAST, newToken);
  t.same(
    r.steps.map((s) => `${s.step}:${s.side}:${s.paused ? 'paused' : 'runs'}`),
    [
      'check:old:runs',
      'spawn:old:runs',
      'prepare:new:runs',
      'pause:old:paused',
      'save:old:paused',
      'restore:new:paused',
      'commit:old:paused',
      'start:new:paused',
    ],
  );
  t.same(r.steps[2]!.parts, [{ name: 'load', ms: 3 }], "the new process's own parts of its step");
  t.ok(r.pauseMs > 0 && r.pauseMs < 1000, `pause ${r.pauseMs} ms`);
  t.same([r.from, r.to], [process.pid, 4343]);
  t.match(r.charge, [
    { at: 'old: before', pid: process.pid },
    { at: 'old: paused', pid: process.pid },
  ]);
});

t.test('refused up front: 409, nothing started, the VM untouched', async (t) => {
  const vm = new FakeVm();
  vm.refuse = 'guest RAM ram-low at 0x0 is anonymous memory; start the VM with --memory-backend memfd';
  const { error } = await run({}, vm);
  t.equal(error?.status, 409);
  t.equal(error?.step, 'check');
  t.match(error?.message, /^live update refused: guest RAM ram-low .* --memory-backend memfd; the VM is untouched$/);
  t.same(vm.calls, ['refusal']);
});

t.test('the new process fails to start: nothing to undo', async (t) => {
  const vm = new FakeVm();
  const err = await handOver(vm, () => Promise.reject(new Error('cannot start /nonexistent: ENOENT')), FAST, fakeToken().newToken).catch(
    (e) => e,
  );
  t.match(err, { step: 'spawn', status: 500 });
  t.match(
    err.message,
    /^live update failed at spawn \(starting the new process, in the old process\): cannot start \/nonexistent: ENOENT; the VM runs on in pid \d+$/,
  );
  t.same(vm.calls, ['refusal', 'image']);
});

const cases: [Script, string, RegExp, string[], boolean][] = [
  [{ at: 'prepare', how: 'die' }, 'prepare', /the new process \(pid 4343\) was killed by SIGKILL; the VM runs on/, [], false],
  [
    { at: 'prepare', how: 'refuse' },
    'prepare',
    /the new process \(pid 4343\) refused at prepare: made-up reason at prepare; the new process \(pid 4343\) was ended/,
    [],
    true,
  ],
  [{ at: 'restore', how: 'die' }, 'restore', /was killed by SIGKILL; the VM runs on in pid/, ['thaw', 'resume'], false],
  [{ at: 'restore', how: 'refuse' }, 'restore', /refused at restore: made-up reason at restore/, ['thaw', 'resume'], true],
  [
    { at: 'restore', how: 'hang' },
    'restore',
    /sent no 'restored' within 300 ms \(restore\); the new process \(pid 4343\) was ended/,
    ['thaw', 'resume'],
    true,
  ],
  [{ at: 'start', how: 'die' }, 'start', /was killed by SIGKILL; the VM runs on/, ['thaw', 'resume'], false],
  [
    { at: 'start', how: 'hang' },
    'start',
    /sent no 'running' within 300 ms \(start\); the new process \(pid 4343\) was ended; the VM runs on/,
    ['thaw', 'resume'],
    true,
  ],
];

for (const [script, step, message, undone, killed] of cases) {
  t.test(
    `the new process ${script.how === 'die' ? 'dies' : script.how === 'refuse' ? 'refuses' : 'hangs'} at ${script.at}: the old one takes the VM back`,
    async (t) => {
      const r = await run(script);
      t.equal(r.error?.step, step);
      t.equal(r.error?.status, 500);
      t.equal(r.error?.released, false);
      t.match(r.error?.message, new RegExp(`^live update failed at ${step} \\(`));
      t.match(r.error?.message, message);
      const paused = script.at !== 'prepare';
      t.same(r.vm.calls, ['refusal', 'image', ...(paused ? ['pause', 'freeze', 'save'] : []), ...undone], 'what the VM saw');
      t.equal(r.killed, killed, killed ? 'the new process was killed' : 'it was gone already');
    },
  );
}

t.test('the new process takes the VM, then dies: no one runs it, and the old one does not resume it', async (t) => {
  const r = await run({ at: 'start', how: 'die', afterToken: true });
  t.equal(r.error?.released, true);
  t.match(r.error?.message, /had taken the VM and ended, so no process runs it: the VM is lost$/);
  t.equal(r.error?.to, undefined);
  t.same(r.vm.calls, ['refusal', 'image', 'pause', 'freeze', 'save']);
});

t.test('the new process takes the VM and goes silent: it is the VM process now, this one ends', async (t) => {
  const r = await run({ at: 'start', how: 'hang', afterToken: true });
  t.equal(r.error?.released, true);
  t.match(r.error?.message, /the new process \(pid 4343\) has taken the VM and runs on; this one ends$/);
  t.equal(r.error?.to, 4343, 'where the VM runs on');
  t.same(r.vm.calls, ['refusal', 'image', 'pause', 'freeze', 'save', 'handedTo 4343']);
  t.notOk(r.killed);
});
