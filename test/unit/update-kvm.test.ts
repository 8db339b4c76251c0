// Live update on this machine's /dev/kvm, no device assigned: the test
// guest in its tick mode (a line about every 100 ms of TSC time) handed to a
// new Pinion process five times in a row through `pinion ctl PATH update`.
// Each time the tick count goes on (the guest kept its state: no reset, no
// second banner), the pause is under the target, the old process exits and
// no process but the new one holds guest RAM. Then the new process killed
// (or refusing, or not starting) at each of its steps: the guest runs on in
// the old one. Then the guest in its hotplug mode: its driver of the
// memory-hotplug mailbox goes on answering the new process, which knows
// what the old one told it. Then a VM on anonymous RAM, refused up front. A local check:
// it skips without a usable /dev/kvm (the hand-over with an assigned VF
// runs in L1: test/rig/update-traffic.test.ts).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  accessSync,
  constants,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { UpdateReport } from '../../src/update/outgoing.js';
import { INCOMING_POINTS } from '../../src/update/faults.js';

const root = new URL('../../..', import.meta.url).pathname;
const bundle = join(root, 'dist/bundle/pinion.js');
const guest = join(root, 'dist/guest/pinion-guest.elf');
/** The target, for a 256 MiB guest with a VF in the rig; here a 64 MiB guest without one. */
const PAUSE_TARGET_MS = 250;

function kvmMissing(): string | undefined {
  if (!existsSync('/dev/kvm')) return 'no /dev/kvm on this machine';
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return '/dev/kvm is not open to this user';
  }
  return undefined;
}

const dir = mkdtempSync(join(tmpdir(), 'pinion-update-kvm-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let vms = 0;

interface Tick {
  n: number;
  ms: number;
  gap: number;
}

/** A VM under `pinion run`, its console read line by line. */
class Vm {
  readonly ticks: Tick[] = [];
  readonly out: string[] = [];
  err = '';
  readonly exited: Promise<number | null>;
  private waiters: (() => void)[] = [];

  private constructor(
    readonly socket: string,
    readonly child: ChildProcess,
  ) {
    let partial = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      const lines = (partial + d).split('\n');
      partial = lines.pop()!;
      for (const l of lines) {
        this.out.push(l);
        const m = /tick (\d+) ms=(\d+) gap=(\d+)/.exec(l);
        if (m) this.ticks.push({ n: Number(m[1]), ms: Number(m[2]), gap: Number(m[3]) });
      }
      this.waiters.splice(0).forEach((w) => w());
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.err += d));
    this.exited = new Promise((r) => child.on('close', (code) => r(code)));
  }

  static boot(extra: string[] = [], cmdline = 'tick'): Vm {
    const socket = join(dir, `vm${vms++}.sock`);
    const args = [bundle, 'run', '--payload', guest, '--cmdline', cmdline, '--memory', '64M', '--cpus', '2', '--api-socket', socket];
    return new Vm(socket, spawn(process.execPath, [...args, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  /** Resolves once `more` ticks past the current count have come. */
  async ticksPast(more: number, timeoutMs = 10_000): Promise<Tick> {
    const want = this.ticks.length + more;
    const t0 = Date.now();
    while (this.ticks.length < want) {
      if (Date.now() - t0 > timeoutMs)
        throw new Error(`no tick for ${timeoutMs} ms; console: ${this.out.slice(-3).join(' | ')}; ${this.err}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
    return this.ticks[this.ticks.length - 1]!;
  }

  /** Resolves with the first console line from `from` on that matches `re`. */
  async line(re: RegExp, from = 0, timeoutMs = 10_000): Promise<string> {
    const t0 = Date.now();
    for (;;) {
      const l = this.out.slice(from).find((x) => re.test(x));
      if (l !== undefined) return l;
      if (Date.now() - t0 > timeoutMs)
        throw new Error(`no console line like ${re} in ${timeoutMs} ms; console: ${this.out.slice(-3).join(' | ')}; ${this.err}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }

  ctl(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
    const c = spawn(process.execPath, [bundle, 'ctl', this.socket, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '',
      err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    return new Promise((r) => c.on('close', (code) => r({ code, out, err })));
  }

  async pid(): Promise<number> {
    const r = await this.ctl('info', '--json');
    return (JSON.parse(r.out) as { pid: number }).pid;
  }
}

/** Every tick counted once, in order: the guest's state went on, it never started over. */
function continuous(ticks: readonly Tick[]): string | undefined {
  for (let i = 1; i < ticks.length; i++) {
    const [a, b] = [ticks[i - 1]!, ticks[i]!];
    if (b.n !== a.n + 1 || b.ms < a.ms) return `tick ${a.n} (${a.ms} ms) is followed by tick ${b.n} (${b.ms} ms)`;
  }
  return undefined;
}

/** Running, as opposed to gone or a zombie: the old process's parent is gone too, and init reaps it when it gets to it. */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** The fds a process holds: none once it has exited, zombie or not. */
function fdsOf(pid: number): string[] {
  try {
    return readdirSync(`/proc/${pid}/fd`);
  } catch {
    return [];
  }
}

async function gone(pid: number, timeoutMs = 10_000): Promise<boolean> {
  const t0 = Date.now();
  while (alive(pid)) {
    if (Date.now() - t0 > timeoutMs) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/** The inode of the guest RAM memfd a process holds. */
function ramInode(pid: number): number {
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    const p = `/proc/${pid}/fd/${fd}`;
    try {
      if (readlinkSync(p).startsWith('/memfd:pinion-guest-ram')) return statSync(p).ino;
    } catch {
      // closed meanwhile
    }
  }
  throw new Error(`pid ${pid} holds no guest RAM memfd`);
}

/** Every process holding a file of inode `ino` (by fd). */
function holders(ino: number): number[] {
  const out = new Set<number>();
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${p}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (statSync(`/proc/${p}/fd/${fd}`).ino === ino && readlinkSync(`/proc/${p}/fd/${fd}`).startsWith('/memfd:')) out.add(Number(p));
      } catch {
        // gone meanwhile
      }
    }
  }
  return [...out];
}

function main(): void {
  const results: { pauseMs: number; guestGapMs: number; steps: UpdateReport['steps'] }[] = [];

  t.test('five hand-overs in a row: the guest goes on, each old process ends and lets go of everything', async (t) => {
    const vm = Vm.boot();
    t.teardown(() => vm.child.kill('SIGKILL'));
    await vm.ticksPast(3);
    let pid = await vm.pid();
    t.equal(pid, vm.child.pid, 'the first process runs the VM');
    const ram = ramInode(pid);
    for (let i = 1; i <= 5; i++) {
      const before = vm.ticks.length;
      const held = fdsOf(pid).length;
      const r = await vm.ctl('update', '--json');
      if (r.code !== 0) {
        t.fail(`update ${i}: ${r.out.trim()} ${r.err.trim()}`);
        break;
      }
      const u = JSON.parse(r.out) as UpdateReport;
      t.equal(u.from, pid, `update ${i}: from pid ${pid}`);
      t.not(u.to, pid, `update ${i}: to a new pid ${u.to}`);
      t.ok(u.pauseMs < PAUSE_TARGET_MS, `update ${i}: the guest paused ${u.pauseMs} ms (target ${PAUSE_TARGET_MS})`);
      t.same(
        u.steps.map((s) => s.step),
        ['check', 'spawn', 'prepare', 'pause', 'save', 'restore', 'commit', 'start'],
      );
      t.ok(await gone(pid), `update ${i}: the old process (pid ${pid}) exited`);
      t.same(fdsOf(pid), [], `update ${i}: of the ${held} fds it held, none is left`);
      t.same(holders(ram), [u.to], `update ${i}: only pid ${u.to} holds guest RAM`);
      const last = await vm.ticksPast(3);
      t.equal(await vm.pid(), u.to, `update ${i}: the API answers from pid ${u.to}`);
      const around = vm.ticks.slice(Math.max(0, before - 1));
      results.push({ pauseMs: u.pauseMs, guestGapMs: Math.max(...around.map((x) => x.gap)), steps: u.steps });
      t.comment(
        `update ${i}: pause ${u.pauseMs} ms, guest's longest gap ${results.at(-1)!.guestGapMs} ms, tick ${last.n} at ${last.ms} ms`,
      );
      pid = u.to;
    }
    t.equal(continuous(vm.ticks), undefined, `${vm.ticks.length} ticks, one after another`);
    t.notOk(
      vm.out.slice(1).some((l) => /hello from vCPU/.test(l)),
      'one banner: the guest never started over',
    );
    const stop = await vm.ctl('stop');
    t.equal(stop.code, 0);
    t.ok(await gone(pid), 'the last process ends with the VM');
    t.equal(await vm.exited, 0, 'the first process had exited 0');
    t.match(vm.err, /pinion: live update: the VM runs on in pid \d+; this process ends/);
    t.same(holders(ram), [], 'no process holds guest RAM');
  });

  t.test('the new process dies, refuses or never starts at each step: the guest runs on in the old one', async (t) => {
    const vm = Vm.boot();
    t.teardown(() => vm.child.kill('SIGKILL'));
    await vm.ticksPast(3);
    const pid = await vm.pid();
    const node = `${process.execPath} ${bundle}`;
    const cases: [string, RegExp][] = [
      ...INCOMING_POINTS.map((p): [string, RegExp] => [
        `env PINION_UPDATE_FAULT=kill:${p} ${node}`,
        new RegExp(
          `failed at ${{ start: 'prepare', prepare: 'prepare', ready: 'restore', restore: 'restore', restored: 'start' }[p]} .*was killed by SIGKILL`,
        ),
      ]),
      [`env PINION_UPDATE_FAULT=refuse:prepare ${node}`, /failed at prepare .*refused at prepare: fault injected at prepare/],
      [`env PINION_UPDATE_FAULT=refuse:restore ${node}`, /failed at restore .*refused at restore: fault injected at restore/],
      ['/nonexistent/pinion', /failed at spawn .*cannot start \/nonexistent\/pinion: ENOENT/],
      ['/bin/false', /failed at prepare .*exited with status 1/],
    ];
    for (const [to, why] of cases) {
      const r = await vm.ctl('update', '--to', to);
      t.equal(r.code, 1, to);
      t.match(r.err, why, to);
      t.match(r.err, new RegExp(`the VM runs on in pid ${pid} \\(HTTP 500\\)`), `${to}: rolled back`);
      const killed = /\(pid (\d+)\)/.exec(r.err);
      if (killed) t.ok(await gone(Number(killed[1])), `${to}: the new process (pid ${killed[1]}) is gone`);
      await vm.ticksPast(2);
      t.equal(await vm.pid(), pid, `${to}: pid ${pid} still runs the VM`);
    }
    t.same(holders(ramInode(pid)), [pid], 'only the old process holds guest RAM');
    t.equal(continuous(vm.ticks), undefined, 'the ticks went on through every failure');
    const r = await vm.ctl('update');
    t.equal(r.code, 0, 'and the VM can still be handed over');
    t.match(r.out, /VM handed over from pid \d+ to pid \d+ \(live update\): the guest was paused [\d.]+ ms/);
    await vm.ticksPast(2);
    await vm.ctl('stop');
    t.equal(await vm.exited, 0);
  });

  t.test("the control API's view goes on: memory changes, their log and backings, a user's pause", async (t) => {
    const vm = Vm.boot();
    t.teardown(() => vm.child.kill('SIGKILL'));
    await vm.ticksPast(2);
    for (const verb of [['add-ram', '0x40000000', '16M'], ['split-ram', '0x0', '0x1000000'], ['pause']]) {
      const r = await vm.ctl(...verb);
      t.equal(r.code, 0, `${verb.join(' ')}: ${r.err.trim()}`);
    }
    const before = JSON.parse((await vm.ctl('memory', '--json')).out) as { regions: unknown[]; changes: unknown[] };
    const r = await vm.ctl('update', '--json');
    t.equal(r.code, 0, r.err);
    const to = (JSON.parse(r.out) as UpdateReport).to;
    const info = JSON.parse((await vm.ctl('info', '--json')).out) as { pid: number; state: string; pausedBy: string[] };
    t.match(info, { pid: to, state: 'paused', pausedBy: ['user'] }, 'still paused, by the user');
    t.same(JSON.parse((await vm.ctl('memory', '--json')).out), before, 'the same map, origins, backends and change log');
    const memfds = (): number =>
      fdsOf(to).filter((fd) => readlinkSync(`/proc/${to}/fd/${fd}`).startsWith('/memfd:pinion-guest-ram')).length;
    t.equal(memfds(), 2, 'the boot RAM and the added 16 MiB');
    t.equal((await vm.ctl('remove-ram', '0x40000000')).code, 0);
    t.equal(memfds(), 1, "the added backing, the API's own, freed once no region uses it");
    const n = vm.ticks.length;
    await new Promise((r) => setTimeout(r, 300));
    t.equal(vm.ticks.length, n, 'no tick while paused');
    t.equal((await vm.ctl('resume')).code, 0);
    await vm.ticksPast(2);
    t.equal(continuous(vm.ticks), undefined);
    await vm.ctl('stop');
    t.equal(await vm.exited, 0);
  });

  t.test("the guest's memory-hotplug driver: what it was told moves, and it answers the new process", async (t) => {
    // Small regions, as the rig's hotplug test: the guest writes and reads back each word of them, and a fresh page's
    // first touch is slow under nested KVM.
    const vm = Vm.boot([], 'hotplug');
    t.teardown(() => vm.child.kill('SIGKILL'));
    await vm.line(/hotplug: mailbox claimed/);
    const add = await vm.ctl('add-ram', '0x40000000', '256K', '--json');
    t.equal(add.code, 0, add.err);
    t.match(JSON.parse(add.out), { guest: { told: true, acknowledged: true } }, 'the guest acknowledged the first region');
    const before = JSON.parse((await vm.ctl('memory', '--json')).out) as Record<string, unknown>;
    t.match(before, { hotplug: { claimed: true, generation: 1, acked: 1, pending: null } });
    const r = await vm.ctl('update', '--json');
    t.equal(r.code, 0, r.err);
    const to = (JSON.parse(r.out) as UpdateReport).to;
    t.equal(await vm.pid(), to, `the API answers from pid ${to}`);
    t.same(
      JSON.parse((await vm.ctl('memory', '--json')).out),
      before,
      "the map, each region's view, the mailbox and the log, as they were",
    );
    const seen = vm.out.length;
    const more = await vm.ctl('add-ram', '0x50000000', '256K', '--json');
    t.equal(more.code, 0, more.err);
    t.match(
      JSON.parse(more.out),
      { guest: { told: true, acknowledged: true, events: [{ kind: 'added', generation: 2, outcome: 'acked' }] } },
      'the new process tells the guest, which answers it',
    );
    t.match(await vm.line(/hotplug: added/, seen), /0x50000000.*pattern ok/);
    const gone = await vm.ctl('remove-ram', '0x50000000', '--json');
    t.match(JSON.parse(gone.out), { guest: { events: [{ kind: 'remove-requested', outcome: 'acked' }] } }, 'and releases before a removal');
    t.equal(vm.out.filter((l) => /hello from vCPU/.test(l)).length, 1, 'one banner: the guest never started over');
    await vm.ctl('stop');
    t.equal(await vm.exited, 0);
  });

  t.test('anonymous RAM is refused up front, the VM untouched', async (t) => {
    const vm = Vm.boot(['--memory-backend', 'anon']);
    t.teardown(() => vm.child.kill('SIGKILL'));
    await vm.ticksPast(2);
    const r = await vm.ctl('update');
    t.equal(r.code, 1);
    t.match(
      r.err,
      /live update refused: guest RAM ram-low at 0x0 is anonymous memory, .*--memory-backend memfd .*; the VM is untouched \(HTTP 409\)/,
    );
    await vm.ticksPast(2);
    t.equal(await vm.pid(), vm.child.pid);
    await vm.ctl('stop');
    t.equal(await vm.exited, 0);
  });

  // PINION_UPDATE_RESULTS=FILE keeps this run's figures, with where they were measured.
  t.teardown(() => {
    const out = process.env.PINION_UPDATE_RESULTS;
    if (!out || !results.length) return;
    const sh = (cmd: string, args: string[]): string => spawnSync(cmd, args, { cwd: root, encoding: 'utf8' }).stdout.trim();
    const provenance = {
      commit: sh('git', ['rev-parse', 'HEAD']),
      date: new Date().toISOString(),
      uname: sh('uname', ['-srm']),
      cpu: `${/model name\s*: (.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '?'} x ${availableParallelism()}`,
      loadavg: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
    };
    const summary = { what: 'live update on /dev/kvm, no device assigned', guest: 'test guest tick mode, 64 MiB, 2 vCPUs', ...provenance };
    writeFileSync(out, JSON.stringify({ ...summary, updates: results }, null, 2) + '\n');
  });
}

const skip = kvmMissing();
if (skip) {
  t.pass(`skipped: ${skip}; the live update's local check needs KVM`, { skip });
} else {
  if (!existsSync(bundle) || !existsSync(guest)) throw new Error(`build first: ${bundle} and ${guest} (npm run build)`);
  // Three VMs and a dozen hand-overs, each with a node process to start: past tap's default 30 s a file.
  t.setTimeout(180_000);
  main();
}
